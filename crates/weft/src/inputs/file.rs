//! `file`: reads a file once, one message per line; the input ends at the end of the file.
//!
//! ```yaml
//! input:
//!   file:
//!     path: ./orders.jsonl
//!     codec: json_lines   # json_lines (default) or lines
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use super::{Codec, Feed, read_lines};
use crate::clients::{Resources, Shared};
use crate::config::BuildError;
use crate::core::{Output, Processor};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "FileInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file to read, from its start to its end.
    pub path: PathBuf,
    #[serde(default)]
    pub codec: Codec,
}

impl super::Spec for Config {
    type Built = Config;

    fn build(self, _shared: &Shared, _resources: &Resources) -> Result<Config, Vec<BuildError>> {
        Ok(self)
    }
}

impl super::Source for Config {
    fn uses_store(&self) -> bool {
        false
    }

    async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
        let file = tokio::fs::File::open(&self.path)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        let reader = tokio::io::BufReader::with_capacity(64 * 1024, file);
        read_lines(reader, self.codec, &self.path.display().to_string(), &feed).await
    }
}
