//! Ingest benchmark: a signed repo of N records generated offline, then full
//! verified ingest (parse + hash + signature + MST validation + store) and an
//! incremental sync of one new record, measured in a fresh store.

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

/// Writes the full CAR and a `since` CAR holding one new record.
pub fn write_inputs(records: usize, dir: &Path) -> std::io::Result<(SigningKey, u64)> {
    let key = SigningKey::generate_k256();
    let (mut repo, built) = generate(records, key.clone());
    let full = std::fs::File::create(dir.join("full.car"))?;
    built.write_car(BufWriter::new(full))?;
    repo.put_json(
        "app.bsky.feed.post",
        &tid::now(1),
        &serde_json::json!({"$type": "app.bsky.feed.post", "text": "one more", "createdAt": "2024-05-02T00:00:00.000Z"}),
    );
    let next = repo.build(&tid::now(2));
    std::fs::write(dir.join("since.car"), next.diff_car_bytes(&built))?;
    Ok((key, std::fs::metadata(dir.join("full.car"))?.len()))
}

/// Peak resident memory of this process so far, in bytes (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
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
    pub incremental_ms: f64,
    pub incremental_creates: u64,
    pub peak_rss_mb: f64,
}

/// Ingests `dir/full.car` then `dir/since.car` into a fresh store in `dir`.
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

    let start = Instant::now();
    let file = std::fs::File::open(dir.join("since.car"))?;
    let inc = crate::sync::ingest::ingest_car(&mut conn, BENCH_DID, key, file, &mut |_| {})?;
    let incremental_ms = start.elapsed().as_secs_f64() * 1000.0;

    Ok(IngestFigures {
        records: full.records,
        blocks: full.blocks_added,
        car_bytes,
        full_seconds,
        checkpoint_seconds,
        records_per_second: full.records as f64 / full_seconds,
        megabytes_per_second: car_bytes as f64 / 1e6 / full_seconds,
        incremental_ms,
        incremental_creates: inc.creates,
        peak_rss_mb: peak_rss_bytes().unwrap_or(0) as f64 / 1e6,
    })
}
