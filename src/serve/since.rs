//! `getRepo?since=REV`: only what a client holding the repo at `REV` lacks, as the reference
//! PDS answers it (the blocks written after that revision: the head commit, the tree nodes that
//! are new, and the records created or changed).
//!
//! The node keeps past states (`commits`), not a revision per block: the answer is worked out
//! against the newest kept state at or before `REV`. The tree nodes of that state are held in
//! memory as CIDs while the new tree is walked (a subtree whose root the old state has is
//! shared whole and skipped), so this answer's memory follows the account's number of tree
//! nodes (about 3 MB at 300,000 records), unlike the whole repo's, which follows its depth.
//! Without a kept state that old, the whole repo is sent: more than asked, never less.

use std::collections::HashSet;
use std::io::Write;

use cid::Cid;
use rusqlite::{Connection, OptionalExtension};

use super::car::{write_repo_car, CarStreamError};
use crate::export::{get_block, StoreSource};
use crate::repo::car::CarWriter;
use crate::repo::commit::Commit;
use crate::repo::mst::{self, Change, MstError};

/// Writes the blocks of `head` (held repo `repo_id`) that are newer than revision `since`.
pub(super) fn write_since_car<W: Write>(
    conn: &Connection,
    repo_id: i64,
    head: Cid,
    since: &str,
    out: W,
) -> Result<W, CarStreamError> {
    let block = |cid: &Cid| -> Result<Vec<u8>, CarStreamError> {
        get_block(conn, repo_id, cid)?.ok_or(CarStreamError::Missing(*cid))
    };
    let commit_bytes = block(&head)?;
    let commit =
        Commit::decode(&commit_bytes).map_err(|e| CarStreamError::Damaged(e.to_string()))?;
    if commit.rev.as_str() <= since {
        // Nothing was written after `since`.
        return Ok(CarWriter::new(out, vec![head])?.finish()?);
    }
    let Some(old) = kept_state_at(conn, repo_id, since)? else {
        return write_repo_car(conn, repo_id, head, out);
    };
    let Ok((old_nodes, mut new_records)) = changes(conn, repo_id, old, commit.data) else {
        // The kept state's tree is not whole any more (collected): send everything.
        return write_repo_car(conn, repo_id, head, out);
    };
    let mut car = CarWriter::new(out, vec![head])?;
    car.write_block(&head, &commit_bytes)?;
    let mut todo = vec![commit.data];
    while let Some(cid) = todo.pop() {
        if old_nodes.contains(&cid) {
            continue; // shared whole with the old state
        }
        let bytes = block(&cid)?;
        let node =
            mst::decode_node(&cid, &bytes).map_err(|e| CarStreamError::Damaged(e.to_string()))?;
        car.write_block(&cid, &bytes)?;
        todo.extend(node.left);
        for entry in &node.entries {
            if new_records.remove(&entry.value) {
                car.write_block(&entry.value, &block(&entry.value)?)?;
            }
            todo.extend(entry.right);
        }
    }
    Ok(car.finish()?)
}

/// The record tree of the newest kept state at or before `since`.
fn kept_state_at(
    conn: &Connection,
    repo_id: i64,
    since: &str,
) -> Result<Option<Cid>, CarStreamError> {
    let data: Option<Vec<u8>> = conn
        .query_row(
            "SELECT data FROM commits WHERE repo_id = ?1 AND rev <= ?2 ORDER BY rev DESC LIMIT 1",
            rusqlite::params![repo_id, since],
            |r| r.get(0),
        )
        .optional()?;
    Ok(data.and_then(|d| Cid::try_from(d.as_slice()).ok()))
}

/// The tree nodes of `old`, and the records `new` has that `old` has not under the same key.
fn changes(
    conn: &Connection,
    repo_id: i64,
    old: Cid,
    new: Cid,
) -> Result<(HashSet<Cid>, HashSet<Cid>), MstError> {
    let mut src = StoreSource { conn, repo_id };
    let mut nodes = HashSet::new();
    let mut todo = vec![old];
    while let Some(cid) = todo.pop() {
        if !nodes.insert(cid) {
            continue;
        }
        let bytes = mst::BlockSource::get_block(&mut src, &cid)?
            .ok_or_else(|| MstError::MissingBlock(cid.to_string()))?;
        let node = mst::decode_node(&cid, &bytes)?;
        todo.extend(node.left);
        todo.extend(node.entries.iter().filter_map(|e| e.right));
    }
    let mut records = HashSet::new();
    mst::diff(&mut src, Some(old), new, |change| {
        if let Change::Create { cid, .. } | Change::Update { cid, .. } = change {
            records.insert(cid);
        }
        Ok::<(), MstError>(())
    })?;
    Ok((nodes, records))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::repo::build::RepoBuilder;
    use crate::repo::car::CarReader;

    fn cids(car: &[u8]) -> (Vec<Cid>, HashSet<Cid>) {
        let mut reader = CarReader::new(car).unwrap();
        let roots = reader.roots().to_vec();
        let mut out = HashSet::new();
        while let Some((cid, _)) = reader.next_block().unwrap() {
            assert!(out.insert(cid), "{cid} twice");
        }
        (roots, out)
    }

    #[test]
    fn since_sends_only_what_the_later_revisions_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let mut conn = Connection::open(&path).unwrap();
        crate::store::schema::migrate(&mut conn, &path).unwrap();
        let did = "did:plc:sincesincesincesincesinc";
        crate::store::add_repo(&conn, did, None, None).unwrap();
        let key = crate::crypto::SigningKey::generate_k256();
        let mut repo = RepoBuilder::new(did, key.clone());
        let post =
            |i: u64| serde_json::json!({"$type": "app.bsky.feed.post", "text": format!("{i}")});
        let rkey = |i: u64| crate::repo::tid::format(1_700_000_000_000_000 + i * 1000, 0);
        for i in 0..400 {
            repo.put_json("app.bsky.feed.post", &rkey(i), &post(i));
        }
        let mut revs = Vec::new();
        let mut built = Vec::new();
        for step in 0..3u64 {
            if step > 0 {
                repo.put_json("app.bsky.feed.post", &rkey(1000 + step), &post(1000 + step));
                repo.delete("app.bsky.feed.post", &rkey(step * 7));
            }
            let rev = crate::repo::tid::format(1_750_000_000_000_000 + step * 1_000_000, 0);
            let b = repo.build(&rev);
            crate::sync::ingest::ingest_car(
                &mut conn,
                did,
                &key.public_key(),
                &b.car_bytes()[..],
                &mut |_| {},
            )
            .unwrap();
            revs.push(rev);
            built.push(b);
        }
        let repo_id: i64 = conn
            .query_row("SELECT id FROM repos WHERE did = ?1", [did], |r| r.get(0))
            .unwrap();
        let head = built[2].commit_cid;
        // Since the first state: exactly the blocks the two later revisions wrote.
        for (since, older) in [(&revs[1], &built[1]), (&revs[0], &built[0])] {
            let car = write_since_car(&conn, repo_id, head, since, Vec::new()).unwrap();
            let (roots, got) = cids(&car);
            assert_eq!(roots, [head]);
            let (_, want) = cids(&built[2].diff_car_bytes(older));
            assert_eq!(got, want, "since {since}");
        }
        // Since the head: nothing. Since before anything kept: the whole repo.
        let (_, none) = cids(&write_since_car(&conn, repo_id, head, &revs[2], Vec::new()).unwrap());
        assert!(none.is_empty());
        let early = crate::repo::tid::format(1_000_000_000_000_000, 0);
        let (_, all) = cids(&write_since_car(&conn, repo_id, head, &early, Vec::new()).unwrap());
        let (_, whole) = cids(&built[2].car_bytes());
        assert_eq!(all, whole);
    }
}
