//! The commands that run the node controller: `p2pds run` (the whole node, headless),
//! `p2pds sync` and `p2pds verify` (one pass with `--once`, else the loop of that part).
//! Everything they print comes from the controller's events.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use indicatif::MultiProgress;
use p2pds::engine::{Node, NodeConfig, NodeEvent, OpKinds, PassOptions, Schedule};
use p2pds::follow::FollowConfig;
use p2pds::policy::Duration as PolicyDuration;
use p2pds::sync::SyncProgress;
use tokio::sync::broadcast;

use crate::verify_cmd;

/// Opens the node on a data folder; the environment is read here, at the edge.
pub fn open(
    data_dir: PathBuf,
    plc_url: &str,
    resolver_url: Option<&str>,
    backlink_index: Option<&str>,
    schedule: Schedule,
) -> anyhow::Result<Node> {
    let mut config = NodeConfig::new(data_dir.clone(), plc_url, resolver_url);
    config.schedule = schedule;
    config.backlink_index = backlink_index.map(str::to_string);
    if let Ok(text) = std::env::var("P2PDS_PUBLISH_INTERVAL") {
        match PolicyDuration::parse(&text) {
            Ok(d) => config.publish_interval = Some(d),
            Err(e) => eprintln!("warning: P2PDS_PUBLISH_INTERVAL: {e}; using 20m"),
        }
    }
    config.pds_grace = crate::pds_grace_from_env();
    config.free_space = crate::free_space_from_env();
    if let Ok(text) = std::env::var("P2PDS_CHALLENGE_TTL") {
        let d =
            PolicyDuration::parse(&text).with_context(|| format!("P2PDS_CHALLENGE_TTL={text}"))?;
        config.challenge_ttl = Some(d);
    }
    Node::open(config).with_context(|| format!("opening the store in {}", data_dir.display()))
}

/// SIGINT (Ctrl-C) or SIGTERM (systemd, `kill`).
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return "interrupted",
                _ = term.recv() => return "asked to stop (SIGTERM)",
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "interrupted"
}

/// Account names for the log (handles where known).
async fn names(node: &Node) -> BTreeMap<String, String> {
    node.store()
        .read(p2pds::store::list_repos)
        .await
        .map(|rows| {
            rows.into_iter()
                .filter_map(|r| r.handle.map(|h| (r.did, h)))
                .collect()
        })
        .unwrap_or_default()
}

fn synced_words(report: &p2pds::sync::SyncReport) -> String {
    let what = match (&report.ingest, report.up_to_date) {
        (_, true) => "up to date".to_string(),
        (Some(i), _) => format!(
            "rev {}: {} new, {} changed, {} deleted, {} records held",
            i.rev, i.creates, i.updates, i.deletes, i.records
        ),
        (None, _) => format!("account is {}; your copy is kept", report.upstream_status),
    };
    let b = &report.blobs;
    let mut out = what;
    if b.fetched + b.bad + b.failed > 0 {
        out += &format!(
            "; blobs: {} fetched, {} bad, {} failed",
            b.fetched, b.bad, b.failed
        );
    }
    if b.waiting > 0 {
        out += &format!(
            "; {} images or files not held yet (tried again later: `p2pds status` says why)",
            b.waiting
        );
    }
    out
}

fn progress_words(p: &SyncProgress) -> String {
    match p {
        SyncProgress::Checking => "checking…".to_string(),
        SyncProgress::Downloading { bytes, total } => match total {
            Some(t) => format!(
                "downloading {:.1} / {:.1} MB",
                *bytes as f64 / 1e6,
                *t as f64 / 1e6
            ),
            None => format!("downloading {:.1} MB", *bytes as f64 / 1e6),
        },
        SyncProgress::Ingesting(p2pds::sync::ingest::IngestProgress::Blocks { blocks, bytes }) => {
            format!("verifying: {blocks} blocks, {:.1} MB", *bytes as f64 / 1e6)
        }
        SyncProgress::Ingesting(p2pds::sync::ingest::IngestProgress::Verifying) => {
            "checking the signature and record tree…".to_string()
        }
        SyncProgress::Blobs { done, total } => format!("images and files {done}/{total}"),
    }
}

/// Prints what the node did, one readable line per event; counts failed backups.
struct Log {
    names: BTreeMap<String, String>,
    bars: MultiProgress,
    bar: BTreeMap<String, indicatif::ProgressBar>,
    /// Print verification rounds as JSON (`verify --json`).
    json: bool,
    /// Print every verification round, even one with nothing to say.
    all_rounds: bool,
    /// One line on stderr per verification round instead of the full report on stdout.
    round_lines: bool,
    failed: usize,
    /// Backups done with some images or files still missing or bad.
    incomplete: usize,
    round_error: Option<String>,
}

impl Log {
    fn new(names: BTreeMap<String, String>, json: bool, all_rounds: bool) -> Log {
        Log {
            names,
            bars: MultiProgress::new(),
            bar: BTreeMap::new(),
            json,
            all_rounds,
            round_lines: false,
            failed: 0,
            incomplete: 0,
            round_error: None,
        }
    }

    fn name<'a>(&'a self, did: &'a str) -> &'a str {
        self.names.get(did).map_or(did, String::as_str)
    }

    fn done(&mut self, did: &str) {
        if let Some(bar) = self.bar.remove(did) {
            bar.finish_and_clear();
        }
    }

    fn event(&mut self, e: NodeEvent) {
        match e {
            NodeEvent::SyncStarted { did } => {
                let name = self.name(&did).to_string();
                if let Some(bar) = crate::progress_bar(&name) {
                    self.bar.insert(did, self.bars.add(bar));
                }
            }
            NodeEvent::Progress { did, progress } => {
                if let Some(bar) = self.bar.get(&did) {
                    bar.set_message(progress_words(&progress));
                }
            }
            NodeEvent::RepoSynced { did, report } => {
                self.done(&did);
                if report.blobs.waiting > 0 {
                    self.incomplete += 1;
                }
                eprintln!("{}: {}", self.name(&did), synced_words(&report));
            }
            NodeEvent::SyncFailed {
                did,
                error,
                retry_at,
                ..
            } => {
                self.done(&did);
                self.failed += 1;
                eprintln!(
                    "{}: sync failed: {error} (next try after {retry_at})",
                    self.name(&did)
                );
            }
            NodeEvent::FlagRaised { did, flag } => {
                eprintln!("{}: flagged: {}", self.name(&did), flag.detail);
            }
            NodeEvent::CommitCaptured { applied: a } => {
                eprintln!(
                    "{}: kept {} from its event stream (+{} ~{} -{}, {} records)",
                    self.name(&a.did),
                    a.rev,
                    a.creates,
                    a.updates,
                    a.deletes,
                    a.records
                );
            }
            NodeEvent::CaughtUp { did, from, report } => {
                eprintln!(
                    "{}: its server could not serve it; brought up to {} from {}'s node, \
                     verified ({} tree nodes and {} records, {} requests; {} blobs)",
                    self.name(&did),
                    report.rev,
                    self.name(&from),
                    report.nodes,
                    report.records,
                    report.requests,
                    report.blobs_fetched
                );
            }
            NodeEvent::CirclesRefreshed { warnings } => {
                for w in warnings {
                    eprintln!("circles: {w}");
                }
            }
            NodeEvent::Published { report } => {
                if !report.statuses.is_empty() || report.heartbeat {
                    eprintln!(
                        "circles: published {} status record{}{}",
                        report.statuses.len(),
                        if report.statuses.len() == 1 { "" } else { "s" },
                        if report.heartbeat {
                            " and a heartbeat"
                        } else {
                            ""
                        }
                    );
                }
            }
            NodeEvent::PublishFailed { error } => {
                eprintln!("circles: could not publish this node's status: {error}");
            }
            NodeEvent::RoundFinished { report } => {
                let quiet = report.results.is_empty()
                    && report.challenges_issued.is_empty()
                    && report.challenges_answered.is_empty()
                    && report
                        .self_checks
                        .iter()
                        .all(|c| c.outcome.as_str() == "ok")
                    && report.warnings.is_empty();
                if self.round_lines {
                    if !quiet {
                        eprintln!("{}", round_line(&report));
                    }
                } else if self.all_rounds || !quiet {
                    if let Err(e) = verify_cmd::print_round(&report, self.json) {
                        eprintln!("error: {e:#}");
                    }
                }
            }
            NodeEvent::RoundFailed { error } => {
                eprintln!("verification: {error}");
                self.round_error = Some(error);
            }
            NodeEvent::HealthEvaluated { .. } | NodeEvent::PassFinished { .. } => {}
            NodeEvent::GarbageCollected { states, bytes } => {
                if bytes > 0 {
                    eprintln!(
                        "Removed {states} old version(s), freeing {}.",
                        p2pds::store::space::size_words(bytes)
                    );
                }
            }
            NodeEvent::Warning { text } => eprintln!("warning: {text}"),
        }
    }

    /// Everything the node said so far.
    fn drain(&mut self, rx: &mut broadcast::Receiver<NodeEvent>) {
        loop {
            match rx.try_recv() {
                Ok(e) => self.event(e),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    eprintln!("({n} events not shown)");
                }
                Err(_) => return,
            }
        }
    }
}

/// A verification round in one line: what was checked and how it went.
fn round_line(report: &p2pds::verify::RoundReport) -> String {
    let passed = report
        .results
        .iter()
        .filter(|r| p2pds::verify::db::outcome_str(r.outcome) == "pass")
        .count();
    let mut parts = vec![format!(
        "verification: {passed} of {} layer checks passed",
        report.results.len()
    )];
    for r in report
        .results
        .iter()
        .filter(|r| p2pds::verify::db::outcome_str(r.outcome) != "pass")
    {
        parts.push(format!(
            "{}'s copy of {}: layer {} {}{}",
            r.target,
            r.subject,
            r.layer,
            p2pds::verify::db::outcome_str(r.outcome),
            r.reason
                .as_deref()
                .map(|x| format!(" ({x})"))
                .unwrap_or_default()
        ));
    }
    if !report.challenges_issued.is_empty() {
        parts.push(format!(
            "{} challenges sent",
            report.challenges_issued.len()
        ));
    }
    if !report.challenges_answered.is_empty() {
        parts.push(format!(
            "{} challenges answered",
            report.challenges_answered.len()
        ));
    }
    for c in report
        .self_checks
        .iter()
        .filter(|c| c.outcome.as_str() != "ok")
    {
        parts.push(format!("self-check of {}: {}", c.did, c.outcome.as_str()));
    }
    for w in &report.warnings {
        parts.push(format!("warning: {w}"));
    }
    parts.join("; ")
}

/// One pass, printing as it goes. Returns the log (failures counted).
async fn one_pass(node: &Node, opts: PassOptions, log: &mut Log) {
    let mut rx = node.subscribe();
    let pass = node.pass(opts);
    tokio::pin!(pass);
    loop {
        tokio::select! {
            _ = &mut pass => break,
            e = rx.recv() => match e {
                Ok(e) => log.event(e),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    log.drain(&mut rx);
}

/// Runs the controller until SIGINT or SIGTERM, logging what it does.
async fn run_loop(node: &Node, mut log: Log) -> anyhow::Result<i32> {
    let mut rx = node.subscribe();
    let runner = node.clone();
    let running = tokio::spawn(async move { runner.run().await });
    let why = loop {
        tokio::select! {
            why = shutdown_signal() => break why,
            e = rx.recv() => match e {
                Ok(NodeEvent::RepoSynced { did, report }) => {
                    if !log.names.contains_key(&did) {
                        log.names = names(node).await;
                    }
                    log.event(NodeEvent::RepoSynced { did, report });
                }
                Ok(e) => log.event(e),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break "stopped",
            },
        }
    };
    eprintln!("{why}: stopping (work in progress is cancelled; copies stay as they were)");
    node.stop();
    let drain = node.config().drain + Duration::from_secs(2);
    if tokio::time::timeout(drain, running).await.is_err() {
        eprintln!("work in progress did not end in time; stopping anyway");
    }
    node.store()
        .checkpoint()
        .await
        .context("writing the store's log back")?;
    eprintln!("stopped");
    Ok(0)
}

/// `p2pds run`: backups, circles, verification and challenges, serving, health, garbage
/// collection, in one process.
pub async fn run(
    node: Node,
    listen: Option<&str>,
    follow: Option<FollowConfig>,
) -> anyhow::Result<i32> {
    if let Some(relay) = follow.as_ref().and_then(|f| f.relay.as_deref()) {
        if p2pds::follow::stream_url(relay, None).is_err() {
            eprintln!("--relay {relay}: give the relay's address, such as https://relay.example");
            return Ok(2);
        }
    }
    let endpoint = node.circles().endpoint().await.ok().flatten();
    let listen = match (listen, &endpoint) {
        (Some(l), _) => Some(l.to_string()),
        (None, Some(_)) => Some("127.0.0.1:2585".to_string()),
        (None, None) => None,
    };
    let me = node.session().await.map(|s| s.account.did.clone());
    let backups = names(&node).await;
    let count = node
        .store()
        .read(p2pds::store::list_repos)
        .await
        .map(|r| r.len())
        .unwrap_or(0);
    eprintln!(
        "P2PDS node in {}: {count} account{} backed up; {}",
        node.config().data_dir.display(),
        if count == 1 { "" } else { "s" },
        match &me {
            Some(did) => format!("signed in as {did} (circles and verification on)"),
            None => "not signed in (backups only; `p2pds login` for circles)".to_string(),
        }
    );
    if let Some(addr) = listen {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("could not listen on {addr}: is another program using it?"))?;
        eprintln!(
            "Serving replicated accounts on http://{}{}",
            listener.local_addr()?,
            endpoint
                .map(|e| format!(" (advertised as {e})"))
                .unwrap_or_default()
        );
        let (store, blobs, stop) = (
            node.store().clone(),
            node.syncer().blob_dir(),
            node.stop_token(),
        );
        tokio::spawn(async move {
            if let Err(e) = p2pds::serve::serve(
                listener,
                store,
                blobs,
                p2pds::serve::ServeConfig::default(),
                async move { stop.cancelled().await },
            )
            .await
            {
                eprintln!("serving stopped: {e}");
            }
        });
    }
    eprintln!("Running (SIGINT or SIGTERM stops).");
    let mut log = Log::new(backups, false, false);
    log.round_lines = true;
    if let Some(config) = follow {
        if let Some(relay) = &config.relay {
            eprintln!("Following every account's changes through the relay {relay}.");
        }
        let follower = node.clone();
        tokio::spawn(async move { follower.follow(config).await });
    }
    run_loop(&node, log).await
}

/// `p2pds sync`: one pass with `--once` (exit 1 when a backup failed, 3 when every backup
/// ran but some images or files are still missing or bad), else the loop.
pub async fn sync(node: Node, once: bool) -> anyhow::Result<i32> {
    let mut log = Log::new(names(&node).await, false, false);
    if once {
        one_pass(
            &node,
            PassOptions {
                forced: true,
                peer: None,
            },
            &mut log,
        )
        .await;
        return Ok(match (log.failed, log.incomplete) {
            (0, 0) => 0,
            (0, _) => 3,
            _ => 1,
        });
    }
    run_loop(&node, log).await
}

/// `p2pds verify`: one round of every check with `--once`, else rounds when due.
pub async fn verify(node: Node, once: bool, peer: Option<&str>, json: bool) -> anyhow::Result<i32> {
    // Not signed in: the reason, in words.
    if node.session().await.is_none() {
        crate::circle_cmd::session(node.syncer()).await?;
    }
    let peer = verify_cmd::peer_did(node.syncer(), peer).await?;
    let mut log = Log::new(BTreeMap::new(), json, once);
    if once {
        one_pass(&node, PassOptions { forced: true, peer }, &mut log).await;
        return match log.round_error {
            Some(e) => Err(anyhow::anyhow!(e)),
            None => Ok(0),
        };
    }
    let mut schedule = node.schedule();
    schedule.peer = peer;
    node.set_schedule(schedule);
    eprintln!("Verifying on schedule (Ctrl-C stops).");
    run_loop(&node, log).await
}

/// The schedule of each command.
pub fn schedule(ops: OpKinds, tick: Option<u64>, sync_every: Option<u64>) -> Schedule {
    let mut s = Schedule {
        ops,
        // `p2pds sync --once` looks for invitations at most every half hour.
        discover_when_forced: ops != OpKinds::SYNC,
        ..Schedule::default()
    };
    if let Some(t) = tick {
        s.tick = Duration::from_secs(t.max(1));
    }
    if let Some(every) = sync_every {
        s.sync_every = Duration::from_secs(every.max(5));
    }
    s
}
