//! Self-check and repair of a held copy, against the reference PDS: rows deleted and
//! corrupted behind the store's back are found, and restored from the PDS.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cid::Cid;
use p2pds::identity::Resolver;
use p2pds::repo::mst;
use p2pds::store::{self, Store};
use p2pds::sync::selfcheck::{self, Outcome};
use p2pds::sync::{SyncError, Syncer};
use serde_json::{json, Value};

use crate::pds::{self, Account, TestBed};

/// Where nothing listens: resolving a DID through it fails at once.
const DEAD_PLC: &str = "http://127.0.0.1:1";

fn syncer(store: &Store, dir: &Path, plc: &str) -> Syncer {
    let http = reqwest::Client::new();
    let resolver = Arc::new(Resolver::new(http.clone(), plc, None));
    Syncer::new(store.clone(), http, resolver, dir)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An account with `posts` posts and a few notes, backed up by a fresh node.
async fn backed_up(
    bed: &TestBed,
    name: &str,
    posts: usize,
) -> (tempfile::TempDir, Syncer, Account) {
    let acct = bed.create_account(name).await.unwrap();
    for i in 0..posts {
        acct.create_record(
            "app.bsky.feed.post",
            json!({"$type": "app.bsky.feed.post", "text": format!("post {i}"), "createdAt": now()}),
        )
        .await
        .unwrap();
    }
    for i in 0..3 {
        acct.put_record(
            "org.example.notes",
            &format!("note{i}"),
            json!({"$type": "org.example.notes", "body": format!("note {i}")}),
        )
        .await
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("p2pds.sqlite")).unwrap();
    let syncer = syncer(&store, dir.path(), &bed.plc);
    let did = acct.did.clone();
    store
        .write(move |c| store::add_repo(c, &did, None, None))
        .await
        .unwrap()
        .unwrap();
    let report = syncer.sync_repo(&acct.did, &|_| {}).await.unwrap();
    assert!(report.full && report.ingest.is_some());
    (dir, syncer, acct)
}

/// A connection straight to the store's file, as a failing disk would "edit" it.
fn raw(syncer: &Syncer) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(syncer.store.path()).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    conn
}

/// Flips one bit of a stored block.
fn rot(conn: &rusqlite::Connection, cid: &Cid) {
    let mut data: Vec<u8> = conn
        .query_row(
            "SELECT data FROM blocks WHERE cid = ?1",
            [cid.to_bytes()],
            |r| r.get(0),
        )
        .unwrap();
    let at = data.len() / 3;
    data[at] ^= 0x04;
    let n = conn
        .execute(
            "UPDATE blocks SET data = ?2 WHERE cid = ?1",
            rusqlite::params![cid.to_bytes(), data],
        )
        .unwrap();
    assert_eq!(n, 1);
}

struct Held {
    repo_id: i64,
    head: Cid,
    data: Cid,
    /// Every block of the repo: CID → (row id, bytes).
    blocks: HashMap<Cid, (i64, Vec<u8>)>,
}

fn held(conn: &rusqlite::Connection, did: &str) -> Held {
    let (repo_id, head, data): (i64, Vec<u8>, Vec<u8>) = conn
        .query_row(
            "SELECT id, head, data FROM repos WHERE did = ?1",
            [did],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let mut stmt = conn
        .prepare("SELECT id, cid, data FROM blocks WHERE repo_id = ?1")
        .unwrap();
    let blocks = stmt
        .query_map([repo_id], |r| {
            let cid: Vec<u8> = r.get(1)?;
            Ok((
                Cid::try_from(cid.as_slice()).unwrap(),
                (r.get(0)?, r.get(2)?),
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    Held {
        repo_id,
        head: Cid::try_from(head.as_slice()).unwrap(),
        data: Cid::try_from(data.as_slice()).unwrap(),
        blocks,
    }
}

/// The blocks a check can see are missing: the commit, and every lost node or record
/// reachable through nodes that are still there (what a lost node hides is unknown).
fn visible_missing(before: &Held, lost: &HashSet<Cid>) -> HashSet<Cid> {
    let mut missing = HashSet::new();
    if lost.contains(&before.head) {
        missing.insert(before.head);
    }
    let mut stack = vec![before.data];
    while let Some(cid) = stack.pop() {
        if lost.contains(&cid) {
            missing.insert(cid);
            continue;
        }
        let node = mst::decode_node(&cid, &before.blocks[&cid].1).unwrap();
        stack.extend(node.left);
        for e in node.entries {
            if lost.contains(&e.value) {
                missing.insert(e.value);
            }
            stack.extend(e.right);
        }
    }
    missing
}

/// The copy's records, and its head, equal what the PDS says.
async fn assert_copy_matches(syncer: &Syncer, acct: &Account) {
    let did = acct.did.clone();
    let repo = syncer
        .store
        .read(move |c| store::get_repo(c, &did))
        .await
        .unwrap()
        .unwrap();
    let (commit, rev) = acct.latest_commit().await.unwrap();
    assert_eq!(repo.head.as_deref(), Some(commit.as_str()));
    assert_eq!(repo.rev.as_deref(), Some(rev.as_str()));
    assert_eq!(repo.state, "synced");
    let mut total = 0;
    for collection in acct.list_collections().await.unwrap() {
        let upstream: BTreeMap<String, (String, Value)> = acct
            .list_records(&collection)
            .await
            .unwrap()
            .into_iter()
            .map(|(uri, cid, value)| (uri, (cid, value)))
            .collect();
        let (id, coll) = (repo.id, collection.clone());
        let local: BTreeMap<String, (String, Value)> = syncer
            .store
            .read(move |c| store::list_records(c, id, Some(&coll)))
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                let uri = format!("at://{}/{}/{}", acct.did, r.collection, r.rkey);
                (uri, (r.cid, r.value))
            })
            .collect();
        assert_eq!(local, upstream, "collection {collection}");
        total += upstream.len();
    }
    assert_eq!(repo.records, total as i64);
}

#[tokio::test]
async fn lost_and_corrupt_blocks_are_found_and_restored_from_the_pds() {
    let bed = pds::shared().await;
    let (_dir, syncer, acct) = backed_up(bed, "selfcheck", 30).await;

    let started = Instant::now();
    let sound = selfcheck::check_repo(&syncer, &acct.did, selfcheck::DEFAULT_SAMPLE)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(sound.outcome, Outcome::Ok, "{:?}", sound.detail);
    eprintln!(
        "self-check of a 33-record repo ({} blocks hashed): {took:?}",
        sound.blocks_checked
    );

    // Half the rows go, and one record block that stays rots.
    let conn = raw(&syncer);
    let before = held(&conn, &acct.did);
    let total = before.blocks.len();
    let lost: HashSet<Cid> = before
        .blocks
        .iter()
        .filter(|(_, (id, _))| id % 2 == 0)
        .map(|(cid, _)| *cid)
        .collect();
    let deleted = conn
        .execute(
            "DELETE FROM blocks WHERE repo_id = ?1 AND id % 2 = 0",
            [before.repo_id],
        )
        .unwrap();
    assert_eq!(deleted, lost.len());
    assert!(deleted >= total / 2 - 1, "{deleted} of {total}");
    let record_cids: Vec<Vec<u8>> = conn
        .prepare("SELECT cid FROM records WHERE repo_id = ?1 ORDER BY rkey")
        .unwrap()
        .query_map([before.repo_id], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let rotten = record_cids
        .iter()
        .map(|c| Cid::try_from(c.as_slice()).unwrap())
        .find(|c| !lost.contains(c))
        .unwrap();
    rot(&conn, &rotten);
    let expected_missing = visible_missing(&before, &lost);
    assert!(!expected_missing.is_empty());

    // Every block is hashed (the sample exceeds the repo), the whole tree walked.
    let damaged = selfcheck::check_repo(&syncer, &acct.did, 10_000)
        .await
        .unwrap();
    assert_eq!(damaged.outcome, Outcome::Damaged);
    assert_eq!(damaged.bad_blocks, 1, "{:?}", damaged.detail);
    assert_eq!(damaged.missing_blocks as usize, expected_missing.len());
    assert_eq!(damaged.blocks_checked as usize, total - deleted);
    let detail = damaged.detail.clone().unwrap();
    assert!(detail.contains(&rotten.to_string()), "{detail}");
    let json = serde_json::to_value(&damaged).unwrap();
    assert_eq!(json["outcome"], "damaged");
    assert_eq!(json["badBlocks"], 1);

    // The repair removes the rotten row and brings back everything lost, though
    // the PDS's head is the one held.
    let started = Instant::now();
    let repair = selfcheck::repair_repo(&syncer, &acct.did).await.unwrap();
    eprintln!("repair of the damaged copy: {:?}", started.elapsed());
    assert!(repair.repaired(), "{:?}", repair.recheck);
    assert_eq!(repair.bad_blocks_removed, 1);
    assert_eq!(repair.blocks_scanned as usize, total - deleted);
    assert_eq!(repair.blocks_restored as usize, deleted + 1);
    assert_eq!(repair.records_changed, 0);
    assert_eq!(repair.recheck.outcome, Outcome::Ok);
    assert_eq!(repair.commit, before.head.to_string());

    let after = held(&conn, &acct.did);
    assert_eq!(after.blocks.len(), total);
    for (cid, (_, bytes)) in &after.blocks {
        assert_eq!(&before.blocks[cid].1, bytes, "{cid}");
    }
    let (commits, blocks_counter): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM commits WHERE repo_id = ?1), blocks FROM repos WHERE id = ?1",
            [before.repo_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((commits, blocks_counter), (1, total as i64));
    let repaired: i64 = conn
        .query_row(
            "SELECT repaired FROM self_checks WHERE id = ?1",
            [damaged.id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(repaired, 1);
    assert_copy_matches(&syncer, &acct).await;

    // A later pass finds the copy sound; a sync afterwards has nothing to do.
    let reports = selfcheck::run(&syncer, 64).await.unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].outcome, Outcome::Ok);
    let sync = syncer.sync_repo(&acct.did, &|_| {}).await.unwrap();
    assert!(sync.up_to_date);
}

#[tokio::test]
async fn a_repair_without_the_pds_reports_the_damage_and_keeps_the_copy() {
    let bed = pds::shared().await;
    let (dir, syncer, acct) = backed_up(bed, "selfcheck-off", 10).await;
    let conn = raw(&syncer);
    let before = held(&conn, &acct.did);
    let records_before: i64 = conn
        .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .unwrap();
    // One record block lost, another corrupt.
    let mut records: Vec<Cid> = conn
        .prepare("SELECT cid FROM records ORDER BY rkey")
        .unwrap()
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|c| Cid::try_from(c.unwrap().as_slice()).unwrap())
        .collect();
    let (lost, rotten) = (records.pop().unwrap(), records.pop().unwrap());
    conn.execute("DELETE FROM blocks WHERE cid = ?1", [lost.to_bytes()])
        .unwrap();
    rot(&conn, &rotten);

    // The DID cannot be resolved: nothing can be fetched.
    let offline = self::syncer(&syncer.store, dir.path(), DEAD_PLC);
    let err = selfcheck::repair_repo(&offline, &acct.did)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            SyncError::Damaged {
                bad: 1,
                missing: 2,
                ..
            }
        ),
        "{msg}"
    );
    for part in [
        acct.did.as_str(),
        "1 corrupt blocks removed",
        "2 blocks missing",
        "will be retried",
    ] {
        assert!(msg.contains(part), "{msg}");
    }
    assert!(err.is_retryable());
    // Only the provably corrupt row went; the records and the head stay.
    let after = held(&conn, &acct.did);
    assert_eq!(after.blocks.len(), before.blocks.len() - 2);
    assert!(!after.blocks.contains_key(&rotten));
    assert_eq!(after.head, before.head);
    let records_after: i64 = conn
        .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(records_after, records_before);
    let (state, error): (String, Option<String>) = conn
        .query_row("SELECT state, error FROM repos", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        (state.as_str(), error.as_deref()),
        ("error", Some(msg.as_str()))
    );

    // A deactivated account cannot be fetched either.
    acct.deactivate().await.unwrap();
    let err = selfcheck::repair_repo(&syncer, &acct.did)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SyncError::Damaged {
                bad: 0,
                missing: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("deactivated"), "{err}");
    acct.activate().await.unwrap();

    // Once the PDS can be reached, the repair goes through.
    let repair = selfcheck::repair_repo(&syncer, &acct.did).await.unwrap();
    assert!(repair.repaired(), "{:?}", repair.recheck);
    assert_eq!(repair.blocks_restored, 2);
    assert_copy_matches(&syncer, &acct).await;
}
