//! Friends as the source: when an account's own server can't serve it (down, gone, taken
//! down, refusing, serving what does not verify), the copy is brought up to date from the
//! other members of this node's circles that advertise an endpoint (`sync::peers`), one after
//! the other until one holds something newer that verifies. A friend's node that serves
//! something that does not verify is recorded as a failed check of that node (layer 0 for its
//! commit, 1 for its blocks), and the next is tried.

use super::{Node, NodeEvent};
use crate::policy::observations::Outcome;
use crate::store;
use crate::sync::{FailureKind, SyncError, SyncProgress, SyncReport};
use crate::verify::db::{ResultRow, Via};

/// Whether a backup's outcome means the server could not give the account: then friends may.
pub(super) fn server_cannot_serve(result: &Result<SyncReport, SyncError>) -> bool {
    match result {
        Ok(report) => !report.upstream_status.is_empty() && report.upstream_status != "active",
        Err(e) => matches!(
            e.kind(),
            FailureKind::Unreachable
                | FailureKind::Refused
                | FailureKind::Gone
                | FailureKind::BadData
        ),
    }
}

impl Node {
    /// Brings the copy of `did` up to date from the first friend's node holding a newer state
    /// that verifies; true when one did. `failure` is what the backup from the server met: it
    /// stays the account's state (the server still can't serve it), beside where the copy
    /// came from.
    pub(super) async fn catch_up_from_friends(
        &self,
        did: &str,
        progress: &(dyn Fn(SyncProgress) + Send + Sync),
        failure: Option<(String, FailureKind)>,
    ) -> bool {
        let me = self.circles().me().await.map(|a| a.did).unwrap_or_default();
        for (node, endpoint) in self.verifier().member_endpoints().await {
            match self.syncer().catch_up_from(did, &endpoint, progress).await {
                Ok(Some(mut report)) => {
                    // The blobs the new records name, from the same friend (`listBlobs`,
                    // `getBlob`, each hashed); those it lacks wait for their next try.
                    match crate::sync::blobs::sync_blobs(self.syncer(), did, &endpoint, progress)
                        .await
                    {
                        Ok(b) => report.blobs_fetched = b.fetched,
                        Err(e) => tracing::info!(%did, %node, "blobs from a friend: {e}"),
                    }
                    let (d, n, f) = (did.to_string(), node.clone(), failure.clone());
                    let _ = self
                        .store()
                        .write(move |c| {
                            if let Some((message, kind)) = &f {
                                store::set_repo_failed(c, &d, message, kind.as_str())?;
                            }
                            store::mark_caught_up(c, &d, &n)
                        })
                        .await;
                    self.emit(NodeEvent::CaughtUp {
                        did: did.to_string(),
                        from: node,
                        report: Box::new(report),
                    });
                    return true;
                }
                Ok(None) => {}
                Err(SyncError::Peer { what, layer, .. }) => {
                    tracing::warn!(%did, %node, "a friend's node served {what}");
                    let row = ResultRow {
                        at: super::now().to_string(),
                        verifier: me.clone(),
                        target: node,
                        subject: did.to_string(),
                        layer,
                        outcome: Outcome::Fail,
                        latency_ms: None,
                        reason: Some(format!("served {what} when asked for a newer copy")),
                        via: Via::Endpoint,
                        policy: None,
                        needs: None,
                    };
                    let _ = self
                        .store()
                        .write(move |c| crate::verify::db::insert_result(c, &row))
                        .await;
                }
                // Not reachable, not holding the account, or a local failure: the next one.
                Err(e) => tracing::info!(%did, %node, "catching up from a friend: {e}"),
            }
        }
        false
    }
}
