//! The node controller: the one reconcile loop that the desktop app, `p2pds run` and the
//! one-shot commands (`p2pds sync --once`, `p2pds verify --once`) share.
//!
//! Observe (the store and this node's memory: [`plan::Facts`]), evaluate ([`plan::plan`], pure),
//! act (run each [`plan::Op`]: backups with bounded concurrency, then verification, publishing,
//! health, garbage collection), again and again. What happened goes out as past-tense
//! [`NodeEvent`]s on one broadcast channel; what the screens show between passes (progress,
//! failures, the circles and their health) is kept in [`NodeState`].
//!
//! Invariants:
//! - Nothing here reads the environment or knows a UI toolkit or a command line: the entry
//!   points pass a [`NodeConfig`].
//! - Writes hold the work lock shared ([`Node::guard`]); a move of the storage folder holds it
//!   alone and sets `moving`, after which no pass and no action writes.
//! - Backoff is per account: a failing account never delays another (backups run
//!   concurrently).
//! - Every op is a task with its own child cancellation token (each backup, a verification
//!   round, publishing, health, a collection). Stop cancels them all, then waits at most
//!   [`NodeConfig::drain`]; an interrupted op leaves whole data behind (every store write is one
//!   transaction: an interrupted backup keeps the previous verified copy).
//! - Screens and tools act on kinds ([`crate::sync::FailureKind`], stored beside each failed
//!   backup's message), never on the words of a message.

mod live;
mod peers;
pub mod plan;
mod work;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, Notify, RwLock, RwLockReadGuard};
use tokio_util::sync::CancellationToken;

use crate::group::{CircleView, Circles, Invitation, PublishReport};
use crate::identity::Resolver;
use crate::policy::Timestamp;
use crate::session::Session;
use crate::store::{Store, StoreError};
use crate::sync::{SyncProgress, SyncReport, Syncer};
use crate::verify::{RoundReport, Verifier};

pub use plan::{Backoff, Facts, Op, OpKinds, Schedule};

/// The key under which the time of the last garbage collection is kept (`group_meta`).
pub const LAST_GC_KEY: &str = "app.lastGc";

/// How the node is set up: everything the library would otherwise read from the environment.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub plc_url: String,
    pub resolver_url: Option<String>,
    /// Sent with every request, e.g. `p2pds/0.1.0`.
    pub user_agent: String,
    pub schedule: Schedule,
    /// Status and heartbeat records are rewritten at most this often (default 20 minutes).
    pub publish_interval: Option<crate::policy::Duration>,
    /// How long a challenged node has to answer (default: the policy's interval).
    pub challenge_ttl: Option<crate::policy::Duration>,
    /// Whether the machine runs on battery now (the desktop app asks the system).
    pub on_battery: Option<fn() -> bool>,
    /// How long stop waits for work in progress to end.
    pub drain: Duration,
    /// How long a PDS may stay unreachable before it counts as gone, outside circles (default
    /// a day; the circles' offline grace period wins where one applies).
    pub pds_grace: Option<Duration>,
    /// The disk's free space as the caller states it, in bytes (None: measured).
    pub free_space: Option<u64>,
    /// How long a poll of an account followed live waits for its stream (None: the
    /// default, `Syncer::stream_grace`).
    pub stream_grace: Option<Duration>,
    /// A backlink index (a Constellation-compatible `links` API) asked for circles naming this
    /// account beyond the accounts known (None: not asked). See `group::backlinks`.
    pub backlink_index: Option<String>,
}

impl NodeConfig {
    pub fn new(data_dir: PathBuf, plc_url: &str, resolver_url: Option<&str>) -> Self {
        NodeConfig {
            data_dir,
            plc_url: plc_url.to_string(),
            resolver_url: resolver_url.map(str::to_string),
            user_agent: concat!("p2pds/", env!("CARGO_PKG_VERSION")).to_string(),
            schedule: Schedule::default(),
            publish_interval: None,
            challenge_ttl: None,
            on_battery: None,
            drain: Duration::from_secs(10),
            pds_grace: None,
            free_space: None,
            stream_grace: None,
            backlink_index: None,
        }
    }
}

/// Why the node could not start or an action failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("can't create the folder for the copies ({path}): {reason}")]
    Folder { path: String, reason: String },
    #[error("can't start the network client: {0}")]
    Http(String),
    #[error("P2PDS is moving your copies to a new folder. Try again once it has restarted.")]
    Moving,
    #[error(transparent)]
    Locked(#[from] crate::store::lock::LockError),
}

/// What the node did, in the past tense.
#[derive(Debug, Clone)]
pub enum NodeEvent {
    CirclesRefreshed {
        warnings: Vec<String>,
    },
    SyncStarted {
        did: String,
    },
    Progress {
        did: String,
        progress: SyncProgress,
    },
    RepoSynced {
        did: String,
        report: Box<SyncReport>,
    },
    SyncFailed {
        did: String,
        error: String,
        /// The kind of failure (what screens act on; `error` says it in words).
        kind: crate::sync::FailureKind,
        retry_at: Timestamp,
    },
    /// A commit from the account's event stream, verified and kept as a version.
    CommitCaptured {
        applied: crate::firehose::Applied,
    },
    /// The account's server could not serve it; the copy was brought up to date from the
    /// node of the friend `from` (their account's DID), verified.
    CaughtUp {
        did: String,
        from: String,
        report: Box<crate::sync::peers::CatchUp>,
    },
    /// A backup found an upstream event that may mean loss (the account gone, history
    /// rewritten, a mass deletion, a new key); the last good state is kept.
    FlagRaised {
        did: String,
        flag: crate::history::Flag,
    },
    RoundFinished {
        report: Box<RoundReport>,
    },
    RoundFailed {
        error: String,
    },
    Published {
        report: PublishReport,
    },
    PublishFailed {
        error: String,
    },
    HealthEvaluated {
        circles: usize,
    },
    GarbageCollected {
        states: u64,
        bytes: u64,
    },
    /// Something went wrong that is not one account's backup (the circles, a collection).
    Warning {
        text: String,
    },
    PassFinished {
        ops: usize,
    },
}

/// One circle's health, from public records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircleHealth {
    pub uri: String,
    pub name: String,
    pub state: String,
    /// (member DID, its state) for every member.
    pub members: Vec<(String, String)>,
    /// When every copy last passed its check (`Report::checked_at`); `None`: not checked yet.
    pub checked_at: Option<Timestamp>,
}

/// What the node knows between passes, for the screens and the log.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    /// Backups under way.
    pub progress: BTreeMap<String, SyncProgress>,
    /// Accounts whose last backup failed.
    pub backoff: BTreeMap<String, Backoff>,
    pub circles: Vec<CircleView>,
    pub invitations: Vec<Invitation>,
    pub health: BTreeMap<String, CircleHealth>,
    pub health_checked_at: Option<Timestamp>,
    pub paused_until: Option<Timestamp>,
    pub pause_on_battery: bool,
    /// Accounts whose backup was asked for by an event (see [`Node::sync_soon`]).
    pub wanted: std::collections::BTreeSet<String>,
    last: plan::LastRuns,
}

/// How a pass was asked for.
#[derive(Debug, Clone, Default)]
pub struct PassOptions {
    /// "Sync now": everything, intervals and backoff aside.
    pub forced: bool,
    /// Verify only this member's copies (`p2pds verify --peer`).
    pub peer: Option<String>,
}

struct Inner {
    config: NodeConfig,
    circles: Circles,
    verifier: Verifier,
    schedule: Mutex<Schedule>,
    state: Mutex<NodeState>,
    session: Mutex<Option<Arc<Session>>>,
    /// The shortest offline grace period of the circles in force (read with the circles).
    grace: Mutex<Option<Duration>>,
    events: broadcast::Sender<NodeEvent>,
    wake: Notify,
    stop: CancellationToken,
    /// Work that writes holds this shared; a move of the storage folder holds it alone.
    work: RwLock<()>,
    moving: AtomicBool,
    /// This node's hold on its data folder (released when the node is dropped).
    _lock: crate::store::lock::FolderLock,
}

/// The node: cheap to clone (one shared state).
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

pub(crate) fn now() -> Timestamp {
    Timestamp::from_millis(chrono::Utc::now().timestamp_millis())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Node {
    /// Opens (or creates) the store in `config.data_dir`.
    pub fn open(config: NodeConfig) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| NodeError::Folder {
            path: config.data_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        // One running node per folder.
        let lock = crate::store::lock::FolderLock::acquire(&config.data_dir)?;
        let store = Store::open(&config.data_dir.join("p2pds.sqlite"))?;
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| NodeError::Http(e.to_string()))?;
        let resolver = Arc::new(Resolver::new(
            http.clone(),
            &config.plc_url,
            config.resolver_url.as_deref(),
        ));
        let mut syncer = Syncer::new(store, http, resolver, &config.data_dir);
        if let Some(grace) = config.pds_grace {
            syncer.pds_grace = grace;
        }
        syncer.free_space = config.free_space;
        if let Some(grace) = config.stream_grace {
            syncer.stream_grace = grace;
        }
        let mut circles = Circles::new(syncer);
        if let Some(url) = &config.backlink_index {
            match crate::group::backlinks::BacklinkIndex::new(url) {
                Ok(index) => circles.backlinks = Some(index),
                Err(e) => tracing::warn!("{e}: discovery goes without it"),
            }
        }
        if let Some(every) = config.publish_interval {
            circles.rate = crate::group::plan::PublishRate::every(every);
        }
        let mut verifier = Verifier::new(circles.clone());
        verifier.challenge_ttl = config.challenge_ttl;
        let (events, _) = broadcast::channel(1024);
        Ok(Node {
            inner: Arc::new(Inner {
                schedule: Mutex::new(config.schedule.clone()),
                config,
                circles,
                verifier,
                state: Mutex::new(NodeState::default()),
                session: Mutex::new(None),
                grace: Mutex::new(None),
                events,
                wake: Notify::new(),
                stop: CancellationToken::new(),
                work: RwLock::new(()),
                moving: AtomicBool::new(false),
                _lock: lock,
            }),
        })
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    pub fn store(&self) -> &Store {
        &self.inner.circles.syncer.store
    }

    pub fn syncer(&self) -> &Syncer {
        &self.inner.circles.syncer
    }

    pub fn circles(&self) -> &Circles {
        &self.inner.circles
    }

    pub fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    /// A copy of what the node knows now.
    pub fn state(&self) -> NodeState {
        lock(&self.inner.state).clone()
    }

    fn state_mut(&self) -> std::sync::MutexGuard<'_, NodeState> {
        lock(&self.inner.state)
    }

    pub fn schedule(&self) -> Schedule {
        lock(&self.inner.schedule).clone()
    }

    /// A new schedule (a settings change); the loop uses it from its next pass.
    pub fn set_schedule(&self, schedule: Schedule) {
        *lock(&self.inner.schedule) = schedule;
        self.wake();
    }

    /// Pause the work until `until` (`None`: resume).
    pub fn pause_until(&self, until: Option<Timestamp>) {
        self.state_mut().paused_until = until;
        if until.is_none() {
            self.wake();
        }
    }

    /// Wait for mains power before working (a setting of the desktop app).
    pub fn set_pause_on_battery(&self, on: bool) {
        self.state_mut().pause_on_battery = on;
    }

    /// Events (one receiver per listener).
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    pub(crate) fn emit(&self, e: NodeEvent) {
        let _ = self.inner.events.send(e);
    }

    /// Asks the loop for a pass now ("Sync now", a change); several asks before the pass
    /// starts make one pass.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Asks for a backup of `did` in the next pass (which comes at once), backoff aside: an
    /// event on its server's stream did not chain, or told of a new identity or status.
    pub fn sync_soon(&self, did: &str) {
        self.state_mut().wanted.insert(did.to_string());
        self.wake();
    }

    /// Stops the loop: work in progress is cancelled; [`Node::run`] returns once it ended
    /// (or after the drain timeout).
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }

    pub fn stopping(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    /// A token cancelled when the node stops (for servers and other tasks beside the loop).
    pub fn stop_token(&self) -> CancellationToken {
        self.inner.stop.clone()
    }

    pub fn moving(&self) -> bool {
        self.inner.moving.load(Ordering::Relaxed)
    }

    /// Permission to write (shared with other work): refused once a move has started.
    pub async fn guard(&self) -> Result<RwLockReadGuard<'_, ()>, NodeError> {
        let g = self.inner.work.read().await;
        if self.moving() {
            return Err(NodeError::Moving);
        }
        Ok(g)
    }

    /// Marks the start of a move of the storage folder: from now on no pass and no action
    /// writes. False when a move is under way already.
    pub fn start_move(&self) -> bool {
        !self.inner.moving.swap(true, Ordering::SeqCst)
    }

    /// Waits for work in progress, then holds the work lock alone (for the move's copy).
    pub async fn exclusive(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.inner.work.write().await
    }

    /// A move failed: work resumes.
    pub fn end_move(&self) {
        self.inner.moving.store(false, Ordering::SeqCst);
        self.wake();
    }

    /// The signed-in account's session (resumed from the keyring once, then kept).
    pub async fn session(&self) -> Option<Arc<Session>> {
        if let Some(s) = lock(&self.inner.session).clone() {
            return Some(s);
        }
        let syncer = self.syncer();
        let s = Session::resume(syncer.http.clone(), &syncer.store)
            .await
            .ok()?;
        *lock(&self.inner.session) = Some(s.clone());
        Some(s)
    }

    /// A new sign-in (or `None` after signing out, which also forgets the circles).
    pub fn set_session(&self, session: Option<Arc<Session>>) {
        let out = session.is_none();
        *lock(&self.inner.session) = session;
        if out {
            let mut st = self.state_mut();
            st.circles.clear();
            st.invitations.clear();
            st.health.clear();
            st.health_checked_at = None;
            st.last = plan::LastRuns::default();
        }
    }

    /// Runs passes until [`Node::stop`]: one at start, then one per tick and one per wake-up
    /// (coalesced), each planning what is due.
    pub async fn run(&self) {
        let mut tick = tokio::time::interval(self.schedule().tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut forced = false;
        loop {
            tokio::select! {
                _ = self.inner.stop.cancelled() => break,
                _ = self.inner.wake.notified() => forced = true,
                _ = tick.tick() => {}
            }
            // Wake-ups that came together make one pass: drop the one stored meanwhile.
            if futures_util::FutureExt::now_or_never(self.inner.wake.notified()).is_some() {
                forced = true;
            }
            let pass = self.pass(PassOptions { forced, peer: None });
            tokio::pin!(pass);
            tokio::select! {
                _ = &mut pass => {}
                _ = self.inner.stop.cancelled() => {
                    // Tasks see the cancellation and end; give them the drain time.
                    let _ = tokio::time::timeout(self.inner.config.drain, &mut pass).await;
                    break;
                }
            }
            forced = false;
            let every = self.schedule().tick;
            if tick.period() != every {
                tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            }
        }
    }

    /// What the node observes now, for [`plan::plan`].
    pub async fn facts(&self, forced: bool) -> Result<Facts, NodeError> {
        let (repos, discovered, last_gc, live) = self
            .store()
            .read(|c| {
                Ok((
                    crate::store::list_repos(c)?,
                    crate::group::db::meta(c, "discovered_at")?,
                    crate::group::db::meta(c, LAST_GC_KEY)?,
                    crate::follow::live_hosts(c)?,
                ))
            })
            .await?;
        let signed_in = self.session().await.is_some();
        let now = now();
        let st = self.state();
        let on_battery = st.pause_on_battery && self.inner.config.on_battery.is_some_and(|f| f());
        let parse = |t: Option<String>| t.and_then(|t| Timestamp::parse(&t).ok());
        let mut last = st.last;
        last.discover = last.discover.max(parse(discovered));
        last.gc = last.gc.max(parse(last_gc));
        Ok(Facts {
            signed_in,
            paused: st.paused_until.is_some_and(|u| u > now),
            on_battery,
            moving: self.moving(),
            forced,
            repos: repos
                .into_iter()
                .map(|r| plan::RepoFacts {
                    copied: r.head.is_some(),
                    last_sync: parse(r.last_sync_at),
                    wanted: st.wanted.contains(&r.did),
                    live: r.pds.as_ref().is_some_and(|p| live.contains(p)),
                    did: r.did,
                })
                .collect(),
            backoff: st.backoff,
            last,
        })
    }

    /// One pass: observe, plan, act. Returns the ops it ran.
    pub async fn pass(&self, opts: PassOptions) -> Vec<Op> {
        let facts = match self.facts(opts.forced).await {
            Ok(f) => f,
            Err(e) => {
                self.emit(NodeEvent::Warning {
                    text: format!("could not read the store: {e}"),
                });
                return Vec::new();
            }
        };
        let mut ops = plan::plan(now(), &facts, &self.schedule());
        if let Some(Op::RefreshCircles { .. }) = ops.first() {
            // The circles decide the duties: accounts they add are backed up in this pass, so
            // plan again once they are read.
            self.act(&ops[..1], &opts).await;
            let facts = match self.facts(opts.forced).await {
                Ok(f) => f,
                Err(_) => facts,
            };
            let rest: Vec<Op> = plan::plan(now(), &facts, &self.schedule())
                .into_iter()
                .filter(|o| !matches!(o, Op::RefreshCircles { .. }))
                .collect();
            self.act(&rest, &opts).await;
            ops.truncate(1);
            ops.extend(rest);
        } else {
            self.act(&ops, &opts).await;
        }
        {
            let mut st = self.state_mut();
            for op in &ops {
                if let Op::Sync { did } = op {
                    st.wanted.remove(did);
                }
            }
        }
        self.emit(NodeEvent::PassFinished { ops: ops.len() });
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node with no account and no backups: each pass only reads the store.
    fn idle_node(dir: &std::path::Path, tick: Duration) -> Node {
        let mut config = NodeConfig::new(dir.to_path_buf(), "http://127.0.0.1:9", None);
        config.schedule = Schedule {
            tick,
            ops: OpKinds {
                sync: true,
                circles: false,
                verify: false,
                publish: false,
                health: false,
                gc: false,
            },
            ..Schedule::default()
        };
        Node::open(config).unwrap()
    }

    async fn next_pass(rx: &mut broadcast::Receiver<NodeEvent>) {
        loop {
            if let NodeEvent::PassFinished { .. } = rx.recv().await.unwrap() {
                return;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_ticks_coalesces_wake_ups_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let node = idle_node(dir.path(), hour);
        let mut rx = node.subscribe();
        let n = node.clone();
        let running = tokio::spawn(async move { n.run().await });
        // One pass at start.
        next_pass(&mut rx).await;
        // A burst of wake-ups: one pass.
        for _ in 0..5 {
            node.wake();
        }
        next_pass(&mut rx).await;
        let quiet = tokio::time::timeout(Duration::from_secs(59 * 60), next_pass(&mut rx)).await;
        assert!(
            quiet.is_err(),
            "no second pass for one burst, none before the tick"
        );
        // The next tick, an hour after the first.
        tokio::time::timeout(Duration::from_secs(2 * 60), next_pass(&mut rx))
            .await
            .expect("a pass at the tick");
        node.stop();
        tokio::time::timeout(Duration::from_secs(1), running)
            .await
            .expect("stops at once when idle")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn missed_ticks_are_skipped_not_run_in_a_burst() {
        let dir = tempfile::tempdir().unwrap();
        let node = idle_node(dir.path(), Duration::from_secs(60));
        let mut rx = node.subscribe();
        // The loop is slow to start (the machine slept): ten ticks missed.
        let n = node.clone();
        let running = tokio::spawn(async move { n.run().await });
        next_pass(&mut rx).await;
        tokio::time::advance(Duration::from_secs(600)).await;
        next_pass(&mut rx).await;
        let burst = tokio::time::timeout(Duration::from_secs(30), next_pass(&mut rx)).await;
        assert!(burst.is_err(), "missed ticks are not made up");
        node.stop();
        running.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_node_plans_nothing_until_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let node = idle_node(dir.path(), Duration::from_secs(60));
        node.store()
            .write(|c| crate::store::add_repo(c, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", None, None))
            .await
            .unwrap()
            .unwrap();
        let later = now().plus(crate::policy::Duration::from_secs(3600));
        node.pause_until(Some(later));
        let facts = node.facts(true).await.unwrap();
        assert!(facts.paused);
        assert!(plan::plan(now(), &facts, &node.schedule()).is_empty());
        node.pause_until(None);
        let facts = node.facts(false).await.unwrap();
        assert_eq!(
            plan::plan(now(), &facts, &node.schedule()),
            [Op::Sync {
                did: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".into()
            }]
        );
        // A move of the storage folder stops the plan too.
        assert!(node.start_move());
        assert!(!node.start_move(), "one move at a time");
        assert!(node.guard().await.is_err());
        let facts = node.facts(true).await.unwrap();
        assert!(plan::plan(now(), &facts, &node.schedule()).is_empty());
        node.end_move();
        assert!(node.guard().await.is_ok());
    }
}
