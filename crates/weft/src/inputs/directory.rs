//! `directory`: watches a directory for files and makes messages of each new one — the whole
//! file as one message (decoded by its extension: `.json`, `.xml`, `.csv`; anything else as
//! text), or one message per line. Once every message of a file was delivered (or, in a direct
//! flow, kept in the dead-letter queue after `redelivery`), the file is deleted, moved to
//! `move_to`, or kept and remembered in the flow's checkpoint by name, size and time, so a
//! restart does not read it again; a crash reads at most the file under way again.
//!
//! The directory is listed every `interval` (polling works on every file system, network
//! mounts included). On a cluster every node watches the directory it names: give each node
//! one of its own, as two nodes on one shared directory would both take each file. A file is taken once it has not changed for `min_age`, so one still being
//! written is left for the next listing; names starting with `.` are never taken (write to a
//! dot-name and rename it, and nothing half-written is ever read). Files are taken oldest first.
//!
//! ```yaml
//! input:
//!   directory:
//!     path: ./inbox
//!     pattern: "*.xml"          # a file-name glob; default every file
//!     read: file                # file (default), lines or json_lines
//!     after: move               # delete (default), move or keep
//!     move_to: ./inbox/done
//!     interval: 1s
//!     min_age: 1s
//! ```
//!
//! A file's messages are delivered side by side, as many at once as the flow's `concurrency`
//! allows (`concurrency: 1` sends them one at a time); the next file waits for them. (`weft
//! test` with `polls:` lists the real directory, and deletes or moves what it delivered.)
//!
//! Each message carries `%file_path`, `%file_name`, `%file_modified` (RFC 3339), `%file_size`,
//! and per line `%file_line`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{AtShutdown, Codec, Feed, Redelivery};
use crate::clients::{Resources, Shared};
use crate::config::BuildError;
use crate::config::units::{Dur, Size};
use crate::core::Message;
use crate::core::mapping::{Value, insert};
use crate::core::schedule::Schedule;
use crate::core::{Output, Processor};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "DirectoryInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The directory to watch (not its subdirectories).
    pub path: PathBuf,
    /// Which file names to take: a glob where `*` is any run of characters. Default: all.
    #[serde(default)]
    pub pattern: Option<String>,
    /// How a file becomes messages.
    #[serde(default)]
    pub read: Read,
    /// What becomes of a file once its messages were delivered.
    #[serde(default)]
    pub after: After,
    /// Where `after: move` moves files (made if missing); a directory inside `path` is fine
    /// (directories are never read as files).
    #[serde(default)]
    pub move_to: Option<PathBuf>,
    /// Time between listings. Default 1s.
    #[serde(default)]
    pub interval: Option<Dur>,
    /// A file is taken once it has not changed for this long. Default 1s.
    #[serde(default)]
    pub min_age: Option<Dur>,
    /// The largest file read; a larger one is left where it is and reported. Default 64MiB.
    #[serde(default)]
    pub max_file_size: Option<Size>,
    /// Direct flows: how often a message whose delivery fails is offered again before it is
    /// dead-lettered.
    #[serde(default)]
    pub redelivery: Redelivery,
    /// Where `after: keep` remembers the files read (default: the flow's name).
    #[serde(default)]
    pub checkpoint_key: Option<String>,
}

/// How a file becomes messages.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Read {
    /// The whole file, one message: JSON, XML or CSV by its extension, else its text.
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

pub struct Directory {
    config: Config,
    schedule: Schedule,
    min_age: Duration,
    max_size: u64,
    /// Files this process is done with for now, by name: their stamp and why. Not delivered
    /// again while their stamp holds (a file written again is a new file).
    held: std::sync::Mutex<std::collections::HashMap<String, (String, Held)>>,
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

impl super::Spec for Config {
    type Built = Directory;

    fn build(self, _shared: &Shared, _resources: &Resources) -> Result<Directory, Vec<BuildError>> {
        let mut errors = Vec::new();
        let schedule = Schedule::from_config(self.interval.as_ref(), None, Duration::from_secs(1))
            .map_err(|e| errors.extend(e))
            .ok();
        match (self.after, &self.move_to) {
            (After::Move, None) => errors.push(BuildError::new(
                "move_to",
                "`after: move` needs `move_to`, the directory files are moved to",
            )),
            (After::Delete | After::Keep, Some(_)) => {
                errors.push(BuildError::new("move_to", "`move_to` is for `after: move`"))
            }
            (After::Move, Some(to)) if same_dir(to, &self.path) => errors.push(BuildError::new(
                "move_to",
                "is the watched directory itself: moved files would be read again",
            )),
            _ => {}
        }
        if self.pattern.as_deref() == Some("") {
            errors.push(BuildError::new(
                "pattern",
                "is empty; leave it out for every file",
            ));
        }
        if self.checkpoint_key.is_some() && self.after != After::Keep {
            errors.push(BuildError::new(
                "checkpoint_key",
                "only `after: keep` keeps a checkpoint",
            ));
        }
        match schedule {
            Some(schedule) if errors.is_empty() => Ok(Directory {
                min_age: self
                    .min_age
                    .as_ref()
                    .map_or(Duration::from_secs(1), |d| d.0),
                max_size: self
                    .max_file_size
                    .as_ref()
                    .map_or(DEFAULT_MAX_FILE, |s| s.0),
                held: Default::default(),
                schedule,
                config: self,
            }),
            _ => Err(errors),
        }
    }
}

/// Whether two paths name one directory: as written, or (when both exist) as resolved, so
/// `./in` and an absolute or linked spelling of `in` are caught too.
fn same_dir(a: &Path, b: &Path) -> bool {
    let clean = |p: &Path| p.components().collect::<PathBuf>();
    clean(a) == clean(b) || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// A file seen in a listing.
struct Found {
    path: PathBuf,
    name: String,
    size: u64,
    modified: SystemTime,
}

impl Found {
    /// What `after: keep` remembers of it: a file written again differs.
    fn stamp(&self) -> String {
        let ms = self
            .modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("{}:{ms}", self.size)
    }
}

/// `after: keep`'s checkpoint: each file read, by name, with its [`Found::stamp`].
#[derive(Debug, Default, Serialize, Deserialize)]
struct Seen {
    files: std::collections::BTreeMap<String, String>,
}

impl Directory {
    /// Where `after: keep` remembers what it read.
    pub fn checkpoint_key(&self, flow: &str) -> Option<String> {
        crate::core::checkpoint::key(
            self.config.after == After::Keep,
            self.config.checkpoint_key.as_deref(),
            flow,
        )
    }

    /// One listing, every file it finds taken (for `weft test` and the schedule alike).
    pub async fn poll_once(&self, feed: &Feed<impl Processor, impl Output>) -> Result<(), String> {
        self.poll(feed).await.map(|_| ())
    }

    /// Lists the directory and takes each ready file in turn, oldest first.
    async fn poll(&self, feed: &Feed<impl Processor, impl Output>) -> Result<bool, String> {
        let mut seen: Seen = match self.config.after {
            After::Keep => feed.load_checkpoint().await?.unwrap_or_default(),
            _ => Seen::default(),
        };
        let (found, present) = self.list(&seen).await?;
        if self.config.after == After::Keep {
            // Forget files that are gone, so the checkpoint stays the size of the directory.
            let before = seen.files.len();
            seen.files.retain(|name, _| present.contains(name));
            if seen.files.len() != before && found.is_empty() {
                feed.save_checkpoint(&seen).await?;
            }
        }
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| present.contains(name));
        for file in found {
            if feed.shutdown.is_cancelled() {
                break;
            }
            let held = self
                .held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
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
                if !feed.deliver_all(window, &self.config.redelivery).await {
                    return Err(format!(
                        "{}: a message of {count} was not accepted; the file is read again",
                        file.path.display()
                    ));
                }
            }
            self.finish(feed, &file, &mut seen).await;
        }
        Ok(false)
    }

    /// [`Directory::done`]; if that fails the file is held as delivered, so the next listings
    /// try only that again and never deliver it twice (a crash meanwhile reads it again).
    async fn finish(
        &self,
        feed: &Feed<impl Processor, impl Output>,
        file: &Found,
        seen: &mut Seen,
    ) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&file.name);
        if let Err(error) = self.done(feed, file, seen).await {
            if held.is_none() {
                feed.flow.count_rejected(&error);
                tracing::error!(flow = %feed.flow.name, component = "input.directory", %error, "delivered, but the file could not be cleared away; trying that again, not the delivery");
            }
            held = Some((file.stamp(), Held::Delivered));
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(file.name.clone(), held.expect("just set"));
        }
    }

    /// The files ready to be taken (matching, not hidden, old enough, not read already), and
    /// the name of every entry, from one pass over the directory.
    async fn list(
        &self,
        seen: &Seen,
    ) -> Result<(Vec<Found>, std::collections::HashSet<String>), String> {
        let dir = &self.config.path;
        let mut entries = tokio::fs::read_dir(dir)
            .await
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let now = SystemTime::now();
        let mut found = Vec::new();
        let mut present = std::collections::HashSet::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| format!("{}: {e}", dir.display()))?
        {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            present.insert(name.clone());
            if name.starts_with('.')
                || !self
                    .config
                    .pattern
                    .as_deref()
                    .is_none_or(|p| crate::core::glob(p, &name))
            {
                continue;
            }
            // A file removed meanwhile, or that is no plain file, is passed over.
            let Ok(meta) = entry.metadata().await else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(now);
            if now.duration_since(modified).unwrap_or_default() < self.min_age {
                continue;
            }
            let file = Found {
                path: entry.path(),
                name,
                size: meta.len(),
                modified,
            };
            if seen.files.get(&file.name) == Some(&file.stamp()) {
                continue;
            }
            found.push(file);
        }
        found.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.name.cmp(&b.name)));
        Ok((found, present))
    }

    /// The file's messages; `None` (said and counted) when it cannot be read or is too big,
    /// and is left where it is.
    async fn read(
        &self,
        feed: &Feed<impl Processor, impl Output>,
        file: &Found,
    ) -> Option<Vec<Message>> {
        let shown = file.path.display().to_string();
        let refuse = |error: String| {
            feed.flow.count_rejected(format_args!("{shown}: {error}"));
            tracing::error!(flow = %feed.flow.name, component = "input.directory", file = %shown, %error, "file left where it is");
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(file.name.clone(), (file.stamp(), Held::Refused));
        };
        if file.size > self.max_size {
            refuse(format!(
                "{} bytes, larger than max_file_size ({} bytes)",
                file.size, self.max_size
            ));
            return None;
        }
        let bytes = match read_unchanged(file, self.max_size).await {
            Ok(Some(bytes)) => bytes,
            // Written to since it was listed: the next listing sees it again.
            Ok(None) => return None,
            // Taken by someone else meanwhile: nothing to say.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                refuse(e.to_string());
                return None;
            }
        };
        let metadata = |line: Option<usize>| {
            let mut m = crate::core::mapping::empty_object();
            insert(&mut m, "file_path", Value::from(shown.as_str()));
            insert(&mut m, "file_name", Value::from(file.name.as_str()));
            insert(&mut m, "file_size", Value::from(file.size as i64));
            let modified: chrono::DateTime<chrono::Utc> = file.modified.into();
            insert(&mut m, "file_modified", Value::from(modified));
            if let Some(line) = line {
                insert(&mut m, "file_line", Value::from(line as i64));
            }
            m
        };
        let codec = match self.config.read {
            Read::File => {
                let value = match crate::core::body::decode(content_type(&file.name), bytes) {
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
                    tracing::error!(flow = %feed.flow.name, component = "input.directory", file = %shown, line = i + 1, %error, "skipped a line that is not a message");
                }
            }
        }
        Some(messages)
    }

    /// What `after` says, once the file's messages were all taken.
    async fn done(
        &self,
        feed: &Feed<impl Processor, impl Output>,
        file: &Found,
        seen: &mut Seen,
    ) -> Result<(), String> {
        let shown = file.path.display();
        match self.config.after {
            After::Delete => match tokio::fs::remove_file(&file.path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("{shown}: cannot delete it after delivery: {e}")),
            },
            After::Move => {
                let to = self.config.move_to.as_deref().unwrap_or(Path::new("."));
                tokio::fs::create_dir_all(to)
                    .await
                    .map_err(|e| format!("{}: {e}", to.display()))?;
                let target = to.join(&file.name);
                let moved = match tokio::fs::rename(&file.path, &target).await {
                    // Another file system: copied, then removed.
                    Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                        match tokio::fs::copy(&file.path, &target).await {
                            Ok(_) => tokio::fs::remove_file(&file.path).await,
                            Err(e) => Err(e),
                        }
                    }
                    other => other,
                };
                moved.map_err(|e| format!("{shown}: cannot move it to {}: {e}", to.display()))
            }
            After::Keep => {
                seen.files.insert(file.name.clone(), file.stamp());
                feed.save_checkpoint(&*seen).await
            }
        }
    }
}

/// The file's bytes if it is still as listed (size and modification time, read from the open
/// file after reading it), `None` if it changed meanwhile.
async fn read_unchanged(file: &Found, max: u64) -> std::io::Result<Option<Bytes>> {
    use tokio::io::AsyncReadExt;
    let mut opened = tokio::fs::File::open(&file.path).await?;
    let mut bytes = Vec::with_capacity(file.size as usize);
    (&mut opened).take(max + 1).read_to_end(&mut bytes).await?;
    let meta = opened.metadata().await?;
    let same = meta.len() == file.size
        && bytes.len() as u64 == file.size
        && meta.modified().ok() == Some(file.modified);
    Ok(same.then(|| Bytes::from(bytes)))
}

/// The content type a file's extension stands for, for [`crate::core::body::decode`].
fn content_type(name: &str) -> Option<&'static str> {
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    Some(match extension.as_deref() {
        Some("json") => "application/json",
        Some("xml") => "application/xml",
        Some("csv") => "text/csv",
        _ => "text/plain",
    })
}

impl super::Source for Directory {
    fn uses_store(&self) -> bool {
        true // `after: keep`'s checkpoint, dead letters
    }

    async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
        // Not cancelled from outside: the messages of the file under way are given their
        // chance to be delivered; one still waiting to be offered again when shutdown comes
        // leaves the file in place, to be read again at the next start.
        feed.poll_on_schedule(
            &self.schedule,
            "input.directory",
            AtShutdown::Finish,
            || self.poll(&feed),
        )
        .await;
        Ok(())
    }
}
