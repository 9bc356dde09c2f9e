//! The JSON Schema of a config file (`weft schema`), generated from the component config
//! structs (`schemars`), their doc comments becoming descriptions. The loader reads a file key
//! by key to locate its errors; the structs here only describe that shape for the schema, so
//! editors (through the `yaml-language-server` modeline) can complete and check flows.

use std::collections::BTreeMap;

use schemars::JsonSchema;

use crate::config::units::{Dur, Size};
use crate::inputs::InputConfig;
use crate::outputs::OutputConfig;
use crate::processors::ProcessorConfig;

/// A weft config file.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, title = "weft config")]
#[allow(dead_code)]
struct File {
    /// The flows, by name (snake_case, unique across all files).
    flows: BTreeMap<String, Flow>,
    /// The admin endpoint: `/metrics`, `/health` and the DLQ API.
    admin: Option<super::AdminConfig>,
    /// How long a drain may take after SIGTERM/SIGINT (default 30s).
    shutdown_timeout: Option<Dur>,
    /// What a commit to the store survives: `process` (default) or `power`.
    durability: Option<super::DurabilityConfig>,
    /// The free space the store keeps: under it, durable flows refuse new messages (HTTP
    /// 503) while delivery goes on and drains their queues. Default: 5 % of the data
    /// directory's file system, at most `64MiB`; `0B` turns it off.
    disk_free_limit: Option<Size>,
    /// Definitions components share by name.
    resources: Option<Resources>,
    /// Where HTTP calls may go (the outbound guard).
    outbound: Option<crate::clients::outbound::OutboundConfig>,
    /// Traces: span export over OTLP/HTTP.
    tracing: Option<crate::telemetry::TracingConfig>,
}

/// One flow: an input, a pipeline of processors, one or more outputs.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Flow {
    input: InputConfig,
    /// Processors, run in order.
    pipeline: Option<Vec<ProcessorConfig>>,
    /// The output (or `outputs:`, every one of which must accept).
    output: Option<OutputConfig>,
    outputs: Option<Vec<OutputConfig>>,
    /// Messages in flight at once (direct), or delivery workers (durable).
    concurrency: Option<u32>,
    /// `direct` (default: acked after every output accepted) or `durable` (acked once stored).
    delivery: Option<super::DeliveryMode>,
    /// Messages a durable flow may hold before it refuses more.
    max_queued: Option<u64>,
    /// Bytes a durable flow may hold before it refuses more.
    max_queued_bytes: Option<Size>,
    /// Deliver messages with the same key one at a time, in order.
    ordering: Option<super::OrderingConfig>,
    /// The level of the log lines written while this flow's messages are handled (`error`,
    /// `warn`, `info`, `debug`, `trace`, `off`), instead of `WEFT_LOG`'s.
    log_level: Option<LogLevel>,
}

/// A log level.
#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
    Off,
}

/// `resources:`: definitions shared by name.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Resources {
    auth: Option<BTreeMap<String, crate::clients::auth::Config>>,
    rate_limits: Option<BTreeMap<String, crate::clients::rate_limit::Config>>,
    circuit_breakers: Option<BTreeMap<String, crate::clients::circuit::Config>>,
    sql: Option<BTreeMap<String, crate::clients::sql::Config>>,
    caches: Option<BTreeMap<String, crate::clients::cache::Config>>,
}

/// The schema, as pretty JSON.
pub fn generate() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<File>();
    serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
}

#[cfg(test)]
mod tests {
    /// `kind()` names a component as its registry line does; serde names it by its variant.
    /// They must agree, or errors and docs would name a component its users cannot write.
    #[test]
    fn the_registry_names_are_the_yaml_names() {
        let schema: serde_json::Value = serde_json::from_str(&super::generate()).unwrap();
        for (registry, names) in [
            ("InputConfig", crate::inputs::NAMES),
            ("ProcessorConfig", crate::processors::NAMES),
            ("OutputConfig", crate::outputs::NAMES),
        ] {
            let yaml: Vec<&str> = schema["$defs"][registry]["oneOf"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["required"][0].as_str().unwrap())
                .collect();
            assert_eq!(yaml, names, "{registry}");
        }
    }

    use std::path::Path;

    use super::*;
    use crate::config::{env, yaml};

    fn root() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
    }

    /// A config file's text as the JSON the schema describes (variables take their defaults).
    fn as_json(text: &str) -> serde_json::Value {
        let mut node = yaml::parse(text).expect("the file parses");
        let _ = env::substitute(&mut node, &|_| None);
        crate::config::de::from_node(&node).expect("YAML maps to JSON")
    }

    fn validator() -> jsonschema::Validator {
        let schema: serde_json::Value = serde_json::from_str(&generate()).unwrap();
        jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
    }

    #[test]
    fn every_example_is_valid_and_names_the_schema() {
        let validator = validator();
        let mut seen = 0;
        for entry in std::fs::read_dir(root().join("examples")).unwrap() {
            let path = entry.unwrap().path();
            // `*_test.yaml` files are tests of flows (`weft test`), not flows.
            if path.extension().is_none_or(|e| e != "yaml")
                || path.to_string_lossy().ends_with("_test.yaml")
            {
                continue;
            }
            seen += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.contains("# yaml-language-server: $schema=../docs/weft.schema.json"),
                "{} lacks the schema modeline",
                path.display()
            );
            let errors: Vec<String> = validator
                .iter_errors(&as_json(&text))
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        }
        assert!(seen > 0);
    }

    #[test]
    fn the_schema_refuses_what_the_loader_refuses() {
        let validator = validator();
        for bad in [
            "flows: { a: { input: { stdin: {} }, output: { drop: {} }, concurency: 3 } }",
            "flows: { a: { input: { htp_server: { address: x } }, output: { drop: {} } } }",
            "flows: { a: { input: { http_server: { address: x, max_bdy: 1 } }, output: { drop: {} } } }",
            "flows: { a: { input: { stdin: {} }, pipeline: [ { delay: { for: 5s, x: 1 } } ], output: { drop: {} } } }",
            "admin: { adress: 127.0.0.1:1 }\nflows: {}",
        ] {
            assert!(!validator.is_valid(&as_json(bad)), "accepted: {bad}");
        }
        for good in [
            "flows: { a: { input: { stdin: {} }, pipeline: [ { delay: 5s }, { split: .items } ], output: { drop: {} } } }",
            "flows: { a: { input: { http_server: { address: x, auth: { jwt: { secret: s, audience: one } } } }, output: { drop: {} } } }",
        ] {
            let errors: Vec<String> = validator
                .iter_errors(&as_json(good))
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{good}: {errors:#?}");
        }
    }

    #[test]
    fn every_definition_has_a_name_of_its_own() {
        // schemars numbers a name it has seen (`Config2`): name such a type with
        // `#[schemars(rename = "…")]`, as the component configs are (`HttpPollInput`).
        let schema: serde_json::Value = serde_json::from_str(&generate()).unwrap();
        let numbered: Vec<&String> = schema["$defs"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|name| name.ends_with(|c: char| c.is_ascii_digit()) || *name == "Config")
            .collect();
        assert!(numbered.is_empty(), "unnamed schema types: {numbered:?}");
    }

    #[test]
    fn the_committed_schema_is_current() {
        let path = root().join("docs/weft.schema.json");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generate(),
            "{} is stale: run `cargo run -- schema > docs/weft.schema.json`",
            path.display()
        );
    }
}
