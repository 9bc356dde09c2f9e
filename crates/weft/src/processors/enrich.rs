//! `enrich`: runs a lookup (its own `processors`: an `http`, `sql`, `graphql`… step) on a copy
//! of the message and merges what the lookup made of the copy into the message with `merge`
//! (VRL, the lookup's result in `%enrichment`). A lookup that drops the copy gives `null`, one
//! that splits it an array. With `cache`, results are kept by `key` in a cache of
//! `resources.caches`, and a fresh entry skips the lookup. A failed lookup fails the message
//! (a `catch` after it can shape that).
//!
//! ```yaml
//! resources:
//!   caches:
//!     customers: { ttl: 10m }
//! flows:
//!   orders:
//!     pipeline:
//!       - enrich:
//!           processors:
//!             - http: { url: "https://crm.example.com/customers/{{ .customer_id }}" }
//!           merge: .customer = %enrichment
//!           cache: { resource: customers, key: .customer_id }
//! ```

use serde::Deserialize;

use super::{Processor, ProcessorConfig, build_steps};
use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::cache::Cache;
use crate::config::BuildError;
use crate::core::flow::{ProcessorSlot, run_nested};
use crate::core::mapping::{Mapping, Outcome, insert};
use crate::core::{Context, Message, Step, StepError, Value};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "EnrichProcessor")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The lookup, run on a copy of the message.
    pub processors: Vec<ProcessorConfig>,
    /// VRL that merges the lookup's result (`%enrichment`) into the message.
    pub merge: String,
    #[serde(default)]
    pub cache: Option<CacheConfig>,
}

/// Answers kept in a cache of `resources.caches`, by key, so a repeated lookup makes no call.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// A cache of `resources.caches`.
    pub resource: String,
    /// A VRL expression giving the cache key.
    pub key: String,
}

pub struct Enrich {
    steps: Vec<ProcessorSlot<Processor>>,
    merge: Mapping,
    cache: Option<(Cache, Mapping)>,
}

impl super::Spec for Config {
    type Built = Enrich;

    fn build(&self, shared: &Shared, resources: &Resources) -> Result<Enrich, Vec<BuildError>> {
        let mut errors = Vec::new();
        if self.processors.is_empty() {
            errors.push(BuildError::new("processors", "name the lookup to run"));
        }
        let steps = build_steps(&self.processors, "processors", shared, resources)
            .map_err(|e| errors.extend(e))
            .unwrap_or_default();
        let merge = Mapping::compile(&self.merge)
            .map_err(|d| errors.extend(BuildError::from_diagnostics("merge", d)))
            .ok();
        let cache = self.cache.as_ref().and_then(|c| {
            let cache = resources
                .cache(&c.resource)
                .map_err(|e| errors.push(BuildError::new("cache.resource", e)))
                .ok();
            let key = Mapping::compile(&c.key)
                .map_err(|d| errors.extend(BuildError::from_diagnostics("cache.key", d)))
                .ok();
            cache.zip(key)
        });
        match merge {
            Some(merge) if errors.is_empty() => Ok(Enrich {
                steps,
                merge,
                cache,
            }),
            _ => Err(errors),
        }
    }

    fn nested(built: &Enrich) -> Vec<super::Nested<'_>> {
        vec![super::Nested::new("enrich with", &built.steps)]
    }
}

impl Enrich {}

impl crate::core::Processor for Enrich {
    async fn process(&self, mut message: Message, cx: &mut Context<'_>) -> Result<Step, StepError> {
        let key = match &self.cache {
            Some((_, key)) => Some(key.key(&message.value, &message.metadata)?),
            None => None,
        };
        let cached = self
            .cache
            .as_ref()
            .zip(key.as_deref())
            .and_then(|((cache, _), key)| cache.get(key));
        let result = match cached {
            Some(v) => v,
            None => {
                let mut found = run_nested(&self.steps, message.clone(), cx).await?;
                let result = match found.len() {
                    0 => Value::Null,
                    1 => found.pop().map(|m| m.value).unwrap_or(Value::Null),
                    _ => Value::Array(found.into_iter().map(|m| m.value).collect()),
                };
                if let (Some((cache, _)), Some(key)) = (&self.cache, key) {
                    cache.put(key, result.clone());
                }
                result
            }
        };
        let own = match &mut message.metadata {
            Value::Object(meta) => meta.remove("enrichment"),
            _ => None,
        };
        insert(&mut message.metadata, "enrichment", result);
        let outcome = self.merge.run(&mut message.value, &mut message.metadata);
        if let Value::Object(meta) = &mut message.metadata {
            meta.remove("enrichment");
            if let Some(own) = own {
                meta.insert("enrichment".into(), own);
            }
        }
        Ok(match outcome? {
            Outcome::Done(_) => Step::One(message),
            Outcome::Aborted => Step::Dropped,
        })
    }

    fn reads_metadata(&self) -> bool {
        // `merge` reads `%enrichment` (set by this step), and may read the message's own.
        self.merge.reads_metadata()
            || self
                .steps
                .iter()
                .any(|s| crate::core::Processor::reads_metadata(&s.processor))
            || self.cache.as_ref().is_some_and(|(_, k)| k.reads_metadata())
    }
}
