//! `map`: rewrites the message with a VRL program. The message after the program is the new
//! message; `abort` drops it on purpose; a failing fallible call fails it with VRL's message.
//!
//! ```yaml
//! pipeline:
//!   - map: |
//!       .order_id = to_string!(.id)
//!       .email = downcase!(.customer.email)
//!       del(.customer)
//! ```

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::core::Step;
use crate::core::StepError;
use crate::core::mapping::{Mapping, Outcome};
use crate::core::{MappingError, Message};

/// The VRL program.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "MapProcessor")]
pub struct Config(pub String);

impl super::Spec for Config {
    type Built = Map;

    fn build(&self, _shared: &Shared, _resources: &Resources) -> Result<Map, Vec<BuildError>> {
        Mapping::compile(&self.0)
            .map(|program| Map { program })
            .map_err(|d| BuildError::from_diagnostics("", d))
    }
}

pub struct Map {
    pub(super) program: Mapping,
}

impl Map {
    fn apply(&self, mut message: Message) -> Result<Option<Message>, MappingError> {
        match self
            .program
            .run(&mut message.value, &mut message.metadata)?
        {
            Outcome::Done(_) => Ok(Some(message)),
            Outcome::Aborted => Ok(None),
        }
    }
}

impl crate::core::Immediate for Map {
    fn step(&self, message: Message) -> Result<Step, StepError> {
        Ok(self.apply(message)?.into())
    }

    fn reads_metadata(&self) -> bool {
        self.program.reads_metadata()
    }
}
