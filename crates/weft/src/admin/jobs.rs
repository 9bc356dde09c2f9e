//! Bulk dead-letter work that goes on after its request was answered: a replay or a purge of
//! every dead letter a filter selects, done in batches of [`BATCH`], each batch one store
//! transaction. A cancel, or a weft that stops, ends it between batches or loses the batch in
//! progress whole: every dead letter is then either replayed (or purged) or still there, never
//! lost and never replayed twice. A job takes only what had failed when it started, so a
//! replayed message that fails again meanwhile is not taken again.
//!
//! ```text
//! POST /api/v1/dlq/replay?…&background=true   202, the job; likewise purge and the flow's paths
//! GET  /api/v1/dlq/jobs                       the last jobs, newest first
//! GET  /api/v1/dlq/jobs/{id}                  one: matched, done, state
//! POST /api/v1/dlq/jobs/{id}/cancel           stops it after the batch in progress
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use weft_store::{DlqFilter, Store};

use crate::core::clock::now_ms;

/// Dead letters a batch takes: small enough that the store's writer, which the flows share,
/// is never held long (a few milliseconds), large enough that 100,000 take 200 commits.
pub const BATCH: u32 = 500;
/// Jobs kept to be shown, finished ones dropped oldest first.
const KEPT: usize = 20;
/// Jobs running at once; one more is refused (429).
const RUNNING_MAX: usize = 4;

/// What a job does to each dead letter it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Replay,
    Purge,
}

/// The jobs of this weft, in memory: a restart forgets them (what they did stays done).
#[derive(Clone, Default)]
pub struct Jobs {
    kept: Arc<Mutex<VecDeque<Arc<Job>>>>,
}

struct Job {
    id: String,
    action: Action,
    /// What it selects, as the API was asked (`flow=jobs&reason=500`).
    selection: String,
    matched: u64,
    done: AtomicU64,
    started_at: String,
    end: Mutex<Option<End>>,
    cancel: CancellationToken,
}

struct End {
    at: String,
    state: &'static str,
    error: Option<String>,
}

/// A job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: String,
    pub action: Action,
    /// The selection, as a query string.
    pub selection: String,
    /// What matched when it started.
    pub matched: u64,
    /// What it replayed or purged so far.
    pub done: u64,
    /// `running`, `done`, `cancelled` or `failed`.
    pub state: &'static str,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339.
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Where to follow it.
    pub url: String,
}

/// Why a job was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{RUNNING_MAX} bulk jobs are running; wait for one to end, or cancel one")]
    Busy,
    #[error(transparent)]
    Store(#[from] weft_store::StoreError),
}

impl Job {
    fn view(&self) -> JobView {
        let end = self.end.lock().unwrap_or_else(|e| e.into_inner());
        JobView {
            id: self.id.clone(),
            action: self.action,
            selection: self.selection.clone(),
            matched: self.matched,
            done: self.done.load(Ordering::Relaxed),
            state: end.as_ref().map_or("running", |e| e.state),
            error: end.as_ref().and_then(|e| e.error.clone()),
            started_at: self.started_at.clone(),
            ended_at: end.as_ref().map(|e| e.at.clone()),
            url: format!("/api/v1/dlq/jobs/{}", self.id),
        }
    }

    fn running(&self) -> bool {
        self.end.lock().unwrap_or_else(|e| e.into_inner()).is_none()
    }

    fn finish(&self, state: &'static str, error: Option<String>) {
        *self.end.lock().unwrap_or_else(|e| e.into_inner()) = Some(End {
            at: super::dlq::time(now_ms()),
            state,
            error,
        });
    }
}

impl Jobs {
    /// Counts what `filter` selects now and starts acting on it in the background.
    pub async fn start(
        &self,
        store: &Store,
        action: Action,
        mut filter: DlqFilter,
        selection: String,
    ) -> Result<JobView, StartError> {
        let started = now_ms();
        filter.until_ms = Some(filter.until_ms.map_or(started, |u| u.min(started)));
        filter.first = None;
        // Checked again when the job is kept: starts in between may have filled the places.
        if self.running() >= RUNNING_MAX {
            return Err(StartError::Busy);
        }
        let matched = store.count_dead_letters(&filter).await?;
        let job = Arc::new(Job {
            id: ulid::Ulid::new().to_string(),
            action,
            selection,
            matched,
            done: AtomicU64::new(0),
            started_at: super::dlq::time(started),
            end: Mutex::new(None),
            cancel: CancellationToken::new(),
        });
        self.keep(job.clone())?;
        let view = job.view();
        tokio::spawn(run(store.clone(), job, filter));
        Ok(view)
    }

    fn running(&self) -> usize {
        self.lock().iter().filter(|j| j.running()).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Job>>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn keep(&self, job: Arc<Job>) -> Result<(), StartError> {
        let mut kept = self.lock();
        if kept.iter().filter(|j| j.running()).count() >= RUNNING_MAX {
            return Err(StartError::Busy);
        }
        kept.push_front(job);
        // Finished ones make room; running ones are bounded by RUNNING_MAX.
        while kept.len() > KEPT {
            match kept.iter().rposition(|j| !j.running()) {
                Some(oldest) => kept.remove(oldest),
                None => break,
            };
        }
        Ok(())
    }

    /// The jobs kept, newest first.
    pub fn list(&self) -> Vec<JobView> {
        self.lock().iter().map(|j| j.view()).collect()
    }

    pub fn get(&self, id: &str) -> Option<JobView> {
        self.lock().iter().find(|j| j.id == id).map(|j| j.view())
    }

    /// Asks job `id` to stop after its batch in progress; `None` when there is no such job.
    pub fn cancel(&self, id: &str) -> Option<JobView> {
        let kept = self.lock();
        let job = kept.iter().find(|j| j.id == id)?;
        job.cancel.cancel();
        Some(job.view())
    }
}

async fn run(store: Store, job: Arc<Job>, mut filter: DlqFilter) {
    filter.first = Some(BATCH);
    loop {
        if job.cancel.is_cancelled() {
            return job.finish("cancelled", None);
        }
        let batch = match job.action {
            Action::Replay => store.replay(filter.clone(), now_ms()).await,
            Action::Purge => store.purge(filter.clone()).await,
        };
        match batch {
            Ok(n) => {
                job.done.fetch_add(n, Ordering::Relaxed);
                if n < u64::from(BATCH) {
                    return job.finish("done", None);
                }
            }
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "a bulk dead-letter job stopped: the store refused a batch");
                return job.finish("failed", Some(e.to_string()));
            }
        }
        // The flows' own writes go between batches.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_store::{DeadLetter, Durability, Failure};

    async fn store_with(n: usize) -> Store {
        let dir = std::env::temp_dir().join(format!(
            "weft-jobs-{}-{}",
            std::process::id(),
            ulid::Ulid::new()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("weft.db"), Durability::Process)
            .await
            .unwrap();
        for i in 0..n {
            store
                .bury(DeadLetter {
                    id: format!("d{i:05}"),
                    flow: "jobs".into(),
                    payload: b"j{}".to_vec(),
                    metadata: b"{}".to_vec(),
                    enqueued_at_ms: 1,
                    failed_at_ms: 10 + i as i64,
                    attempts: 1,
                    failure: Failure::from("HTTP 500".to_string()),
                    history: Vec::new(),
                })
                .await
                .unwrap();
        }
        store
    }

    async fn ended(jobs: &Jobs, id: &str) -> JobView {
        for _ in 0..500 {
            let view = jobs.get(id).unwrap();
            if view.state != "running" {
                return view;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("job {id} did not end");
    }

    #[tokio::test]
    async fn a_replay_job_takes_every_match_in_batches_and_says_how_far_it_got() {
        let store = store_with(1_234).await;
        let jobs = Jobs::default();
        let started = jobs
            .start(&store, Action::Replay, DlqFilter::default(), String::new())
            .await
            .unwrap();
        assert_eq!(started.matched, 1_234);
        let view = ended(&jobs, &started.id).await;
        assert_eq!((view.state, view.done), ("done", 1_234), "{view:?}");
        assert_eq!(store.depth("jobs").await.unwrap().messages, 1_234);
        assert_eq!(
            store
                .count_dead_letters(&DlqFilter::default())
                .await
                .unwrap(),
            0
        );
        assert_eq!(jobs.list()[0].id, started.id);
    }

    #[tokio::test]
    async fn a_cancelled_purge_stops_between_batches_and_leaves_the_rest() {
        let store = store_with(3 * BATCH as usize).await;
        let jobs = Jobs::default();
        let started = jobs
            .start(
                &store,
                Action::Purge,
                DlqFilter::default(),
                "flow=jobs".into(),
            )
            .await
            .unwrap();
        jobs.cancel(&started.id).unwrap();
        let view = ended(&jobs, &started.id).await;
        assert_eq!(view.state, "cancelled", "{view:?}");
        // Whole batches only: what was not purged is still there.
        assert_eq!(view.done % u64::from(BATCH), 0, "{view:?}");
        let left = store
            .count_dead_letters(&DlqFilter::default())
            .await
            .unwrap();
        assert_eq!(left + view.done, 3 * u64::from(BATCH));
        assert!(jobs.cancel("nope").is_none());
    }
}
