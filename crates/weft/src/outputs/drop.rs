//! `drop`: accepts every message and sends it nowhere. For flows whose work is their side
//! effects (a `log` step), and for measuring a pipeline without a destination.
//!
//! ```yaml
//! output:
//!   drop: {}
//! ```

use serde::Deserialize;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "DropOutput")]
#[serde(deny_unknown_fields)]
pub struct Config {}
