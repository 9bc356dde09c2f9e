//! The config loader on arbitrary text: see `weft::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft::fuzzing::config(data));
