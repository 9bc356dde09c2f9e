//! `file`: appends each message as one JSON line (a string message as a JSON string) to a file, creating it (not its directory) if
//! needed. A message counts as delivered once its line is written to the operating system; in
//! direct mode weft does not fsync per message.
//!
//! ```yaml
//! output:
//!   file:
//!     path: ./out/orders.jsonl
//! ```

use std::path::PathBuf;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "FileOutput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file to append to.
    pub path: PathBuf,
}

impl super::Spec for Config {
    type Built = FileOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        None
    }

    fn build(
        &self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<FileOutput, Vec<BuildError>> {
        if self.path.as_os_str().is_empty() {
            return Err(vec![BuildError::new("path", "path is empty")]);
        }
        Ok(FileOutput {
            path: self.path.clone(),
            file: tokio::sync::Mutex::new(None),
        })
    }
}

pub struct FileOutput {
    path: PathBuf,
    /// Opened at the first message, so `weft check` and a flow that never fires touch no file.
    file: tokio::sync::Mutex<Option<tokio::fs::File>>,
}

impl crate::core::Output for FileOutput {
    async fn send(&self, message: &Message) -> Attempt {
        // Always JSON, so a string holding a newline cannot break the one-message-per-line framing.
        let mut line = message.json().to_vec();
        line.push(b'\n');
        let mut guard = self.file.lock().await;
        if guard.is_none() {
            match tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await
            {
                Ok(f) => *guard = Some(f),
                Err(e) => {
                    return Attempt::Retryable {
                        reason: format!("open {}: {e}", self.path.display()),
                        retry_after: None,
                        response: None,
                    };
                }
            }
        }
        let file = guard.as_mut().expect("opened above");
        let written = async {
            file.write_all(&line).await?;
            file.flush().await
        };
        match written.await {
            Ok(()) => Attempt::Delivered,
            Err(e) => {
                // Reopen next time: the file may have been rotated or its disk freed.
                *guard = None;
                Attempt::Retryable {
                    reason: format!("write {}: {e}", self.path.display()),
                    retry_after: None,
                    response: None,
                }
            }
        }
    }

    fn reads_metadata(&self) -> bool {
        false
    }
}
