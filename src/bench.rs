//! Ingest benchmark: a signed repo of N records generated offline, then full
//! verified ingest (parse + hash + signature + MST validation + store) and
//! incremental syncs of one new record each (one after the other, each a new commit on top
//! of the previous), measured in a fresh store.
//!
//! Serve benchmark: such a repo in a fresh store, served by a `p2pds serve` process that
//! many clients ask for the whole repo at once; its peak memory and the time taken.

use std::io::BufWriter;
use std::path::Path;
use std::time::Instant;

use crate::crypto::SigningKey;
use crate::repo::build::{BuiltRepo, RepoBuilder};
use crate::repo::tid;

pub const BENCH_DID: &str = "did:plc:benchbenchbenchbenchbenc";

/// Builds a repo of `records` posts (the whole CAR about 310 bytes a record, like the 100 MB / 320k-record reference).
pub fn generate(records: usize, key: SigningKey) -> (RepoBuilder, BuiltRepo) {
    let mut repo = RepoBuilder::new(BENCH_DID, key);
    let base = 1_700_000_000_000_000u64;
    for i in 0..records {
        let rkey = tid::format(base + i as u64 * 1000, 0);
        let text = format!(
            "Post number {i}: a day out with friends, the weather held and the trains ran \
             on time. Next time: bring the good camera, water, and a map #{}.",
            i % 97
        );
        repo.put_json(
            "app.bsky.feed.post",
            &rkey,
            &serde_json::json!({
                "$type": "app.bsky.feed.post",
                "text": text,
                "langs": ["en"],
                "createdAt": "2024-05-01T12:00:00.000Z",
            }),
        );
    }
    let built = repo.build(&tid::format(base + records as u64 * 1000 + 1, 0));
    (repo, built)
}

/// How many one-record incremental syncs `bench ingest` measures, each a new commit on top
/// of the previous one.
pub const INCREMENTALS: usize = 21;

/// The `since` CAR of the `i`th incremental (0-based) in `dir`.
pub fn since_path(dir: &Path, i: usize) -> std::path::PathBuf {
    dir.join(format!("since-{i:02}.car"))
}

/// Writes the full CAR and [`INCREMENTALS`] `since` CARs, each holding one new record on top
/// of the revision before it.
pub fn write_inputs(records: usize, dir: &Path) -> std::io::Result<(SigningKey, u64)> {
    let key = SigningKey::generate_k256();
    let (mut repo, mut built) = generate(records, key.clone());
    let full = std::fs::File::create(dir.join("full.car"))?;
    built.write_car(BufWriter::new(full))?;
    // Revs in the past (never refused as future) and each newer than the one before.
    let base = (chrono::Utc::now().timestamp_micros().max(0) as u64).saturating_sub(60_000_000);
    for i in 0..INCREMENTALS {
        let at = base + i as u64 * 1000;
        repo.put_json(
            "app.bsky.feed.post",
            &tid::format(at, 1),
            &serde_json::json!({"$type": "app.bsky.feed.post", "text": format!("one more ({i})"), "createdAt": "2024-05-02T00:00:00.000Z"}),
        );
        let next = repo.build(&tid::format(at, 2));
        std::fs::write(since_path(dir, i), next.diff_car_bytes(&built))?;
        built = next;
    }
    Ok((key, std::fs::metadata(dir.join("full.car"))?.len()))
}

/// Peak resident memory of this process so far, in bytes (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_bytes(std::process::id(), "VmHWM")
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct IngestFigures {
    pub records: i64,
    pub blocks: u64,
    pub car_bytes: u64,
    /// Parse, hash, verify, store and commit (durable in the log).
    pub full_seconds: f64,
    /// Copying the log into the main file afterwards (off the sync's path).
    pub checkpoint_seconds: f64,
    pub records_per_second: f64,
    pub megabytes_per_second: f64,
    /// The first incremental sync of one new record.
    pub incremental_ms: f64,
    pub incremental_creates: u64,
    /// How many one-record incremental syncs were measured, one after the other.
    #[serde(default)]
    pub incremental_runs: usize,
    #[serde(default)]
    pub incremental_median_ms: f64,
    #[serde(default)]
    pub incremental_p90_ms: f64,
    #[serde(default)]
    pub incremental_max_ms: f64,
    pub peak_rss_mb: f64,
}

/// Ingests `dir/full.car` then each `since` CAR in turn into a fresh store in `dir`.
pub fn run_ingest(dir: &Path, key: &crate::crypto::PublicKey) -> anyhow::Result<IngestFigures> {
    let store_path = dir.join("bench.sqlite");
    let _ = std::fs::remove_file(&store_path);
    let mut conn = rusqlite::Connection::open(&store_path)?;
    crate::store::configure_writer(&conn)?;
    crate::store::schema::migrate(&mut conn, &store_path)?;
    crate::store::add_repo(&conn, BENCH_DID, None, None)?;
    let car_bytes = std::fs::metadata(dir.join("full.car"))?.len();

    let start = Instant::now();
    let file =
        std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(dir.join("full.car"))?);
    let full = crate::sync::ingest::ingest_car(&mut conn, BENCH_DID, key, file, &mut |_| {})?;
    let full_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let checkpoint_seconds = start.elapsed().as_secs_f64();

    let mut times = Vec::with_capacity(INCREMENTALS);
    let mut first_creates = None;
    for i in 0..INCREMENTALS {
        let path = since_path(dir, i);
        if !path.exists() {
            break;
        }
        let start = Instant::now();
        let file = std::fs::File::open(path)?;
        let inc = crate::sync::ingest::ingest_car(&mut conn, BENCH_DID, key, file, &mut |_| {})?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        first_creates.get_or_insert(inc.creates);
        anyhow::ensure!(
            inc.records == full.records + i as i64 + 1,
            "after incremental {i} the store counts {} records, not {}",
            inc.records,
            full.records + i as i64 + 1
        );
    }
    let incremental_ms = times.first().copied().unwrap_or(0.0);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(IngestFigures {
        records: full.records,
        blocks: full.blocks_added,
        car_bytes,
        full_seconds,
        checkpoint_seconds,
        records_per_second: full.records as f64 / full_seconds,
        megabytes_per_second: car_bytes as f64 / 1e6 / full_seconds,
        incremental_ms,
        incremental_creates: first_creates.unwrap_or(0),
        incremental_runs: sorted.len(),
        incremental_median_ms: percentile(&sorted, 50),
        incremental_p90_ms: percentile(&sorted, 90),
        incremental_max_ms: sorted.last().copied().unwrap_or(0.0),
        peak_rss_mb: peak_rss_bytes().unwrap_or(0) as f64 / 1e6,
    })
}

/// The `pct`th percentile of sorted figures (nearest rank); 0 when there are none.
fn percentile(sorted: &[f64], pct: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (pct * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted.get(rank - 1).copied().unwrap_or(0.0)
}

/// Figures of `bench serve`: one `p2pds serve` process answering many `getRepo` at once.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ServeFigures {
    pub records: i64,
    pub car_bytes: u64,
    pub clients: usize,
    /// From the first request sent to the last answer's last byte.
    pub seconds: f64,
    /// Answers "busy" (503) or "slow down" (429) that a client waited out and asked again.
    pub retries: u64,
    /// The server's resident memory before the burst (after one `getRepo`).
    pub idle_rss_mb: f64,
    /// The server's peak resident memory (VmHWM) over its whole life.
    pub peak_rss_mb: f64,
}

/// The server process of `bench serve`, stopped when dropped.
struct ServerProcess(std::process::Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `/proc/<pid>/status` figure in bytes (Linux), e.g. `VmHWM` or `VmRSS`.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Builds an account of `records` posts into a fresh store in `dir`, starts `exe serve` on it
/// (a separate process, so its memory is the server's alone), checks one `getRepo` answer by
/// ingesting it into another fresh store (signature, whole tree, every record), then sends
/// `clients` `getRepo` at once, each from its own loopback address (so the per-address budget
/// is not what is measured), and checks every answer is byte for byte that verified CAR.
/// Clients told to wait (503/429 with `Retry-After`) wait and ask again.
pub fn run_serve(
    records: usize,
    clients: usize,
    exe: &Path,
    dir: &Path,
) -> anyhow::Result<ServeFigures> {
    let key = SigningKey::generate_k256();
    let (_, built) = generate(records, key.clone());
    let car = built.car_bytes();
    drop(built);
    let store_path = dir.join("p2pds.sqlite");
    {
        let mut conn = rusqlite::Connection::open(&store_path)?;
        crate::store::configure_writer(&conn)?;
        crate::store::schema::migrate(&mut conn, &store_path)?;
        crate::store::add_repo(&conn, BENCH_DID, None, None)?;
        crate::sync::ingest::ingest_car(
            &mut conn,
            BENCH_DID,
            &key.public_key(),
            &car[..],
            &mut |_| {},
        )?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    let car_bytes = car.len() as u64;
    drop(car);

    let mut child = std::process::Command::new(exe)
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take();
    let server = ServerProcess(child);
    let pid = server.0.id();
    let addr = server_address(stderr)?;
    let url = format!("http://{addr}/xrpc/com.atproto.sync.getRepo?did={BENCH_DID}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (digest, len) = rt.block_on(reference_answer(&url, dir, &key.public_key(), records))?;
    let idle_rss = proc_status_bytes(pid, "VmRSS").unwrap_or(0);
    let start = Instant::now();
    let retries = rt.block_on(burst(&url, clients, digest, len))?;
    let seconds = start.elapsed().as_secs_f64();
    let peak_rss = proc_status_bytes(pid, "VmHWM").unwrap_or(0);
    drop(server);
    Ok(ServeFigures {
        records: records as i64,
        car_bytes,
        clients,
        seconds,
        retries,
        idle_rss_mb: idle_rss as f64 / 1e6,
        peak_rss_mb: peak_rss as f64 / 1e6,
    })
}

/// Reads the server's first lines until it says where it listens; the rest goes to stderr.
fn server_address(stderr: Option<std::process::ChildStderr>) -> anyhow::Result<String> {
    use std::io::BufRead;
    let stderr = stderr.ok_or_else(|| anyhow::anyhow!("the server's stderr is not readable"))?;
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        let Some(line) = lines.next().transpose()? else {
            anyhow::bail!("the server stopped before it listened");
        };
        if let Some(rest) = line.split("http://").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
        eprintln!("{line}");
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("server: {line}");
        }
    });
    Ok(addr)
}

/// One `getRepo`, verified whole by a fresh ingest; its SHA-256 and length.
async fn reference_answer(
    url: &str,
    dir: &Path,
    key: &crate::crypto::PublicKey,
    records: usize,
) -> anyhow::Result<([u8; 32], u64)> {
    use sha2::Digest;
    let resp = reqwest::get(url).await?;
    anyhow::ensure!(resp.status().is_success(), "getRepo: {}", resp.status());
    let bytes = resp.bytes().await?;
    let copy = dir.join("copy.sqlite");
    let mut conn = rusqlite::Connection::open(&copy)?;
    crate::store::schema::migrate(&mut conn, &copy)?;
    crate::store::add_repo(&conn, BENCH_DID, None, None)?;
    let outcome =
        crate::sync::ingest::ingest_car(&mut conn, BENCH_DID, key, &bytes[..], &mut |_| {})?;
    anyhow::ensure!(
        outcome.records == records as i64,
        "getRepo gave {} records, not {records}",
        outcome.records
    );
    Ok((sha2::Sha256::digest(&bytes).into(), bytes.len() as u64))
}

/// `clients` concurrent `getRepo`, each answer hashed as it streams and compared with the
/// verified one. Returns how many times clients were told to wait.
async fn burst(url: &str, clients: usize, digest: [u8; 32], len: u64) -> anyhow::Result<u64> {
    let gate = std::sync::Arc::new(tokio::sync::Barrier::new(clients));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(600));
        if cfg!(target_os = "linux") {
            // 127.0.0.0/8 is all loopback on Linux: one address per client.
            let n = i + 2;
            builder = builder.local_address(std::net::IpAddr::from([
                127,
                (n >> 16) as u8,
                (n >> 8) as u8,
                n as u8,
            ]));
        }
        let http = builder.build()?;
        let (url, gate) = (url.to_string(), gate.clone());
        tasks.spawn(async move { one_client(http, url, gate, digest, len).await });
    }
    let mut retries = 0;
    while let Some(done) = tasks.join_next().await {
        retries += done??;
    }
    Ok(retries)
}

async fn one_client(
    http: reqwest::Client,
    url: String,
    gate: std::sync::Arc<tokio::sync::Barrier>,
    digest: [u8; 32],
    len: u64,
) -> anyhow::Result<u64> {
    use sha2::Digest;
    gate.wait().await;
    let mut retries = 0;
    loop {
        let mut resp = http.get(&url).send().await?;
        let status = resp.status().as_u16();
        if status == 503 || status == 429 {
            let wait = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .unwrap_or(1);
            retries += 1;
            anyhow::ensure!(retries < 1000, "still refused after {retries} tries");
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            continue;
        }
        anyhow::ensure!(status == 200, "getRepo: {status}");
        let (mut hasher, mut got) = (sha2::Sha256::new(), 0u64);
        while let Some(chunk) = resp.chunk().await? {
            got += chunk.len() as u64;
            hasher.update(&chunk);
        }
        anyhow::ensure!(
            got == len && <[u8; 32]>::from(hasher.finalize()) == digest,
            "an answer differs from the verified CAR ({got} bytes, {len} expected)"
        );
        return Ok(retries);
    }
}
