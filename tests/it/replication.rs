//! Replication from the reference PDS, driven through the CLI contract.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine;
use serde_json::{json, Value};

use crate::cli::{assert_ok, p2pds, p2pds_json};
use crate::pds::{self, Account, TestBed};

/// A 1×1 PNG.
const PNG_1X1: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";

fn png_1x1() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(PNG_1X1)
        .unwrap()
}

fn icon_png() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("icons/icon.png")).unwrap()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Posts, a profile with an avatar blob, and records in a custom collection.
async fn populate(acct: &Account, posts: usize) {
    for i in 0..posts {
        acct.create_record(
            "app.bsky.feed.post",
            json!({"$type": "app.bsky.feed.post", "text": format!("{} post {i}", acct.handle), "createdAt": now()}),
        )
        .await
        .unwrap();
    }
    let avatar = acct.upload_blob(png_1x1(), "image/png").await.unwrap();
    acct.put_record(
        "app.bsky.actor.profile",
        "self",
        json!({"$type": "app.bsky.actor.profile", "displayName": acct.handle, "avatar": avatar}),
    )
    .await
    .unwrap();
    for i in 0..3 {
        acct.put_record(
            "org.example.notes",
            &format!("note{i}"),
            json!({"$type": "org.example.notes", "body": format!("note {i}"), "tags": ["a", "b"], "n": i}),
        )
        .await
        .unwrap();
    }
}

/// The node's copy equals what the PDS says, collection by collection.
async fn assert_copy_matches(bed: &TestBed, data: &Path, acct: &Account) {
    let status = p2pds_json(bed, data, &["status", "--json"]).await;
    let repo = status["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["did"] == acct.did.as_str())
        .unwrap_or_else(|| panic!("{} not in status", acct.did))
        .clone();
    let (commit, rev) = acct.latest_commit().await.unwrap();
    assert_eq!(repo["rev"], rev.as_str(), "rev of {}", acct.handle);
    assert_eq!(repo["commit"], commit.as_str());
    assert_eq!(repo["state"], "synced");
    assert_eq!(repo["error"], Value::Null);
    assert_eq!(repo["handle"], acct.handle.as_str());

    let mut total = 0;
    for collection in acct.list_collections().await.unwrap() {
        let upstream: BTreeMap<String, (String, Value)> = acct
            .list_records(&collection)
            .await
            .unwrap()
            .into_iter()
            .map(|(uri, cid, value)| (uri, (cid, value)))
            .collect();
        let local = p2pds_json(
            bed,
            data,
            &["records", &acct.did, "--collection", &collection, "--json"],
        )
        .await;
        let local: BTreeMap<String, (String, Value)> = local["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["uri"].as_str().unwrap().to_string(),
                    (r["cid"].as_str().unwrap().to_string(), r["value"].clone()),
                )
            })
            .collect();
        assert_eq!(
            local, upstream,
            "collection {collection} of {}",
            acct.handle
        );
        total += upstream.len();
    }
    assert_eq!(repo["records"], total as i64);

    let upstream_blobs: BTreeSet<String> = acct.list_blobs().await.unwrap().into_iter().collect();
    assert!(!upstream_blobs.is_empty());
    assert_eq!(
        repo["blobs"],
        upstream_blobs.len() as i64,
        "blobs of {}",
        acct.handle
    );
    for cid in &upstream_blobs {
        let held = std::fs::read(data.join("blobs").join(cid)).unwrap();
        let parsed: cid::Cid = cid.parse().unwrap();
        assert_eq!(p2pds::repo::cid_for(parsed.codec(), &held), parsed);
    }
}

#[tokio::test]
async fn replicates_three_accounts_then_follows_their_changes() {
    let bed = pds::shared().await;
    let mut accounts = Vec::new();
    for (name, posts) in [("alice", 12), ("bob", 5), ("carol", 8)] {
        let acct = bed.create_account(name).await.unwrap();
        populate(&acct, posts).await;
        accounts.push(acct);
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    for acct in &accounts {
        // By handle, resolved through the PDS's resolveHandle.
        let out = p2pds(bed, data, &["backup", "add", &acct.handle]).await;
        assert_ok(&out, &["backup", "add"]);
    }
    let listed = p2pds_json(bed, data, &["backup", "list", "--json"]).await;
    assert_eq!(listed["repos"].as_array().unwrap().len(), 3);

    let out = p2pds(bed, data, &["sync", "--once"]).await;
    assert_ok(&out, &["sync", "--once"]);
    for acct in &accounts {
        assert_copy_matches(bed, data, acct).await;
    }

    // Changes upstream: creates, an update, deletes, a new blob.
    let alice = &accounts[0];
    let posts = alice.list_records("app.bsky.feed.post").await.unwrap();
    let first_rkey = posts[0].0.rsplit('/').next().unwrap().to_string();
    alice
        .delete_record("app.bsky.feed.post", &first_rkey)
        .await
        .unwrap();
    alice
        .delete_record("org.example.notes", "note1")
        .await
        .unwrap();
    alice
        .put_record(
            "org.example.notes",
            "note0",
            json!({"$type": "org.example.notes", "body": "edited"}),
        )
        .await
        .unwrap();
    let image = alice.upload_blob(icon_png(), "image/png").await.unwrap();
    alice
        .create_record(
            "app.bsky.feed.post",
            json!({
                "$type": "app.bsky.feed.post", "text": "with a picture", "createdAt": now(),
                "embed": {"$type": "app.bsky.embed.images", "images": [{"alt": "icon", "image": image}]}
            }),
        )
        .await
        .unwrap();
    alice
        .create_record(
            "org.example.other",
            json!({"$type": "org.example.other", "x": 1}),
        )
        .await
        .unwrap();
    accounts[2]
        .create_record(
            "app.bsky.feed.post",
            json!({"$type": "app.bsky.feed.post", "text": "carol again", "createdAt": now()}),
        )
        .await
        .unwrap();

    let out = p2pds(bed, data, &["sync", "--once"]).await;
    assert_ok(&out, &["sync", "--once"]);
    let log = String::from_utf8_lossy(&out.stderr);
    // Incremental: exactly the changes, learned by comparing the trees.
    assert!(
        log.contains(&format!("{}: rev", alice.handle))
            && log.contains("2 new, 1 changed, 2 deleted"),
        "{log}"
    );
    assert!(
        log.contains(&format!("{}: up to date", accounts[1].handle)),
        "{log}"
    );
    for acct in &accounts {
        assert_copy_matches(bed, data, acct).await;
    }

    // Export: a CAR rooted at the signed commit, and the blobs by CID.
    let car = data.join("alice.car");
    let blobs = data.join("alice-blobs");
    let out = p2pds(
        bed,
        data,
        &[
            "export",
            &alice.did,
            "--car",
            car.to_str().unwrap(),
            "--blobs",
            blobs.to_str().unwrap(),
        ],
    )
    .await;
    assert_ok(&out, &["export"]);
    let bytes = std::fs::read(&car).unwrap();
    let mut reader = p2pds::repo::car::CarReader::new(&bytes[..]).unwrap();
    let (commit, _) = alice.latest_commit().await.unwrap();
    assert_eq!(reader.roots()[0].to_string(), commit);
    let mut n = 0;
    while reader.next_block().unwrap().is_some() {
        n += 1;
    }
    // The commit, at least the root node of the tree, and every record block.
    let mut records = BTreeSet::new();
    for c in alice.list_collections().await.unwrap() {
        for (_, cid, _) in alice.list_records(&c).await.unwrap() {
            records.insert(cid);
        }
    }
    assert!(
        n >= 2 + records.len(),
        "{n} blocks for {} records",
        records.len()
    );
    let exported: BTreeSet<String> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let upstream: BTreeSet<String> = alice.list_blobs().await.unwrap().into_iter().collect();
    assert_eq!(exported, upstream);

    // Removing an account deletes its copy and leaves the others.
    let out = p2pds(bed, data, &["backup", "remove", &accounts[1].did]).await;
    assert_ok(&out, &["backup", "remove"]);
    let status = p2pds_json(bed, data, &["status", "--json"]).await;
    assert_eq!(status["repos"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_deactivated_account_keeps_its_copy_and_shows_why() {
    let bed = pds::shared().await;
    let acct = bed.create_account("dora").await.unwrap();
    populate(&acct, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    assert_ok(
        &p2pds(bed, data, &["backup", "add", &acct.did]).await,
        &["backup", "add"],
    );
    assert_ok(&p2pds(bed, data, &["sync", "--once"]).await, &["sync"]);
    let before = p2pds_json(bed, data, &["records", &acct.did, "--json"]).await;
    acct.deactivate().await.unwrap();
    let out = p2pds(bed, data, &["sync", "--once"]).await;
    assert_ok(&out, &["sync"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("deactivated"));
    let status = p2pds_json(bed, data, &["status", "--json"]).await;
    let repo = &status["repos"][0];
    assert_eq!(repo["upstreamStatus"], "deactivated");
    assert_eq!(repo["records"], 3 + 1 + 3);
    let after = p2pds_json(bed, data, &["records", &acct.did, "--json"]).await;
    assert_eq!(after, before);
}

#[tokio::test]
async fn records_read_with_proofs_from_the_reference_pds() {
    let bed = pds::shared().await;
    let acct = bed.create_account("proof").await.unwrap();
    populate(&acct, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let store = p2pds::store::Store::open(&dir.path().join("p2pds.sqlite")).unwrap();
    let http = reqwest::Client::new();
    let resolver =
        std::sync::Arc::new(p2pds::identity::Resolver::new(http.clone(), &bed.plc, None));
    let syncer = p2pds::sync::Syncer::new(store, http, resolver, dir.path());
    let found = syncer
        .verified_record(&acct.did, "org.example.notes", "note2")
        .await
        .unwrap();
    assert_eq!(found.value.unwrap()["body"], "note 2");
    let (commit, rev) = acct.latest_commit().await.unwrap();
    assert_eq!((found.commit.to_string(), found.rev), (commit, rev));
    let absent = syncer
        .verified_record(&acct.did, "org.example.notes", "nope")
        .await
        .unwrap();
    assert_eq!(absent.cid, None);
}

/// The records the PDS holds for the account, in every collection.
async fn upstream_records(acct: &Account) -> usize {
    let mut total = 0;
    for collection in acct.list_collections().await.unwrap() {
        total += acct.list_records(&collection).await.unwrap().len();
    }
    total
}

/// (`records` in `status --json`, the rows `records --json` lists).
async fn held_records(bed: &TestBed, data: &Path, did: &str) -> (i64, usize) {
    let status = p2pds_json(bed, data, &["status", "--json"]).await;
    let count = status["repos"][0]["records"].as_i64().unwrap();
    let rows = p2pds_json(bed, data, &["records", did, "--json"]).await["records"]
        .as_array()
        .unwrap()
        .len();
    (count, rows)
}

#[tokio::test]
async fn the_record_count_follows_incremental_syncs() {
    // The count is kept from each diff (creates − deletes), not recounted: it must stay the
    // number of records held through creates, updates and deletes.
    let bed = pds::shared().await;
    let acct = bed.create_account("counted").await.unwrap();
    populate(&acct, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    assert_ok(
        &p2pds(bed, data, &["backup", "add", &acct.did]).await,
        &["backup", "add"],
    );
    assert_ok(&p2pds(bed, data, &["sync", "--once"]).await, &["sync"]);
    let first = upstream_records(&acct).await;
    assert_eq!(
        held_records(bed, data, &acct.did).await,
        (first as i64, first)
    );

    let note = |i: i64, body: &str| json!({"$type": "org.example.notes", "body": body, "n": i});
    let mut posts = Vec::new();
    for round in 0..4 {
        match round {
            0 => {
                for i in 0..2 {
                    let (uri, _) = acct
                        .create_record(
                            "app.bsky.feed.post",
                            json!({"$type": "app.bsky.feed.post", "text": format!("more {i}"), "createdAt": now()}),
                        )
                        .await
                        .unwrap();
                    posts.push(uri);
                }
                acct.put_record("org.example.notes", "note0", note(0, "edited"))
                    .await
                    .unwrap();
                acct.delete_record("org.example.notes", "note1")
                    .await
                    .unwrap();
            }
            1 => {
                for uri in posts.drain(..) {
                    let rkey = uri.rsplit('/').next().unwrap().to_string();
                    acct.delete_record("app.bsky.feed.post", &rkey)
                        .await
                        .unwrap();
                }
                acct.put_record("org.example.notes", "note1", note(1, "back"))
                    .await
                    .unwrap();
            }
            2 => {
                for i in 0..3 {
                    acct.put_record("org.example.notes", "note2", note(2, &format!("edit {i}")))
                        .await
                        .unwrap();
                }
            }
            _ => {
                for i in 0..3 {
                    acct.delete_record("org.example.notes", &format!("note{i}"))
                        .await
                        .unwrap();
                }
            }
        }
        assert_ok(&p2pds(bed, data, &["sync", "--once"]).await, &["sync"]);
        let upstream = upstream_records(&acct).await;
        assert_eq!(
            held_records(bed, data, &acct.did).await,
            (upstream as i64, upstream),
            "round {round}"
        );
    }
    assert_copy_matches(bed, data, &acct).await;
}
