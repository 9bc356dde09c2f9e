//! Inputs: where a flow's messages come from. This enum is the registry: one variant per input,
//! named as in YAML, one file each.
//!
//! Reading inputs (`generate`, `stdin`, `file`) wait for a place in the flow's concurrency budget
//! before they read on, which is their backpressure; `http_server` refuses with 503 instead.
//! An input returns when it has no more to read or when shutdown is signalled.

pub mod amqp;
pub mod file;
pub mod generate;
pub mod http_poll;
pub mod http_server;
pub mod mqtt;
pub mod nats;
pub mod nats_jetstream;
pub mod postgres_listen;
pub mod redis_list;
pub mod redis_pubsub;
pub mod redis_streams;
pub mod sql_poll;
pub mod stdin;

use serde::Deserialize;

use crate::clients::{Resources, Shared};
use crate::config::BuildError;
pub use crate::core::feed::{AtShutdown, Feed};
use crate::core::mapping::Value;
use crate::core::{Message, Output, Processor};

/// Every input weft knows, by its YAML name.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputConfig {
    HttpServer(Box<http_server::Config>),
    HttpPoll(Box<http_poll::Config>),
    SqlPoll(Box<sql_poll::Config>),
    PostgresListen(postgres_listen::Config),
    RedisStreams(redis_streams::Config),
    RedisList(redis_list::Config),
    RedisPubsub(redis_pubsub::Config),
    Nats(nats::Config),
    NatsJetstream(nats_jetstream::Config),
    Amqp(amqp::Config),
    Mqtt(mqtt::Config),
    Generate(generate::Config),
    Stdin(stdin::Config),
    File(file::Config),
}

impl InputConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            InputConfig::HttpServer(_) => "http_server",
            InputConfig::HttpPoll(_) => "http_poll",
            InputConfig::SqlPoll(_) => "sql_poll",
            InputConfig::PostgresListen(_) => "postgres_listen",
            InputConfig::RedisStreams(_) => "redis_streams",
            InputConfig::RedisList(_) => "redis_list",
            InputConfig::RedisPubsub(_) => "redis_pubsub",
            InputConfig::Nats(_) => "nats",
            InputConfig::NatsJetstream(_) => "nats_jetstream",
            InputConfig::Amqp(_) => "amqp",
            InputConfig::Mqtt(_) => "mqtt",
            InputConfig::Generate(_) => "generate",
            InputConfig::Stdin(_) => "stdin",
            InputConfig::File(_) => "file",
        }
    }

    /// Compiles what can be compiled and checks what can be checked without running.
    pub fn build(self, shared: &Shared, resources: &Resources) -> Result<Input, Vec<BuildError>> {
        Ok(match self {
            InputConfig::HttpServer(c) => Input::HttpServer(c.build(&shared.http)?),
            InputConfig::HttpPoll(c) => {
                Input::HttpPoll(Box::new(c.build(&shared.http, resources)?))
            }
            InputConfig::SqlPoll(c) => Input::SqlPoll(Box::new(c.build(resources)?)),
            InputConfig::PostgresListen(c) => Input::PostgresListen(c.build(resources)?),
            InputConfig::RedisStreams(c) => Input::RedisStreams(Box::new(c.build()?)),
            InputConfig::RedisList(c) => Input::RedisList(Box::new(c.build()?)),
            InputConfig::RedisPubsub(c) => Input::RedisPubsub(Box::new(c.build()?)),
            InputConfig::Nats(c) => Input::Nats(Box::new(c.build()?)),
            InputConfig::NatsJetstream(c) => Input::NatsJetstream(Box::new(c.build()?)),
            InputConfig::Amqp(c) => Input::Amqp(Box::new(c.build()?)),
            InputConfig::Mqtt(c) => Input::Mqtt(Box::new(c.build()?)),
            InputConfig::Generate(c) => Input::Generate(c.build()?),
            InputConfig::Stdin(c) => Input::Stdin(c),
            InputConfig::File(c) => Input::File(c),
        })
    }
}

/// A built input.
pub enum Input {
    /// Served by [`http_server::serve`], together with the other endpoints on its address.
    HttpServer(http_server::Endpoint),
    HttpPoll(Box<http_poll::HttpPoll>),
    SqlPoll(Box<sql_poll::SqlPoll>),
    PostgresListen(postgres_listen::PostgresListen),
    RedisStreams(Box<redis_streams::RedisStreams>),
    RedisList(Box<redis_list::RedisList>),
    RedisPubsub(Box<redis_pubsub::RedisPubsub>),
    Nats(Box<nats::NatsInput>),
    NatsJetstream(Box<nats_jetstream::NatsJetstream>),
    Amqp(Box<amqp::AmqpInput>),
    Mqtt(Box<mqtt::MqttInput>),
    Generate(generate::Generate),
    Stdin(stdin::Config),
    File(file::Config),
}

impl Input {
    /// Whether the input keeps anything in the store.
    pub fn uses_store(&self) -> bool {
        match self {
            Input::HttpServer(endpoint) => endpoint.uses_store(),
            Input::HttpPoll(poll) => poll.uses_store(),
            Input::SqlPoll(poll) => poll.uses_store(),
            _ => false,
        }
    }

    /// Runs a reading input to its end (or shutdown).
    pub async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
        match self {
            Input::HttpServer(_) => unreachable!("http_server endpoints are served by address"),
            Input::Generate(g) => g.run(feed).await,
            Input::HttpPoll(p) => p.run(feed).await,
            Input::SqlPoll(p) => p.run(feed).await,
            Input::PostgresListen(p) => p.run(feed).await,
            Input::RedisStreams(p) => p.run(feed).await,
            Input::RedisList(p) => p.run(feed).await,
            Input::RedisPubsub(p) => p.run(feed).await,
            Input::Nats(p) => p.run(feed).await,
            Input::NatsJetstream(p) => p.run(feed).await,
            Input::Amqp(p) => p.run(feed).await,
            Input::Mqtt(p) => p.run(feed).await,
            Input::Stdin(c) => return c.run(feed).await,
            Input::File(c) => return c.run(feed).await,
        }
        Ok(())
    }
}

/// How a reading input splits its bytes into messages.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// One JSON document per line.
    #[default]
    JsonLines,
    /// One string message per line.
    Lines,
}

/// The longest line a reading input accepts; a longer one is skipped and counted as failed.
pub const MAX_LINE: usize = 1 << 20;

impl Codec {
    /// Decodes one line (without its newline); `None` for a blank JSON line.
    pub fn decode(self, line: &[u8]) -> Option<Result<Value, String>> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self {
            Codec::Lines => Some(Ok(Value::Bytes(bytes::Bytes::copy_from_slice(line)))),
            Codec::JsonLines if line.iter().all(u8::is_ascii_whitespace) => None,
            Codec::JsonLines => Some(
                serde_json::from_slice::<Value>(line).map_err(|e| format!("invalid JSON: {e}")),
            ),
        }
    }
}

/// Reads `reader` line by line into the flow until it ends or shutdown is signalled.
pub async fn read_lines<R: tokio::io::AsyncBufRead + Unpin>(
    mut reader: R,
    codec: Codec,
    source: &str,
    feed: &Feed<impl Processor, impl Output>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let limited = (&mut reader).take(MAX_LINE as u64 + 1);
        let read = tokio::select! {
            biased;
            _ = feed.shutdown.cancelled() => return Ok(()),
            r = read_line(limited, &mut line) => r?,
        };
        if read == 0 {
            return Ok(());
        }
        number += 1;
        let decoded = if line.ends_with(b"\n") {
            line.pop();
            codec.decode(&line)
        } else if line.len() > MAX_LINE {
            // Skip the rest of the over-long line without holding it in memory.
            loop {
                let mut rest = Vec::new();
                let n = (&mut reader)
                    .take(64 * 1024)
                    .read_until(b'\n', &mut rest)
                    .await?;
                if n == 0 || rest.ends_with(b"\n") {
                    break;
                }
            }
            Some(Err(format!("line is longer than {MAX_LINE} bytes")))
        } else {
            codec.decode(&line)
        };
        match decoded {
            None => {}
            Some(Ok(value)) => {
                let accepted = feed.push(Message::new(value)).await;
                if !accepted {
                    return Ok(());
                }
            }
            Some(Err(error)) => {
                feed.flow.count_rejected();
                tracing::error!(flow = %feed.flow.name, source, line = number, %error, "skipped a line that is not a message");
            }
        }
    }
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    mut reader: R,
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    tokio::io::AsyncBufReadExt::read_until(&mut reader, b'\n', line).await
}
