//! The subcommands that are more than a call into the library, one module each.

pub mod checkpoint;
pub mod dlq;
pub mod logging;
pub mod memory;
pub mod run;
pub mod tap;
