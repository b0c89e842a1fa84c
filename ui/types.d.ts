// Generated from src/app/dto.rs by ts-rs: do not edit.
// Regenerate: P2PDS_WRITE_TS=1 cargo test --lib app::dto

export type Overview = { 
/**
 * The signed-in account; `None` when the person skipped signing in (or signed out).
 */
me: Me | null, 
/**
 * The first-run welcome was finished (signed in or skipped).
 */
welcomed: boolean, friends: Array<Friend>, circles: Array<CircleCard>, invitations: Array<InvitationCard>, 
/**
 * What the tray icon shows.
 */
tray: TrayState, 
/**
 * Why, in words, unless all is well ("bob.test not backed up for 3 days (and 1 more)"):
 * the worst of every friend, circle and invitation, for the tray's menu.
 */
trayReason: string | null, 
/**
 * One sentence: "All 3 accounts are safe: each held by 2 friends, checked 10 minutes ago".
 */
headline: string, 
/**
 * While paused: until when (RFC 3339).
 */
pausedUntil: string | null, notifications: NotificationStatus, storage: Storage, };

export type Me = { did: string, handle: string | null, };

export type TrayState = "ok" | "syncing" | "needs-attention" | "problem";

export type NotificationStatus = { available: boolean, 
/**
 * Why not, in words (when not available).
 */
reason: string | null, };

export type Friend = { did: string, handle: string | null, 
/**
 * What to call them: the handle, else a short form.
 */
name: string, state: FriendState, 
/**
 * The state in words: "backed up 3 minutes ago", "your copy is safe: the account is gone".
 */
statusText: string, 
/**
 * Last complete backup (RFC 3339).
 */
lastBackupAt: string | null, 
/**
 * Bytes held: records and images.
 */
sizeBytes: number, posts: number, images: number, 
/**
 * While a sync runs.
 */
progress: Progress | null, 
/**
 * Why the last backup failed, in words.
 */
problem: string | null, 
/**
 * Circles that ask this node to hold it (names).
 */
circles: Array<string>, 
/**
 * Open upstream events that may mean loss (oldest first).
 */
flags: Array<FriendFlag>, 
/**
 * A verified copy is held: the account can be given back.
 */
canRestore: boolean, 
/**
 * How the copy is kept up to date: `live` (their server's changes are copied as they
 * happen), `catching-up` (reconnecting to that stream) or `polling` (checked on a
 * schedule).
 */
followed: string, 
/**
 * The same in words: "every change is copied as it happens".
 */
followText: string, };

export type FriendFlag = { id: number, 
/**
 * "mass-deletion", "new-pds", "new-key", "pds-gone", "account-<status>".
 */
kind: string, 
/**
 * What happened and what is kept, in words.
 */
text: string, 
/**
 * The engine's own sentence (for a "Details" view: may name servers).
 */
detail: string, 
/**
 * When it was noticed (RFC 3339).
 */
detectedAt: string, };

export type FriendState = "first-backup" | "syncing" | "ok" | "failing" | "deactivated" | "gone";

export type Progress = { 
/**
 * "checking", "downloading", "verifying", "images".
 */
phase: string, records: number, bytes: number, imagesDone: number, imagesTotal: number, };

export type CircleCard = { uri: string, name: string, 
/**
 * "waiting" (for answers), "active", "changing" (a new version waits for answers),
 * "left", "revoked", "declined", "expired", "gone".
 */
state: string, authorName: string, youWroteIt: boolean, members: Array<MemberCard>, 
/**
 * Copies each account should have on other members' computers.
 */
minCopies: number, 
/**
 * Health at a glance (active circles): "ok", "degraded", "at-risk", "failed", …
 */
health: string | null, 
/**
 * One sentence: "Everyone is safe", "Waiting for Carol to accept".
 */
sentence: string, 
/**
 * Whether every copy has passed a check: until then "ok" only means nothing is wrong
 * yet, and the card says "Not checked yet".
 */
checked: boolean, };

export type MemberCard = { did: string, name: string, accepted: boolean, isYou: boolean, };

export type InvitationCard = { uri: string, fromName: string, circleName: string, 
/**
 * "Alice asks you to keep copies of Alice's, Bob's and Carol's accounts, about 120 MB,
 * checked every 30 minutes".
 */
text: string, memberNames: Array<string>, estimatedBytes: number, checkEvery: string, };

export type Health = { uri: string, name: string, 
/**
 * "ok", "degraded", "recovering", "at-risk", "failed", "unknown".
 */
state: string, sentence: string, 
/**
 * What is not right, in words: every line of `attention`, in its order.
 */
reasons: Array<string>, 
/**
 * The heading above `sentence`, consistent with the worst line of `attention`:
 * "Healthy", "Not checked yet", "Getting ready", "Needs a look", "At risk", …
 */
label: string, 
/**
 * How to colour it: "ok", "busy", "warn", "danger", "muted".
 */
tone: string, 
/**
 * What needs attention, one sentence per problem, grouped by person (the circle first,
 * then you, then the others).
 */
attention: Array<Attention>, 
/**
 * The policy engine's own conditions that are not true, and what could not be read
 * (for a "Details" view: names instead of DIDs, otherwise as the engine says them).
 */
details: Array<string>, 
/**
 * The circle's rules, in sentences: "Each member's account is kept by 2 friends in the
 * circle."
 */
rules: Array<string>, 
/**
 * When every copy last passed its check (RFC 3339): the oldest of those checks; `None`
 * while any copy is not checked yet.
 */
checkedAt: string | null, members: Array<MemberHealth>, 
/**
 * Bytes this computer holds for each member's account.
 */
storage: Array<StorageItem>, timeline: Array<TimelineEvent>, 
/**
 * When the report was computed (RFC 3339).
 */
evaluatedAt: string, };

export type Attention = { 
/**
 * The member's DID; `None` for the circle itself.
 */
did: string | null, 
/**
 * "You", "bob.test", "The circle".
 */
name: string, 
/**
 * The worst line's: "note" (no bearing on the circle's state), "waiting", "warn",
 * "danger".
 */
tone: string, 
/**
 * One sentence per problem.
 */
lines: Array<string>, };

export type MemberHealth = { did: string, name: string, state: string, 
/**
 * "holds 2 accounts, all checks passed", "did not answer for 3 days".
 */
words: string, lastSeen: string | null, 
/**
 * Checks of this member's copies over the last days, oldest first.
 */
checks: Array<CheckPoint>, 
/**
 * The copies a whole-copy check found lacking, one sentence each ("Its copy of Alice's
 * account is missing 5 posts or other records (12 kB)").
 */
needs: Array<string>, };

export type CheckPoint = { at: string, 
/**
 * "pass", "fail", "unreachable".
 */
outcome: string, };

export type StorageItem = { name: string, bytes: number, };

export type TimelineEvent = { at: string, 
/**
 * "sync", "check", "circle", "alert".
 */
kind: string, text: string, };

export type Storage = { usedBytes: number, limitBytes: number | null, perFriend: Array<StorageItem>, 
/**
 * Days older versions are kept (Settings).
 */
retentionDays: number, 
/**
 * Set when the storage limit is reached (or nearly: a backup did not fit), in words.
 */
limitText: string | null, };

export type Collection = { 
/**
 * Nothing was changed: these are the figures a collection would have now.
 */
dryRun: boolean, bytes: number, 
/**
 * Old versions of accounts removed.
 */
versions: number, 
/**
 * Image files removed.
 */
images: number, 
/**
 * In words: "About 12 MB of older versions can be freed".
 */
text: string, };

export type KeptVersion = { 
/**
 * Which one (the restore names it back; shown only in a details view).
 */
rev: string, 
/**
 * When the account was in this state (RFC 3339).
 */
time: string, 
/**
 * Records in it, when known.
 */
records: number | null, };

export type RecoveryKeyStatus = { 
/**
 * `none` (not set up), `code-sent` (the server emailed a confirmation code),
 * `registered` (the identity lists the key kept here), `held` (a key is kept here but
 * the identity does not list it), `unknown` (the identity could not be read just now),
 * `unavailable` (not signed in, or an identity that cannot have one).
 */
state: string, 
/**
 * In words.
 */
text: string, 
/**
 * The key to write down: only in the answer that registered it.
 */
code: string | null, };

export type RestoreChoice = { did: string, name: string, 
/**
 * The version a restore uses unless another is picked.
 */
suggested: KeptVersion, 
/**
 * Why that one, in words.
 */
why: string, 
/**
 * Every kept version, newest first.
 */
versions: Array<KeptVersion>, };

export type RestoreInput = { did: string, 
/**
 * A kept version (`KeptVersion.rev`); none: the suggested one.
 */
rev: string | null, 
/**
 * The new server's address, e.g. https://pds.example.net.
 */
toPds: string, 
/**
 * The handle on the new server.
 */
handle: string, 
/**
 * The password of the account on the new server.
 */
password: string, 
/**
 * The owner's main password on the old server, when different.
 */
oldPassword: string | null, email: string | null, inviteCode: string | null, 
/**
 * The confirmation code the old server emailed to the owner after a first run: with it
 * the identity moves to the new server and the account is switched on there.
 */
plcToken: string | null, 
/**
 * The owner's recovery key (the code they wrote down); none: the one kept in this
 * computer's keyring for the account, if any. With it the old server is not needed.
 */
recoveryKey: string | null, };

export type RestoreStep = { 
/**
 * "preparing", "account", "records", "images".
 */
phase: string, 
/**
 * Bytes of records sent so far.
 */
bytes: number, imagesDone: number, imagesTotal: number, };

export type NotRestoredItem = { what: string, reason: string, };

export type RestoreOutcome = { did: string, name: string, 
/**
 * The version given back (RFC 3339) and why it was used.
 */
time: string, why: string, toPds: string, records: number, images: number, imagesTotal: number, notRestored: Array<NotRestoredItem>, 
/**
 * The account's identity now names the new server.
 */
identityMoved: boolean, 
/**
 * What is left to do, in words.
 */
nextSteps: Array<string>, 
/**
 * Everything the version names is on the new server.
 */
complete: boolean, };

export type Settings = { 
/**
 * Where the copies are kept. Changed with the shell's `move_storage` command, not by
 * saving the settings (a changed value here is ignored).
 */
dataDir: string, 
/**
 * The folder was given on the command line (`--data-dir`) or in `P2PDS_DATA_DIR`: the app
 * can't move it. Ignored when saving.
 */
dataDirFixed: boolean, 
/**
 * A copy left behind by a move, still on disk: it can be deleted
 * (`delete_old_copy`). Ignored when saving.
 */
oldDataDir: string | null, storageLimitBytes: number | null, 
/**
 * Days of history kept for each friend's account: older versions are removed by garbage
 * collection, never the newest.
 */
retentionDays: number, startAtLogin: boolean, 
/**
 * Minutes between backups of each friend.
 */
checkEveryMinutes: number, pauseOnBattery: boolean, 
/**
 * Serve the copies to friends (RASL and sync reads).
 */
serve: boolean, 
/**
 * Address to listen on when serving.
 */
listen: string, 
/**
 * The address friends reach this computer at, advertised to circles.
 */
endpoint: string | null, };

export type MoveReport = { 
/**
 * The folder the copies were in (left in place until deleted).
 */
from: string, 
/**
 * The folder they are in now.
 */
to: string, 
/**
 * Bytes copied: the database and the images.
 */
bytes: number, 
/**
 * Image files copied.
 */
files: number, };

export type MoveProgress = { 
/**
 * "waiting" (for the current backup to finish), "copying", "checking".
 */
phase: string, doneBytes: number, totalBytes: number, };

export type Event = { "type": "changed" } | { "type": "progress", did: string, progress: Progress, } | { "type": "moving", progress: MoveProgress, } | { "type": "restoring", did: string, step: RestoreStep, } | { "type": "alert", key: string, title: string, body: string, };

export type ErrorCode = "not-signed-in" | "sign-in-refused" | "browser-sign-in" | "keyring" | "network" | "moving" | "storage" | "invalid" | "link-damaged" | "link-not-for-you" | "link-outdated" | "link-revoked" | "link-gone" | "other";

export type ErrorAnswer = { code: ErrorCode, 
/**
 * What happened and what to do, in words.
 */
message: string, };

export type BrowserSignInStarted = { url: string, };
