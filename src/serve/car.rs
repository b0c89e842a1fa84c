//! `getRepo`'s CAR, streamed from the store: the commit, then the record tree walked depth
//! first, each tree node followed by its left subtree, then each record and the subtree to its
//! right (nodes in pre-order, records in key order).
//!
//! Blocks are read one at a time and written out as they are read, so a request holds the
//! path being walked (the tree's depth times a node's entries) and one output chunk, never
//! the tree's CIDs or blocks: memory does not grow with the account's size. The price: a
//! record stored under two keys with identical bytes (one CID) is written twice, which CAR v1
//! allows and readers (this node's ingest among them) accept.

use std::io::Write;

use cid::Cid;
use rusqlite::Connection;
use tokio::sync::mpsc;

use crate::export::get_block;
use crate::repo::car::CarWriter;
use crate::repo::commit::Commit;
use crate::repo::mst;
use crate::store::{Store, StoreError};

/// One output chunk: the CAR leaves the blocking thread in pieces of this size.
const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks waiting for the client: with [`CHUNK_BYTES`], the most a request queues.
pub(super) const QUEUED_CHUNKS: usize = 4;

pub(super) type Chunk = Result<bytes::Bytes, std::io::Error>;

#[derive(Debug, thiserror::Error)]
pub(super) enum CarStreamError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("block {0} is missing")]
    Missing(Cid),
    #[error("{0}")]
    Damaged(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<rusqlite::Error> for CarStreamError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

enum Next {
    Node(Cid),
    Record(Cid),
}

/// Writes the CAR of the commit `head` of the held repo `repo_id` and its whole record tree.
pub(super) fn write_repo_car<W: Write>(
    conn: &Connection,
    repo_id: i64,
    head: Cid,
    out: W,
) -> Result<W, CarStreamError> {
    let block = |cid: &Cid| -> Result<Vec<u8>, CarStreamError> {
        get_block(conn, repo_id, cid)?.ok_or(CarStreamError::Missing(*cid))
    };
    let commit_bytes = block(&head)?;
    let commit =
        Commit::decode(&commit_bytes).map_err(|e| CarStreamError::Damaged(e.to_string()))?;
    let mut car = CarWriter::new(out, vec![head])?;
    car.write_block(&head, &commit_bytes)?;
    // What is left to write, the next on top: at most the tree's depth times a node's
    // entries (twice, with their subtrees), whatever the number of records.
    let mut todo = vec![Next::Node(commit.data)];
    while let Some(next) = todo.pop() {
        match next {
            Next::Record(cid) => car.write_block(&cid, &block(&cid)?)?,
            Next::Node(cid) => {
                let bytes = block(&cid)?;
                let node = mst::decode_node(&cid, &bytes)
                    .map_err(|e| CarStreamError::Damaged(e.to_string()))?;
                car.write_block(&cid, &bytes)?;
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
    Ok(car.finish()?)
}

/// Writes into a channel from a blocking thread: the CAR streams out as it is made, and the
/// writer waits (the walk pauses) while the client is slow to take it.
struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

/// Sends the CAR of `head` into `tx` (run on a blocking thread). A failure after the first
/// bytes ends the stream with an error, so the client sees a cut answer, not a short CAR.
pub(super) fn send_repo_car(
    store: &Store,
    did: &str,
    repo_id: i64,
    head: Cid,
    since: Option<&str>,
    tx: mpsc::Sender<Chunk>,
) {
    let out = ChannelWriter {
        tx: tx.clone(),
        buf: Vec::with_capacity(CHUNK_BYTES),
    };
    let result = store
        .reader()
        .map_err(CarStreamError::from)
        .and_then(|c| match since {
            Some(since) => super::since::write_since_car(&c, repo_id, head, since, out).map(drop),
            None => write_repo_car(&c, repo_id, head, out).map(drop),
        });
    match result {
        Ok(()) => {}
        Err(CarStreamError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            tracing::debug!(%did, "getRepo: the client went away");
        }
        Err(e) => {
            tracing::warn!(%did, "getRepo stopped: {e}");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::repo::build::RepoBuilder;
    use crate::repo::car::CarReader;

    #[test]
    fn the_streamed_car_holds_the_same_blocks_as_the_export_in_tree_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let mut conn = Connection::open(&path).unwrap();
        crate::store::schema::migrate(&mut conn, &path).unwrap();
        let did = "did:plc:carstreamcarstreamcarstre";
        crate::store::add_repo(&conn, did, None, None).unwrap();
        let key = crate::crypto::SigningKey::generate_k256();
        let mut repo = RepoBuilder::new(did, key.clone());
        for i in 0..500u64 {
            let rkey = crate::repo::tid::format(1_700_000_000_000_000 + i * 1000, 0);
            repo.put_json(
                "app.bsky.feed.post",
                &rkey,
                &serde_json::json!({"$type": "app.bsky.feed.post", "text": format!("post {i}")}),
            );
        }
        let built = repo.build(&crate::repo::tid::now(0));
        let outcome = crate::sync::ingest::ingest_car(
            &mut conn,
            did,
            &key.public_key(),
            &built.car_bytes()[..],
            &mut |_| {},
        )
        .unwrap();
        let head: Cid = outcome.commit.parse().unwrap();

        let repo_id: i64 = conn
            .query_row("SELECT id FROM repos WHERE did = ?1", [did], |r| r.get(0))
            .unwrap();
        let streamed = write_repo_car(&conn, repo_id, head, Vec::new()).unwrap();
        let mut exported = Vec::new();
        crate::export::write_car(&conn, did, &mut exported).unwrap();
        let blocks = |bytes: &[u8]| {
            let mut car = CarReader::new(bytes).unwrap();
            assert_eq!(car.roots(), [head]);
            let mut out = Vec::new();
            while let Some((cid, data)) = car.next_block().unwrap() {
                out.push((cid, data.to_vec()));
            }
            out
        };
        let (s, e) = (blocks(&streamed), blocks(&exported));
        assert_eq!(s.len(), e.len());
        assert_eq!(
            s.iter().map(|b| b.0).collect::<HashSet<_>>(),
            e.iter().map(|b| b.0).collect::<HashSet<_>>()
        );
        // Records come in key order, each after the node that names it.
        let by_cid: HashMap<Cid, Vec<u8>> = s.iter().cloned().collect();
        let mut walked = Vec::new();
        let mut src = by_cid.clone();
        mst::walk(
            &mut src,
            Commit::decode(&by_cid[&head]).unwrap().data,
            |_, cid| {
                walked.push(*cid);
                Ok::<(), mst::MstError>(())
            },
        )
        .unwrap();
        let in_car: Vec<Cid> = s
            .iter()
            .map(|b| b.0)
            .filter(|c| walked.contains(c))
            .collect();
        assert_eq!(in_car, walked);
        assert_eq!(s[0].0, head);
    }
}
