//! Peer verification with three nodes on loopback: three data directories, three `p2pds serve`
//! processes, one reference PDS with three accounts, driven through the `p2pds` command.
//!
//! - All honest: every check passes and the three nodes' compliance reports are byte-identical.
//! - Carol's node loses half of Bob's blocks: the others see her degraded, then at risk; her own
//!   self-check finds and repairs it, and the next checks pass.
//! - Carol's endpoint relays the PDS instead of serving what she holds: caught by block sampling
//!   (blocks of records Bob deleted since, which his PDS no longer has).
//! - Carol advertises no endpoint: she is checked through record challenges; an answer passes,
//!   no answer before the deadline fails.
//! - Carol's node stops: after the grace period she is failed on the others' reports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;

use axum::extract::{Path as AxPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::circles::{login, post};
use crate::cli::assert_ok;
use crate::pds::{self, Account, TestBed};

/// One node: its data directory and the account signed in on it.
struct Node<'a> {
    bed: &'a TestBed,
    dir: PathBuf,
    acct: Account,
}

impl Node<'_> {
    async fn output(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_p2pds"));
        cmd.arg("--data-dir")
            .arg(&self.dir)
            .args(["--plc-url", &self.bed.plc, "--resolver-url", &self.bed.pds])
            .args(args)
            .env("P2PDS_PUBLISH_INTERVAL", "0s")
            .stdin(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().await.expect("running p2pds")
    }

    async fn run(&self, args: &[&str]) -> Output {
        let out = self.output(args, &[]).await;
        assert_ok(&out, args);
        out
    }

    async fn json_env(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let out = self.output(args, env).await;
        assert_ok(&out, args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "p2pds {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    async fn json(&self, args: &[&str]) -> Value {
        self.json_env(args, &[]).await
    }

    /// `verify --once --json`, optionally for one peer only.
    async fn verify(&self, peer: Option<&Node<'_>>) -> Value {
        match peer {
            Some(p) => {
                self.json(&["verify", "--once", "--json", "--peer", &p.acct.did])
                    .await
            }
            None => self.json(&["verify", "--once", "--json"]).await,
        }
    }

    async fn compliance(&self, uri: &str, at: &str) -> (Vec<u8>, Value) {
        let out = self
            .output(&["compliance", uri, "--json", "--at", at], &[])
            .await;
        assert_ok(&out, &["compliance", uri]);
        let v = serde_json::from_slice(&out.stdout).unwrap();
        (out.stdout, v)
    }

    /// `p2pds serve` in the background, advertising its own address.
    async fn serve(&self) -> (tokio::process::Child, String) {
        let port = free_port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_p2pds"))
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--plc-url", &self.bed.plc, "--resolver-url", &self.bed.pds])
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--endpoint", &endpoint])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_for(&format!(
            "{endpoint}/xrpc/com.atproto.sync.getLatestCommit?did=did:plc:x"
        ))
        .await;
        (child, endpoint)
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn wait_for(url: &str) {
    for _ in 0..100 {
        if reqwest::get(url).await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{url} never answered");
}

/// The results of a round about `target`'s copy of `subject`.
fn results_about<'v>(round: &'v Value, target: &str, subject: &str) -> Vec<&'v Value> {
    round["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["target"] == target && r["subject"] == subject)
        .collect()
}

fn node_state(report: &Value, did: &str) -> String {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["member"] == did)
        .unwrap_or_else(|| panic!("{did} not in {report}"))["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `member`'s copy of `subject` in a compliance report.
fn copy_of(report: &Value, member: &str, subject: &str) -> Value {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["member"] == member)
        .and_then(|n| {
            n["copies"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["subject"] == subject)
                .cloned()
        })
        .unwrap_or_else(|| panic!("no copy of {subject} by {member} in {report}"))
}

fn in_a_moment() -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Three accounts with posts, three nodes signed in, and Alice's circle with Bob and Carol
/// accepted by all; every node has synced twice (so each holds the others' copies and has
/// published its status). Returns the nodes and the circle's URI.
async fn circle_of_three<'a>(
    bed: &'a TestBed,
    dirs: &[tempfile::TempDir],
    extra: &[&str],
) -> (Node<'a>, Node<'a>, Node<'a>, String) {
    let alice = bed.create_account("alice").await.unwrap();
    let bob = bed.create_account("bob").await.unwrap();
    let carol = bed.create_account("carol").await.unwrap();
    for (acct, n) in [(&alice, 3), (&bob, 12), (&carol, 4)] {
        post(acct, n).await;
    }
    let node = |i: usize, acct: Account| Node {
        bed,
        dir: dirs[i].path().to_path_buf(),
        acct,
    };
    let (a, b, c) = (node(0, alice), node(1, bob), node(2, carol));
    for n in [&a, &b, &c] {
        login(bed, &n.dir, &n.acct).await;
    }
    let mut args = vec![
        "circle",
        "create",
        "--name",
        "Checks",
        "--member",
        &b.acct.handle,
        "--member",
        &c.acct.handle,
        "--json",
    ];
    args.extend_from_slice(extra);
    let created = a.json(&args).await;
    let uri = created["uri"].as_str().unwrap().to_string();
    for n in [&b, &c] {
        n.run(&["invitations", "--from", &a.acct.handle]).await;
        n.run(&["circle", "accept", &uri]).await;
    }
    for _ in 0..2 {
        for n in [&a, &b, &c] {
            n.run(&["sync", "--once"]).await;
        }
    }
    (a, b, c, uri)
}

#[tokio::test]
async fn three_nodes_check_each_other() {
    let bed = pds::shared().await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b, c, uri) = circle_of_three(
        bed,
        &dirs,
        &["--recovery-grace", "0s", "--layers", "0,1,2,3"],
    )
    .await;
    let (_sa, _ea) = a.serve().await;
    let (_sb, _eb) = b.serve().await;
    let (mut carol_server, carol_endpoint) = c.serve().await;
    let nodes = [&a, &b, &c];

    // All honest: every check of every copy passes.
    let mut checked = Vec::new();
    for n in nodes {
        let round = n.verify(None).await;
        assert!(round["warnings"].as_array().unwrap().is_empty(), "{round}");
        let results = round["results"].as_array().unwrap();
        assert!(!results.is_empty(), "{round}");
        for r in results {
            assert_eq!(r["outcome"], "pass", "{r}");
            assert_eq!(r["via"], "endpoint", "{r}");
            assert_eq!(r["verifier"], n.acct.did.as_str());
            checked.push((
                r["target"].as_str().unwrap().to_string(),
                r["subject"].as_str().unwrap().to_string(),
                r["layer"].as_u64().unwrap(),
            ));
        }
        assert!(round["selfChecks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["outcome"] == "ok"));
    }
    // Every member's copy of every other member's account, with layers 0, 1, 2 and 3.
    checked.sort();
    checked.dedup();
    assert_eq!(checked.len(), 6 * 4, "{checked:?}");
    // The results are public: each node's status record carries its own.
    for n in nodes {
        let statuses = n
            .acct
            .list_records("org.p2pds.policy.status")
            .await
            .unwrap();
        let (_, _, status) = &statuses[0];
        let v = status["verifications"].as_array().unwrap();
        assert!(!v.is_empty(), "{status}");
        assert!(v.iter().all(|r| r["outcome"] == "pass"));
    }
    // The same public inputs: byte-identical reports on all three nodes.
    let at = in_a_moment();
    let (ra, report) = a.compliance(&uri, &at).await;
    let (rb, _) = b.compliance(&uri, &at).await;
    let (rc, _) = c.compliance(&uri, &at).await;
    assert_eq!(ra, rb);
    assert_eq!(ra, rc);
    assert_eq!(report["state"], "ok", "{report}");
    for n in nodes {
        assert_eq!(node_state(&report, &n.acct.did), "ok", "{report}");
    }

    // Carol's node loses half of Bob's blocks.
    let store = c.dir.join("p2pds.sqlite");
    {
        let db = rusqlite::Connection::open(&store).unwrap();
        let lost = db
            .execute(
                "DELETE FROM blocks WHERE id % 2 = 0 AND repo_id =
                 (SELECT id FROM repos WHERE did = ?1)",
                [&b.acct.did],
            )
            .unwrap();
        assert!(lost > 5, "{lost}");
    }
    // Whoever checks Carol's copy of Bob's account sees it fail, three rounds in a row.
    let verifiers: Vec<&Node> = [&a, &b].into_iter().collect();
    let mut states = Vec::new();
    for round in 0..3 {
        let mut failed = false;
        for v in &verifiers {
            let r = v.verify(Some(&c)).await;
            for x in results_about(&r, &c.acct.did, &b.acct.did) {
                if x["outcome"] == "fail" {
                    failed = true;
                }
                // The whole-copy check says exactly how much is missing.
                if x["layer"] == 2 {
                    assert_eq!(x["outcome"], "fail", "{x}");
                    assert!(
                        x["reason"].as_str().unwrap().contains("the copy lacks"),
                        "{x}"
                    );
                    // (Both may be 0: a tree node the checker does not hold either, missing
                    // on Carol's side, hides what is below it.)
                    assert!(x["needs"]["records"].is_u64(), "{x}");
                    assert!(x["needs"]["bytes"].is_u64(), "{x}");
                }
            }
        }
        assert!(
            failed,
            "round {round}: nobody saw Carol's damaged copy fail"
        );
        let (_, report) = a.compliance(&uri, &in_a_moment()).await;
        let (_, seen_by_bob) = b.compliance(&uri, &in_a_moment()).await;
        assert_eq!(
            node_state(&report, &c.acct.did),
            node_state(&seen_by_bob, &c.acct.did)
        );
        states.push(node_state(&report, &c.acct.did));
        // The report says per copy what it needs to be whole, from the published results.
        let needs = copy_of(&report, &c.acct.did, &b.acct.did)["needs"].clone();
        assert!(needs["records"].is_u64(), "{report}");
        assert!(needs["bytes"].is_u64(), "{report}");
    }
    assert_eq!(states, ["degraded", "degraded", "at-risk"]);
    let words = a.run(&["compliance", &uri]).await;
    let words = String::from_utf8_lossy(&words.stdout);
    assert!(
        words.contains(&format!("its copy of {} is not whole: needs ", b.acct.did)),
        "{words}"
    );

    // Carol's own self-check finds the damage and repairs it from Bob's PDS.
    let round = c.verify(None).await;
    let fixed = round["selfChecks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["did"] == b.acct.did.as_str())
        .cloned()
        .unwrap();
    assert_eq!(fixed["outcome"], "damaged", "{fixed}");
    assert_eq!(fixed["repaired"], true, "{fixed}");
    // The PDS gave the current tree back; the older trees Carol held came from her friends.
    let history = round["historyRepairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["did"] == b.acct.did.as_str())
        .cloned()
        .unwrap();
    // (A tree only Carol synced may stay incomplete: nobody can ask her for it either.)
    assert!(history["trees"].as_u64().unwrap() > 0, "{history}");
    assert_eq!(history["sources"], 2, "{history}");
    for v in &verifiers {
        let r = v.verify(Some(&c)).await;
        for x in r["results"].as_array().unwrap() {
            assert_eq!(x["outcome"], "pass", "{x}");
        }
    }
    let (_, report) = a.compliance(&uri, &in_a_moment()).await;
    assert_eq!(node_state(&report, &c.acct.did), "ok", "{report}");
    // Whole again: the newest whole-copy check passed, so nothing is said to be needed.
    assert!(copy_of(&report, &c.acct.did, &b.acct.did)
        .get("needs")
        .is_none());

    // Bob deletes half his posts: his PDS drops those blocks; the nodes keep them as history,
    // and the checks now also sample it.
    let posts = b.acct.list_records("app.bsky.feed.post").await.unwrap();
    for (post_uri, _, _) in posts.iter().take(6) {
        let rkey = post_uri.rsplit('/').next().unwrap();
        b.acct
            .delete_record("app.bsky.feed.post", rkey)
            .await
            .unwrap();
    }
    for n in nodes {
        n.run(&["sync", "--once"]).await;
    }
    for n in nodes {
        let round = n.verify(None).await;
        for r in round["results"].as_array().unwrap() {
            assert_eq!(r["outcome"], "pass", "{r}");
        }
    }

    // A cheat: Carol's endpoint relays Bob's PDS instead of serving her copy.
    let proxy = relay(
        bed.pds.clone(),
        vec![a.acct.did.clone(), b.acct.did.clone()],
    )
    .await;
    c.run(&["endpoint", &proxy]).await;
    let mut caught = false;
    for v in &verifiers {
        let r = v.verify(Some(&c)).await;
        for x in results_about(&r, &c.acct.did, &b.acct.did) {
            if x["layer"] == 1 {
                assert_eq!(x["outcome"], "fail", "{x}");
                assert!(x["reason"].as_str().unwrap().contains("missing"), "{x}");
                caught = true;
            }
        }
    }
    assert!(caught, "nobody sampled Carol's copy of Bob's account");

    // No endpoint at all: checked through record challenges in the repos.
    carol_server.kill().await.unwrap();
    c.run(&["endpoint", "--clear"]).await;
    let mut challengers = Vec::new();
    let mut issued_total = 0;
    for v in &verifiers {
        let r = v.verify(Some(&c)).await;
        let issued = r["challengesIssued"].as_array().unwrap();
        if !issued.is_empty() {
            challengers.push((*v, issued.len()));
            issued_total += issued.len();
            assert!(issued.iter().all(|i| i["target"] == c.acct.did.as_str()));
            assert_eq!(challenges(&v.acct).await, issued.len());
        }
        assert!(
            r["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|x| x["target"] != c.acct.did.as_str()),
            "{r}"
        );
    }
    assert!(issued_total > 0);
    let answered = c.verify(None).await;
    let answers = answered["challengesAnswered"].as_array().unwrap();
    assert_eq!(answers.len(), issued_total, "{answered}");
    assert!(
        answers.iter().all(|x| x["response"].is_string()),
        "{answered}"
    );
    assert_eq!(
        c.acct
            .list_records("org.p2pds.challenge.response")
            .await
            .unwrap()
            .len(),
        issued_total
    );
    for (v, n) in &challengers {
        let r = v.verify(Some(&c)).await;
        let resolved: Vec<&Value> = r["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["via"] == "challenge")
            .collect();
        assert_eq!(resolved.len(), *n, "{r}");
        assert!(resolved.iter().all(|x| x["outcome"] == "pass"), "{r}");
        // Resolved challenges leave the verifier's repo; the round opened new ones.
        let open = r["challengesIssued"].as_array().unwrap().len();
        assert_eq!(challenges(&v.acct).await, open);
    }
    // A challenge nobody answers fails once its deadline passes.
    let (v, _) = challengers[0];
    let ttl = [("P2PDS_CHALLENGE_TTL", "1s")];
    c.verify(None).await;
    v.json_env(&["verify", "--once", "--json", "--peer", &c.acct.did], &ttl)
        .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let r = v
        .json_env(&["verify", "--once", "--json", "--peer", &c.acct.did], &ttl)
        .await;
    let late: Vec<&Value> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["via"] == "challenge")
        .collect();
    assert!(!late.is_empty(), "{r}");
    assert!(
        late.iter().all(|x| x["outcome"] == "fail"
            && x["reason"]
                .as_str()
                .unwrap()
                .contains("no answer before the deadline")),
        "{r}"
    );
    drop(carol_endpoint);
}

async fn challenges(acct: &Account) -> usize {
    acct.list_records("org.p2pds.challenge")
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_stopped_node_is_failed_after_the_grace_period() {
    let bed = pds::shared().await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b, c, uri) = circle_of_three(
        bed,
        &dirs,
        &["--offline-grace", "1m", "--recovery-grace", "0s"],
    )
    .await;
    for n in [&a, &b, &c] {
        n.verify(None).await;
    }
    let (_, report) = a.compliance(&uri, &in_a_moment()).await;
    assert_eq!(node_state(&report, &c.acct.did), "ok", "{report}");
    let stopped = std::time::Instant::now();

    // Carol's node is stopped; the others go on.
    tokio::time::sleep(std::time::Duration::from_secs(62).saturating_sub(stopped.elapsed())).await;
    for n in [&a, &b] {
        n.verify(None).await;
    }
    let at = in_a_moment();
    let (ra, report) = a.compliance(&uri, &at).await;
    let (rb, _) = b.compliance(&uri, &at).await;
    assert_eq!(ra, rb);
    assert_eq!(node_state(&report, &c.acct.did), "failed", "{report}");
    for n in [&a, &b] {
        assert_ne!(node_state(&report, &n.acct.did), "failed", "{report}");
    }
    let text = String::from_utf8_lossy(&a.run(&["compliance", &uri]).await.stdout).to_string();
    assert!(text.contains(&c.acct.did), "{text}");
}

// ---- a node that relays the PDS instead of storing -------------------------------------------

#[derive(Clone)]
struct Relay {
    pds: String,
    dids: Vec<String>,
    http: reqwest::Client,
}

/// Starts the cheat: RASL answered with `com.atproto.sync.getBlocks` from the PDS, XRPC
/// forwarded to the PDS. Returns its base URL.
async fn relay(pds: String, dids: Vec<String>) -> String {
    let state = Relay {
        pds,
        dids,
        http: reqwest::Client::new(),
    };
    let app = axum::Router::new()
        .route("/.well-known/rasl/{cid}", axum::routing::get(relay_block))
        .route("/xrpc/{method}", axum::routing::get(relay_xrpc))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn relay_block(State(r): State<Relay>, AxPath(cid): AxPath<String>) -> Response {
    for did in &r.dids {
        let url = format!("{}/xrpc/com.atproto.sync.getBlocks", r.pds);
        let Ok(resp) = r
            .http
            .get(&url)
            .query(&[("did", did.as_str()), ("cids", cid.as_str())])
            .send()
            .await
        else {
            continue;
        };
        if !resp.status().is_success() {
            continue;
        }
        let car = resp.bytes().await.unwrap_or_default();
        // The block is the last section of the CAR: find it by its CID bytes.
        let parsed: cid::Cid = match cid.parse() {
            Ok(c) => c,
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        };
        let key = parsed.to_bytes();
        if let Some(pos) = car.windows(key.len()).position(|w| w == key.as_slice()) {
            return car.slice(pos + key.len()..).into_response();
        }
    }
    StatusCode::NOT_FOUND.into_response()
}

async fn relay_xrpc(
    State(r): State<Relay>,
    AxPath(method): AxPath<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let url = format!("{}/xrpc/{method}?{}", r.pds, query.unwrap_or_default());
    match r.http.get(&url).send().await {
        Ok(resp) => {
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
            let body = resp.bytes().await.unwrap_or_default();
            (status, body).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}
