//! `filter`: keeps a message when a VRL condition is `true`, drops it when `false`. A condition
//! that does not evaluate to a boolean fails the message rather than guessing.
//!
//! ```yaml
//! pipeline:
//!   - filter: .status == "paid" && exists(.email)
//! ```

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::core::Step;
use crate::core::StepError;
use crate::core::mapping::Mapping;
use crate::core::{MappingError, Message, Value};

/// The VRL condition.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "FilterProcessor")]
pub struct Config(pub String);

impl super::Spec for Config {
    type Built = Filter;

    fn build(&self, _shared: &Shared, _resources: &Resources) -> Result<Filter, Vec<BuildError>> {
        Mapping::compile(&self.0)
            .map(|condition| Filter { condition })
            .map_err(|d| BuildError::from_diagnostics("", d))
    }
}

pub struct Filter {
    pub(super) condition: Mapping,
}

impl Filter {
    fn apply(&self, message: Message) -> Result<Option<Message>, MappingError> {
        match self.condition.eval(&message.value, &message.metadata)? {
            Value::Boolean(true) => Ok(Some(message)),
            Value::Boolean(false) => Ok(None),
            other => Err(MappingError(format!(
                "filter condition must be true or false, got {}",
                crate::core::mapping::to_text(&other)
            ))),
        }
    }
}

impl crate::core::Immediate for Filter {
    fn step(&self, message: Message) -> Result<Step, StepError> {
        Ok(self.apply(message)?.into())
    }

    fn reads_metadata(&self) -> bool {
        self.condition.reads_metadata()
    }
}
