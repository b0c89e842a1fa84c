//! The loop: [`Engine::run`] runs the node controller and turns its events into events for the
//! window; [`Engine::pass`] is one forced pass ("Sync now", and how tests drive the engine);
//! after each pass the alerts the facts call for are raised, each once.

use std::collections::BTreeSet;
use std::time::Duration as StdDuration;

use tokio::sync::broadcast;

use crate::engine::{NodeEvent, PassOptions};
use crate::follow::FollowConfig;
use crate::group::db as gdb;
use crate::history;
use crate::store;

use super::{flag_words, now, progress_dto, short_did, Engine, DELIVERED_KEY};
use crate::app::alerts::{self, FlagFacts, FriendFacts, InvitationFacts, MemberFacts};
use crate::app::dto::*;

/// Delivered alert keys remembered (the oldest are forgotten).
const MAX_DELIVERED: usize = 2000;

impl Engine {
    /// Runs the node controller until [`Engine::stop`], turning what it does into events for
    /// the window (and alerts after each pass).
    pub async fn run(&self) {
        if let Ok(s) = self.settings().await {
            self.apply_schedule(&s);
            if let Err(e) = self.apply_serving(&s).await {
                tracing::warn!(error = %e, "not serving");
            }
        }
        let mut rx = self.inner.node.subscribe();
        let forward = async {
            loop {
                match rx.recv().await {
                    Ok(e) => self.on_node_event(e).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.changed(),
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        };
        // The loop, and beside it every commit captured from the servers' event streams.
        let node = &self.inner.node;
        let work = async { tokio::join!(node.run(), node.follow(FollowConfig::default())) };
        tokio::select! {
            _ = work => {}
            _ = forward => {}
        }
    }

    /// One pass of the controller now, as "Sync now" asks (everything, backoff aside), then
    /// the alerts it calls for. Tests drive the engine with it instead of the loop.
    pub async fn pass(&self) {
        if let Ok(s) = self.settings().await {
            self.apply_schedule(&s);
        }
        self.inner
            .node
            .pass(PassOptions {
                forced: true,
                peer: None,
            })
            .await;
        self.raise_alerts().await;
        self.changed();
    }

    async fn on_node_event(&self, e: NodeEvent) {
        match e {
            NodeEvent::Progress { did, progress } => self.emit(Event::Progress {
                did,
                progress: progress_dto(&progress),
            }),
            NodeEvent::SyncFailed { did, error, .. } => {
                tracing::warn!(%did, %error, "backup failed");
                self.changed();
            }
            NodeEvent::FlagRaised { did, flag } => {
                tracing::warn!(%did, kind = %flag.kind, "{}", flag.detail);
                self.changed();
            }
            NodeEvent::RoundFinished { report } => {
                for w in &report.warnings {
                    tracing::warn!("{w}");
                }
                self.changed();
            }
            NodeEvent::RoundFailed { error } | NodeEvent::PublishFailed { error } => {
                tracing::warn!(%error, "verification round failed");
            }
            NodeEvent::Warning { text } => tracing::warn!("{text}"),
            NodeEvent::GarbageCollected { states, bytes } => {
                tracing::info!(bytes, versions = states, "old versions collected");
                self.changed();
            }
            NodeEvent::PassFinished { .. } => {
                self.raise_alerts().await;
                self.changed();
            }
            NodeEvent::CirclesRefreshed { .. }
            | NodeEvent::SyncStarted { .. }
            | NodeEvent::RepoSynced { .. }
            | NodeEvent::CommitCaptured { .. }
            | NodeEvent::CaughtUp { .. }
            | NodeEvent::HealthEvaluated { .. }
            | NodeEvent::Published { .. } => self.changed(),
        }
    }

    /// The settings the controller reads: how often to back up, and whether to wait for power.
    fn apply_schedule(&self, s: &Settings) {
        let node = &self.inner.node;
        let every = StdDuration::from_secs(u64::from(s.check_every_minutes.max(1)) * 60);
        let mut schedule = node.schedule();
        if schedule.sync_every != every {
            schedule.sync_every = every;
            node.set_schedule(schedule);
        }
        node.set_pause_on_battery(s.pause_on_battery);
    }

    /// Raises each alert the facts call for, once.
    pub(super) async fn raise_alerts(&self) {
        let Ok((repos, delivered, open_flags)) = self
            .store()
            .read(|c| {
                Ok((
                    store::list_repos(c)?,
                    gdb::meta(c, DELIVERED_KEY)?,
                    history::open_flags(c)?,
                ))
            })
            .await
        else {
            return;
        };
        let now = now();
        let flags: Vec<FlagFacts> = open_flags
            .into_iter()
            .map(|(did, handle, f)| {
                let name = handle.unwrap_or_else(|| short_did(&did));
                FlagFacts {
                    text: flag_words(&f, &name, now),
                    id: f.id,
                    did,
                    name,
                    kind: f.kind,
                }
            })
            .collect();
        let mut delivered: Vec<String> = delivered
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let st = self.inner.node.state();
        let names = self.names().await;
        let friends: Vec<FriendFacts> = repos
            .iter()
            .map(|r| {
                let upstream = r.upstream_status.clone().unwrap_or_else(|| "active".into());
                FriendFacts {
                    did: r.did.clone(),
                    name: r.handle.clone().unwrap_or_else(|| short_did(&r.did)),
                    failing_since: st.backoff.get(&r.did).map(|b| b.since),
                    gone: (upstream != "active").then_some(upstream),
                }
            })
            .collect();
        let invitations: Vec<InvitationFacts> = st
            .invitations
            .iter()
            .map(|i| InvitationFacts {
                uri: i.uri.clone(),
                cid: i.cid.clone(),
                from: i.facts.author.clone(),
                circle: i.name.clone(),
            })
            .collect();
        let members: Vec<MemberFacts> = st
            .health
            .values()
            .flat_map(|h| {
                h.members.iter().map(|(did, state)| MemberFacts {
                    circle_uri: h.uri.clone(),
                    circle: h.name.clone(),
                    did: did.clone(),
                    name: names.get(did).cloned().unwrap_or_else(|| short_did(did)),
                    state: state.clone(),
                })
            })
            .collect();
        let known: BTreeSet<String> = delivered.iter().cloned().collect();
        let mut due = alerts::due(&friends, &members, &invitations, now);
        due.extend(alerts::flag_alerts(&flags));
        let fresh = alerts::fresh(due, &known);
        if fresh.is_empty() {
            return;
        }
        for a in &fresh {
            delivered.push(a.key.clone());
            self.emit(Event::Alert {
                key: a.key.clone(),
                title: a.title.clone(),
                body: a.body.clone(),
            });
        }
        if delivered.len() > MAX_DELIVERED {
            let cut = delivered.len() - MAX_DELIVERED;
            delivered.drain(..cut);
        }
        if let Ok(text) = serde_json::to_string(&delivered) {
            let _ = self.set_meta(DELIVERED_KEY, &text).await;
        }
    }
}
