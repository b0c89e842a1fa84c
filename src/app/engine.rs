//! The engine the desktop app hosts in its own process: one store, one scheduler loop, and the
//! operations behind the app's commands. Screens read [`Engine::overview`] (local data and the
//! last network results, so it is fast and works offline); the loop does the network work and
//! tells the window through [`Event`]s.
//!
//! The loop, every tick or when woken ("Sync now"): refreshes the circles (every few minutes),
//! backs up each account that is due (progress as events), runs a verification round for the
//! circles (only what is due; a self-check every few hours), evaluates the circles' health
//! from public records, and raises each new alert once. Paused: does nothing; on battery with
//! "pause on battery": does nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, RwLockReadGuard};
use tokio_util::sync::CancellationToken;

use crate::engine::{Node, NodeConfig, NodeError, NodeEvent, PassOptions};
use crate::group::plan::{human_bytes, human_every, CircleState};
use crate::group::{db as gdb, CircleView, Circles, Copies, GroupError};
use crate::history;
use crate::policy::lifecycle::AckState;
use crate::policy::Timestamp;
use crate::session::{self, Session, SessionError};
use crate::store::{self, Store, StoreError};
use crate::sync::{FailureKind, SyncProgress, Syncer};
use crate::verify;

use super::alerts::{self, FlagFacts, FriendFacts, InvitationFacts, MemberFacts};
use super::dto::*;
use super::{relocate, words};

/// Move progress events, at most this often.
const PROGRESS_EVERY: StdDuration = StdDuration::from_millis(250);
/// Delivered alert keys remembered (the oldest are forgotten).
const MAX_DELIVERED: usize = 2000;

const SETTINGS_KEY: &str = "app.settings";
const WELCOMED_KEY: &str = "app.welcomed";
const DELIVERED_KEY: &str = "app.alerts";
/// The folder a move copied this store from (the copy left there can be deleted).
const PREVIOUS_DIR_KEY: &str = "app.previousDataDir";
/// History kept per account, in days: the default and the bounds.
const RETENTION_DEFAULT_DAYS: u32 = 30;
const RETENTION_MAX_DAYS: u32 = 3650;
/// The longest wait between two backups of an account, in minutes (a week).
const CHECK_EVERY_MAX_MINUTES: u32 = 10_080;

/// Why an operation failed, in words for the person.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Session(#[from] SessionError),
    #[error("{0}")]
    Group(#[from] GroupError),
    #[error("{0}")]
    Verify(#[from] verify::VerifyError),
    #[error("{0}")]
    Node(NodeError),
    /// What was asked is not possible (said in words).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Other(String),
}

impl AppError {
    /// The kind of failure, from the error's type (never from its text).
    pub fn code(&self) -> ErrorCode {
        match self {
            AppError::Session(e) => match e {
                SessionError::NotSignedIn
                | SessionError::NoSecret { .. }
                | SessionError::SessionEnded { .. } => ErrorCode::NotSignedIn,
                SessionError::LoginRefused { .. } => ErrorCode::SignInRefused,
                SessionError::NoSecretService { .. }
                | SessionError::KeyringLocked { .. }
                | SessionError::Keyring(_) => ErrorCode::Keyring,
                SessionError::Network { .. }
                | SessionError::Xrpc { .. }
                | SessionError::Identity(_)
                | SessionError::NoPds { .. } => ErrorCode::Network,
                SessionError::Store(_)
                | SessionError::SecretsFile { .. }
                | SessionError::SecretsFileOpen { .. }
                | SessionError::SecretsFileDamaged { .. } => ErrorCode::Storage,
                _ => ErrorCode::Other,
            },
            AppError::Store(_) => ErrorCode::Storage,
            AppError::Node(NodeError::Moving) => ErrorCode::Moving,
            AppError::Node(NodeError::Store(_) | NodeError::Folder { .. }) => ErrorCode::Storage,
            AppError::Invalid(_) => ErrorCode::Invalid,
            AppError::Group(_) | AppError::Verify(_) | AppError::Node(_) | AppError::Other(_) => {
                ErrorCode::Other
            }
        }
    }

    /// The error as the window receives it.
    pub fn answer(&self) -> ErrorAnswer {
        ErrorAnswer {
            code: self.code(),
            message: self.to_string(),
        }
    }
}

/// Where the engine keeps its data and which directories it asks.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub plc_url: String,
    pub resolver_url: Option<String>,
}

#[derive(Default)]
struct Live {
    notifications: Option<NotificationStatus>,
}

struct Inner {
    config: EngineConfig,
    /// The node controller: the store, the circles, the verifier and the loop.
    node: Node,
    events: broadcast::Sender<Event>,
    live: Mutex<Live>,
    serving: Mutex<Option<CancellationToken>>,
    /// The folder was fixed by the command line or the environment: it can't be moved.
    location_fixed: AtomicBool,
}

/// The engine; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn now() -> Timestamp {
    Timestamp::from_millis(chrono::Utc::now().timestamp_millis())
}

fn parse_time(t: Option<&str>) -> Option<Timestamp> {
    t.and_then(|t| Timestamp::parse(t).ok())
}

impl Engine {
    /// Opens (or creates) the store in `config.data_dir`.
    pub fn open(config: EngineConfig) -> Result<Engine, AppError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            AppError::Other(format!(
                "can't create the folder for the copies ({}): {e}",
                config.data_dir.display()
            ))
        })?;
        let mut node_config = NodeConfig::new(
            config.data_dir.clone(),
            &config.plc_url,
            config.resolver_url.as_deref(),
        );
        node_config.user_agent = concat!("p2pds-desktop/", env!("CARGO_PKG_VERSION")).into();
        node_config.on_battery = Some(super::platform::on_battery);
        let node = Node::open(node_config).map_err(node_error)?;
        let (events, _) = broadcast::channel(256);
        let engine = Engine {
            inner: Arc::new(Inner {
                config,
                node,
                events,
                live: Mutex::new(Live::default()),
                serving: Mutex::new(None),
                location_fixed: AtomicBool::new(false),
            }),
        };
        Ok(engine)
    }

    /// The node controller behind the window.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    fn store(&self) -> &Store {
        self.inner.node.store()
    }

    fn syncer(&self) -> &Syncer {
        self.inner.node.syncer()
    }

    fn circles(&self) -> &Circles {
        self.inner.node.circles()
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        match self.inner.live.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Events for the window (one receiver per forwarder).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    fn emit(&self, e: Event) {
        let _ = self.inner.events.send(e);
    }

    fn changed(&self) {
        self.emit(Event::Changed);
    }

    /// Asks the loop to run now (after "Sync now" or a change).
    pub fn wake(&self) {
        self.inner.node.wake();
    }

    /// Stops the loop and the server; returns at once (the loop ends at its next await).
    pub fn stop(&self) {
        self.inner.node.stop();
        if let Ok(mut s) = self.inner.serving.lock() {
            if let Some(t) = s.take() {
                t.cancel();
            }
        }
    }

    /// The folder the copies are kept in.
    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    /// The folder was given on the command line or in the environment: the settings say so
    /// and [`Engine::move_storage`] refuses.
    pub fn set_location_fixed(&self, fixed: bool) {
        self.inner.location_fixed.store(fixed, Ordering::Relaxed);
    }

    /// Permission to write (shared with other work): refused once a move of the storage folder
    /// has started.
    async fn guard(&self) -> Result<RwLockReadGuard<'_, ()>, AppError> {
        self.inner.node.guard().await.map_err(node_error)
    }

    /// Whether desktop notifications work here (the shell reports what it saw).
    pub fn set_notifications(&self, available: bool, reason: Option<String>) {
        let status = NotificationStatus { available, reason };
        let mut live = self.live();
        if live.notifications.as_ref() != Some(&status) {
            live.notifications = Some(status);
            drop(live);
            self.changed();
        }
    }

    // ---- reading ---------------------------------------------------------------------------

    /// Everything the main screens show. Local data only: fast, and works offline.
    pub async fn overview(&self) -> Result<Overview, AppError> {
        let now = now();
        let settings = self.settings().await?;
        let (me, welcomed, rows, open_flags) = self
            .store()
            .read(|c| {
                let open_flags = history::open_flags(c)?;
                let me = session::signed_in(c)?;
                let welcomed = gdb::meta(c, WELCOMED_KEY)?.is_some() || me.is_some();
                let mut rows = Vec::new();
                for r in store::list_repos(c)? {
                    let (images, image_bytes, _, _) = store::blob_counts(c, r.id)?;
                    let posts: i64 = c.query_row(
                        "SELECT count(*) FROM records WHERE repo_id = ?1
                         AND collection = 'app.bsky.feed.post'",
                        [r.id],
                        |x| x.get(0),
                    )?;
                    rows.push((r, images, image_bytes, posts));
                }
                Ok((me, welcomed, rows, open_flags))
            })
            .await?;
        let names: BTreeMap<String, String> = rows
            .iter()
            .filter_map(|(r, ..)| r.handle.clone().map(|h| (r.did.clone(), h)))
            .collect();
        let mut flags_of: BTreeMap<String, Vec<FriendFlag>> = BTreeMap::new();
        // The account's own status upstream is the card's state already ("gone", "deactivated").
        for (did, handle, f) in open_flags
            .into_iter()
            .filter(|(_, _, f)| !f.kind.starts_with(history::kind::ACCOUNT_PREFIX))
        {
            let name = handle.unwrap_or_else(|| short_did(&did));
            flags_of.entry(did).or_default().push(FriendFlag {
                text: flag_words(&f, &name, now),
                id: f.id,
                kind: f.kind,
                detail: f.detail,
                detected_at: f.detected_at,
            });
        }
        let mut no_room: Option<FailureKind> = None;
        let st = self.inner.node.state();
        let notifications = self.live().notifications.clone();
        let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for v in &st.circles {
            for d in &v.holding {
                holders.entry(d.clone()).or_default().push(v.name.clone());
            }
        }
        let mut friends = Vec::new();
        let mut per_friend = Vec::new();
        let mut used = 0u64;
        for (r, images, image_bytes, posts) in rows {
            let size = u64::try_from(r.bytes.max(0) + image_bytes.max(0)).unwrap_or(0);
            used += size;
            if me.as_ref().is_some_and(|m| m.did == r.did) {
                // This node's copy of its own account (to check friends' copies against).
                continue;
            }
            let name = r.handle.clone().unwrap_or_else(|| short_did(&r.did));
            let progress = st.progress.get(&r.did).map(progress_dto);
            let upstream = r.upstream_status.as_deref().unwrap_or("active");
            let state = if progress.is_some() {
                if r.head.is_none() {
                    FriendState::FirstBackup
                } else {
                    FriendState::Syncing
                }
            } else if upstream == "deactivated" {
                FriendState::Deactivated
            } else if upstream != "active" {
                FriendState::Gone
            } else if r.state == "error" {
                FriendState::Failing
            } else if r.head.is_none() {
                FriendState::FirstBackup
            } else {
                FriendState::Ok
            };
            let last = parse_time(r.last_sync_at.as_deref());
            let kind = r.error_code.as_deref().and_then(FailureKind::parse);
            let problem = (state == FriendState::Failing)
                .then(|| r.error.clone())
                .flatten()
                .map(|e| plain_error(kind, &humanize(&e, &names)));
            if let Some(k) = kind.filter(|k| state == FriendState::Failing && k.is_no_room()) {
                no_room.get_or_insert(k);
            }
            per_friend.push(StorageItem {
                name: name.clone(),
                bytes: size,
            });
            friends.push(Friend {
                did: r.did.clone(),
                handle: r.handle.clone(),
                status_text: words::friend_status(
                    state,
                    last,
                    st.backoff.get(&r.did).map(|b| b.since),
                    now,
                ),
                name,
                state,
                last_backup_at: r.last_sync_at.clone(),
                size_bytes: size,
                posts: u64::try_from(posts).unwrap_or(0),
                images: u64::try_from(images).unwrap_or(0),
                progress,
                problem,
                circles: holders.get(&r.did).cloned().unwrap_or_default(),
                flags: flags_of.remove(&r.did).unwrap_or_default(),
                can_restore: r.head.is_some(),
            });
        }
        friends.sort_by_key(|f| f.name.to_lowercase());
        let my_did = me.as_ref().map(|m| m.did.clone()).unwrap_or_default();
        let circles: Vec<CircleCard> = st
            .circles
            .iter()
            .map(|v| circle_card(v, &my_did, st.health.get(&v.uri).map(|h| h.state.clone())))
            .collect();
        let invitations: Vec<InvitationCard> = st.invitations.iter().map(invitation_card).collect();
        let active = circles
            .iter()
            .find(|c| c.state == "active" && c.health.is_some());
        let headline = words::headline(
            &friends,
            active.map(|c| {
                (
                    c.health.as_deref().unwrap_or("unknown"),
                    c.min_copies,
                    st.health_checked_at,
                )
            }),
            st.paused_until,
            now,
        );
        let attention = friends.iter().any(|f| {
            matches!(
                f.state,
                FriendState::Failing | FriendState::Gone | FriendState::Deactivated
            ) || !f.flags.is_empty()
        }) || !invitations.is_empty()
            || circles
                .iter()
                .any(|c| matches!(c.health.as_deref(), Some("degraded" | "at-risk" | "failed")));
        let tray = if !st.progress.is_empty() {
            TrayState::Syncing
        } else if attention {
            TrayState::NeedsAttention
        } else {
            TrayState::Ok
        };
        per_friend.sort_by_key(|f| std::cmp::Reverse(f.bytes));
        Ok(Overview {
            me: me.map(|m| Me {
                did: m.did,
                handle: m.handle,
            }),
            welcomed,
            friends,
            circles,
            invitations,
            tray,
            headline,
            paused_until: st.paused_until.filter(|u| *u > now).map(|u| u.to_string()),
            notifications: notifications.unwrap_or(NotificationStatus {
                available: true,
                reason: None,
            }),
            storage: Storage {
                limit_text: storage_limit_text(used, settings.storage_limit_bytes, no_room),
                used_bytes: used,
                limit_bytes: settings.storage_limit_bytes,
                per_friend,
                retention_days: settings.retention_days,
            },
        })
    }

    /// A circle's dashboard, computed now from its members' public records.
    pub async fn health(&self, uri: &str) -> Result<Health, AppError> {
        let now = now();
        let (report, obs, warnings) =
            verify::report::compliance_inputs(self.circles(), uri, now).await?;
        let names = self.names().await;
        let name_of = |did: &str| names.get(did).cloned().unwrap_or_else(|| short_did(did));
        let mut reasons = Vec::new();
        for c in report
            .conditions
            .iter()
            .filter(|c| c.status != crate::policy::report::Status::True)
        {
            reasons.push(humanize(&c.message, &names));
        }
        for s in &report.subjects {
            for c in s
                .conditions
                .iter()
                .filter(|c| c.status == crate::policy::report::Status::False)
            {
                reasons.push(humanize(&c.message, &names));
            }
        }
        for n in &report.nodes {
            for c in n
                .conditions
                .iter()
                .filter(|c| c.status == crate::policy::report::Status::False)
            {
                reasons.push(humanize(&c.message, &names));
            }
        }
        reasons.extend(warnings.iter().map(|w| humanize(w, &names)));
        reasons.dedup();
        let since = now.minus(crate::policy::Duration::from_secs(7 * 86_400));
        let members: Vec<MemberHealth> = report
            .nodes
            .iter()
            .map(|n| {
                let mut checks: Vec<CheckPoint> = obs
                    .verifications
                    .iter()
                    .filter(|v| v.node == n.node && v.at >= since)
                    .map(|v| CheckPoint {
                        at: v.at.to_string(),
                        outcome: crate::verify::db::outcome_str(v.outcome).to_string(),
                    })
                    .collect();
                checks.sort_by(|a, b| a.at.cmp(&b.at));
                checks.dedup();
                let passed = checks.iter().filter(|c| c.outcome == "pass").count();
                let words = match n.state.as_str() {
                    "ok" if checks.is_empty() => "keeps its copies; not checked yet".to_string(),
                    "ok" => format!(
                        "keeps its copies; {passed} of {} checks passed",
                        checks.len()
                    ),
                    "recovering" => "catching up".to_string(),
                    "degraded" => "some checks of its copies failed".to_string(),
                    "at-risk" => "checks of its copies keep failing".to_string(),
                    "failed" => "has not been heard from for too long".to_string(),
                    "abandoned" => "has been silent for weeks".to_string(),
                    other => other.replace('-', " "),
                };
                MemberHealth {
                    did: n.member.clone(),
                    name: name_of(&n.member),
                    state: n.state.as_str().to_string(),
                    words,
                    last_seen: n.last_seen.map(|t| t.to_string()),
                    checks,
                }
            })
            .collect();
        let subjects: BTreeSet<String> = report.subjects.iter().map(|s| s.did.clone()).collect();
        let (storage, timeline) = self.local_history(&subjects, &names).await?;
        let state = report.state.as_str().to_string();
        let sentence = health_sentence(&state, report.subjects.len(), report.policy.min_copies);
        Ok(Health {
            uri: uri.to_string(),
            name: report.policy.name.clone(),
            state,
            sentence,
            reasons,
            members,
            storage,
            timeline,
            evaluated_at: report.evaluated_at.to_string(),
        })
    }

    /// Names (handles) of every account this node knows.
    async fn names(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Ok((repos, contacts, me)) = self
            .store()
            .read(|c| {
                Ok((
                    store::list_repos(c)?,
                    gdb::contacts(c)?,
                    session::signed_in(c)?,
                ))
            })
            .await
        {
            for (did, h) in contacts {
                if let Some(h) = h {
                    out.insert(did, h);
                }
            }
            for r in repos {
                if let Some(h) = r.handle {
                    out.insert(r.did, h);
                }
            }
            if let Some(m) = me {
                out.insert(m.did, "you".to_string());
            }
        }
        out
    }

    /// Storage held per account and the recent events about them, from the store.
    async fn local_history(
        &self,
        subjects: &BTreeSet<String>,
        names: &BTreeMap<String, String>,
    ) -> Result<(Vec<StorageItem>, Vec<TimelineEvent>), AppError> {
        let subjects = subjects.clone();
        let names = names.clone();
        Ok(self
            .store()
            .read(move |c| {
                let name_of = |did: &str| names.get(did).cloned().unwrap_or_else(|| short_did(did));
                let mut storage = Vec::new();
                let mut timeline = Vec::new();
                for r in store::list_repos(c)? {
                    if !subjects.contains(&r.did) {
                        continue;
                    }
                    let (_, image_bytes, _, _) = store::blob_counts(c, r.id)?;
                    storage.push(StorageItem {
                        name: name_of(&r.did),
                        bytes: u64::try_from(r.bytes.max(0) + image_bytes.max(0)).unwrap_or(0),
                    });
                    let mut stmt = c.prepare(
                        "SELECT synced_at, creates, updates, deletes FROM commits
                         WHERE repo_id = ?1 ORDER BY synced_at DESC LIMIT 10",
                    )?;
                    let rows = stmt.query_map([r.id], |x| {
                        Ok((
                            x.get::<_, String>(0)?,
                            x.get::<_, i64>(1)?,
                            x.get::<_, i64>(2)?,
                            x.get::<_, i64>(3)?,
                        ))
                    })?;
                    for row in rows {
                        let (at, cr, up, de) = row?;
                        let mut parts = Vec::new();
                        if cr > 0 {
                            parts.push(format!("{cr} new"));
                        }
                        if up > 0 {
                            parts.push(format!("{up} changed"));
                        }
                        if de > 0 {
                            parts.push(format!("{de} deleted"));
                        }
                        let what = if parts.is_empty() {
                            "no change".to_string()
                        } else {
                            parts.join(", ")
                        };
                        timeline.push(TimelineEvent {
                            at,
                            kind: "sync".into(),
                            text: format!("Backed up {} ({what})", name_of(&r.did)),
                        });
                    }
                }
                for v in verify::db::results_since(c, "")?.into_iter().rev().take(40) {
                    if !subjects.contains(&v.subject) {
                        continue;
                    }
                    let outcome = match v.outcome {
                        crate::policy::observations::Outcome::Pass => "passed",
                        crate::policy::observations::Outcome::Fail => "failed",
                        crate::policy::observations::Outcome::Unreachable => "got no answer",
                    };
                    timeline.push(TimelineEvent {
                        at: v.at.clone(),
                        kind: "check".into(),
                        text: format!(
                            "Checked {}'s copy of {}'s account: {outcome}",
                            name_of(&v.target),
                            name_of(&v.subject)
                        ),
                    });
                }
                timeline.sort_by(|a, b| b.at.cmp(&a.at));
                timeline.truncate(50);
                storage.sort_by_key(|s| std::cmp::Reverse(s.bytes));
                Ok((storage, timeline))
            })
            .await?)
    }

    // ---- acting ------------------------------------------------------------------------------

    /// Signs in (the app password goes to the OS keyring).
    pub async fn sign_in(&self, handle: &str, password: &str) -> Result<Overview, AppError> {
        let _work = self.guard().await?;
        let handle = handle.trim().trim_start_matches('@');
        let syncer = self.syncer();
        let session = Session::login(
            syncer.http.clone(),
            &syncer.resolver,
            &syncer.store,
            handle,
            password,
        )
        .await?;
        self.inner.node.set_session(Some(session));
        self.set_meta(WELCOMED_KEY, "1").await?;
        self.inner.node.refresh_circles(true).await;
        self.wake();
        self.overview().await
    }

    /// Goes on without an account: only back up friends.
    pub async fn skip_sign_in(&self) -> Result<Overview, AppError> {
        let _work = self.guard().await?;
        self.set_meta(WELCOMED_KEY, "1").await?;
        self.overview().await
    }

    pub async fn sign_out(&self) -> Result<Overview, AppError> {
        let _work = self.guard().await?;
        let syncer = self.syncer();
        Session::logout(syncer.http.clone(), &syncer.store).await?;
        self.inner.node.set_session(None);
        self.changed();
        self.overview().await
    }

    /// Starts backing up an account (a handle or DID); the first copy starts at once.
    pub async fn add_friend(&self, who: &str) -> Result<Overview, AppError> {
        let who = who.trim().trim_start_matches('@');
        if who.is_empty() {
            return Err(AppError::Invalid(
                "type your friend's handle, e.g. alice.bsky.social".into(),
            ));
        }
        let _work = self.guard().await?;
        let doc = self
            .syncer()
            .resolver
            .resolve_account(who)
            .await
            .map_err(|e| AppError::Other(format!("couldn't find {who}: {e}")))?;
        let (did, handle, pds) = (doc.did.clone(), doc.handle.clone(), doc.pds.clone());
        self.store()
            .write(move |c| store::add_repo(c, &did, handle.as_deref(), pds.as_deref()))
            .await??;
        self.changed();
        self.wake();
        self.overview().await
    }

    /// Stops backing up an account and deletes its copy.
    pub async fn remove_friend(&self, did: &str) -> Result<Overview, AppError> {
        let _work = self.guard().await?;
        let d = did.to_string();
        self.store()
            .write(move |c| store::remove_repo(c, &d))
            .await??;
        self.changed();
        self.overview().await
    }

    pub async fn pause(&self, minutes: u64) -> Result<Overview, AppError> {
        let until = now().plus(crate::policy::Duration::from_secs(
            minutes.saturating_mul(60),
        ));
        self.inner.node.pause_until(Some(until));
        self.changed();
        self.overview().await
    }

    pub async fn resume(&self) -> Result<Overview, AppError> {
        self.inner.node.pause_until(None);
        self.changed();
        self.overview().await
    }

    async fn session(&self) -> Result<Arc<Session>, AppError> {
        if let Some(s) = self.inner.node.session().await {
            return Ok(s);
        }
        // Not signed in (or the keyring refused): the reason, in words.
        let syncer = self.syncer();
        Ok(Session::resume(syncer.http.clone(), &syncer.store).await?)
    }

    /// Whether the signed-in account has a recovery key kept here that its identity lists.
    pub async fn recovery_key_status(&self) -> Result<RecoveryKeyStatus, AppError> {
        let Some(me) = self.store().read(session::signed_in).await? else {
            return Ok(words::recovery_key_status("unavailable"));
        };
        if !me.did.starts_with("did:plc:") {
            return Ok(words::recovery_key_status("unavailable"));
        }
        let Some(key) = crate::recovery::kept_key(&me.did).await? else {
            return Ok(words::recovery_key_status("none"));
        };
        let syncer = self.syncer();
        Ok(
            match crate::recovery::is_registered(&syncer.http, &syncer.resolver, &me.did, &key)
                .await
            {
                Ok(true) => words::recovery_key_status("registered"),
                Ok(false) => words::recovery_key_status("held"),
                Err(_) => words::recovery_key_status("unknown"),
            },
        )
    }

    /// Sets up a recovery key for the signed-in account: without `code`, its server emails a
    /// confirmation code; with it, the key is added to the identity. `password` is the main
    /// password (used for this call only, never kept).
    pub async fn add_recovery_key(
        &self,
        password: &str,
        code: Option<&str>,
    ) -> Result<RecoveryKeyStatus, AppError> {
        if password.is_empty() {
            return Err(AppError::Invalid(
                "Type your account's main password (the one you sign in to Bluesky with, not an app password).".into(),
            ));
        }
        let me = self
            .store()
            .read(session::signed_in)
            .await?
            .ok_or_else(|| {
                AppError::Other("Sign in first: a recovery key protects your own account.".into())
            })?;
        let code = code.map(str::trim).filter(|c| !c.is_empty());
        let syncer = self.syncer();
        let done =
            crate::recovery::register(&syncer.http, &syncer.resolver, &me.did, password, code)
                .await
                .map_err(|e| AppError::Other(words::recovery_key_error(&e.to_string())))?;
        let mut status = words::recovery_key_status(match done.state.as_str() {
            "code-sent" => "code-sent",
            _ => "registered",
        });
        status.code = done.code;
        Ok(status)
    }

    /// Creates a circle with friends (DIDs), each account kept by `min_copies` of them.
    pub async fn create_circle(
        &self,
        name: &str,
        members: &[String],
        min_copies: Option<u32>,
    ) -> Result<Overview, AppError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(AppError::Other("give the circle a name".into()));
        }
        if members.is_empty() {
            return Err(AppError::Invalid(
                "pick at least one friend for the circle".into(),
            ));
        }
        let _work = self.guard().await?;
        let s = self.session().await?;
        self.circles()
            .create(&s, name, None, members, min_copies, Default::default())
            .await?;
        self.inner.node.refresh_circles(false).await;
        self.wake();
        self.overview().await
    }

    pub async fn accept(&self, uri: &str) -> Result<Overview, AppError> {
        let _work = self.guard().await?;
        let s = self.session().await?;
        self.circles().accept(&s, uri).await?;
        self.inner.node.refresh_circles(false).await;
        self.wake();
        self.overview().await
    }

    pub async fn decline(&self, uri: &str) -> Result<Overview, AppError> {
        let _work = self.guard().await?;
        let s = self.session().await?;
        self.circles().decline(&s, uri, None).await?;
        self.inner.node.refresh_circles(false).await;
        self.overview().await
    }

    pub async fn leave(&self, uri: &str, keep_copies: bool) -> Result<Overview, AppError> {
        let _work = self.guard().await?;
        let s = self.session().await?;
        let copies = if keep_copies {
            Copies::Keep
        } else {
            Copies::Delete
        };
        self.circles().leave(&s, uri, copies).await?;
        self.inner.node.refresh_circles(false).await;
        self.overview().await
    }

    // ---- history, loss and giving accounts back -------------------------------------------------

    /// The person has seen what happened to an account and accepts it: its open flags are
    /// cleared, and the versions from before become ordinary history (kept for the retention
    /// window only).
    pub async fn dismiss_flags(&self, did: &str) -> Result<Overview, AppError> {
        let _work = self.guard().await?;
        let d = did.to_string();
        self.store()
            .write(move |c| -> Result<usize, AppError> {
                let id = history::repo_id(c, &d).map_err(|e| AppError::Other(e.to_string()))?;
                Ok(history::dismiss(c, id)?)
            })
            .await??;
        self.changed();
        self.overview().await
    }

    fn gc_options(settings: &Settings) -> history::gc::GcOptions {
        history::gc::GcOptions {
            retention: StdDuration::from_secs(u64::from(settings.retention_days) * 86_400),
            now: chrono::Utc::now(),
        }
    }

    /// What collecting old versions would free now (nothing is changed).
    pub async fn reclaimable(&self) -> Result<Collection, AppError> {
        let opts = Self::gc_options(&self.settings().await?);
        let blobs = self.syncer().blob_dir();
        let report = self
            .store()
            .read(move |c| history::gc::plan(c, &blobs, &opts))
            .await?;
        Ok(collection(&report))
    }

    /// Removes the versions older than the retention window (never the newest, never one kept
    /// because of an open flag) and what only they needed; then gives the space back.
    pub async fn collect_garbage(&self) -> Result<Collection, AppError> {
        let _work = self.guard().await?;
        let report = self
            .inner
            .node
            .collect_garbage_now()
            .await
            .map_err(AppError::Other)?;
        self.changed();
        Ok(collection(&report))
    }

    /// What the restore dialog offers for an account: the version it would use and why, and
    /// every kept version.
    pub async fn restore_choice(&self, did: &str) -> Result<RestoreChoice, AppError> {
        let d = did.to_string();
        let (picked, states, handle) = self
            .store()
            .read(move |c| {
                let run = || -> Result<_, history::HistoryError> {
                    let picked = history::pick(c, &d, None)?;
                    let states = history::states(c, picked.repo_id)?;
                    let handle: Option<String> = c.query_row(
                        "SELECT handle FROM repos WHERE id = ?1",
                        [picked.repo_id],
                        |r| r.get(0),
                    )?;
                    Ok((picked, states, handle))
                };
                Ok(run())
            })
            .await?
            .map_err(history_error)?;
        let kept = |s: &history::State| KeptVersion {
            rev: s.rev.clone(),
            time: s.time.clone(),
            records: s.records.and_then(|n| u64::try_from(n).ok()),
        };
        let name = handle.unwrap_or_else(|| short_did(did));
        Ok(RestoreChoice {
            did: did.to_string(),
            suggested: kept(&picked.state),
            why: restore_why(&picked.why, &name),
            versions: states.iter().rev().map(kept).collect(),
            name,
        })
    }

    /// Gives an account back: writes the chosen kept version (default: the last good one) to
    /// a new server, with its images (see `crate::restore`). Progress goes out as
    /// [`Event::Restoring`]. The passwords go to the servers only.
    pub async fn restore_account(&self, input: RestoreInput) -> Result<RestoreOutcome, AppError> {
        let _work = self.guard().await?;
        let to_pds = input.to_pds.trim().to_string();
        if !(to_pds.starts_with("https://") || to_pds.starts_with("http://")) {
            return Err(AppError::Invalid(
                "Write the new server's full address, starting with https://".into(),
            ));
        }
        let handle = input.handle.trim().trim_start_matches('@').to_string();
        if handle.is_empty() || input.password.is_empty() {
            return Err(AppError::Invalid(
                "The handle and the password of the account on the new server are needed.".into(),
            ));
        }
        let at = match input.rev.as_deref().filter(|r| !r.is_empty()) {
            Some(rev) => Some(
                crate::repo::tid::timestamp_micros(rev)
                    .and_then(|m| i64::try_from(m).ok())
                    .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_micros)
                    .ok_or_else(|| AppError::Other("That version is not known.".into()))?,
            ),
            None => None,
        };
        let blank = |s: Option<String>| s.filter(|v| !v.trim().is_empty());
        let recovery_key = match blank(input.recovery_key) {
            Some(code) => Some(
                crate::recovery::RecoveryKey::from_code(&code)
                    .map_err(|e| AppError::Other(format!("{e}.")))?,
            ),
            None => {
                let syncer = self.syncer();
                crate::recovery::held_key(&syncer.http, &syncer.resolver, &input.did).await
            }
        };
        let req = crate::restore::RestoreRequest {
            did: input.did.clone(),
            at,
            to_pds,
            handle,
            password: input.password,
            old_password: blank(input.old_password),
            email: blank(input.email).map(|e| e.trim().to_string()),
            invite_code: blank(input.invite_code).map(|e| e.trim().to_string()),
            plc_token: blank(input.plc_token).map(|t| t.trim().to_string()),
            recovery_key,
        };
        let engine = self.clone();
        let did = input.did.clone();
        let last_emit: Mutex<Option<std::time::Instant>> = Mutex::new(None);
        let progress = move |p: crate::restore::RestoreProgress| {
            use crate::restore::RestoreProgress as P;
            let (phase, bytes, images_done, images_total, always) = match p {
                P::Preparing => ("preparing", 0, 0, 0, true),
                P::Account => ("account", 0, 0, 0, true),
                P::Importing { bytes } => ("records", bytes, 0, 0, false),
                P::Blobs { done, total } => ("images", 0, done, total, done == total),
            };
            let mut last = match last_emit.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if !always && last.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
            engine.emit(Event::Restoring {
                did: did.clone(),
                step: RestoreStep {
                    phase: phase.into(),
                    bytes,
                    images_done,
                    images_total,
                },
            });
        };
        let names = self.names().await;
        let report = crate::restore::restore(self.syncer(), &req, &progress)
            .await
            .map_err(|e| match e {
                crate::restore::RestoreError::NeedsIdentityStep(m) => AppError::Other(m),
                crate::restore::RestoreError::History(h) => history_error(h),
                other => AppError::Other(humanize(&other.to_string(), &names)),
            })?;
        let name = names
            .get(&report.did)
            .cloned()
            .unwrap_or_else(|| short_did(&report.did));
        Ok(RestoreOutcome {
            complete: report.complete(),
            did: report.did,
            why: restore_why(&report.why, &name),
            name,
            time: report.time,
            to_pds: report.to_pds,
            records: report.records,
            images: report.blobs_uploaded,
            images_total: report.blobs_referenced,
            not_restored: report
                .not_restored
                .into_iter()
                .map(|n| NotRestoredItem {
                    what: n.what,
                    reason: n.reason,
                })
                .collect(),
            identity_moved: report.identity_moved,
            next_steps: report.next_steps.clone(),
        })
    }

    // ---- settings ------------------------------------------------------------------------------

    pub async fn settings(&self) -> Result<Settings, AppError> {
        let (stored, endpoint, previous) = self
            .store()
            .read(|c| {
                Ok((
                    gdb::meta(c, SETTINGS_KEY)?,
                    gdb::meta(c, "endpoint")?,
                    gdb::meta(c, PREVIOUS_DIR_KEY)?,
                ))
            })
            .await?;
        let data_dir = self.data_dir();
        let mut s = StoredSettings::parse(stored.as_deref()).into_settings(data_dir);
        s.endpoint = endpoint;
        s.data_dir_fixed = self.inner.location_fixed.load(Ordering::Relaxed);
        s.old_data_dir = previous
            .map(PathBuf::from)
            .filter(|p| relocate::has_store(p) && !relocate::same_dir(p, data_dir))
            .map(|p| p.display().to_string());
        Ok(s)
    }

    pub async fn save_settings(&self, s: Settings) -> Result<Settings, AppError> {
        let _work = self.guard().await?;
        if !(1..=CHECK_EVERY_MAX_MINUTES).contains(&s.check_every_minutes) {
            return Err(AppError::Invalid(
                "check for new posts at least once a week (1 to 10080 minutes)".into(),
            ));
        }
        if !(1..=RETENTION_MAX_DAYS).contains(&s.retention_days) {
            return Err(AppError::Invalid(format!(
                "keep older versions for 1 to {RETENTION_MAX_DAYS} days (10 years at most); {} days is not possible",
                s.retention_days
            )));
        }
        if s.serve {
            s.listen.parse::<std::net::SocketAddr>().map_err(|_| {
                AppError::Other(format!(
                    "{:?} is not an address to listen on: write it like 0.0.0.0:2585",
                    s.listen
                ))
            })?;
        }
        let endpoint = s
            .endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty());
        self.circles().set_endpoint(endpoint).await?;
        // Keys this version does not know (written by a newer one) are kept.
        let before = self.store().read(|c| gdb::meta(c, SETTINGS_KEY)).await?;
        let mut stored = StoredSettings::from(&s);
        stored.other = StoredSettings::parse(before.as_deref()).other;
        let text = serde_json::to_string(&stored)
            .map_err(|e| AppError::Other(format!("saving the settings: {e}")))?;
        self.set_meta(SETTINGS_KEY, &text).await?;
        super::platform::set_autostart(s.start_at_login).map_err(AppError::Other)?;
        self.apply_serving(&s).await?;
        self.changed();
        self.settings().await
    }

    async fn set_meta(&self, key: &'static str, value: &str) -> Result<(), AppError> {
        let v = value.to_string();
        self.store()
            .write(move |c| gdb::set_meta(c, key, &v))
            .await??;
        Ok(())
    }

    /// Starts or stops the server for peers to match the settings.
    async fn apply_serving(&self, s: &Settings) -> Result<(), AppError> {
        let old = match self.inner.serving.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(t) = old {
            t.cancel();
        }
        if !s.serve {
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(&s.listen)
            .await
            .map_err(|e| {
                AppError::Other(format!(
                    "can't serve on {}: {e} (is another program using it?)",
                    s.listen
                ))
            })?;
        let token = CancellationToken::new();
        let t = token.clone();
        let store = self.store().clone();
        let blobs = self.syncer().blob_dir();
        tokio::spawn(async move {
            let _ = crate::serve::serve(
                listener,
                store,
                blobs,
                crate::serve::ServeConfig::default(),
                async move { t.cancelled().await },
            )
            .await;
        });
        if let Ok(mut g) = self.inner.serving.lock() {
            *g = Some(token);
        }
        Ok(())
    }

    // ---- the storage folder ----------------------------------------------------------------------

    /// Copies the store and the image files to `to` (a full path; `~` is the home folder),
    /// checks the copy, and returns; the folder the copies were in is left as it was (the copy
    /// records it, so the settings can offer to delete it once the app runs from `to`).
    ///
    /// The engine's work pauses first (the loop finishes its current step, the window's actions
    /// finish), and after a successful move stays paused: the app is meant to restart at `to`
    /// now. A failed move removes what it wrote and resumes.
    pub async fn move_storage(&self, to: &str) -> Result<MoveReport, AppError> {
        if self.inner.location_fixed.load(Ordering::Relaxed) {
            return Err(AppError::Other(
                "The folder is set when P2PDS is started (--data-dir or P2PDS_DATA_DIR), so it can't be changed here.".into(),
            ));
        }
        let home = directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf());
        let target = relocate::target_path(to, home.as_deref()).map_err(AppError::Other)?;
        relocate::check_target(self.data_dir(), &target).map_err(AppError::Other)?;
        if !self.inner.node.start_move() {
            return Err(AppError::Other(
                "P2PDS is already moving your copies. Wait until it is done.".into(),
            ));
        }
        let result = self.copy_storage(target).await;
        if result.is_err() {
            self.inner.node.end_move();
        }
        self.changed();
        result
    }

    /// Resumes the work a successful [`Engine::move_storage`] paused, when the app will not
    /// restart at the new place after all.
    pub fn cancel_move(&self) {
        self.inner.node.end_move();
    }

    fn emit_move(&self, phase: &str, done_bytes: u64, total_bytes: u64) {
        self.emit(Event::Moving {
            progress: MoveProgress {
                phase: phase.into(),
                done_bytes,
                total_bytes,
            },
        });
    }

    async fn copy_storage(&self, target: PathBuf) -> Result<MoveReport, AppError> {
        self.emit_move("waiting", 0, 0);
        // Alone: the loop's pass and the window's actions have finished, and wait.
        let _work = self.inner.node.exclusive().await;
        let stopped =
            || AppError::Other("The move stopped unexpectedly. Nothing was moved.".into());
        let from = self.data_dir().to_path_buf();
        let plan = {
            let (f, t) = (from.clone(), target.clone());
            tokio::task::spawn_blocking(move || relocate::prepare(&f, &t, &relocate::free_space))
                .await
                .map_err(|_| stopped())?
                .map_err(AppError::Other)?
        };
        let total = plan.total_bytes();
        self.emit_move("copying", 0, total);
        let copied = async {
            let p = plan.clone();
            let counts = self
                .store()
                .write(move |c| relocate::snapshot(c, &p))
                .await?
                .map_err(AppError::Other)?;
            self.emit_move("copying", plan.db_bytes, total);
            let (engine, p) = (self.clone(), plan.clone());
            tokio::task::spawn_blocking(move || {
                let mut last = std::time::Instant::now();
                relocate::copy_blobs(&p, &mut |done| {
                    if last.elapsed() >= PROGRESS_EVERY {
                        last = std::time::Instant::now();
                        engine.emit_move("copying", done, total);
                    }
                })?;
                engine.emit_move("checking", total, total);
                relocate::finish(&p, &counts, PREVIOUS_DIR_KEY)
            })
            .await
            .map_err(|_| stopped())?
            .map_err(AppError::Other)
        }
        .await;
        match copied {
            Ok((bytes, files)) => Ok(MoveReport {
                from: from.display().to_string(),
                to: target.display().to_string(),
                bytes,
                files,
            }),
            Err(e) => {
                let p = plan.clone();
                let _ = tokio::task::spawn_blocking(move || relocate::cleanup(&p)).await;
                Err(e)
            }
        }
    }

    /// Deletes the copy a move left in the old folder (only P2PDS's own files there, only while
    /// it still holds a store and is not the folder in use).
    pub async fn delete_old_copy(&self) -> Result<Settings, AppError> {
        let _work = self.guard().await?;
        let previous = self
            .store()
            .read(|c| gdb::meta(c, PREVIOUS_DIR_KEY))
            .await?
            .ok_or_else(|| AppError::Other("There is no old copy to delete.".into()))?;
        let (old, current) = (PathBuf::from(previous), self.data_dir().to_path_buf());
        tokio::task::spawn_blocking(move || relocate::delete_copy(&old, &current))
            .await
            .map_err(|_| AppError::Other("Deleting the old copy stopped unexpectedly.".into()))?
            .map_err(AppError::Other)?;
        self.store()
            .write(|c| gdb::delete_meta(c, PREVIOUS_DIR_KEY))
            .await??;
        self.changed();
        self.settings().await
    }

    // ---- the loop --------------------------------------------------------------------------------

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
        tokio::select! {
            _ = self.inner.node.run() => {}
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
    async fn raise_alerts(&self) {
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

/// The settings as stored: JSON in `group_meta` under [`SETTINGS_KEY`] (the endpoint lives with
/// the circles' data). Library code outside the app reads `retentionDays` and
/// `storageLimitBytes` from it: keep those names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct StoredSettings {
    storage_limit_bytes: Option<u64>,
    start_at_login: bool,
    check_every_minutes: u32,
    pause_on_battery: bool,
    serve: bool,
    listen: String,
    retention_days: u32,
    /// Keys this version does not know, kept as they were.
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

impl Default for StoredSettings {
    fn default() -> Self {
        StoredSettings {
            storage_limit_bytes: None,
            start_at_login: false,
            check_every_minutes: 30,
            pause_on_battery: false,
            serve: false,
            listen: "0.0.0.0:2585".into(),
            retention_days: RETENTION_DEFAULT_DAYS,
            other: serde_json::Map::new(),
        }
    }
}

impl StoredSettings {
    /// The stored JSON; the defaults when there is none or it can't be read.
    fn parse(text: Option<&str>) -> StoredSettings {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    fn into_settings(self, data_dir: &std::path::Path) -> Settings {
        Settings {
            data_dir: data_dir.display().to_string(),
            data_dir_fixed: false,
            old_data_dir: None,
            storage_limit_bytes: self.storage_limit_bytes,
            retention_days: self.retention_days.clamp(1, RETENTION_MAX_DAYS),
            start_at_login: self.start_at_login,
            check_every_minutes: self.check_every_minutes.clamp(1, CHECK_EVERY_MAX_MINUTES),
            pause_on_battery: self.pause_on_battery,
            serve: self.serve,
            listen: self.listen,
            endpoint: None,
        }
    }
}

impl From<&Settings> for StoredSettings {
    fn from(s: &Settings) -> Self {
        StoredSettings {
            storage_limit_bytes: s.storage_limit_bytes,
            start_at_login: s.start_at_login,
            check_every_minutes: s.check_every_minutes.clamp(1, CHECK_EVERY_MAX_MINUTES),
            pause_on_battery: s.pause_on_battery,
            serve: s.serve,
            listen: s.listen.clone(),
            retention_days: s.retention_days.clamp(1, RETENTION_MAX_DAYS),
            other: serde_json::Map::new(),
        }
    }
}

/// "did:plc:abcd…" for an account with no handle.
/// A flag in words, for the friend called `name`.
fn flag_words(f: &history::Flag, name: &str, now: Timestamp) -> String {
    let detected = parse_time(Some(&f.detected_at));
    words::flag_text(&f.kind, name, &f.detail, detected, now)
}

fn node_error(e: NodeError) -> AppError {
    match e {
        NodeError::Store(e) => AppError::Store(e),
        other => AppError::Node(other),
    }
}

/// A backup's progress as the window shows it.
fn progress_dto(p: &SyncProgress) -> Progress {
    let mut out = Progress {
        phase: "checking".into(),
        records: 0,
        bytes: 0,
        images_done: 0,
        images_total: 0,
    };
    match p {
        SyncProgress::Checking => {}
        SyncProgress::Downloading { bytes, .. } => {
            out.phase = "downloading".into();
            out.bytes = *bytes;
        }
        SyncProgress::Ingesting(crate::sync::ingest::IngestProgress::Blocks { blocks, bytes }) => {
            out.phase = "verifying".into();
            out.records = *blocks;
            out.bytes = *bytes;
        }
        SyncProgress::Ingesting(crate::sync::ingest::IngestProgress::Verifying) => {
            out.phase = "verifying".into();
        }
        SyncProgress::Blobs { done, total } => {
            out.phase = "images".into();
            out.images_done = *done;
            out.images_total = *total;
        }
    }
    out
}

fn short_did(did: &str) -> String {
    let tail = did.rsplit(':').next().unwrap_or(did);
    format!("account {}…", tail.chars().take(6).collect::<String>())
}

/// Replaces DIDs in a message with names.
fn humanize(message: &str, names: &BTreeMap<String, String>) -> String {
    let mut out = message.to_string();
    for (did, name) in names {
        out = out.replace(did.as_str(), name);
    }
    out
}

/// A collection's figures in words.
fn collection(r: &history::gc::GcReport) -> Collection {
    let bytes = r.reclaimable_bytes;
    let text = match (r.dry_run, bytes) {
        (true, 0) => {
            "Nothing to free: every version kept is still within the time you chose.".to_string()
        }
        (true, b) => format!(
            "About {} can be freed: versions older than {} days that are no longer needed.",
            human_bytes(b),
            r.retention_days.round()
        ),
        (false, 0) => "Nothing needed freeing.".to_string(),
        (false, b) => format!(
            "Freed {}: {} older {} removed.",
            human_bytes(b),
            r.states_removed,
            if r.states_removed == 1 {
                "version"
            } else {
                "versions"
            }
        ),
    };
    Collection {
        dry_run: r.dry_run,
        bytes,
        versions: r.states_removed,
        images: r.blob_files_removed,
        text,
    }
}

/// Why a version is the one a restore uses, in words for the dialog.
fn restore_why(why: &str, name: &str) -> String {
    match why.strip_prefix("the last good version, from before: ") {
        Some(what) => format!("It is the last version from before this happened: {what}."),
        None if why == "the newest version" => format!(
            "It is the newest copy of {name}'s account; nothing suggests anything was lost."
        ),
        None => format!("{}.", why),
    }
}

/// A history error in words.
fn history_error(e: history::HistoryError) -> AppError {
    match e {
        history::HistoryError::Unknown(_) => {
            AppError::Other("This account is not backed up on this computer.".into())
        }
        history::HistoryError::Empty(_) => AppError::Other(
            "There is no verified copy of this account yet: wait for the first backup.".into(),
        ),
        history::HistoryError::NothingBefore { .. } => AppError::Other(
            "That version is no longer kept: pick another one from the list.".into(),
        ),
        history::HistoryError::Store(s) => AppError::Store(s),
    }
}

/// What the storage section says about the limit: nothing while there is room. `no_room` is
/// the kind of a backup that did not fit, if one did not.
fn storage_limit_text(
    used: u64,
    limit: Option<u64>,
    no_room: Option<FailureKind>,
) -> Option<String> {
    match (limit, no_room) {
        (_, Some(FailureKind::DiskFull)) => Some(
            "The disk is full: some backups are waiting for room. Free some space on it, or move the copies to a larger disk in Settings."
                .into(),
        ),
        (Some(l), Some(_)) => Some(format!(
            "Your storage limit of {} is reached: some backups are waiting for room. Raise the limit in Settings, or stop backing up someone.",
            human_bytes(l)
        )),
        (Some(l), None) if used >= l => Some(format!(
            "Your storage limit of {} is reached: new posts will wait for room. Raise the limit in Settings, or stop backing up someone.",
            human_bytes(l)
        )),
        (None, Some(_)) => Some(
            "Some backups did not fit and are waiting for room: see the friends' cards.".into(),
        ),
        _ => None,
    }
}

/// A failed backup's message, shortened for a friend's card by the kind of failure (a row
/// written before kinds were kept has none: its message is shown as it is).
fn plain_error(kind: Option<FailureKind>, e: &str) -> String {
    match kind {
        Some(FailureKind::Unreachable) => "their server can't be reached right now".into(),
        Some(FailureKind::BadData) => {
            "their server sent data that failed verification; your copy was kept".into()
        }
        _ => e.chars().take(300).collect(),
    }
}

fn health_sentence(state: &str, accounts: usize, copies: u32) -> String {
    match state {
        "ok" => format!(
            "Everyone is safe: {accounts} accounts, each kept by {copies} {}, and the checks pass",
            if copies == 1 { "friend" } else { "friends" }
        ),
        "recovering" => "Copies are being made; checks start soon".into(),
        "degraded" => "Everyone's account is kept, but some checks failed".into(),
        "at-risk" => "Some accounts are at risk: copies are missing or failing checks".into(),
        "failed" => "Some accounts are not safe: a member's copies can't be counted on".into(),
        _ => "Not known yet: the circle has just started".into(),
    }
}

fn circle_card(v: &CircleView, me: &str, health: Option<String>) -> CircleCard {
    let name_of = |did: &str, handle: &Option<String>| {
        if did == me {
            "you".to_string()
        } else {
            handle.clone().unwrap_or_else(|| short_did(did))
        }
    };
    let members: Vec<MemberCard> = v
        .members
        .iter()
        .map(|m| MemberCard {
            did: m.did.clone(),
            name: name_of(&m.did, &m.handle),
            accepted: m.ack == AckState::Accepted,
            is_you: m.did == me,
        })
        .collect();
    let state = match v.state {
        CircleState::Pending if v.in_force.is_some() => "changing",
        CircleState::Pending | CircleState::Scheduled => "waiting",
        CircleState::Active => "active",
        CircleState::Rejected => "declined",
        CircleState::Expired => "expired",
        CircleState::Revoked => "revoked",
        CircleState::Deleted => "gone",
        CircleState::Left => "left",
    }
    .to_string();
    let waiting: Vec<&str> = members
        .iter()
        .filter(|m| !m.accepted)
        .map(|m| m.name.as_str())
        .collect();
    let sentence = match (state.as_str(), health.as_deref()) {
        ("waiting" | "changing", _) if !waiting.is_empty() => {
            format!("Waiting for {} to accept", waiting.join(", "))
        }
        ("active", Some(h)) => health_sentence(h, members.len(), v.min_copies),
        ("active", None) => "Active: the first checks are coming".into(),
        ("left", _) => "You left this circle".into(),
        ("revoked", _) => "Its author ended this circle".into(),
        ("declined", _) => "A member declined this circle".into(),
        _ => format!("This circle is {state}"),
    };
    CircleCard {
        uri: v.uri.clone(),
        name: v.name.clone(),
        state,
        author_name: name_of(&v.author, &v.author_handle),
        you_wrote_it: v.author == me,
        members,
        min_copies: v.min_copies,
        health,
        sentence,
    }
}

fn invitation_card(i: &crate::group::Invitation) -> InvitationCard {
    InvitationCard {
        uri: i.uri.clone(),
        from_name: i.facts.author.clone(),
        circle_name: i.name.clone(),
        text: i.text.clone(),
        member_names: i.facts.others.clone(),
        estimated_bytes: i.facts.estimated_bytes,
        check_every: human_every(i.facts.check_interval),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Engine {
        Engine::open(EngineConfig {
            data_dir: dir.to_path_buf(),
            plc_url: "http://127.0.0.1:9".into(),
            resolver_url: None,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn errors_reach_the_window_with_a_code_and_words() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path());
        let typo = e.add_friend("  ").await.unwrap_err().answer();
        assert_eq!(typo.code, ErrorCode::Invalid);
        assert!(typo.message.contains("handle"), "{}", typo.message);
        let out = e.accept("at://did:plc:x/org.p2pds.policy/1").await;
        let out = out.unwrap_err().answer();
        assert_eq!(out.code, ErrorCode::NotSignedIn);
        assert!(out.message.contains("sign"), "{}", out.message);
        assert!(e.node().start_move());
        let moving = e.skip_sign_in().await.unwrap_err().answer();
        assert_eq!(moving.code, ErrorCode::Moving);
        assert!(moving.message.contains("moving"), "{}", moving.message);
        let json = serde_json::to_value(&moving).unwrap();
        assert_eq!(json["code"], "moving");
    }

    #[test]
    fn stored_settings_keep_their_names_defaults_and_unknown_keys() {
        let s = StoredSettings::parse(None);
        assert_eq!(s.retention_days, 30);
        let text = serde_json::to_string(&StoredSettings::default()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["retentionDays"], 30);
        assert!(v.get("storageLimitBytes").is_some());
        // Older settings without the field get the default; out of range is clamped.
        let old = StoredSettings::parse(Some(r#"{"checkEveryMinutes":45,"futureKey":[1]}"#));
        assert_eq!(old.retention_days, 30);
        assert_eq!(old.check_every_minutes, 45);
        let wild = StoredSettings::parse(Some(r#"{"retentionDays":999999}"#));
        assert_eq!(wild.into_settings(Path::new("/d")).retention_days, 3650);
        // A key this version doesn't know survives a save.
        let mut saved = StoredSettings::from(&old.clone().into_settings(Path::new("/d")));
        saved.other = old.other;
        let v: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();
        assert_eq!(v["futureKey"], serde_json::json!([1]));
        assert_eq!(v["retentionDays"], 30);
    }

    #[tokio::test]
    async fn retention_is_read_from_the_stored_json_and_checked_on_save() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path());
        let s = e.settings().await.unwrap();
        assert_eq!(s.retention_days, 30);
        assert!(!s.data_dir_fixed && s.old_data_dir.is_none());
        e.set_meta(
            SETTINGS_KEY,
            r#"{"retentionDays":90,"storageLimitBytes":5}"#,
        )
        .await
        .unwrap();
        let s = e.settings().await.unwrap();
        assert_eq!((s.retention_days, s.storage_limit_bytes), (90, Some(5)));
        for days in [0, 3651] {
            let err = e
                .save_settings(Settings {
                    retention_days: days,
                    ..s.clone()
                })
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("1 to 3650 days"), "{err}");
        }
        e.set_location_fixed(true);
        assert!(e.settings().await.unwrap().data_dir_fixed);
    }

    /// Bob's account synced twice, 100 and 50 days ago: a post deleted in between.
    async fn two_versions(e: &Engine) -> (String, String) {
        use crate::repo::build::RepoBuilder;
        let mut b = RepoBuilder::new("did:plc:bob", crate::crypto::SigningKey::generate_k256());
        for i in 0..3 {
            b.put_json(
                "app.bsky.feed.post",
                &format!("p{i}"),
                &serde_json::json!({"text": format!("post {i} with some words in it")}),
            );
        }
        let day = 86_400_000_000u64;
        let now = chrono::Utc::now().timestamp_micros() as u64;
        let old = b.build(&crate::repo::tid::format(now - 100 * day, 0));
        b.delete("app.bsky.feed.post", "p1");
        let new = b.build(&crate::repo::tid::format(now - 50 * day, 0));
        let key = b.key.public_key();
        let (old_car, new_car) = (old.car_bytes(), new.car_bytes());
        let (old_rev, new_rev) = (old.rev.clone(), new.rev.clone());
        let synced = |days: i64| {
            (chrono::Utc::now() - chrono::Duration::days(days))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let (s100, s50) = (synced(100), synced(50));
        let (r1, r2) = (old_rev.clone(), new_rev.clone());
        e.store()
            .write(move |c| {
                store::add_repo(c, "did:plc:bob", Some("bob.test"), None).unwrap();
                crate::sync::ingest::ingest_car(c, "did:plc:bob", &key, &old_car[..], &mut |_| {})
                    .unwrap();
                crate::sync::ingest::ingest_car(c, "did:plc:bob", &key, &new_car[..], &mut |_| {})
                    .unwrap();
                for (rev, at) in [(r1, s100), (r2, s50)] {
                    c.execute(
                        "UPDATE commits SET synced_at = ?2 WHERE rev = ?1",
                        rusqlite::params![rev, at],
                    )
                    .unwrap();
                }
                gdb::set_meta(c, SETTINGS_KEY, r#"{"retentionDays":30}"#).unwrap();
            })
            .await
            .unwrap();
        (old_rev, new_rev)
    }

    #[tokio::test]
    async fn old_versions_are_collected_unless_a_flag_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path());
        let (old_rev, new_rev) = two_versions(&e).await;

        // A flag pins the version from before: nothing to free, and the card tells it.
        e.store()
            .write(move |c| {
                history::raise(
                    c,
                    1,
                    history::kind::MASS_DELETION,
                    "1 of 3 records were deleted at once",
                    Some(&old_rev),
                )
            })
            .await
            .unwrap()
            .unwrap();
        // One notification per flag, delivered once.
        let mut events = e.subscribe();
        e.raise_alerts().await;
        e.raise_alerts().await;
        let mut alerts = Vec::new();
        while let Ok(ev) = events.try_recv() {
            if let Event::Alert { key, title, .. } = ev {
                alerts.push((key, title));
            }
        }
        assert_eq!(
            alerts,
            [(
                "flag:1".to_string(),
                "Many of bob.test's posts were deleted".to_string()
            )]
        );
        let o = e.overview().await.unwrap();
        let bob = &o.friends[0];
        assert_eq!(bob.flags.len(), 1);
        assert!(bob.flags[0].text.contains("Your copy from before is kept"));
        assert!(bob.can_restore);
        assert_eq!(o.tray, TrayState::NeedsAttention);
        assert!(o.headline.contains("bob.test"), "{}", o.headline);
        let choice = e.restore_choice("did:plc:bob").await.unwrap();
        assert_eq!(choice.versions.len(), 2);
        assert_eq!(choice.versions[0].rev, new_rev, "newest first");
        assert_eq!(choice.suggested.records, Some(3));
        assert!(choice.why.contains("from before"), "{}", choice.why);
        assert_eq!(e.reclaimable().await.unwrap().bytes, 0);

        // Dismissed: the old version is outside the window and goes.
        let o = e.dismiss_flags("did:plc:bob").await.unwrap();
        assert!(o.friends[0].flags.is_empty());
        let plan = e.reclaimable().await.unwrap();
        assert!(plan.dry_run && plan.bytes > 0, "{plan:?}");
        assert!(plan.text.contains("can be freed"), "{}", plan.text);
        let done = e.collect_garbage().await.unwrap();
        assert_eq!(
            (done.dry_run, done.versions, done.bytes),
            (false, 1, plan.bytes)
        );
        assert!(done.text.starts_with("Freed"), "{}", done.text);
        let choice = e.restore_choice("did:plc:bob").await.unwrap();
        assert_eq!(choice.versions.len(), 1);
        assert_eq!(choice.suggested.rev, new_rev);
        assert_eq!(e.reclaimable().await.unwrap().bytes, 0);
        assert!(e
            .store()
            .read(|c| gdb::meta(c, crate::engine::LAST_GC_KEY))
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn a_restore_is_refused_in_words_before_any_network() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path());
        two_versions(&e).await;
        let input = |to: &str, password: &str| RestoreInput {
            did: "did:plc:bob".into(),
            rev: None,
            to_pds: to.into(),
            handle: "bob.new.test".into(),
            password: password.into(),
            old_password: None,
            email: None,
            invite_code: None,
            plc_token: None,
            recovery_key: None,
        };
        let err = e
            .restore_account(input("pds.example", "pw"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
        let err = e
            .restore_account(input("https://pds.example", ""))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("password"), "{err}");
        assert!(!format!("{:?}", input("https://x", "secret-pw")).contains("secret-pw"));
        let err = e.restore_choice("did:plc:nobody").await.unwrap_err();
        assert!(err.to_string().contains("not backed up"), "{err}");
    }

    #[test]
    fn the_storage_section_says_when_the_limit_is_reached() {
        assert_eq!(storage_limit_text(10, Some(100), None), None);
        assert!(storage_limit_text(100, Some(100), None)
            .unwrap()
            .contains("limit of 100 bytes is reached"));
        let full = storage_limit_text(1, None, Some(FailureKind::DiskFull)).unwrap();
        assert!(full.starts_with("The disk is full"), "{full}");
        let limit = storage_limit_text(1, Some(10), Some(FailureKind::StorageLimit)).unwrap();
        assert!(limit.contains("limit of 10 bytes is reached"), "{limit}");
        let msg = "bob.test's backup does not fit within your storage limit: it needs about 3 MB more, and 9 MB of 10 MB is used. Nothing was changed: raise the limit in Settings, or stop backing up someone";
        assert_eq!(
            plain_error(Some(FailureKind::StorageLimit), msg),
            msg,
            "kept whole"
        );
        // The kind decides, not the words: a message that mentions a network is not one.
        assert_eq!(
            plain_error(
                Some(FailureKind::Unreachable),
                "connection refused (os error 111)"
            ),
            "their server can't be reached right now"
        );
        assert_eq!(
            plain_error(Some(FailureKind::Refused), "the network said no"),
            "the network said no"
        );
        assert_eq!(
            humanize(
                "did:plc:bob's backup",
                &BTreeMap::from([("did:plc:bob".to_string(), "bob.test".to_string())])
            ),
            "bob.test's backup"
        );
    }

    /// A store with two accounts, a setting and three image files.
    async fn some_data(e: &Engine) {
        e.store()
            .write(|c| {
                store::add_repo(c, "did:plc:bob", Some("bob.test"), None)?;
                store::add_repo(c, "did:plc:carol", Some("carol.test"), None)?;
                gdb::set_meta(c, SETTINGS_KEY, r#"{"retentionDays":7}"#)
            })
            .await
            .unwrap()
            .unwrap();
        let blobs = e.data_dir().join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        for (name, len) in [("bafya", 10), ("bafyb", 20_000), ("bafyc", 1)] {
            std::fs::write(blobs.join(name), vec![7u8; len]).unwrap();
        }
    }

    fn files(dir: &Path) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn moving_the_storage_copies_everything_and_keeps_the_old_copy() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("new/b"));
        let e = open(&a);
        some_data(&e).await;

        let report = e.move_storage(&b.display().to_string()).await.unwrap();
        assert_eq!(report.files, 3);
        assert!(report.bytes >= 20_011);
        assert_eq!(PathBuf::from(&report.from), a);
        assert_eq!(PathBuf::from(&report.to), b);
        // The old copy is untouched, nothing temporary is left.
        assert!(a.join("p2pds.sqlite").is_file());
        assert_eq!(files(&a.join("blobs")), files(&b.join("blobs")));
        let names: Vec<String> = files(&b).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["blobs", "p2pds.sqlite"],
            "nothing temporary is left"
        );
        // The engine stays paused for the restart: actions are refused in words.
        let err = e
            .remove_friend("did:plc:bob")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("moving your copies"), "{err}");

        // The app at the new place: the same accounts and settings, and the old copy on offer.
        let moved = open(&b);
        let o = moved.overview().await.unwrap();
        let names: Vec<&str> = o.friends.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["bob.test", "carol.test"]);
        let s = moved.settings().await.unwrap();
        assert_eq!(s.retention_days, 7);
        assert_eq!(
            s.old_data_dir.as_deref().map(PathBuf::from),
            Some(a.clone())
        );
        let check: String = rusqlite::Connection::open(b.join("p2pds.sqlite"))
            .unwrap()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");

        // Deleting the old copy removes it, and only it.
        let s = moved.delete_old_copy().await.unwrap();
        assert!(s.old_data_dir.is_none());
        assert!(!a.exists());
        assert!(b.join("p2pds.sqlite").is_file());
        assert!(moved.delete_old_copy().await.is_err());

        // The moved engine can move again, back to where it was.
        let back = moved.move_storage(&a.display().to_string()).await.unwrap();
        assert_eq!(back.files, 3);
        assert_eq!(files(&a.join("blobs")), files(&b.join("blobs")));
    }

    #[tokio::test]
    async fn a_move_waits_for_work_in_progress_and_then_refuses_new_work() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        let e = open(&a);
        some_data(&e).await;
        let mut events = e.subscribe();
        // Work in progress (a backup pass, or a window action).
        let work = e.guard().await.unwrap();
        let mover = {
            let (e, to) = (e.clone(), b.display().to_string());
            tokio::spawn(async move { e.move_storage(&to).await })
        };
        tokio::time::sleep(StdDuration::from_millis(200)).await;
        assert!(!mover.is_finished(), "the move waits");
        assert!(!b.join("p2pds.sqlite").exists(), "nothing copied yet");
        drop(work);
        let report = mover.await.unwrap().unwrap();
        assert_eq!(report.files, 3);
        let mut phases = Vec::new();
        while let Ok(ev) = events.try_recv() {
            if let Event::Moving { progress } = ev {
                phases.push(progress.phase);
            }
        }
        phases.dedup();
        assert_eq!(phases, ["waiting", "copying", "checking"]);
        assert!(e.guard().await.is_err());
        // Moving again before the restart is refused; cancelling resumes the work.
        let again = e
            .move_storage(&root.path().join("c").display().to_string())
            .await;
        assert!(again.unwrap_err().to_string().contains("already moving"));
        e.cancel_move();
        assert!(e.guard().await.is_ok());
    }

    #[tokio::test]
    async fn moves_that_are_refused_change_nothing() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("a");
        let e = open(&a);
        some_data(&e).await;
        let busy = root.path().join("busy");
        std::fs::create_dir(&busy).unwrap();
        std::fs::write(busy.join("photo.jpg"), b"x").unwrap();
        let cases = [
            (a.join("inside").display().to_string(), "inside"),
            (a.display().to_string(), "already kept"),
            (busy.display().to_string(), "other files"),
            ("relative/path".to_string(), "not a full path"),
            (String::new(), "full path"),
        ];
        for (to, why) in cases {
            let err = e.move_storage(&to).await.unwrap_err().to_string();
            assert!(err.contains(why), "{to}: {err}");
        }
        assert!(!a.join("inside").exists());
        assert_eq!(files(&busy).len(), 1);
        // Not paused: the engine still works.
        e.remove_friend("did:plc:carol").await.unwrap();
        // Fixed by the command line: refused.
        e.set_location_fixed(true);
        let err = e
            .move_storage(&root.path().join("c").display().to_string())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("--data-dir"), "{err}");
        assert!(!root.path().join("c").exists());
    }
}
