//! Friends as the source: a member whose copy fell behind catches up from another member's node
//! while the account's own server is down, verified against the account's key, and a friend's
//! node that serves a forged commit or a damaged block is refused with the copy held kept.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use p2pds::identity::Resolver;
use p2pds::repo::car::CarWriter;
use p2pds::serve::{self, ServeConfig};
use p2pds::store::{self, Store};
use p2pds::sync::{SyncError, Syncer};
use serde_json::{json, Value};

use crate::live::{post, server_records};
use crate::pds;

/// A node's store and syncer in a folder of its own, resolving identities through the test
/// bed's directory.
async fn node(did: &str) -> (tempfile::TempDir, Syncer) {
    let bed = pds::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("p2pds.sqlite")).unwrap();
    let http = reqwest::Client::new();
    let syncer = Syncer::new(
        store.clone(),
        http.clone(),
        Arc::new(Resolver::new(http, &bed.plc, None)),
        dir.path(),
    );
    let d = did.to_string();
    store
        .write(move |c| store::add_repo(c, &d, None, None))
        .await
        .unwrap()
        .unwrap();
    (dir, syncer)
}

/// Serves the node's copies on loopback (as `p2pds run` does); returns the address.
async fn serving(syncer: &Syncer) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve::serve(
        listener,
        syncer.store.clone(),
        syncer.blob_dir(),
        ServeConfig::default(),
        std::future::pending(),
    ));
    url
}

/// The copy held: head revision and "collection/rkey" → CID.
async fn held(syncer: &Syncer, did: &str) -> (Option<String>, Vec<(String, String)>) {
    let d = did.to_string();
    syncer
        .store
        .read(move |c| {
            let repo = store::get_repo(c, &d)?.unwrap();
            let mut stmt = c.prepare(
                "SELECT collection, rkey, cid FROM records WHERE repo_id = ?1
                 ORDER BY collection, rkey",
            )?;
            let rows = stmt
                .query_map([repo.id], |r| {
                    let cid: Vec<u8> = r.get(2)?;
                    Ok((
                        format!("{}/{}", r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                        cid::Cid::try_from(cid.as_slice()).unwrap().to_string(),
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, store::StoreError>((repo.rev, rows))
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_catches_up_from_a_friend_while_the_server_is_down() {
    let bed = pds::shared().await;
    let server = bed.start_extra_pds().await.unwrap();
    let alice = server.create_account("alice").await.unwrap();
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(
            alice
                .create_record("app.bsky.feed.post", post(&format!("early {i}")))
                .await
                .unwrap(),
        );
    }
    // B copies alice now; A later, after more posts, a deletion and a profile.
    let (_b_dir, b) = node(&alice.did).await;
    b.sync_repo(&alice.did, &|_| {}).await.unwrap();
    for i in 0..5 {
        alice
            .create_record("app.bsky.feed.post", post(&format!("late {i}")))
            .await
            .unwrap();
    }
    let rkey = made[0].0.rsplit('/').next().unwrap().to_string();
    alice
        .delete_record("app.bsky.feed.post", &rkey)
        .await
        .unwrap();
    alice
        .put_record(
            "app.bsky.actor.profile",
            "self",
            json!({"$type": "app.bsky.actor.profile", "displayName": "Alice"}),
        )
        .await
        .unwrap();
    let (_a_dir, a) = node(&alice.did).await;
    a.sync_repo(&alice.did, &|_| {}).await.unwrap();
    let served: Vec<(String, String)> = server_records(&alice).await.into_iter().collect();
    let a_url = serving(&a).await;
    let (b_rev, _) = held(&b, &alice.did).await;
    let (a_rev, a_records) = held(&a, &alice.did).await;
    assert_eq!(a_records, served);
    assert!(b_rev < a_rev);

    // Alice's server stops: B can't back her up from it any more.
    drop(server);
    let down = b.sync_repo(&alice.did, &|_| {}).await.unwrap_err();
    assert_eq!(down.kind(), p2pds::sync::FailureKind::Unreachable, "{down}");

    let caught = b
        .catch_up_from(&alice.did, &a_url, &|_| {})
        .await
        .unwrap()
        .expect("A holds a newer state");
    assert_eq!(
        (caught.from_rev.clone(), Some(caught.rev.clone())),
        (b_rev, a_rev.clone())
    );
    assert_eq!((caught.creates, caught.updates, caught.deletes), (6, 0, 1));
    eprintln!(
        "caught up from a friend: {} tree nodes and {} records in {} requests, {} bytes",
        caught.nodes, caught.records, caught.requests, caught.bytes
    );
    assert_eq!(held(&b, &alice.did).await, (a_rev, served));
    // Every version B keeps checks out, the one from the friend too.
    let did = alice.did.clone();
    let check = b
        .store
        .read(move |c| p2pds::history::check::check(c, &did))
        .await
        .unwrap();
    assert!(check.ok(), "{:?}", check.problems);
    // Nothing newer there now.
    assert!(b
        .catch_up_from(&alice.did, &a_url, &|_| {})
        .await
        .unwrap()
        .is_none());
}

/// How a stand-in for a friend's node misbehaves, over an honest node's answers.
#[derive(Clone)]
struct Liar {
    honest: String,
    /// Claims this head (a commit signed by another key) and serves its block.
    forged: Option<(cid::Cid, Vec<u8>, String)>,
    /// Changes a byte of every `getBlocks` answer but the one naming only the head.
    damage: bool,
    head: String,
}

async fn lie_latest(State(l): State<Liar>, RawQuery(q): RawQuery) -> Response {
    if let Some((cid, _, rev)) = &l.forged {
        return axum::Json(json!({"cid": cid.to_string(), "rev": rev})).into_response();
    }
    forward(&l, "com.atproto.sync.getLatestCommit", q, false).await
}

async fn lie_blocks(State(l): State<Liar>, RawQuery(q): RawQuery) -> Response {
    let query = q.clone().unwrap_or_default();
    if let Some((cid, bytes, _)) = &l.forged {
        if query.contains(&cid.to_string()) {
            let mut car = CarWriter::new(Vec::new(), vec![*cid]).unwrap();
            car.write_block(cid, bytes).unwrap();
            return car.finish().unwrap().into_response();
        }
    }
    let only_head = query.matches("cids=").count() == 1 && query.contains(&l.head);
    forward(&l, "com.atproto.sync.getBlocks", q, l.damage && !only_head).await
}

async fn forward(l: &Liar, nsid: &str, q: Option<String>, damage: bool) -> Response {
    let url = format!("{}/xrpc/{nsid}?{}", l.honest, q.unwrap_or_default());
    let resp = reqwest::get(&url).await.unwrap();
    let status = axum::http::StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let mut body = resp.bytes().await.unwrap().to_vec();
    if damage {
        if let Some(last) = body.last_mut() {
            *last ^= 0x01;
        }
    }
    (status, body).into_response()
}

async fn liar(l: Liar) -> String {
    let app = axum::Router::new()
        .route(
            "/xrpc/com.atproto.sync.getLatestCommit",
            axum::routing::get(lie_latest),
        )
        .route(
            "/xrpc/com.atproto.sync.getBlocks",
            axum::routing::get(lie_blocks),
        )
        .with_state(l);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_friend_serving_a_forged_commit_or_a_damaged_block_is_refused() {
    let bed = pds::shared().await;
    let alice = bed.create_account("alice").await.unwrap();
    alice
        .create_record("app.bsky.feed.post", post("one"))
        .await
        .unwrap();
    let (_b_dir, b) = node(&alice.did).await;
    b.sync_repo(&alice.did, &|_| {}).await.unwrap();
    for i in 0..3 {
        alice
            .create_record("app.bsky.feed.post", post(&format!("more {i}")))
            .await
            .unwrap();
    }
    let (_a_dir, a) = node(&alice.did).await;
    a.sync_repo(&alice.did, &|_| {}).await.unwrap();
    let a_url = serving(&a).await;
    let latest: Value = reqwest::get(format!(
        "{a_url}/xrpc/com.atproto.sync.getLatestCommit?did={}",
        alice.did
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let head = latest["cid"].as_str().unwrap().to_string();
    let before = held(&b, &alice.did).await;

    // A commit over A's tree, newer, signed by a key that is not alice's.
    let d = alice.did.clone();
    let data: cid::Cid = a
        .store
        .read(move |c| Ok::<_, store::StoreError>(store::get_repo(c, &d)?.unwrap().data))
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    let rev = p2pds::repo::tid::format(chrono::Utc::now().timestamp_micros() as u64, 7);
    let stranger = p2pds::crypto::SigningKey::generate_k256();
    let (cid, bytes) = p2pds::repo::commit::sign(&alice.did, data, &rev, &stranger);
    let forged = liar(Liar {
        honest: a_url.clone(),
        forged: Some((cid, bytes, rev)),
        damage: false,
        head: head.clone(),
    })
    .await;
    let refused = b
        .catch_up_from(&alice.did, &forged, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(refused, SyncError::Peer { .. }), "{refused}");
    assert!(refused.to_string().contains("signature"), "{refused}");
    assert_eq!(held(&b, &alice.did).await, before);

    let damaged = liar(Liar {
        honest: a_url.clone(),
        forged: None,
        damage: true,
        head,
    })
    .await;
    let refused = b
        .catch_up_from(&alice.did, &damaged, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(refused, SyncError::Peer { .. }), "{refused}");
    assert_eq!(held(&b, &alice.did).await, before);

    // The honest friend next: the copy comes up to date.
    let caught = b.catch_up_from(&alice.did, &a_url, &|_| {}).await.unwrap();
    assert!(caught.is_some());
    assert_eq!(held(&b, &alice.did).await, held(&a, &alice.did).await);
}

/// Catching up from a friend fetches the difference only: an account of
/// `P2PDS_CATCHUP_RECORDS` records (2,000 in the suite; 10,000 for the figures) that wrote 100
/// more, brought up to date once from its server (`getRepo?since`) and once from a friend's
/// node (the tree walk over `getBlocks`); the figures of both are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catching_up_from_a_friend_fetches_only_the_difference() {
    let records: usize = std::env::var("P2PDS_CATCHUP_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let bed = pds::shared().await;
    let alice = bed.create_account("large").await.unwrap();
    let posts = |from: usize, n: usize| -> Vec<Value> {
        (from..from + n)
            .map(|i| post(&format!("post number {i}")))
            .collect()
    };
    alice
        .apply_writes_create_many("app.bsky.feed.post", posts(0, records))
        .await
        .unwrap();
    // Two members behind, alike: one catches up from the server, one from a friend.
    let (_p_dir, from_pds) = node(&alice.did).await;
    let (_f_dir, from_friend) = node(&alice.did).await;
    for n in [&from_pds, &from_friend] {
        n.sync_repo(&alice.did, &|_| {}).await.unwrap();
    }
    let (behind, _) = held(&from_pds, &alice.did).await;
    alice
        .apply_writes_create_many("app.bsky.feed.post", posts(records, 100))
        .await
        .unwrap();
    let (_a_dir, ahead) = node(&alice.did).await;
    ahead.sync_repo(&alice.did, &|_| {}).await.unwrap();
    let a_url = serving(&ahead).await;

    // What the server sends for the same difference.
    let since = behind.clone().unwrap();
    let car = reqwest::get(format!(
        "{}/xrpc/com.atproto.sync.getRepo?did={}&since={since}",
        bed.pds, alice.did
    ))
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let synced = from_pds.sync_repo(&alice.did, &|_| {}).await.unwrap();
    let pds_time = started.elapsed();
    let started = std::time::Instant::now();
    let caught = from_friend
        .catch_up_from(&alice.did, &a_url, &|_| {})
        .await
        .unwrap()
        .unwrap();
    let friend_time = started.elapsed();
    eprintln!(
        "{records} records + 100 new: from the server {:.0} ms, {} bytes in 1 request \
         (getRepo?since); from a friend {:.0} ms, {} bytes in {} requests ({} tree nodes, \
         {} records)",
        pds_time.as_secs_f64() * 1e3,
        car.len(),
        friend_time.as_secs_f64() * 1e3,
        caught.bytes,
        caught.requests,
        caught.nodes,
        caught.records
    );
    assert_eq!(synced.ingest.map(|i| i.creates), Some(100));
    assert_eq!((caught.records, caught.creates), (100, 100));
    // The tree nodes on the paths to the new records, not the tree.
    assert!(caught.nodes < (records as u64) / 10, "{}", caught.nodes);
    assert_eq!(
        held(&from_friend, &alice.did).await,
        held(&from_pds, &alice.did).await
    );
    assert_eq!(
        held(&from_friend, &alice.did).await,
        held(&ahead, &alice.did).await
    );
}
