//! Layer 2, the whole-copy check: keyed digests of a held copy's subtrees, which two nodes
//! compute each over what it holds, so that a verifier finds exactly what a peer's copy lacks
//! by descending only into the subtrees whose digests differ.
//!
//! With a fresh random `nonce` from the verifier:
//! - the digest of a block is SHA-256(nonce ‖ its bytes);
//! - the digest of a subtree is SHA-256(nonce ‖ the node's bytes ‖ the digests, in key order,
//!   of its left subtree, then of each entry's record and right subtree).
//!
//! A node can give the right digest of a subtree only while it holds every byte of it (the
//! nonce is new each time: nothing computed earlier helps), and gives none when it lacks a
//! block of it. Equal digests prove the subtree whole; the differing ones are walked down
//! level by level, so the requests grow with the difference times the tree's depth, not with
//! the size of the repository.

use std::collections::HashMap;

use cid::Cid;
use sha2::{Digest, Sha256};

use crate::repo::mst;
use crate::store::StoreError;

/// One digest; `None`: the node lacks (or cannot read) a block of it.
pub type Digest32 = Option<[u8; 32]>;

/// The digests of `trees` (subtrees by their root node) and of single `blocks`, over the
/// copy of repo `repo_id` held in `conn`.
pub fn digests(
    conn: &rusqlite::Connection,
    repo_id: i64,
    nonce: &[u8],
    trees: &[Cid],
    blocks: &[Cid],
) -> Result<(Vec<Digest32>, Vec<Digest32>), StoreError> {
    let mut d = Digester {
        conn,
        repo_id,
        nonce,
        memo: HashMap::new(),
    };
    let mut out_trees = Vec::with_capacity(trees.len());
    for cid in trees {
        out_trees.push(d.tree(cid, 0)?);
    }
    let mut out_blocks = Vec::with_capacity(blocks.len());
    for cid in blocks {
        out_blocks.push(d.block(cid)?);
    }
    Ok((out_trees, out_blocks))
}

struct Digester<'a> {
    conn: &'a rusqlite::Connection,
    repo_id: i64,
    nonce: &'a [u8],
    /// Subtrees already digested in this request (each block hashed at most once).
    memo: HashMap<Cid, Digest32>,
}

impl Digester<'_> {
    fn block(&mut self, cid: &Cid) -> Result<Digest32, StoreError> {
        Ok(
            crate::export::get_block(self.conn, self.repo_id, cid)?.map(|bytes| {
                Sha256::new()
                    .chain_update(self.nonce)
                    .chain_update(bytes)
                    .finalize()
                    .into()
            }),
        )
    }

    fn tree(&mut self, cid: &Cid, depth: u32) -> Result<Digest32, StoreError> {
        if let Some(known) = self.memo.get(cid) {
            return Ok(*known);
        }
        let digest = self.tree_uncached(cid, depth)?;
        self.memo.insert(*cid, digest);
        Ok(digest)
    }

    fn tree_uncached(&mut self, cid: &Cid, depth: u32) -> Result<Digest32, StoreError> {
        // Deeper than any canonical tree: not a tree this node holds.
        if depth > mst::MAX_LAYER {
            return Ok(None);
        }
        let Some(bytes) = crate::export::get_block(self.conn, self.repo_id, cid)? else {
            return Ok(None);
        };
        let Ok(node) = mst::decode_node(cid, &bytes) else {
            return Ok(None);
        };
        let mut h = Sha256::new().chain_update(self.nonce).chain_update(&bytes);
        if let Some(left) = node.left {
            let Some(d) = self.tree(&left, depth + 1)? else {
                return Ok(None);
            };
            h.update(d);
        }
        for e in &node.entries {
            let Some(d) = self.block(&e.value)? else {
                return Ok(None);
            };
            h.update(d);
            if let Some(right) = e.right {
                let Some(d) = self.tree(&right, depth + 1)? else {
                    return Ok(None);
                };
                h.update(d);
            }
        }
        Ok(Some(h.finalize().into()))
    }
}

/// What one level of the walk asks about a subtree this node holds: its own block, and its
/// children (left subtree, then each entry's record and right subtree, in key order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Children {
    pub node: Cid,
    pub trees: Vec<Cid>,
    /// Records with their keys (`collection/rkey`).
    pub records: Vec<(String, Cid)>,
}

/// The children of the held node `cid`.
pub fn children(
    conn: &rusqlite::Connection,
    repo_id: i64,
    cid: &Cid,
) -> Result<Option<Children>, StoreError> {
    let Some(bytes) = crate::export::get_block(conn, repo_id, cid)? else {
        return Ok(None);
    };
    let Ok(node) = mst::decode_node(cid, &bytes) else {
        return Ok(None);
    };
    let mut out = Children {
        node: *cid,
        trees: node.left.into_iter().collect(),
        records: Vec::new(),
    };
    for e in node.entries {
        out.records
            .push((String::from_utf8_lossy(&e.key).into_owned(), e.value));
        out.trees.extend(e.right);
    }
    Ok(Some(out))
}

/// The size of a held block (0 when it is not held).
pub fn block_size(conn: &rusqlite::Connection, repo_id: i64, cid: &Cid) -> Result<u64, StoreError> {
    Ok(crate::export::get_block(conn, repo_id, cid)?
        .map(|b| b.len() as u64)
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::held_repo as held;

    #[test]
    fn a_missing_block_takes_the_digest_of_every_subtree_above_it() {
        let (_dir, conn, id, root, records) = held(300);
        let nonce = b"nonce-one";
        let (whole, _) = digests(&conn, id, nonce, &[root], &[]).unwrap();
        let (again, _) = digests(&conn, id, nonce, &[root], &[]).unwrap();
        assert!(whole[0].is_some());
        assert_eq!(whole, again);
        // Another nonce, another digest: nothing computed before helps.
        let (other, _) = digests(&conn, id, b"nonce-two", &[root], &[]).unwrap();
        assert_ne!(whole, other);

        let (_, gone) = &records[123];
        conn.execute(
            "DELETE FROM blocks WHERE repo_id = ?1 AND cid = ?2",
            rusqlite::params![id, gone.to_bytes()],
        )
        .unwrap();
        let (after, blocks) = digests(&conn, id, nonce, &[root], &[*gone, records[0].1]).unwrap();
        assert_eq!(after, vec![None]);
        assert_eq!(blocks[0], None);
        assert!(blocks[1].is_some());
        // The root's children: exactly the subtrees holding it lose their digest.
        let kids = children(&conn, id, &root).unwrap().unwrap();
        let (trees, recs) = digests(
            &conn,
            id,
            nonce,
            &kids.trees,
            &kids.records.iter().map(|r| r.1).collect::<Vec<_>>(),
        )
        .unwrap();
        let missing = trees.iter().chain(&recs).filter(|d| d.is_none()).count();
        assert_eq!(missing, 1);
    }
}
