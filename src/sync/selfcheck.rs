//! Self-check and repair of the node's own copies: bit rot on this node's disk is
//! found before a peer or a restore finds it, and repaired from the account's PDS.
//!
//! A check of one account ([`check_repo`]) re-hashes a random sample of its stored
//! blocks, then verifies the held commit block and walks the whole record tree from
//! it, hashing every tree node read and looking up every record block the leaves
//! name. A node that is missing or corrupt hides its subtree: what lies below it
//! is not counted (it cannot be known). Each check is recorded in `self_checks`.
//!
//! A repair ([`repair_repo`]) re-hashes every block of the account, deletes the rows
//! whose bytes do not match their CID (provably corrupt: nothing else is deleted),
//! then fetches the whole repo again and re-ingests it with full verification
//! ([`Syncer::resync_full`]), which brings missing blocks back even when the PDS's
//! head is the one held. If the PDS cannot be reached or the account is not active
//! there, the damage is reported ([`SyncError::Damaged`]) and the rest of the copy
//! stays. [`run`] checks every held account and repairs the damaged ones.
//!
//! Sampling draws random CIDs (the digest part) from a generator seeded by the OS and
//! reads the first stored block at or after each one through the `(repo_id, cid)`
//! index: every draw hits a block of the account in O(log n), however the account's
//! rows are interleaved with other accounts' in the table, and CIDs being hashes, the
//! draws are spread evenly.

use std::collections::HashSet;

use cid::Cid;
use rand::rngs::{OsRng, StdRng};
use rand::{RngCore, SeedableRng};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};

use super::{SyncError, Syncer};
use crate::repo::commit::Commit;
use crate::repo::mst::{self, BlockSource, MstError};
use crate::repo::verify_block;
use crate::store::{self, StoreError};

/// A reasonable sample for a periodic check: a few hundred blocks per account.
pub const DEFAULT_SAMPLE: usize = 256;
/// Blocks re-hashed by the check that follows a repair (the tree is walked whole).
pub const RECHECK_SAMPLE: usize = 1000;
/// How many CIDs of each kind a check's `detail` names.
const NAMED_IN_DETAIL: usize = 3;
/// The prefix of a CIDv1 of a DAG-CBOR block hashed with SHA-256: every repo block.
const CBOR_SHA256_PREFIX: [u8; 4] = [0x01, 0x71, 0x12, 0x20];

/// What a check concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Damaged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Damaged => "damaged",
        }
    }
}

/// One self-check of one account's copy (a row of `self_checks`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SelfCheck {
    /// The row in `self_checks`.
    pub id: i64,
    pub did: String,
    pub at: String,
    /// Distinct blocks whose bytes were hashed: the sample, the commit, every tree node read.
    pub blocks_checked: u64,
    /// Blocks whose bytes do not hash to their CID.
    pub bad_blocks: u64,
    /// Blocks of the held commit's tree (commit, nodes, records) not in the store.
    pub missing_blocks: u64,
    pub outcome: Outcome,
    pub detail: Option<String>,
    /// Set by [`run`] when a damaged copy was repaired and checked again.
    pub repaired: bool,
    /// Why [`run`] could not repair a damaged copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair_error: Option<String>,
}

/// What a repair did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Repair {
    pub did: String,
    /// Blocks of the account re-hashed to find the corrupt ones.
    pub blocks_scanned: u64,
    pub bad_blocks_removed: u64,
    /// Blocks the re-ingest added (the missing ones and those of any newer commit).
    pub blocks_restored: u64,
    /// Records whose row was created, changed or deleted when the table was rebuilt.
    pub records_changed: u64,
    pub rev: String,
    pub commit: String,
    /// The check made after the repair.
    pub recheck: SelfCheck,
}

impl Repair {
    /// The copy checked sound after the repair.
    pub fn repaired(&self) -> bool {
        self.recheck.outcome == Outcome::Ok
    }
}

/// What one inspection found (before it becomes a [`SelfCheck`]).
#[derive(Debug, Default)]
struct Findings {
    /// CIDs (as stored) of the blocks whose bytes were hashed.
    checked: HashSet<Vec<u8>>,
    /// CIDs (as stored) of the blocks whose bytes do not match.
    bad: HashSet<Vec<u8>>,
    missing: HashSet<Cid>,
    /// Other damage, in words.
    notes: Vec<String>,
}

impl Findings {
    fn outcome(&self) -> Outcome {
        if self.bad.is_empty() && self.missing.is_empty() && self.notes.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Damaged
        }
    }

    fn detail(&self) -> Option<String> {
        fn named(items: Vec<String>) -> String {
            let mut items = items;
            items.sort();
            let more = items.len().saturating_sub(NAMED_IN_DETAIL);
            items.truncate(NAMED_IN_DETAIL);
            let mut text = items.join(", ");
            if more > 0 {
                text.push_str(&format!(" and {more} more"));
            }
            text
        }
        let mut parts = Vec::new();
        if !self.bad.is_empty() {
            let cids = self.bad.iter().map(|b| cid_text(b)).collect();
            parts.push(format!(
                "{} blocks do not match their CID ({})",
                self.bad.len(),
                named(cids)
            ));
        }
        if !self.missing.is_empty() {
            let cids = self.missing.iter().map(Cid::to_string).collect();
            parts.push(format!(
                "{} blocks of the held tree are missing ({})",
                self.missing.len(),
                named(cids)
            ));
        }
        parts.extend(self.notes.iter().cloned());
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

fn cid_text(bytes: &[u8]) -> String {
    match Cid::try_from(bytes) {
        Ok(cid) => cid.to_string(),
        Err(_) => format!("unreadable CID {}", hex(bytes)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Do the stored bytes hash to the stored CID?
fn block_ok(cid: &[u8], data: &[u8]) -> bool {
    Cid::try_from(cid).is_ok_and(|cid| verify_block(&cid, data).is_ok())
}

/// A column's bytes as stored. Rot can leave a value that is not a blob at all: its
/// bytes (none for a number or NULL) then simply fail the hash.
fn stored_bytes(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Vec<u8>> {
    Ok(match row.get_ref(idx)? {
        ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
        ValueRef::Null | ValueRef::Integer(_) | ValueRef::Real(_) => Vec::new(),
    })
}

fn get_block(conn: &Connection, repo_id: i64, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT data FROM blocks WHERE repo_id = ?1 AND cid = ?2")?;
    Ok(stmt
        .query_row(rusqlite::params![repo_id, cid.to_bytes()], |r| {
            stored_bytes(r, 0)
        })
        .optional()?)
}

fn has_block(conn: &Connection, repo_id: i64, cid: &Cid) -> Result<bool, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM blocks WHERE repo_id = ?1 AND cid = ?2")?;
    Ok(stmt.exists(rusqlite::params![repo_id, cid.to_bytes()])?)
}

/// A seed from the OS (the clock if the OS has none to give).
fn os_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    if let Err(e) = OsRng.try_fill_bytes(&mut seed) {
        tracing::warn!(error = %e, "no randomness from the OS; sampling blocks by the clock");
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        seed[..8].copy_from_slice(&nanos.to_le_bytes());
    }
    seed
}

/// Hands `visit` up to `sample` distinct blocks `(cid, data)` of the repo, drawn
/// at random; all of them when the repo holds no more than `sample` (by `counted`).
fn sample_blocks(
    conn: &Connection,
    repo_id: i64,
    counted: i64,
    sample: usize,
    rng: &mut impl RngCore,
    visit: &mut dyn FnMut(Vec<u8>, Vec<u8>),
) -> Result<(), StoreError> {
    if sample == 0 {
        return Ok(());
    }
    if counted <= sample as i64 {
        let mut stmt = conn.prepare_cached("SELECT cid, data FROM blocks WHERE repo_id = ?1")?;
        let mut rows = stmt.query([repo_id])?;
        while let Some(row) = rows.next()? {
            visit(stored_bytes(row, 0)?, stored_bytes(row, 1)?);
        }
        return Ok(());
    }
    let mut at_or_after = conn.prepare_cached(
        "SELECT id, cid, data FROM blocks WHERE repo_id = ?1 AND cid >= ?2 ORDER BY cid LIMIT 1",
    )?;
    let mut first = conn.prepare_cached(
        "SELECT id, cid, data FROM blocks WHERE repo_id = ?1 ORDER BY cid LIMIT 1",
    )?;
    type Row = (i64, Vec<u8>, Vec<u8>);
    let read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<Row> {
        Ok((r.get(0)?, stored_bytes(r, 1)?, stored_bytes(r, 2)?))
    };
    let mut seen: HashSet<i64> = HashSet::with_capacity(sample);
    // Draws land twice on a block now and then: allow some extra, then stop (the
    // counter may also overstate the rows left after damage).
    for _ in 0..sample.saturating_mul(3) {
        if seen.len() >= sample {
            break;
        }
        let mut probe = CBOR_SHA256_PREFIX.to_vec();
        let mut digest = [0u8; 32];
        rng.fill_bytes(&mut digest);
        probe.extend_from_slice(&digest);
        let row = match at_or_after
            .query_row(rusqlite::params![repo_id, probe], read)
            .optional()?
        {
            Some(row) => Some(row),
            // Past the last CID: wrap around to the first.
            None => first.query_row([repo_id], read).optional()?,
        };
        let Some((id, cid, data)) = row else {
            break;
        };
        if seen.insert(id) {
            visit(cid, data);
        }
    }
    Ok(())
}

/// Tree nodes from the store, each hashed against its CID: a corrupt one is noted
/// and reads as absent. A store failure is kept aside to be returned as such.
struct CheckedSource<'a> {
    conn: &'a Connection,
    repo_id: i64,
    findings: &'a mut Findings,
    failure: Option<StoreError>,
}

impl BlockSource for CheckedSource<'_> {
    fn get_block(&mut self, cid: &Cid) -> Result<Option<Vec<u8>>, MstError> {
        let bytes = match get_block(self.conn, self.repo_id, cid) {
            Ok(bytes) => bytes,
            Err(e) => {
                let reason = e.to_string();
                self.failure = Some(e);
                return Err(MstError::Source(reason));
            }
        };
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        self.findings.checked.insert(cid.to_bytes());
        if verify_block(cid, &bytes).is_err() {
            self.findings.bad.insert(cid.to_bytes());
            return Ok(None);
        }
        Ok(Some(bytes))
    }
}

enum WalkError {
    Tree(MstError),
    Store(StoreError),
}

impl From<MstError> for WalkError {
    fn from(e: MstError) -> Self {
        Self::Tree(e)
    }
}

/// Walks what can be walked of a damaged tree: every node reachable through present,
/// sound nodes is hashed and read, and every missing node or record block counted.
fn scan_damaged_tree(
    conn: &Connection,
    repo_id: i64,
    root: Cid,
    findings: &mut Findings,
) -> Result<(), StoreError> {
    let mut stack = vec![root];
    // Hashed nodes cannot form a cycle; the bound only guards against the impossible.
    let mut budget: u64 = 100_000_000;
    while let Some(cid) = stack.pop() {
        budget = budget.saturating_sub(1);
        if budget == 0 {
            findings
                .notes
                .push("the record tree is too large to scan".into());
            break;
        }
        let Some(bytes) = get_block(conn, repo_id, &cid)? else {
            findings.missing.insert(cid);
            continue;
        };
        findings.checked.insert(cid.to_bytes());
        if verify_block(&cid, &bytes).is_err() {
            findings.bad.insert(cid.to_bytes());
            continue;
        }
        let node = match mst::decode_node(&cid, &bytes) {
            Ok(node) => node,
            Err(e) => {
                findings.notes.push(e.to_string());
                continue;
            }
        };
        stack.extend(node.left);
        for entry in node.entries {
            if !has_block(conn, repo_id, &entry.value)? {
                findings.missing.insert(entry.value);
            }
            stack.extend(entry.right);
        }
    }
    Ok(())
}

enum Inspected {
    Unknown,
    NotHeld,
    Done(Findings),
}

/// The whole check of one account, on a read connection.
fn inspect(
    conn: &Connection,
    did: &str,
    sample: usize,
    rng: &mut impl RngCore,
) -> Result<Inspected, StoreError> {
    type RepoFields = (i64, Option<Vec<u8>>, Option<Vec<u8>>, i64);
    let repo: Option<RepoFields> = conn
        .query_row(
            "SELECT id, head, data, blocks FROM repos WHERE did = ?1",
            [did],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((repo_id, head, data, counted)) = repo else {
        return Ok(Inspected::Unknown);
    };
    let Some(head) = head else {
        return Ok(Inspected::NotHeld);
    };
    let mut f = Findings::default();

    // (a) A random sample of the stored blocks.
    sample_blocks(conn, repo_id, counted, sample, rng, &mut |cid, data| {
        if !block_ok(&cid, &data) {
            f.bad.insert(cid.clone());
        }
        f.checked.insert(cid);
    })?;

    // (b) The held commit, then its whole tree.
    let held_data = data.and_then(|d| Cid::try_from(d.as_slice()).ok());
    let mut root = held_data;
    match Cid::try_from(head.as_slice()) {
        Err(_) => f
            .notes
            .push(format!("the held head {} is not a CID", hex(&head))),
        Ok(head) => match get_block(conn, repo_id, &head)? {
            None => {
                f.missing.insert(head);
            }
            Some(bytes) => {
                f.checked.insert(head.to_bytes());
                if verify_block(&head, &bytes).is_err() {
                    f.bad.insert(head.to_bytes());
                } else {
                    match Commit::decode(&bytes) {
                        Ok(commit) => {
                            if Some(commit.data) != held_data {
                                f.notes.push(format!(
                                    "the held commit's tree root {} is not the repo's data root",
                                    commit.data
                                ));
                            }
                            root = Some(commit.data);
                        }
                        Err(e) => f.notes.push(format!("the held commit is unreadable: {e}")),
                    }
                }
            }
        },
    }
    let Some(root) = root else {
        f.notes.push("no record tree root is known".into());
        return Ok(Inspected::Done(f));
    };

    let mut leaves = 0u64;
    let mut missing_records = Vec::new();
    let (walked, failure) = {
        let mut src = CheckedSource {
            conn,
            repo_id,
            findings: &mut f,
            failure: None,
        };
        let walked = mst::walk(&mut src, root, |_, cid| {
            leaves += 1;
            match has_block(conn, repo_id, cid) {
                Ok(true) => {}
                Ok(false) => missing_records.push(*cid),
                Err(e) => return Err(WalkError::Store(e)),
            }
            Ok(())
        });
        (walked, src.failure)
    };
    if let Some(e) = failure {
        return Err(e);
    }
    match walked {
        Ok(_) => {
            f.missing.extend(missing_records);
            let rows: i64 = conn.query_row(
                "SELECT count(*) FROM records WHERE repo_id = ?1",
                [repo_id],
                |r| r.get(0),
            )?;
            if rows != leaves as i64 {
                f.notes.push(format!(
                    "the records table lists {rows} records, the tree holds {leaves}"
                ));
            }
        }
        Err(WalkError::Store(e)) => return Err(e),
        Err(WalkError::Tree(e)) => {
            // A missing or corrupt node stopped the walk: count what can be seen.
            if !matches!(e, MstError::MissingBlock(_)) {
                f.notes.push(e.to_string());
            }
            f.missing.extend(missing_records);
            scan_damaged_tree(conn, repo_id, root, &mut f)?;
        }
    }
    Ok(Inspected::Done(f))
}

fn insert_check(conn: &Connection, check: &SelfCheck) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO self_checks
           (at, did, blocks_checked, bad_blocks, missing_blocks, outcome, repaired, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        rusqlite::params![
            check.at,
            check.did,
            check.blocks_checked as i64,
            check.bad_blocks as i64,
            check.missing_blocks as i64,
            check.outcome.as_str(),
            check.repaired,
            check.detail
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Checks the copy held of `did`: re-hashes a random sample of `sample` of its
/// blocks, verifies the held commit and walks its whole tree; records the result
/// in `self_checks`. Errors only when the check could not be made (not backed up,
/// nothing held yet, the store failing): damage is a result, not an error.
pub async fn check_repo(syncer: &Syncer, did: &str, sample: usize) -> Result<SelfCheck, SyncError> {
    let started = std::time::Instant::now();
    let seed = os_seed();
    let owned = did.to_string();
    let inspected = syncer
        .store
        .read(move |conn| inspect(conn, &owned, sample, &mut StdRng::from_seed(seed)))
        .await?;
    let findings = match inspected {
        Inspected::Unknown => return Err(SyncError::NotBackedUp(did.to_string())),
        Inspected::NotHeld => return Err(SyncError::NotHeld(did.to_string())),
        Inspected::Done(findings) => findings,
    };
    let mut check = SelfCheck {
        id: 0,
        did: did.to_string(),
        at: store::now_text(),
        blocks_checked: findings.checked.len() as u64,
        bad_blocks: findings.bad.len() as u64,
        missing_blocks: findings.missing.len() as u64,
        outcome: findings.outcome(),
        detail: findings.detail(),
        repaired: false,
        repair_error: None,
    };
    let row = check.clone();
    check.id = syncer.store.write(move |c| insert_check(c, &row)).await??;
    match check.outcome {
        Outcome::Ok => tracing::debug!(
            %did, checked = check.blocks_checked, took = ?started.elapsed(), "self-check: sound"
        ),
        Outcome::Damaged => tracing::warn!(
            %did,
            bad = check.bad_blocks,
            missing = check.missing_blocks,
            detail = check.detail.as_deref().unwrap_or_default(),
            "self-check: the local copy is damaged"
        ),
    }
    Ok(check)
}

/// A stored block's row id and CID bytes.
type BlockRow = (i64, Vec<u8>);

/// Every stored block of the repo whose bytes do not match its CID: (row id, CID).
fn scan_all_blocks(conn: &Connection, repo_id: i64) -> Result<(u64, Vec<BlockRow>), StoreError> {
    let mut stmt = conn.prepare("SELECT id, cid, data FROM blocks WHERE repo_id = ?1")?;
    let mut rows = stmt.query([repo_id])?;
    let (mut scanned, mut bad) = (0u64, Vec::new());
    while let Some(row) = rows.next()? {
        scanned += 1;
        let (id, cid, data) = (row.get(0)?, stored_bytes(row, 1)?, stored_bytes(row, 2)?);
        if !block_ok(&cid, &data) {
            bad.push((id, cid));
        }
    }
    Ok((scanned, bad))
}

/// Deletes the given rows, each only if its bytes still fail their CID; returns how
/// many went. The repo's counters follow.
fn delete_bad_rows(
    conn: &mut Connection,
    repo_id: i64,
    rows: &[(i64, Vec<u8>)],
) -> Result<u64, StoreError> {
    let tx = conn.transaction()?;
    let (mut removed, mut bytes) = (0u64, 0i64);
    {
        let mut read = tx.prepare("SELECT cid, data FROM blocks WHERE id = ?1 AND repo_id = ?2")?;
        let mut delete = tx.prepare("DELETE FROM blocks WHERE id = ?1")?;
        for (id, _) in rows {
            let row: Option<(Vec<u8>, Vec<u8>)> = read
                .query_row(rusqlite::params![id, repo_id], |r| {
                    Ok((stored_bytes(r, 0)?, stored_bytes(r, 1)?))
                })
                .optional()?;
            let Some((cid, data)) = row else { continue };
            if block_ok(&cid, &data) {
                continue;
            }
            removed += delete.execute([id])? as u64;
            bytes += data.len() as i64;
        }
    }
    tx.execute(
        "UPDATE repos SET blocks = max(blocks - ?2, 0), bytes = max(bytes - ?3, 0) WHERE id = ?1",
        rusqlite::params![repo_id, removed as i64, bytes],
    )?;
    tx.commit()?;
    Ok(removed)
}

/// Repairs the copy held of `did`: deletes its corrupt block rows (found by
/// re-hashing every block), fetches the whole repo from the account's PDS and
/// re-ingests it with full verification, then checks the copy again; when that
/// check is sound, earlier damaged checks of the account are marked repaired.
/// If the PDS cannot be reached or the account is not active there, the error
/// ([`SyncError::Damaged`]) says how much is damaged, the account's state records
/// it, and nothing but the corrupt rows was deleted.
pub async fn repair_repo(syncer: &Syncer, did: &str) -> Result<Repair, SyncError> {
    let owned = did.to_string();
    let row = syncer
        .store
        .read(move |c| store::get_repo(c, &owned))
        .await?
        .ok_or_else(|| SyncError::NotBackedUp(did.to_string()))?;
    if row.head.is_none() {
        return Err(SyncError::NotHeld(did.to_string()));
    }
    let repo_id = row.id;
    let (blocks_scanned, bad) = syncer
        .store
        .read(move |c| scan_all_blocks(c, repo_id))
        .await?;
    let bad_blocks_removed = if bad.is_empty() {
        0
    } else {
        syncer
            .store
            .write(move |c| delete_bad_rows(c, repo_id, &bad))
            .await??
    };
    if bad_blocks_removed > 0 {
        tracing::warn!(%did, removed = bad_blocks_removed, "removed corrupt blocks");
    }

    let resync = match syncer.resync_full(did, &|_| {}).await {
        Ok(report) => match report.ingest {
            Some(outcome) => Ok(outcome),
            None => Err(SyncError::Upstream {
                did: did.to_string(),
                status: report.upstream_status,
            }),
        },
        Err(e) => Err(e),
    };
    let outcome = match resync {
        Ok(outcome) => outcome,
        Err(source) => {
            // How much is still missing, for the message (no sampling: the tree alone).
            let owned = did.to_string();
            let missing = match syncer
                .store
                .read(move |c| inspect(c, &owned, 0, &mut StdRng::from_seed([0; 32])))
                .await?
            {
                Inspected::Done(f) => f.missing.len() as u64,
                Inspected::Unknown | Inspected::NotHeld => 0,
            };
            let err = SyncError::Damaged {
                did: did.to_string(),
                bad: bad_blocks_removed,
                missing,
                source: Box::new(source),
            };
            let (d, msg, kind) = (did.to_string(), err.to_string(), err.kind());
            syncer
                .store
                .write(move |c| store::set_repo_failed(c, &d, &msg, kind.as_str()))
                .await??;
            tracing::warn!(%did, error = %err, "self-repair failed");
            return Err(err);
        }
    };

    let recheck = check_repo(syncer, did, RECHECK_SAMPLE).await?;
    if recheck.outcome == Outcome::Ok {
        let (d, id) = (did.to_string(), recheck.id);
        syncer
            .store
            .write(move |c| {
                c.execute(
                    "UPDATE self_checks SET repaired = 1
                     WHERE did = ?1 AND outcome = 'damaged' AND repaired = 0 AND id < ?2",
                    rusqlite::params![d, id],
                )
                .map_err(StoreError::from)
            })
            .await??;
        tracing::info!(%did, restored = outcome.blocks_added, "self-repair done");
    }
    Ok(Repair {
        did: did.to_string(),
        blocks_scanned,
        bad_blocks_removed,
        blocks_restored: outcome.blocks_added,
        records_changed: outcome.creates + outcome.updates + outcome.deletes,
        rev: outcome.rev,
        commit: outcome.commit,
        recheck,
    })
}

/// Checks every held account with a sample of `sample_per_repo` blocks and repairs
/// the damaged ones. A repair that fails is reported in its check
/// (`repair_error`), not as an error of the whole run.
pub async fn run(syncer: &Syncer, sample_per_repo: usize) -> Result<Vec<SelfCheck>, SyncError> {
    let repos = syncer.store.read(store::list_repos).await?;
    let mut out = Vec::new();
    for repo in repos.into_iter().filter(|r| r.head.is_some()) {
        let mut check = match check_repo(syncer, &repo.did, sample_per_repo).await {
            Ok(check) => check,
            // Removed, or not held any more, since the list was read.
            Err(SyncError::NotBackedUp(_) | SyncError::NotHeld(_)) => continue,
            Err(e) => return Err(e),
        };
        if check.outcome == Outcome::Damaged {
            match repair_repo(syncer, &repo.did).await {
                Ok(repair) if repair.repaired() => check.repaired = true,
                Ok(repair) => {
                    check.repair_error = Some(format!(
                        "still damaged after the repair: {}",
                        repair.recheck.detail.unwrap_or_default()
                    ));
                }
                Err(e) => check.repair_error = Some(e.to_string()),
            }
        }
        out.push(check);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::crypto::SigningKey;
    use crate::identity::Resolver;
    use crate::repo::build::{BuiltRepo, RepoBuilder};
    use crate::store::Store;
    use crate::sync::ingest::{self, IngestError};

    const ALICE: &str = "did:plc:selfcheckalice000000000";
    const BOB: &str = "did:plc:selfcheckbob00000000000";

    /// A store with a syncer whose network always fails at once (nothing listens on
    /// port 1): repairs cannot reach any PDS.
    fn offline() -> (tempfile::TempDir, Syncer) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("p2pds.sqlite")).unwrap();
        let http = reqwest::Client::new();
        let resolver = Arc::new(Resolver::new(http.clone(), "http://127.0.0.1:1", None));
        let syncer = Syncer::new(store, http, resolver, dir.path());
        (dir, syncer)
    }

    fn repo(did: &str, records: usize) -> RepoBuilder {
        let mut b = RepoBuilder::new(did, SigningKey::generate_k256());
        for i in 0..records {
            b.put_json(
                "app.bsky.feed.post",
                &format!("{i:06}"),
                &json!({"text": format!("{did} post {i}"), "n": i}),
            );
        }
        b
    }

    async fn ingest_into(
        syncer: &Syncer,
        builder: &RepoBuilder,
        built: &BuiltRepo,
        full: bool,
    ) -> Result<ingest::IngestOutcome, IngestError> {
        let (did, key, car) = (
            builder.did.clone(),
            builder.key.public_key(),
            built.car_bytes(),
        );
        syncer
            .store
            .write(move |c| {
                store::add_repo(c, &did, None, None).unwrap();
                if full {
                    ingest::reingest_full_car(c, &did, &key, &car[..], &mut |_| {})
                } else {
                    ingest::ingest_car(c, &did, &key, &car[..], &mut |_| {})
                }
            })
            .await
            .unwrap()
    }

    /// A held copy of `records` records.
    async fn held(syncer: &Syncer, did: &str, records: usize) -> (RepoBuilder, BuiltRepo) {
        let builder = repo(did, records);
        let built = builder.build_now();
        ingest_into(syncer, &builder, &built, false).await.unwrap();
        (builder, built)
    }

    async fn sql(syncer: &Syncer, sql: &str, params: Vec<rusqlite::types::Value>) -> usize {
        let sql = sql.to_string();
        syncer
            .store
            .write(move |c| c.execute(&sql, rusqlite::params_from_iter(params)).unwrap())
            .await
            .unwrap()
    }

    async fn count(syncer: &Syncer, sql: &str) -> i64 {
        let sql = sql.to_string();
        syncer
            .store
            .read(move |c| Ok(c.query_row(&sql, [], |r| r.get(0)).unwrap()))
            .await
            .unwrap()
    }

    async fn delete_block(syncer: &Syncer, did: &str, cid: &Cid) {
        let n = sql(
            syncer,
            "DELETE FROM blocks WHERE cid = ?1 AND repo_id = (SELECT id FROM repos WHERE did = ?2)",
            vec![cid.to_bytes().into(), did.to_string().into()],
        )
        .await;
        assert_eq!(n, 1, "{cid}");
    }

    /// Flips one bit of the block's stored bytes.
    async fn corrupt_block(syncer: &Syncer, did: &str, cid: &Cid) {
        let (cid, did) = (cid.to_bytes(), did.to_string());
        syncer
            .store
            .write(move |c| {
                let mut data: Vec<u8> = c
                    .query_row(
                        "SELECT data FROM blocks WHERE cid = ?1
                         AND repo_id = (SELECT id FROM repos WHERE did = ?2)",
                        rusqlite::params![cid, did],
                        |r| r.get(0),
                    )
                    .unwrap();
                let mid = data.len() / 2;
                data[mid] ^= 0x10;
                let n = c
                    .execute(
                        "UPDATE blocks SET data = ?2
                         WHERE cid = ?1 AND repo_id = (SELECT id FROM repos WHERE did = ?3)",
                        rusqlite::params![cid, data, did],
                    )
                    .unwrap();
                assert_eq!(n, 1);
            })
            .await
            .unwrap();
    }

    fn root_node(built: &BuiltRepo) -> mst::Node {
        let bytes = &built.blocks.iter().find(|b| b.0 == built.data).unwrap().1;
        mst::decode_node(&built.data, bytes).unwrap()
    }

    fn all_blocks(built: &BuiltRepo) -> usize {
        1 + built.blocks.len()
    }

    #[tokio::test]
    async fn a_sound_copy_checks_ok_and_is_recorded() {
        let (_dir, syncer) = offline();
        let (_, built) = held(&syncer, ALICE, 200).await;
        let check = check_repo(&syncer, ALICE, 10_000).await.unwrap();
        assert_eq!(check.outcome, Outcome::Ok, "{:?}", check.detail);
        assert_eq!(check.blocks_checked as usize, all_blocks(&built));
        assert_eq!((check.bad_blocks, check.missing_blocks), (0, 0));
        assert_eq!(check.detail, None);
        let json = serde_json::to_value(&check).unwrap();
        assert_eq!(json["outcome"], "ok");
        assert_eq!(json["blocksChecked"], all_blocks(&built));
        assert_eq!(json["missingBlocks"], 0);
        assert!(json.get("repairError").is_none());
        let row: (String, String, i64, i64) = syncer
            .store
            .read(move |c| {
                Ok(c.query_row(
                    "SELECT did, outcome, blocks_checked, repaired FROM self_checks WHERE id = ?1",
                    [check.id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(
            row,
            (ALICE.to_string(), "ok".into(), all_blocks(&built) as i64, 0)
        );
    }

    #[tokio::test]
    async fn only_held_copies_are_checked() {
        let (_dir, syncer) = offline();
        assert!(matches!(
            check_repo(&syncer, ALICE, 10).await,
            Err(SyncError::NotBackedUp(_))
        ));
        syncer
            .store
            .write(|c| store::add_repo(c, ALICE, None, None))
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(
            check_repo(&syncer, ALICE, 10).await,
            Err(SyncError::NotHeld(_))
        ));
        assert!(run(&syncer, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_sample_is_random_distinct_and_bounded() {
        let (_dir, syncer) = offline();
        let (_, built) = held(&syncer, ALICE, 400).await;
        // Another account's blocks, interleaved in the table, are never drawn.
        held(&syncer, BOB, 50).await;
        let conn = syncer.store.reader().unwrap();
        let draw = |sample: usize, seed: u8| {
            let mut cids = Vec::new();
            let mut rng = StdRng::from_seed([seed; 32]);
            sample_blocks(
                &conn,
                1,
                all_blocks(&built) as i64,
                sample,
                &mut rng,
                &mut |cid, _| cids.push(cid),
            )
            .unwrap();
            cids
        };
        let a = draw(25, 1);
        assert_eq!(a.len(), 25);
        assert_eq!(a.iter().collect::<HashSet<_>>().len(), 25);
        let ours: HashSet<Vec<u8>> = std::iter::once(built.commit_cid)
            .chain(built.blocks.iter().map(|b| b.0))
            .map(|c| c.to_bytes())
            .collect();
        assert!(a.iter().all(|c| ours.contains(c)));
        assert_ne!(a, draw(25, 2));
        assert!(draw(0, 1).is_empty());
        assert_eq!(draw(10_000, 1).len(), all_blocks(&built));
    }

    #[tokio::test]
    async fn missing_tree_nodes_and_records_are_counted_not_fatal() {
        let (_dir, syncer) = offline();
        let (_, built) = held(&syncer, ALICE, 300).await;
        let root = root_node(&built);
        let subtree = root
            .left
            .or_else(|| root.entries.iter().find_map(|e| e.right))
            .expect("a root with a subtree");
        let record = root.entries[0].value;
        delete_block(&syncer, ALICE, &subtree).await;
        delete_block(&syncer, ALICE, &record).await;
        let check = check_repo(&syncer, ALICE, 0).await.unwrap();
        assert_eq!(check.outcome, Outcome::Damaged);
        // The records below the lost node cannot be seen, so they are not counted.
        assert_eq!((check.bad_blocks, check.missing_blocks), (0, 2));
        let detail = check.detail.unwrap();
        assert!(
            detail.contains("2 blocks of the held tree are missing"),
            "{detail}"
        );
        assert!(detail.contains(&subtree.to_string()), "{detail}");
        assert!(detail.contains(&record.to_string()), "{detail}");

        // The root itself: nothing below can be seen.
        delete_block(&syncer, ALICE, &built.data).await;
        let check = check_repo(&syncer, ALICE, 0).await.unwrap();
        assert_eq!((check.bad_blocks, check.missing_blocks), (0, 1));
    }

    #[tokio::test]
    async fn corrupt_blocks_are_found_by_the_sample_and_the_walk() {
        let (_dir, syncer) = offline();
        let (_, built) = held(&syncer, ALICE, 100).await;
        let record = built.blocks.last().unwrap().0;
        corrupt_block(&syncer, ALICE, &record).await;
        let check = check_repo(&syncer, ALICE, 10_000).await.unwrap();
        assert_eq!(check.outcome, Outcome::Damaged);
        assert_eq!((check.bad_blocks, check.missing_blocks), (1, 0));
        assert!(check
            .detail
            .unwrap()
            .contains(&format!("1 blocks do not match their CID ({record})")));
        // Record blocks are only hashed when sampled: the walk only checks they are there.
        let check = check_repo(&syncer, ALICE, 0).await.unwrap();
        assert_eq!(check.outcome, Outcome::Ok);
        // Tree nodes are hashed by the walk; a corrupt one hides its subtree.
        corrupt_block(&syncer, ALICE, &built.data).await;
        let check = check_repo(&syncer, ALICE, 0).await.unwrap();
        assert_eq!((check.bad_blocks, check.missing_blocks), (1, 0));
        assert_eq!(check.blocks_checked, 2);
    }

    #[tokio::test]
    async fn a_lost_commit_block_still_lets_the_tree_be_walked() {
        let (_dir, syncer) = offline();
        let (_, built) = held(&syncer, ALICE, 50).await;
        delete_block(&syncer, ALICE, &built.commit_cid).await;
        let record = built.blocks.last().unwrap().0;
        delete_block(&syncer, ALICE, &record).await;
        let check = check_repo(&syncer, ALICE, 0).await.unwrap();
        assert_eq!((check.bad_blocks, check.missing_blocks), (0, 2));
        assert!(check
            .detail
            .unwrap()
            .contains(&built.commit_cid.to_string()));
    }

    #[tokio::test]
    async fn a_records_table_out_of_step_with_the_tree_is_damage() {
        let (_dir, syncer) = offline();
        held(&syncer, ALICE, 20).await;
        sql(&syncer, "DELETE FROM records WHERE rkey = '000003'", vec![]).await;
        let check = check_repo(&syncer, ALICE, 0).await.unwrap();
        assert_eq!(check.outcome, Outcome::Damaged);
        assert_eq!((check.bad_blocks, check.missing_blocks), (0, 0));
        assert!(check
            .detail
            .unwrap()
            .contains("the records table lists 19 records, the tree holds 20"));
    }

    #[tokio::test]
    async fn re_ingesting_the_held_commit_restores_blocks_and_keeps_tables_consistent() {
        let (_dir, syncer) = offline();
        let (mut builder, built) = held(&syncer, ALICE, 120).await;
        let total = all_blocks(&built) as i64;
        let deleted = sql(&syncer, "DELETE FROM blocks WHERE id % 2 = 0", vec![]).await;
        sql(&syncer, "DELETE FROM records WHERE rkey = '000007'", vec![]).await;
        assert_eq!(
            check_repo(&syncer, ALICE, 0).await.unwrap().outcome,
            Outcome::Damaged
        );

        // A normal ingest refuses the commit it already holds.
        let err = ingest_into(&syncer, &builder, &built, false)
            .await
            .unwrap_err();
        assert!(matches!(err, IngestError::StaleRev { .. }), "{err}");
        // A repair takes it, adds back exactly what was lost, duplicates nothing.
        let out = ingest_into(&syncer, &builder, &built, true).await.unwrap();
        assert_eq!(out.blocks_added, deleted as u64);
        assert_eq!((out.creates, out.updates, out.deletes), (1, 0, 0));
        assert_eq!(out.records, 120);
        assert_eq!(count(&syncer, "SELECT count(*) FROM blocks").await, total);
        assert_eq!(count(&syncer, "SELECT count(*) FROM commits").await, 1);
        assert_eq!(
            count(&syncer, "SELECT blocks FROM repos").await,
            count(&syncer, "SELECT count(*) FROM blocks").await
        );
        assert_eq!(
            count(&syncer, "SELECT bytes FROM repos").await,
            count(&syncer, "SELECT sum(length(data)) FROM blocks").await
        );
        let check = check_repo(&syncer, ALICE, 10_000).await.unwrap();
        assert_eq!(check.outcome, Outcome::Ok, "{:?}", check.detail);

        // A newer commit through the repair path: records rebuilt, changes counted.
        builder.delete("app.bsky.feed.post", "000000");
        builder.put_json("app.bsky.feed.post", "000001", &json!({"text": "edited"}));
        builder.put_json("app.bsky.feed.post", "zzz", &json!({"text": "new"}));
        std::thread::sleep(std::time::Duration::from_millis(2));
        let newer = builder.build_now();
        let out = ingest_into(&syncer, &builder, &newer, true).await.unwrap();
        assert_eq!((out.creates, out.updates, out.deletes), (1, 1, 1));
        assert_eq!(count(&syncer, "SELECT count(*) FROM commits").await, 2);
        let records = syncer
            .store
            .read(|c| store::list_records(c, 1, None))
            .await
            .unwrap();
        let keys: Vec<String> = records
            .iter()
            .map(|r| format!("{}/{}", r.collection, r.rkey))
            .collect();
        assert_eq!(keys, builder.records.keys().cloned().collect::<Vec<_>>());
        assert_eq!(
            check_repo(&syncer, ALICE, 10_000).await.unwrap().outcome,
            Outcome::Ok
        );
        // An older commit is still refused, repair or not.
        let err = ingest_into(&syncer, &builder, &built, true)
            .await
            .unwrap_err();
        assert!(matches!(err, IngestError::StaleRev { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_repair_that_cannot_reach_the_pds_reports_and_keeps_the_copy() {
        let (_dir, syncer) = offline();
        let (_, built) = held(&syncer, ALICE, 60).await;
        let total = all_blocks(&built) as i64;
        let (corrupt, lost) = (
            built.blocks[built.blocks.len() - 1].0,
            built.blocks[built.blocks.len() - 2].0,
        );
        corrupt_block(&syncer, ALICE, &corrupt).await;
        delete_block(&syncer, ALICE, &lost).await;
        let err = repair_repo(&syncer, ALICE).await.unwrap_err();
        let SyncError::Damaged {
            did, bad, missing, ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!((did.as_str(), *bad, *missing), (ALICE, 1, 2));
        assert!(err.is_retryable());
        let msg = err.to_string();
        for part in [
            ALICE,
            "1 corrupt blocks removed",
            "2 blocks missing",
            "retried",
        ] {
            assert!(msg.contains(part), "{msg}");
        }
        // Only the corrupt row went.
        assert_eq!(
            count(&syncer, "SELECT count(*) FROM blocks").await,
            total - 2
        );
        assert_eq!(count(&syncer, "SELECT count(*) FROM records").await, 60);
        let repo = syncer
            .store
            .read(|c| store::get_repo(c, ALICE))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(repo.state, "error");
        assert_eq!(repo.error.as_deref(), Some(msg.as_str()));
        assert_eq!(repo.head, Some(built.commit_cid.to_string()));
    }

    #[tokio::test]
    async fn run_checks_every_held_copy_and_reports_failed_repairs() {
        let (_dir, syncer) = offline();
        held(&syncer, ALICE, 30).await;
        let (_, bob) = held(&syncer, BOB, 30).await;
        delete_block(&syncer, BOB, &bob.blocks.last().unwrap().0).await;
        let reports = run(&syncer, 1000).await.unwrap();
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].did, ALICE);
        assert_eq!(reports[0].outcome, Outcome::Ok);
        assert!(!reports[0].repaired && reports[0].repair_error.is_none());
        assert_eq!(reports[1].did, BOB);
        assert_eq!(reports[1].outcome, Outcome::Damaged);
        assert_eq!(reports[1].missing_blocks, 1);
        assert!(!reports[1].repaired);
        let why = reports[1].repair_error.as_deref().unwrap();
        assert!(why.contains(BOB) && why.contains("retried"), "{why}");
        assert_eq!(
            count(
                &syncer,
                "SELECT count(*) FROM self_checks WHERE repaired = 1"
            )
            .await,
            0
        );
    }
}
