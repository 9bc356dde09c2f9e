//! weft: an API integration engine. A user writes flows (an input, a pipeline of processors, one
//! or more outputs) in YAML; weft runs them, acking every input only after delivery.
//!
//! Crate map (the same words as `ARCHITECTURE.md`):
//! - [`config`]: YAML → located tree → `${VAR}` → typed component configs → built components,
//!   collecting every error with `file:line:col`.
//! - [`core`]: messages, the flow runtime, the retry stack, the mapping language (VRL), metrics.
//!   It imports no component.
//! - [`inputs`], [`processors`], [`outputs`]: one file per component; each `mod.rs` holds the
//!   registry enum for its kind.
//! - [`clients`]: per-system client code shared by inputs and outputs (HTTP).
//! - [`engine`]: starts flows, serves HTTP inputs by address, drains on shutdown.
//! - [`admin`]: `/metrics` and `/health`.
//! - [`server`]: the HTTP server loop of `http_server` and the admin endpoint: TLS, limits.

pub mod admin;
pub mod clients;
pub mod config;
pub mod core;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod inputs;
pub mod outputs;
pub mod processors;
pub mod server;
pub mod telemetry;
pub mod testing;
