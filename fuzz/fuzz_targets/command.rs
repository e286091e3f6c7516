//! Fuzzes the command parser with arbitrary bytes as one line.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mboxd::fuzz::command(data));
