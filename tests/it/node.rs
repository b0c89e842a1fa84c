//! The node controller as a self-hoster runs it: `p2pds run`, one process per node, against the
//! reference PDS.
//!
//! - Three headless nodes form a circle; each then runs only `p2pds run`: every account gets
//!   backed up, verification rounds pass, and every node's compliance report says healthy. One
//!   node stopped with SIGTERM ends promptly with its store whole and its copies equal to the
//!   PDS.
//! - A friend's server that accepts connections and never answers does not hold up the other
//!   friends' backups in the same pass.
//! - The service files a self-hoster installs are valid for systemd.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::extract::{Path as AxPath, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::circles::{login, post};
use crate::cli::{assert_ok, p2pds, p2pds_json};
use crate::pds::{self, Account, TestBed};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn command(bed: &TestBed, dir: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_p2pds"));
    cmd.arg("--data-dir")
        .arg(dir)
        .args(["--plc-url", &bed.plc, "--resolver-url", &bed.pds])
        .env("P2PDS_PUBLISH_INTERVAL", "0s")
        .stdin(Stdio::null());
    cmd
}

/// One headless node: its folder, its account, its `p2pds run` process.
struct Headless {
    dir: PathBuf,
    acct: Account,
    child: Option<tokio::process::Child>,
    log: PathBuf,
}

impl Headless {
    fn start(&mut self, bed: &TestBed, port: u16) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = command(bed, &self.dir)
            .args([
                "run",
                "--tick",
                "1",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

async fn compliance_state(bed: &TestBed, n: &Headless, uri: &str) -> Option<String> {
    let out = p2pds(bed, &n.dir, &["compliance", uri, "--json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["state"].as_str().map(str::to_string)
}

#[tokio::test]
async fn three_headless_nodes_each_one_process() {
    let bed = pds::shared().await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, (name, n)) in [("ann", 3), ("ben", 5), ("cat", 4)].into_iter().enumerate() {
        let acct = bed.create_account(name).await.unwrap();
        post(&acct, n).await;
        login(bed, dirs[i].path(), &acct).await;
        nodes.push(Headless {
            dir: dirs[i].path().to_path_buf(),
            log: dirs[i].path().join("run.log"),
            acct,
            child: None,
        });
    }
    // The circle: Ann invites Ben and Cat, who accept (one-shot commands, before the nodes run).
    let created = p2pds_json(
        bed,
        &nodes[0].dir,
        &[
            "circle",
            "create",
            "--name",
            "Home servers",
            "--member",
            &nodes[1].acct.handle,
            "--member",
            &nodes[2].acct.handle,
            // A check that failed while a copy was still being made comes back within a
            // minute (a quarter of the interval, at least a minute).
            "--check-every",
            "4m",
            "--json",
        ],
    )
    .await;
    let uri = created["uri"].as_str().unwrap().to_string();
    for n in &nodes[1..] {
        let args = ["invitations", "--from", &nodes[0].acct.handle];
        assert_ok(&p2pds(bed, &n.dir, &args).await, &args);
        let args = ["circle", "accept", &uri];
        assert_ok(&p2pds(bed, &n.dir, &args).await, &args);
    }
    // Each node advertises where it serves, then runs: one process each, nothing else.
    for n in &mut nodes {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let args = ["endpoint", &url];
        assert_ok(&p2pds(bed, &n.dir, &args).await, &args);
        n.start(bed, port);
    }

    // Every node holds the other two accounts, verified, and every report says healthy.
    let mut healthy = false;
    for _ in 0..240 {
        let mut all = true;
        for n in &nodes {
            all &= compliance_state(bed, n, &uri).await.as_deref() == Some("ok");
        }
        if all {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let logs: Vec<String> = nodes.iter().map(Headless::log).collect();
    if !healthy {
        let mut reports = Vec::new();
        for n in &nodes {
            let out = p2pds(bed, &n.dir, &["compliance", &uri, "--json"]).await;
            reports.push(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        panic!(
            "not healthy everywhere:\n{}\n{}",
            logs.join("\n----\n"),
            reports.join("\n----\n")
        );
    }
    for (n, log) in nodes.iter().zip(&logs) {
        let held = p2pds_json(bed, &n.dir, &["status", "--json"]).await;
        let held = held["repos"].as_array().unwrap();
        for other in nodes.iter().filter(|o| o.acct.did != n.acct.did) {
            assert!(
                held.iter()
                    .any(|r| r["did"] == other.acct.did.as_str() && !r["commit"].is_null()),
                "{} does not hold {}: {held:?}",
                n.acct.handle,
                other.acct.handle
            );
        }
        assert!(log.contains("Running"), "{log}");
        assert!(
            log.contains("layer checks passed"),
            "verification rounds are logged: {log}"
        );
    }

    // SIGTERM: the node stops promptly and cleanly.
    let mut ben = nodes.remove(1);
    let mut child = ben.child.take().unwrap();
    let pid = child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("p2pds run stops within seconds of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}: {}", ben.log());
    assert!(ben.log().contains("stopped"), "{}", ben.log());
    let db = rusqlite::Connection::open(ben.dir.join("p2pds.sqlite")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    for other in &nodes {
        let upstream = other.acct.list_records("app.bsky.feed.post").await.unwrap();
        let local = p2pds_json(
            bed,
            &ben.dir,
            &[
                "records",
                &other.acct.did,
                "--collection",
                "app.bsky.feed.post",
                "--json",
            ],
        )
        .await;
        let mut up: Vec<String> = upstream.iter().map(|(uri, _, _)| uri.clone()).collect();
        let mut held: Vec<String> = local["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["uri"].as_str().unwrap().to_string())
            .collect();
        up.sort();
        held.sort();
        assert_eq!(held, up, "Ben's copy of {}", other.acct.handle);
    }
    drop(ben);
}

/// A PLC directory in front of the real one that sends one DID to a server that never answers.
#[derive(Clone)]
struct Plc {
    real: String,
    hung_did: String,
    hung_url: String,
}

async fn plc_doc(State(p): State<Plc>, AxPath(did): AxPath<String>) -> Json<Value> {
    if did == p.hung_did {
        let key = p2pds::crypto::SigningKey::generate_k256();
        return Json(json!({
            "id": did,
            "alsoKnownAs": ["at://hung.test"],
            "verificationMethod": [{
                "id": format!("{did}#atproto"), "type": "Multikey",
                "controller": did, "publicKeyMultibase": key.public_key().to_multikey()
            }],
            "service": [{
                "id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": p.hung_url
            }]
        }));
    }
    let doc = reqwest::get(format!("{}/{did}", p.real))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Json(doc)
}

#[tokio::test]
async fn a_server_that_never_answers_does_not_hold_up_other_backups() {
    let bed = pds::shared().await;
    let dan = bed.create_account("dan").await.unwrap();
    post(&dan, 2).await;
    // Accepts every connection, reads nothing, answers nothing, closes nothing.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_url = format!("http://{}", hung.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            open.push(s);
        }
    });
    let plc = Plc {
        real: bed.plc.clone(),
        hung_did: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".into(),
        hung_url,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plc_url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/{did}", get(plc_doc))
        .with_state(plc.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_p2pds"));
        cmd.arg("--data-dir")
            .arg(dir.path())
            .args(["--plc-url", &plc_url, "--resolver-url", &bed.pds])
            .args(args)
            .stdin(Stdio::null());
        cmd
    };
    // The hung friend first: a pass that ran backups one by one would wait on it.
    for who in [plc.hung_did.as_str(), dan.did.as_str()] {
        let out = run(&["backup", "add", who]).output().await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut child = run(&["sync", "--once"])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let dan_done = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let done = line.starts_with(&dan.handle) && line.contains("records held");
            seen.push(line);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(dan_done, Ok(true), "{seen:?}");
    // Dan's copy is whole while the hung friend's backup is still waiting.
    assert!(
        child.try_wait().unwrap().is_none(),
        "the pass is still waiting on the server that never answers"
    );
    let records = p2pds_json_with(&plc_url, bed, dir.path(), &dan.did).await;
    assert_eq!(records, 2);
    child.kill().await.unwrap();
    server.abort();
    held.abort();
}

async fn p2pds_json_with(plc: &str, bed: &TestBed, dir: &Path, did: &str) -> usize {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_p2pds"))
        .arg("--data-dir")
        .arg(dir)
        .args(["--plc-url", plc, "--resolver-url", &bed.pds])
        .args([
            "records",
            did,
            "--collection",
            "app.bsky.feed.post",
            "--json",
        ])
        .output()
        .await
        .unwrap();
    assert_ok(&out, &["records"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["records"].as_array().unwrap().len()
}

/// The unit files in `contrib/systemd`, with the binary they start pointed at this build.
#[test]
fn the_service_files_are_valid_for_systemd() {
    let Ok(found) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        panic!("systemd-analyze is missing: run scripts/setup");
    };
    assert!(found.status.success());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_p2pds");
    for (file, from) in [
        ("p2pds.service", "/usr/local/bin/p2pds"),
        ("user/p2pds.service", "%h/.local/bin/p2pds"),
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(text.contains(&format!("ExecStart={from} run")), "{file}");
        let unit = dir.path().join(file.replace('/', "-"));
        let text = text.replace(from, bin).replace("/var/lib/p2pds", "/tmp");
        std::fs::write(&unit, text).unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{file}: {said}"
        );
    }
}

/// The open upstream flags of `did` as `p2pds history --json` lists them.
async fn cli_flags(bed: &TestBed, dir: &Path, did: &str) -> Vec<String> {
    let h = p2pds_json(bed, dir, &["history", did, "--json"]).await;
    h["flags"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["cleared_at"].is_null())
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect()
}

/// One situation, two entry points: a circle member's PDS goes away, and the circle's offline
/// grace period (2 s here, not the 1-day default) decides when it counts as gone. The desktop
/// app's engine and a `p2pds` node (one-shot passes of the same controller) flag it on the
/// same pass: the first after the grace period.
#[tokio::test]
async fn the_app_and_the_cli_flag_a_gone_server_alike() {
    let bed = pds::shared().await;
    let doomed = bed.start_extra_pds().await.unwrap();
    let carol = doomed.create_account("carol").await.unwrap();
    post(&carol, 2).await;
    let alice = bed.create_account("alice").await.unwrap();
    let bob = bed.create_account("bob").await.unwrap();
    // The app looks for invitations in the repos of the accounts Alice follows.
    alice
        .create_record(
            "app.bsky.graph.follow",
            json!({"$type": "app.bsky.graph.follow", "subject": bob.did,
                   "createdAt": crate::circles::now()}),
        )
        .await
        .unwrap();
    let (app_dir, bob_dir, carol_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (bob_dir, carol_dir) = (bob_dir.path(), carol_dir.path());
    login(bed, bob_dir, &bob).await;
    // Carol's handle resolves on her own server only.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_p2pds"))
        .arg("--data-dir")
        .arg(carol_dir)
        .args(["--plc-url", &bed.plc, "--resolver-url", &doomed.pds])
        .args([
            "login",
            &carol.handle,
            "--password-env",
            "P2PDS_TEST_PASSWORD",
        ])
        .env("P2PDS_TEST_PASSWORD", &carol.app_password)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_ok(&out, &["login", &carol.handle]);
    let app = p2pds::app::Engine::open(p2pds::app::EngineConfig {
        data_dir: app_dir.path().to_path_buf(),
        plc_url: bed.plc.clone(),
        resolver_url: Some(bed.pds.clone()),
        backlink_index: None,
    })
    .unwrap();
    app.sign_in(&alice.handle, &alice.app_password)
        .await
        .unwrap();
    let created = p2pds_json(
        bed,
        bob_dir,
        &[
            "circle",
            "create",
            "--name",
            "Grace",
            "--member",
            &alice.handle,
            "--member",
            &carol.did,
            "--offline-grace",
            "2s",
            "--json",
        ],
    )
    .await;
    let uri = created["uri"].as_str().unwrap().to_string();
    let args = ["invitations", "--from", &bob.handle];
    assert_ok(&p2pds(bed, carol_dir, &args).await, &args);
    let args = ["circle", "accept", &uri];
    assert_ok(&p2pds(bed, carol_dir, &args).await, &args);
    let mut accepted = false;
    for _ in 0..10 {
        app.pass().await;
        let o = app.overview().await.unwrap();
        if let Some(inv) = o.invitations.iter().find(|i| i.uri == uri) {
            app.accept(&inv.uri).await.unwrap();
            accepted = true;
            break;
        }
    }
    assert!(accepted, "the app saw the invitation");
    // Both hold Carol's account.
    let holds = |o: &p2pds::app::dto::Overview| {
        o.friends
            .iter()
            .any(|f| f.did == carol.did && f.can_restore)
    };
    for _ in 0..10 {
        if holds(&app.overview().await.unwrap()) {
            break;
        }
        app.pass().await;
    }
    assert!(holds(&app.overview().await.unwrap()), "the app holds Carol");
    let _ = p2pds(bed, bob_dir, &["sync", "--once"]).await;
    let status = p2pds_json(bed, bob_dir, &["status", "--json"]).await;
    assert!(status["repos"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["did"] == carol.did.as_str() && !r["commit"].is_null()));

    // Carol's server goes away. The first pass of each notes it unreachable (not yet gone).
    drop(doomed);
    app.pass().await;
    let _ = p2pds(bed, bob_dir, &["sync", "--once"]).await;
    let app_flags = |o: &p2pds::app::dto::Overview| -> Vec<String> {
        o.friends
            .iter()
            .filter(|f| f.did == carol.did)
            .flat_map(|f| f.flags.iter().map(|x| x.kind.clone()))
            .collect()
    };
    assert!(app_flags(&app.overview().await.unwrap()).is_empty());
    assert!(cli_flags(bed, bob_dir, &carol.did).await.is_empty());
    // Past the circle's grace period, the next pass of each flags it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    app.pass().await;
    let _ = p2pds(bed, bob_dir, &["sync", "--once"]).await;
    assert_eq!(app_flags(&app.overview().await.unwrap()), ["pds-gone"]);
    assert_eq!(cli_flags(bed, bob_dir, &carol.did).await, ["pds-gone"]);
}

/// Two nodes on one folder would both write: the second is refused in words (with the first
/// one's pid) while reading commands still work; once the first stops, the folder is free.
#[tokio::test]
async fn one_running_node_per_folder() {
    let bed = pds::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(bed, dir.path())
        .args(["run", "--tick", "60"])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("Running") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(started, Ok(true));
    for args in [&["sync", "--once"][..], &["run"][..]] {
        let out = p2pds(bed, dir.path(), args).await;
        assert!(!out.status.success(), "{args:?} beside a running node");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("another P2PDS is using this folder")
                && said.contains(&format!("pid {pid}")),
            "{said}"
        );
    }
    let args = ["status", "--json"];
    assert_ok(&p2pds(bed, dir.path(), &args).await, &args);
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    let args = ["sync", "--once"];
    assert_ok(&p2pds(bed, dir.path(), &args).await, &args);
}
