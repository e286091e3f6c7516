//! Fuzzes the whole protocol core as a connection drives it: arbitrary bytes, split into reads of
//! arbitrary sizes, through the input buffer, the framer and the session state machine.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mboxd::fuzz::session(data));
