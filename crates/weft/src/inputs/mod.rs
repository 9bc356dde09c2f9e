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

use std::sync::Arc;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clients::Resources;
use crate::config::BuildError;
use crate::core::Message;
use crate::core::flow::Processed;
use crate::core::mapping::Value;
use crate::engine::RunFlow;
use crate::outputs::Shared;

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
    pub async fn run(&self, feed: Feed) -> std::io::Result<()> {
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

/// What a reading input needs to hand messages to its flow.
#[derive(Clone)]
pub struct Feed {
    pub flow: Arc<RunFlow>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

/// How long a connection-based input waits before it connects again after a failure.
const RECONNECT_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a connection-based input's reading may be dropped at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtShutdown {
    /// Dropped: nothing it holds waits for an acknowledgement (pub/sub).
    Cancel,
    /// Left to end by itself, so what is under way is finished and acknowledged.
    Finish,
}

/// Where the checkpoints of polling inputs live in the store (keyed by flow).
const CHECKPOINT_NAMESPACE: &str = "checkpoint";

impl Feed {
    /// Runs `attempt` — one connection's worth of reading — again and again until it ends by
    /// itself or shutdown comes. A failure is logged, naming the component and the server
    /// (never its credentials), and followed by a pause.
    pub async fn keep_reading<F, Fut, E>(
        &self,
        component: &str,
        server: &str,
        at_shutdown: AtShutdown,
        mut attempt: F,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        loop {
            let ran = match at_shutdown {
                AtShutdown::Cancel => tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => return,
                    r = attempt() => r,
                },
                AtShutdown::Finish => attempt().await,
            };
            match ran {
                Ok(()) => return,
                Err(error) => {
                    tracing::error!(flow = %self.flow.name, component, server, %error, "reading failed; connecting again");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(RECONNECT_DELAY) => {}
                    }
                }
            }
        }
    }

    /// Runs `poll` on `schedule` until shutdown. A poll answering `Ok(true)` (more pages are
    /// waiting) is followed at once by the next; a failure is logged and counted, and the next
    /// poll starts from the last checkpoint.
    pub async fn poll_on_schedule<F, Fut>(
        &self,
        schedule: &crate::core::schedule::Schedule,
        component: &str,
        at_shutdown: AtShutdown,
        mut poll: F,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, String>>,
    {
        let mut ticker = schedule.ticker();
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            while !self.shutdown.is_cancelled() {
                let polled = match at_shutdown {
                    AtShutdown::Cancel => tokio::select! {
                        biased;
                        _ = self.shutdown.cancelled() => return,
                        r = poll() => r,
                    },
                    AtShutdown::Finish => poll().await,
                };
                match polled {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(error) => {
                        self.flow.count_rejected();
                        tracing::error!(flow = %self.flow.name, component, %error, "poll ended early; the next poll starts from the last checkpoint");
                        break;
                    }
                }
            }
        }
    }

    /// The checkpoint this flow's input saved last, if any.
    pub async fn load_checkpoint<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Option<T>, String> {
        let store = self.flow.store().ok_or("the flow has no store")?;
        match store
            .kv_get(
                CHECKPOINT_NAMESPACE,
                &self.flow.name,
                crate::core::durable::now_ms(),
            )
            .await
            .map_err(|e| e.to_string())?
        {
            Some(saved) => serde_json::from_slice(&saved)
                .map(Some)
                .map_err(|e| format!("the saved checkpoint is unreadable: {e}")),
            None => Ok(None),
        }
    }

    /// Saves this flow's input checkpoint: call it only once what it covers was accepted.
    pub async fn save_checkpoint<T: serde::Serialize>(&self, mark: &T) -> Result<(), String> {
        let store = self.flow.store().ok_or("the flow has no store")?;
        let text = serde_json::to_vec(mark).map_err(|e| e.to_string())?;
        store
            .kv_put(CHECKPOINT_NAMESPACE, &self.flow.name, &text, None)
            .await
            .map_err(|e| format!("could not save the checkpoint: {e}"))
    }

    /// Waits for a place in flight, then processes `message` in its own task.
    /// Returns `false` if shutdown came first (the message was not accepted).
    pub async fn push(&self, message: Message) -> bool {
        if let Some(queue) = self.flow.durable() {
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = self.flow.running() => {}
            }
            // Wait for room, then for the commit: that is this input's backpressure.
            loop {
                let reservation = loop {
                    if let Some(r) = queue.reserve() {
                        break r;
                    }
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                    }
                };
                match queue.accept(reservation, &message).await {
                    Ok(()) => {
                        self.flow.count_received();
                        return true;
                    }
                    Err(error @ crate::core::durable::AcceptError::OrderKey(_)) => {
                        // This message can never be keyed; retrying would stall the input.
                        tracing::error!(flow = %self.flow.name, id = %message.id, %error, "message rejected");
                        self.flow.count_rejected();
                        return true;
                    }
                    Err(error) => {
                        if error.is_outage() {
                            tracing::debug!(flow = %self.flow.name, %error, "could not store a message; retrying");
                        } else {
                            tracing::error!(flow = %self.flow.name, %error, "could not store a message; retrying");
                        }
                        tokio::select! {
                            _ = self.shutdown.cancelled() => return false,
                            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        }
        let admission = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return false,
            a = self.flow.admit() => a,
        };
        let flow = self.flow.clone();
        self.tasks.spawn(async move {
            let id = message.id;
            match flow.process(message).await {
                Ok(Processed::Delivered(_) | Processed::Filtered) => {}
                Err(error) => tracing::error!(%id, %error, "message failed"),
            }
            drop(admission);
        });
        true
    }
}

impl Feed {
    /// Hands a batch to the flow and waits until every message of it is taken: committed
    /// (durable) or delivered (direct). `false` if any failed or shutdown came first, so the
    /// caller does not checkpoint past the batch.
    pub async fn push_and_wait(&self, messages: Vec<Message>) -> bool {
        self.push_each_and_wait(messages)
            .await
            .into_iter()
            .all(|taken| taken)
    }

    /// [`Feed::push_and_wait`] with each message's own outcome, in order, for sources that
    /// acknowledge message by message. A message not reached before shutdown is `false`.
    pub async fn push_each_and_wait(&self, messages: Vec<Message>) -> Vec<bool> {
        let count = messages.len();
        let mut outcomes = Vec::with_capacity(count);
        if self.flow.durable().is_some() {
            for message in messages {
                if !self.push(message).await {
                    break;
                }
                outcomes.push(true);
            }
            outcomes.resize(count, false);
            return outcomes;
        }
        let mut running = Vec::with_capacity(count);
        for message in messages {
            let admission = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                a = self.flow.admit() => a,
            };
            let flow = self.flow.clone();
            running.push(self.tasks.spawn(async move {
                let id = message.id;
                let done = match flow.process(message).await {
                    Ok(_) => true,
                    Err(error) => {
                        tracing::error!(%id, %error, "message failed");
                        false
                    }
                };
                drop(admission);
                done
            }));
        }
        for task in running {
            outcomes.push(task.await.unwrap_or(false));
        }
        outcomes.resize(count, false);
        outcomes
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
    feed: &Feed,
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
