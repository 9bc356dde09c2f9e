//! Request body decoding by content type (JSON, XML, forms, CSV, multipart, text) on
//! arbitrary bytes: see `weft::fuzzing::body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft::fuzzing::body(data));
