//! `p2pds bench`: measurements of the engine (ingest, serving), each in processes of its own
//! so that the memory figures are the measured work's alone.

use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Full verified ingest of a generated N-record repo, then one-record incremental syncs,
    /// one after the other (the first, the median, the 90th percentile).
    Ingest {
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        #[arg(long)]
        json: bool,
    },
    /// (internal) the measured half of `bench ingest`, in its own process.
    #[command(hide = true)]
    IngestRun { dir: PathBuf, key: String },
    /// A `p2pds serve` process answering many `getRepo` of an N-record account at once:
    /// its peak memory and the time the answers took.
    Serve {
        #[arg(long, default_value_t = 20_000)]
        records: usize,
        /// Concurrent clients, each asking for the whole repo once.
        #[arg(long, default_value_t = 200)]
        clients: usize,
        #[arg(long)]
        json: bool,
    },
    /// A generated stream of signed commits replayed from a file: decode, verify and apply
    /// each one (verified commits per second, peak memory), and decode + verify alone.
    Firehose {
        /// Commits in the stream, round-robin over the accounts.
        #[arg(long, default_value_t = 50_000)]
        commits: u64,
        #[arg(long, default_value_t = 10)]
        accounts: usize,
        /// Records each account holds before the stream starts.
        #[arg(long, default_value_t = 1_000)]
        records: usize,
        /// What each commit does: `busy` (4.25 operations: a post and a like created, two
        /// records deleted, the profile updated one time in four) or `single` (one operation,
        /// as most commits of the network's event stream).
        #[arg(long, value_enum, default_value_t = Mix::Busy)]
        mix: Mix,
        #[arg(long)]
        json: bool,
        /// (internal) replay the stream in this folder, in this process.
        #[arg(long, hide = true)]
        replay: Option<PathBuf>,
        /// (internal) with --replay: verify only, write nothing.
        #[arg(long, hide = true)]
        verify_only: bool,
    },
}

pub fn run(command: &BenchCommand) -> anyhow::Result<i32> {
    match command {
        BenchCommand::Ingest { records, json } => {
            let dir = tempfile_dir()?;
            eprintln!("generating a signed repo of {records} records…");
            let (key, car_bytes) = p2pds::bench::write_inputs(*records, &dir)?;
            eprintln!(
                "CAR: {:.1} MB; ingesting in a fresh process…",
                car_bytes as f64 / 1e6
            );
            let out = std::process::Command::new(std::env::current_exe()?)
                .args(["bench", "ingest-run"])
                .arg(&dir)
                .arg(key.public_key().to_multikey())
                .stderr(std::process::Stdio::inherit())
                .output()?;
            let _ = std::fs::remove_dir_all(&dir);
            if !out.status.success() {
                bail!(
                    "the measured run failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let figures: p2pds::bench::IngestFigures = serde_json::from_slice(&out.stdout)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&figures)?);
            } else {
                println!(
                    "full verified ingest: {} records, {} blocks, {:.1} MB in {:.2} s = {:.0} records/s, {:.1} MB/s\n\
                     then the log checkpoint into the main file: {:.2} s\n\
                     incremental sync of one new record: {:.1} ms ({} created)\n\
                     {} one-record incremental syncs, one after the other: median {:.1} ms, p90 {:.1} ms, max {:.1} ms\n\
                     peak RSS of the ingesting process: {:.0} MB",
                    figures.records,
                    figures.blocks,
                    figures.car_bytes as f64 / 1e6,
                    figures.full_seconds,
                    figures.records_per_second,
                    figures.megabytes_per_second,
                    figures.checkpoint_seconds,
                    figures.incremental_ms,
                    figures.incremental_creates,
                    figures.incremental_runs,
                    figures.incremental_median_ms,
                    figures.incremental_p90_ms,
                    figures.incremental_max_ms,
                    figures.peak_rss_mb
                );
            }
            Ok(0)
        }
        BenchCommand::IngestRun { dir, key } => {
            let key = p2pds::crypto::PublicKey::from_multikey(key)?;
            let figures = p2pds::bench::run_ingest(dir, &key)?;
            println!("{}", serde_json::to_string(&figures)?);
            Ok(0)
        }
        BenchCommand::Serve {
            records,
            clients,
            json,
        } => {
            let dir = tempfile_dir()?;
            eprintln!("building an account of {records} records and serving it…");
            let figures =
                p2pds::bench::run_serve(*records, *clients, &std::env::current_exe()?, &dir);
            let _ = std::fs::remove_dir_all(&dir);
            let figures = figures?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&figures)?);
            } else {
                println!(
                    "{} concurrent getRepo of {} records ({:.1} MB CAR each), every answer the \
                     verified CAR: {:.2} s ({} waits for a free slot)\n\
                     server memory: {:.0} MB before, peak (VmHWM) {:.0} MB",
                    figures.clients,
                    figures.records,
                    figures.car_bytes as f64 / 1e6,
                    figures.seconds,
                    figures.retries,
                    figures.idle_rss_mb,
                    figures.peak_rss_mb
                );
            }
            Ok(0)
        }
        BenchCommand::Firehose {
            commits,
            accounts,
            records,
            mix,
            json,
            replay,
            verify_only,
        } => {
            if let Some(dir) = replay {
                let figures = p2pds::firehose::bench::replay(dir, !*verify_only)?;
                println!("{}", serde_json::to_string(&figures)?);
                return Ok(0);
            }
            eprintln!(
                "generating {commits} commits over {accounts} accounts of {records} records, \
                 then replaying them in fresh processes…"
            );
            let exe = std::env::current_exe()?;
            let figures =
                p2pds::firehose::bench::run(&exe, mix.into(), *accounts, *records, *commits)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&figures)?);
            } else {
                println!("{}", figures.words());
            }
            Ok(0)
        }
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("p2pds-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `--mix` of `bench firehose`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Mix {
    Busy,
    Single,
}

impl From<&Mix> for p2pds::firehose::bench::Mix {
    fn from(mix: &Mix) -> Self {
        match mix {
            Mix::Busy => Self::Busy,
            Mix::Single => Self::Single,
        }
    }
}
