//! The config vocabulary every component speaks: errors ([`BuildError`], [`ConfigError`]), units
//! ([`units::Dur`], [`units::Size`]), [`Secret`], bounded file reading, and the located YAML tree
//! with its serde `Deserializer` and `${VAR}` substitution.
//!
//! This is the bottom layer: it imports nothing else of weft. The loader that walks config
//! files and builds components from them sits above the components, in `crate::load`.

pub mod de;
pub mod env;
mod error;
mod files;
pub mod schema_types;
pub mod secret;
pub mod units;
pub mod yaml;

pub use error::{BuildError, ConfigError, Diagnostic};
pub use files::read_bounded;
pub use secret::Secret;
