//! `sftp`: writes each message as a file on an SFTP server, under a path made from the
//! message.
//!
//! The file is the message, written as `format` says (JSON by default, a string message as
//! its text; see `core::body`). It is uploaded under a dot-name in the same directory and
//! renamed into place once complete (after an fsync where the server offers one), so a reader
//! of the directory never sees half a file; missing directories are made. A message counts as
//! delivered once the rename is done. A server that cannot be reached, breaks off or refuses
//! the login is tried again (a password may be being rotated), and so is a write the server
//! broke off (a full disk); a refused one (permission denied) or a host key that does not
//! match fails the message for good. A path the message makes holding a `..` part is refused.
//!
//! ```yaml
//! output:
//!   sftp:
//!     server:
//!       url: sftp://weft@files.erp.example:2222
//!       password: ${SFTP_PASSWORD}                  # and/or private_key: a file
//!       host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMnnfrJtD2ZLp/MJjkO8AVKEvO/OLsD9Bm7DDrvXN2Ao"
//!     path: "/incoming/orders/{{ .id }}.xml"
//!     format: xml                                   # json (default), text, csv, …
//! ```
//!
//! Writing a path again replaces the file, so a message delivered twice (after a crash, say)
//! leaves one file: give each message a path of its own (its id) and the output is
//! idempotent. To write batches, put an `aggregate` step before it.

use serde::Deserialize;

use crate::clients::sftp::{Fault, ServerConfig, Sftp};
use crate::clients::{Resources, Shared};
use crate::config::BuildError;
use crate::core::body::{Encoding, Format};
use crate::core::retry::RetryConfig;
use crate::core::template::{Escape, Template};
use crate::core::{Attempt, Message};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SftpOutput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The server, the login and how its host key is checked.
    pub server: ServerConfig,
    /// The file's path on the server; may contain `{{ expression }}` parts.
    pub path: String,
    /// How the message is written: `json` (the default; a string message as its text),
    /// `text`, `xml`, `csv` or `form`.
    #[serde(default)]
    pub format: Option<Format>,
    #[serde(default)]
    pub retry: RetryConfig,
}

pub struct SftpOutput {
    sftp: Sftp,
    path: Template,
    encoding: Encoding,
}

impl super::Spec for Config {
    type Built = SftpOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(
        &self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<SftpOutput, Vec<BuildError>> {
        let mut errors = Vec::new();
        if self.path.is_empty() {
            errors.push(BuildError::new("path", "is empty"));
        }
        let path = Template::parse(&self.path, Escape::None)
            .map_err(|d| errors.extend(BuildError::from_diagnostics("path", d)))
            .ok();
        let encoding = Encoding::for_records(self.format)
            .map_err(|e| errors.push(BuildError::new("format", e)))
            .ok();
        let sftp = Sftp::build(&self.server, "server")
            .map_err(|e| errors.extend(e))
            .ok();
        match (sftp, path, encoding) {
            (Some(sftp), Some(path), Some(encoding)) if errors.is_empty() => Ok(SftpOutput {
                sftp,
                path,
                encoding,
            }),
            _ => Err(errors),
        }
    }
}

impl crate::core::Output for SftpOutput {
    async fn send(&self, message: &Message) -> Attempt {
        let fatal = |reason: String| Attempt::Fatal {
            reason,
            response: None,
        };
        let path = match self.path.render(&message.value, &message.metadata) {
            Ok(path) if path.is_empty() || path.ends_with('/') => {
                return fatal(format!("path: the message makes no file name ({path:?})"));
            }
            // A message must not lead the file out of the directories the config names.
            Ok(path) if path.contains('\0') || path.split('/').any(|part| part == "..") => {
                return fatal(format!(
                    "path: the message makes {path:?}, which holds `..`"
                ));
            }
            Ok(path) => path,
            Err(e) => return fatal(format!("path: {e}")),
        };
        let body = match self.encoding.encode(&message.value) {
            Ok((body, _)) => body,
            Err(e) => return fatal(format!("{}: {e}", self.sftp.shown(&path))),
        };
        match self.sftp.write(&path, &body).await {
            Ok(()) => Attempt::Delivered,
            Err(Fault::Again(reason)) => Attempt::Retryable {
                reason,
                retry_after: None,
                response: None,
            },
            Err(Fault::Failed(reason)) => fatal(reason),
            Err(Fault::Missing) => fatal(format!(
                "{}: no such directory, and it could not be made",
                self.sftp.shown(&path)
            )),
        }
    }

    fn reads_metadata(&self) -> bool {
        self.path.reads_metadata()
    }
}
