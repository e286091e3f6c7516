//! Fuzzes DATA and BDAT decoding and the mbox formatting of what they decode.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mboxd::fuzz::message(data));
