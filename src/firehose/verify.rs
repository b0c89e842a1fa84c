//! Verifying a `#commit` against the copy held, by the sync 1.1 rules, before anything
//! counts.
//!
//! Two stages, so that the costly one can run on another thread than the store:
//! - [`check_signed`] needs only the event and the account's key: every block of the CAR
//!   hashed against its CID, the commit block present (the CAR's root), decoded, for the
//!   event's repo and rev, not from the future, and signed by the key.
//! - [`check_chain`] needs the copy held: the rev strictly newer than the held one,
//!   `prevData` equal to the held tree's root, and the operations exactly the changes from
//!   the held tree to the new one (an `mst::diff` over the event's blocks first, then the
//!   held blocks; the new tree is validated on the way, and the diff stops as soon as it
//!   finds more changes than the event lists). Every created or updated record must be in
//!   the event's blocks (or already held).
//!
//! A refusal is a verdict with a kind and words, not an error: only a failure to read the
//! copy held is an error. A block missing from the diff means the event does not chain onto
//! what is held (a resync is needed), never a crash.

use std::collections::{HashMap, HashSet};

use cid::Cid;

use super::frame::{Action, CommitEvent, RepoOp};
use crate::crypto::PublicKey;
use crate::repo::car::CarReader;
use crate::repo::commit::Commit;
use crate::repo::mst::{self, BlockSource, Change, MstError};
use crate::repo::tid;

/// How far in the future a commit's rev may claim to be (the same as a polled sync).
const MAX_REV_SKEW_MICROS: u64 = 10 * 60 * 1_000_000;

/// Why a commit event was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// The blocks CAR does not read, a block does not match its CID, or a record the
    /// operations name is not in it.
    BadBlocks,
    /// The commit block is missing, malformed, of another rev than the event, or from the
    /// future.
    BadCommit,
    /// The commit is for another account than the event says.
    WrongRepo,
    /// The commit's signature does not match the account's key.
    BadSignature,
    /// The commit is not newer than the copy held (a replay or a rollback).
    RevNotNewer,
    /// The commit does not follow the copy held: `prevData` missing or another tree, or a
    /// block of the held or new tree missing.
    BrokenChain,
    /// The new record tree is not a valid, canonical tree.
    BadTree,
    /// The operations are not exactly the changes between the two trees.
    OpsMismatch,
    /// No verified copy of the account is held yet (a full sync comes first).
    NotHeld,
}

impl RefusalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadBlocks => "bad_blocks",
            Self::BadCommit => "bad_commit",
            Self::WrongRepo => "wrong_repo",
            Self::BadSignature => "bad_signature",
            Self::RevNotNewer => "rev_not_newer",
            Self::BrokenChain => "broken_chain",
            Self::BadTree => "bad_tree",
            Self::OpsMismatch => "ops_mismatch",
            Self::NotHeld => "not_held",
        }
    }

    /// Whether the account must be fetched again (verified) to be up to date. A commit not
    /// newer than the copy held leaves nothing missing.
    pub fn needs_resync(self) -> bool {
        self != Self::RevNotNewer
    }
}

/// A refused commit: its kind (for code) and what happened (for people).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{words}")]
pub struct Refusal {
    pub kind: RefusalKind,
    pub words: String,
}

fn refuse(kind: RefusalKind, words: impl Into<String>) -> Refusal {
    Refusal {
        kind,
        words: words.into(),
    }
}

/// Reading the copy held failed (the store, not the event).
#[derive(Debug, thiserror::Error)]
#[error("reading the copy held failed: {0}")]
pub struct ReadError(pub String);

/// A commit event whose blocks, commit and signature were checked, not yet against the
/// copy held.
#[derive(Clone, Debug)]
pub struct Signed {
    pub seq: i64,
    pub did: String,
    pub commit_cid: Cid,
    pub commit: Commit,
    pub commit_bytes: Vec<u8>,
    pub ops: Vec<RepoOp>,
    pub prev_data: Option<Cid>,
    pub blobs: Vec<Cid>,
    pub time: String,
    /// The key that verified the signature, as `did:key`.
    pub signing_key: String,
    /// Every other block of the CAR, hashed against its CID.
    pub blocks: HashMap<Cid, Vec<u8>>,
}

/// The account's key as the store holds it: parsed, and the `did:key` text each kept version
/// names (read once, not encoded again for every commit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldKey {
    pub key: PublicKey,
    pub did_key: String,
}

impl HeldKey {
    pub fn parse(did_key: &str) -> Result<Self, crate::crypto::KeyError> {
        Ok(Self {
            key: PublicKey::from_did_key(did_key)?,
            did_key: did_key.to_string(),
        })
    }
}

impl From<PublicKey> for HeldKey {
    fn from(key: PublicKey) -> Self {
        Self {
            did_key: key.to_did_key(),
            key,
        }
    }
}

/// What is held of the account: its verified head, rev and tree root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub head: Option<Cid>,
    pub rev: Option<String>,
    pub data: Option<Cid>,
}

/// A commit verified against the copy held: what the store writes.
#[derive(Clone, Debug)]
pub struct Verified {
    pub seq: i64,
    pub did: String,
    pub rev: String,
    pub commit_cid: Cid,
    /// The new tree's root.
    pub data: Cid,
    pub signing_key: String,
    /// The changes from the held tree to the new one, in key order (the operations, proven).
    pub changes: Vec<Change>,
    /// The commit block, then the new tree's nodes taken from the event.
    pub nodes: Vec<(Cid, Vec<u8>)>,
    /// The created and updated records taken from the event.
    pub records: HashMap<Cid, Vec<u8>>,
    pub blobs: Vec<Cid>,
    pub time: String,
}

/// The outcome of verifying one commit event.
#[derive(Clone, Debug)]
pub enum Verdict {
    Verified(Box<Verified>),
    Refused(Refusal),
}

/// Both stages: the event checked on its own, then against the copy held.
pub fn verify_commit(
    event: CommitEvent,
    key: &HeldKey,
    held: &Held,
    store: &mut impl BlockSource,
) -> Result<Verdict, ReadError> {
    match check_signed(event, key) {
        Ok(signed) => check_chain(signed, held, store),
        Err(refusal) => Ok(Verdict::Refused(refusal)),
    }
}

/// The first stage: the event's blocks, commit and signature, without the copy held.
pub fn check_signed(event: CommitEvent, key: &HeldKey) -> Result<Signed, Refusal> {
    use RefusalKind::*;
    let mut car = CarReader::new(&event.blocks[..])
        .map_err(|e| refuse(BadBlocks, format!("the event's blocks do not read: {e}")))?;
    if car.roots().first() != Some(&event.commit) {
        return Err(refuse(
            BadBlocks,
            format!(
                "the event's blocks are not rooted at its commit {}",
                event.commit
            ),
        ));
    }
    let mut blocks = HashMap::new();
    // The CAR is at most 2 MiB, so it holds a bounded number of blocks.
    loop {
        match car.next_block() {
            Ok(Some((cid, data))) => {
                blocks.entry(cid).or_insert_with(|| data.to_vec());
            }
            Ok(None) => break,
            Err(e) => return Err(refuse(BadBlocks, format!("the event's blocks: {e}"))),
        }
    }
    let commit_bytes = blocks.remove(&event.commit).ok_or_else(|| {
        refuse(
            BadCommit,
            format!("the commit block {} is not in the event", event.commit),
        )
    })?;
    let commit = Commit::decode(&commit_bytes).map_err(|e| refuse(BadCommit, e.to_string()))?;
    if commit.did != event.repo {
        return Err(refuse(
            WrongRepo,
            format!(
                "the event is about {} but its commit is for {}",
                event.repo, commit.did
            ),
        ));
    }
    if commit.rev != event.rev {
        return Err(refuse(
            BadCommit,
            format!(
                "the event says revision {} but its commit has {}",
                event.rev, commit.rev
            ),
        ));
    }
    let now = chrono::Utc::now().timestamp_micros().max(0) as u64;
    if tid::timestamp_micros(&commit.rev).unwrap_or(0) > now + MAX_REV_SKEW_MICROS {
        return Err(refuse(
            BadCommit,
            format!(
                "the commit's revision {} claims a time in the future",
                commit.rev
            ),
        ));
    }
    commit.verify_signature(&key.key).map_err(|e| {
        refuse(
            BadSignature,
            format!("the commit's signature does not match the account's key ({e})"),
        )
    })?;
    Ok(Signed {
        seq: event.seq,
        did: event.repo,
        commit_cid: event.commit,
        commit,
        commit_bytes,
        ops: event.ops,
        prev_data: event.prev_data,
        blobs: event.blobs,
        time: event.time,
        signing_key: key.did_key.clone(),
        blocks,
    })
}

/// The event's blocks first, then the copy held; notes which event blocks were read.
struct Overlay<'a, S> {
    event: &'a HashMap<Cid, Vec<u8>>,
    held: &'a mut S,
    used: HashSet<Cid>,
}

impl<S: BlockSource> BlockSource for Overlay<'_, S> {
    fn get_block(&mut self, cid: &Cid) -> Result<Option<Vec<u8>>, MstError> {
        if let Some(bytes) = self.event.get(cid) {
            self.used.insert(*cid);
            return Ok(Some(bytes.clone()));
        }
        self.held.get_block(cid)
    }
}

/// One operation as a comparable value: (path, action, new record, previous record).
type OpKey = (String, Action, Option<Cid>, Option<Cid>);

fn change_key(change: &Change) -> OpKey {
    let path = |key: &[u8]| String::from_utf8_lossy(key).into_owned();
    match change {
        Change::Create { key, cid } => (path(key), Action::Create, Some(*cid), None),
        Change::Update { key, prev, cid } => (path(key), Action::Update, Some(*cid), Some(*prev)),
        Change::Delete { key, prev } => (path(key), Action::Delete, None, Some(*prev)),
    }
}

fn op_words(op: &OpKey) -> String {
    let link = |c: &Option<Cid>| c.map(|c| c.to_string()).unwrap_or_else(|| "none".into());
    match op.1 {
        Action::Create => format!("create {} as {}", op.0, link(&op.2)),
        Action::Update => format!("update {} from {} to {}", op.0, link(&op.3), link(&op.2)),
        Action::Delete => format!("delete {} (was {})", op.0, link(&op.3)),
    }
}

/// The first difference between the operations claimed and the changes found, in words.
fn mismatch_words(claimed: &[OpKey], found: &[OpKey]) -> String {
    if let Some(op) = found.iter().find(|c| !claimed.contains(c)) {
        return format!(
            "the new tree does {} but no operation says so",
            op_words(op)
        );
    }
    if let Some(op) = claimed.iter().find(|c| !found.contains(c)) {
        return format!(
            "an operation says {} but the new tree does not",
            op_words(op)
        );
    }
    "the operations list a change twice".into()
}

/// Checks each operation on its own: a valid path, and the links its action needs.
fn op_shapes(ops: &[RepoOp]) -> Result<Vec<OpKey>, Refusal> {
    let mut claimed = Vec::with_capacity(ops.len());
    for op in ops {
        if !mst::valid_key(op.path.as_bytes()) {
            return Err(refuse(
                RefusalKind::OpsMismatch,
                format!("an operation names the invalid record path '{}'", op.path),
            ));
        }
        let ok = match op.action {
            Action::Create => op.cid.is_some() && op.prev.is_none(),
            Action::Update => op.cid.is_some() && op.prev.is_some(),
            Action::Delete => op.cid.is_none() && op.prev.is_some(),
        };
        if !ok {
            return Err(refuse(
                RefusalKind::OpsMismatch,
                format!(
                    "the {} of {} does not carry the record links it needs (sync 1.1)",
                    op.action.as_str(),
                    op.path
                ),
            ));
        }
        claimed.push((op.path.clone(), op.action, op.cid, op.prev));
    }
    claimed.sort();
    Ok(claimed)
}

/// Why a diff stopped: the tree, or more changes than the event lists.
enum Stop {
    Tree(MstError),
    TooMany,
}

impl From<MstError> for Stop {
    fn from(e: MstError) -> Self {
        Self::Tree(e)
    }
}

/// The second stage: the signed commit against the copy held.
pub fn check_chain(
    signed: Signed,
    held: &Held,
    store: &mut impl BlockSource,
) -> Result<Verdict, ReadError> {
    match chain(signed, held, store) {
        Ok(verified) => Ok(Verdict::Verified(Box::new(verified))),
        Err(Ok(refusal)) => Ok(Verdict::Refused(refusal)),
        Err(Err(read)) => Err(read),
    }
}

fn chain(
    signed: Signed,
    held: &Held,
    store: &mut impl BlockSource,
) -> Result<Verified, Result<Refusal, ReadError>> {
    use RefusalKind::*;
    let (Some(held_rev), Some(held_data)) = (&held.rev, held.data) else {
        return Err(Ok(refuse(
            NotHeld,
            format!(
                "no verified copy of {} is held yet: a full sync comes first",
                signed.did
            ),
        )));
    };
    let rev = &signed.commit.rev;
    if rev.as_str() <= held_rev.as_str() {
        return Err(Ok(refuse(
            RevNotNewer,
            format!("revision {rev} is not newer than the copy held ({held_rev}); keeping the held copy"),
        )));
    }
    match signed.prev_data {
        None => {
            return Err(Ok(refuse(
                BrokenChain,
                "the event does not say which tree it follows (no prevData): the account must be fetched again",
            )))
        }
        Some(prev) if prev != held_data => {
            return Err(Ok(refuse(
                BrokenChain,
                format!("the commit follows tree {prev}, but the copy held has tree {held_data}: a commit was missed, the account must be fetched again"),
            )))
        }
        Some(_) => {}
    }
    let claimed = op_shapes(&signed.ops).map_err(Ok)?;
    let mut source = Overlay {
        event: &signed.blocks,
        held: store,
        used: HashSet::new(),
    };
    let mut changes = Vec::with_capacity(claimed.len());
    let limit = claimed.len();
    let walked = mst::diff(&mut source, Some(held_data), signed.commit.data, |c| {
        if changes.len() == limit {
            return Err(Stop::TooMany);
        }
        changes.push(c);
        Ok(())
    });
    match walked {
        Ok(_) => {}
        Err(Stop::TooMany) => {
            return Err(Ok(refuse(
                OpsMismatch,
                format!("the new tree changes more records than the {limit} operations listed"),
            )))
        }
        Err(Stop::Tree(MstError::Source(e))) => return Err(Err(ReadError(e))),
        Err(Stop::Tree(e @ MstError::MissingBlock(_))) => {
            return Err(Ok(refuse(
                BrokenChain,
                format!("{e}: the event does not chain onto the copy held, the account must be fetched again"),
            )))
        }
        Err(Stop::Tree(e)) => return Err(Ok(refuse(BadTree, e.to_string()))),
    }
    let mut found: Vec<OpKey> = changes.iter().map(change_key).collect();
    found.sort();
    if found != claimed {
        return Err(Ok(refuse(OpsMismatch, mismatch_words(&claimed, &found))));
    }
    let used = source.used;
    verified(signed, changes, used, store)
}

/// Gathers what the store writes; every created or updated record must be in the event (or
/// already held).
fn verified(
    mut signed: Signed,
    changes: Vec<Change>,
    used: HashSet<Cid>,
    store: &mut impl BlockSource,
) -> Result<Verified, Result<Refusal, ReadError>> {
    let mut records = HashMap::new();
    for change in &changes {
        let (key, cid) = match change {
            Change::Create { key, cid } | Change::Update { key, cid, .. } => (key, cid),
            Change::Delete { .. } => continue,
        };
        if let Some(bytes) = signed.blocks.remove(cid) {
            records.insert(*cid, bytes);
        } else if !records.contains_key(cid) {
            let held = store
                .get_block(cid)
                .map_err(|e| Err(ReadError(e.to_string())))?;
            if held.is_none() {
                return Err(Ok(refuse(
                    RefusalKind::BadBlocks,
                    format!(
                        "record {} ({cid}) is not in the event's blocks",
                        String::from_utf8_lossy(key)
                    ),
                )));
            }
        }
    }
    let mut nodes = Vec::with_capacity(used.len() + 1);
    nodes.push((signed.commit_cid, signed.commit_bytes));
    for cid in used {
        if let Some(bytes) = signed.blocks.remove(&cid) {
            nodes.push((cid, bytes));
        }
    }
    Ok(Verified {
        seq: signed.seq,
        did: signed.did,
        rev: signed.commit.rev,
        commit_cid: signed.commit_cid,
        data: signed.commit.data,
        signing_key: signed.signing_key,
        changes,
        nodes,
        records,
        blobs: signed.blobs,
        time: signed.time,
    })
}
