//! `sftp`: takes the files of a directory on an SFTP server and makes messages of each new
//! one, the whole file as one message (decoded by its extension: `.json`, `.xml`, `.csv`,
//! otherwise text) or one message per line. Once every message of a file was delivered (or
//! dead-lettered), the file is deleted, moved to `move_to` on the server, or kept and
//! remembered in the flow's checkpoint by name, size and time, so a restart does not read it
//! again; a crash reads at most the file under way again.
//!
//! ```yaml
//! input:
//!   sftp:
//!     server:
//!       url: sftp://weft@files.partner.example      # port 22 unless given
//!       password: ${SFTP_PASSWORD}                  # and/or private_key: /etc/weft/id_ed25519
//!       host_key: "SHA256:m1O8jt2Ygx0Q2vTBqm2mY0xhEwUdZb8kmGZ8V1l3Wxw"
//!     path: /outgoing/statements
//!     pattern: "*.xml"
//!     after: move                                   # delete (default), move or keep
//!     move_to: /outgoing/statements/done
//!     interval: 5s
//! ```
//!
//! The directory is listed every `interval` (default 5s), not its subdirectories. A file is
//! taken once its size and time have stood unchanged across listings for `min_age` (default
//! 1s, by this machine's clock, whatever the server's says), and is read only while they are
//! as listed, so one still being uploaded is left for the next listing: give partners who
//! pause mid-upload a longer `min_age`. Names starting with `.` are never taken (upload to a
//! dot-name and rename it, as the `sftp` output does), nor links. Files are taken oldest
//! first. A file is deleted or moved after delivery only while it is still the version read;
//! moving renames it on the server, so `move_to` must be on the same file system. The server's host key is checked before anything is sent (see `server`: a pinned
//! `host_key`, or `known_hosts`). On a cluster one node at a time reads the directory.
//!
//! Each message carries `%sftp_path`, `%sftp_name`, `%sftp_modified` (RFC 3339),
//! `%sftp_size`, and per line `%sftp_line`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Deserialize;

use super::files::{Files, Found, Place, ReadError, files_config};
use crate::clients::sftp::{Fault, ServerConfig, Sftp, modified};
use crate::clients::{Resources, Shared};
use crate::config::BuildError;
use crate::core::mapping::{Value, insert};

files_config! {
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[schemars(rename = "SftpInput")]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        /// The server, the login and how its host key is checked.
        pub server: ServerConfig,
        /// The directory on the server to take files from (not its subdirectories).
        pub path: String,
        /// Where `after: move` moves files on the server (made if missing); it must not be
        /// `path` itself.
        #[serde(default)]
        pub move_to: Option<String>,
    }
}

/// The `sftp` input: files taken from a directory on an SFTP server.
pub type SftpInput = Files<Remote>;

/// A directory on an SFTP server.
pub struct Remote {
    sftp: Sftp,
    path: String,
    move_to: Option<String>,
    /// Each file's version (size and time on the server) and when this machine first saw it
    /// so: the server's clock may differ from ours, and its times are whole seconds, so a file
    /// is judged settled by how long it has stood unchanged across our listings.
    sightings: std::sync::Mutex<HashMap<String, Sighting>>,
}

/// A file's version (its size and time on the server), and when this machine first saw it.
type Sighting = ((u64, SystemTime), SystemTime);

impl super::Spec for Config {
    type Built = SftpInput;

    fn build(self, _shared: &Shared, _resources: &Resources) -> Result<SftpInput, Vec<BuildError>> {
        let mut errors = Vec::new();
        // `/` stays itself; `/in/` is `/in`.
        let trimmed = |p: &str| match p.trim_end_matches('/') {
            "" if p.starts_with('/') => "/".to_string(),
            kept => kept.to_string(),
        };
        if self.path.is_empty() {
            errors.push(BuildError::new("path", "is empty"));
        }
        if let Some(to) = &self.move_to
            && trimmed(to) == trimmed(&self.path)
        {
            errors.push(BuildError::new(
                "move_to",
                "is the directory read: moved files would be read again",
            ));
        }
        let sftp = Sftp::build(&self.server, "server")
            .map_err(|e| errors.extend(e))
            .ok();
        let settings = self.files();
        let has_move_to = self.move_to.is_some();
        let place = sftp.map(|sftp| Remote {
            sftp,
            path: trimmed(&self.path),
            move_to: self.move_to.as_deref().map(trimmed),
            sightings: Default::default(),
        });
        Files::build(place, settings, has_move_to, errors)
    }
}

impl Remote {
    fn at(&self, name: &str) -> String {
        within(&self.path, name)
    }

    /// Whether the file is still the version listed (a file written again meanwhile is left
    /// for the next listing, not cleared away unread).
    async fn unchanged(&self, file: &Found) -> Result<bool, String> {
        match self.sftp.stat(&self.at(&file.name)).await {
            Ok(now) => Ok(now.size == Some(file.size) && modified(&now) == Some(file.modified)),
            Err(Fault::Missing) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// `name` in the directory `dir`.
fn within(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

impl Place for Remote {
    const COMPONENT: &'static str = "input.sftp";
    const PREFIX: &'static str = "sftp";
    const MIN_AGE: Duration = Duration::from_secs(1);
    // Each listing is a round trip to a server that is often someone else's.
    const INTERVAL: Duration = Duration::from_secs(5);

    async fn list(
        &self,
        wanted: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(Vec<Found>, HashSet<String>), String> {
        let entries = self.sftp.list(&self.path).await.map_err(|e| match e {
            Fault::Missing => format!("{}: no such directory", self.sftp.shown(&self.path)),
            e => e.to_string(),
        })?;
        let now = SystemTime::now();
        let mut found = Vec::new();
        let mut present = HashSet::new();
        let mut sightings = self.sightings.lock().unwrap_or_else(|p| p.into_inner());
        for (name, attributes) in entries {
            // A name that would lead out of the directory is no file of it.
            if name.contains('/') || name == "." || name == ".." {
                continue;
            }
            present.insert(name.clone());
            // Plain files only (no links), and only those the server gives a size and time.
            let (Some(size), Some(time)) = (attributes.size, modified(&attributes)) else {
                continue;
            };
            if !attributes.file_type().is_file() || !wanted(&name) {
                continue;
            }
            let version = (size, time);
            let first_seen = match sightings.get(&name) {
                Some((seen, since)) if *seen == version => *since,
                _ => {
                    sightings.insert(name.clone(), (version, now));
                    now
                }
            };
            found.push(Found {
                shown: self.sftp.shown(&self.at(&name)),
                size,
                modified: time,
                name,
                tag: None,
                unchanged_since: first_seen,
            });
        }
        sightings.retain(|name, _| present.contains(name));
        Ok((found, present))
    }

    async fn read(&self, file: &Found, max: u64) -> Result<(Bytes, Option<String>), ReadError> {
        match self.sftp.read(&self.at(&file.name), max).await {
            Ok((bytes, after)) => {
                let same = bytes.len() as u64 == file.size
                    && after.size == Some(file.size)
                    && modified(&after).is_none_or(|m| m == file.modified);
                if same {
                    Ok((Bytes::from(bytes), None))
                } else {
                    Err(ReadError::Changed)
                }
            }
            Err(Fault::Missing) => Err(ReadError::Gone),
            Err(Fault::Again(e)) => Err(ReadError::Again(e)),
            Err(Fault::Failed(e)) => Err(ReadError::Failed(e)),
        }
    }

    async fn delete(&self, file: &Found) -> Result<(), String> {
        let failed = |e: &dyn std::fmt::Display| {
            format!("{}: cannot delete it after delivery: {e}", file.shown)
        };
        if !self.unchanged(file).await.map_err(|e| failed(&e))? {
            return Ok(());
        }
        self.sftp
            .remove(&self.at(&file.name))
            .await
            .map_err(|e| failed(&e))
    }

    async fn relocate(&self, file: &Found) -> Result<(), String> {
        let to = self.move_to.as_deref().unwrap_or(".");
        if !self
            .unchanged(file)
            .await
            .map_err(|e| format!("{}: cannot move it to {to}: {e}", file.shown))?
        {
            return Ok(());
        }
        let target = within(to, &file.name);
        let moved = match self.sftp.rename(&self.at(&file.name), &target).await {
            // The first move there: the directory is made, and the move tried again.
            Err(Fault::Missing | Fault::Failed(_)) => match self.sftp.make_dirs(to).await {
                Ok(()) => self.sftp.rename(&self.at(&file.name), &target).await,
                Err(e) => Err(e),
            },
            other => other,
        };
        moved.map_err(|e| format!("{}: cannot move it to {to}: {e}", file.shown))
    }

    fn describe(&self, file: &Found, metadata: &mut Value) {
        insert(metadata, "sftp_path", Value::from(self.at(&file.name)));
        insert(metadata, "sftp_name", Value::from(file.name.as_str()));
    }
}
