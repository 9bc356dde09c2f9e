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

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Deserialize;

use super::files::{Files, Found, Place, ReadError, files_config};
use crate::clients::{Resources, Shared};
use crate::config::BuildError;
use crate::core::mapping::{Value, insert};

files_config! {
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[schemars(rename = "DirectoryInput")]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        /// The directory to watch (not its subdirectories).
        pub path: PathBuf,
        /// Where `after: move` moves files (made if missing); a directory inside `path` is
        /// fine (directories are never read as files).
        #[serde(default)]
        pub move_to: Option<PathBuf>,
    }
}

/// The `directory` input: files taken from a local directory.
pub type Directory = Files<Local>;

/// A directory on this machine.
pub struct Local {
    path: PathBuf,
    move_to: Option<PathBuf>,
}

impl super::Spec for Config {
    type Built = Directory;

    fn build(self, _shared: &Shared, _resources: &Resources) -> Result<Directory, Vec<BuildError>> {
        let mut errors = Vec::new();
        if let Some(to) = &self.move_to
            && same_dir(to, &self.path)
        {
            errors.push(BuildError::new(
                "move_to",
                "is the watched directory itself: moved files would be read again",
            ));
        }
        let settings = self.files();
        let place = Local {
            path: self.path,
            move_to: self.move_to,
        };
        let has_move_to = place.move_to.is_some();
        Files::build(Some(place), settings, has_move_to, errors)
    }
}

/// Whether two paths name one directory: as written, or (when both exist) as resolved, so
/// `./in` and an absolute or linked spelling of `in` are caught too.
fn same_dir(a: &Path, b: &Path) -> bool {
    let clean = |p: &Path| p.components().collect::<PathBuf>();
    clean(a) == clean(b) || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

impl Place for Local {
    const COMPONENT: &'static str = "input.directory";
    const PREFIX: &'static str = "file";
    const MIN_AGE: Duration = Duration::from_secs(1);
    const INTERVAL: Duration = Duration::from_secs(1);

    async fn list(
        &self,
        wanted: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(Vec<Found>, HashSet<String>), String> {
        let dir = self.path.clone();
        let entries = tokio::task::spawn_blocking(move || scan(&dir))
            .await
            .map_err(std::io::Error::other)
            .flatten()
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let now = SystemTime::now();
        let mut found = Vec::new();
        let mut present = HashSet::with_capacity(entries.len());
        for (name, meta) in entries {
            if wanted(&name)
                && let Some(meta) = meta
            {
                let modified = meta.modified().unwrap_or(now);
                found.push(Found {
                    shown: self.path.join(&name).display().to_string(),
                    name: name.clone(),
                    size: meta.len(),
                    modified,
                    tag: None,
                    unchanged_since: modified,
                });
            }
            present.insert(name);
        }
        Ok((found, present))
    }

    async fn read(&self, file: &Found, max: u64) -> Result<(Bytes, Option<String>), ReadError> {
        match read_unchanged(&self.path.join(&file.name), file, max).await {
            Ok(Some(bytes)) => Ok((bytes, None)),
            Ok(None) => Err(ReadError::Changed),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ReadError::Gone),
            Err(e) => Err(ReadError::Failed(e.to_string())),
        }
    }

    async fn delete(&self, file: &Found) -> Result<(), String> {
        match tokio::fs::remove_file(self.path.join(&file.name)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!(
                "{}: cannot delete it after delivery: {e}",
                file.shown
            )),
        }
    }

    async fn relocate(&self, file: &Found) -> Result<(), String> {
        let to = self.move_to.as_deref().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(to)
            .await
            .map_err(|e| format!("{}: {e}", to.display()))?;
        let (from, target) = (self.path.join(&file.name), to.join(&file.name));
        let moved = match tokio::fs::rename(&from, &target).await {
            // Another file system: copied, then removed.
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                match tokio::fs::copy(&from, &target).await {
                    Ok(_) => tokio::fs::remove_file(&from).await,
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        moved.map_err(|e| format!("{}: cannot move it to {}: {e}", file.shown, to.display()))
    }

    fn describe(&self, file: &Found, metadata: &mut Value) {
        insert(metadata, "file_path", Value::from(file.shown.as_str()));
        insert(metadata, "file_name", Value::from(file.name.as_str()));
    }
}

/// Every entry of the directory named in UTF-8, with its metadata if it is a plain file (one
/// removed meanwhile, or that is no plain file, has none). In one blocking call: one thread
/// hand-over per listing, not one per file.
fn scan(dir: &Path) -> std::io::Result<Vec<(String, Option<std::fs::Metadata>)>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let meta = entry
            .file_type()
            .is_ok_and(|t| t.is_file())
            .then(|| entry.metadata().ok())
            .flatten()
            .filter(std::fs::Metadata::is_file);
        entries.push((name, meta));
    }
    Ok(entries)
}

/// The file's bytes if it is still as listed (size and modification time, read from the open
/// file after reading it), `None` if it changed meanwhile. In one blocking call, as [`scan`].
async fn read_unchanged(path: &Path, file: &Found, max: u64) -> std::io::Result<Option<Bytes>> {
    use std::io::Read as _;
    let (path, size, modified) = (path.to_path_buf(), file.size, file.modified);
    tokio::task::spawn_blocking(move || {
        let mut opened = std::fs::File::open(path)?;
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut opened).take(max + 1).read_to_end(&mut bytes)?;
        let meta = opened.metadata()?;
        let same = meta.len() == size
            && bytes.len() as u64 == size
            && meta.modified().ok() == Some(modified);
        Ok(same.then(|| Bytes::from(bytes)))
    })
    .await
    .map_err(std::io::Error::other)?
}
