//! What to ask a peer for: unpredictable samples of a repo this node holds itself.
//!
//! Every choice comes from the operating system's random source (`OsRng`), so a peer cannot
//! know in advance which blocks or records it will be asked for, and cannot keep only those.
//!
//! - [`tree_blocks`]: blocks of the current tree (MST nodes and record blocks), each found by a
//!   random walk down from the root.
//! - [`history_blocks`]: record blocks that an older version the peer said it held had, and the
//!   current version no longer has. A node that only relays the account's PDS cannot serve
//!   them: the PDS drops a block when the last record using it goes.
//! - [`records`]: random record paths (`collection/rkey`) of the current tree.

use std::collections::BTreeSet;

use cid::Cid;
use rand::rngs::OsRng;
use rand::seq::SliceRandom;
use rand::Rng;
use rusqlite::Connection;

use crate::export::StoreSource;
use crate::repo::mst::{self, BlockSource, Change, MstError};
use crate::store::StoreError;

/// Walks stop here: deeper than any canonical tree.
const MAX_DEPTH: usize = 64;

/// Up to `k` distinct blocks of the tree under `root`. Each is the end of a random walk from
/// the root: at every node the walk stops on the node itself, on one of its record blocks, or
/// goes down one of its subtrees, each with equal chance.
pub fn tree_blocks(
    conn: &Connection,
    repo_id: i64,
    root: Cid,
    k: usize,
) -> Result<Vec<Cid>, MstError> {
    let mut src = StoreSource { conn, repo_id };
    let mut rng = OsRng;
    let mut out = BTreeSet::new();
    // Small trees have fewer than k blocks: stop after a bounded number of walks.
    for _ in 0..k.saturating_mul(4) {
        if out.len() >= k {
            break;
        }
        out.insert(walk_once(&mut src, root, &mut rng)?);
    }
    let mut v: Vec<Cid> = out.into_iter().collect();
    v.shuffle(&mut rng);
    Ok(v)
}

fn walk_once(src: &mut impl BlockSource, root: Cid, rng: &mut OsRng) -> Result<Cid, MstError> {
    let mut cid = root;
    for _ in 0..MAX_DEPTH {
        let bytes = src
            .get_block(&cid)?
            .ok_or_else(|| MstError::MissingBlock(cid.to_string()))?;
        let node = mst::decode_node(&cid, &bytes)?;
        // Choices: this node, each record, each subtree.
        let mut leaves = Vec::with_capacity(node.entries.len());
        let mut subtrees: Vec<Cid> = node.left.into_iter().collect();
        for e in &node.entries {
            leaves.push(e.value);
            subtrees.extend(e.right);
        }
        let choice = rng.gen_range(0..1 + leaves.len() + subtrees.len());
        if choice == 0 {
            return Ok(cid);
        }
        if let Some(leaf) = leaves.get(choice - 1) {
            return Ok(*leaf);
        }
        match subtrees.get(choice - 1 - leaves.len()) {
            Some(next) => cid = *next,
            None => return Ok(cid),
        }
    }
    Err(MstError::TooDeep)
}

/// Up to `k` record blocks that the tree `old` has and the tree `new` does not (records
/// deleted or changed since), chosen at random. Empty when nothing changed.
pub fn history_blocks(
    conn: &Connection,
    repo_id: i64,
    old: Cid,
    new: Cid,
    k: usize,
) -> Result<Vec<Cid>, MstError> {
    let mut src = StoreSource { conn, repo_id };
    let mut gone = BTreeSet::new();
    let mut kept = BTreeSet::new();
    mst::diff::<MstError>(&mut src, Some(old), new, |change| {
        match change {
            Change::Delete { prev, .. } => {
                gone.insert(prev);
            }
            Change::Update { prev, cid, .. } => {
                gone.insert(prev);
                kept.insert(cid);
            }
            Change::Create { cid, .. } => {
                kept.insert(cid);
            }
        }
        Ok(())
    })?;
    // A block that a new record uses again is still on the PDS.
    let mut v: Vec<Cid> = gone.difference(&kept).copied().collect();
    v.shuffle(&mut OsRng);
    v.truncate(k);
    Ok(v)
}

/// Up to `k` distinct random record paths (`collection`, `rkey`) of a held repo.
pub fn records(
    conn: &Connection,
    repo_id: i64,
    k: usize,
) -> Result<Vec<(String, String)>, StoreError> {
    let count: i64 = conn.query_row(
        "SELECT count(*) FROM records WHERE repo_id = ?1",
        [repo_id],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare_cached(
        "SELECT collection, rkey FROM records WHERE repo_id = ?1 ORDER BY collection, rkey
         LIMIT 1 OFFSET ?2",
    )?;
    if usize::try_from(count).is_ok_and(|c| c <= k) {
        let mut all = conn.prepare_cached(
            "SELECT collection, rkey FROM records WHERE repo_id = ?1 ORDER BY collection, rkey",
        )?;
        let rows = all.query_map([repo_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        return Ok(rows.collect::<Result<_, _>>()?);
    }
    let mut rng = OsRng;
    let mut picked = BTreeSet::new();
    let mut out = Vec::new();
    for _ in 0..k.saturating_mul(4) {
        if out.len() >= k || count == 0 || picked.len() as i64 >= count {
            break;
        }
        let offset = rng.gen_range(0..count);
        if !picked.insert(offset) {
            continue;
        }
        let row: (String, String) = stmt.query_row(rusqlite::params![repo_id, offset], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        out.push(row);
    }
    Ok(out)
}

/// Up to `k` distinct random record blocks of a held repo, outside the `org.p2pds.*`
/// collections (status records and challenges change every round; posts and likes stay): what
/// a challenge can name for a node whose exact commit is unknown (it catches up first).
pub fn lasting_records(conn: &Connection, repo_id: i64, k: usize) -> Result<Vec<Cid>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT cid FROM records WHERE repo_id = ?1 AND collection NOT LIKE 'org.p2pds.%'",
    )?;
    let rows = stmt.query_map([repo_id], |r| r.get::<_, Vec<u8>>(0))?;
    let mut all = BTreeSet::new();
    for bytes in rows {
        if let Ok(cid) = Cid::try_from(bytes?.as_slice()) {
            all.insert(cid);
        }
    }
    let mut v: Vec<Cid> = all.into_iter().collect();
    v.shuffle(&mut OsRng);
    v.truncate(k);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::cid_for_cbor;

    /// A store with one repo whose tree holds `n` records; returns (conn, root).
    fn held(n: usize) -> (Connection, Cid, Vec<(Vec<u8>, Cid)>) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE blocks (id INTEGER PRIMARY KEY, repo_id INTEGER, cid BLOB, data BLOB);
             CREATE TABLE records (repo_id INTEGER, collection TEXT, rkey TEXT, cid BLOB);",
        )
        .unwrap();
        let mut entries = Vec::new();
        for i in 0..n {
            let bytes = serde_ipld_dagcbor::to_vec(&format!("record {i}")).unwrap();
            let cid = cid_for_cbor(&bytes);
            conn.execute(
                "INSERT INTO blocks (repo_id, cid, data) VALUES (1, ?1, ?2)",
                rusqlite::params![cid.to_bytes(), bytes],
            )
            .unwrap();
            let rkey = format!("{i:06}");
            conn.execute(
                "INSERT INTO records (repo_id, collection, rkey, cid) VALUES (1, 'app.test', ?1, ?2)",
                rusqlite::params![rkey, cid.to_bytes()],
            )
            .unwrap();
            entries.push((format!("app.test/{rkey}").into_bytes(), cid));
        }
        let root = store_tree(&conn, &entries);
        (conn, root, entries)
    }

    fn store_tree(conn: &Connection, entries: &[(Vec<u8>, Cid)]) -> Cid {
        let mut blocks = Vec::new();
        let root = mst::build(entries, &mut |cid, bytes| blocks.push((cid, bytes)));
        for (cid, bytes) in blocks {
            conn.execute(
                "INSERT INTO blocks (repo_id, cid, data) VALUES (1, ?1, ?2)",
                rusqlite::params![cid.to_bytes(), bytes],
            )
            .unwrap();
        }
        root
    }

    #[test]
    fn tree_samples_are_blocks_of_the_tree_and_vary() {
        let (conn, root, entries) = held(300);
        let records: BTreeSet<Cid> = entries.iter().map(|(_, c)| *c).collect();
        let a = tree_blocks(&conn, 1, root, 20).unwrap();
        assert_eq!(a.len(), 20);
        let mut src = StoreSource {
            conn: &conn,
            repo_id: 1,
        };
        for cid in &a {
            let bytes = src.get_block(cid).unwrap().unwrap();
            // Either a record or a tree node.
            assert!(records.contains(cid) || mst::decode_node(cid, &bytes).is_ok());
        }
        let b = tree_blocks(&conn, 1, root, 20).unwrap();
        assert_ne!(a, b, "two samples of 20 out of 300+ blocks should differ");
    }

    #[test]
    fn a_tiny_tree_gives_what_it_has() {
        let (conn, root, _) = held(1);
        let s = tree_blocks(&conn, 1, root, 20).unwrap();
        assert!(!s.is_empty() && s.len() <= 2, "{s:?}");
    }

    #[test]
    fn history_is_what_the_old_version_had_and_the_new_lacks() {
        let (conn, old_root, entries) = held(50);
        let kept: Vec<(Vec<u8>, Cid)> = entries.iter().take(40).cloned().collect();
        let new_root = store_tree(&conn, &kept);
        let gone: BTreeSet<Cid> = entries.iter().skip(40).map(|(_, c)| *c).collect();
        let h = history_blocks(&conn, 1, old_root, new_root, 100).unwrap();
        assert_eq!(h.iter().copied().collect::<BTreeSet<_>>(), gone);
        assert_eq!(
            history_blocks(&conn, 1, old_root, new_root, 3)
                .unwrap()
                .len(),
            3
        );
        assert!(history_blocks(&conn, 1, new_root, new_root, 3)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn record_samples_are_distinct_held_paths() {
        let (conn, _, _) = held(30);
        let r = records(&conn, 1, 10).unwrap();
        assert_eq!(r.len(), 10);
        assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 10);
        assert!(r.iter().all(|(c, _)| c == "app.test"));
        assert_eq!(records(&conn, 1, 100).unwrap().len(), 30);
        assert!(records(&conn, 2, 5).unwrap().is_empty());
    }

    #[test]
    fn lasting_records_leave_out_the_circle_records() {
        let (conn, _, entries) = held(10);
        conn.execute(
            "INSERT INTO records (repo_id, collection, rkey, cid) VALUES (1, 'org.p2pds.policy.status', 'x', ?1)",
            [cid_for_cbor(b"\x01").to_bytes()],
        )
        .unwrap();
        let picked = lasting_records(&conn, 1, 100).unwrap();
        let posts: BTreeSet<Cid> = entries.iter().map(|(_, c)| *c).collect();
        assert_eq!(picked.iter().copied().collect::<BTreeSet<_>>(), posts);
        assert_eq!(lasting_records(&conn, 1, 4).unwrap().len(), 4);
    }
}
