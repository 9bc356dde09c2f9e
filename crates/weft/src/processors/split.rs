//! `split`: one message per element of an array, each going through the rest of the pipeline
//! (and to the outputs) on its own, concurrently. Every part carries `%split` with the `parent`
//! message's id, its `index` and the `count` of parts, which is what `aggregate` with
//! `correlate: split` reassembles them by. The parent counts as delivered once every part is;
//! an empty array leaves nothing to deliver (like a filter). A part's id is derived from its
//! parent's, so a retried message splits into the same ids.
//!
//! ```yaml
//! pipeline:
//!   - split: .order.lines        # VRL; default `.`, the message itself
//! ```
//!
//! or, with a limit on untrusted input: `split: { path: .items, max_parts: 1000 }`.
//!
//! `keep` hands each part what it needs of the message being split, as `%split.message`, so
//! the order's fields stay at hand for every line without copying the whole order (the lines
//! included) into each part:
//!
//! ```yaml
//! pipeline:
//!   - split: { path: .lines, keep: '{ "order_id": .id, "customer": .customer }' }
//!   - map: '.order_id = %split.message.order_id'
//! ```

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::core::StepError;
use crate::core::mapping::{Mapping, MessagePath, empty_object, insert, to_text};
use crate::core::{MappingError, Message, Step, Value};

/// `split: EXPRESSION`, or the settings as a mapping.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SplitProcessor")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A VRL expression giving the array to split, e.g. `.items`.
    #[serde(default = "default_path")]
    pub path: String,
    /// The most parts one message may become; more fails the message.
    #[serde(default = "default_max_parts")]
    pub max_parts: usize,
    /// A VRL expression over the message being split, evaluated once; every part carries its
    /// value as `%split.message`.
    #[serde(default)]
    pub keep: Option<String>,
}

impl Config {
    pub fn deserialize_short<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Box<Config>, D::Error> {
        crate::config::de::scalar_or_map(d, |path| {
            Ok(Config {
                path,
                max_parts: default_max_parts(),
                keep: None,
            })
        })
        .map(Box::new)
    }
}

fn default_path() -> String {
    ".".into()
}

fn default_max_parts() -> usize {
    10_000
}

impl super::Spec for Config {
    type Built = Split;

    fn build(&self, _shared: &Shared, _resources: &Resources) -> Result<Split, Vec<BuildError>> {
        if self.max_parts == 0 {
            return Err(vec![BuildError::new("max_parts", "at least 1")]);
        }
        // In the short form there is no `path` key: the error then sits on the value itself.
        let path =
            Mapping::compile(&self.path).map_err(|d| BuildError::from_diagnostics("path", d))?;
        let keep = match &self.keep {
            Some(keep) => {
                Some(Mapping::compile(keep).map_err(|d| BuildError::from_diagnostics("keep", d))?)
            }
            None => None,
        };
        Ok(Split {
            take: MessagePath::parse(&self.path),
            path,
            keep,
            max_parts: self.max_parts,
        })
    }
}

pub struct Split {
    pub(super) path: Mapping,
    /// `path` when it is a plain path: the array is then taken out of the message, not copied.
    take: Option<MessagePath>,
    keep: Option<Mapping>,
    max_parts: usize,
}

impl Split {
    fn apply(&self, mut message: Message) -> Result<Step, MappingError> {
        // `keep` reads the message whole, before the array is taken out of it.
        let kept = match &self.keep {
            Some(keep) => Some(keep.eval(&message.value, &message.metadata)?),
            None => None,
        };
        let found = match &self.take {
            Some(path) => path.take(&mut message.value),
            None => self.path.eval(&message.value, &message.metadata)?,
        };
        let items = match found {
            Value::Array(items) => items,
            other => {
                return Err(MappingError(format!(
                    "split needs an array, got {}",
                    kind_of(&other)
                )));
            }
        };
        if items.len() > self.max_parts {
            return Err(MappingError(format!(
                "split would make {} parts; max_parts is {}",
                items.len(),
                self.max_parts
            )));
        }
        let count = items.len();
        let parent = Value::from(message.id.to_string());
        Ok(Step::Many(
            items
                .into_iter()
                .enumerate()
                .map(|(index, value)| {
                    let mut part = Message {
                        // Derived from the parent's, so the parts of a message retried
                        // (durable) keep their ids, and with them the dedupe keys they hold.
                        id: ulid::Ulid(message.id.0.wrapping_add(index as u128 + 1)),
                        value,
                        metadata: message.metadata.clone(),
                        traceparent: None,
                    };
                    let mut meta = empty_object();
                    insert(&mut meta, "parent", parent.clone());
                    insert(&mut meta, "index", Value::from(index as i64));
                    insert(&mut meta, "count", Value::from(count as i64));
                    if let Some(kept) = &kept {
                        insert(&mut meta, "message", kept.clone());
                    }
                    insert(&mut part.metadata, "split", meta);
                    part
                })
                .collect(),
        ))
    }
}

impl crate::core::Immediate for Split {
    fn step(&self, message: Message) -> Result<Step, StepError> {
        Ok(self.apply(message)?)
    }

    fn reads_metadata(&self) -> bool {
        self.path.reads_metadata() || self.keep.as_ref().is_some_and(Mapping::reads_metadata)
    }
}

fn kind_of(value: &Value) -> String {
    match value {
        Value::Object(_) => "an object".into(),
        Value::Null => "null".into(),
        other => format!("`{}`", to_text(other)),
    }
}
