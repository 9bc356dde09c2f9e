//! Leases: an input that must run once in the cluster runs on the node holding its lease, a
//! key `input.<flow>` in the `leases` bucket whose value is the holder's name.
//!
//! - Taking a free lease is a `create` (only one node can create a key); a lease released on
//!   shutdown is free at once.
//! - The holder renews it every third of the lease time by compare-and-set on the revision it
//!   wrote last. A renewal that loses (someone else holds it now) stops the input at once; one
//!   that cannot reach NATS stops it once half the lease time passed since the last renewal.
//! - A contender takes a lease over only after it saw the same revision unchanged for longer
//!   than the lease time, on its own monotonic clock (no clocks are compared between nodes),
//!   and then by compare-and-set on that revision, so exactly one contender wins. By then the
//!   holder has stopped: a renewal fails for the first time a third of the lease time after the
//!   last one, and the next failure, two thirds after it, stops the input (half the lease time
//!   has passed by then). That last renewal is the revision the contender watched, so a third
//!   of the lease time is the margin. From a node's death to its input running elsewhere:
//!   between two thirds and five thirds of the lease time.
//! - A stale holder that still writes is fenced where it matters: checkpoints are written by
//!   compare-and-set too (`core::checkpoint`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use tokio_util::sync::CancellationToken;

use super::Cluster;

impl Cluster {
    /// Runs `run` while this node holds lease `key`: waits for it, runs, and when the lease is
    /// lost stops the run (by its token) and waits for the lease again. Returns what `run`
    /// returned once it ended by itself or `stop` was cancelled, and releases the lease.
    pub async fn while_held<F, Fut>(
        &self,
        key: &str,
        stop: &CancellationToken,
        mut run: F,
    ) -> std::io::Result<()>
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = std::io::Result<()>>,
    {
        let flow = key.strip_prefix("input.").unwrap_or(key);
        crate::core::metrics::lease_held(flow, false);
        loop {
            let Some(revision) = self.acquire(key, stop).await else {
                return Ok(());
            };
            crate::core::metrics::lease_held(flow, true);
            let revision = Arc::new(AtomicU64::new(revision));
            let held = stop.child_token();
            let renewing = tokio::spawn(self.clone().renew(
                key.to_string(),
                revision.clone(),
                held.clone(),
            ));
            let result = run(held.clone()).await;
            let lost = held.is_cancelled() && !stop.is_cancelled();
            held.cancel();
            let _ = renewing.await;
            crate::core::metrics::lease_held(flow, false);
            if lost {
                tracing::warn!(lease = key, node = %self.settings.node, "lost the lease: the input stopped here and runs on another node; waiting to take it back if that node goes");
                continue;
            }
            self.release(key, revision.load(Ordering::Relaxed)).await;
            return result;
        }
    }

    /// Waits until this node holds `key`; its revision, or `None` once `stop` is cancelled.
    async fn acquire(&self, key: &str, stop: &CancellationToken) -> Option<u64> {
        let me = bytes::Bytes::from(self.settings.node.clone());
        let ttl = self.settings.lease_ttl;
        // The other holder's revision and when this node first saw it.
        let mut watched: Option<(u64, Instant)> = None;
        let mut told = false;
        loop {
            if stop.is_cancelled() {
                return None;
            }
            let taken = match tokio::time::timeout(ttl / 3, self.leases.entry(key)).await {
                Ok(Ok(Some(entry))) if entry.operation == kv::Operation::Put => {
                    if entry.value == me {
                        // This node's own, from before a restart.
                        self.leases
                            .update(key, me.clone(), entry.revision)
                            .await
                            .ok()
                    } else {
                        match watched {
                            Some((revision, since))
                                if revision == entry.revision && since.elapsed() > ttl =>
                            {
                                let taken = self
                                    .leases
                                    .update(key, me.clone(), entry.revision)
                                    .await
                                    .ok();
                                if taken.is_some() {
                                    tracing::warn!(lease = key, node = %self.settings.node, from = %String::from_utf8_lossy(&entry.value), "took the lease over: its holder did not renew it for {:?}", ttl);
                                }
                                watched = None;
                                taken
                            }
                            Some((revision, _)) if revision == entry.revision => None,
                            _ => {
                                if !told {
                                    tracing::info!(lease = key, node = %self.settings.node, holder = %String::from_utf8_lossy(&entry.value), "another node runs this input; this one stands by");
                                    told = true;
                                }
                                watched = Some((entry.revision, Instant::now()));
                                None
                            }
                        }
                    }
                }
                // Free (never taken, released, or purged).
                Ok(Ok(_)) => self.leases.create(key, me.clone()).await.ok(),
                Ok(Err(e)) => {
                    tracing::warn!(lease = key, error = %e, "cannot read the lease; trying again");
                    None
                }
                Err(_) => None,
            };
            if let Some(revision) = taken {
                tracing::info!(lease = key, node = %self.settings.node, "holds the lease: the input runs on this node");
                return Some(revision);
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(ttl / 3) => {}
            }
        }
    }

    /// Renews `key` every third of the lease time until `held` is cancelled; cancels `held`
    /// itself when the lease is lost.
    async fn renew(self, key: String, revision: Arc<AtomicU64>, held: CancellationToken) {
        let me = bytes::Bytes::from(self.settings.node.clone());
        let ttl = self.settings.lease_ttl;
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = held.cancelled() => return,
                _ = tokio::time::sleep(ttl / 3) => {}
            }
            let current = revision.load(Ordering::Relaxed);
            match tokio::time::timeout(ttl / 3, self.leases.update(&key, me.clone(), current)).await
            {
                Ok(Ok(next)) => {
                    revision.store(next, Ordering::Relaxed);
                    renewed = Instant::now();
                }
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::error!(lease = %key, node = %self.settings.node, "another node holds the lease now: stopping the input here");
                    held.cancel();
                    return;
                }
                failed => {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    if renewed.elapsed() > ttl / 2 {
                        tracing::error!(lease = %key, node = %self.settings.node, %error, "could not renew the lease for half its time: stopping the input here, so that another node can take it over");
                        held.cancel();
                        return;
                    }
                    tracing::warn!(lease = %key, %error, "could not renew the lease; trying again");
                }
            }
        }
    }

    /// Gives `key` up, if this node still holds it at `revision`: another node takes it at once.
    async fn release(&self, key: &str, revision: u64) {
        let released = tokio::time::timeout(
            Duration::from_secs(2),
            self.leases.delete_expect_revision(key, Some(revision)),
        )
        .await;
        if let Ok(Ok(())) = released {
            tracing::info!(lease = key, node = %self.settings.node, "released the lease");
        }
    }
}
