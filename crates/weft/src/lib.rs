//! weft: an API integration engine. A user writes flows (an input, a pipeline of processors, one
//! or more outputs) in YAML; weft runs them, acking every input only after delivery.
//!
//! Crate map, lowest layer first (a module imports only from layers below it; `ARCHITECTURE.md`
//! has the order and the tidy test that holds it):
//! - [`config`]: the config vocabulary: errors, units, secrets, the located YAML tree and its
//!   serde `Deserializer`.
//! - [`core`]: messages, the flow runtime, the feed inputs are handed, the retry stack, the
//!   durable queue and the clock it reads, the mapping language (VRL), metrics, trace context.
//!   It imports no component.
//! - [`clients`]: per-system client code shared by inputs, processors and outputs (HTTP and its
//!   auth, rate limits and breakers, SQL, Redis, NATS, AMQP, MQTT, GraphQL, SOAP, OpenAPI).
//! - [`telemetry`]: trace export and the per-flow log filter.
//! - [`server`]: the HTTP server loop of `http_server` and the admin endpoint: TLS, limits.
//! - [`inputs`], [`processors`], [`outputs`]: one file per component; each `mod.rs` holds the
//!   registry enum for its kind.
//! - [`load`]: YAML files → the file's shape and each component's typed config → built flows,
//!   collecting every error with `file:line:col`; the JSON Schema of the same structs.
//! - [`admin`]: `/metrics`, `/health` and the `/api/v1` REST API.
//! - [`engine`]: starts flows, serves HTTP inputs by address, reloads, drains on shutdown.
//! - [`testing`]: `weft test` and `weft init`.

pub mod admin;
pub mod clients;
pub mod cluster;
pub mod config;
pub mod core;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod inputs;
pub mod load;
pub mod outputs;
pub mod processors;
pub mod server;
pub mod telemetry;
pub mod testing;
