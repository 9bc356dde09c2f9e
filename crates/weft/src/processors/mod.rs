//! Processors: the steps of a flow's `pipeline`. This enum is the registry: one variant per
//! processor, named as in YAML, one file each.

mod filter;
mod log;
mod map;

use serde::Deserialize;

use crate::config::BuildError;
use crate::core::{MappingError, Message};

/// Every processor weft knows, by its YAML name.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessorConfig {
    Map(map::Config),
    Filter(filter::Config),
    Log(log::Config),
}

impl ProcessorConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessorConfig::Map(_) => "map",
            ProcessorConfig::Filter(_) => "filter",
            ProcessorConfig::Log(_) => "log",
        }
    }

    pub fn build(&self) -> Result<Processor, Vec<BuildError>> {
        Ok(match self {
            ProcessorConfig::Map(c) => Processor::Map(c.build()?),
            ProcessorConfig::Filter(c) => Processor::Filter(c.build()?),
            ProcessorConfig::Log(c) => Processor::Log(c.build()?),
        })
    }
}

pub enum Processor {
    Map(map::Map),
    Filter(filter::Filter),
    Log(log::Log),
}

impl crate::core::Processor for Processor {
    fn process(&self, message: Message) -> Result<Option<Message>, MappingError> {
        match self {
            Processor::Map(p) => p.process(message),
            Processor::Filter(p) => p.process(message),
            Processor::Log(p) => p.process(message),
        }
    }

    fn reads_metadata(&self) -> bool {
        match self {
            Processor::Map(p) => p.program.reads_metadata(),
            Processor::Filter(p) => p.condition.reads_metadata(),
            Processor::Log(p) => p.message.reads_metadata(),
        }
    }
}
