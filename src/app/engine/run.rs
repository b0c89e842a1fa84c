//! The loop: [`Engine::run`] runs the node controller and turns its events into events for the
//! window; [`Engine::pass`] is one forced pass ("Sync now", and how tests drive the engine);
//! after each pass the notifications the reminder ladder calls for are raised
//! ([`crate::app::alerts`]), what was raised kept in `group_meta` (`app.alerts`) and in memory
//! (so a ledger the store can't keep does not raise the same notifications at every pass).

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use tokio::sync::broadcast;

use crate::engine::{NodeEvent, NodeState, PassOptions};
use crate::follow::FollowConfig;
use crate::group::db as gdb;
use crate::history;
use crate::policy::Timestamp;
use crate::session;
use crate::store;

use super::{
    flag_words, now, parse_time, progress_dto, short_did, AppError, Engine, DELIVERED_KEY,
};
use crate::app::alerts::{
    self, FlagFacts, FriendFacts, InvitationFacts, Ledger, MemberFacts, Thing,
};
use crate::app::dto::*;

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

    /// Raises the notifications the reminder ladder calls for now.
    pub(super) async fn raise_alerts(&self) {
        self.raise_alerts_at(now()).await;
    }

    /// Raises the notifications due at `now` (see [`alerts::raise`]) and keeps the ledger:
    /// what was raised about each thing present, and when. The ledger is kept in memory first
    /// (what this run raised is known even when the store can't keep it) and in the store
    /// (for the next run), saved again at the next pass if saving failed.
    pub(super) async fn raise_alerts_at(&self, now: Timestamp) {
        // One at a time: a pass asked for while the loop runs ends in two calls at once.
        let _one = RAISING.lock().await;
        let facts = match self.ladder_facts(now).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "could not read what to notify about");
                return;
            }
        };
        let (raised, kept) = alerts::raise(now, &facts.things, &facts.ledger, facts.circles_known);
        for a in raised {
            self.emit(Event::Alert {
                key: a.key,
                title: a.title,
                body: a.body,
            });
        }
        self.live().alerts = Some(kept.clone());
        if kept != facts.stored {
            if let Err(e) = self.set_meta(DELIVERED_KEY, &kept.to_json()).await {
                tracing::warn!(error = %e, "could not keep the notifications raised");
            }
        }
    }

    /// What the ladder needs: every thing that needs the person now, from the store and the
    /// node's last results, and the ledger kept so far (this run's, else the stored one).
    pub(super) async fn ladder_facts(&self, now: Timestamp) -> Result<LadderFacts, AppError> {
        let (repos, added, stored, open_flags, me) = self
            .store()
            .read(|c| {
                Ok((
                    store::list_repos(c)?,
                    added_at(c)?,
                    gdb::meta(c, DELIVERED_KEY)?,
                    history::open_flags(c)?,
                    session::signed_in(c)?.map(|m| m.did),
                ))
            })
            .await?;
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
        let friends: Vec<FriendFacts> = repos
            .iter()
            .map(|r| {
                let upstream = r.upstream_status.clone().unwrap_or_else(|| "active".into());
                let synced = parse_time(r.last_sync_at.as_deref());
                let caught_up = parse_time(r.caught_up_at.as_deref());
                FriendFacts {
                    did: r.did.clone(),
                    name: r.handle.clone().unwrap_or_else(|| short_did(&r.did)),
                    failing: r.state == "error",
                    last_good: alerts::last_good(
                        synced,
                        caught_up,
                        parse_time(added.get(&r.did).map(String::as_str)),
                    ),
                    gone: (upstream != "active").then_some(upstream),
                }
            })
            .collect();
        let st = self.inner.node.state();
        let names = self.names().await;
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
        // This node's own state in a circle is on its screens, not in a notification.
        let members: Vec<MemberFacts> = st
            .health
            .values()
            .flat_map(|h| {
                h.members
                    .iter()
                    .filter(|(did, _)| me.as_deref() != Some(did.as_str()))
                    .map(|(did, state)| MemberFacts {
                        circle_uri: h.uri.clone(),
                        circle: h.name.clone(),
                        did: did.clone(),
                        name: names.get(did).cloned().unwrap_or_else(|| short_did(did)),
                        state: state.clone(),
                    })
            })
            .collect();
        Ok(LadderFacts {
            things: alerts::things(&friends, &members, &invitations, &flags),
            circles_known: circles_known(&st),
            ledger: self
                .live()
                .alerts
                .clone()
                .unwrap_or_else(|| Ledger::read(stored.as_deref(), now)),
            stored: Ledger::read(stored.as_deref(), now),
        })
    }
}

/// What [`Engine::ladder_facts`] gathered.
#[derive(Debug)]
pub(super) struct LadderFacts {
    pub things: Vec<Thing>,
    pub circles_known: bool,
    /// The ledger to go on from: the one this run last kept, else the stored one.
    pub ledger: Ledger,
    /// The stored ledger (saved again when it differs from the one kept).
    pub stored: Ledger,
}

/// Whether the facts about circles are known: the circles were read and their health
/// evaluated since the node started (or signed in). Until then no news about them is no news;
/// from then on, no circle and no invitation means there is nothing about circles, and what
/// the ledger held about them is resolved.
fn circles_known(st: &NodeState) -> bool {
    st.health_checked_at.is_some()
}

/// When each account was added to this node, by DID (a first backup that keeps failing
/// counts from then: see [`alerts::last_good`]).
fn added_at(c: &rusqlite::Connection) -> Result<BTreeMap<String, String>, store::StoreError> {
    let mut q = c.prepare("SELECT did, added_at FROM repos")?;
    let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Held while notifications are raised (see [`Engine::raise_alerts_at`]).
static RAISING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::engine::tests::open;
    use crate::policy::Duration;

    const DAY: u64 = 86_400;

    fn days_before(now: Timestamp, days: f64) -> Timestamp {
        now.minus(Duration::from_secs((days * DAY as f64) as u64))
    }

    /// The alerts raised at `at`: (key, title).
    async fn raised(e: &Engine, at: Timestamp) -> Vec<(String, String)> {
        let mut events = e.subscribe();
        e.raise_alerts_at(at).await;
        let mut out = Vec::new();
        while let Ok(ev) = events.try_recv() {
            if let Event::Alert { key, title, .. } = ev {
                out.push((key, title));
            }
        }
        out
    }

    #[tokio::test]
    async fn the_ladder_reads_the_store_and_keeps_what_it_raised() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path());
        let now = now();
        let last = days_before(now, 3.5);
        let caught_up = days_before(now, 5.0);
        let (l, c) = (last.to_string(), caught_up.to_string());
        e.store()
            .write(move |c2| {
                for (did, handle) in [
                    ("did:plc:bob", "bob.test"),
                    ("did:plc:carol", "carol.test"),
                    ("did:plc:dave", "dave.test"),
                ] {
                    store::add_repo(c2, did, Some(handle), None).unwrap();
                }
                // Bob: failing since his last backup, 3 and a half days ago (an older
                // catch-up from a friend does not count).
                store::set_repo_failed(c2, "did:plc:bob", "no answer", "unreachable").unwrap();
                c2.execute(
                    "UPDATE repos SET last_sync_at = ?1, caught_up_at = ?2 WHERE did = 'did:plc:bob'",
                    [&l, &c],
                )
                .unwrap();
                store::set_upstream_status(c2, "did:plc:carol", "deleted").unwrap();
                store::mark_synced(c2, "did:plc:dave").unwrap();
                let dave = store::get_repo(c2, "did:plc:dave").unwrap().unwrap();
                history::raise(c2, dave.id, history::kind::MASS_DELETION, "40 of 40", None)
                    .unwrap();
            })
            .await
            .unwrap();

        let facts = e.ladder_facts(now).await.unwrap();
        let keys: Vec<(&str, Option<Timestamp>)> = facts
            .things
            .iter()
            .map(|t| (t.key.as_str(), t.since))
            .collect();
        assert_eq!(
            keys,
            [
                ("backup:did:plc:bob", Some(last)),
                ("gone:did:plc:carol:deleted", None),
                ("flag:1", None),
            ]
        );
        assert!(!facts.circles_known, "no circles read yet");
        assert_eq!(facts.ledger, Ledger::default());

        // The warning, the gone account and the flag; nothing again at the next pass.
        let first = raised(&e, now).await;
        let titles: Vec<&str> = first.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            titles,
            [
                "bob.test not backed up for 3 days",
                "carol.test's account is deleted",
                "Many of dave.test's posts were deleted",
            ]
        );
        assert!(raised(&e, now).await.is_empty());
        // A day later: the alert about Bob, and only that.
        let later = now.plus(Duration::from_secs(DAY));
        let second = raised(&e, later).await;
        assert_eq!(
            second,
            [(
                "backup:did:plc:bob#2".to_string(),
                "bob.test still not backed up after 4 days".to_string()
            )]
        );
        // Bob is backed up again: his entry is forgotten, the others stay.
        e.store()
            .write(|c| store::mark_synced(c, "did:plc:bob"))
            .await
            .unwrap()
            .unwrap();
        assert!(raised(&e, later).await.is_empty());
        let ledger = e.ladder_facts(later).await.unwrap().ledger;
        let kept: Vec<&str> = ledger.raised.keys().map(String::as_str).collect();
        assert_eq!(kept, ["flag:1", "gone:did:plc:carol:deleted"]);
    }

    /// Keeps `ledger` in the store as the stored ledger.
    async fn store_ledger(e: &Engine, ledger: &Ledger) {
        e.set_meta(DELIVERED_KEY, &ledger.to_json()).await.unwrap();
    }

    fn entry(since: Timestamp) -> alerts::Raised {
        alerts::Raised {
            since: since.millis(),
            count: 2,
            at: Some(since.millis()),
        }
    }

    #[tokio::test]
    async fn once_the_circles_are_read_entries_about_circles_that_are_gone_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path());
        let now = now();
        // An invitation declined (or a circle left) in an earlier run: its entry is stored.
        let key = "invitation:at://did:plc:alice/org.p2pds.policy/1:bafy".to_string();
        let old = Ledger {
            raised: [(key.clone(), entry(days_before(now, 2.0)))].into(),
        };
        store_ledger(&e, &old).await;
        // Just started: the circles are not read yet, the entry stays as it is.
        assert!(!e.ladder_facts(now).await.unwrap().circles_known);
        assert!(raised(&e, now).await.is_empty());
        assert_eq!(e.ladder_facts(now).await.unwrap().ledger, old);
        // Read (no circle, no invitation): nothing about circles is left, so it is resolved.
        e.node().evaluate_health().await;
        let facts = e.ladder_facts(now).await.unwrap();
        assert!(facts.circles_known);
        assert!(raised(&e, now).await.is_empty());
        let stored = e.ladder_facts(now).await.unwrap().stored;
        assert_eq!(stored, Ledger::default(), "{stored:?}");
    }

    #[test]
    fn the_circles_are_known_once_their_health_was_evaluated_even_with_none() {
        let mut st = NodeState::default();
        assert!(!circles_known(&st));
        st.health_checked_at = Some(now());
        assert!(
            circles_known(&st),
            "no circles and no invitations is news too"
        );
    }

    #[tokio::test]
    async fn a_ledger_the_store_cannot_keep_does_not_repeat_the_notifications() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path());
        let now = now();
        e.store()
            .write(|c| {
                store::add_repo(c, "did:plc:carol", Some("carol.test"), None).unwrap();
                store::set_upstream_status(c, "did:plc:carol", "deleted").unwrap();
                // The ledger can't be saved (a full disk, a read-only folder, …).
                c.execute_batch(
                    "CREATE TRIGGER no_ledger_insert BEFORE INSERT ON group_meta
                       WHEN NEW.key = 'app.alerts' BEGIN SELECT RAISE(ABORT, 'disk full'); END;
                     CREATE TRIGGER no_ledger_update BEFORE UPDATE ON group_meta
                       WHEN NEW.key = 'app.alerts' BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
                )
                .unwrap();
            })
            .await
            .unwrap();
        let first = raised(&e, now).await;
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(e.ladder_facts(now).await.unwrap().stored, Ledger::default());
        // Not saved, but not told again either.
        assert!(raised(&e, now).await.is_empty());
        assert!(raised(&e, now.plus(Duration::from_secs(60)))
            .await
            .is_empty());
        // Once the store can keep it, it is saved at the next pass (and still not repeated).
        e.store()
            .write(|c| {
                c.execute_batch("DROP TRIGGER no_ledger_insert; DROP TRIGGER no_ledger_update;")
                    .unwrap();
            })
            .await
            .unwrap();
        assert!(raised(&e, now).await.is_empty());
        let facts = e.ladder_facts(now).await.unwrap();
        assert_eq!(facts.stored, facts.ledger);
        assert!(facts
            .stored
            .raised
            .contains_key("gone:did:plc:carol:deleted"));
    }
}
