//! The store's own file on open, then read and written: see `weft::fuzzing::store`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft::fuzzing::store(data));
