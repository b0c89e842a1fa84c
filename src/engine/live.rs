//! Real-time capture beside the loop: the event stream of each server hosting an account
//! backed up here is followed ([`crate::follow`]), or one relay's stream when the person
//! names one; every verified commit is kept as it happens
//! (an event for screens and logs), and whatever the stream cannot give verified wakes that
//! account's backup at once. Polling goes on, slower for accounts followed live, as the
//! safety net, and alone for a server whose stream cannot be reached.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Node, NodeEvent};
use crate::follow::{self, Capture, Captured, FollowConfig};

/// How often the set of servers to follow is read again (accounts removed; an account's
/// first copy, or a move to another server, makes it read at once).
const HOSTS_EVERY: Duration = Duration::from_secs(60);

impl Node {
    /// Follows the streams of the servers of the accounts backed up here until the node stops.
    pub async fn follow(&self, config: FollowConfig) {
        let node = self.clone();
        let notify: follow::Notify = Arc::new(move |news| match news {
            Captured::Kept(applied) => node.emit(NodeEvent::CommitCaptured { applied }),
            Captured::NeedsSync { did, why } => {
                tracing::info!(%did, "backup asked for: {why}");
                node.sync_soon(&did);
            }
            Captured::IdentityChanged { did } => {
                node.syncer().resolver.forget(&did);
                node.sync_soon(&did);
            }
        });
        let capture = Arc::new(Capture::new(self.store().clone(), notify));
        let stop = self.stop_token();
        let mut events = self.subscribe();
        let mut running: BTreeMap<String, (CancellationToken, tokio::task::JoinHandle<()>)> =
            BTreeMap::new();
        loop {
            let hosts = match &config.relay {
                Some(relay) => Ok([relay.clone()].into()),
                None => self.store().read(follow::hosts_to_follow).await,
            };
            if let Ok(hosts) = hosts {
                running.retain(|host, (token, _)| {
                    let keep = hosts.contains(host);
                    if !keep {
                        token.cancel();
                    }
                    keep
                });
                for host in hosts {
                    if running.contains_key(&host) {
                        continue;
                    }
                    let token = stop.child_token();
                    let task = tokio::spawn({
                        let (store, capture, config) =
                            (self.store().clone(), capture.clone(), config.clone());
                        let (host, token) = (host.clone(), token.clone());
                        async move {
                            follow::follow_host(store, host, capture.as_ref(), config, token).await
                        }
                    });
                    running.insert(host, (token, task));
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(HOSTS_EVERY) => {}
                _ = backed_up(&mut events) => {}
            }
        }
        for (_, (token, task)) in running {
            token.cancel();
            let _ = task.await;
        }
    }
}

/// Waits for a backup to complete (the account may be new here, or on a new server); a
/// receiver that fell behind counts as one.
async fn backed_up(events: &mut tokio::sync::broadcast::Receiver<NodeEvent>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(NodeEvent::RepoSynced { .. }) | Err(RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(RecvError::Closed) => std::future::pending().await,
        }
    }
}
