//! Catching up from a friend: when an account's own server can't serve it (down, gone, taken
//! down, refusing), another node that holds a newer signed state of the account gives exactly
//! the blocks this copy lacks. A copy is good because it verifies against the account's signed
//! commit, not because of where its bytes came from: the friend's latest commit is checked
//! against the key in the account's DID document (read from the identity directory, not from
//! the server or the friend), then the differing part of the tree is walked level by level
//! over `com.atproto.sync.getBlocks` (a node held here means its whole subtree is held: only
//! the subtrees whose CIDs this copy lacks are asked for), every block hashed against its CID,
//! and the result goes through the same verified ingest as a server's answer (signature, tree
//! validated, one transaction). The previous copy stays when anything does not verify.

use std::collections::BTreeSet;
use std::io::Write;

use cid::Cid;
use serde::{Deserialize, Serialize};

use super::{SyncError, SyncProgress, Syncer};
use crate::repo::car::{CarReader, CarWriter};
use crate::repo::commit::Commit;
use crate::repo::mst;
use crate::store::{self, StoreError};

/// CIDs asked for in one `getBlocks` (the serving side takes 1,000; the query string stays
/// well under the 64 KiB a server reads).
const BATCH: usize = 400;
/// The largest `getBlocks` answer read.
const ANSWER_LIMIT: u64 = 64 << 20;
/// Blocks fetched in one catch-up, at most (a walk deeper or wider than an honest difference
/// stops there).
const MAX_BLOCKS: usize = 1_000_000;
/// Levels walked, at most (the tree's layers, and one more for the records).
const MAX_LEVELS: usize = mst::MAX_LAYER as usize + 2;

/// What one catch-up from a friend did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CatchUp {
    pub did: String,
    /// The friend's node that served it.
    pub endpoint: String,
    /// The revision held before, and the one reached.
    pub from_rev: Option<String>,
    pub rev: String,
    /// Tree nodes and records fetched (the difference), their bytes, and the requests made.
    pub nodes: u64,
    pub records: u64,
    pub bytes: u64,
    pub requests: u64,
    pub creates: u64,
    pub updates: u64,
    pub deletes: u64,
    /// Images and other blobs fetched from the friend afterwards (each hashed).
    pub blobs_fetched: u64,
}

#[derive(Deserialize)]
struct Latest {
    cid: String,
    rev: String,
}

impl Syncer {
    /// Brings the copy of `did` up to the newest state the node at `endpoint` holds, verified
    /// like a backup from the account's server. `Ok(None)`: that node holds nothing newer.
    pub async fn catch_up_from(
        &self,
        did: &str,
        endpoint: &str,
        progress: &(dyn Fn(SyncProgress) + Send + Sync),
    ) -> Result<Option<CatchUp>, SyncError> {
        let endpoint = endpoint.trim_end_matches('/');
        let d = did.to_string();
        let row = self
            .store
            .read(move |c| store::get_repo(c, &d))
            .await?
            .ok_or_else(|| SyncError::NotBackedUp(did.to_string()))?;
        let doc = self.resolver.resolve_did(did, false).await?;
        let key = doc.signing_key.clone().ok_or_else(|| SyncError::NoKey {
            did: did.to_string(),
        })?;
        progress(SyncProgress::Checking);
        let latest: Latest = self
            .get_json(
                endpoint,
                "com.atproto.sync.getLatestCommit",
                &[("did", did)],
            )
            .await?;
        let held_rev = row.rev.clone().filter(|_| row.head.is_some());
        if held_rev
            .as_deref()
            .is_some_and(|h| h >= latest.rev.as_str())
        {
            return Ok(None);
        }
        let head: Cid = latest
            .cid
            .parse()
            .map_err(|_| bad_commit(endpoint, "a head that is no CID"))?;
        let mut report = CatchUp {
            did: did.to_string(),
            endpoint: endpoint.to_string(),
            from_rev: held_rev,
            rev: latest.rev.clone(),
            ..Default::default()
        };
        let mut fetched = self.get_blocks(endpoint, did, &[head], &mut report).await?;
        let (_, commit_bytes) = fetched
            .pop()
            .ok_or_else(|| bad_commit(endpoint, "no commit block"))?;
        let commit = Commit::decode(&commit_bytes)
            .map_err(|e| bad_commit(endpoint, &format!("a commit that does not read: {e}")))?;
        if commit.did != did || commit.rev != latest.rev {
            return Err(bad_commit(
                endpoint,
                "a commit of another account or revision",
            ));
        }
        // Checked before anything else is fetched (the ingest checks it again).
        commit.verify_signature(&key).map_err(|e| {
            bad_commit(
                endpoint,
                &format!("a commit whose signature does not match the account's key ({e})"),
            )
        })?;

        tokio::fs::create_dir_all(self.tmp_dir()).await?;
        let path = self.tmp_dir().join(format!(
            "{}.peer-{:016x}.car.part",
            did.replace(':', "_"),
            rand::random::<u64>()
        ));
        let written = self
            .walk_difference(
                endpoint,
                row.id,
                &commit,
                (head, commit_bytes),
                &path,
                &mut report,
            )
            .await;
        let result = match written {
            Ok(()) => self.ingest_file(did, &path, key, false, progress).await,
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&path).await;
        let outcome = result?;
        report.creates = outcome.creates;
        report.updates = outcome.updates;
        report.deletes = outcome.deletes;
        Ok(Some(report))
    }

    /// Writes a CAR of the commit, then the tree nodes and records of `commit`'s tree that the
    /// copy held lacks, fetched level by level from `endpoint`.
    async fn walk_difference(
        &self,
        endpoint: &str,
        repo_id: i64,
        commit: &Commit,
        (head, commit_bytes): (Cid, Vec<u8>),
        path: &std::path::Path,
        report: &mut CatchUp,
    ) -> Result<(), SyncError> {
        let mut car = CarWriter::new(
            std::io::BufWriter::new(std::fs::File::create(path)?),
            vec![head],
        )?;
        car.write_block(&head, &commit_bytes)?;
        let mut nodes = vec![commit.data];
        let mut records = Vec::new();
        let mut seen = BTreeSet::new();
        for _ in 0..MAX_LEVELS {
            if nodes.is_empty() {
                break;
            }
            let wanted = self.lacking(repo_id, nodes, &mut seen).await?;
            let mut next = Vec::new();
            for (cid, bytes) in self
                .get_blocks(endpoint, &commit.did, &wanted, report)
                .await?
            {
                let node = mst::decode_node(&cid, &bytes)
                    .map_err(|e| bad(endpoint, &format!("a tree node that does not read: {e}")))?;
                next.extend(node.left);
                for e in node.entries {
                    next.extend(e.right);
                    records.push(e.value);
                }
                report.nodes += 1;
                car.write_block(&cid, &bytes)?;
            }
            nodes = next;
            if seen.len() > MAX_BLOCKS {
                return Err(bad(endpoint, "a difference larger than any account's"));
            }
        }
        let wanted = self.lacking(repo_id, records, &mut seen).await?;
        for (cid, bytes) in self
            .get_blocks(endpoint, &commit.did, &wanted, report)
            .await?
        {
            report.records += 1;
            car.write_block(&cid, &bytes)?;
        }
        car.finish()?.flush()?;
        Ok(())
    }

    /// Of `cids`, those neither held for the account nor already asked for.
    async fn lacking(
        &self,
        repo_id: i64,
        cids: Vec<Cid>,
        seen: &mut BTreeSet<Cid>,
    ) -> Result<Vec<Cid>, SyncError> {
        let fresh: Vec<Cid> = cids.into_iter().filter(|c| seen.insert(*c)).collect();
        let lacking = self
            .store
            .read(move |c| {
                let mut stmt =
                    c.prepare_cached("SELECT 1 FROM blocks WHERE repo_id = ?1 AND cid = ?2")?;
                let mut out = Vec::new();
                for cid in fresh {
                    if !stmt.exists(rusqlite::params![repo_id, cid.to_bytes()])? {
                        out.push(cid);
                    }
                }
                Ok::<_, StoreError>(out)
            })
            .await?;
        Ok(lacking)
    }

    /// The blocks `cids` from `endpoint`'s `getBlocks`, each hashed against its CID; every one
    /// asked for must come.
    async fn get_blocks(
        &self,
        endpoint: &str,
        did: &str,
        cids: &[Cid],
        report: &mut CatchUp,
    ) -> Result<Vec<(Cid, Vec<u8>)>, SyncError> {
        let url = format!("{endpoint}/xrpc/com.atproto.sync.getBlocks");
        let mut out = Vec::with_capacity(cids.len());
        for batch in cids.chunks(BATCH) {
            let mut query: Vec<(&str, String)> = vec![("did", did.to_string())];
            query.extend(batch.iter().map(|c| ("cids", c.to_string())));
            report.requests += 1;
            let resp = self.send(self.http.get(&url).query(&query), &url).await?;
            let deadline = tokio::time::Instant::now() + self.transfer.allowed(ANSWER_LIMIT / 4);
            let body = crate::xrpc::read_capped(resp, &url, ANSWER_LIMIT, deadline).await?;
            report.bytes += body.len() as u64;
            let mut reader = CarReader::new(&body[..])
                .map_err(|e| bad(endpoint, &format!("blocks that do not read: {e}")))?;
            let asked: BTreeSet<Cid> = batch.iter().copied().collect();
            let mut got = BTreeSet::new();
            while let Some((cid, bytes)) = reader
                .next_block()
                .map_err(|e| bad(endpoint, &format!("blocks that do not read: {e}")))?
            {
                if asked.contains(&cid) && got.insert(cid) {
                    out.push((cid, bytes.to_vec()));
                }
            }
            if got.len() != asked.len() {
                return Err(bad(endpoint, "an answer without every block asked for"));
            }
        }
        Ok(out)
    }
}

/// What a friend's node served did not verify (the copy held stays as it was).
fn bad(endpoint: &str, what: &str) -> SyncError {
    SyncError::Peer {
        endpoint: endpoint.to_string(),
        what: what.to_string(),
        layer: 1,
    }
}

/// The friend's latest commit did not verify (a layer 0 failure).
fn bad_commit(endpoint: &str, what: &str) -> SyncError {
    SyncError::Peer {
        endpoint: endpoint.to_string(),
        what: what.to_string(),
        layer: 0,
    }
}
