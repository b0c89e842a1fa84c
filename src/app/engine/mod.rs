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
//!
//! The code is split by screen: `overview` (the main screens and their cards), `health` (a
//! circle's dashboard), `actions` (signing in, friends, circles, the recovery key), `restore`
//! (giving an account back), `settings` (the settings, serving, old versions), `folder`
//! (moving the data folder) and `run` (the loop and the alerts). This file holds the engine
//! itself, its errors and the helpers they share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use tokio::sync::{broadcast, RwLockReadGuard};
use tokio_util::sync::CancellationToken;

use crate::engine::{Node, NodeConfig, NodeError};
use crate::group::{db as gdb, Circles, GroupError};
use crate::history;
use crate::identity::IdentityError;
use crate::policy::Timestamp;
use crate::session::{self, SessionError};
use crate::store::{self, Store, StoreError};
use crate::sync::{SyncProgress, Syncer};
use crate::verify;

use super::dto::*;
use super::words;

mod actions;
mod folder;
mod health;
pub mod link;
mod oauth;
mod overview;
mod restore;
mod run;
mod settings;

/// Move and restore progress events, at most this often.
const PROGRESS_EVERY: StdDuration = StdDuration::from_millis(250);

// The app's own values in `group_meta`: the settings, the first-run welcome, the alerts
// delivered, the folder a move came from.
const SETTINGS_KEY: &str = "app.settings";
const WELCOMED_KEY: &str = "app.welcomed";
const DELIVERED_KEY: &str = "app.alerts";
/// The folder a move copied this store from (the copy left there can be deleted).
const PREVIOUS_DIR_KEY: &str = "app.previousDataDir";

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
    /// Something on the network could not be reached (said in words).
    #[error("{0}")]
    Network(String),
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
                SessionError::LoginRefused { .. } | SessionError::MainPassword { .. } => {
                    ErrorCode::SignInRefused
                }
                SessionError::OAuth { .. }
                | SessionError::ScopesRefused { .. }
                | SessionError::SignInCancelled
                | SessionError::WrongAccount { .. }
                | SessionError::WrongState
                | SessionError::SignInTimedOut => ErrorCode::BrowserSignIn,
                SessionError::NoSecretService { .. }
                | SessionError::KeyringLocked { .. }
                | SessionError::Keyring(_) => ErrorCode::Keyring,
                // The handle is the problem, not the network or the password: the form marks
                // the handle.
                SessionError::Identity(
                    IdentityError::HandleNotFound { .. } | IdentityError::BadHandle(_),
                ) => ErrorCode::Invalid,
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
            AppError::Network(_) => ErrorCode::Network,
            AppError::Group(GroupError::Link(e)) => link::code(e),
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
    /// A backlink index asked for circles naming this account beyond the accounts known
    /// (`--backlink-index`, `P2PDS_BACKLINK_INDEX`; None: not asked).
    pub backlink_index: Option<String>,
}

#[derive(Default)]
struct Live {
    notifications: Option<NotificationStatus>,
    /// The reminder ladder's ledger as last kept (see `run::raise_alerts_at`).
    alerts: Option<crate::app::alerts::Ledger>,
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
    /// A sign-in in the browser, waiting for its answer.
    browser_sign_in: Mutex<oauth::BrowserSignIn>,
    /// "Protect your account"'s consent in the browser, waiting for its answer.
    recovery_consent: Mutex<oauth::BrowserSignIn>,
    /// The identity permission that consent gave, until the emailed code is typed.
    identity_grant: tokio::sync::Mutex<Option<crate::session::oauth::IdentityGrant>>,
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
        node_config.backlink_index = config.backlink_index.clone();
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
                browser_sign_in: Mutex::new(oauth::BrowserSignIn::default()),
                recovery_consent: Mutex::new(oauth::BrowserSignIn::default()),
                identity_grant: tokio::sync::Mutex::new(None),
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

    /// Writes one of the app's values in `group_meta`.
    async fn set_meta(&self, key: &'static str, value: &str) -> Result<(), AppError> {
        let v = value.to_string();
        self.store()
            .write(move |c| gdb::set_meta(c, key, &v))
            .await??;
        Ok(())
    }
}

/// A flag in words, for the friend called `name`.
fn flag_words(f: &history::Flag, name: &str, now: Timestamp) -> String {
    let detected = parse_time(Some(&f.detected_at));
    words::flag_text(&f.kind, name, &f.detail, detected, now)
}

/// A node controller's error as the window's (a store error stays one).
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

/// "account abcd12…" for an account with no handle.
use crate::identity::short_name as short_did;

/// Replaces DIDs in a message with names.
fn humanize(message: &str, names: &BTreeMap<String, String>) -> String {
    let mut out = message.to_string();
    for (did, name) in names {
        out = out.replace(did.as_str(), name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn open(dir: &Path) -> Engine {
        Engine::open(EngineConfig {
            data_dir: dir.to_path_buf(),
            plc_url: "http://127.0.0.1:9".into(),
            resolver_url: None,
            backlink_index: None,
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

    fn identity(e: IdentityError) -> AppError {
        AppError::Session(SessionError::Identity(e))
    }

    #[rstest::rstest]
    #[case::offline(
        identity(IdentityError::HandleUnreachable {
            handle: "alice.example".into(),
            reason: "DNS: no record found for Query { name: Name(\"_atproto.alice.example.\") }".into(),
        }),
        ErrorCode::Network,
        "Couldn't reach the internet to find alice.example. Check your connection and try again."
    )]
    #[case::unknown_handle(
        identity(IdentityError::HandleNotFound {
            handle: "bob.bsky.social".into(),
            reason: "https://bsky.social: answered 400 Bad Request".into(),
        }),
        ErrorCode::Invalid,
        "There is no Bluesky account called bob.bsky.social. Check the spelling (it looks like name.bsky.social)."
    )]
    #[case::wrong_password(
        AppError::Session(SessionError::LoginRefused {
            who: "bob.bsky.social".into(),
            message: "Invalid identifier or password".into(),
        }),
        ErrorCode::SignInRefused,
        "bob.bsky.social's server refused the sign-in: Invalid identifier or password. Check the handle and the password (use an app password: Settings → Privacy and security → App passwords)"
    )]
    fn sign_in_failures_say_what_happened_and_mark_the_right_field(
        #[case] e: AppError,
        #[case] code: ErrorCode,
        #[case] words: &str,
    ) {
        let answer = e.answer();
        assert_eq!((answer.code, answer.message.as_str()), (code, words));
    }

    #[tokio::test]
    async fn an_unknown_friend_is_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path());
        let out = e.add_friend("nobody.example").await.unwrap_err().answer();
        assert_eq!(out.code, ErrorCode::Invalid);
        assert_eq!(
            out.message,
            "There is no Bluesky account called nobody.example. Check the spelling (it looks like name.bsky.social)."
        );
    }

    /// Bob's account synced twice, 100 and 50 days ago: a post deleted in between.
    pub(super) async fn two_versions(e: &Engine) -> (String, String) {
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
}
