//! Fuzzes the whole protocol core: arbitrary bytes through the session state machine.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mboxd::fuzz::session(data));
