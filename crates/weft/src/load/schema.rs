//! The JSON Schema of a config file (`weft schema`), generated (`schemars`) from the structs
//! the loader deserializes: the file's shape ([`super::shape`]) and every component's config,
//! their doc comments becoming descriptions, so editors (through the `yaml-language-server`
//! modeline) can complete and check flows.

/// The schema, as pretty JSON.
pub fn generate() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<super::shape::File>();
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
