//! `stdin`: one message per line of standard input; the input ends with the stream.
//!
//! ```yaml
//! input:
//!   stdin:
//!     codec: lines        # lines (default: each line is a string) or json_lines
//! ```

use serde::Deserialize;

use super::{Codec, Feed, read_lines};
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

impl Config {
    pub async fn run(&self, feed: Feed<impl Processor, impl Output>) -> std::io::Result<()> {
        let reader = tokio::io::BufReader::new(tokio::io::stdin());
        read_lines(reader, self.codec, "stdin", &feed).await
    }
}
