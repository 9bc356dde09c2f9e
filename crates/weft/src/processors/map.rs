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

use crate::config::BuildError;
use crate::core::mapping::{Mapping, Outcome};
use crate::core::{MappingError, Message};

/// The VRL program.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "MapProcessor")]
pub struct Config(pub String);

impl Config {
    pub fn build(&self) -> Result<Map, Vec<BuildError>> {
        Mapping::compile(&self.0)
            .map(|program| Map { program })
            .map_err(|d| BuildError::from_diagnostics("", d))
    }
}

pub struct Map {
    pub(super) program: Mapping,
}

impl Map {
    pub fn process(&self, mut message: Message) -> Result<Option<Message>, MappingError> {
        match self
            .program
            .run(&mut message.value, &mut message.metadata)?
        {
            Outcome::Done(_) => Ok(Some(message)),
            Outcome::Aborted => Ok(None),
        }
    }
}
