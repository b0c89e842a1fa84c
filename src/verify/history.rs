//! Repairing a copy from friends. A repair from the account's PDS brings back the current tree
//! only: the PDS drops what the account deleted or changed. The older trees this node synced
//! within [`RETENTION`](super::RETENTION) (and said it held, so peers sample them) come back from
//! the other holders' endpoints instead, block by block, each hashed against its CID; and so
//! does what the current tree lacks when the PDS could not repair it (down, or gone).

use std::collections::BTreeSet;

use cid::Cid;
use serde::Serialize;

use crate::export::StoreSource;
use crate::repo::mst::{self, Change, MstError};
use crate::store::{self, StoreError};

use super::{now, Verifier, VerifyError, RETENTION};

/// Rounds of "find what is missing, fetch it" (each missing tree node can hide more).
const MAX_PASSES: usize = 16;
/// Blocks fetched in one repair, at most.
const MAX_BLOCKS: usize = 100_000;

/// What a history repair did for one account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryRepair {
    pub did: String,
    /// Trees looked at: the current one, and the older ones within the retention window.
    pub trees: usize,
    /// Blocks fetched from friends and stored.
    pub restored: usize,
    /// Blocks still missing (no friend had them).
    pub missing: usize,
    /// A few of them, for the details view.
    pub missing_examples: Vec<String>,
    /// Friends' endpoints asked.
    pub sources: usize,
}

/// Blocks of the current tree `root` (nodes and records) that the store lacks, as far as can
/// be seen (a missing node hides its subtree until it is fetched).
fn missing_in_tree(
    conn: &rusqlite::Connection,
    repo_id: i64,
    root: Cid,
    missing: &mut BTreeSet<Cid>,
) -> Result<(), StoreError> {
    let mut todo = vec![root];
    let mut seen = BTreeSet::new();
    while let Some(cid) = todo.pop() {
        if !seen.insert(cid) || seen.len() > MAX_BLOCKS {
            continue;
        }
        let Some(bytes) = crate::export::get_block(conn, repo_id, &cid)? else {
            missing.insert(cid);
            continue;
        };
        let Ok(node) = mst::decode_node(&cid, &bytes) else {
            continue;
        };
        todo.extend(node.left);
        for e in node.entries {
            todo.extend(e.right);
            if crate::export::get_block(conn, repo_id, &e.value)?.is_none() {
                missing.insert(e.value);
            }
        }
    }
    Ok(())
}

/// Blocks the store lacks of the current tree and of the older trees `olds`, as far as can be
/// seen (a missing node hides its subtree until it is fetched). Of the older trees only what
/// differs from `current` is read.
fn missing_blocks(
    conn: &rusqlite::Connection,
    repo_id: i64,
    olds: &[Cid],
    current: Cid,
) -> Result<BTreeSet<Cid>, StoreError> {
    let mut missing = BTreeSet::new();
    missing_in_tree(conn, repo_id, current, &mut missing)?;
    for old in olds {
        let mut src = StoreSource { conn, repo_id };
        let mut records = Vec::new();
        let walked = mst::diff::<MstError>(&mut src, Some(*old), current, |change| {
            match change {
                Change::Delete { prev, .. } | Change::Update { prev, .. } => records.push(prev),
                Change::Create { .. } => {}
            }
            Ok(())
        });
        if let Err(MstError::MissingBlock(text)) = walked {
            if let Ok(cid) = text.parse::<Cid>() {
                missing.insert(cid);
            }
        }
        for cid in records {
            if crate::export::get_block(conn, repo_id, &cid)?.is_none() {
                missing.insert(cid);
            }
        }
    }
    Ok(missing)
}

impl Verifier {
    /// Fetches the blocks of this node's copy of `did` (its current tree, and its retained older
    /// trees) that its store lacks from the endpoints of the other members of its circles.
    pub async fn repair_history(&self, did: &str) -> Result<HistoryRepair, VerifyError> {
        let mut report = HistoryRepair {
            did: did.to_string(),
            ..Default::default()
        };
        let d = did.to_string();
        let since = now().minus(RETENTION).to_string();
        let found = self
            .circles
            .syncer
            .store
            .read(move |c| {
                let Some(repo) = store::get_repo(c, &d)? else {
                    return Ok(None);
                };
                let mut stmt = c.prepare(
                    "SELECT DISTINCT data FROM commits WHERE repo_id = ?1 AND synced_at >= ?2",
                )?;
                let rows = stmt.query_map(rusqlite::params![repo.id, since], |r| {
                    r.get::<_, Vec<u8>>(0)
                })?;
                let mut olds = Vec::new();
                for bytes in rows {
                    if let Ok(cid) = Cid::try_from(bytes?.as_slice()) {
                        olds.push(cid);
                    }
                }
                Ok(Some((repo, olds)))
            })
            .await?;
        let Some((repo, olds)) = found else {
            return Ok(report);
        };
        let Some(current) = repo.data.as_deref().and_then(|d| d.parse::<Cid>().ok()) else {
            return Ok(report);
        };
        let olds: Vec<Cid> = olds.into_iter().filter(|c| *c != current).collect();
        report.trees = olds.len() + 1;
        let endpoints: Vec<String> = self
            .member_endpoints()
            .await
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        report.sources = endpoints.len();
        let repo_id = repo.id;
        for _ in 0..MAX_PASSES {
            let o = olds.clone();
            let missing = self
                .circles
                .syncer
                .store
                .read(move |c| missing_blocks(c, repo_id, &o, current))
                .await?;
            report.missing = missing.len();
            report.missing_examples = missing.iter().take(3).map(Cid::to_string).collect();
            if missing.is_empty() || report.restored >= MAX_BLOCKS {
                break;
            }
            let mut got = Vec::new();
            for cid in &missing {
                for base in &endpoints {
                    if let Some(bytes) = self.fetch_block(base, cid).await {
                        got.push((*cid, bytes));
                        break;
                    }
                }
            }
            if got.is_empty() {
                break;
            }
            report.restored += got.len();
            self.circles
                .syncer
                .store
                .write(move |c| {
                    let tx = c.transaction()?;
                    let mut added = (0i64, 0i64);
                    for (cid, bytes) in &got {
                        added.0 += tx.execute(
                            "INSERT INTO blocks (repo_id, cid, data) VALUES (?1, ?2, ?3)
                             ON CONFLICT (repo_id, cid) DO NOTHING",
                            rusqlite::params![repo_id, cid.to_bytes(), bytes],
                        )? as i64;
                        added.1 += bytes.len() as i64;
                    }
                    tx.execute(
                        "UPDATE repos SET blocks = blocks + ?2, bytes = bytes + ?3 WHERE id = ?1",
                        rusqlite::params![repo_id, added.0, added.1],
                    )?;
                    tx.commit()?;
                    Ok::<_, StoreError>(())
                })
                .await??;
        }
        Ok(report)
    }

    /// The other members of this node's circles that advertise an endpoint: (their
    /// account's DID, the endpoint).
    pub async fn member_endpoints(&self) -> Vec<(String, String)> {
        let me = self.circles.me().await.map(|a| a.did).unwrap_or_default();
        let mut nodes = BTreeSet::new();
        if let Ok(policies) = self.circles.in_force().await {
            for p in policies {
                for m in p.members {
                    if m.node != me {
                        nodes.insert(m.node);
                    }
                }
            }
        }
        let mut out = Vec::new();
        for node in nodes {
            if let Ok(Some((_, peer))) = self
                .circles
                .verified::<crate::policy::records::PeerRecord>(
                    &node,
                    crate::policy::records::nsid::PEER,
                    "self",
                )
                .await
            {
                if let Some(e) = peer.endpoint {
                    out.push((node, e.trim_end_matches('/').to_string()));
                }
            }
        }
        out
    }

    async fn fetch_block(&self, base: &str, cid: &Cid) -> Option<Vec<u8>> {
        super::layers::fetch_block(&self.circles.syncer.http, base, cid).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gaps_of_the_current_tree_are_found_down_to_what_a_missing_node_hides() {
        let (_dir, conn, id, root, records) = crate::testdata::held_repo(400);
        let forget = |cid: &Cid| {
            conn.execute(
                "DELETE FROM blocks WHERE repo_id = ?1 AND cid = ?2",
                rusqlite::params![id, cid.to_bytes()],
            )
            .unwrap();
        };
        assert!(missing_blocks(&conn, id, &[], root).unwrap().is_empty());
        // Two records, then a tree node below the root (which hides its subtree).
        let (a, b) = (records[5].1, records[390].1);
        forget(&a);
        forget(&b);
        assert_eq!(
            missing_blocks(&conn, id, &[], root).unwrap(),
            BTreeSet::from([a, b])
        );
        let node = crate::reconcile::children(&conn, id, &root)
            .unwrap()
            .unwrap()
            .trees[0];
        let bytes = crate::export::get_block(&conn, id, &node).unwrap().unwrap();
        forget(&node);
        let found = missing_blocks(&conn, id, &[], root).unwrap();
        assert!(found.contains(&node) && found.len() <= 3, "{found:?}");
        // Fetched back, the node shows what it hid.
        conn.execute(
            "INSERT INTO blocks (repo_id, cid, data) VALUES (?1, ?2, ?3)",
            rusqlite::params![id, node.to_bytes(), bytes],
        )
        .unwrap();
        assert_eq!(
            missing_blocks(&conn, id, &[], root).unwrap(),
            BTreeSet::from([a, b])
        );
    }
}
