//! `stdin`: one message per line of standard input; the input ends with the stream.
//!
//! ```yaml
//! input:
//!   stdin:
//!     codec: lines        # lines (default: each line is a string) or json_lines
//! ```

use serde::Deserialize;

use super::{Codec, Feed, read_lines};
use crate::clients::{Resources, Shared};
use crate::config::BuildError;
use crate::core::{Output, Processor};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "StdinInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_codec")]
    pub codec: Codec,
}

fn default_codec() -> Codec {
    Codec::Lines
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
        let reader = tokio::io::BufReader::new(tokio::io::stdin());
        read_lines(reader, self.codec, "stdin", &feed).await
    }
}
