//! Export: the latest verified state of an account (or a kept one) as a CAR file (root = the
//! signed commit; then every tree node and record, streamed from the store as the tree is
//! walked, in `getRepo`'s order: memory follows the tree's depth, not the account's size) and
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
    let mut refs = Vec::new();
    walk_tree(conn, repo_id, commit.data, |cid, bytes, is_record| {
        car.write_block(&cid, &bytes)?;
        report.blocks += 1;
        report.bytes += bytes.len() as u64;
        if is_record {
            report.records += 1;
            if let Ok(value) = crate::repo::record::to_json(&bytes) {
                crate::repo::record::blob_refs(&value, &mut refs);
                report.blob_refs.extend(refs.drain(..));
            }
        }
        Ok(())
    })?;
    car.finish()?;
    Ok(report)
}

/// Visits the record tree under `root` (a node of any kept state) block by block, as
/// `getRepo` sends it: each node, then its left subtree, then each record (`true`) and the
/// subtree to its right: nodes in pre-order, records in key order. What is held meanwhile is
/// the path being walked (the tree's depth times a node's entries), never the tree's CIDs, so
/// memory does not grow with the account. A record stored under two keys is visited twice.
pub(crate) fn walk_tree(
    conn: &Connection,
    repo_id: i64,
    root: Cid,
    mut visit: impl FnMut(Cid, Vec<u8>, bool) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    enum Next {
        Node(Cid),
        Record(Cid),
    }
    let block = |cid: &Cid, what: &str| -> Result<Vec<u8>, ExportError> {
        get_block(conn, repo_id, cid)?
            .ok_or_else(|| ExportError::Damaged(format!("{what} {cid} missing")))
    };
    let mut todo = vec![Next::Node(root)];
    while let Some(next) = todo.pop() {
        match next {
            Next::Record(cid) => visit(cid, block(&cid, "record")?, true)?,
            Next::Node(cid) => {
                let bytes = block(&cid, "tree node")?;
                let node = mst::decode_node(&cid, &bytes)
                    .map_err(|e| ExportError::Damaged(e.to_string()))?;
                visit(cid, bytes, false)?;
                for entry in node.entries.iter().rev() {
                    if let Some(right) = entry.right {
                        todo.push(Next::Node(right));
                    }
                    todo.push(Next::Record(entry.value));
                }
                if let Some(left) = node.left {
                    todo.push(Next::Node(left));
                }
            }
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
