//! Friends as the source, end to end through the `p2pds` command: three nodes in one circle;
//! Alice's account lives on a PDS of its own. Bob's node (A) holds a newer copy of her account
//! than Carol's node (B); Alice's PDS stops; B's next backup of her fails against her server
//! and B catches up from A's node instead, verified against her key: the records B then holds
//! are the ones her PDS served before it stopped, and `p2pds status` says where they came from.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};

use crate::circles::post;
use crate::cli::assert_ok;
use crate::live::server_records;
use crate::pds::{self, Account};

/// One node: its data directory, the account signed in on it, and where handles resolve.
struct Node {
    dir: PathBuf,
    plc: String,
    /// The PDS that answers `resolveHandle` for this node's own handle.
    resolver: String,
    acct: Account,
}

impl Node {
    fn new(dir: &tempfile::TempDir, plc: &str, resolver: &str, acct: Account) -> Node {
        Node {
            dir: dir.path().to_path_buf(),
            plc: plc.to_string(),
            resolver: resolver.to_string(),
            acct,
        }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_p2pds"));
        cmd.arg("--data-dir")
            .arg(&self.dir)
            .args(["--plc-url", &self.plc, "--resolver-url", &self.resolver])
            .args(args)
            .env("P2PDS_PUBLISH_INTERVAL", "0s")
            .stdin(std::process::Stdio::null());
        cmd
    }

    async fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("running p2pds")
    }

    async fn run(&self, args: &[&str]) -> Output {
        let out = self.output(args).await;
        assert_ok(&out, args);
        out
    }

    async fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args).await;
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "p2pds {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    async fn login(&self) {
        let out = self
            .command(&[
                "login",
                &self.acct.handle,
                "--password-env",
                "P2PDS_TEST_PASSWORD",
            ])
            .env("P2PDS_TEST_PASSWORD", &self.acct.app_password)
            .output()
            .await
            .expect("running p2pds login");
        assert_ok(&out, &["login", &self.acct.handle]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&self.acct.did), "{text}");
    }

    /// This node's entry for `did` in `status --json`.
    async fn status_of(&self, did: &str) -> Value {
        let status = self.json(&["status", "--json"]).await;
        status["repos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["did"] == did)
            .cloned()
            .unwrap_or_else(|| panic!("{did} not backed up: {status}"))
    }

    /// The records this node holds for `did`: "collection/rkey" → CID.
    async fn records_of(&self, did: &str) -> BTreeMap<String, String> {
        let list = self.json(&["records", did, "--json"]).await;
        list["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    format!(
                        "{}/{}",
                        r["collection"].as_str().unwrap(),
                        r["rkey"].as_str().unwrap()
                    ),
                    r["cid"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// `p2pds serve` in the background, advertising its own address in its peer record.
    async fn serve(&self) -> (tokio::process::Child, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let child = self
            .command(&["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--endpoint", &endpoint])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let probe = format!("{endpoint}/xrpc/com.atproto.sync.getLatestCommit?did=did:plc:x");
        until(30, "the node's server to answer", || async {
            reqwest::get(&probe).await.is_ok()
        })
        .await;
        (child, endpoint)
    }
}

/// Waits (at most `secs`) until `check` holds.
async fn until<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {secs} s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_catches_up_from_a_friends_node_when_the_server_stops() {
    let bed = pds::shared().await;
    // Alice's PDS is her own: it stops when `server` is dropped.
    let server = bed.start_extra_pds().await.unwrap();
    let alice = server.create_account("alice").await.unwrap();
    let bob = bed.create_account("bob").await.unwrap();
    let carol = bed.create_account("carol").await.unwrap();
    post(&alice, 3).await;
    post(&bob, 2).await;
    post(&carol, 2).await;

    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Only Alice's PDS resolves her handle; every other name below is a DID.
    let owner = Node::new(&dirs[0], &bed.plc, &server.pds, alice.clone());
    let a = Node::new(&dirs[1], &bed.plc, &bed.pds, bob.clone());
    let b = Node::new(&dirs[2], &bed.plc, &bed.pds, carol.clone());
    let nodes = [&owner, &a, &b];
    for n in nodes {
        n.login().await;
    }
    let created = owner
        .json(&[
            "circle", "create", "--name", "Friends", "--member", &bob.did, "--member", &carol.did,
            "--json",
        ])
        .await;
    let uri = created["uri"].as_str().unwrap().to_string();
    for n in [&a, &b] {
        n.run(&["invitations", "--from", &alice.did]).await;
        n.run(&["circle", "accept", &uri]).await;
    }
    // Twice: the circle comes into force, then every duty's first copy is made.
    for _ in 0..2 {
        for n in nodes {
            n.run(&["sync", "--once"]).await;
        }
    }
    let (_, early_rev) = alice.latest_commit().await.unwrap();
    for n in [&a, &b] {
        let s = n.status_of(&alice.did).await;
        assert_eq!(s["rev"], early_rev.as_str(), "{s}");
    }

    // Alice writes more (new posts, a deletion, a profile); only A copies it.
    let posts = alice.list_records("app.bsky.feed.post").await.unwrap();
    let first = posts[0].0.rsplit('/').next().unwrap().to_string();
    post(&alice, 4).await;
    // A post with a picture: its image comes from Bob's node too.
    let image = alice
        .upload_blob(b"\x89PNG\r\n\x1a\n from a friend".to_vec(), "image/png")
        .await
        .unwrap();
    alice
        .create_record(
            "app.bsky.feed.post",
            json!({"$type": "app.bsky.feed.post", "text": "look", "createdAt": "2024-01-01T00:00:00Z",
                "embed": {"$type": "app.bsky.embed.images", "images": [{"alt": "", "image": image}]}}),
        )
        .await
        .unwrap();
    alice
        .delete_record("app.bsky.feed.post", &first)
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
    a.run(&["sync", "--once"]).await;
    let served = server_records(&alice).await;
    let (_, rev) = alice.latest_commit().await.unwrap();
    assert!(rev > early_rev);
    assert_eq!(a.status_of(&alice.did).await["rev"], rev.as_str());
    assert_eq!(a.records_of(&alice.did).await, served);
    let behind = b.records_of(&alice.did).await;
    assert_ne!(behind, served);
    assert_eq!(b.status_of(&alice.did).await["rev"], early_rev.as_str());

    // A serves what it holds and advertises where in Bob's peer record.
    let (_a_server, endpoint) = a.serve().await;
    let peer = bob.list_records("org.p2pds.peer").await.unwrap();
    assert!(
        peer.iter()
            .any(|(_, _, v)| v["endpoint"] == endpoint.as_str()),
        "Bob's peer record does not advertise {endpoint}: {peer:?}"
    );
    let latest: Value = reqwest::get(format!(
        "{endpoint}/xrpc/com.atproto.sync.getLatestCommit?did={}",
        alice.did
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(latest["rev"], rev.as_str(), "{latest}");

    // Alice's PDS stops (and stops answering at all).
    let health = format!("{}/xrpc/_health", server.pds);
    drop(server);
    until(60, "Alice's PDS to stop", || async {
        reqwest::get(&health).await.is_err()
    })
    .await;

    // B's backup of Alice fails against her server; B catches up from A's node.
    let started = std::time::Instant::now();
    let out = b.output(&["sync", "--once"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "B's sync with Alice's PDS down ({}, {:.1} s):\n{stderr}",
        out.status,
        started.elapsed().as_secs_f64()
    );
    // A backup failed (Alice's server): 1; anything else is not a sync's outcome.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}: {stderr}",
        out.status
    );
    assert!(stderr.contains("brought up to"), "{stderr}");

    let s = b.status_of(&alice.did).await;
    assert_eq!(s["rev"], rev.as_str(), "{s}");
    assert_eq!(s["caughtUpFrom"], bob.did.as_str(), "{s}");
    assert!(s["caughtUpAt"].is_string(), "{s}");
    // Its server still can't serve it: the copy says where it came from, the state says why.
    assert_eq!(s["state"], "error", "{s}");
    assert_eq!(s["errorCode"], "unreachable", "{s}");
    // What B holds is what Alice's PDS served before it stopped, the picture included.
    assert_eq!(b.records_of(&alice.did).await, served);
    assert_eq!(s["blobs"], 1, "{s}");
    assert!(stderr.contains("; 1 blobs)"), "{stderr}");
    // Every version B keeps of her verifies, the one from Bob's node too.
    let history = b.json(&["history", &alice.did, "--verify", "--json"]).await;
    assert_eq!(history["check"]["problems"], json!([]), "{history}");
    // Bob's node served honestly: no failed check of it.
    let db = rusqlite::Connection::open_with_flags(
        b.dir.join("p2pds.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let failed: i64 = db
        .query_row(
            "SELECT count(*) FROM verifications WHERE target = ?1 AND outcome = 'fail'",
            [&bob.did],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(failed, 0);

    // And the status says so, in words.
    let out = b.run(&["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("brought up to date from"), "{text}");
    assert!(
        text.contains(&format!("from {}'s node", bob.handle)),
        "{text}"
    );

    // B's copy then loses three of Alice's records while her server is still down: B's
    // self-check finds the damage, her server can't repair it, and Bob's node completes it.
    let lost = {
        let db = rusqlite::Connection::open(b.dir.join("p2pds.sqlite")).unwrap();
        let repo_id: i64 = db
            .query_row("SELECT id FROM repos WHERE did = ?1", [&alice.did], |r| {
                r.get(0)
            })
            .unwrap();
        let mut stmt = db
            .prepare("SELECT cid FROM records WHERE repo_id = ?1 ORDER BY collection, rkey LIMIT 3")
            .unwrap();
        let cids: Vec<Vec<u8>> = stmt
            .query_map([repo_id], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut lost = 0;
        for cid in &cids {
            lost += db
                .execute(
                    "DELETE FROM blocks WHERE repo_id = ?1 AND cid = ?2",
                    rusqlite::params![repo_id, cid],
                )
                .unwrap();
        }
        lost
    };
    assert_eq!(lost, 3);
    let round = b.json(&["verify", "--once", "--json"]).await;
    let about_alice = |key: &str| {
        round[key]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["did"] == alice.did.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("no {key} of Alice's copy in {round}"))
    };
    let checked = about_alice("selfChecks");
    assert_eq!(checked["outcome"], "damaged", "{checked}");
    assert!(checked["repairError"].is_string(), "{checked}");
    let repair = about_alice("historyRepairs");
    assert!(repair["restored"].as_u64().unwrap() >= 3, "{repair}");
    assert_eq!(repair["missing"], 0, "{repair}");
    // Whole again, verified: the next self-check passes and every version still verifies.
    let round = b.json(&["verify", "--once", "--json"]).await;
    let checked = round["selfChecks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["did"] == alice.did.as_str())
        .cloned()
        .unwrap();
    assert_eq!(checked["outcome"], "ok", "{checked}");
    assert_eq!(b.records_of(&alice.did).await, served);
    let history = b.json(&["history", &alice.did, "--verify", "--json"]).await;
    assert_eq!(history["check"]["problems"], json!([]), "{history}");
}
