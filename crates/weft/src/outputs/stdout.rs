//! `stdout`: writes each message as one line to standard output (JSON, or the raw text of a
//! string message).
//!
//! ```yaml
//! output:
//!   stdout: {}
//! ```

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "StdoutOutput")]
#[serde(deny_unknown_fields)]
pub struct Config {}

impl super::Spec for Config {
    type Built = Stdout;

    fn retry_config(&self) -> Option<&RetryConfig> {
        None
    }

    fn build(&self, _shared: &Shared, _resources: &Resources) -> Result<Stdout, Vec<BuildError>> {
        Ok(Stdout {
            out: tokio::sync::Mutex::new(tokio::io::stdout()),
        })
    }
}

pub struct Stdout {
    out: tokio::sync::Mutex<tokio::io::Stdout>,
}

impl crate::core::Output for Stdout {
    async fn send(&self, message: &Message) -> Attempt {
        let mut line = message.body().to_vec();
        line.push(b'\n');
        let mut out = self.out.lock().await;
        match out.write_all(&line).await {
            Ok(()) => match out.flush().await {
                Ok(()) => Attempt::Delivered,
                Err(e) => Attempt::Retryable {
                    reason: format!("stdout: {e}"),
                    retry_after: None,
                    response: None,
                },
            },
            Err(e) => Attempt::Retryable {
                reason: format!("stdout: {e}"),
                retry_after: None,
                response: None,
            },
        }
    }

    fn reads_metadata(&self) -> bool {
        false
    }
}
