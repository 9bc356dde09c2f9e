//! `s3`: writes each message as an object to an S3 bucket (AWS, or a store that speaks its
//! API: MinIO, Ceph, Cloudflare R2, rclone), under a key made from the message.
//!
//! The object is the message, written as `format` says (JSON by default, a string message as
//! its text; see `core::body`), with its content type. A body over `part_size` goes up as a
//! multipart upload, part by part, and an upload that fails half way is aborted, so no parts
//! are left behind. A message counts as delivered once the store confirmed the object. What
//! an answer means follows HTTP: 408, 429 (S3's `SlowDown` is a 503) and 5xx are retried,
//! other refusals (`AccessDenied`, `NoSuchBucket`) fail the message for good, and the reason
//! shown is S3's error code and message.
//!
//! ```yaml
//! output:
//!   s3:
//!     bucket: invoices
//!     key: "orders/{{ .id }}.json"
//!     region: eu-west-1
//!     credentials:
//!       access_key_id: AKIAIOSFODNN7EXAMPLE
//!       secret_access_key: ${S3_SECRET}
//! #   endpoint: http://127.0.0.1:9000      # MinIO, rclone serve s3, …
//! #   format: xml                          # or text, csv, …
//! #   headers: { Cache-Control: no-cache }
//! ```
//!
//! Writing a key again replaces the object, so a message delivered twice (after a crash, say)
//! leaves one object: give each message a key of its own (its id) and the output is
//! idempotent. To write batches, put an `aggregate` step before it.

use std::time::Duration;

use serde::Deserialize;

use crate::clients::call::call_config;
use crate::clients::s3::{S3, s3_settings};
use crate::clients::{Resources, Shared};
use crate::config::BuildError;
use crate::config::units::{Dur, Size};
use crate::core::body::Encoding;
use crate::core::retry::RetryConfig;
use crate::core::template::{Escape, Template};
use crate::core::{Attempt, Message};

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}

call_config! {
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[schemars(rename = "S3Output")]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        /// The object's key; may contain `{{ expression }}` parts.
        pub key: String,
        /// Bodies larger than this go up as a multipart upload, in parts of this size (at
        /// least 5MiB, as S3 wants). Default 16MiB.
        #[serde(default)]
        pub part_size: Option<Size>,
    }
    with { format, retry, s3 }
}

pub struct S3Output {
    s3: S3,
    key: Template,
    encoding: Encoding,
    part_size: usize,
}

const MIN_PART: u64 = 5 << 20;
const DEFAULT_PART: u64 = 16 << 20;

impl super::Spec for Config {
    type Built = S3Output;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(&self, shared: &Shared, resources: &Resources) -> Result<S3Output, Vec<BuildError>> {
        let mut errors = Vec::new();
        let key = Template::parse(&self.key, Escape::None)
            .map_err(|d| errors.extend(BuildError::from_diagnostics("key", d)))
            .ok();
        if self.key.is_empty() {
            errors.push(BuildError::new("key", "is empty"));
        }
        let part_size = self.part_size.as_ref().map_or(DEFAULT_PART, |s| s.0);
        if part_size < MIN_PART {
            errors.push(BuildError::new(
                "part_size",
                "is under 5MiB, the smallest part S3 takes",
            ));
        }
        let encoding = Encoding::configured(self.format, &self.headers)
            .map_err(|e| errors.push(BuildError::new("format", e)))
            .ok();
        let s3 = S3::build(shared, resources, s3_settings!(self))
            .map_err(|e| errors.extend(e))
            .ok();
        match (s3, key, encoding) {
            (Some(s3), Some(key), Some(encoding)) if errors.is_empty() => Ok(S3Output {
                s3,
                key,
                encoding,
                part_size: usize::try_from(part_size).unwrap_or(usize::MAX),
            }),
            _ => Err(errors),
        }
    }
}

impl crate::core::Output for S3Output {
    async fn send(&self, message: &Message) -> Attempt {
        let fatal = |reason: String| Attempt::Fatal {
            reason,
            response: None,
        };
        let key = match self.key.render(&message.value, &message.metadata) {
            Ok(key) if key.is_empty() => {
                return fatal("key: the message makes an empty key".into());
            }
            Ok(key) => key,
            Err(e) => return fatal(format!("key: {e}")),
        };
        let (body, content_type) = match self.encoding.encode(&message.value) {
            Ok(encoded) => encoded,
            Err(e) => return fatal(format!("{}: {e}", self.s3.shown(&key))),
        };
        match self
            .s3
            .put(
                &key,
                body,
                &content_type,
                self.part_size,
                (&message.value, &message.metadata),
            )
            .await
        {
            Ok(()) => Attempt::Delivered,
            Err(failed) => failed,
        }
    }

    fn reads_metadata(&self) -> bool {
        self.key.reads_metadata() || self.s3.reads_metadata()
    }
}
