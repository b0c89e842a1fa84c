//! Commit chains built with `RepoBuilder`, sent as `#commit` frames, applied to a store; and
//! the hostile stream: each bad event refused with its kind and words, nothing stored.

use std::collections::BTreeMap;

use cid::Cid;
use rusqlite::Connection;

use super::apply::{apply_checked, apply_commit, check, Outcome};
use super::frame::{self, Action, CommitEvent, Event, FrameError, RepoOp};
use super::verify::RefusalKind;
use crate::crypto::{PublicKey, SigningKey};
use crate::repo::build::{BuiltRepo, RepoBuilder};
use crate::repo::car::{CarReader, CarWriter};
use crate::repo::{cid_for_cbor, commit, mst, tid};

const ALICE: &str = "did:plc:aliceaaaaaaaaaaaaaaaaaaa";
const BOB: &str = "did:plc:bobbbbbbbbbbbbbbbbbbbbbbb";

fn store() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p2pds.sqlite");
    let mut conn = Connection::open(&path).unwrap();
    crate::store::schema::migrate(&mut conn, &path).unwrap();
    (dir, conn)
}

fn post(i: usize, text: &str) -> serde_json::Value {
    serde_json::json!({"$type": "app.bsky.feed.post", "text": format!("{text} {i}"),
        "createdAt": "2024-05-01T12:00:00.000Z"})
}

fn rkey(i: usize) -> String {
    format!("{i:06}")
}

/// One account: the builder's state is the last commit built (applied or not).
struct Account {
    did: &'static str,
    signing: SigningKey,
    key: PublicKey,
    repo: RepoBuilder,
    built: BuiltRepo,
    micros: u64,
    seq: i64,
}

impl Account {
    /// An account of `records` posts, synced into the store by a polled (full) ingest.
    fn new(conn: &mut Connection, did: &'static str, records: usize) -> Self {
        let signing = SigningKey::generate_k256();
        let key = signing.public_key();
        let mut repo = RepoBuilder::new(did, signing.clone());
        for i in 0..records {
            repo.put_json("app.bsky.feed.post", &rkey(i), &post(i, "first"));
        }
        // Revisions an hour ago, each a millisecond after the one before.
        let micros = (chrono::Utc::now().timestamp_micros() as u64) - 3_600_000_000;
        let built = repo.build(&tid::format(micros, 0));
        crate::store::add_repo(conn, did, None, None).unwrap();
        let car = built.car_bytes();
        crate::sync::ingest::ingest_car(conn, did, &key, &car[..], &mut |_| {}).unwrap();
        Self {
            did,
            signing,
            key,
            repo,
            built,
            micros,
            seq: 0,
        }
    }

    /// The next commit after `change`, as the event a PDS would send (ops computed from the
    /// records before and after, not from the tree).
    fn next(&mut self, change: impl FnOnce(&mut RepoBuilder)) -> CommitEvent {
        let before = self.repo.records.clone();
        change(&mut self.repo);
        self.micros += 1000;
        let next = self.repo.build(&tid::format(self.micros, 0));
        let event = CommitEvent {
            seq: {
                self.seq += 1;
                self.seq
            },
            repo: self.did.to_string(),
            commit: next.commit_cid,
            rev: next.rev.clone(),
            since: Some(self.built.rev.clone()),
            blocks: next.diff_car_bytes(&self.built),
            ops: ops_between(&before, &self.repo.records),
            blobs: vec![],
            prev_data: Some(self.built.data),
            time: "2024-05-01T12:00:00.000Z".into(),
        };
        self.built = next;
        event
    }

    /// A commit creating, updating and deleting a few posts.
    fn busy(&mut self, step: usize) -> CommitEvent {
        self.next(|r| {
            r.put_json("app.bsky.feed.post", &rkey(1000 + step), &post(step, "new"));
            r.put_json("app.bsky.feed.post", &rkey(step), &post(step, "edited"));
            r.delete("app.bsky.feed.post", &rkey(15 + step));
        })
    }

    /// The records the builder holds now, by key.
    fn expected(&self) -> BTreeMap<String, Cid> {
        self.repo
            .records
            .iter()
            .map(|(k, v)| (k.clone(), cid_for_cbor(v)))
            .collect()
    }
}

fn ops_between(
    before: &BTreeMap<String, Vec<u8>>,
    after: &BTreeMap<String, Vec<u8>>,
) -> Vec<RepoOp> {
    let mut ops = Vec::new();
    for (path, bytes) in after {
        let cid = Some(cid_for_cbor(bytes));
        match before.get(path) {
            None => ops.push(RepoOp {
                action: Action::Create,
                path: path.clone(),
                cid,
                prev: None,
            }),
            Some(old) if old != bytes => ops.push(RepoOp {
                action: Action::Update,
                path: path.clone(),
                cid,
                prev: Some(cid_for_cbor(old)),
            }),
            Some(_) => {}
        }
    }
    for (path, old) in before {
        if !after.contains_key(path) {
            ops.push(RepoOp {
                action: Action::Delete,
                path: path.clone(),
                cid: None,
                prev: Some(cid_for_cbor(old)),
            });
        }
    }
    ops
}

/// The event as a frame, decoded back: what a node receives.
fn received(event: &CommitEvent) -> CommitEvent {
    match frame::decode(&frame::encode(&Event::Commit(event.clone()))).unwrap() {
        Event::Commit(e) => e,
        other => panic!("decoded as {other:?}"),
    }
}

fn apply(conn: &mut Connection, account: &Account, event: &CommitEvent) -> Outcome {
    apply_commit(conn, received(event), &account.key.clone().into()).unwrap()
}

/// What is held of an account, and how many rows the store has: nothing may move on a
/// refusal.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    repo: crate::store::RepoRow,
    blocks: i64,
    records: i64,
    commits: i64,
}

fn snapshot(conn: &Connection, did: &str) -> Snapshot {
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    Snapshot {
        repo: crate::store::get_repo(conn, did).unwrap().unwrap(),
        blocks: count("blocks"),
        records: count("records"),
        commits: count("commits"),
    }
}

fn held_records(conn: &Connection, did: &str) -> BTreeMap<String, Cid> {
    let mut stmt = conn
        .prepare(
            "SELECT collection, rkey, r.cid FROM records r JOIN repos p ON p.id = r.repo_id
             WHERE p.did = ?1",
        )
        .unwrap();
    stmt.query_map([did], |r| {
        let (c, k, cid): (String, String, Vec<u8>) = (r.get(0)?, r.get(1)?, r.get(2)?);
        Ok((format!("{c}/{k}"), Cid::try_from(cid.as_slice()).unwrap()))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn kept_versions(conn: &Connection, did: &str) -> i64 {
    conn.query_row(
        "SELECT count(*) FROM commits c JOIN repos p ON p.id = c.repo_id WHERE p.did = ?1",
        [did],
        |r| r.get(0),
    )
    .unwrap()
}

/// Applies a bad event: refused with `kind`, in plain words, the store unchanged.
fn refused(conn: &mut Connection, account: &Account, event: &CommitEvent, kind: RefusalKind) {
    let before = snapshot(conn, account.did);
    let outcome = apply(conn, account, event);
    let Some(refusal) = outcome.refusal() else {
        panic!("expected a refusal ({kind:?}), got {outcome:?}");
    };
    eprintln!("{kind:?}: {}", refusal.words);
    assert_eq!(refusal.kind, kind, "{}", refusal.words);
    assert!(
        refusal.words.len() > 10 && !refusal.words.contains('{'),
        "{}",
        refusal.words
    );
    assert_eq!(snapshot(conn, account.did), before, "{}", refusal.words);
}

fn applied(conn: &mut Connection, account: &Account, event: &CommitEvent) {
    let outcome = apply(conn, account, event);
    assert!(matches!(outcome, Outcome::Applied(_)), "{outcome:?}");
}

fn blocks_of(car: &[u8]) -> Vec<(Cid, Vec<u8>)> {
    let mut reader = CarReader::new(car).unwrap();
    let mut out = Vec::new();
    while let Some((cid, data)) = reader.next_block().unwrap() {
        out.push((cid, data.to_vec()));
    }
    out
}

fn car_of(root: Cid, blocks: &[(Cid, Vec<u8>)]) -> Vec<u8> {
    let mut car = CarWriter::new(Vec::new(), vec![root]).unwrap();
    for (cid, data) in blocks {
        car.write_block(cid, data).unwrap();
    }
    car.finish().unwrap()
}

/// Replaces the event's commit by one over `data` and `rev`, signed by `key`.
fn resign(event: &mut CommitEvent, key: &SigningKey, data: Option<Cid>, rev: Option<&str>) {
    let mut blocks = blocks_of(&event.blocks);
    let at = blocks.iter().position(|(c, _)| *c == event.commit).unwrap();
    let old = commit::Commit::decode(&blocks[at].1).unwrap();
    let rev = rev.unwrap_or(&old.rev).to_string();
    let (cid, bytes) = commit::sign(&old.did, data.unwrap_or(old.data), &rev, key);
    blocks[at] = (cid, bytes);
    event.commit = cid;
    event.rev = rev;
    event.blocks = car_of(cid, &blocks);
}

#[test]
fn a_chain_of_commits_applies_each_as_a_kept_version() {
    let (_dir, mut conn) = store();
    let mut alice = Account::new(&mut conn, ALICE, 200);
    for step in 0..12 {
        let event = alice.busy(step);
        let outcome = apply(&mut conn, &alice, &event);
        let Outcome::Applied(done) = outcome else {
            panic!("step {step}: {outcome:?}");
        };
        assert_eq!((done.creates, done.updates, done.deletes), (1, 1, 1));
        assert_eq!(done.seq, event.seq);
        assert_eq!(done.records, alice.repo.records.len() as i64);
    }
    // A commit that only deletes, and one that changes no record at all (a new rev only).
    let event = alice.next(|r| {
        for i in 100..120 {
            r.delete("app.bsky.feed.post", &rkey(i));
        }
    });
    applied(&mut conn, &alice, &event);
    let event = alice.next(|_| {});
    applied(&mut conn, &alice, &event);
    assert_eq!(kept_versions(&conn, ALICE), 1 + 14);
    assert_eq!(held_records(&conn, ALICE), alice.expected());
    let row = crate::store::get_repo(&conn, ALICE).unwrap().unwrap();
    assert_eq!(row.head, Some(alice.built.commit_cid.to_string()));
    assert_eq!(row.rev, Some(alice.built.rev.clone()));
    assert_eq!(row.records, alice.repo.records.len() as i64);
    // Every kept version is whole: each re-verified from the store alone.
    let history = crate::history::check::check(&conn, ALICE).unwrap();
    assert!(history.ok(), "{:?}", history.problems);
    assert_eq!(history.states_checked, 15);
}

#[test]
fn the_firehose_leaves_the_store_as_a_polled_sync_would() {
    let (_a, mut live) = store();
    let (_b, mut polled) = store();
    let mut alice = Account::new(&mut live, ALICE, 100);
    let base = alice.built.car_bytes();
    crate::store::add_repo(&polled, ALICE, None, None).unwrap();
    crate::sync::ingest::ingest_car(&mut polled, ALICE, &alice.key, &base[..], &mut |_| {})
        .unwrap();
    for step in 0..6 {
        let event = alice.busy(step);
        applied(&mut live, &alice, &event);
        crate::sync::ingest::ingest_car(
            &mut polled,
            ALICE,
            &alice.key,
            &event.blocks[..],
            &mut |_| {},
        )
        .unwrap();
    }
    let repo = |c: &Connection| {
        let mut row = crate::store::get_repo(c, ALICE).unwrap().unwrap();
        row.last_sync_at = None;
        row
    };
    assert_eq!(repo(&live), repo(&polled));
    assert_eq!(held_records(&live, ALICE), held_records(&polled, ALICE));
    type Version = (String, Vec<u8>, Vec<u8>, i64, i64, i64, String, i64);
    let versions = |c: &Connection| -> Vec<Version> {
        let mut stmt = c
            .prepare(
                "SELECT rev, cid, data, creates, updates, deletes, signing_key, records
                 FROM commits ORDER BY rev",
            )
            .unwrap();
        stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    assert_eq!(versions(&live), versions(&polled));
    assert_eq!(versions(&live).len(), 7);
}

#[test]
fn a_batch_chains_within_itself_and_a_refused_commit_takes_only_its_own_account_down() {
    let (_dir, mut conn) = store();
    let mut alice = Account::new(&mut conn, ALICE, 50);
    let mut bob = Account::new(&mut conn, BOB, 50);
    let a1 = alice.busy(0);
    let mut b1 = bob.busy(0);
    let a2 = alice.busy(1);
    let b2 = bob.busy(1);
    let a3 = alice.busy(2);
    // Bob's first commit is forged: his second no longer chains onto what is held.
    resign(&mut b1, &SigningKey::generate_k256(), None, None);
    let batch = vec![
        check(received(&a1), &alice.key.clone().into()),
        check(received(&b1), &bob.key.clone().into()),
        check(received(&a2), &alice.key.clone().into()),
        check(received(&b2), &bob.key.clone().into()),
        check(received(&a3), &alice.key.clone().into()),
    ];
    let outcomes = apply_checked(&mut conn, batch).unwrap();
    let kinds: Vec<Option<RefusalKind>> = outcomes
        .iter()
        .map(|o| o.refusal().map(|r| r.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            None,
            Some(RefusalKind::BadSignature),
            None,
            Some(RefusalKind::BrokenChain),
            None
        ]
    );
    assert_eq!(kept_versions(&conn, ALICE), 4);
    assert_eq!(kept_versions(&conn, BOB), 1);
    assert_eq!(held_records(&conn, ALICE), alice.expected());
    let row = crate::store::get_repo(&conn, BOB).unwrap().unwrap();
    assert_eq!(
        row.rev.as_deref(),
        Some(tid::format(bob.micros - 2000, 0).as_str())
    );
}

#[test]
fn a_bad_signature_is_refused() {
    let (_dir, mut conn) = store();
    let mut alice = Account::new(&mut conn, ALICE, 50);
    let good = alice.busy(0);
    let mut forged = good.clone();
    resign(&mut forged, &SigningKey::generate_k256(), None, None);
    refused(&mut conn, &alice, &forged, RefusalKind::BadSignature);
    // The same commit signed by the account's key goes in.
    let mut resigned = good.clone();
    resign(&mut resigned, &alice.signing, None, None);
    applied(&mut conn, &alice, &resigned);
}

#[test]
fn a_broken_prev_data_chain_is_refused() {
    let (_dir, mut conn) = store();
    let mut alice = Account::new(&mut conn, ALICE, 50);
    let held_data = alice.built.data;
    let first = alice.busy(0);
    let second = alice.busy(1);
    // The first commit never arrived: the second follows a tree not held.
    refused(&mut conn, &alice, &second, RefusalKind::BrokenChain);
    // No prevData at all: the event cannot be chained.
    let mut bare = first.clone();
    bare.prev_data = None;
    refused(&mut conn, &alice, &bare, RefusalKind::BrokenChain);
    // A prevData that is some other tree.
    let mut other = first.clone();
    other.prev_data = Some(cid_for_cbor(b"\xa0"));
    refused(&mut conn, &alice, &other, RefusalKind::BrokenChain);
    assert_eq!(first.prev_data, Some(held_data));
    applied(&mut conn, &alice, &first);
    applied(&mut conn, &alice, &second);
}

#[test]
fn ops_that_do_not_produce_the_claimed_root_are_refused() {
    let (_dir, mut conn) = store();
    let mut alice = Account::new(&mut conn, ALICE, 50);
    let good = alice.busy(0);
    assert_eq!(good.ops.len(), 3);
    let mut cases: Vec<(&str, CommitEvent)> = Vec::new();
    let mut missing = good.clone();
    missing.ops.retain(|op| op.action != Action::Delete);
    cases.push(("an op missing", missing));
    let mut extra = good.clone();
    extra.ops.push(RepoOp {
        action: Action::Create,
        path: "app.bsky.feed.post/zzzzzz".into(),
        cid: Some(cid_for_cbor(b"\xa0")),
        prev: None,
    });
    cases.push(("an extra op", extra));
    let mut wrong_cid = good.clone();
    for op in &mut wrong_cid.ops {
        if op.action == Action::Create {
            op.cid = Some(cid_for_cbor(b"\xa1aa\x01"));
        }
    }
    cases.push(("a wrong cid", wrong_cid));
    let mut wrong_prev = good.clone();
    for op in &mut wrong_prev.ops {
        if op.action == Action::Update {
            op.prev = Some(cid_for_cbor(b"\xa1aa\x02"));
        }
    }
    cases.push(("a wrong prev", wrong_prev));
    let mut as_create = good.clone();
    for op in &mut as_create.ops {
        if op.action == Action::Update {
            op.action = Action::Create;
            op.prev = None;
        }
    }
    cases.push(("an update told as a create", as_create));
    let mut no_prev = good.clone();
    for op in &mut no_prev.ops {
        op.prev = None;
    }
    cases.push(("links missing (pre-1.1 ops)", no_prev));
    let mut twice = good.clone();
    twice.ops.push(twice.ops[0].clone());
    cases.push(("an op twice", twice));
    for (what, event) in &cases {
        eprintln!("{what}");
        refused(&mut conn, &alice, event, RefusalKind::OpsMismatch);
    }
    applied(&mut conn, &alice, &good);
}

#[test]
fn a_rev_rollback_or_a_replay_is_refused() {
    let (_dir, mut conn) = store();
    let mut alice = Account::new(&mut conn, ALICE, 50);
    let first = alice.busy(0);
    applied(&mut conn, &alice, &first);
    // The same event again (a stream resumed a little early).
    let outcome = apply(&mut conn, &alice, &first);
    let refusal = outcome.refusal().unwrap();
    assert_eq!(refusal.kind, RefusalKind::RevNotNewer);
    assert!(!refusal.kind.needs_resync());
    // A correctly signed commit that chains onto the held tree with an older rev.
    let mut rollback = alice.busy(1);
    let old_rev = tid::format(alice.micros - 10_000, 0);
    resign(&mut rollback, &alice.signing, None, Some(&old_rev));
    refused(&mut conn, &alice, &rollback, RefusalKind::RevNotNewer);
}

#[test]
fn bad_blocks_and_bad_commits_are_refused() {
    let (_dir, mut conn) = store();
    let mut alice = Account::new(&mut conn, ALICE, 50);
    let good = alice.busy(0);
    let blocks = blocks_of(&good.blocks);
    let new_record = good
        .ops
        .iter()
        .find(|o| o.action == Action::Create)
        .unwrap()
        .cid
        .unwrap();

    // A record's bytes altered in the CAR: its hash no longer matches.
    let mut tampered = good.clone();
    let at = tampered.blocks.len() - 1;
    tampered.blocks[at] ^= 1;
    refused(&mut conn, &alice, &tampered, RefusalKind::BadBlocks);
    // The new record left out of the event.
    let mut no_record = good.clone();
    let kept: Vec<_> = blocks
        .iter()
        .filter(|(c, _)| *c != new_record)
        .cloned()
        .collect();
    no_record.blocks = car_of(good.commit, &kept);
    refused(&mut conn, &alice, &no_record, RefusalKind::BadBlocks);
    // A node of the new tree left out: the event does not chain (fetch the account again).
    let root = commit::Commit::decode(&blocks.iter().find(|(c, _)| *c == good.commit).unwrap().1)
        .unwrap()
        .data;
    let mut no_node = good.clone();
    let kept: Vec<_> = blocks.iter().filter(|(c, _)| *c != root).cloned().collect();
    no_node.blocks = car_of(good.commit, &kept);
    refused(&mut conn, &alice, &no_node, RefusalKind::BrokenChain);
    // Blocks rooted elsewhere, and no commit block at all.
    let mut elsewhere = good.clone();
    elsewhere.blocks = car_of(root, &blocks);
    refused(&mut conn, &alice, &elsewhere, RefusalKind::BadBlocks);
    let mut no_commit = good.clone();
    let kept: Vec<_> = blocks
        .iter()
        .filter(|(c, _)| *c != good.commit)
        .cloned()
        .collect();
    no_commit.blocks = car_of(good.commit, &kept);
    refused(&mut conn, &alice, &no_commit, RefusalKind::BadCommit);
    // The event's rev is not its commit's; a rev from the future.
    let mut other_rev = good.clone();
    other_rev.rev = tid::format(alice.micros + 5, 0);
    refused(&mut conn, &alice, &other_rev, RefusalKind::BadCommit);
    let mut future = good.clone();
    let later = chrono::Utc::now().timestamp_micros() as u64 + 3_600_000_000;
    resign(
        &mut future,
        &alice.signing,
        None,
        Some(&tid::format(later, 0)),
    );
    refused(&mut conn, &alice, &future, RefusalKind::BadCommit);
    applied(&mut conn, &alice, &good);
}

#[test]
fn a_tree_not_in_canonical_form_is_refused() {
    let (_dir, mut conn) = store();
    let mut alice = Account::new(&mut conn, ALICE, 50);
    let good = alice.busy(0);
    // The real new tree hung under an empty root: the same keys, another (invalid) shape.
    let (wrapper, bytes) = mst::encode_node(&mst::Node {
        left: Some(alice.built.data),
        entries: vec![],
    });
    let mut event = good.clone();
    let mut blocks = blocks_of(&event.blocks);
    blocks.push((wrapper, bytes));
    event.blocks = car_of(event.commit, &blocks);
    resign(&mut event, &alice.signing, Some(wrapper), None);
    refused(&mut conn, &alice, &event, RefusalKind::BadTree);
}

#[test]
fn commits_for_another_account_or_one_not_held_are_refused() {
    let (_dir, mut conn) = store();
    let mut alice = Account::new(&mut conn, ALICE, 20);
    let _bob = Account::new(&mut conn, BOB, 20);
    let good = alice.busy(0);
    // Alice's commit sent as Bob's event.
    let mut wrong = good.clone();
    wrong.repo = BOB.into();
    let outcome = apply_commit(&mut conn, received(&wrong), &alice.key.clone().into()).unwrap();
    assert_eq!(outcome.refusal().unwrap().kind, RefusalKind::WrongRepo);
    // An account added but never synced, and one not backed up at all.
    let (_d, mut fresh) = store();
    crate::store::add_repo(&fresh, ALICE, None, None).unwrap();
    let outcome = apply_commit(&mut fresh, received(&good), &alice.key.clone().into()).unwrap();
    assert_eq!(outcome.refusal().unwrap().kind, RefusalKind::NotHeld);
    let (_e, mut empty) = store();
    let outcome = apply_commit(&mut empty, received(&good), &alice.key.clone().into()).unwrap();
    assert_eq!(outcome.refusal().unwrap().kind, RefusalKind::NotHeld);
    applied(&mut conn, &alice, &good);
}

#[test]
fn truncated_oversized_and_unknown_frames_store_nothing() {
    let (_dir, mut conn) = store();
    let mut alice = Account::new(&mut conn, ALICE, 20);
    let before = snapshot(&conn, ALICE);
    let event = alice.busy(0);
    let whole = frame::encode(&Event::Commit(event.clone()));
    for cut in [1, whole.len() / 3, whole.len() / 2, whole.len() - 1] {
        let err = frame::decode(&whole[..cut]).unwrap_err();
        assert!(!err.to_string().contains('{'), "{err}");
    }
    let mut huge = event.clone();
    huge.blocks = vec![0; frame::MAX_BLOCKS_BYTES + 1];
    assert!(matches!(
        frame::decode(&frame::encode(&Event::Commit(huge))),
        Err(FrameError::BlocksTooLarge { .. })
    ));
    let mut padded = whole.clone();
    padded.resize(frame::MAX_FRAME_BYTES + 1, 0);
    assert!(matches!(
        frame::decode(&padded),
        Err(FrameError::TooLarge(_))
    ));
    let unknown = frame::encode(&Event::Unknown("#somethingnew".into()));
    assert_eq!(
        frame::decode(&unknown).unwrap(),
        Event::Unknown("#somethingnew".into())
    );
    assert_eq!(snapshot(&conn, ALICE), before);
    applied(&mut conn, &alice, &event);
}
