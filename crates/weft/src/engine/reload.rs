//! Hot reload: the engine swaps in a validated config, rebuilding only the flows whose settings
//! changed, binding new addresses before it stops an old flow, and draining a reading input
//! before its successor starts.

use super::*;

impl Engine {
    /// Switches to `next`: only changed, added and removed flows are touched.
    pub(super) async fn reload(&mut self, next: Loaded) {
        if self.store.get().is_none() {
            self.durability = next.durability;
        } else if next.durability != self.durability {
            tracing::warn!("`durability` changed: it takes effect when weft restarts");
        }
        if let Err(e) = self.open_store(&next).await {
            tracing::error!(error = %e, "config reload refused: the store cannot be opened; the running flows go on");
            return;
        }
        self.shutdown_timeout = next.shutdown_timeout;
        let everything = next.shared != self.shared;
        let mut incoming: BTreeMap<String, FlowSpec> = next
            .flows
            .into_iter()
            .map(|f| (f.name.clone(), f))
            .collect();
        let removed: Vec<String> = self
            .flows
            .keys()
            .filter(|name| !incoming.contains_key(*name))
            .cloned()
            .collect();
        let changed: Vec<String> = self
            .flows
            .iter()
            .filter(|(name, running)| {
                incoming
                    .get(*name)
                    .is_some_and(|spec| everything || spec.fingerprint != running.fingerprint)
            })
            .map(|(name, _)| name.clone())
            .collect();
        incoming.retain(|name, _| !self.flows.contains_key(name) || changed.contains(name));
        if removed.is_empty() && incoming.is_empty() {
            self.shared = next.shared;
            tracing::info!("config reloaded: no flow changed");
            return;
        }

        // Build the new flows, and bind the addresses that are new, before anything old is
        // stopped: a flow that cannot be built or served leaves its old version running (and
        // its old settings, so the next reload tries again).
        let mut built = Vec::new();
        let mut all_built = true;
        for (name, spec) in incoming {
            match self.build(spec).await {
                Ok(b) => built.push(b),
                Err(e) => {
                    all_built = false;
                    tracing::error!(flow = %name, error = %e, "flow not reloaded; its old version goes on");
                }
            }
        }
        let mut bound = HashMap::new();
        let mut unbindable = HashSet::new();
        for flow in &built {
            let Some(endpoint) = &flow.served else {
                continue;
            };
            let address = endpoint.address;
            if self.listeners.contains_key(&address)
                || bound.contains_key(&address)
                || unbindable.contains(&address)
            {
                continue;
            }
            let endpoints = [(endpoint.clone(), flow.flow.clone())];
            match bind(address, &endpoints).await {
                Ok(listener) => {
                    bound.insert(address, listener);
                }
                Err(e) => {
                    tracing::error!(error = %e, "flow not reloaded; its old version goes on");
                    unbindable.insert(address);
                }
            }
        }
        built.retain(|b| {
            b.served
                .as_ref()
                .is_none_or(|e| !unbindable.contains(&e.address))
        });
        if !unbindable.is_empty() || !all_built {
            // Some flows kept their old version: a reload of the same config retries them.
            tracing::warn!("config partly reloaded; the flows above keep running as they were");
        } else {
            self.shared = next.shared;
        }
        let replaced: HashSet<String> = built.iter().map(|b| b.flow.name.to_string()).collect();

        // Take the old versions out: readers stopped and drained before their successors
        // start; servers' routes swapped below; workers finish what they hold.
        let mut paused = HashSet::new();
        let mut touched_addresses: HashSet<SocketAddr> = HashSet::new();
        let retiring = TaskTracker::new();
        let mut aborts = Vec::new();
        for name in removed
            .iter()
            .chain(changed.iter())
            .filter(|n| replaced.contains(*n) || removed.contains(*n))
        {
            let Some(old) = self.flows.remove(name) else {
                continue;
            };
            if old.flow.is_paused() {
                paused.insert(name.clone());
            }
            if let Some((address, _)) = &old.served {
                touched_addresses.insert(*address);
            }
            if let Some(reader) = &old.reader {
                self.live.remove(&reader.id);
                self.retired.insert(reader.id);
                aborts.push(reader.abort.clone());
            }
            retiring.spawn(retire_reader(old.flow.name.to_string(), old.reader));
            if let Some(workers) = old.workers {
                // The messages in their hands stay leased to them until they finish; the
                // rest of the queue waits in the store for the new workers.
                workers.stop.cancel();
                retiring.spawn(async move {
                    let _ = workers.handle.await;
                });
            }
        }
        retiring.close();
        // Trackers of earlier reloads that are done are dropped: the list stays short.
        self.retiring.retain(|t| !t.is_empty());
        self.retiring.push(retiring.clone());
        let readers_done =
            async { tokio::time::timeout(self.shutdown_timeout, retiring.wait()).await };
        tokio::select! {
            waited = readers_done => if waited.is_err() {
                tracing::warn!(timeout = ?self.shutdown_timeout, "reload: old inputs did not finish in time; stopped (their unacked messages will be read again)");
                for abort in aborts {
                    abort.abort();
                }
            },
            _ = self.shutdown.cancelled() => {
                // Shutting down: the new versions are not started; the drain takes over.
                self.publish();
                return;
            }
        }

        for flow in built {
            if let Some(endpoint) = &flow.served {
                touched_addresses.insert(endpoint.address);
            }
            if paused.contains(&*flow.flow.name) {
                flow.flow.pause();
            }
            self.start(flow);
        }
        // Each address gets its new routing table in one swap; an address no flow uses any
        // more stops, a new one is served.
        for address in touched_addresses {
            let endpoints = self.endpoints_at(address);
            if let Some(listener) = bound.remove(&address) {
                self.serve_at(listener, address, endpoints);
                continue;
            }
            match (self.listeners.get(&address), endpoints.is_empty()) {
                (Some(listener), false) => {
                    let (tls, limits) =
                        (endpoints[0].0.tls.is_some(), endpoints[0].0.limits.clone());
                    if tls != listener.tls || limits != listener.limits {
                        tracing::warn!(%address, "`tls` or `limits` of this address changed: that takes effect when weft restarts");
                    }
                    listener.table.set(endpoints);
                }
                (Some(_), true) => {
                    if let Some(listener) = self.listeners.remove(&address) {
                        tracing::info!(%address, "no flow listens here any more; closing");
                        self.retired.insert(listener.id);
                        listener.stop.cancel();
                        let closing = TaskTracker::new();
                        closing.spawn(async move {
                            let _ = listener.handle.await;
                        });
                        closing.close();
                        self.retiring.push(closing);
                    }
                }
                (None, _) => {}
            }
        }
        self.publish();
        tracing::info!(
            changed = changed.iter().filter(|n| replaced.contains(*n)).count(),
            added = replaced.iter().filter(|n| !changed.contains(n)).count(),
            removed = removed.len(),
            unchanged = self.flows.len() - replaced.len(),
            "config reloaded"
        );
    }
}
