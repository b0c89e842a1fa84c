//! What the desktop app shows, as data: the documents the shell's commands return and the
//! events it forwards. Plain words and numbers for people; identifiers (DIDs, URIs) only
//! where the UI needs a handle on something (to act on it, or in a details view).
//!
//! The TypeScript declarations of these types (`ui/types.d.ts`) are generated from here
//! (`ts-rs`); a test fails when the committed file is out of date
//! (`P2PDS_WRITE_TS=1 cargo test --lib app::dto` rewrites it).

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// Everything the main screens show, in one document.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// The signed-in account; `None` when the person skipped signing in (or signed out).
    pub me: Option<Me>,
    /// The first-run welcome was finished (signed in or skipped).
    pub welcomed: bool,
    pub friends: Vec<Friend>,
    pub circles: Vec<CircleCard>,
    pub invitations: Vec<InvitationCard>,
    /// What the tray icon shows.
    pub tray: TrayState,
    /// Why, in words, unless all is well ("bob.test not backed up for 3 days (and 1 more)"):
    /// the worst of every friend, circle and invitation, for the tray's menu.
    pub tray_reason: Option<String>,
    /// One sentence: "All 3 accounts are safe: each held by 2 friends, checked 10 minutes ago".
    pub headline: String,
    /// While paused: until when (RFC 3339).
    pub paused_until: Option<String>,
    pub notifications: NotificationStatus,
    pub storage: Storage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub did: String,
    pub handle: Option<String>,
}

/// The tray icon's state: trustworthy at a glance (see `app::tray`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
pub enum TrayState {
    Ok,
    Syncing,
    /// Amber: something waits for the person or a friend.
    NeedsAttention,
    /// Red: a copy may be lost or stale (a friend not backed up for a day, copies failing
    /// checks, an upstream flag of loss).
    Problem,
}

/// Whether the desktop can show notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct NotificationStatus {
    pub available: bool,
    /// Why not, in words (when not available).
    pub reason: Option<String>,
}

/// One backed-up account.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct Friend {
    pub did: String,
    pub handle: Option<String>,
    /// What to call them: the handle, else a short form.
    pub name: String,
    pub state: FriendState,
    /// The state in words: "backed up 3 minutes ago", "your copy is safe: the account is gone".
    pub status_text: String,
    /// Last complete backup (RFC 3339).
    pub last_backup_at: Option<String>,
    /// Bytes held: records and images.
    pub size_bytes: u64,
    pub posts: u64,
    pub images: u64,
    /// While a sync runs.
    pub progress: Option<Progress>,
    /// Why the last backup failed, in words.
    pub problem: Option<String>,
    /// Circles that ask this node to hold it (names).
    pub circles: Vec<String>,
    /// Open upstream events that may mean loss (oldest first).
    pub flags: Vec<FriendFlag>,
    /// A verified copy is held: the account can be given back.
    pub can_restore: bool,
    /// How the copy is kept up to date: `live` (their server's changes are copied as they
    /// happen), `catching-up` (reconnecting to that stream) or `polling` (checked on a
    /// schedule).
    pub followed: String,
    /// The same in words: "every change is copied as it happens".
    pub follow_text: String,
}

/// Something that happened upstream and may mean loss: a mass deletion, a new server or key,
/// a server gone, the account's status. The copy from before it is kept until dismissed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct FriendFlag {
    pub id: i64,
    /// "mass-deletion", "new-pds", "new-key", "pds-gone", "account-<status>".
    pub kind: String,
    /// What happened and what is kept, in words.
    pub text: String,
    /// The engine's own sentence (for a "Details" view: may name servers).
    pub detail: String,
    /// When it was noticed (RFC 3339).
    pub detected_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
pub enum FriendState {
    /// Added, first backup not finished yet.
    FirstBackup,
    Syncing,
    Ok,
    /// The last backups failed (the copy held is kept).
    Failing,
    /// The account was deactivated upstream (the copy is kept).
    Deactivated,
    /// The account or its server is gone (the copy is kept: restore-worthy).
    Gone,
}

/// Progress of a running backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// "checking", "downloading", "verifying", "images".
    pub phase: String,
    pub records: u64,
    pub bytes: u64,
    pub images_done: u64,
    pub images_total: u64,
}

/// One circle on the circles screen.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct CircleCard {
    pub uri: String,
    pub name: String,
    /// "waiting" (for answers), "active", "changing" (a new version waits for answers),
    /// "left", "revoked", "declined", "expired", "gone".
    pub state: String,
    pub author_name: String,
    pub you_wrote_it: bool,
    pub members: Vec<MemberCard>,
    /// Copies each account should have on other members' computers.
    pub min_copies: u32,
    /// Health at a glance (active circles): "ok", "degraded", "at-risk", "failed", …
    pub health: Option<String>,
    /// One sentence: "Everyone is safe", "Waiting for Carol to accept".
    pub sentence: String,
    /// Whether every copy has passed a check: until then "ok" only means nothing is wrong
    /// yet, and the card says "Not checked yet".
    pub checked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct MemberCard {
    pub did: String,
    pub name: String,
    pub accepted: bool,
    pub is_you: bool,
}

/// An invitation, in plain words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct InvitationCard {
    pub uri: String,
    pub from_name: String,
    pub circle_name: String,
    /// "Alice asks you to keep copies of Alice's, Bob's and Carol's accounts, about 120 MB,
    /// checked every 30 minutes".
    pub text: String,
    pub member_names: Vec<String>,
    pub estimated_bytes: u64,
    pub check_every: String,
}

/// A circle's dashboard: "is everyone safe?".
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub uri: String,
    pub name: String,
    /// "ok", "degraded", "recovering", "at-risk", "failed", "unknown".
    pub state: String,
    pub sentence: String,
    /// What is not right, in words: every line of `attention`, in its order.
    pub reasons: Vec<String>,
    /// The heading above `sentence`, consistent with the worst line of `attention`:
    /// "Healthy", "Not checked yet", "Getting ready", "Needs a look", "At risk", …
    pub label: String,
    /// How to colour it: "ok", "busy", "warn", "danger", "muted".
    pub tone: String,
    /// What needs attention, one sentence per problem, grouped by person (the circle first,
    /// then you, then the others).
    pub attention: Vec<Attention>,
    /// The policy engine's own conditions that are not true, and what could not be read
    /// (for a "Details" view: names instead of DIDs, otherwise as the engine says them).
    pub details: Vec<String>,
    /// The circle's rules, in sentences: "Each member's account is kept by 2 friends in the
    /// circle."
    pub rules: Vec<String>,
    /// When every copy last passed its check (RFC 3339): the oldest of those checks; `None`
    /// while any copy is not checked yet.
    pub checked_at: Option<String>,
    pub members: Vec<MemberHealth>,
    /// Bytes this computer holds for each member's account.
    pub storage: Vec<StorageItem>,
    pub timeline: Vec<TimelineEvent>,
    /// When the report was computed (RFC 3339).
    pub evaluated_at: String,
}

/// Sentences about one person (or the circle itself) on a circle's page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct Attention {
    /// The member's DID; `None` for the circle itself.
    pub did: Option<String>,
    /// "You", "bob.test", "The circle".
    pub name: String,
    /// The worst line's: "note" (no bearing on the circle's state), "waiting", "warn",
    /// "danger".
    pub tone: String,
    /// One sentence per problem.
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct MemberHealth {
    pub did: String,
    pub name: String,
    pub state: String,
    /// "holds 2 accounts, all checks passed", "did not answer for 3 days".
    pub words: String,
    pub last_seen: Option<String>,
    /// Checks of this member's copies over the last days, oldest first.
    pub checks: Vec<CheckPoint>,
    /// The copies a whole-copy check found lacking, one sentence each ("Its copy of Alice's
    /// account is missing 5 posts or other records (12 kB)").
    pub needs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct CheckPoint {
    pub at: String,
    /// "pass", "fail", "unreachable".
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct StorageItem {
    pub name: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEvent {
    pub at: String,
    /// "sync", "check", "circle", "alert".
    pub kind: String,
    pub text: String,
}

/// Storage used on this computer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    pub used_bytes: u64,
    pub limit_bytes: Option<u64>,
    pub per_friend: Vec<StorageItem>,
    /// Days older versions are kept (Settings).
    pub retention_days: u32,
    /// Set when the storage limit is reached (or nearly: a backup did not fit), in words.
    pub limit_text: Option<String>,
}

/// What a collection of old versions frees (or would free now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct Collection {
    /// Nothing was changed: these are the figures a collection would have now.
    pub dry_run: bool,
    pub bytes: u64,
    /// Old versions of accounts removed.
    pub versions: u64,
    /// Image files removed.
    pub images: u64,
    /// In words: "About 12 MB of older versions can be freed".
    pub text: String,
}

/// One kept version of an account, to restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct KeptVersion {
    /// Which one (the restore names it back; shown only in a details view).
    pub rev: String,
    /// When the account was in this state (RFC 3339).
    pub time: String,
    /// Records in it, when known.
    pub records: Option<u64>,
}

/// The signed-in account's recovery key (a rotation key of the owner's own, so the account
/// can move even when its server is gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryKeyStatus {
    /// `none` (not set up), `code-sent` (the server emailed a confirmation code),
    /// `registered` (the identity lists the key kept here), `held` (a key is kept here but
    /// the identity does not list it), `unknown` (the identity could not be read just now),
    /// `unavailable` (not signed in, or an identity that cannot have one).
    pub state: String,
    /// In words.
    pub text: String,
    /// The key to write down: only in the answer that registered it.
    pub code: Option<String>,
}

/// What the restore dialog offers for one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct RestoreChoice {
    pub did: String,
    pub name: String,
    /// The version a restore uses unless another is picked.
    pub suggested: KeptVersion,
    /// Why that one, in words.
    pub why: String,
    /// Every kept version, newest first.
    pub versions: Vec<KeptVersion>,
}

/// What to restore and where (the passwords go straight to the servers, never stored).
#[derive(Clone, PartialEq, Eq, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct RestoreInput {
    pub did: String,
    /// A kept version (`KeptVersion.rev`); none: the suggested one.
    pub rev: Option<String>,
    /// The new server's address, e.g. https://pds.example.net.
    pub to_pds: String,
    /// The handle on the new server.
    pub handle: String,
    /// The password of the account on the new server.
    pub password: String,
    /// The owner's main password on the old server, when different.
    pub old_password: Option<String>,
    pub email: Option<String>,
    pub invite_code: Option<String>,
    /// The confirmation code the old server emailed to the owner after a first run: with it
    /// the identity moves to the new server and the account is switched on there.
    pub plc_token: Option<String>,
    /// The owner's recovery key (the code they wrote down); none: the one kept in this
    /// computer's keyring for the account, if any. With it the old server is not needed.
    pub recovery_key: Option<String>,
}

impl std::fmt::Debug for RestoreInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreInput")
            .field("did", &self.did)
            .field("rev", &self.rev)
            .field("to_pds", &self.to_pds)
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

/// Progress of a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStep {
    /// "preparing", "account", "records", "images".
    pub phase: String,
    /// Bytes of records sent so far.
    pub bytes: u64,
    pub images_done: u64,
    pub images_total: u64,
}

/// Something a restore could not bring back, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct NotRestoredItem {
    pub what: String,
    pub reason: String,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct RestoreOutcome {
    pub did: String,
    pub name: String,
    /// The version given back (RFC 3339) and why it was used.
    pub time: String,
    pub why: String,
    pub to_pds: String,
    pub records: u64,
    pub images: u64,
    pub images_total: u64,
    pub not_restored: Vec<NotRestoredItem>,
    /// The account's identity now names the new server.
    pub identity_moved: bool,
    /// What is left to do, in words.
    pub next_steps: Vec<String>,
    /// Everything the version names is on the new server.
    pub complete: bool,
}

/// The settings screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Where the copies are kept. Changed with the shell's `move_storage` command, not by
    /// saving the settings (a changed value here is ignored).
    pub data_dir: String,
    /// The folder was given on the command line (`--data-dir`) or in `P2PDS_DATA_DIR`: the app
    /// can't move it. Ignored when saving.
    pub data_dir_fixed: bool,
    /// A copy left behind by a move, still on disk: it can be deleted
    /// (`delete_old_copy`). Ignored when saving.
    pub old_data_dir: Option<String>,
    pub storage_limit_bytes: Option<u64>,
    /// Days of history kept for each friend's account: older versions are removed by garbage
    /// collection, never the newest.
    pub retention_days: u32,
    pub start_at_login: bool,
    /// Minutes between backups of each friend.
    pub check_every_minutes: u32,
    pub pause_on_battery: bool,
    /// Serve the copies to friends (RASL and sync reads).
    pub serve: bool,
    /// Address to listen on when serving.
    pub listen: String,
    /// The address friends reach this computer at, advertised to circles.
    pub endpoint: Option<String>,
}

/// What a move of the storage folder did (the app restarts at the new place next).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct MoveReport {
    /// The folder the copies were in (left in place until deleted).
    pub from: String,
    /// The folder they are in now.
    pub to: String,
    /// Bytes copied: the database and the images.
    pub bytes: u64,
    /// Image files copied.
    pub files: u64,
}

/// Progress of a move of the storage folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct MoveProgress {
    /// "waiting" (for the current backup to finish), "copying", "checking".
    pub phase: String,
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// What the engine tells the window, through one forwarder.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// Something changed: fetch the overview again.
    Changed,
    /// A backup is running.
    Progress { did: String, progress: Progress },
    /// The storage folder is being moved.
    Moving { progress: MoveProgress },
    /// An account is being given back.
    Restoring { did: String, step: RestoreStep },
    /// A notification was raised (also shown in the app).
    Alert {
        key: String,
        title: String,
        body: String,
    },
}

/// What kind of failure an action met: the window may act on it (offer to sign in, wait for
/// a move); the message says it in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Not signed in (or the sign-in was lost): sign in again.
    NotSignedIn,
    /// The account's server refused the handle or the password.
    SignInRefused,
    /// The sign-in in the browser did not complete (cancelled, another account, refused
    /// scopes, no answer): nothing was stored.
    BrowserSignIn,
    /// No keyring to keep the app password in, or it is locked.
    Keyring,
    /// A server could not be reached or answered with an error.
    Network,
    /// The copies are being moved to a new folder: try again after the restart.
    Moving,
    /// The data folder failed (disk full, a damaged file, no permission).
    Storage,
    /// What was typed is not possible (an empty name, a setting out of range).
    Invalid,
    /// An invitation link that is not one, or is cut off or altered: copy it again.
    LinkDamaged,
    /// An invitation link for a circle that does not include this account.
    LinkNotForYou,
    /// An invitation link to a version the author has changed since: ask for a new link.
    LinkOutdated,
    /// An invitation link to a circle its author ended.
    LinkRevoked,
    /// An invitation link to a circle that is no longer in its author's account.
    LinkGone,
    /// Anything else.
    Other,
}

/// A sign-in in the browser, started: the server's page to open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct BrowserSignInStarted {
    pub url: String,
}

/// A failed action, as the window receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct ErrorAnswer {
    pub code: ErrorCode,
    /// What happened and what to do, in words.
    pub message: String,
}

/// Every exported type, in dependency order: the contents of `ui/types.d.ts`.
pub fn typescript() -> String {
    let mut out = String::from(
        "// Generated from src/app/dto.rs by ts-rs: do not edit.\n\
         // Regenerate: P2PDS_WRITE_TS=1 cargo test --lib app::dto\n\n",
    );
    // JSON numbers, not bigint: sizes stay far below 2^53.
    let cfg = ts_rs::Config::new().with_large_int("number");
    let decls = [
        Overview::decl(&cfg),
        Me::decl(&cfg),
        TrayState::decl(&cfg),
        NotificationStatus::decl(&cfg),
        Friend::decl(&cfg),
        FriendFlag::decl(&cfg),
        FriendState::decl(&cfg),
        Progress::decl(&cfg),
        CircleCard::decl(&cfg),
        MemberCard::decl(&cfg),
        InvitationCard::decl(&cfg),
        Health::decl(&cfg),
        Attention::decl(&cfg),
        MemberHealth::decl(&cfg),
        CheckPoint::decl(&cfg),
        StorageItem::decl(&cfg),
        TimelineEvent::decl(&cfg),
        Storage::decl(&cfg),
        Collection::decl(&cfg),
        KeptVersion::decl(&cfg),
        RecoveryKeyStatus::decl(&cfg),
        RestoreChoice::decl(&cfg),
        RestoreInput::decl(&cfg),
        RestoreStep::decl(&cfg),
        NotRestoredItem::decl(&cfg),
        RestoreOutcome::decl(&cfg),
        Settings::decl(&cfg),
        MoveReport::decl(&cfg),
        MoveProgress::decl(&cfg),
        Event::decl(&cfg),
        ErrorCode::decl(&cfg),
        ErrorAnswer::decl(&cfg),
        BrowserSignInStarted::decl(&cfg),
    ];
    for d in decls {
        out.push_str("export ");
        out.push_str(&d);
        out.push_str("\n\n");
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typescript_declarations_are_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/types.d.ts");
        let want = typescript();
        if std::env::var_os("P2PDS_WRITE_TS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "ui/types.d.ts is out of date: run `P2PDS_WRITE_TS=1 cargo test --lib app::dto`"
        );
    }
}
