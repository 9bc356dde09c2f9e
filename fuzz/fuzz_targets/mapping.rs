//! VRL mappings over arbitrary input: typical programs run on any message (arbitrary JSON,
//! arbitrary strings), and arbitrary program text compiled (and, when it compiles, run on a
//! small message). Errors are fine; panics and hangs are not.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use weft::core::mapping::{Mapping, empty_object, insert};

static PROGRAMS: LazyLock<Vec<Mapping>> = LazyLock::new(|| {
    [
        ".copy = .; .n = length(.)",
        ".parsed = parse_json(string(.raw) ?? \"\") ?? null",
        ".parts = split(string(.raw) ?? \"\", \",\")",
        ".lower = downcase(string(.raw) ?? \"\"); .up = upcase(.lower)",
        ".flat = flatten(object(.doc) ?? {})",
        ".merged = merge(object(.doc) ?? {}, {\"k\": .raw})",
        ".json = encode_json(.doc)",
        ".i = to_int(.raw) ?? 0; .f = to_float(.raw) ?? 0.0",
        ".keys = keys(object(.doc) ?? {})",
        "if exists(.doc.items) { .count = length(array(.doc.items) ?? []) }",
        ".b64 = encode_base64(string(.raw) ?? \"\"); .back = decode_base64(.b64) ?? null",
    ]
    .iter()
    .map(|p| Mapping::compile(p).unwrap_or_else(|e| panic!("`{p}` does not compile: {e:?}")))
    .collect()
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let raw = String::from_utf8_lossy(rest).into_owned();
    let mut message = empty_object();
    insert(&mut message, "raw", raw.clone().into());
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(rest)
        && let Ok(doc) = serde_json::from_value(doc)
    {
        insert(&mut message, "doc", doc);
    }
    if mode % 4 == 0 {
        // The input is a program.
        if raw.len() <= 4096
            && let Ok(program) = Mapping::compile(&raw)
        {
            let mut value = message.clone();
            let _ = program.run(&mut value, &mut empty_object());
        }
        return;
    }
    for program in PROGRAMS.iter() {
        let mut value = message.clone();
        let _ = program.run(&mut value, &mut empty_object());
    }
});
