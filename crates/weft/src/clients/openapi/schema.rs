//! The document's JSON Schemas made usable: YAML nodes to JSON, local `$ref`s inlined (a
//! recursive one cut where it recurs, the whole bounded in size), 3.0's `nullable` turned into
//! a `null` type, validators built, and their complaints written without the value.

use serde_json::Value as Json;

use crate::config::yaml::{Kind, Node};

/// How deep `$ref`s are followed (a recursive schema is cut there, accepting anything below).
const MAX_REF_DEPTH: usize = 16;

pub(super) fn to_json(node: &Node) -> Json {
    match &node.kind {
        Kind::Null => Json::Null,
        Kind::Bool(b) => Json::Bool(*b),
        Kind::Int(i) => Json::from(*i),
        Kind::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Kind::Str(s) => Json::String(s.clone()),
        Kind::Seq(items) => Json::Array(items.iter().map(to_json).collect()),
        Kind::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match &k.kind {
                        Kind::Str(s) => s.clone(),
                        Kind::Int(i) => i.to_string(),
                        _ => String::new(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
}

/// The most schema nodes inlining may produce, so a document that reuses schemas heavily
/// cannot blow up at load.
pub(super) const MAX_INLINED: usize = 200_000;

/// `value` with every local `$ref` replaced by what it points at. A `$ref` that comes back on
/// its own chain (a recursive schema) is cut there and accepts anything below; one that points
/// nowhere is an error.
pub(super) fn inline(
    doc: &Json,
    value: &Json,
    chain: &mut Vec<String>,
    budget: &mut usize,
) -> Result<Json, String> {
    if *budget == 0 {
        return Err("the document's schemas expand too far to inline".into());
    }
    *budget -= 1;
    Ok(match value {
        Json::Object(map) => {
            if let Some(Json::String(target)) = map.get("$ref") {
                let Some(pointer) = target.strip_prefix('#') else {
                    return Err(format!(
                        "`$ref: {target}`: only references inside the document are followed"
                    ));
                };
                if chain.iter().any(|t| t == target) || chain.len() >= MAX_REF_DEPTH {
                    return Ok(Json::Object(Default::default()));
                }
                let found = doc
                    .pointer(pointer)
                    .ok_or_else(|| format!("`$ref: {target}` points at nothing"))?;
                chain.push(target.clone());
                let inlined = inline(doc, found, chain, budget);
                chain.pop();
                return inlined;
            }
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                out.insert(k.clone(), inline(doc, v, chain, budget)?);
            }
            Json::Object(out)
        }
        Json::Array(items) => Json::Array(
            items
                .iter()
                .map(|i| inline(doc, i, chain, budget))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

/// 3.0's `nullable: true` as JSON Schema says it: `null` among the types. Walks schemas only,
/// so a property that happens to be called `nullable` is left alone.
pub(super) fn nullable_to_type(schema: &mut Json) {
    let Json::Object(map) = schema else { return };
    if map.get("nullable") == Some(&Json::Bool(true)) {
        map.remove("nullable");
        match map.get("type").cloned() {
            Some(Json::String(t)) => {
                map.insert("type".into(), serde_json::json!([t, "null"]));
            }
            _ => {
                if let Some(Json::Array(options)) = map.get_mut("enum") {
                    options.push(Json::Null);
                }
            }
        }
    } else if map.get("nullable") == Some(&Json::Bool(false)) {
        map.remove("nullable");
    }
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            "properties" | "patternProperties" | "definitions" | "$defs" => {
                if let Json::Object(schemas) = value {
                    schemas.values_mut().for_each(nullable_to_type);
                }
            }
            "items" | "not" | "additionalProperties" | "contains" => nullable_to_type(value),
            "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                if let Json::Array(schemas) = value {
                    schemas.iter_mut().for_each(nullable_to_type);
                }
            }
            _ => {}
        }
    }
}

pub(super) fn validator(schema: &Json, v31: bool) -> Result<jsonschema::Validator, String> {
    let mut schema = schema.clone();
    let draft = if v31 {
        jsonschema::Draft::Draft202012
    } else {
        nullable_to_type(&mut schema);
        jsonschema::Draft::Draft4
    };
    jsonschema::options()
        .with_draft(draft)
        .build(&schema)
        .map_err(|e| e.to_string())
}
