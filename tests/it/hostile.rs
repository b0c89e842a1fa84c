//! Hostile input: a fake PDS (and PLC) that first serves a good repo, then bad
//! bytes a real PDS would never produce. Each bad answer must be refused with a
//! clear error while the previous good copy stays exactly as it was.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use cid::Cid;
use p2pds::crypto::SigningKey;
use p2pds::identity::Resolver;
use p2pds::repo::build::{BuiltRepo, RepoBuilder};
use p2pds::repo::car::CarWriter;
use p2pds::repo::{cid_for, cid_for_cbor, commit, mst, tid, RAW};
use p2pds::store::{self, Store};
use p2pds::sync::{SyncError, Syncer};
use serde_json::{json, Value};

#[derive(Default)]
struct FakeState {
    doc: Value,
    car: Vec<u8>,
    latest: (String, String),
    blobs: HashMap<String, Vec<u8>>,
    /// listBlobs answers the same page with the same cursor, forever.
    endless_cursor: bool,
    /// getRepo announces the CAR's length, then sends a byte now and then.
    trickle: bool,
    /// The DID document is held back until the gate opens (`asked` is told when it is asked).
    gate: Option<(Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>)>,
}

type Shared = Arc<Mutex<FakeState>>;

struct Fake {
    url: String,
    state: Shared,
    did: String,
}

async fn did_doc(State(s): State<Shared>, Path(_did): Path<String>) -> Json<Value> {
    let gate = s.lock().unwrap().gate.clone();
    if let Some((asked, open)) = gate {
        asked.notify_one();
        open.notified().await;
    }
    Json(s.lock().unwrap().doc.clone())
}

async fn repo_status(Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    Json(json!({ "did": q.get("did"), "active": true }))
}

async fn latest(State(s): State<Shared>) -> Json<Value> {
    let s = s.lock().unwrap();
    Json(json!({ "cid": s.latest.0, "rev": s.latest.1 }))
}

async fn get_repo(State(s): State<Shared>) -> axum::response::Response {
    let (car, trickle) = {
        let s = s.lock().unwrap();
        (s.car.clone(), s.trickle)
    };
    if trickle {
        let len = car.len();
        let bytes = futures_util::stream::unfold(car.into_iter(), |mut rest| async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let b = rest.next()?;
            Some((Ok::<_, std::io::Error>(vec![b]), rest))
        });
        return (
            [
                (header::CONTENT_TYPE, "application/vnd.ipld.car".to_string()),
                (header::CONTENT_LENGTH, len.to_string()),
            ],
            axum::body::Body::from_stream(bytes),
        )
            .into_response();
    }
    ([(header::CONTENT_TYPE, "application/vnd.ipld.car")], car).into_response()
}

async fn list_blobs(State(s): State<Shared>) -> Json<Value> {
    let s = s.lock().unwrap();
    let mut cids: Vec<String> = s.blobs.keys().cloned().collect();
    cids.sort();
    if s.endless_cursor {
        return Json(json!({ "cids": cids, "cursor": "again" }));
    }
    Json(json!({ "cids": cids }))
}

async fn get_blob(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let cid = q.get("cid").cloned().unwrap_or_default();
    s.lock()
        .unwrap()
        .blobs
        .get(&cid)
        .cloned()
        .unwrap_or_default()
}

impl Fake {
    async fn start(did: &str, key: &SigningKey) -> Fake {
        let state: Shared = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/{did}", get(did_doc))
            .route("/xrpc/com.atproto.sync.getRepoStatus", get(repo_status))
            .route("/xrpc/com.atproto.sync.getLatestCommit", get(latest))
            .route("/xrpc/com.atproto.sync.getRepo", get(get_repo))
            .route("/xrpc/com.atproto.sync.listBlobs", get(list_blobs))
            .route("/xrpc/com.atproto.sync.getBlob", get(get_blob))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let fake = Fake {
            url,
            state,
            did: did.to_string(),
        };
        fake.set_key(key);
        fake
    }

    fn set_key(&self, key: &SigningKey) {
        self.state.lock().unwrap().doc = json!({
            "id": self.did,
            "alsoKnownAs": ["at://fake.test"],
            "verificationMethod": [{
                "id": format!("{}#atproto", self.did), "type": "Multikey",
                "controller": self.did, "publicKeyMultibase": key.public_key().to_multikey()
            }],
            "service": [{
                "id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": self.url
            }]
        });
    }

    fn serve_car(&self, car: Vec<u8>, root: Cid, rev: &str) {
        let mut s = self.state.lock().unwrap();
        s.car = car;
        s.latest = (root.to_string(), rev.to_string());
    }

    fn serve(&self, built: &BuiltRepo) {
        self.serve_car(built.car_bytes(), built.commit_cid, &built.rev);
    }
}

struct Node {
    _dir: tempfile::TempDir,
    syncer: Syncer,
}

fn node(plc: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("p2pds.sqlite")).unwrap();
    let http = reqwest::Client::new();
    let resolver = Arc::new(Resolver::new(http.clone(), plc, None));
    let syncer = Syncer::new(store, http, resolver, dir.path());
    Node { _dir: dir, syncer }
}

/// Another syncer on the node's store, with a resolver of its own (nothing cached).
fn fresh_syncer(node: &Node, plc: &str) -> Syncer {
    let http = reqwest::Client::new();
    let resolver = Arc::new(Resolver::new(http.clone(), plc, None));
    Syncer::new(
        node.syncer.store.clone(),
        http,
        resolver,
        &node.syncer.data_dir,
    )
}

fn fresh_did() -> String {
    let n: u64 = rand::random();
    format!("did:plc:{:024x}", u128::from(n) << 32)[..32].to_string()
}

fn posts(builder: &mut RepoBuilder, from: u64, n: u64) {
    for i in from..from + n {
        builder.put_json(
            "app.bsky.feed.post",
            &tid::format(1_700_000_000_000_000 + i, 0),
            &json!({"$type": "app.bsky.feed.post", "text": format!("post {i}"), "createdAt": "2024-01-01T00:00:00Z"}),
        );
    }
}

async fn snapshot(syncer: &Syncer, did: &str) -> (store::RepoRow, Vec<store::RecordRow>) {
    let d = did.to_string();
    syncer
        .store
        .read(move |c| {
            let repo = store::get_repo(c, &d)?.unwrap();
            let records = store::list_records(c, repo.id, None)?;
            Ok((repo, records))
        })
        .await
        .unwrap()
}

/// A node that holds a good first version, and the builder to make the next.
async fn with_good_copy() -> (Fake, Node, RepoBuilder, BuiltRepo) {
    let did = fresh_did();
    let key = SigningKey::generate_k256();
    let fake = Fake::start(&did, &key).await;
    let node = node(&fake.url);
    let mut builder = RepoBuilder::new(&did, key);
    posts(&mut builder, 0, 50);
    let v1 = builder.build(&tid::now(0));
    fake.serve(&v1);
    node.syncer
        .store
        .write({
            let did = did.clone();
            move |c| store::add_repo(c, &did, None, None)
        })
        .await
        .unwrap()
        .unwrap();
    node.syncer.sync_repo(&did, &|_| {}).await.unwrap();
    let (repo, records) = snapshot(&node.syncer, &did).await;
    assert_eq!(repo.head, Some(v1.commit_cid.to_string()));
    assert_eq!(records.len(), 50);
    (fake, node, builder, v1)
}

/// Serves `car` as the next version and checks it is refused, copy intact.
async fn assert_refused(
    fake: &Fake,
    node: &Node,
    car: Vec<u8>,
    root: Cid,
    rev: &str,
    expect: &str,
) {
    let before = snapshot(&node.syncer, &fake.did).await;
    fake.serve_car(car, root, rev);
    let err = node.syncer.sync_repo(&fake.did, &|_| {}).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(expect), "expected '{expect}' in: {msg}");
    assert!(matches!(err, SyncError::Ingest(_)), "{err:?}");
    let after = snapshot(&node.syncer, &fake.did).await;
    assert_eq!(after.0.head, before.0.head, "head moved");
    assert_eq!(after.0.rev, before.0.rev);
    assert_eq!(after.1, before.1, "records changed");
    assert_eq!(after.0.state, "error");
    assert!(after.0.error.unwrap().contains(expect));
}

fn car_of(root: Cid, blocks: &[(Cid, Vec<u8>)]) -> Vec<u8> {
    let mut w = CarWriter::new(Vec::new(), vec![root]).unwrap();
    for (cid, bytes) in blocks {
        w.write_block(cid, bytes).unwrap();
    }
    w.finish().unwrap()
}

#[tokio::test]
async fn block_not_matching_its_cid_is_refused() {
    let (fake, node, mut builder, _) = with_good_copy().await;
    posts(&mut builder, 50, 5);
    let v2 = builder.build(&tid::now(0));
    let mut car = v2.car_bytes();
    let last = car.len() - 1; // inside the last record block
    car[last] ^= 0x01;
    assert_refused(
        &fake,
        &node,
        car,
        v2.commit_cid,
        &v2.rev,
        "do not match their CID",
    )
    .await;
}

#[tokio::test]
async fn commit_signed_by_another_key_is_refused() {
    let (fake, node, builder, _) = with_good_copy().await;
    let mut forged = RepoBuilder::new(&builder.did, SigningKey::generate_k256());
    forged.records = builder.records.clone();
    posts(&mut forged, 50, 1);
    let v2 = forged.build(&tid::now(0));
    assert_refused(
        &fake,
        &node,
        v2.car_bytes(),
        v2.commit_cid,
        &v2.rev,
        "signature",
    )
    .await;
}

#[tokio::test]
async fn high_s_signature_is_refused() {
    let (fake, node, mut builder, _) = with_good_copy().await;
    posts(&mut builder, 50, 1);
    let v2 = builder.build(&tid::now(0));
    let parsed = commit::Commit::decode(&v2.commit_bytes).unwrap();
    let sig = k256::ecdsa::Signature::from_slice(&parsed.sig).unwrap();
    let (r, s) = sig.split_scalars();
    let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
    let (root, bytes) = commit::with_signature(&v2.commit_bytes, &high.to_bytes()).unwrap();
    let mut blocks = vec![(root, bytes)];
    blocks.extend(v2.blocks.iter().cloned());
    assert_refused(&fake, &node, car_of(root, &blocks), root, &v2.rev, "high S").await;
}

/// Keys of a given height, for hand-made trees.
fn keys_of_height(height: u32, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("app.bsky.feed.post/k{i:05}"))
        .filter(|k| mst::key_height(k.as_bytes()) == height)
        .take(n)
        .collect()
}

/// A signed commit over a hand-made single node (for malformed trees).
fn malformed(builder: &RepoBuilder, keys: &[String]) -> (Vec<u8>, Cid, String) {
    let record =
        serde_ipld_dagcbor::to_vec(&json!({"$type": "app.bsky.feed.post", "text": "x"})).unwrap();
    let rcid = cid_for_cbor(&record);
    let node = mst::Node {
        left: None,
        entries: keys
            .iter()
            .map(|k| mst::Entry {
                key: k.as_bytes().to_vec(),
                value: rcid,
                right: None,
            })
            .collect(),
    };
    let (ncid, nbytes) = mst::encode_node(&node);
    let rev = tid::now(0);
    let (root, cbytes) = commit::sign(&builder.did, ncid, &rev, &builder.key);
    (
        car_of(root, &[(root, cbytes), (ncid, nbytes), (rcid, record)]),
        root,
        rev,
    )
}

#[tokio::test]
async fn mst_keys_out_of_order_are_refused() {
    let (fake, node, builder, _) = with_good_copy().await;
    let mut keys = keys_of_height(0, 2);
    keys.reverse();
    let (car, root, rev) = malformed(&builder, &keys);
    assert_refused(&fake, &node, car, root, &rev, "out of order").await;
}

#[tokio::test]
async fn mst_key_at_the_wrong_height_is_refused() {
    let (fake, node, builder, _) = with_good_copy().await;
    let mut keys = keys_of_height(0, 1);
    keys.extend(keys_of_height(1, 1));
    keys.sort();
    let (car, root, rev) = malformed(&builder, &keys);
    assert_refused(&fake, &node, car, root, &rev, "height").await;
}

#[tokio::test]
async fn truncated_car_is_refused() {
    let (fake, node, mut builder, _) = with_good_copy().await;
    posts(&mut builder, 50, 5);
    let v2 = builder.build(&tid::now(0));
    let car = v2.car_bytes();
    let cut = car[..car.len() / 2].to_vec();
    assert_refused(&fake, &node, cut, v2.commit_cid, &v2.rev, "cut short").await;
}

#[tokio::test]
async fn older_rev_than_the_held_copy_is_refused() {
    let (fake, node, builder, v1) = with_good_copy().await;
    let mut older = builder.clone();
    older.delete("app.bsky.feed.post", &tid::format(1_700_000_000_000_000, 0));
    let old_rev = tid::format(tid::timestamp_micros(&v1.rev).unwrap() - 1_000_000, 0);
    let v0 = older.build(&old_rev);
    assert_refused(
        &fake,
        &node,
        v0.car_bytes(),
        v0.commit_cid,
        &v0.rev,
        "not newer",
    )
    .await;
}

#[tokio::test]
async fn rotated_key_is_re_resolved_before_a_signature_counts_as_bad() {
    let (fake, node, builder, _) = with_good_copy().await;
    // The account rotates its key; the node's cached document still has the old one.
    let new_key = SigningKey::generate_p256();
    fake.set_key(&new_key);
    let mut rotated = RepoBuilder::new(&builder.did, new_key);
    rotated.records = builder.records.clone();
    posts(&mut rotated, 50, 3);
    let v2 = rotated.build(&tid::now(0));
    fake.serve(&v2);
    let report = node.syncer.sync_repo(&fake.did, &|_| {}).await.unwrap();
    let ingest = report.ingest.unwrap();
    assert_eq!(ingest.creates, 3);
    assert_eq!(ingest.commit, v2.commit_cid.to_string());
}

#[tokio::test]
async fn a_bad_blob_is_recorded_and_skipped_not_fatal() {
    let (fake, node, mut builder, _) = with_good_copy().await;
    let good = b"a real image".to_vec();
    let good_cid = cid_for(RAW, &good).to_string();
    let claimed = cid_for(RAW, b"what the blob should have been").to_string();
    {
        let mut s = fake.state.lock().unwrap();
        s.blobs.insert(good_cid.clone(), good);
        s.blobs
            .insert(claimed.clone(), b"something else entirely".to_vec());
    }
    posts(&mut builder, 50, 1);
    fake.serve(&builder.build(&tid::now(0)));
    let report = node.syncer.sync_repo(&fake.did, &|_| {}).await.unwrap();
    assert_eq!((report.blobs.fetched, report.blobs.bad), (1, 1));
    let (repo, _) = snapshot(&node.syncer, &fake.did).await;
    assert_eq!(repo.state, "synced");
    let counts = node
        .syncer
        .store
        .read(move |c| store::blob_counts(c, repo.id))
        .await
        .unwrap();
    assert_eq!((counts.0, counts.3), (1, 1));
    let held = std::fs::read(node.syncer.blob_dir().join(&good_cid)).unwrap();
    assert_eq!(held, b"a real image");
    assert!(!node.syncer.blob_dir().join(&claimed).exists());
}

#[tokio::test]
async fn a_bad_blob_is_tried_again_later_then_kept() {
    let (fake, node, mut builder, _) = with_good_copy().await;
    let good = b"the real picture".to_vec();
    let cid = cid_for(RAW, &good).to_string();
    fake.state
        .lock()
        .unwrap()
        .blobs
        .insert(cid.clone(), b"a cut-off pic".to_vec());
    posts(&mut builder, 50, 1);
    fake.serve(&builder.build(&tid::now(0)));
    let first = node.syncer.sync_repo(&fake.did, &|_| {}).await.unwrap();
    assert_eq!((first.blobs.bad, first.blobs.waiting), (1, 1));
    // The server is fixed, but the next try waits (backoff): the sync says one is waiting.
    fake.state.lock().unwrap().blobs.insert(cid.clone(), good);
    let soon = node.syncer.sync_repo(&fake.did, &|_| {}).await.unwrap();
    assert_eq!((soon.blobs.fetched, soon.blobs.bad), (0, 0));
    assert_eq!(soon.blobs.waiting, 1, "still not held, and said so");
    // Later (the wait over), it is fetched and kept.
    node.syncer
        .store
        .write(|c| c.execute("UPDATE blobs SET retry_at = '2000-01-01T00:00:00.000Z'", []))
        .await
        .unwrap()
        .unwrap();
    let later = node.syncer.sync_repo(&fake.did, &|_| {}).await.unwrap();
    assert_eq!((later.blobs.fetched, later.blobs.waiting), (1, 0));
    assert_eq!(
        std::fs::read(node.syncer.blob_dir().join(&cid)).unwrap(),
        b"the real picture"
    );
}

#[test]
fn blob_retries_back_off_to_a_day() {
    use p2pds::sync::blobs::retry_after;
    let mins = |n| retry_after(n).as_secs() / 60;
    assert_eq!([mins(1), mins(2), mins(3)], [15, 30, 60]);
    assert_eq!(mins(8), 24 * 60);
    assert_eq!(mins(u32::MAX), 24 * 60);
}

/// A removal is final: an account removed while its sync is looking up its identity is not
/// put back by that sync, and its blob files go, except those another account still names.
#[tokio::test]
async fn an_account_removed_during_its_sync_stays_removed_and_its_files_go() {
    let (fake, node, mut builder, _) = with_good_copy().await;
    let shared_pic = b"a picture both friends posted".to_vec();
    let own_pic = b"a picture only this friend posted".to_vec();
    let (shared_cid, own_cid) = (
        cid_for(RAW, &shared_pic).to_string(),
        cid_for(RAW, &own_pic).to_string(),
    );
    {
        let mut s = fake.state.lock().unwrap();
        s.blobs.insert(shared_cid.clone(), shared_pic.clone());
        s.blobs.insert(own_cid.clone(), own_pic);
    }
    posts(&mut builder, 50, 1);
    fake.serve(&builder.build(&tid::now(0)));
    node.syncer.sync_repo(&fake.did, &|_| {}).await.unwrap();
    // A second friend on another server, holding the shared picture too.
    let other_did = fresh_did();
    let other_key = SigningKey::generate_k256();
    let other = Fake::start(&other_did, &other_key).await;
    let mut other_builder = RepoBuilder::new(&other_did, other_key);
    posts(&mut other_builder, 0, 2);
    other.serve(&other_builder.build(&tid::now(0)));
    other
        .state
        .lock()
        .unwrap()
        .blobs
        .insert(shared_cid.clone(), shared_pic);
    let syncer_for = |plc: &str| fresh_syncer(&node, plc);
    let d = other_did.clone();
    node.syncer
        .store
        .write(move |c| store::add_repo(c, &d, None, None))
        .await
        .unwrap()
        .unwrap();
    syncer_for(&other.url)
        .sync_repo(&other_did, &|_| {})
        .await
        .unwrap();
    let blobs = node.syncer.blob_dir();
    assert!(blobs.join(&shared_cid).exists() && blobs.join(&own_cid).exists());

    // The next sync of the first friend is held at its identity lookup (a fresh resolver:
    // nothing cached); the account is removed meanwhile.
    let (asked, open) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    fake.state.lock().unwrap().gate = Some((asked.clone(), open.clone()));
    let syncer = syncer_for(&fake.url);
    let did = fake.did.clone();
    let running = tokio::spawn(async move { syncer.sync_repo(&did, &|_| {}).await });
    asked.notified().await;
    let (d, dir) = (fake.did.clone(), blobs.clone());
    let removed = node
        .syncer
        .store
        .write(move |c| store::remove_repo_and_files(c, &d, &dir))
        .await
        .unwrap()
        .unwrap();
    assert!(removed);
    open.notify_one();
    let err = running.await.unwrap().unwrap_err();
    assert!(matches!(err, SyncError::NotBackedUp(_)), "{err:?}");
    let d = fake.did.clone();
    let row = node
        .syncer
        .store
        .read(move |c| store::get_repo(c, &d))
        .await
        .unwrap();
    assert_eq!(row, None, "the sync did not put the account back");
    assert!(
        !blobs.join(&own_cid).exists(),
        "its own picture's file went"
    );
    assert!(
        blobs.join(&shared_cid).exists(),
        "the picture the other friend still has stays"
    );
    // Removing the other friend frees the shared file too.
    let (d, dir) = (other_did.clone(), blobs.clone());
    node.syncer
        .store
        .write(move |c| store::remove_repo_and_files(c, &d, &dir))
        .await
        .unwrap()
        .unwrap();
    assert!(!blobs.join(&shared_cid).exists());
}

/// A server that announces a repository and then trickles it (a byte every 200 ms) is cut
/// off when the time its size allows is over; the copy held stays, and the error says it.
#[tokio::test]
async fn a_trickled_repository_is_cut_off_by_its_deadline() {
    let (fake, mut node, mut builder, v1) = with_good_copy().await;
    posts(&mut builder, 50, 5);
    fake.serve(&builder.build(&tid::now(0)));
    fake.state.lock().unwrap().trickle = true;
    // A second's floor and 1 MiB/s: the few kilobytes announced get about a second.
    node.syncer.transfer = p2pds::xrpc::Transfer {
        floor: std::time::Duration::from_secs(1),
        min_rate: 1 << 20,
    };
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        node.syncer.sync_repo(&fake.did, &|_| {}),
    )
    .await
    .expect("the sync ends on its own");
    let err = outcome.unwrap_err();
    assert!(err.to_string().contains("did not answer within"), "{err}");
    assert_eq!(err.kind(), p2pds::sync::FailureKind::Unreachable);
    let (repo, records) = snapshot(&node.syncer, &fake.did).await;
    assert_eq!((repo.rev, records.len()), (Some(v1.rev), 50));
}

/// A PLC directory whose answer for any DID is a document that never ends (500 MB of one
/// string). The sync refuses it at the document size limit, with a clear error, having read
/// only that much.
#[tokio::test]
async fn a_huge_did_document_is_refused_not_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plc = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"id\":\"";
                if s.write_all(head).await.is_err() {
                    return;
                }
                let chunk = vec![b'a'; 64 << 10];
                for _ in 0..(500 << 20) / chunk.len() {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                    counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let node = node(&plc);
    let did = fresh_did();
    let d = did.clone();
    node.syncer
        .store
        .write(move |c| store::add_repo(c, &d, None, None))
        .await
        .unwrap()
        .unwrap();
    let err = node.syncer.sync_repo(&did, &|_| {}).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("refused"), "{text}");
    assert!(text.contains(&did), "names the account: {text}");
    // The server could push a few buffers more before the connection closed, never 500 MB.
    let pushed = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(pushed < 64 << 20, "{pushed} bytes sent before the refusal");
}

/// listBlobs hands out the same cursor again and again: the listing is refused with a clear
/// error instead of running forever, and the records copied stay.
#[tokio::test]
async fn an_endless_blob_listing_is_refused() {
    let (fake, node, _, v1) = with_good_copy().await;
    {
        let mut s = fake.state.lock().unwrap();
        s.blobs
            .insert(cid_for(RAW, b"an image").to_string(), b"an image".to_vec());
        s.endless_cursor = true;
    }
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        node.syncer.sync_repo(&fake.did, &|_| {}),
    )
    .await
    .expect("the listing ends")
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("lists without end"), "{text}");
    assert!(text.contains("came back"), "{text}");
    assert!(!err.is_retryable());
    let (repo, records) = snapshot(&node.syncer, &fake.did).await;
    assert_eq!(repo.head, Some(v1.commit_cid.to_string()));
    assert_eq!(records.len(), 50);
}

async fn open_flag_kinds(node: &Node) -> Vec<(String, Option<String>)> {
    node.syncer
        .store
        .read(p2pds::history::open_flags)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, _, f)| (f.kind, f.good_rev))
        .collect()
}

async fn verified_key(node: &Node, did: &str) -> Option<String> {
    let d = did.to_string();
    node.syncer
        .store
        .read(move |c| {
            Ok(
                c.query_row("SELECT signing_key FROM repos WHERE did = ?1", [d], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
        .unwrap()
}

/// A takeover: a new key in the DID document and commits signed by it. Accepted (the data
/// verifies under the document) and flagged once, keeping the state held before; the syncs
/// after it keep working under the new key, the flag staying. The node's cached document
/// still names the old key when it starts: the flag must not depend on the cache.
#[tokio::test]
async fn a_takeover_is_flagged_once_and_later_syncs_keep_working() {
    let (fake, node, builder, v1) = with_good_copy().await;
    let taker = SigningKey::generate_p256();
    fake.set_key(&taker);
    let mut taken = RepoBuilder::new(&builder.did, taker.clone());
    taken.records = builder.records.clone();
    posts(&mut taken, 50, 3);
    fake.serve(&taken.build(&tid::now(0)));
    node.syncer.sync_repo(&fake.did, &|_| {}).await.unwrap();
    let flagged = vec![("new-key".to_string(), Some(v1.rev.clone()))];
    assert_eq!(open_flag_kinds(&node).await, flagged);
    let taker_key = Some(taker.public_key().to_did_key());
    assert_eq!(verified_key(&node, &fake.did).await, taker_key);
    // The next syncs work: up to date, then a new post under the new key; one flag.
    let same = node.syncer.sync_repo(&fake.did, &|_| {}).await.unwrap();
    assert!(same.up_to_date);
    posts(&mut taken, 60, 1);
    fake.serve(&taken.build(&tid::now(0)));
    let more = node.syncer.sync_repo(&fake.did, &|_| {}).await.unwrap();
    assert_eq!(more.ingest.unwrap().creates, 1);
    assert_eq!(open_flag_kinds(&node).await, flagged);
    let (repo, _) = snapshot(&node.syncer, &fake.did).await;
    assert_eq!((repo.state.as_str(), repo.error), ("synced", None));
}

/// A document naming a key that verifies nothing (the commits served are still signed by
/// the old key, or by a third one) raises no flag and changes nothing held.
#[tokio::test]
async fn a_document_whose_key_verifies_nothing_raises_no_flag() {
    let (fake, node, builder, v1) = with_good_copy().await;
    let old_key = verified_key(&node, &fake.did).await;
    fake.set_key(&SigningKey::generate_p256());
    // The same commit as before, under a document naming another key: nothing to fetch.
    let fresh = fresh_syncer(&node, &fake.url);
    fresh.sync_repo(&fake.did, &|_| {}).await.unwrap();
    assert_eq!(open_flag_kinds(&node).await, vec![]);
    // A new commit signed by a third key: refused, no flag, the copy and its key kept.
    let mut forged = RepoBuilder::new(&builder.did, SigningKey::generate_p256());
    forged.records = builder.records.clone();
    posts(&mut forged, 50, 1);
    fake.serve(&forged.build(&tid::now(0)));
    let err = fresh.sync_repo(&fake.did, &|_| {}).await.unwrap_err();
    assert!(matches!(err, SyncError::Ingest(_)), "{err:?}");
    assert_eq!(open_flag_kinds(&node).await, vec![]);
    assert_eq!(verified_key(&node, &fake.did).await, old_key);
    let (repo, _) = snapshot(&node.syncer, &fake.did).await;
    assert_eq!(repo.rev, Some(v1.rev));
}
