//! OpenAPI documents (JSON or YAML) loaded into validated operations: see
//! `weft::fuzzing::openapi`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft::fuzzing::openapi(data));
