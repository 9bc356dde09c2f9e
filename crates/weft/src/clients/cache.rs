//! In-memory caches shared by name (`resources.caches.NAME`), for `enrich` lookups: an entry
//! lives `ttl`, and at `max_entries` the expired entries go first, then the oldest ones. The
//! same cache keeps other things weft reads often and may not keep long (the secrets
//! `clients::sign` reads from a database).
//!
//! ```yaml
//! resources:
//!   caches:
//!     customers: { ttl: 10m, max_entries: 50000 }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::Value;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "Cache")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How long an entry is used.
    pub ttl: Dur,
    /// The most entries kept.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
}

fn default_max_entries() -> usize {
    10_000
}

impl Config {
    pub fn build(&self) -> Result<Cache, Vec<BuildError>> {
        if self.ttl.0.is_zero() {
            return Err(vec![BuildError::new("ttl", "ttl must be above zero")]);
        }
        if self.max_entries == 0 {
            return Err(vec![BuildError::new("max_entries", "at least 1")]);
        }
        Ok(Cache::new(self.ttl.0, self.max_entries))
    }
}

/// A built cache; clones share the entries.
pub struct Cache<V = Value>(Arc<Inner<V>>);

impl<V> Clone for Cache<V> {
    fn clone(&self) -> Self {
        Cache(self.0.clone())
    }
}

struct Inner<V> {
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Cache<V> {
    /// A cache whose entries live `ttl`, at most `max_entries` of them (at least 1).
    pub fn new(ttl: Duration, max_entries: usize) -> Cache<V> {
        Cache(Arc::new(Inner {
            ttl,
            max_entries: max_entries.max(1),
            entries: Mutex::default(),
        }))
    }

    /// The value kept for `key`, if it is still fresh.
    pub fn get(&self, key: &str) -> Option<V> {
        let entries = self.0.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.0.ttl)
            .map(|(_, v)| v.clone())
    }

    pub fn put(&self, key: String, value: V) {
        let mut entries = self.0.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.0.max_entries && !entries.contains_key(&key) {
            let ttl = self.0.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            // Still full: the oldest tenth goes, so a full cache is not swept on every put.
            if entries.len() >= self.0.max_entries {
                let mut ages: Vec<Instant> = entries.values().map(|(at, _)| *at).collect();
                ages.sort_unstable();
                let cut = ages[(ages.len() / 10).min(ages.len() - 1)];
                entries.retain(|_, (at, _)| *at > cut);
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_a_full_cache_makes_room() {
        let cache = Config {
            ttl: Dur(Duration::from_millis(50)),
            max_entries: 20,
        }
        .build()
        .unwrap();
        cache.put("a".into(), Value::from(1));
        assert_eq!(cache.get("a"), Some(Value::from(1)));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get("a"), None);
        for i in 0..100 {
            cache.put(i.to_string(), Value::from(i));
        }
        assert!(cache.0.entries.lock().unwrap().len() <= 20);
        assert_eq!(cache.get("99"), Some(Value::from(99)));
    }
}
