//! End-to-end tests: the real `weft` binary, real sockets on 127.0.0.1, real receiving servers.
//! One test binary with one module per area (linking one binary is much cheaper than many).

mod admin;
mod admin_api;
mod amqp;
mod api_auth;
mod bad_input;
mod check;
mod cli;
mod codecs;
mod conformance;
mod delivery;
mod durable;
mod finite;
mod flow_tests;
mod graphql;
mod hot_reload;
mod http_input;
mod http_poll;
mod http_processor;
mod idempotency;
mod jwt_auth;
mod mqtt;
mod nats;
mod openapi;
mod outbound;
mod patterns;
mod peers;
mod redis;
mod secrets;
mod server_tls;
mod soap;
mod sql;
mod support;
mod tidy;
mod tls;
mod webhook_auth;
