//! Runs `examples/lettre.rs` (a server for a test, a message sent with lettre, read back through
//! the mbox reader) as part of `cargo test`.

#[path = "../examples/lettre.rs"]
mod example;

#[test]
fn the_lettre_example_runs() {
    example::run().unwrap();
}
