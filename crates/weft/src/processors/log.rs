//! `log`: writes a line per message to weft's log and passes the message on unchanged.
//!
//! ```yaml
//! pipeline:
//!   - log:
//!       level: info                      # trace, debug, info, warn or error
//!       message: '"order " + to_string!(.id) + " received"'   # a VRL expression
//! ```

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::core::Step;
use crate::core::StepError;
use crate::core::mapping::{Mapping, to_text};
use crate::core::{MappingError, Message};

/// The level the line is logged at.
#[derive(Debug, Default, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "LogProcessor")]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub level: Level,
    /// A VRL expression; its value is the text logged.
    pub message: String,
}

impl super::Spec for Config {
    type Built = Log;

    fn build(&self, _shared: &Shared, _resources: &Resources) -> Result<Log, Vec<BuildError>> {
        let message = Mapping::compile(&self.message)
            .map_err(|d| BuildError::from_diagnostics("message", d))?;
        Ok(Log {
            level: self.level,
            message,
        })
    }
}

pub struct Log {
    level: Level,
    pub(super) message: Mapping,
}

impl Log {
    fn apply(&self, message: Message) -> Result<Option<Message>, MappingError> {
        let text = to_text(&self.message.eval(&message.value, &message.metadata)?);
        let id = message.id;
        match self.level {
            Level::Trace => tracing::trace!(target: "weft::log", %id, "{text}"),
            Level::Debug => tracing::debug!(target: "weft::log", %id, "{text}"),
            Level::Info => tracing::info!(target: "weft::log", %id, "{text}"),
            Level::Warn => tracing::warn!(target: "weft::log", %id, "{text}"),
            Level::Error => tracing::error!(target: "weft::log", %id, "{text}"),
        }
        Ok(Some(message))
    }
}

impl crate::core::Immediate for Log {
    fn step(&self, message: Message) -> Result<Step, StepError> {
        Ok(self.apply(message)?.into())
    }

    fn reads_metadata(&self) -> bool {
        self.message.reads_metadata()
    }
}
