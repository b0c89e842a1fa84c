//! Checks the kept history of an account, trusting nothing in the store: for every kept
//! state the commit block is hashed against its CID, its signature checked against the key
//! that verified it when it was synced (else the account's current key), and its record tree
//! walked whole through blocks hashed against their CIDs (the walk validates the tree's
//! shape and that every record is present). States sharing a tree are walked once.

use std::collections::HashSet;

use cid::Cid;
use rusqlite::Connection;
use serde::Serialize;

use crate::crypto::PublicKey;
use crate::export::get_block;
use crate::repo::commit::Commit;
use crate::repo::mst::{self, BlockSource, MstError};
use crate::store::StoreError;

/// The outcome of one check.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HistoryCheck {
    pub did: String,
    pub states_checked: u64,
    pub trees_walked: u64,
    pub records_checked: u64,
    pub blocks_hashed: u64,
    /// Each problem in words; empty when the whole history verifies.
    pub problems: Vec<String>,
}

impl HistoryCheck {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Blocks from the store, each hashed against its CID (once).
struct Hashed<'a> {
    conn: &'a Connection,
    repo_id: i64,
    hashed: HashSet<Cid>,
}

impl Hashed<'_> {
    fn block(&mut self, cid: &Cid) -> Result<Option<Vec<u8>>, String> {
        let bytes = get_block(self.conn, self.repo_id, cid).map_err(|e| e.to_string())?;
        if let Some(b) = &bytes {
            if self.hashed.insert(*cid) {
                crate::repo::verify_block(cid, b).map_err(|e| format!("block {cid}: {e}"))?;
            }
        }
        Ok(bytes)
    }
}

impl BlockSource for Hashed<'_> {
    fn get_block(&mut self, cid: &Cid) -> Result<Option<Vec<u8>>, MstError> {
        self.block(cid).map_err(MstError::Source)
    }
}

pub fn check(conn: &Connection, did: &str) -> Result<HistoryCheck, StoreError> {
    let mut out = HistoryCheck {
        did: did.to_string(),
        ..Default::default()
    };
    let Ok(repo_id) = super::repo_id(conn, did) else {
        out.problems.push(format!("{did} is not backed up"));
        return Ok(out);
    };
    let current_key: Option<String> = conn.query_row(
        "SELECT signing_key FROM repos WHERE id = ?1",
        [repo_id],
        |r| r.get(0),
    )?;
    type Row = (String, Vec<u8>, Vec<u8>, Option<String>);
    let rows: Vec<Row> = {
        let mut stmt = conn.prepare(
            "SELECT rev, cid, data, signing_key FROM commits WHERE repo_id = ?1 ORDER BY rev",
        )?;
        let rows = stmt.query_map([repo_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut src = Hashed {
        conn,
        repo_id,
        hashed: HashSet::new(),
    };
    let mut walked: HashSet<Cid> = HashSet::new();
    for (rev, commit_cid, data, key) in rows {
        out.states_checked += 1;
        let problem = |what: String| format!("version {rev}: {what}");
        let Ok(commit_cid) = Cid::try_from(commit_cid.as_slice()) else {
            out.problems
                .push(problem("the commit's CID is unreadable".into()));
            continue;
        };
        let commit_bytes = match src.block(&commit_cid) {
            Ok(Some(b)) => b,
            Ok(None) => {
                out.problems
                    .push(problem(format!("commit {commit_cid} is missing")));
                continue;
            }
            Err(e) => {
                out.problems.push(problem(e));
                continue;
            }
        };
        let commit = match Commit::decode(&commit_bytes) {
            Ok(c) => c,
            Err(e) => {
                out.problems.push(problem(e.to_string()));
                continue;
            }
        };
        if commit.did != did || commit.rev != rev {
            out.problems.push(problem(format!(
                "the commit is for {} at {}",
                commit.did, commit.rev
            )));
        }
        if Cid::try_from(data.as_slice()).ok() != Some(commit.data) {
            out.problems.push(problem(
                "the stored tree root differs from the commit's".into(),
            ));
        }
        match key.or_else(|| current_key.clone()) {
            Some(k) => match PublicKey::from_did_key(&k) {
                Ok(pk) => {
                    if let Err(e) = commit.verify_signature(&pk) {
                        out.problems.push(problem(format!("signature: {e}")));
                    }
                }
                Err(e) => out.problems.push(problem(format!("key {k}: {e}"))),
            },
            None => out
                .problems
                .push(problem("no key is known to check the signature".into())),
        }
        if !walked.insert(commit.data) {
            continue;
        }
        out.trees_walked += 1;
        let mut leaves = Vec::new();
        let walk = mst::walk(&mut src, commit.data, |_, cid| {
            leaves.push(*cid);
            Ok::<(), MstError>(())
        });
        if let Err(e) = walk {
            out.problems.push(problem(format!("record tree: {e}")));
            continue;
        }
        for leaf in leaves {
            out.records_checked += 1;
            match src.block(&leaf) {
                Ok(Some(_)) => {}
                Ok(None) => out
                    .problems
                    .push(problem(format!("record {leaf} is missing"))),
                Err(e) => out.problems.push(problem(e)),
            }
        }
    }
    out.blocks_hashed = src.hashed.len() as u64;
    Ok(out)
}
