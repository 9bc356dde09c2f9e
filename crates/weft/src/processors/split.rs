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
use crate::core::mapping::{Mapping, MessagePath, empty_object, insert, to_text};
use crate::core::message::Part;
use crate::core::tap::Tap;
use crate::core::{Context, MappingError, Message, Now, Step, StepError, Value};

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
    /// Each part's `%split` (four keys, each allocated) is most of a part's cost, so it is
    /// built only when a step or output reads metadata, or a tap shows it.
    fn split(&self, message: Message, cx: &Context<'_>) -> Result<Step, StepError> {
        let describe = cx.reads_metadata || cx.tap.is_some_and(Tap::is_active);
        Ok(self.apply(message, describe)?)
    }

    /// `describe`: whether the parts get `%split`.
    fn apply(&self, mut message: Message, describe: bool) -> Result<Step, MappingError> {
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
        let parent = describe.then(|| Value::from(message.id.to_string()));
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
                        part: Some(Part {
                            parent: message.id,
                            index,
                            count,
                        }),
                    };
                    let Some(parent) = &parent else {
                        return part;
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

impl crate::core::Processor for Split {
    async fn process(&self, message: Message, cx: &mut Context<'_>) -> Result<Step, StepError> {
        self.split(message, cx)
    }

    /// Never waits: runs in place.
    fn process_now(&self, message: Message, cx: &mut Context<'_>) -> Now {
        Now::Done(self.split(message, cx))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Trail;
    use crate::processors::Spec as _;

    /// Every part knows its place; `%split` says it too when a step reads metadata or a tap
    /// watches, and is left out (it is most of a part's cost) when nothing would read it.
    #[test]
    fn parts_carry_split_when_something_reads_it() {
        let split = Config {
            path: ".items".into(),
            max_parts: 10,
            keep: None,
        }
        .build(&Shared::default(), &Resources::default())
        .unwrap();
        let watched = Tap::default();
        let _listening = watched.listen(None, 1.0, 8);
        let unwatched = Tap::default();
        for (reads_metadata, tap, described) in [
            (false, &unwatched, false),
            (true, &unwatched, true),
            (false, &watched, true),
        ] {
            let mut trail = Trail::default();
            let cx = Context {
                flow: "test",
                store: None,
                trail: &mut trail,
                tap: Some(tap),
                split: None,
                reads_metadata,
            };
            let value = serde_json::from_value(serde_json::json!({ "items": ["a", "b"] })).unwrap();
            let message = Message::new(value);
            let parent = message.id;
            let Ok(Step::Many(parts)) = split.split(message, &cx) else {
                panic!("two parts");
            };
            assert_eq!(parts.len(), 2);
            for (index, part) in parts.iter().enumerate() {
                assert_eq!(
                    part.part,
                    Some(Part {
                        parent,
                        index,
                        count: 2
                    })
                );
                let Value::Object(metadata) = &part.metadata else {
                    panic!("metadata is an object");
                };
                match metadata.get("split") {
                    Some(Value::Object(split)) => {
                        assert!(described, "no step reads %split, yet it was built");
                        assert_eq!(split.get("parent"), Some(&Value::from(parent.to_string())));
                        assert_eq!(split.get("index"), Some(&Value::from(index as i64)));
                        assert_eq!(split.get("count"), Some(&Value::from(2)));
                    }
                    other => assert!(!described, "%split missing: {other:?}"),
                }
            }
        }
    }
}
