//! Export: the latest verified state of an account as a CAR file (root = the
//! signed commit; then every tree node and record, walked from the store) and
//! its blobs as files named by CID. The same CAR is what a restore imports.

use std::io::Write;
use std::path::Path;

use cid::Cid;
use rusqlite::{Connection, OptionalExtension};

use crate::repo::car::CarWriter;
use crate::repo::mst::{self, BlockSource, MstError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0} is not backed up")]
    Unknown(String),
    #[error("{0} has no verified copy yet: run a sync first")]
    NotSynced(String),
    #[error("the stored copy is damaged: {0}; run a sync to repair it")]
    Damaged(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the export failed: {0}")]
    Io(#[from] std::io::Error),
}

impl From<rusqlite::Error> for ExportError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

/// The blocks of one held repo, as an MST block source.
pub struct StoreSource<'a> {
    pub conn: &'a Connection,
    pub repo_id: i64,
}

impl BlockSource for StoreSource<'_> {
    fn get_block(&mut self, cid: &Cid) -> Result<Option<Vec<u8>>, MstError> {
        get_block(self.conn, self.repo_id, cid).map_err(|e| MstError::Source(e.to_string()))
    }
}

pub fn get_block(
    conn: &Connection,
    repo_id: i64,
    cid: &Cid,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT data FROM blocks WHERE repo_id = ?1 AND cid = ?2")?;
    Ok(stmt
        .query_row(rusqlite::params![repo_id, cid.to_bytes()], |r| r.get(0))
        .optional()?)
}

/// Figures of a written export.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ExportReport {
    pub commit: String,
    pub rev: String,
    pub blocks: u64,
    pub bytes: u64,
    pub records: u64,
    pub blobs: u64,
    pub blobs_missing: u64,
    /// The blobs the exported records name (what [`copy_blobs`] writes).
    #[serde(skip)]
    pub blob_refs: std::collections::BTreeSet<String>,
    /// The named blobs this store does not hold (not written by [`copy_blobs`]).
    pub missing_blobs: Vec<String>,
}

/// Writes the current verified state of `did` as a CAR.
pub fn write_car<W: Write>(
    conn: &Connection,
    did: &str,
    out: W,
) -> Result<ExportReport, ExportError> {
    let (repo_id, head, rev): (i64, Option<Vec<u8>>, Option<String>) = conn
        .query_row(
            "SELECT id, head, rev FROM repos WHERE did = ?1",
            [did],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?
        .ok_or_else(|| ExportError::Unknown(did.to_string()))?;
    let head = head
        .and_then(|b| Cid::try_from(b.as_slice()).ok())
        .ok_or_else(|| ExportError::NotSynced(did.to_string()))?;
    write_commit_car(conn, repo_id, head, rev.unwrap_or_default(), out)
}

/// Writes one kept state of `did` (see [`crate::history`]), named by its rev, as a CAR.
pub fn write_state_car<W: Write>(
    conn: &Connection,
    did: &str,
    rev: &str,
    out: W,
) -> Result<ExportReport, ExportError> {
    let found: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT c.repo_id, c.cid FROM commits c JOIN repos r ON r.id = c.repo_id
             WHERE r.did = ?1 AND c.rev = ?2",
            [did, rev],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (repo_id, cid) =
        found.ok_or_else(|| ExportError::Unknown(format!("version {rev} of {did}")))?;
    let cid = Cid::try_from(cid.as_slice())
        .map_err(|e| ExportError::Damaged(format!("commit CID of {rev}: {e}")))?;
    write_commit_car(conn, repo_id, cid, rev.to_string(), out)
}

fn write_commit_car<W: Write>(
    conn: &Connection,
    repo_id: i64,
    head: Cid,
    rev: String,
    out: W,
) -> Result<ExportReport, ExportError> {
    let commit_bytes = get_block(conn, repo_id, &head)?
        .ok_or_else(|| ExportError::Damaged(format!("commit {head} missing")))?;
    let commit = crate::repo::commit::Commit::decode(&commit_bytes)
        .map_err(|e| ExportError::Damaged(e.to_string()))?;
    let mut car = CarWriter::new(out, vec![head])?;
    car.write_block(&head, &commit_bytes)?;
    let mut report = ExportReport {
        commit: head.to_string(),
        rev,
        blocks: 1,
        bytes: commit_bytes.len() as u64,
        ..Default::default()
    };
    // First pass: every tree node, in walk order (the walk reads each once).
    let mut nodes: Vec<Cid> = vec![commit.data];
    let mut leaves: Vec<Cid> = Vec::new();
    collect_nodes(conn, repo_id, commit.data, &mut nodes)?;
    let mut src = StoreSource { conn, repo_id };
    mst::walk(&mut src, commit.data, |_, cid| {
        leaves.push(*cid);
        Ok::<(), MstError>(())
    })
    .map_err(|e| ExportError::Damaged(e.to_string()))?;
    let mut seen = std::collections::HashSet::new();
    for cid in nodes.iter().chain(leaves.iter()) {
        if !seen.insert(*cid) {
            continue;
        }
        let bytes = get_block(conn, repo_id, cid)?
            .ok_or_else(|| ExportError::Damaged(format!("block {cid} missing")))?;
        car.write_block(cid, &bytes)?;
        report.blocks += 1;
        report.bytes += bytes.len() as u64;
    }
    let mut refs = Vec::new();
    for cid in &leaves {
        if let Some(value) =
            get_block(conn, repo_id, cid)?.and_then(|b| crate::repo::record::to_json(&b).ok())
        {
            crate::repo::record::blob_refs(&value, &mut refs);
            report.blob_refs.extend(refs.drain(..));
        }
    }
    report.records = leaves.len() as u64;
    car.finish()?;
    Ok(report)
}

fn collect_nodes(
    conn: &Connection,
    repo_id: i64,
    root: Cid,
    out: &mut Vec<Cid>,
) -> Result<(), ExportError> {
    let mut stack = vec![root];
    while let Some(cid) = stack.pop() {
        let bytes = get_block(conn, repo_id, &cid)?
            .ok_or_else(|| ExportError::Damaged(format!("tree node {cid} missing")))?;
        let node =
            mst::decode_node(&cid, &bytes).map_err(|e| ExportError::Damaged(e.to_string()))?;
        for child in node
            .left
            .iter()
            .chain(node.entries.iter().filter_map(|e| e.right.as_ref()))
        {
            out.push(*child);
            stack.push(*child);
        }
    }
    Ok(())
}

/// Copies into `dir`, named by CID, exactly the blobs the exported state names
/// (`report.blob_refs`, filled by the CAR export), and lists those this store does not hold
/// in `report.missing_blobs`. (The store's blob files were hashed against their CIDs when
/// they were written.)
pub fn copy_blobs(
    blob_dir: &Path,
    dir: &Path,
    report: &mut ExportReport,
) -> Result<(), ExportError> {
    std::fs::create_dir_all(dir)?;
    for cid in report.blob_refs.clone() {
        let src = crate::store::blob_path(blob_dir, &cid);
        match std::fs::copy(&src, dir.join(&cid)) {
            Ok(_) => report.blobs += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                report.blobs_missing += 1;
                report.missing_blobs.push(cid);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
