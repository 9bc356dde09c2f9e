//! The config loader on arbitrary text: YAML parsing, `${VAR}` substitution, typed
//! deserialization with locations, and every component's build. It must report errors, never
//! panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // No environment: a `${VAR}` is defaulted or an error. Files named in the text (`${file:}`,
    // TLS files) are read, but only regular files of a bounded size.
    let lookup = |_: &str| None;
    let shared = weft::outputs::Shared::default();
    let _ = weft::config::load_str("fuzz.yaml", &text, &lookup, &shared);
});
