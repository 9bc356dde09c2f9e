//! Inputs: where a flow's messages come from. One file per input; `registry!` below lists them,
//! one line each, and writes the enums and matches; [`Spec`] is what each input's `Config`
//! provides and [`Source`] what it builds.
//!
//! Reading inputs (`generate`, `stdin`, `file`, `directory`, `s3`, `sftp`) wait for a place in the flow's concurrency budget
//! before they read on, which is their backpressure; `http_server` refuses with 503 instead.
//! An input returns when it has no more to read or when shutdown is signalled.

pub mod amqp;
pub mod directory;
pub mod file;
mod files;
pub mod generate;
pub mod http_poll;
pub mod http_server;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod nats_jetstream;
pub mod postgres_cdc;
pub mod postgres_listen;
pub mod redis_list;
pub mod redis_pubsub;
pub mod redis_streams;
pub mod s3;
pub mod sftp;
pub mod sql_poll;
pub mod stdin;

use serde::Deserialize;

use crate::clients::{Resources, Shared};
use crate::config::BuildError;
pub use crate::core::feed::{AtShutdown, Feed, GiveUp, Outcome, Redelivery};
use crate::core::mapping::Value;
use crate::core::{Message, Output, Processor};

/// What the registry asks of an input's config struct (`Config` in the input's file).
pub trait Spec {
    /// The built input.
    type Built: Source;

    /// Compiles what can be compiled and checks what can be checked without running.
    fn build(self, shared: &Shared, resources: &Resources) -> Result<Self::Built, Vec<BuildError>>;
}

/// What the engine asks of a built input.
pub trait Source: Send + Sync + 'static {
    /// Whether the input keeps anything in the store (checkpoints, idempotency keys), so the
    /// engine opens one for its flow. Deliberately without a default: an input that forgot to
    /// say so would fail at run time with "the flow has no store".
    fn uses_store(&self) -> bool;

    /// Reads to the end (or shutdown), handing each message to `feed`.
    fn run<P: Processor, O: Output>(
        &self,
        feed: Feed<P, O>,
    ) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// Writes the registry from one line per input (`yaml_name: Variant`, the module being
/// `yaml_name`): the config and built enums and every match over them. The `pub mod` lines
/// stay outside the macro: rustfmt does not follow a module declared inside one.
macro_rules! registry {
    ($($name:ident: $variant:ident),* $(,)?) => {
        /// Every input weft knows, by its YAML name.
        #[derive(Debug, Deserialize, schemars::JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum InputConfig {
            $($variant(Box<$name::Config>),)*
        }

        /// The YAML names, in the registry's order.
        pub const NAMES: &[&str] = &[$(stringify!($name)),*];

        impl InputConfig {
            pub fn kind(&self) -> &'static str {
                match self {
                    $(InputConfig::$variant(_) => stringify!($name),)*
                }
            }

            /// Compiles what can be compiled and checks what can be checked without running.
            pub fn build(self, shared: &Shared, resources: &Resources) -> Result<Input, Vec<BuildError>> {
                Ok(match self {
                    $(InputConfig::$variant(c) => {
                        Input::$variant(Box::new(Spec::build(*c, shared, resources)?))
                    })*
                })
            }
        }

        /// A built input.
        pub enum Input {
            $($variant(Box<<$name::Config as Spec>::Built>),)*
        }

        impl Input {
            /// Whether the input keeps anything in the store.
            pub fn uses_store(&self) -> bool {
                match self {
                    $(Input::$variant(i) => Source::uses_store(&**i),)*
                }
            }

            /// Runs a reading input to its end (or shutdown). `http_server` endpoints are
            /// served by address instead (`http_server::serve`).
            pub async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
                match self {
                    $(Input::$variant(i) => Source::run(&**i, feed).await,)*
                }
            }
        }
    };
}

registry! {
    http_server: HttpServer,
    http_poll: HttpPoll,
    sql_poll: SqlPoll,
    postgres_listen: PostgresListen,
    postgres_cdc: PostgresCdc,
    redis_streams: RedisStreams,
    redis_list: RedisList,
    redis_pubsub: RedisPubsub,
    nats: Nats,
    nats_jetstream: NatsJetstream,
    amqp: Amqp,
    kafka: Kafka,
    mqtt: Mqtt,
    generate: Generate,
    stdin: Stdin,
    file: File,
    directory: Directory,
    s3: S3,
    sftp: Sftp,
}

impl Input {
    /// One poll of a polling input, every page of it, as its schedule would make it (for
    /// `weft test`); `None` for an input that does not poll.
    pub async fn poll_once<P: Processor, O: Output>(
        &self,
        feed: &Feed<P, O>,
    ) -> Option<Result<(), String>> {
        Some(match self {
            Input::HttpPoll(poll) => poll.poll_once(feed).await,
            Input::SqlPoll(poll) => poll.poll_once(feed).await,
            Input::Directory(dir) => dir.poll_once(feed).await,
            Input::S3(bucket) => bucket.poll_once(feed).await,
            Input::Sftp(remote) => remote.poll_once(feed).await,
            _ => return None,
        })
    }

    /// Whether, on a cluster, this input runs on one node at a time (under a lease): those
    /// that poll or schedule (every node would fetch the same pages or fire the same ticks) and
    /// subscriptions every subscriber receives in full. Inputs whose source shares its work out
    /// between readers (queues, consumer groups, shared subscriptions) and those that read
    /// what is local to the node run on every node.
    pub fn runs_once_in_a_cluster(&self) -> bool {
        match self {
            Input::HttpPoll(_) | Input::SqlPoll(_) | Input::Generate(_) => true,
            // LISTEN and PUBLISH/SUBSCRIBE deliver every notification to every listener.
            Input::PostgresListen(_) | Input::RedisPubsub(_) => true,
            // Every node would list the same bucket and take the same objects.
            Input::S3(_) => true,
            // Every node would list the same remote directory.
            Input::Sftp(_) => true,
            // A slot serves one reader at a time.
            Input::PostgresCdc(_) => true,
            Input::Nats(nats) => !nats.has_queue_group(),
            // A session is one client id: nodes sharing it would take it from each other.
            Input::Mqtt(_) => true,
            Input::HttpServer(_)
            | Input::RedisStreams(_)
            | Input::RedisList(_)
            | Input::NatsJetstream(_)
            | Input::Amqp(_)
            // The group shares the partitions out between its members.
            | Input::Kafka(_)
            | Input::Stdin(_)
            | Input::File(_)
            // The node's own directory (on a shared mount, give each node its own).
            | Input::Directory(_) => false,
        }
    }

    /// Where a polling input keeps its watermark (`checkpoint_key`, else `flow`); `None` for
    /// inputs that keep none.
    pub fn checkpoint_key(&self, flow: &str) -> Option<String> {
        match self {
            Input::HttpPoll(poll) => poll.checkpoint_key(flow),
            Input::SqlPoll(poll) => poll.checkpoint_key(flow),
            Input::Directory(dir) => dir.checkpoint_key(flow),
            Input::S3(bucket) => bucket.checkpoint_key(flow),
            Input::Sftp(remote) => remote.checkpoint_key(flow),
            _ => None,
        }
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
                feed.flow
                    .count_rejected(format_args!("{source}, line {number}: {error}"));
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
