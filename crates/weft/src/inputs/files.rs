//! What the inputs that take files from a listed place share (`directory`, `s3`): list the
//! place every `interval`, take each ready file oldest first, make messages of it (the whole
//! file, or one per line), hand them to the flow in windows, and once every message was
//! delivered (or dead-lettered) delete the file, move it, or keep it and remember it in the
//! flow's checkpoint by name and stamp. A place is a [`Place`]: how to list, read, delete and
//! move there; everything else is here, once.
//!
//! A file delivered but not cleared away (a read-only mount, a refused delete) is held in
//! memory as delivered, so only the clearing is tried again and nothing is delivered twice
//! while the process lives; a crash reads at most the file under way again.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Codec, Feed, Redelivery};
use crate::config::BuildError;
use crate::core::Message;
use crate::core::mapping::{Value, insert};
use crate::core::schedule::Schedule;
use crate::core::{Output, Processor};

/// Declares an input's config struct with the settings every file-taking input has, after
/// the input's own fields (pasted, not flattened, for the reasons `clients::call` gives).
/// With `with { … }` at the end, the struct is written by `call_config!` with those flags,
/// for an input that reaches its files over HTTP.
macro_rules! files_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($own:tt)* }
        $(with { $($flag:ident),* })?
    ) => {
        $crate::inputs::files::files_config!(@write
            [$(#[$meta])*] $name [$($own)*
            /// Which file names to take: a glob where `*` is any run of characters. Default:
            /// all.
            #[serde(default)]
            pub pattern: Option<String>,
            /// How a file becomes messages.
            #[serde(default)]
            pub read: $crate::inputs::files::Read,
            /// What becomes of a file once its messages were delivered.
            #[serde(default)]
            pub after: $crate::inputs::files::After,
            /// Time between listings. Default 1s in a directory, 5s over SFTP, 10s in a
            /// bucket (each listing is a billed request).
            #[serde(default)]
            pub interval: Option<$crate::config::units::Dur>,
            /// A file is taken once it has not changed for this long. Default 1s in a
            /// directory and over SFTP, none in a bucket (an object appears whole).
            #[serde(default)]
            pub min_age: Option<$crate::config::units::Dur>,
            /// The largest file read; a larger one is left where it is and reported. Default
            /// 64MiB.
            #[serde(default)]
            pub max_file_size: Option<$crate::config::units::Size>,
            /// Direct flows: how often a message whose delivery fails is offered again before
            /// it is dead-lettered.
            #[serde(default)]
            pub redelivery: $crate::inputs::Redelivery,
            /// Where `after: keep` remembers the files read (default: the flow's name).
            #[serde(default)]
            pub checkpoint_key: Option<String>,
            ] $([$($flag)*])?
        );

        impl $name {
            /// The settings every file-taking input has.
            fn files(&self) -> $crate::inputs::files::Settings {
                $crate::inputs::files::Settings {
                    pattern: self.pattern.clone(),
                    read: self.read,
                    after: self.after,
                    interval: self.interval.clone(),
                    min_age: self.min_age.as_ref().map(|d| d.0),
                    max_file_size: self.max_file_size.as_ref().map(|s| s.0),
                    redelivery: self.redelivery.clone(),
                    checkpoint_key: self.checkpoint_key.clone(),
                }
            }
        }
    };
    (@write [$($meta:tt)*] $name:ident [$($fields:tt)*]) => {
        $($meta)*
        pub struct $name { $($fields)* }
    };
    (@write [$($meta:tt)*] $name:ident [$($fields:tt)*] [$($flag:ident)*]) => {
        $crate::clients::call::call_config! {
            $($meta)*
            pub struct $name { $($fields)* }
            with { $($flag),* }
        }
    };
}

pub(crate) use files_config;

/// How a file becomes messages.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Read {
    /// The whole file, one message: JSON, XML or CSV by its type or extension, else its text.
    #[default]
    File,
    /// One string message per line.
    Lines,
    /// One JSON document per line.
    JsonLines,
}

/// What becomes of a file once its messages were delivered.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum After {
    #[default]
    Delete,
    /// To `move_to`, under its own name (an existing file there is replaced).
    Move,
    /// Left where it is, remembered in the checkpoint (by name, size and modification time:
    /// a file written again is read again).
    Keep,
}

/// The shared settings, as [`files_config!`] hands them over.
pub struct Settings {
    pub pattern: Option<String>,
    pub read: Read,
    pub after: After,
    pub interval: Option<crate::config::units::Dur>,
    pub min_age: Option<Duration>,
    pub max_file_size: Option<u64>,
    pub redelivery: Redelivery,
    pub checkpoint_key: Option<String>,
}

/// A file seen in a listing.
pub struct Found {
    /// Its name in the place (a file name, an object key): what the checkpoint remembers.
    pub name: String,
    /// How messages and logs show it (a path, `s3://bucket/key`).
    pub shown: String,
    pub size: u64,
    pub modified: SystemTime,
    /// What else tells one version of it from another (an S3 ETag).
    pub tag: Option<String>,
    /// Since when it has stood as listed, by this machine's clock: `min_age` is judged on it.
    /// (Its `modified` where the place keeps time with this machine, else when this version
    /// was first seen here.)
    pub unchanged_since: SystemTime,
}

impl Found {
    /// What `after: keep` remembers of it: a file written again differs.
    fn stamp(&self) -> String {
        let ms = self
            .modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        match &self.tag {
            Some(tag) => format!("{}:{ms}:{tag}", self.size),
            None => format!("{}:{ms}", self.size),
        }
    }
}

/// Why a file could not be read.
pub enum ReadError {
    /// Taken away meanwhile (by someone else): nothing to say.
    Gone,
    /// Changed since it was listed: the next listing sees it again.
    Changed,
    /// Worth saying, and tried again at the next listing (the place did not answer).
    Again(String),
    /// Worth saying, and the file is left where it is.
    Failed(String),
}

/// Where files are taken from: a directory, a bucket.
pub trait Place: Send + Sync + 'static {
    /// The component, as logs name it (`input.directory`).
    const COMPONENT: &'static str;
    /// The start of its metadata names (`file` gives `%file_size`, `%file_line`, …).
    const PREFIX: &'static str;
    /// How long a file must have stood unchanged when `min_age` is not given.
    const MIN_AGE: Duration;
    /// Time between listings when `interval` is not given.
    const INTERVAL: Duration;

    /// One listing: the plain files among the names `wanted` admits, and every name present
    /// (so that what is gone can be forgotten).
    fn list(
        &self,
        wanted: &(dyn Fn(&str) -> bool + Sync),
    ) -> impl Future<Output = Result<(Vec<Found>, HashSet<String>), String>> + Send;

    /// The file's bytes (at most `max`) and its content type if the place knows it, provided
    /// it is still the one listed.
    fn read(
        &self,
        file: &Found,
        max: u64,
    ) -> impl Future<Output = Result<(Bytes, Option<String>), ReadError>> + Send;

    /// Deletes it; one already gone is fine.
    fn delete(&self, file: &Found) -> impl Future<Output = Result<(), String>> + Send;

    /// Moves it to `move_to`.
    fn relocate(&self, file: &Found) -> impl Future<Output = Result<(), String>> + Send;

    /// Its own metadata (path, bucket, key, …) besides size, time and line.
    fn describe(&self, file: &Found, metadata: &mut Value);
}

/// A place and what to do there.
pub struct Files<P: Place> {
    place: P,
    read: Read,
    after: After,
    pattern: Option<String>,
    schedule: Schedule,
    min_age: Duration,
    max_size: u64,
    redelivery: Redelivery,
    checkpoint_key: Option<String>,
    /// Files this process is done with for now, by name: their stamp and why. Not delivered
    /// again while their stamp holds (a file written again is a new file).
    held: std::sync::Mutex<HashMap<String, (String, Held)>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Delivered, but deleting or moving it failed: only that is tried again.
    Delivered,
    /// Refused (too big, not decodable): said once, not again.
    Refused,
}

const DEFAULT_MAX_FILE: u64 = 64 << 20;

/// The most messages of one file handed to the flow at once.
const WINDOW: usize = 1024;

/// `after: keep`'s checkpoint: each file read, by name, with its [`Found::stamp`].
#[derive(Debug, Default, Serialize, Deserialize)]
struct Seen {
    files: std::collections::BTreeMap<String, String>,
}

impl<P: Place> Files<P> {
    /// Checks the shared settings; `has_move_to` says whether the input's `move_to` is set.
    pub fn build(
        place: Option<P>,
        settings: Settings,
        has_move_to: bool,
        mut errors: Vec<BuildError>,
    ) -> Result<Files<P>, Vec<BuildError>> {
        let schedule = Schedule::from_config(settings.interval.as_ref(), None, P::INTERVAL)
            .map_err(|e| errors.extend(e))
            .ok();
        match (settings.after, has_move_to) {
            (After::Move, false) => errors.push(BuildError::new(
                "move_to",
                "`after: move` needs `move_to`, where files are moved to",
            )),
            (After::Delete | After::Keep, true) => {
                errors.push(BuildError::new("move_to", "`move_to` is for `after: move`"))
            }
            _ => {}
        }
        if settings.pattern.as_deref() == Some("") {
            errors.push(BuildError::new(
                "pattern",
                "is empty; leave it out for every file",
            ));
        }
        if settings.checkpoint_key.is_some() && settings.after != After::Keep {
            errors.push(BuildError::new(
                "checkpoint_key",
                "only `after: keep` keeps a checkpoint",
            ));
        }
        match (place, schedule) {
            (Some(place), Some(schedule)) if errors.is_empty() => Ok(Files {
                place,
                read: settings.read,
                after: settings.after,
                pattern: settings.pattern,
                schedule,
                min_age: settings.min_age.unwrap_or(P::MIN_AGE),
                max_size: settings.max_file_size.unwrap_or(DEFAULT_MAX_FILE),
                redelivery: settings.redelivery,
                checkpoint_key: settings.checkpoint_key,
                held: Default::default(),
            }),
            _ => Err(errors),
        }
    }

    /// Where `after: keep` remembers what it read.
    pub fn checkpoint_key(&self, flow: &str) -> Option<String> {
        crate::core::checkpoint::key(
            self.after == After::Keep,
            self.checkpoint_key.as_deref(),
            flow,
        )
    }

    /// One listing, every file it finds taken (for `weft test` and the schedule alike).
    pub async fn poll_once(&self, feed: &Feed<impl Processor, impl Output>) -> Result<(), String> {
        self.poll(feed).await.map(|_| ())
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Held)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists the place and takes each ready file in turn, oldest first.
    async fn poll(&self, feed: &Feed<impl Processor, impl Output>) -> Result<bool, String> {
        let mut seen: Seen = match self.after {
            After::Keep => feed.load_checkpoint().await?.unwrap_or_default(),
            _ => Seen::default(),
        };
        let (found, present) = self.list(&seen).await?;
        if self.after == After::Keep {
            // Forget files that are gone, so the checkpoint stays the size of the place.
            let before = seen.files.len();
            seen.files.retain(|name, _| present.contains(name));
            if seen.files.len() != before && found.is_empty() {
                feed.save_checkpoint(&seen).await?;
            }
        }
        self.held().retain(|name, _| present.contains(name));
        for file in found {
            if feed.shutdown.is_cancelled() {
                break;
            }
            let held = self
                .held()
                .get(&file.name)
                .filter(|(stamp, _)| *stamp == file.stamp())
                .map(|(_, why)| *why);
            match held {
                Some(Held::Refused) => continue,
                Some(Held::Delivered) => {
                    self.finish(feed, &file, &mut seen).await;
                    continue;
                }
                None => {}
            }
            let Some(messages) = self.read(feed, &file).await else {
                continue;
            };
            let count = messages.len();
            // In windows, so a file of a million lines is not a million deliveries at once.
            let mut messages = messages.into_iter().peekable();
            while messages.peek().is_some() {
                let window: Vec<Message> = messages.by_ref().take(WINDOW).collect();
                if !feed.deliver_all(window, &self.redelivery).await {
                    return Err(format!(
                        "{}: a message of {count} was not accepted; the file is read again",
                        file.shown
                    ));
                }
            }
            self.finish(feed, &file, &mut seen).await;
        }
        Ok(false)
    }

    /// The ready files (matching, not hidden, old enough, not read already), oldest first, and
    /// every name present.
    async fn list(&self, seen: &Seen) -> Result<(Vec<Found>, HashSet<String>), String> {
        let wanted = |name: &str| {
            let base = name.rsplit('/').next().unwrap_or(name);
            !base.starts_with('.')
                && self
                    .pattern
                    .as_deref()
                    .is_none_or(|p| crate::core::glob(p, name))
        };
        let (mut found, present) = self.place.list(&wanted).await?;
        let now = SystemTime::now();
        found.retain(|file| {
            now.duration_since(file.unchanged_since).unwrap_or_default() >= self.min_age
                && seen.files.get(&file.name) != Some(&file.stamp())
        });
        found.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.name.cmp(&b.name)));
        Ok((found, present))
    }

    /// Clears the file away as `after` says; if that fails the file is held as delivered, so
    /// the next listings try only that again and never deliver it twice.
    async fn finish(
        &self,
        feed: &Feed<impl Processor, impl Output>,
        file: &Found,
        seen: &mut Seen,
    ) {
        let mut held = self.held().remove(&file.name);
        let done = match self.after {
            After::Delete => self.place.delete(file).await,
            After::Move => self.place.relocate(file).await,
            After::Keep => {
                seen.files.insert(file.name.clone(), file.stamp());
                feed.save_checkpoint(&*seen).await
            }
        };
        if let Err(error) = done {
            if held.is_none() {
                feed.flow.count_rejected(&error);
                tracing::error!(flow = %feed.flow.name, component = P::COMPONENT, %error, "delivered, but the file could not be cleared away; trying that again, not the delivery");
            }
            held = Some((file.stamp(), Held::Delivered));
            self.held()
                .insert(file.name.clone(), held.expect("just set"));
        }
    }

    /// The file's messages; `None` (said and counted) when it cannot be read or is too big,
    /// and is left where it is.
    async fn read(
        &self,
        feed: &Feed<impl Processor, impl Output>,
        file: &Found,
    ) -> Option<Vec<Message>> {
        let shown = &file.shown;
        let refuse = |error: String| {
            feed.flow.count_rejected(format_args!("{shown}: {error}"));
            tracing::error!(flow = %feed.flow.name, component = P::COMPONENT, file = %shown, %error, "file left where it is");
            self.held()
                .insert(file.name.clone(), (file.stamp(), Held::Refused));
        };
        if file.size > self.max_size {
            refuse(format!(
                "{} bytes, larger than max_file_size ({} bytes)",
                file.size, self.max_size
            ));
            return None;
        }
        let (bytes, content_type) = match self.place.read(file, self.max_size).await {
            Ok(read) => read,
            Err(ReadError::Gone | ReadError::Changed) => return None,
            Err(ReadError::Again(error)) => {
                tracing::warn!(flow = %feed.flow.name, component = P::COMPONENT, file = %shown, %error, "could not read it now; trying again at the next listing");
                return None;
            }
            Err(ReadError::Failed(e)) => {
                refuse(e);
                return None;
            }
        };
        let metadata = |line: Option<usize>| {
            let mut m = crate::core::mapping::empty_object();
            self.place.describe(file, &mut m);
            let name = |what: &str| format!("{}_{what}", P::PREFIX);
            insert(&mut m, &name("size"), Value::from(file.size as i64));
            let modified: chrono::DateTime<chrono::Utc> = file.modified.into();
            insert(&mut m, &name("modified"), Value::from(modified));
            if let Some(line) = line {
                insert(&mut m, &name("line"), Value::from(line as i64));
            }
            m
        };
        let codec = match self.read {
            Read::File => {
                let kind = content_type
                    .as_deref()
                    // What stores label bytes they were told nothing about.
                    .filter(|t| {
                        !t.is_empty()
                            && !t.starts_with("application/octet-stream")
                            && !t.starts_with("binary/octet-stream")
                    })
                    .or_else(|| by_extension(&file.name));
                let value = match crate::core::body::decode(kind, bytes) {
                    Ok(value) => value,
                    Err(error) => {
                        refuse(error);
                        return None;
                    }
                };
                let mut message = Message::new(value);
                message.metadata = metadata(None);
                return Some(vec![message]);
            }
            Read::Lines => Codec::Lines,
            Read::JsonLines => Codec::JsonLines,
        };
        let mut messages = Vec::new();
        // A last line's newline ends it; it does not start another.
        let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let lines = (!text.is_empty()).then(|| text.split(|b| *b == b'\n'));
        for (i, line) in lines.into_iter().flatten().enumerate() {
            match codec.decode(line) {
                None => {}
                Some(Ok(value)) => {
                    let mut message = Message::new(value);
                    message.metadata = metadata(Some(i + 1));
                    messages.push(message);
                }
                Some(Err(error)) => {
                    feed.flow
                        .count_rejected(format_args!("{shown}, line {}: {error}", i + 1));
                    tracing::error!(flow = %feed.flow.name, component = P::COMPONENT, file = %shown, line = i + 1, %error, "skipped a line that is not a message");
                }
            }
        }
        Some(messages)
    }
}

/// The content type a file's extension stands for, for [`crate::core::body::decode`].
fn by_extension(name: &str) -> Option<&'static str> {
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    Some(match extension.as_deref() {
        Some("json") => "application/json",
        Some("xml") => "application/xml",
        Some("csv") => "text/csv",
        _ => "text/plain",
    })
}

impl<P: Place> super::Source for Files<P> {
    fn uses_store(&self) -> bool {
        true // `after: keep`'s checkpoint, dead letters
    }

    async fn run<Pr: Processor, O: Output>(&self, feed: Feed<Pr, O>) -> std::io::Result<()> {
        // Not cancelled from outside: the messages of the file under way are given their
        // chance to be delivered; one still waiting to be offered again when shutdown comes
        // leaves the file in place, to be read again at the next start.
        feed.poll_on_schedule(
            &self.schedule,
            P::COMPONENT,
            super::AtShutdown::Finish,
            || self.poll(&feed),
        )
        .await;
        Ok(())
    }
}
