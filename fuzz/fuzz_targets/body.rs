//! Request body decoding by content type (JSON, XML, forms, CSV, multipart, text) on
//! arbitrary bytes: a value or an error, never a panic, a hang or unbounded memory.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

const TYPES: &[Option<&str>] = &[
    Some("application/json"),
    Some("application/xml"),
    Some("application/x-www-form-urlencoded"),
    Some("text/csv"),
    Some("multipart/form-data; boundary=XyZ"),
    Some("text/plain"),
    Some("application/problem+json"),
    Some("application/soap+xml"),
    None,
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let content_type = TYPES[which as usize % TYPES.len()];
    let _ = weft::core::body::decode(content_type, Bytes::copy_from_slice(body));
});
