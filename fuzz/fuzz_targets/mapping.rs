//! VRL programs on arbitrary messages, and arbitrary program text: see
//! `weft::fuzzing::mapping`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft::fuzzing::mapping(data));
