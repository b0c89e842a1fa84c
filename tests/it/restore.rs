//! Giving an account back (issue 7), against two reference PDS instances sharing one PLC
//! directory: alice posts with images, bob's node backs her up, alice deletes everything,
//! bob's node keeps the last good state and flags it, and her account is restored from bob's
//! copy into a fresh account on the second PDS, records and blobs equal to before; then a
//! point-in-time restore brings back an older version, and garbage collection after the
//! retention window frees space while the history left still verifies. Also: a deactivated
//! account is flagged and cleared, a PDS gone past its grace period is flagged, and the
//! storage limit stops a sync that does not fit, naming the friend, the copy kept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use p2pds::repo::car::CarReader;
use p2pds::repo::mst::{self, BlockSource, MstError};
use serde_json::{json, Value};

use crate::circles::{now, p2pds_env, run, run_json};
use crate::pds::{shared, Account, TestBed};

fn icon_png() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("icons/icon.png")).unwrap()
}

/// A distinct picture (the icon with a unique trailer: still a PNG).
fn picture(tag: &str) -> Vec<u8> {
    let mut bytes = icon_png();
    bytes.extend_from_slice(format!("p2pds-test-{tag}").as_bytes());
    bytes
}

/// Posts with a picture; → (rkey, blob cid).
async fn post_picture(acct: &Account, tag: &str, bytes: Vec<u8>) -> (String, String) {
    let blob = acct.upload_blob(bytes, "image/png").await.unwrap();
    let cid = blob["ref"]["$link"].as_str().unwrap().to_string();
    let (uri, _) = acct
        .create_record(
            "app.bsky.feed.post",
            json!({
                "$type": "app.bsky.feed.post", "text": format!("picture {tag}"), "createdAt": now(),
                "embed": {"$type": "app.bsky.embed.images", "images": [{"alt": tag, "image": blob}]}
            }),
        )
        .await
        .unwrap();
    (uri.rsplit('/').next().unwrap().to_string(), cid)
}

/// Every record of an account as its PDS lists it: "collection/rkey" → record CID.
async fn records_of(acct: &Account) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for collection in acct.list_collections().await.unwrap() {
        for (uri, cid, _) in acct.list_records(&collection).await.unwrap() {
            let rkey = uri.rsplit('/').next().unwrap();
            out.insert(format!("{collection}/{rkey}"), cid);
        }
    }
    out
}

/// Blocks of a CAR, for walking its tree.
struct CarBlocks(BTreeMap<Vec<u8>, Vec<u8>>);

impl BlockSource for CarBlocks {
    fn get_block(&mut self, cid: &cid::Cid) -> Result<Option<Vec<u8>>, MstError> {
        Ok(self.0.get(&cid.to_bytes()).cloned())
    }
}

/// The records of a repo CAR: "collection/rkey" → record CID (every record block present).
fn car_records(car: &[u8]) -> BTreeMap<String, String> {
    let mut reader = CarReader::new(car).unwrap();
    let root = reader.roots()[0];
    let mut blocks = BTreeMap::new();
    while let Some((cid, data)) = reader.next_block().unwrap() {
        blocks.insert(cid.to_bytes(), data.to_vec());
    }
    let commit = p2pds::repo::commit::Commit::decode(&blocks[&root.to_bytes()]).unwrap();
    let mut src = CarBlocks(blocks);
    let mut out = BTreeMap::new();
    mst::walk(&mut src, commit.data, |key, cid| {
        out.insert(String::from_utf8_lossy(key).into_owned(), cid.to_string());
        Ok::<(), MstError>(())
    })
    .unwrap();
    for cid in out.values() {
        let c: cid::Cid = cid.parse().unwrap();
        assert!(
            src.0.contains_key(&c.to_bytes()),
            "record {cid} not in the CAR"
        );
    }
    out
}

/// The restored account on the new PDS, as its owner sees it (it is still deactivated there).
struct Restored {
    pds: String,
    did: String,
    token: String,
    http: reqwest::Client,
}

impl Restored {
    async fn sign_in(pds: &str, handle: &str, password: &str) -> Self {
        let http = reqwest::Client::new();
        let session: Value = http
            .post(format!("{pds}/xrpc/com.atproto.server.createSession"))
            .json(&json!({"identifier": handle, "password": password}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Restored {
            pds: pds.to_string(),
            did: session["did"].as_str().unwrap().to_string(),
            token: session["accessJwt"].as_str().unwrap().to_string(),
            http,
        }
    }

    async fn get(&self, nsid: &str, query: &[(&str, &str)]) -> reqwest::Response {
        let res = self
            .http
            .get(format!("{}/xrpc/{nsid}", self.pds))
            .query(query)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{nsid}: {}", res.status());
        res
    }

    async fn post(&self, text: &str) {
        let res = self
            .http
            .post(format!("{}/xrpc/com.atproto.repo.createRecord", self.pds))
            .bearer_auth(&self.token)
            .json(&json!({
                "repo": self.did, "collection": "app.bsky.feed.post",
                "record": {"$type": "app.bsky.feed.post", "text": text, "createdAt": now()}
            }))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "createRecord: {}", res.status());
    }

    async fn records(&self) -> BTreeMap<String, String> {
        let car = self
            .get("com.atproto.sync.getRepo", &[("did", &self.did)])
            .await
            .bytes()
            .await
            .unwrap();
        car_records(&car)
    }

    async fn blobs(&self) -> BTreeSet<String> {
        let body: Value = self
            .get(
                "com.atproto.sync.listBlobs",
                &[("did", &self.did), ("limit", "1000")],
            )
            .await
            .json()
            .await
            .unwrap();
        body["cids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    }

    async fn blob(&self, cid: &str) -> Vec<u8> {
        self.get(
            "com.atproto.sync.getBlob",
            &[("did", &self.did), ("cid", cid)],
        )
        .await
        .bytes()
        .await
        .unwrap()
        .to_vec()
    }
}

async fn restore(
    bed: &TestBed,
    data: &Path,
    did: &str,
    to: &str,
    handle: &str,
    password: &str,
    extra: &[&str],
) -> Value {
    let mut args = vec![
        "restore",
        did,
        "--to-pds",
        to,
        "--handle",
        handle,
        "--password-env",
        "P2PDS_TEST_PASSWORD",
        "--json",
    ];
    args.extend(extra);
    let out = p2pds_env(bed, data, &args, &[("P2PDS_TEST_PASSWORD", password)]).await;
    assert!(
        out.status.success(),
        "restore {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn open_flags(history: &Value) -> Vec<(String, Option<String>)> {
    history["flags"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["cleared_at"].is_null())
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["good_rev"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn blob_files(data: &Path) -> BTreeSet<String> {
    std::fs::read_dir(data.join("blobs"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".part"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn an_account_deleted_upstream_is_restored_from_a_friends_copy() {
    let bed = shared().await;
    let second = bed.start_extra_pds().await.unwrap();
    let alice = bed.create_account("alice").await.unwrap();
    let bob = tempfile::tempdir().unwrap();
    let bob = bob.path();

    // State 1: a profile, posts, two with pictures (one of them deleted later).
    alice
        .put_record(
            "app.bsky.actor.profile",
            "self",
            json!({"$type": "app.bsky.actor.profile", "displayName": "Alice"}),
        )
        .await
        .unwrap();
    crate::circles::post(&alice, 3).await;
    let (doomed_rkey, doomed_blob) = post_picture(&alice, "doomed", picture("doomed")).await;
    let (_, kept_blob) = post_picture(&alice, "kept", picture("kept")).await;
    run(bed, bob, &["backup", "add", &alice.did]).await;
    run(bed, bob, &["sync", "--once"]).await;
    let state1 = records_of(&alice).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after_state1 = now();
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // State 2: the doomed post goes, one is edited, two more (one with a picture).
    alice
        .delete_record("app.bsky.feed.post", &doomed_rkey)
        .await
        .unwrap();
    alice
        .put_record(
            "app.bsky.actor.profile",
            "self",
            json!({"$type": "app.bsky.actor.profile", "displayName": "Alice A."}),
        )
        .await
        .unwrap();
    crate::circles::post(&alice, 1).await;
    let (_, new_blob) = post_picture(&alice, "new", picture("new")).await;
    run(bed, bob, &["sync", "--once"]).await;
    let state2 = records_of(&alice).await;
    let mut blobs2: BTreeSet<String> = alice.list_blobs().await.unwrap().into_iter().collect();
    assert_eq!(
        blobs2,
        BTreeSet::from([kept_blob.clone(), new_blob.clone()])
    );
    let (_, rev2) = alice.latest_commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Alice deletes everything.
    for key in state2.keys() {
        let (collection, rkey) = key.split_once('/').unwrap();
        alice.delete_record(collection, rkey).await.unwrap();
    }
    assert!(records_of(&alice).await.is_empty());
    run(bed, bob, &["sync", "--once"]).await;

    // Bob's node keeps the last good state and flags it.
    let history = run_json(bed, bob, &["history", &alice.did, "--json"]).await;
    assert_eq!(history["states"].as_array().unwrap().len(), 3, "{history}");
    let flags = open_flags(&history);
    assert_eq!(
        flags,
        vec![("mass-deletion".to_string(), Some(rev2.clone()))],
        "{history}"
    );
    let status = run_json(bed, bob, &["status", "--json"]).await;
    let repo = &status["repos"][0];
    assert_eq!(repo["records"], 0);
    assert!(
        repo["flags"][0]["detail"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "all {} records were deleted at once",
                state2.len()
            )),
        "{status}"
    );
    let text = run(bed, bob, &["status"]).await;
    assert!(String::from_utf8_lossy(&text.stdout).contains("warning: all"));

    // Restored into a fresh account on the second PDS: the state before the deletion.
    let report = restore(
        bed,
        bob,
        &alice.did,
        &second.pds,
        &alice.handle,
        &alice.password,
        &[],
    )
    .await;
    assert_eq!(report["account"], "created", "{report}");
    assert_eq!(report["rev"], rev2.as_str());
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["records"], state2.len() as u64);
    assert_eq!(report["blobs_uploaded"], 2);
    assert!(report["why"]
        .as_str()
        .unwrap()
        .contains("last good version"));
    assert_eq!(report["identity_moved"], false);
    assert_eq!(report["code_sent"], true);
    assert!(
        report["next_steps"][0]
            .as_str()
            .unwrap()
            .contains("emailed a confirmation code"),
        "{report}"
    );
    let restored = Restored::sign_in(&second.pds, &alice.handle, &alice.password).await;
    assert_eq!(restored.did, alice.did);
    assert_eq!(restored.records().await, state2);
    assert_eq!(restored.blobs().await, blobs2);
    assert_eq!(restored.blob(&kept_blob).await, picture("kept"));
    assert_eq!(restored.blob(&new_blob).await, picture("new"));

    // Point in time: the older version comes back (the same restore, resumed, at a time).
    let report = restore(
        bed,
        bob,
        &alice.did,
        &second.pds,
        &alice.handle,
        &alice.password,
        &["--at", &after_state1],
    )
    .await;
    assert_eq!(report["account"], "existing", "{report}");
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(
        report["blobs_uploaded"], 1,
        "only the doomed picture was missing: {report}"
    );
    assert_eq!(restored.records().await, state1);
    assert!(restored.blobs().await.contains(&doomed_blob));
    assert_eq!(restored.blob(&doomed_blob).await, picture("doomed"));

    // Garbage collection after the retention window: state 1 ages out, the rest stays.
    let retention = format!("{}s", (chrono::Utc::now() - between).num_seconds());
    let plan = run_json(
        bed,
        bob,
        &["gc", "--retention", &retention, "--dry-run", "--json"],
    )
    .await;
    let files_before = blob_files(bob);
    assert!(files_before.contains(&doomed_blob));
    // An export of state 2 writes exactly the pictures state 2 names (the doomed one is still
    // held here, for state 1, but is not part of it), and names those not held.
    let export_blobs = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect::<BTreeSet<String>>()
    };
    let state2_car = bob.join("state2.car");
    let (dir2, dir3) = (bob.join("state2-blobs"), bob.join("state2-blobs-again"));
    let export_at_between = |blobs: &std::path::Path| {
        [
            "export".to_string(),
            alice.did.clone(),
            "--car".into(),
            state2_car.to_str().unwrap().into(),
            "--at".into(),
            between.to_rfc3339(),
            "--blobs".into(),
            blobs.to_str().unwrap().into(),
        ]
    };
    let args = export_at_between(&dir2);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(bed, bob, &args).await;
    assert_eq!(
        export_blobs(&dir2),
        BTreeSet::from([kept_blob.clone(), new_blob.clone()])
    );
    let held = bob.join("blobs").join(&new_blob);
    std::fs::rename(&held, bob.join("aside")).unwrap();
    let args = export_at_between(&dir3);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = p2pds_env(bed, bob, &args, &[]).await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("1 not held here") && said.contains(&new_blob),
        "{said}"
    );
    assert_eq!(export_blobs(&dir3), BTreeSet::from([kept_blob.clone()]));
    std::fs::rename(bob.join("aside"), &held).unwrap();
    let done = run_json(bed, bob, &["gc", "--retention", &retention, "--json"]).await;
    assert_eq!(done["states_removed"], 1, "{done}");
    assert!(done["bytes_removed"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(done["blob_files_removed"], 1, "{done}");
    assert_eq!(
        done["reclaimable_bytes"], plan["reclaimable_bytes"],
        "{plan} vs {done}"
    );
    assert_eq!(done["blob_bytes_removed"], picture("doomed").len() as u64);
    let files_after = blob_files(bob);
    assert!(!files_after.contains(&doomed_blob));
    blobs2.insert(doomed_blob.clone());
    assert_eq!(files_before.difference(&files_after).count(), 1);
    let history = run_json(bed, bob, &["history", &alice.did, "--verify", "--json"]).await;
    assert_eq!(history["states"].as_array().unwrap().len(), 2, "{history}");
    assert_eq!(history["check"]["problems"], json!([]), "{history}");
    assert!(history["check"]["records_checked"].as_u64().unwrap() >= state2.len() as u64);
    // The last good state still exports whole; the collected one is gone, said in words.
    let car = bob.join("alice.car");
    run(
        bed,
        bob,
        &[
            "export",
            &alice.did,
            "--car",
            car.to_str().unwrap(),
            "--at",
            &between.to_rfc3339(),
        ],
    )
    .await;
    assert_eq!(car_records(&std::fs::read(&car).unwrap()), state2);
    let out = p2pds_env(
        bed,
        bob,
        &[
            "export",
            &alice.did,
            "--car",
            car.to_str().unwrap(),
            "--at",
            &after_state1,
        ],
        &[],
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("oldest kept version"));
    // A second collection right away finds nothing more.
    let again = run_json(bed, bob, &["gc", "--retention", &retention, "--json"]).await;
    assert_eq!(again["reclaimable_bytes"], 0, "{again}");

    // The identity step: each run asked the old server to email alice a code (the test reads
    // it where the test server keeps it). With it, the account moves and comes back online.
    let code = bed.emailed_code(&alice.did, "plc_operation").unwrap();
    let report = restore(
        bed,
        bob,
        &alice.did,
        &second.pds,
        &alice.handle,
        &alice.password,
        &["--plc-token", &code],
    )
    .await;
    assert_eq!(report["identity_moved"], true, "{report}");
    assert_eq!(report["new_pds_status"]["activated"], true, "{report}");
    let doc = bed.plc_document(&alice.did).await.unwrap();
    assert_eq!(
        doc["service"][0]["serviceEndpoint"],
        second.pds.as_str(),
        "{doc}"
    );
    // Anyone can read it there again, as it was before the deletion.
    let public: Value = reqwest::get(format!(
        "{}/xrpc/com.atproto.repo.listRecords?repo={}&collection=app.bsky.feed.post&limit=100",
        second.pds, alice.did
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let posts = state2
        .keys()
        .filter(|k| k.starts_with("app.bsky.feed.post/"))
        .count();
    assert_eq!(
        public["records"].as_array().unwrap().len(),
        posts,
        "{public}"
    );
    // Until alice writes, the new server serves the commit it imported (older than the
    // deletion bob holds, and signed with the old key): bob's node refuses it and keeps its
    // copy. Her first post there is a new commit signed with the new key.
    restored.post("back on a new server").await;
    // Bob's node follows the account to its new server, and flags the change of server and
    // key: the owner did it here, but a takeover would look the same.
    run(bed, bob, &["sync", "--once"]).await;
    let history = run_json(bed, bob, &["history", &alice.did, "--json"]).await;
    let kinds: BTreeSet<String> = open_flags(&history).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["mass-deletion".into(), "new-pds".into(), "new-key".into()]),
        "{history}"
    );
    let status = run_json(bed, bob, &["status", "--json"]).await;
    assert_eq!(
        status["repos"][0]["records"],
        state2.len() as u64 + 1,
        "{status}"
    );
}

#[tokio::test]
async fn upstream_loss_is_flagged_and_the_copy_kept() {
    let bed = shared().await;
    let second = bed.start_extra_pds().await.unwrap();
    let carol = bed.create_account("carol").await.unwrap();
    let dave = second.create_account("dave").await.unwrap();
    crate::circles::post(&carol, 3).await;
    crate::circles::post(&dave, 2).await;
    let node = tempfile::tempdir().unwrap();
    let node = node.path();
    run(bed, node, &["backup", "add", &carol.did]).await;
    run(bed, node, &["backup", "add", &dave.did]).await;
    run(bed, node, &["sync", "--once"]).await;

    // Deactivated: flagged, the copy kept; active again: cleared.
    let (_, rev) = carol.latest_commit().await.unwrap();
    carol.deactivate().await.unwrap();
    let out = run(bed, node, &["sync", "--once"]).await;
    // The pass tells the flag as it is raised (the node's FlagRaised event).
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("{}: flagged:", carol.handle)) && said.contains("deactivated"),
        "{said}"
    );
    let history = run_json(bed, node, &["history", &carol.did, "--json"]).await;
    assert_eq!(
        open_flags(&history),
        vec![("account-deactivated".to_string(), Some(rev))]
    );
    let status = run_json(bed, node, &["status", "--json"]).await;
    let held = status["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["did"] == carol.did.as_str())
        .unwrap()
        .clone();
    assert_eq!(held["records"], 3);
    assert!(held["flags"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("your copy is kept"));
    carol.activate().await.unwrap();
    run(bed, node, &["sync", "--once"]).await;
    let history = run_json(bed, node, &["history", &carol.did, "--json"]).await;
    assert!(open_flags(&history).is_empty(), "{history}");

    // The storage limit: a sync that does not fit names the friend and keeps the copy.
    let used = run_json(bed, node, &["storage", "--json"]).await["usedBytes"]
        .as_u64()
        .unwrap();
    run(bed, node, &["storage", "--limit", &(used + 50).to_string()]).await;
    crate::circles::post(&carol, 40).await;
    let out = p2pds_env(bed, node, &["sync", "--once"], &[]).await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!(
            "{}'s backup does not fit within your storage limit",
            carol.handle
        )),
        "{said}"
    );
    let status = run_json(bed, node, &["status", "--json"]).await;
    let held = status["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["did"] == carol.did.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        held["records"], 3,
        "the copy held stays as it was: {status}"
    );
    assert_eq!(held["errorCode"], "storage_limit", "{status}");
    run(bed, node, &["storage", "--no-limit"]).await;

    // A full disk: found before writing, said in words, the copy kept.
    let full = (64 * 1024 * 1024 + 1000).to_string();
    let out = p2pds_env(
        bed,
        node,
        &["sync", "--once"],
        &[("P2PDS_FREE_SPACE", &full)],
    )
    .await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("the disk holding your backups is nearly full"),
        "{said}"
    );
    assert!(said.contains(&carol.handle), "{said}");
    let status = run_json(bed, node, &["status", "--json"]).await;
    let held = status["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["did"] == carol.did.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        held["records"], 3,
        "the copy held stays as it was: {status}"
    );
    assert_eq!(held["errorCode"], "disk_full", "{status}");
    run(bed, node, &["sync", "--once"]).await;
    let status = run_json(bed, node, &["status", "--json"]).await;
    let held = status["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["did"] == carol.did.as_str())
        .unwrap()
        .clone();
    assert_eq!(held["records"], 43, "{status}");

    // Dave's PDS goes away: past the grace period it is flagged, his copy kept.
    drop(second);
    let grace = [("P2PDS_PDS_GRACE", "1s")];
    let _ = p2pds_env(bed, node, &["sync", "--once"], &grace).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = p2pds_env(bed, node, &["sync", "--once"], &grace).await;
    let history = run_json(bed, node, &["history", &dave.did, "--json"]).await;
    let flags = open_flags(&history);
    assert_eq!(flags.len(), 1, "{history}");
    assert_eq!(flags[0].0, "pds-gone");
    let status = run_json(bed, node, &["status", "--json"]).await;
    let held = status["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["did"] == dave.did.as_str())
        .unwrap()
        .clone();
    assert_eq!(held["records"], 2);
}

/// The identity as the PLC directory holds it (rotation keys, signing key, services).
async fn plc_data(bed: &TestBed, did: &str) -> Value {
    reqwest::get(format!("{}/{did}/data", bed.plc))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `p2pds recovery-key add` for `acct` with its main password; → its JSON answer.
async fn add_recovery_key(bed: &TestBed, data: &Path, acct: &Account, extra: &[&str]) -> Value {
    let mut args = vec![
        "recovery-key",
        "add",
        "--account",
        acct.did.as_str(),
        "--password-env",
        "P2PDS_TEST_PASSWORD",
        "--json",
    ];
    args.extend_from_slice(extra);
    let pw = [("P2PDS_TEST_PASSWORD", acct.password.as_str())];
    let out = p2pds_env(bed, data, &args, &pw).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn an_account_whose_server_is_gone_moves_with_its_recovery_key() {
    let bed = shared().await;
    let doomed = bed.start_extra_pds().await.unwrap();
    let fresh = bed.start_extra_pds().await.unwrap();
    let erin = doomed.create_account("erin").await.unwrap();
    crate::circles::post(&erin, 3).await;
    let (_, blob) = post_picture(&erin, "erin", picture("erin")).await;

    // On erin's own computer, while her server works: a recovery key of her own.
    let own = tempfile::tempdir().unwrap();
    let own = own.path();
    let sent = add_recovery_key(bed, own, &erin, &[]).await;
    assert_eq!(sent["state"], "code-sent", "{sent}");
    let code = doomed.emailed_code(&erin.did, "plc_operation").unwrap();
    let done = add_recovery_key(bed, own, &erin, &["--code", &code]).await;
    assert_eq!(done["state"], "registered", "{done}");
    let did_key = done["didKey"].as_str().unwrap().to_string();
    let recovery_code = done["code"].as_str().unwrap().to_string();
    let data = plc_data(bed, &erin.did).await;
    assert_eq!(data["rotationKeys"][0], did_key.as_str(), "{data}");
    assert_eq!(data["rotationKeys"].as_array().unwrap().len(), 2, "{data}");
    let status = run_json(
        bed,
        own,
        &["recovery-key", "status", "--account", &erin.did, "--json"],
    )
    .await;
    assert_eq!(status["registered"], true, "{status}");
    // Registering again changes nothing.
    let again = add_recovery_key(bed, own, &erin, &["--code", &code]).await;
    assert_eq!(again["state"], "already", "{again}");

    // A friend's node backs her up; then her server is gone for good.
    let friend = tempfile::tempdir().unwrap();
    let friend = friend.path();
    run(bed, friend, &["backup", "add", &erin.did]).await;
    run(bed, friend, &["sync", "--once"]).await;
    let before = records_of(&erin).await;
    let doomed_rotation = data["rotationKeys"][1].as_str().unwrap().to_string();

    // While her server still answers, a mistyped password there is said as it is: the key does
    // not rewrite the identity of a live account.
    let fresh_email = format!("{}@example.com", erin.handle.replace('.', "-"));
    let out = p2pds_env(
        bed,
        friend,
        &[
            "restore",
            &erin.did,
            "--to-pds",
            &fresh.pds,
            "--handle",
            &erin.handle,
            "--password-env",
            "P2PDS_TEST_PASSWORD",
            "--old-password-env",
            "P2PDS_TEST_WRONG",
            "--recovery-key-env",
            "P2PDS_TEST_RECOVERY",
            "--email",
            &fresh_email,
            "--json",
        ],
        &[
            ("P2PDS_TEST_PASSWORD", erin.password.as_str()),
            ("P2PDS_TEST_WRONG", "not-her-password"),
            ("P2PDS_TEST_RECOVERY", recovery_code.as_str()),
        ],
    )
    .await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("signing in there failed"), "{said}");
    assert_eq!(
        plc_data(bed, &erin.did).await,
        data,
        "the identity is unchanged"
    );
    drop(doomed);

    // Restored from the friend's copy with the key she wrote down: no old server needed.
    let email = fresh_email;
    let args = vec![
        "restore",
        &erin.did,
        "--to-pds",
        &fresh.pds,
        "--handle",
        &erin.handle,
        "--password-env",
        "P2PDS_TEST_PASSWORD",
        "--recovery-key-env",
        "P2PDS_TEST_RECOVERY",
        "--email",
        &email,
        "--json",
    ];
    let envs = [
        ("P2PDS_TEST_PASSWORD", erin.password.as_str()),
        ("P2PDS_TEST_RECOVERY", recovery_code.as_str()),
    ];
    let out = p2pds_env(bed, friend, &args, &envs).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["account"], "created", "{report}");
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["used_recovery_key"], true, "{report}");
    assert_eq!(report["identity_moved"], true, "{report}");
    assert_eq!(report["new_pds_status"]["activated"], true, "{report}");
    assert_eq!(report["blobs_uploaded"], 1, "{report}");

    // The identity names the new server and its signing key; erin's key stays first and the
    // gone server's key is dropped.
    let data = plc_data(bed, &erin.did).await;
    assert_eq!(
        data["services"]["atproto_pds"]["endpoint"],
        fresh.pds.as_str(),
        "{data}"
    );
    assert_eq!(data["rotationKeys"][0], did_key.as_str(), "{data}");
    assert!(
        !data["rotationKeys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == doomed_rotation.as_str()),
        "{data}"
    );
    assert_ne!(data["verificationMethods"]["atproto"], did_key.as_str());
    let restored = Restored::sign_in(&fresh.pds, &erin.handle, &erin.password).await;
    assert_eq!(restored.did, erin.did);
    assert_eq!(restored.records().await, before);
    assert_eq!(restored.blobs().await, BTreeSet::from([blob.clone()]));
    assert_eq!(restored.blob(&blob).await, picture("erin"));

    // She writes again there; the friend's node follows her to the new server.
    restored.post("moved without my old server").await;
    run(bed, friend, &["sync", "--once"]).await;
    let status = run_json(bed, friend, &["status", "--json"]).await;
    assert_eq!(
        status["repos"][0]["records"],
        before.len() as u64 + 1,
        "{status}"
    );
    // A restore run again now would undo her new post: it is refused, nothing changed.
    let out = p2pds_env(bed, friend, &args, &envs).await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("would undo"), "{said}");
    assert_eq!(restored.records().await.len(), before.len() + 1);
}

// The export alone (`p2pds export`, and what a restore uploads), on repos built offline.

const EXPORT_DID: &str = "did:plc:exportexportexportexportex";

fn export_post(repo: &mut p2pds::repo::build::RepoBuilder, i: u64, blob: Option<&str>) {
    let rkey = p2pds::repo::tid::format(1_700_000_000_000_000 + i * 1000, 0);
    let mut value = serde_json::json!({"$type": "app.bsky.feed.post", "text": format!("post {i}")});
    if let Some(blob) = blob {
        value["embed"] = serde_json::json!({
            "$type": "blob", "ref": {"$link": blob}, "mimeType": "image/png", "size": 3
        });
    }
    repo.put_json("app.bsky.feed.post", &rkey, &value);
}

/// The blocks of a CAR (its root checked), and the records a fresh store verifies in it.
fn export_check(car: &[u8], head: cid::Cid, key: &p2pds::crypto::PublicKey) -> (usize, i64) {
    let mut reader = CarReader::new(car).unwrap();
    assert_eq!(reader.roots(), [head]);
    let mut blocks = 0;
    while reader.next_block().unwrap().is_some() {
        blocks += 1;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.sqlite");
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    p2pds::store::schema::migrate(&mut conn, &path).unwrap();
    p2pds::store::add_repo(&conn, EXPORT_DID, None, None).unwrap();
    let outcome =
        p2pds::sync::ingest::ingest_car(&mut conn, EXPORT_DID, key, car, &mut |_| {}).unwrap();
    assert_eq!(outcome.commit, head.to_string());
    (blocks, outcome.records)
}

#[test]
fn export_streams_the_tree_of_the_current_or_a_kept_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    p2pds::store::schema::migrate(&mut conn, &path).unwrap();
    p2pds::store::add_repo(&conn, EXPORT_DID, None, None).unwrap();
    let key = p2pds::crypto::SigningKey::generate_k256();
    let blob = p2pds::repo::cid_for(p2pds::repo::RAW, b"png").to_string();
    let mut repo = p2pds::repo::build::RepoBuilder::new(EXPORT_DID, key.clone());
    for i in 0..300 {
        export_post(&mut repo, i, (i == 7).then_some(blob.as_str()));
    }
    let first = repo.build(&p2pds::repo::tid::format(1_700_000_000_000_000, 0));
    let ingest = |conn: &mut rusqlite::Connection, car: &[u8]| {
        p2pds::sync::ingest::ingest_car(conn, EXPORT_DID, &key.public_key(), car, &mut |_| {})
            .unwrap()
    };
    ingest(&mut conn, &first.car_bytes());
    for i in 300..400 {
        export_post(&mut repo, i, None);
    }
    repo.delete(
        "app.bsky.feed.post",
        &p2pds::repo::tid::format(1_700_000_000_007_000, 0),
    );
    let second = repo.build(&p2pds::repo::tid::format(1_700_000_000_100_000, 0));
    ingest(&mut conn, &second.diff_car_bytes(&first));

    let mut out = Vec::new();
    let report = p2pds::export::write_car(&conn, EXPORT_DID, &mut out).unwrap();
    assert_eq!(report.commit, second.commit_cid.to_string());
    assert_eq!(report.rev, second.rev);
    assert_eq!(
        (report.records, report.blocks),
        (399, 1 + second.blocks.len() as u64)
    );
    assert!(report.blob_refs.is_empty(), "{:?}", report.blob_refs);
    let (blocks, records) = export_check(&out, second.commit_cid, &key.public_key());
    assert_eq!((blocks as u64, records), (report.blocks, 399));

    // A kept state: the walk starts from its own commit.
    let mut out = Vec::new();
    let report = p2pds::export::write_state_car(&conn, EXPORT_DID, &first.rev, &mut out).unwrap();
    assert_eq!(report.commit, first.commit_cid.to_string());
    assert_eq!(report.records, 300);
    assert_eq!(report.blob_refs.iter().collect::<Vec<_>>(), [&blob]);
    let (blocks, records) = export_check(&out, first.commit_cid, &key.public_key());
    assert_eq!((blocks as u64, records), (report.blocks, 300));
    assert!(matches!(
        p2pds::export::write_state_car(&conn, EXPORT_DID, "3zzzzzzzzzzzz", Vec::new()),
        Err(p2pds::export::ExportError::Unknown(_))
    ));
}

#[test]
fn export_reports_a_missing_block_as_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    p2pds::store::schema::migrate(&mut conn, &path).unwrap();
    p2pds::store::add_repo(&conn, EXPORT_DID, None, None).unwrap();
    let key = p2pds::crypto::SigningKey::generate_k256();
    let mut repo = p2pds::repo::build::RepoBuilder::new(EXPORT_DID, key.clone());
    for i in 0..50 {
        export_post(&mut repo, i, None);
    }
    let built = repo.build_now();
    p2pds::sync::ingest::ingest_car(
        &mut conn,
        EXPORT_DID,
        &key.public_key(),
        &built.car_bytes()[..],
        &mut |_| {},
    )
    .unwrap();
    let (record, _) = built.blocks.last().unwrap();
    conn.execute("DELETE FROM blocks WHERE cid = ?1", [record.to_bytes()])
        .unwrap();
    let err = p2pds::export::write_car(&conn, EXPORT_DID, Vec::new()).unwrap_err();
    assert!(
        matches!(&err, p2pds::export::ExportError::Damaged(m) if m.contains(&record.to_string())),
        "{err}"
    );
}
