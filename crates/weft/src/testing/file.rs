//! The `*_test.yaml` format: the flow files a test file loads, and each test's input, mocked
//! answers and expectations. Deserialized with the config loader's located `Deserializer`, so
//! a mistake in a test file is reported at its line and column.

use super::*;

/// A `*_test.yaml` file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TestFile {
    /// The flow files the tests load, relative to this file; by default the file of the same
    /// name without `_test` (`orders_test.yaml` tests `orders.yaml`).
    #[serde(default)]
    pub(super) flows: Vec<String>,
    /// `${VAR}` values for the flow files, before the process environment.
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    pub(super) tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Case {
    pub(super) name: String,
    pub(super) flow: String,
    /// What the real services must hold before the test: statements run in order, by
    /// database of `resources.sql` (e.g. a table made afresh with its rows).
    #[serde(default)]
    pub(super) setup: Setup,
    /// Messages handed to the flow as its input would hand them, one at a time, in order.
    #[serde(default)]
    pub(super) messages: Vec<TestMessage>,
    /// Requests to the flow's `http_server` endpoint, one at a time, in order.
    #[serde(default)]
    pub(super) requests: Vec<TestRequest>,
    /// Polls of the flow's polling input (`http_poll`, `sql_poll`, `directory`, `s3`), one
    /// after the other, each reading every page (its HTTP calls, S3's too, answered by
    /// `http:` or `fixtures`); its schedule is not waited for.
    pub(super) polls: Option<u32>,
    /// How each output answers, by its id (`output.http_client`, `outputs[1].sql`); an output
    /// left out accepts everything.
    #[serde(default)]
    pub(super) outputs: BTreeMap<String, Answers>,
    /// Declared answers to HTTP calls, first match wins.
    #[serde(default)]
    pub(super) http: Vec<HttpRule>,
    /// A JSON file of recorded HTTP exchanges, relative to the test file; replayed, or
    /// written by `weft test --record`.
    pub(super) fixtures: Option<String>,
    #[serde(default)]
    pub(super) expect: Expect,
    /// How long the test may take (default 30s).
    pub(super) timeout: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Setup {
    /// Statements by database name, run before the flow starts.
    #[serde(default)]
    pub(super) sql: BTreeMap<String, Vec<String>>,
}

/// One message: its `value`, or a VRL `mapping` that makes it (for values JSON cannot
/// spell, such as timestamps), and its metadata.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TestMessage {
    pub(super) value: Option<Json>,
    pub(super) mapping: Option<String>,
    pub(super) metadata: Option<Json>,
}

impl TestMessage {
    pub(super) fn build(self, i: usize) -> Result<Message, String> {
        let value = match (self.value, self.mapping) {
            (Some(value), None) => to_value(value),
            (None, Some(source)) => {
                let mapping = Mapping::compile(&source).map_err(|diagnostics| {
                    format!(
                        "message {i}: the mapping does not compile: {}",
                        joined(&diagnostics)
                    )
                })?;
                let mut value = crate::core::mapping::empty_object();
                let mut metadata = crate::core::mapping::empty_object();
                mapping
                    .run(&mut value, &mut metadata)
                    .map_err(|e| format!("message {i}: the mapping failed: {e}"))?;
                value
            }
            _ => return Err(format!("message {i}: give either `value` or `mapping`")),
        };
        let mut message = Message::new(value);
        if let Some(metadata) = self.metadata {
            message.metadata = to_value(metadata);
        }
        Ok(message)
    }
}

pub(super) fn joined(diagnostics: &[crate::core::mapping::Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| d.message.clone())
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TestRequest {
    #[serde(default = "post")]
    pub(super) method: String,
    /// Path and query; by default the endpoint's path.
    pub(super) path: Option<String>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    /// A string is sent as it is; anything else as JSON.
    pub(super) body: Option<Json>,
    /// Signed as the sender of the endpoint's `hmac` auth would, now: `true` with its
    /// secret, `{ secret: … }` with another (a forgery).
    #[serde(default)]
    pub(super) sign: Sign,
    #[serde(default)]
    pub(super) expect: ResponseExpect,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Sign {
    Yes(bool),
    With { secret: String },
}

impl Default for Sign {
    fn default() -> Sign {
        Sign::Yes(false)
    }
}

pub(super) fn post() -> String {
    "POST".into()
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResponseExpect {
    /// By default any 2xx.
    pub(super) status: Option<u16>,
    /// The whole body (compared as JSON when it is JSON).
    pub(super) body: Option<Json>,
    /// Keys the JSON body must have, with these values.
    pub(super) includes: Option<Json>,
    /// A VRL condition over the JSON body (`%status`, `%headers` too).
    pub(super) condition: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Expect {
    #[serde(default)]
    pub(super) outputs: BTreeMap<String, OutputExpect>,
    pub(super) dlq: Option<DlqExpect>,
    /// Messages that fail for good in a direct flow (default 0).
    pub(super) failed: Option<usize>,
    /// The watermark a polling input saved at the end.
    pub(super) checkpoint: Option<Json>,
    /// What the real databases hold at the end, by their name in `resources.sql`.
    #[serde(default)]
    pub(super) sql: BTreeMap<String, Vec<SqlExpect>>,
}

/// A query run once the flow is done, and the rows it must return.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SqlExpect {
    pub(super) query: String,
    /// Every row, in order, each with exactly the columns the query selects.
    pub(super) rows: Option<Vec<Json>>,
    /// How many rows.
    pub(super) count: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutputExpect {
    /// Messages accepted; by default as many as `messages` lists, when it lists any.
    pub(super) count: Option<usize>,
    /// Attempts made, retries included.
    pub(super) attempts: Option<usize>,
    /// Checks of the accepted messages, in the order they were accepted.
    #[serde(default)]
    pub(super) messages: Vec<Check>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DlqExpect {
    /// Dead letters; by default as many as `entries` lists, when it lists any.
    pub(super) count: Option<usize>,
    /// Checks of the dead letters, oldest first.
    #[serde(default)]
    pub(super) entries: Vec<Check>,
}

/// Checks of one message; every one given must hold.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Check {
    /// The whole value.
    pub(super) value: Option<Json>,
    /// Keys the value must have, with these values (nested objects likewise).
    pub(super) includes: Option<Json>,
    /// Keys the metadata must have.
    pub(super) metadata: Option<Json>,
    /// A VRL condition; `%` is the metadata (a dead letter's also has `%dlq.reason` and
    /// `%dlq.attempts`).
    pub(super) condition: Option<String>,
    /// Dead letters: text the failure reason contains.
    pub(super) reason: Option<String>,
    /// Dead letters: attempts made.
    pub(super) attempts: Option<u32>,
}

/// One answer or a list of them.
pub(super) struct Answers(pub(super) Vec<Answer>);

impl<'de> Deserialize<'de> for Answers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Form;
        impl<'de> Visitor<'de> for Form {
            type Value = Answers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "`accept`, `live`, `{ fail: reason }`, `{ retry: reason }`, or a list of them",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Answers, E> {
                Answer::deserialize(s.into_deserializer()).map(|a| Answers(vec![a]))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Answers, A::Error> {
                Answer::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|a| Answers(vec![a]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Answers, A::Error> {
                Vec::<Answer>::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Answers)
            }
        }
        d.deserialize_any(Form)
    }
}
