//! Acting on a plan: each [`Op`] run against the node's parts, its outcome kept in the node's
//! state and told as a [`NodeEvent`].

use std::sync::Mutex;
use std::time::Instant;

use futures_util::StreamExt;
use rand::Rng;

use super::plan::{Backoff, Op};
use super::{lock, now, CircleHealth, Node, NodeEvent, PassOptions, LAST_GC_KEY};
use crate::group::plan::CircleState;
use crate::history::{self, gc};
use crate::sync::SyncProgress;
use crate::verify::RoundOptions;

/// Progress events of one backup go out at most this often.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

impl Node {
    /// Runs the ops of one pass in order; the backups among them run concurrently (at most the
    /// schedule's `concurrency` at once). Stops early when the node stops or a move starts.
    pub(super) async fn act(&self, ops: &[Op], opts: &PassOptions) {
        let Ok(_work) = self.guard().await else {
            return;
        };
        let mut i = 0;
        while i < ops.len() {
            if self.stopping() || self.moving() {
                return;
            }
            if let Op::Sync { .. } = &ops[i] {
                let start = i;
                while i < ops.len() && matches!(ops[i], Op::Sync { .. }) {
                    i += 1;
                }
                self.sync_all(&ops[start..i]).await;
                continue;
            }
            // Each op is a task of its own: stopping the node ends it where it is (what it
            // wrote is whole: every store write is one transaction).
            let token = self.stop_token().child_token();
            tokio::select! {
                _ = token.cancelled() => return,
                _ = self.act_one(&ops[i], opts) => {}
            }
            i += 1;
        }
    }

    async fn act_one(&self, op: &Op, opts: &PassOptions) {
        match op {
            Op::RefreshCircles { discover } => self.refresh_circles(*discover).await,
            Op::Verify { all, self_check } => {
                let peer = opts.peer.clone().or_else(|| self.schedule().peer);
                self.verify_round(*all, *self_check, peer).await
            }
            Op::Publish => self.publish().await,
            Op::Health => self.evaluate_health().await,
            Op::CollectGarbage => {
                if let Err(text) = self.collect_garbage_now().await {
                    self.emit(NodeEvent::Warning {
                        text: format!("removing old versions failed: {text}"),
                    });
                }
            }
            Op::Sync { did } => self.sync_one(did).await,
        }
    }

    async fn sync_all(&self, ops: &[Op]) {
        let limit = self.schedule().concurrency.max(1);
        let stop = self.stop_token();
        futures_util::stream::iter(ops.iter().filter_map(|o| match o {
            Op::Sync { did } => Some(did.clone()),
            _ => None,
        }))
        .for_each_concurrent(limit, |did| {
            let token = stop.child_token();
            async move {
                tokio::select! {
                    _ = token.cancelled() => {
                        self.state_mut().progress.remove(&did);
                    }
                    _ = self.sync_one(&did) => {}
                }
            }
        })
        .await;
    }

    /// Backs up one account now, keeping its progress and its backoff.
    pub async fn sync_one(&self, did: &str) {
        self.state_mut()
            .progress
            .insert(did.to_string(), SyncProgress::Checking);
        self.emit(NodeEvent::SyncStarted {
            did: did.to_string(),
        });
        let last_emit = Mutex::new(Instant::now());
        let report = |p: SyncProgress| {
            self.state_mut().progress.insert(did.to_string(), p.clone());
            let mut last = lock(&last_emit);
            if last.elapsed() >= PROGRESS_EVERY {
                *last = Instant::now();
                self.emit(NodeEvent::Progress {
                    did: did.to_string(),
                    progress: p,
                });
            }
        };
        let mut syncer = self.syncer().clone();
        if let Some(grace) = self.pds_grace() {
            syncer.pds_grace = grace;
        }
        let flags_before = self.store().read(history::last_flag_id).await.ok();
        let result = syncer.sync_repo(did, &report).await;
        if super::peers::server_cannot_serve(&result) {
            let failure = result.as_ref().err().map(|e| (e.to_string(), e.kind()));
            self.catch_up_from_friends(did, &report, failure).await;
        }
        self.tell_new_flags(did, flags_before).await;
        let schedule = self.schedule();
        let mut st = self.state_mut();
        st.progress.remove(did);
        let event = match result {
            Ok(report) => {
                st.backoff.remove(did);
                NodeEvent::RepoSynced {
                    did: did.to_string(),
                    report: Box::new(report),
                }
            }
            Err(e) => {
                let jitter = rand::thread_rng().gen::<f64>();
                let b =
                    Backoff::after_failure(st.backoff.get(did).copied(), now(), &schedule, jitter);
                st.backoff.insert(did.to_string(), b);
                NodeEvent::SyncFailed {
                    did: did.to_string(),
                    error: e.to_string(),
                    kind: e.kind(),
                    retry_at: b.retry_at,
                }
            }
        };
        drop(st);
        self.emit(event);
    }

    /// Tells the flags this account's backup raised (after the flag `before`).
    async fn tell_new_flags(&self, did: &str, before: Option<i64>) {
        let Some(before) = before else {
            return;
        };
        let d = did.to_string();
        let raised = self
            .store()
            .read(move |c| history::flags_after(c, &d, before))
            .await
            .unwrap_or_default();
        for flag in raised {
            self.emit(NodeEvent::FlagRaised {
                did: did.to_string(),
                flag,
            });
        }
    }

    /// The grace period the circles in force give a PDS that does not answer.
    fn pds_grace(&self) -> Option<std::time::Duration> {
        *lock(&self.inner.grace)
    }

    /// Re-reads the circles (new versions, acks, invitations) and keeps what screens show.
    pub async fn refresh_circles(&self, discover: bool) {
        if self.session().await.is_none() {
            return;
        }
        let circles = self.circles();
        let warnings = match circles.refresh(discover).await {
            Ok(r) => r.warnings,
            Err(e) => vec![format!("could not bring the circles up to date: {e}")],
        };
        let views = circles.list().await.unwrap_or_default();
        let invitations = circles.invitations().await.unwrap_or_default();
        let grace = circles.pds_grace().await;
        *lock(&self.inner.grace) = grace;
        let now = now();
        {
            let mut st = self.state_mut();
            st.circles = views;
            st.invitations = invitations;
            st.last.circles = Some(now);
            if discover {
                st.last.discover = Some(now);
            }
        }
        self.emit(NodeEvent::CirclesRefreshed { warnings });
    }

    async fn verify_round(&self, all: bool, self_check: bool, peer: Option<String>) {
        let Some(s) = self.session().await else {
            return;
        };
        if !all && !self.verifier().online(&s).await {
            self.emit(NodeEvent::RoundFailed {
                error: "your PDS cannot be reached: verification waits until it can".into(),
            });
            return;
        }
        let opts = RoundOptions {
            peer,
            only_due: !all,
            self_check,
        };
        match self.verifier().round(&s, &opts).await {
            Ok(report) => {
                if self_check {
                    self.state_mut().last.self_check = Some(now());
                }
                self.emit(NodeEvent::RoundFinished {
                    report: Box::new(report),
                });
            }
            Err(e) => self.emit(NodeEvent::RoundFailed {
                error: e.to_string(),
            }),
        }
    }

    async fn publish(&self) {
        let Some(s) = self.session().await else {
            return;
        };
        let published = match crate::verify::published_results(self.store()).await {
            Ok(results) => self.circles().publish(&s, &results).await,
            Err(e) => Err(e.into()),
        };
        match published {
            Ok(report) => self.emit(NodeEvent::Published { report }),
            Err(e) => self.emit(NodeEvent::PublishFailed {
                error: e.to_string(),
            }),
        }
    }

    /// Evaluates every active circle's health from public records.
    pub async fn evaluate_health(&self) {
        let views = self.state().circles;
        let now = now();
        let mut health = std::collections::BTreeMap::new();
        for v in views.iter().filter(|v| v.state == CircleState::Active) {
            match crate::verify::report::compliance(self.circles(), &v.uri, now).await {
                Ok((report, _)) => {
                    let members = report
                        .nodes
                        .iter()
                        .map(|n| (n.member.clone(), n.state.as_str().to_string()))
                        .collect();
                    health.insert(
                        v.uri.clone(),
                        CircleHealth {
                            uri: v.uri.clone(),
                            name: v.name.clone(),
                            state: report.state.as_str().to_string(),
                            members,
                            checked_at: report.checked_at(),
                        },
                    );
                }
                Err(e) => self.emit(NodeEvent::Warning {
                    text: format!("could not evaluate the circle {}: {e}", v.name),
                }),
            }
        }
        let circles = health.len();
        {
            let mut st = self.state_mut();
            st.health = health;
            st.health_checked_at = Some(now);
            st.last.health = Some(now);
        }
        self.emit(NodeEvent::HealthEvaluated { circles });
    }

    /// Removes the versions older than the retention window (the setting) and what only they
    /// needed, gives the space back and records when. The caller holds the work lock.
    pub async fn collect_garbage_now(&self) -> Result<gc::GcReport, String> {
        let store = self.store();
        let limits = store
            .read(history::limits)
            .await
            .map_err(|e| e.to_string())?;
        let opts = gc::GcOptions {
            retention: std::time::Duration::from_secs(u64::from(limits.retention_days) * 86_400),
            now: chrono::Utc::now(),
        };
        let blobs = self.syncer().blob_dir();
        let report = store
            .write(move |c| gc::run(c, &blobs, &opts))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        store.checkpoint().await.map_err(|e| e.to_string())?;
        let at = now();
        store
            .write(move |c| crate::group::db::set_meta(c, LAST_GC_KEY, &at.to_string()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.state_mut().last.gc = Some(at);
        self.emit(NodeEvent::GarbageCollected {
            states: report.states_removed,
            bytes: report.reclaimable_bytes,
        });
        Ok(report)
    }
}
