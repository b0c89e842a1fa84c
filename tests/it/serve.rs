//! Serving what a node holds: RASL for peers and sync reads for owners, and
//! nothing else. The account comes from the reference PDS; the node's server
//! runs in-process on loopback.

use std::net::SocketAddr;
use std::sync::Arc;

use p2pds::identity::Resolver;
use p2pds::serve::{self, ServeConfig};
use p2pds::store::{self, Store};
use p2pds::sync::Syncer;
use serde_json::{json, Value};

use crate::pds;

struct Served {
    _dir: tempfile::TempDir,
    url: String,
    did: String,
    blobs: Vec<String>,
    commit: String,
    rev: String,
}

async fn node_serving(config: ServeConfig) -> Served {
    let bed = pds::shared().await;
    let acct = bed.create_account("serve").await.unwrap();
    for i in 0..20 {
        acct.create_record("app.bsky.feed.post", json!({"$type": "app.bsky.feed.post", "text": format!("p{i}"), "createdAt": "2024-01-01T00:00:00Z"}))
            .await
            .unwrap();
    }
    let blob = acct
        .upload_blob(b"<script>alert(1)</script>".to_vec(), "image/png")
        .await
        .unwrap();
    acct.put_record(
        "org.example.doc",
        "one",
        json!({"$type": "org.example.doc", "file": blob}),
    )
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("p2pds.sqlite")).unwrap();
    let http = reqwest::Client::new();
    let syncer = Syncer::new(
        store.clone(),
        http.clone(),
        Arc::new(Resolver::new(http, &bed.plc, None)),
        dir.path(),
    );
    let did = acct.did.clone();
    store
        .write(move |c| store::add_repo(c, &did, None, None))
        .await
        .unwrap()
        .unwrap();
    syncer.sync_repo(&acct.did, &|_| {}).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = serve::router(store, syncer.blob_dir(), config);
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    let (commit, rev) = acct.latest_commit().await.unwrap();
    Served {
        _dir: dir,
        url,
        did: acct.did.clone(),
        blobs: acct.list_blobs().await.unwrap(),
        commit,
        rev,
    }
}

fn assert_safe_headers(resp: &reqwest::Response) {
    assert_eq!(
        resp.headers()["content-security-policy"],
        "default-src 'none'; sandbox"
    );
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn rasl_serves_held_blocks_and_blobs_with_safe_headers() {
    let s = node_serving(ServeConfig::default()).await;
    let http = reqwest::Client::new();
    // The commit block: the bytes hash to the CID asked for.
    let resp = http
        .get(format!("{}/.well-known/rasl/{}", s.url, s.commit))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_safe_headers(&resp);
    let bytes = resp.bytes().await.unwrap();
    let cid: cid::Cid = s.commit.parse().unwrap();
    assert_eq!(p2pds::repo::cid_for(cid.codec(), &bytes), cid);
    // HEAD answers without a body.
    let head = http
        .head(format!("{}/.well-known/rasl/{}", s.url, s.commit))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.bytes().await.unwrap().is_empty());
    // A blob, served as inert bytes whatever it contains.
    let blob = &s.blobs[0];
    let resp = http
        .get(format!("{}/.well-known/rasl/{blob}", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_safe_headers(&resp);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        &resp.bytes().await.unwrap()[..],
        b"<script>alert(1)</script>"
    );
}

#[tokio::test]
async fn adversarial_requests_are_refused() {
    let s = node_serving(ServeConfig::default()).await;
    let http = reqwest::Client::new();
    let status = |path: &str| {
        let http = http.clone();
        let url = format!("{}{path}", s.url);
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    // Non-CIDs (encoded traversal among them) never reach the store.
    for path in [
        "/.well-known/rasl/..%2F..%2Fetc%2Fpasswd",
        "/.well-known/rasl/not-a-cid",
        "/.well-known/rasl/QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
    ] {
        assert_eq!(status(path).await, 400, "{path}");
    }
    // Dot segments are resolved before routing (by the client or the router):
    // whatever they resolve to, nothing outside the routes is served.
    for path in [
        "/.well-known/rasl/../../etc/passwd",
        "/.well-known/rasl/%2e%2e",
        "/",
        "/.well-known/rasl/",
        "/p2pds.sqlite",
        "/blobs/",
        "/xrpc/com.atproto.sync.listRepos",
    ] {
        assert_eq!(status(path).await, 404, "{path}");
    }
    // A block this node does not hold (e.g. of a repo it does not replicate).
    let other = p2pds::repo::cid_for_cbor(b"\xa1aaab").to_string();
    assert_eq!(status(&format!("/.well-known/rasl/{other}")).await, 404);
    // Accounts not replicated here.
    assert_eq!(
        status("/xrpc/com.atproto.sync.getRepo?did=did:plc:nobodyhere").await,
        400
    );
    // Ranges, huge or not, are refused; writes are refused.
    let resp = http
        .get(format!("{}/.well-known/rasl/{}", s.url, s.commit))
        .header("Range", "bytes=0-99999999999")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 416);
    let resp = http
        .post(format!("{}/.well-known/rasl/{}", s.url, s.commit))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
}

#[tokio::test]
async fn sync_reads_give_back_a_verifiable_copy() {
    let s = node_serving(ServeConfig::default()).await;
    let http = reqwest::Client::new();
    let latest: Value = http
        .get(format!(
            "{}/xrpc/com.atproto.sync.getLatestCommit?did={}",
            s.url, s.did
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(latest, json!({"cid": s.commit, "rev": s.rev}));

    // getRepo: a CAR that a fresh node ingests with full verification.
    let car = http
        .get(format!(
            "{}/xrpc/com.atproto.sync.getRepo?did={}",
            s.url, s.did
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let bed = pds::shared().await;
    let doc = Resolver::new(reqwest::Client::new(), &bed.plc, None)
        .resolve_did(&s.did, false)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut conn = rusqlite::Connection::open(dir.path().join("copy.sqlite")).unwrap();
    store::schema::migrate(&mut conn, &dir.path().join("copy.sqlite")).unwrap();
    store::add_repo(&conn, &s.did, None, None).unwrap();
    let outcome = p2pds::sync::ingest::ingest_car(
        &mut conn,
        &s.did,
        &doc.signing_key.clone().unwrap(),
        &car[..],
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(outcome.records, 21);
    assert_eq!(outcome.commit, s.commit);

    // getRecord: a proof that verifies against the account's key.
    let proof = http
        .get(format!(
            "{}/xrpc/com.atproto.sync.getRecord?did={}&collection=org.example.doc&rkey=one",
            s.url, s.did
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let record = p2pds::repo::proof::verify_record(
        &proof,
        &s.did,
        &doc.signing_key.unwrap(),
        "org.example.doc",
        "one",
    )
    .unwrap();
    assert_eq!(
        record.value.unwrap()["file"]["ref"]["$link"],
        s.blobs[0].as_str()
    );

    // getBlob: the bytes, for the right account only.
    let resp = http
        .get(format!(
            "{}/xrpc/com.atproto.sync.getBlob?did={}&cid={}",
            s.url, s.did, s.blobs[0]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_safe_headers(&resp);
    let resp = http
        .get(format!(
            "{}/xrpc/com.atproto.sync.getBlob?did=did:plc:someoneelse&cid={}",
            s.url, s.blobs[0]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn each_client_has_a_bounded_request_rate() {
    let s = node_serving(ServeConfig {
        requests_per_second: 1.0,
        burst: 10.0,
    })
    .await;
    let http = reqwest::Client::new();
    let mut codes = Vec::new();
    for _ in 0..30 {
        let resp = http
            .get(format!("{}/.well-known/rasl/{}", s.url, s.commit))
            .send()
            .await
            .unwrap();
        let code = resp.status().as_u16();
        if code == 429 {
            // Well-behaved clients (a verifying peer) are told when to come back.
            assert_eq!(resp.headers()["retry-after"], "1");
        }
        codes.push(code);
    }
    let ok = codes.iter().filter(|c| **c == 200).count();
    let limited = codes.iter().filter(|c| **c == 429).count();
    assert!((10..=12).contains(&ok), "{codes:?}");
    assert_eq!(ok + limited, 30);
}
