//! Leases: an input that must run once in the cluster runs on the node holding its lease, a
//! key `input.<flow>` in the `leases` bucket whose value is the holder's name.
//!
//! - Taking a free lease is a `create` (only one node can create a key); a lease released on
//!   shutdown is free at once.
//! - The holder renews it every third of the lease time by compare-and-set on the revision it
//!   wrote last. A renewal that loses (someone else holds it now) stops the input at once; when
//!   renewals fail, the input stops half a lease time after the last one that succeeded was
//!   sent (each attempt is cut short at that deadline).
//! - A contender takes a lease over only after it saw the same revision unchanged for longer
//!   than the lease time, on its own monotonic clock (no clocks are compared between nodes),
//!   and then by compare-and-set on that revision, so exactly one contender wins. By then the
//!   holder has stopped: it stops half a lease time after sending its last renewal, the
//!   revision the contender watched was written after that send, so half a lease time is the
//!   margin. From a node's death to its input running elsewhere: between two thirds and five
//!   thirds of the lease time. Every node keeps the same lease time (`cluster::join` refuses
//!   another).
//! - An input that ends by itself (`generate` with a `count`) leaves the lease marked done
//!   (`done:<node>`), so no other node runs it again; deleting the key lets it run once more.
//! - A lease key is `input.` and the flow's name as a KV token (`weft_store::key_token`).
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
    /// Runs `run` while this node holds the lease of `flow`'s input: waits for it, runs, and
    /// when the lease is lost stops the run (by its token) and waits for the lease again.
    /// Returns what `run` returned once it ended by itself (the lease is then marked done) or
    /// `stop` was cancelled (the lease is released).
    pub async fn while_held<F, Fut>(
        &self,
        flow: &str,
        stop: &CancellationToken,
        run: F,
    ) -> std::io::Result<()>
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = std::io::Result<()>>,
    {
        let key = format!("input.{}", weft_store::key_token(flow));
        self.holding(&key, Some(flow), stop, run).await
    }

    /// [`Cluster::while_held`] for one of weft's own chores (`task.<name>`): one node of the
    /// cluster does it at a time.
    pub async fn chore<F, Fut>(&self, name: &str, stop: &CancellationToken, run: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = std::io::Result<()>>,
    {
        let _ = self.holding(&format!("task.{name}"), None, stop, run).await;
    }

    async fn holding<F, Fut>(
        &self,
        key: &str,
        flow: Option<&str>,
        stop: &CancellationToken,
        mut run: F,
    ) -> std::io::Result<()>
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = std::io::Result<()>>,
    {
        let held_metric = |held: bool| {
            if let Some(flow) = flow {
                crate::core::metrics::lease_held(flow, held);
            }
        };
        held_metric(false);
        loop {
            let Some((revision, sent)) = self.acquire(key, stop).await else {
                return Ok(());
            };
            held_metric(true);
            let revision = Arc::new(AtomicU64::new(revision));
            let held = stop.child_token();
            // Should `run` panic (this future is then dropped), the renewals stop with it.
            let _stop_renewing = held.clone().drop_guard();
            let renewing = tokio::spawn(self.clone().renew(
                key.to_string(),
                revision.clone(),
                sent,
                held.clone(),
            ));
            let result = run(held.clone()).await;
            let lost = held.is_cancelled() && !stop.is_cancelled();
            held.cancel();
            let _ = renewing.await;
            held_metric(false);
            if lost {
                tracing::warn!(lease = key, node = %self.settings.node, "lost the lease: the input stopped here and runs on another node; waiting to take it back if that node goes");
                continue;
            }
            let revision = revision.load(Ordering::Relaxed);
            if result.is_ok() && !stop.is_cancelled() {
                self.done(key, revision).await;
            } else {
                self.release(key, revision).await;
            }
            return result;
        }
    }

    /// Waits until this node holds `key`: its revision and when the write that took it was
    /// sent; `None` once `stop` is cancelled.
    async fn acquire(&self, key: &str, stop: &CancellationToken) -> Option<(u64, Instant)> {
        let me = bytes::Bytes::from(self.settings.node.clone());
        let ttl = self.settings.lease_ttl;
        // The other holder's revision and when this node first saw it.
        let mut watched: Option<(u64, Instant)> = None;
        let mut told = false;
        loop {
            if stop.is_cancelled() {
                return None;
            }
            let sent = Instant::now();
            let taken = match tokio::time::timeout(ttl / 3, self.leases.entry(key)).await {
                Ok(Ok(Some(entry))) if entry.operation == kv::Operation::Put => {
                    if entry.value.starts_with(DONE.as_bytes()) {
                        if !told {
                            tracing::info!(lease = key, node = %self.settings.node, "this input ran to its end on a node of the cluster; it does not run again (delete the lease key to run it once more)");
                            told = true;
                        }
                        None
                    } else if entry.value == me {
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
                return Some((revision, sent));
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(ttl / 3) => {}
            }
        }
    }

    /// Renews `key` every third of the lease time until `held` is cancelled; cancels `held`
    /// itself when the lease is lost: another node holds it, or half a lease time passed since
    /// the last renewal that succeeded was sent (`sent`, at first the write that took it).
    async fn renew(
        self,
        key: String,
        revision: Arc<AtomicU64>,
        mut sent: Instant,
        held: CancellationToken,
    ) {
        let me = bytes::Bytes::from(self.settings.node.clone());
        let ttl = self.settings.lease_ttl;
        loop {
            tokio::select! {
                _ = held.cancelled() => return,
                _ = tokio::time::sleep_until((sent + ttl / 3).into()) => {}
            }
            loop {
                let deadline = sent + ttl / 2;
                let now = Instant::now();
                if now >= deadline {
                    tracing::error!(lease = %key, node = %self.settings.node, "could not renew the lease for half its time: stopping the input here, so that another node can take it over");
                    held.cancel();
                    return;
                }
                let current = revision.load(Ordering::Relaxed);
                let update = self.leases.update(&key, me.clone(), current);
                match tokio::time::timeout(deadline - now, update).await {
                    Ok(Ok(next)) => {
                        revision.store(next, Ordering::Relaxed);
                        sent = now;
                        break;
                    }
                    Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        tracing::error!(lease = %key, node = %self.settings.node, "another node holds the lease now: stopping the input here");
                        held.cancel();
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(lease = %key, error = %e, "could not renew the lease; trying again");
                        tokio::select! {
                            _ = held.cancelled() => return,
                            _ = tokio::time::sleep((ttl / 12).min(deadline - Instant::now().min(deadline))) => {}
                        }
                    }
                    // Timed out at the deadline: the next turn of the loop stops the input.
                    Err(_) => {}
                }
            }
        }
    }

    /// Gives `key` up, if this node still holds it at `revision`: another node takes it within
    /// a third of the lease time.
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

    /// Marks `key` done, if this node still holds it at `revision`: its input ran to its end.
    async fn done(&self, key: &str, revision: u64) {
        let value = format!("{DONE}{}", self.settings.node);
        let marked = tokio::time::timeout(
            Duration::from_secs(2),
            self.leases.update(key, value.into(), revision),
        )
        .await;
        if let Ok(Ok(_)) = marked {
            tracing::info!(lease = key, node = %self.settings.node, "the input ran to its end: its lease is marked done");
        }
    }
}

/// The prefix of a lease's value once its input ran to its end (then the node's name).
pub const DONE: &str = "done:";
