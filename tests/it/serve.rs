//! Serving what a node holds: RASL for peers and sync reads for owners, and
//! nothing else. The account comes from the reference PDS; the node's server
//! runs in-process on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use p2pds::identity::Resolver;
use p2pds::serve::{self, ServeConfig};
use p2pds::store::{self, Store};
use p2pds::sync::Syncer;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    tokio::spawn(serve::serve(
        listener,
        store,
        syncer.blob_dir(),
        config,
        std::future::pending(),
    ));
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
        "/xrpc/com.atproto.sync.notifyOfUpdate",
        "/xrpc/com.atproto.repo.listRecords",
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
        ..ServeConfig::default()
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

/// A node serving one account built offline (no PDS): `records` posts of about `text_bytes`
/// each, and a way to stop the server.
struct Built {
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    url: String,
    did: String,
    key: p2pds::crypto::PublicKey,
    records: i64,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn built_node(records: u64, text_bytes: usize, config: ServeConfig) -> Built {
    use p2pds::repo::{build::RepoBuilder, tid};
    let did = "did:plc:servebuiltservebuiltserv".to_string();
    let key = p2pds::crypto::SigningKey::generate_k256();
    let mut repo = RepoBuilder::new(&did, key.clone());
    for i in 0..records {
        let text = format!("post {i} ").repeat(text_bytes / 8 + 1);
        repo.put_json(
            "app.bsky.feed.post",
            &tid::format(1_700_000_000_000_000 + i * 1000, 0),
            &json!({"$type": "app.bsky.feed.post", "text": text, "createdAt": "2024-01-01T00:00:00Z"}),
        );
    }
    let car = repo.build(&tid::now(0)).car_bytes();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("p2pds.sqlite")).unwrap();
    let (d, public) = (did.clone(), key.public_key());
    store
        .write(move |c| {
            store::add_repo(c, &d, None, None).unwrap();
            p2pds::sync::ingest::ingest_car(c, &d, &public, &car[..], &mut |_| {}).unwrap()
        })
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve::serve(
        listener,
        store,
        store::blob_dir(dir.path()),
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    Built {
        _dir: dir,
        addr,
        url: format!("http://{addr}"),
        did,
        key: key.public_key(),
        records: records as i64,
        stop: Some(stop),
        server,
    }
}

/// Reads (and drops) what the server sends until it closes the connection; how long that took,
/// or `None` if it was still open after `limit`.
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(limit, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// A complete CAR of the whole account: a fresh store ingests it with full verification.
fn assert_complete_car(b: &Built, car: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.sqlite");
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    store::schema::migrate(&mut conn, &path).unwrap();
    store::add_repo(&conn, &b.did, None, None).unwrap();
    let outcome =
        p2pds::sync::ingest::ingest_car(&mut conn, &b.did, &b.key, car, &mut |_| {}).unwrap();
    assert_eq!(outcome.records, b.records);
}

#[tokio::test]
async fn clients_that_stall_are_dropped_and_shutdown_still_completes() {
    let config = ServeConfig {
        header_read_timeout: Duration::from_millis(500),
        ..ServeConfig::default()
    };
    let mut b = built_node(3, 10, config).await;
    // Half a request, then nothing.
    let mut half = TcpStream::connect(b.addr).await.unwrap();
    half.write_all(
        format!(
            "GET /xrpc/com.atproto.sync.getLatestCommit?did={} HTTP/1.1\r\nHost: x\r\n",
            b.did
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let took = closed_within(&mut half, Duration::from_secs(5))
        .await
        .expect("a half-sent request is dropped");
    assert!(took >= Duration::from_millis(400), "{took:?}");
    // A connection that never sends a request.
    let mut silent = TcpStream::connect(b.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(5))
        .await
        .is_some());
    // A kept-alive connection left idle after its answer.
    let mut idle = TcpStream::connect(b.addr).await.unwrap();
    idle.write_all(
        format!(
            "GET /xrpc/com.atproto.sync.getLatestCommit?did={} HTTP/1.1\r\nHost: x\r\n\r\n",
            b.did
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(5))
        .await
        .is_some());

    // Shutdown with a stalled client connected: the server still stops.
    let mut stalled = TcpStream::connect(b.addr).await.unwrap();
    stalled.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let _ = b.stop.take().unwrap().send(());
    tokio::time::timeout(Duration::from_secs(5), &mut b.server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(b.addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn large_answers_are_bounded_and_a_client_that_stops_reading_frees_its_slot() {
    let config = ServeConfig {
        large_answers: 1,
        large_answer_wait: Duration::ZERO,
        send_timeout: Duration::from_secs(1),
        ..ServeConfig::default()
    };
    // About 12 MB: more than the kernel buffers between a server and a client that stops
    // reading, so the server's answer is stuck mid-way.
    let b = built_node(3000, 4000, config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(b.addr).await.unwrap();
    stuck
        .write_all(
            format!(
                "GET /xrpc/com.atproto.sync.getRepo?did={} HTTP/1.1\r\nHost: x\r\n\r\n",
                b.did
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The only slot is taken: told to come back, in XRPC JSON.
    let http = reqwest::Client::new();
    let get_repo = format!("{}/xrpc/com.atproto.sync.getRepo?did={}", b.url, b.did);
    let started = Instant::now();
    let resp = http.get(&get_repo).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_safe_headers(&resp);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "ServerBusy");
    assert!(body["message"].is_string());

    // The stalled client is dropped after the send timeout; its slot serves the next one.
    let car = loop {
        let resp = http.get(&get_repo).send().await.unwrap();
        if resp.status() == 200 {
            break resp.bytes().await.unwrap();
        }
        assert_eq!(resp.status(), 503);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(car.len() > 10_000_000, "{}", car.len());
    assert_complete_car(&b, &car);
    drop(stuck);
}

#[tokio::test]
async fn every_refusal_is_xrpc_json() {
    let b = built_node(3, 10, ServeConfig::default()).await;
    let http = reqwest::Client::new();
    let did = &b.did;
    let sync = "/xrpc/com.atproto.sync";
    let cases: Vec<(reqwest::Method, String, u16, &str)> = vec![
        (
            reqwest::Method::GET,
            format!("{sync}.getRepo"),
            400,
            "InvalidRequest",
        ),
        (
            reqwest::Method::GET,
            format!("{sync}.getRepo?did="),
            400,
            "InvalidRequest",
        ),
        (
            reqwest::Method::GET,
            format!("{sync}.getRepo?did={did}&did=did:plc:other"),
            400,
            "InvalidRequest",
        ),
        (
            reqwest::Method::GET,
            format!("{sync}.getRepo?did={did}&did={did}"),
            400,
            "InvalidRequest",
        ),
        (
            reqwest::Method::GET,
            format!("{sync}.getLatestCommit?dids={did}"),
            400,
            "InvalidRequest",
        ),
        (
            reqwest::Method::GET,
            format!("{sync}.getRecord?did={did}&collection=app.bsky.feed.post"),
            400,
            "InvalidRequest",
        ),
        (
            reqwest::Method::GET,
            format!("{sync}.getBlob?did={did}"),
            400,
            "InvalidRequest",
        ),
        (
            reqwest::Method::GET,
            format!("{sync}.getBlob?did={did}&cid=x&cid=y"),
            400,
            "InvalidRequest",
        ),
        (
            reqwest::Method::GET,
            format!("{sync}.getRepo?did=did:plc:nobodyhere"),
            400,
            "RepoNotFound",
        ),
        (
            reqwest::Method::GET,
            "/.well-known/rasl/%ff%fe".into(),
            400,
            "InvalidCid",
        ),
        (
            reqwest::Method::GET,
            format!("{sync}.notifyOfUpdate"),
            404,
            "NotFound",
        ),
        (
            reqwest::Method::DELETE,
            format!("{sync}.getRepo?did={did}"),
            405,
            "MethodNotAllowed",
        ),
        (
            reqwest::Method::from_bytes(b"BREW").unwrap(),
            format!("{sync}.getRepo?did={did}"),
            405,
            "MethodNotAllowed",
        ),
        (
            reqwest::Method::OPTIONS,
            "/".into(),
            405,
            "MethodNotAllowed",
        ),
    ];
    for (method, path, status, name) in cases {
        let resp = http
            .request(method.clone(), format!("{}{path}", b.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{method} {path}");
        assert_safe_headers(&resp);
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "{method} {path}"
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], name, "{method} {path}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    // The same calls, asked properly, answer.
    let resp = http
        .get(format!("{}{sync}.getRepo?did={did}", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_complete_car(&b, &resp.bytes().await.unwrap());
}

/// A connection from `local` that asks for the whole repo and then reads nothing: with a tiny
/// receive buffer and an answer larger than the kernel buffers, its answer (and slot) is stuck.
async fn stuck_get_repo(b: &Built, local: [u8; 4]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(std::net::SocketAddr::from((local, 0))).unwrap();
    let mut stuck = socket.connect(b.addr).await.unwrap();
    stuck
        .write_all(
            format!(
                "GET /xrpc/com.atproto.sync.getRepo?did={} HTTP/1.1\r\nHost: x\r\n\r\n",
                b.did
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stuck
}

/// An HTTP client whose connections come from `local` (another client, to the server).
fn client_from(local: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(local))
        .build()
        .unwrap()
}

async fn assert_busy(resp: reqwest::Response) {
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_safe_headers(&resp);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "ServerBusy", "{body}");
    assert!(body["message"].is_string());
}

#[tokio::test]
async fn one_client_cannot_take_every_slot_and_requests_at_once_are_bounded() {
    let config = ServeConfig {
        large_answers: 2,
        large_answer_wait: Duration::from_secs(2),
        concurrent_requests: 2,
        ..ServeConfig::default()
    };
    // About 12 MB: more than the kernel buffers (see the test above).
    let b = built_node(3000, 4000, config).await;
    let get_repo = format!("{}/xrpc/com.atproto.sync.getRepo?did={}", b.url, b.did);
    let latest = format!(
        "{}/xrpc/com.atproto.sync.getLatestCommit?did={}",
        b.url, b.did
    );
    let _a = stuck_get_repo(&b, [127, 0, 0, 1]).await;

    // Its address has its share (half of the 2 slots): told at once to come back...
    let started = Instant::now();
    assert_busy(
        client_from([127, 0, 0, 1])
            .get(&get_repo)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(1), "no wait");
    // ... while another client is served the free slot.
    let resp = client_from([127, 0, 0, 2])
        .get(&get_repo)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_complete_car(&b, &resp.bytes().await.unwrap());

    // Both slots stuck (two clients); two more clients wait for one, which is all the
    // requests this server works on at once: a light request is told to come back.
    let _d = stuck_get_repo(&b, [127, 0, 0, 2]).await;
    let waiting: Vec<_> = [[127, 0, 0, 3], [127, 0, 0, 4]]
        .into_iter()
        .map(|ip| tokio::spawn(client_from(ip).get(&get_repo).send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = client_from([127, 0, 0, 5]);
    assert_busy(other.get(&latest).send().await.unwrap()).await;
    for w in waiting {
        assert_busy(w.await.unwrap().unwrap()).await;
    }
    // Once they are answered, light requests are served again.
    let resp = other.get(&latest).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_client_that_reads_slowly_but_steadily_is_cut_off_and_frees_its_slot() {
    let config = ServeConfig {
        large_answers: 1,
        large_answer_wait: Duration::ZERO,
        // Well past the test: the slow client is never stalled that long.
        send_timeout: Duration::from_secs(60),
        answer_time_floor: Duration::from_secs(1),
        answer_min_rate: 512 * 1024,
        ..ServeConfig::default()
    };
    let b = built_node(3000, 4000, config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(b.addr).await.unwrap();
    slow.write_all(
        format!(
            "GET /xrpc/com.atproto.sync.getRepo?did={} HTTP/1.1\r\nHost: x\r\n\r\n",
            b.did
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    // About 50 KB/s, steadily: a little every 20 ms.
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        let mut read = 0usize;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some((read, started.elapsed())),
                Ok(Ok(n)) => read += n,
                Err(_) => return None,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let http = reqwest::Client::new();
    let get_repo = format!("{}/xrpc/com.atproto.sync.getRepo?did={}", b.url, b.did);
    assert_busy(http.get(&get_repo).send().await.unwrap()).await;

    let (read, took) = reader.await.unwrap().expect("the slow client is cut off");
    assert!(
        took >= Duration::from_secs(1),
        "not before the floor: {took:?}"
    );
    assert!(took < Duration::from_secs(25), "{took:?}");
    assert!(read < 10_000_000, "it was cut off before the end: {read}");
    // Its slot serves the next client, which takes the answer fast enough to get it whole.
    let car = loop {
        let resp = http.get(&get_repo).send().await.unwrap();
        if resp.status() == 200 {
            break resp.bytes().await.unwrap();
        }
        assert_eq!(resp.status(), 503);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_complete_car(&b, &car);
}

/// An HTTP/2 connection without TLS (prior knowledge) to `b`; the task that drives it ends
/// when the server closes it.
async fn h2c(
    b: &Built,
) -> (
    hyper::client::conn::http2::SendRequest<axum::body::Body>,
    tokio::task::JoinHandle<()>,
) {
    let stream = TcpStream::connect(b.addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let driven = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, driven)
}

async fn h2_get(
    send: &mut hyper::client::conn::http2::SendRequest<axum::body::Body>,
    url: &str,
) -> (hyper::http::response::Parts, bytes::Bytes) {
    send.ready().await.unwrap();
    let req = hyper::Request::get(url)
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(axum::body::Body::new(body), usize::MAX)
        .await
        .unwrap();
    (parts, bytes)
}

#[tokio::test]
async fn http2_without_tls_is_served_with_the_same_limits() {
    let config = ServeConfig {
        header_read_timeout: Duration::from_millis(500),
        ..ServeConfig::default()
    };
    let b = built_node(300, 100, config).await;
    let (mut send, driven) = h2c(&b).await;
    let latest = format!(
        "{}/xrpc/com.atproto.sync.getLatestCommit?did={}",
        b.url, b.did
    );
    let (parts, body) = h2_get(&mut send, &latest).await;
    assert_eq!(parts.version, hyper::Version::HTTP_2);
    assert_eq!(parts.status, 200);
    assert_eq!(
        parts.headers["content-security-policy"],
        "default-src 'none'; sandbox"
    );
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(body["rev"].is_string(), "{body}");
    // Refusals are XRPC JSON here too.
    let (parts, body) = h2_get(&mut send, &format!("{}/p2pds.sqlite", b.url)).await;
    assert_eq!(parts.status, 404);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "NotFound");
    // Two whole repos at once on one connection. The idle time is counted from before them,
    // so a slow machine between their end and the wait below can't make it look short.
    let started = Instant::now();
    let get_repo = format!("{}/xrpc/com.atproto.sync.getRepo?did={}", b.url, b.did);
    let mut other = send.clone();
    let (one, two) = tokio::join!(h2_get(&mut send, &get_repo), h2_get(&mut other, &get_repo));
    for (parts, car) in [one, two] {
        assert_eq!(parts.status, 200);
        assert_complete_car(&b, &car);
    }
    // Left idle (the client still holding it open), the connection is closed by the server.
    tokio::time::timeout(Duration::from_secs(5), driven)
        .await
        .expect("an idle HTTP/2 connection is closed")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(send.is_closed() && other.is_closed());

    // Half the HTTP/2 preface, then nothing: closed as a half-sent request is.
    let mut half = TcpStream::connect(b.addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let took = closed_within(&mut half, Duration::from_secs(5))
        .await
        .expect("a half-sent preface is dropped");
    assert!(took >= Duration::from_millis(400), "{took:?}");
}

#[tokio::test]
async fn an_http2_client_that_never_opens_its_window_is_cut_off_and_frees_its_slot() {
    let config = ServeConfig {
        large_answers: 1,
        large_answer_wait: Duration::ZERO,
        answer_time_floor: Duration::from_secs(1),
        ..ServeConfig::default()
    };
    let b = built_node(300, 100, config).await;
    // A window of 0: the server may send headers, never a byte of the body. Nothing is even
    // written, so the send timeout never starts.
    let stream = TcpStream::connect(b.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(0)
            .handshake::<_, axum::body::Body>(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let driven = tokio::spawn(async move {
        let _ = conn.await;
    });
    let get_repo = format!("{}/xrpc/com.atproto.sync.getRepo?did={}", b.url, b.did);
    let req = hyper::Request::get(&get_repo)
        .body(axum::body::Body::empty())
        .unwrap();
    let started = Instant::now();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let http = reqwest::Client::new();
    assert_busy(http.get(&get_repo).send().await.unwrap()).await;

    tokio::time::timeout(Duration::from_secs(10), driven)
        .await
        .expect("the stalled connection is cut off")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    let car = loop {
        let resp = http.get(&get_repo).send().await.unwrap();
        if resp.status() == 200 {
            break resp.bytes().await.unwrap();
        }
        assert_eq!(resp.status(), 503);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_complete_car(&b, &car);
    drop(resp);
}
