//! Layer 2, the whole-copy check: a verifier finds exactly the records and tree nodes a
//! friend's copy lacks (blocks the test deleted from the friend's store), by keyed subtree
//! digests walked down only where they differ; the requests grow with the difference, not with
//! the size of the repository (1,000 records against 100,000).

use std::sync::Arc;

use cid::Cid;
use p2pds::crypto::SigningKey;
use p2pds::identity::Resolver;
use p2pds::repo::build::RepoBuilder;
use p2pds::serve::{self, ServeConfig};
use p2pds::store::{self, Store};
use p2pds::sync::Syncer;
use p2pds::verify::whole;

use crate::live::post;
use crate::pds;

/// A store in a folder of its own.
fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("p2pds.sqlite")).unwrap()
}

/// Serves `store` on loopback; returns the address.
async fn serving(store: &Store, dir: &tempfile::TempDir) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve::serve(
        listener,
        store.clone(),
        store::blob_dir(dir.path()),
        ServeConfig::default(),
        std::future::pending(),
    ));
    url
}

/// The repo's id and tree root in `store`.
async fn held(store: &Store, did: &str) -> (i64, Cid) {
    let d = did.to_string();
    let repo = store
        .read(move |c| store::get_repo(c, &d))
        .await
        .unwrap()
        .unwrap();
    (repo.id, repo.data.unwrap().parse().unwrap())
}

/// Deletes the blocks of the records `keys` (and the tree nodes `nodes`) from the copy held.
async fn forget(store: &Store, repo_id: i64, keys: &[String], nodes: &[Cid]) {
    let (keys, nodes) = (keys.to_vec(), nodes.to_vec());
    store
        .write(move |c| {
            for key in &keys {
                let (collection, rkey) = key.split_once('/').unwrap();
                c.execute(
                    "DELETE FROM blocks WHERE repo_id = ?1 AND cid =
                       (SELECT cid FROM records WHERE repo_id = ?1 AND collection = ?2 AND rkey = ?3)",
                    rusqlite::params![repo_id, collection, rkey],
                )?;
            }
            for cid in &nodes {
                c.execute(
                    "DELETE FROM blocks WHERE repo_id = ?1 AND cid = ?2",
                    rusqlite::params![repo_id, cid.to_bytes()],
                )?;
            }
            Ok::<_, store::StoreError>(())
        })
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_copy_check_names_exactly_what_a_friends_copy_lacks() {
    let bed = pds::shared().await;
    let alice = bed.create_account("whole").await.unwrap();
    let mut keys = Vec::new();
    for i in 0..40 {
        let (uri, _) = alice
            .create_record("app.bsky.feed.post", post(&format!("post {i}")))
            .await
            .unwrap();
        let rkey = uri.rsplit('/').next().unwrap().to_string();
        keys.push(format!("app.bsky.feed.post/{rkey}"));
    }
    let http = reqwest::Client::new();
    let resolver = Arc::new(Resolver::new(http.clone(), &bed.plc, None));
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut syncers = Vec::new();
    for dir in [&a_dir, &b_dir] {
        let s = Syncer::new(open(dir), http.clone(), resolver.clone(), dir.path());
        let did = alice.did.clone();
        s.store
            .write(move |c| store::add_repo(c, &did, None, None))
            .await
            .unwrap()
            .unwrap();
        s.sync_repo(&alice.did, &|_| {}).await.unwrap();
        syncers.push(s);
    }
    let (a, b) = (&syncers[0], &syncers[1]);
    let b_url = serving(&b.store, &b_dir).await;
    let (a_id, root) = held(&a.store, &alice.did).await;
    let (b_id, _) = held(&b.store, &alice.did).await;

    // Whole: equal digests at the root, one request.
    let found = whole::walk(&http, &b_url, &alice.did, &a.store, a_id, root)
        .await
        .unwrap();
    assert!(found.is_whole(), "{}", found.words());
    assert_eq!(found.requests, 1);

    // Three records and the tree's root node gone from B's store.
    let mut lost = vec![keys[3].clone(), keys[17].clone(), keys[31].clone()];
    forget(&b.store, b_id, &lost, &[root]).await;
    let found = whole::walk(&http, &b_url, &alice.did, &a.store, a_id, root)
        .await
        .unwrap();
    lost.sort();
    assert_eq!(found.records, lost);
    assert_eq!(found.nodes, 1);
    assert!(found.bytes > 0);
    eprintln!(
        "whole-copy check of 40 records: {} in {} requests, {} compared",
        found.words(),
        found.requests,
        found.compared
    );
    let (check, _) = whole::check(&http, &b_url, &alice.did, &a.store, a_id, root).await;
    assert_eq!(check.layer, 2);
    assert_eq!(check.outcome, p2pds::policy::observations::Outcome::Fail);
    assert!(check
        .reason
        .unwrap()
        .contains("lacks 3 records and 1 tree node"));

    // A friend at a revision this node never held: where the trees differ, the friend's
    // blocks are fetched and hashed; where they are the same, digests are compared.
    let c_dir = tempfile::tempdir().unwrap();
    let friend = Syncer::new(open(&c_dir), http.clone(), resolver.clone(), c_dir.path());
    alice
        .create_record("app.bsky.feed.post", post("only the friend saw this one"))
        .await
        .unwrap();
    let did = alice.did.clone();
    friend
        .store
        .write(move |c| store::add_repo(c, &did, None, None))
        .await
        .unwrap()
        .unwrap();
    friend.sync_repo(&alice.did, &|_| {}).await.unwrap();
    alice
        .create_record("app.bsky.feed.post", post("and a later one"))
        .await
        .unwrap();
    a.sync_repo(&alice.did, &|_| {}).await.unwrap();
    let friend_url = serving(&friend.store, &c_dir).await;
    let (f_id, friend_root) = held(&friend.store, &alice.did).await;
    let found = whole::walk(&http, &friend_url, &alice.did, &a.store, a_id, friend_root)
        .await
        .unwrap();
    assert!(found.is_whole(), "{}", found.words());
    assert!(found.requests > 1);
    forget(&friend.store, f_id, &[keys[20].clone()], &[]).await;
    let found = whole::walk(&http, &friend_url, &alice.did, &a.store, a_id, friend_root)
        .await
        .unwrap();
    assert_eq!(found.records, vec![keys[20].clone()]);
}

/// Two stores holding the same generated repo of `n` posts (the friend's serving), the friend
/// then missing the same five records: (requests, subtrees and blocks compared).
async fn missing_five_of(n: usize) -> (u64, u64) {
    let key = SigningKey::generate_k256();
    let did = "did:plc:wholewholewholewholewhol";
    let mut repo = RepoBuilder::new(did, key.clone());
    for i in 0..n {
        repo.put_json(
            "app.bsky.feed.post",
            &format!("3k{i:011}"),
            &serde_json::json!({"$type": "app.bsky.feed.post", "text": format!("post {i}"),
                "createdAt": "2024-01-01T00:00:00Z"}),
        );
    }
    let car = repo.build("3kaaaaaaaaaaa").car_bytes();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(&a_dir), open(&b_dir));
    for s in [&a, &b] {
        let (car, public) = (car.clone(), key.public_key());
        s.write(move |c| {
            store::add_repo(c, did, None, None)?;
            p2pds::sync::ingest::ingest_car(c, did, &public, &car[..], &mut |_| {})
                .map_err(|e| store::StoreError::Io(std::io::Error::other(e.to_string())))?;
            Ok::<_, store::StoreError>(())
        })
        .await
        .unwrap()
        .unwrap();
    }
    let url = serving(&b, &b_dir).await;
    let (a_id, root) = held(&a, did).await;
    let (b_id, _) = held(&b, did).await;
    let mut lost: Vec<String> = [1, n / 5, n / 2, n * 3 / 4, n - 2]
        .iter()
        .map(|i| format!("app.bsky.feed.post/3k{i:011}"))
        .collect();
    forget(&b, b_id, &lost, &[]).await;
    let found = whole::walk(&reqwest::Client::new(), &url, did, &a, a_id, root)
        .await
        .unwrap();
    lost.sort();
    assert_eq!(found.records, lost);
    assert_eq!(found.nodes, 0);
    (found.requests, found.compared)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requests_grow_with_the_difference_not_the_repository() {
    let (small_requests, small_compared) = missing_five_of(1_000).await;
    let (large_requests, large_compared) = missing_five_of(100_000).await;
    eprintln!(
        "five records missing: 1,000 records: {small_requests} requests, {small_compared} \
         compared; 100,000 records: {large_requests} requests, {large_compared} compared"
    );
    // A hundred times the records: a few more levels to walk, nothing like a hundred times
    // the work.
    assert!(
        large_requests <= small_requests + 6,
        "{large_requests} vs {small_requests}"
    );
    assert!(
        large_compared < 4 * small_compared,
        "{large_compared} vs {small_compared}"
    );
    assert!(large_compared < 1_000);
}
