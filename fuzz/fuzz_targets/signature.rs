//! Inbound auth (HMAC signature presets, basic, API keys, JWT) on arbitrary headers, query
//! and body: see `weft::fuzzing::signature`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft::fuzzing::signature(data));
