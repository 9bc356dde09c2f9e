//! `s3`: takes the objects under a prefix of an S3 bucket (AWS, or a store that speaks its
//! API: MinIO, Ceph, Cloudflare R2, rclone) and makes messages of each new one, the whole
//! object as one message (decoded by its content type, else its extension: `.json`, `.xml`,
//! `.csv`, otherwise text) or one message per line. Once every message of an object was
//! delivered (or dead-lettered), the object is deleted, moved under `move_to`, or kept and
//! remembered in the flow's checkpoint by key, size, time and ETag, so a restart does not
//! read it again; a crash reads at most the object under way again.
//!
//! ```yaml
//! input:
//!   s3:
//!     bucket: partner-drop
//!     prefix: statements/
//!     pattern: "*.xml"            # a glob over the whole key; default every object
//!     after: move                 # delete (default), move or keep
//!     move_to: archive/           # the rest of the key is kept: archive/…
//!     interval: 30s
//!     region: eu-west-1
//!     credentials:
//!       access_key_id: AKIAIOSFODNN7EXAMPLE
//!       secret_access_key: ${S3_SECRET}
//! #   endpoint: http://127.0.0.1:9000    # MinIO, rclone serve s3, …
//! ```
//!
//! The prefix is listed every `interval` (default 10s: each listing is a billed request),
//! every key under it (not only one level, all held in memory while they are taken); objects
//! are taken oldest first. An object is read, copied and deleted only while it is the version
//! listed (its ETag), so one written again meanwhile is left for the next listing. Moving
//! copies the object on the store's side and then deletes it. A read that fails for a while
//! (no answer, `SlowDown`, a 5xx) is tried again at the next listing. On a cluster one node at a time reads the bucket.
//! Keys whose last part starts with `.` and "folder" keys ending in `/` are never taken.
//!
//! Each message carries `%s3_bucket`, `%s3_key`, `%s3_size`, `%s3_modified` (RFC 3339),
//! `%s3_etag`, and per line `%s3_line`.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Deserialize;

use super::files::{Files, Found, Place, ReadError, files_config};
use crate::clients::s3::{GetError, S3, s3_settings};
use crate::clients::{Resources, Shared};
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::mapping::{Value, insert};

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}

files_config! {
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[schemars(rename = "S3Input")]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        /// Only keys that start with this (`incoming/`). Default: the whole bucket.
        #[serde(default)]
        pub prefix: String,
        /// Where `after: move` puts objects: this prefix, then the key without `prefix`. It
        /// must not lie under `prefix`.
        #[serde(default)]
        pub move_to: Option<String>,
    }
    with { s3 }
}

/// The `s3` input: files taken from a bucket.
pub type S3Input = Files<Bucket>;

/// A prefix of a bucket.
pub struct Bucket {
    s3: S3,
    prefix: String,
    move_to: Option<String>,
}

impl super::Spec for Config {
    type Built = S3Input;

    fn build(self, shared: &Shared, resources: &Resources) -> Result<S3Input, Vec<BuildError>> {
        let mut errors = Vec::new();
        if let Some(to) = &self.move_to
            && to.starts_with(&self.prefix)
        {
            errors.push(BuildError::new(
                "move_to",
                "lies under `prefix`: moved objects would be read again",
            ));
        }
        let s3 = S3::build(shared, resources, s3_settings!(self))
            .map_err(|e| errors.extend(e))
            .ok();
        let settings = self.files();
        let has_move_to = self.move_to.is_some();
        let place = s3.map(|s3| Bucket {
            s3,
            prefix: self.prefix,
            move_to: self.move_to,
        });
        Files::build(place, settings, has_move_to, errors)
    }
}

impl Place for Bucket {
    const COMPONENT: &'static str = "input.s3";
    const PREFIX: &'static str = "s3";
    // An object appears whole, once its upload is complete.
    const MIN_AGE: Duration = Duration::ZERO;
    // Each listing is a request the bucket's owner pays for.
    const INTERVAL: Duration = Duration::from_secs(10);

    async fn list(
        &self,
        wanted: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(Vec<Found>, HashSet<String>), String> {
        let now = SystemTime::now();
        let mut found = Vec::new();
        let mut present = HashSet::new();
        for object in self.s3.list(&self.prefix).await? {
            present.insert(object.key.clone());
            if object.key.ends_with('/') || !wanted(&object.key) {
                continue;
            }
            let modified = object
                .last_modified
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or(now, SystemTime::from);
            found.push(Found {
                shown: self.s3.shown(&object.key),
                name: object.key,
                size: object.size,
                modified,
                tag: object.etag,
                unchanged_since: modified,
            });
        }
        Ok((found, present))
    }

    async fn read(&self, file: &Found, max: u64) -> Result<(Bytes, Option<String>), ReadError> {
        let limit = usize::try_from(max.saturating_add(1)).unwrap_or(usize::MAX);
        match self.s3.get(&file.name, file.tag.as_deref(), limit).await {
            Ok((bytes, _)) if bytes.len() as u64 != file.size => Err(ReadError::Changed),
            Ok(read) => Ok(read),
            Err(GetError::Missing) => Err(ReadError::Gone),
            Err(GetError::Changed) => Err(ReadError::Changed),
            Err(GetError::Again(e)) => Err(ReadError::Again(e)),
            Err(GetError::Failed(e)) => Err(ReadError::Failed(e)),
        }
    }

    async fn delete(&self, file: &Found) -> Result<(), String> {
        self.s3
            .delete(&file.name, file.tag.as_deref())
            .await
            .map_err(|e| format!("{}: cannot delete it after delivery: {e}", file.shown))
    }

    async fn relocate(&self, file: &Found) -> Result<(), String> {
        let to = format!(
            "{}{}",
            self.move_to.as_deref().unwrap_or_default(),
            file.name.strip_prefix(&self.prefix).unwrap_or(&file.name)
        );
        // Deleted only once the copy is there; both only while the object is the version
        // delivered (one written again meanwhile is left for the next listing).
        let etag = file.tag.as_deref();
        let moved = match self.s3.copy(&file.name, &to, etag).await {
            Ok(true) => self.s3.delete(&file.name, etag).await,
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        moved.map_err(|e| format!("{}: cannot move it to {to}: {e}", file.shown))
    }

    fn describe(&self, file: &Found, metadata: &mut Value) {
        insert(metadata, "s3_bucket", Value::from(self.s3.bucket()));
        insert(metadata, "s3_key", Value::from(file.name.as_str()));
        if let Some(etag) = &file.tag {
            insert(metadata, "s3_etag", Value::from(etag.trim_matches('"')));
        }
    }
}
