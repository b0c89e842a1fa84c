//! `p2pds policy …`: check and evaluate replication policies (see `p2pds::policy`).
//!
//! The IO edge of the pure policy engine: reads files, reads the clock when `--now` is not
//! given, prints. Exit codes: 0 done (a policy is valid, a report printed), 1 a policy has
//! problems (listed) or a file cannot be read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use p2pds::policy::report::{Condition, Report, Status};
use p2pds::policy::{
    bench, check_bytes, combine, compliance, defaults, detect, input, Checked, Observations,
    Timestamp, MAX_POLICY_BYTES,
};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file (a bare org.p2pds.policy record, or getRecord's {uri, cid, value}):
    /// exit 0 when it is valid, with the effective policy (defaults marked) and its block
    /// sampling in words, 1 with its problems listed.
    Check {
        /// The policy file (JSON).
        file: PathBuf,
        /// Blocks in a copy, for how long checking every block of it takes.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
        blocks: u64,
    },
    /// Evaluate compliance: the state of every copy, node, account and of the group.
    Eval {
        /// The policy file (JSON).
        #[arg(long)]
        policy: PathBuf,
        /// The observations file (JSON; format in docs/policy.md).
        #[arg(long)]
        observations: PathBuf,
        /// Evaluate as of this instant (RFC 3339) instead of the current time.
        #[arg(long)]
        now: Option<String>,
        /// Print the full report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What a member's node must hold and verify; several policies combine (strictest wins).
    Obligations {
        /// A policy file; repeat for several policies.
        #[arg(long = "policy", required = true)]
        policies: Vec<PathBuf>,
        /// The member (account DID or node DID).
        #[arg(long)]
        node: String,
        /// Observations, to move the accounts of members that are down to the next ones.
        #[arg(long)]
        observations: Option<PathBuf>,
        /// As of this instant (RFC 3339); only used with --observations.
        #[arg(long)]
        now: Option<String>,
    },
    /// Time an evaluation on a synthetic group (use a release build).
    Bench {
        #[arg(long, default_value_t = 1000)]
        members: usize,
        #[arg(long, default_value_t = 1000)]
        subjects: usize,
        /// Days of observations.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a policy subcommand and returns the process exit code.
pub fn run(cmd: PolicyCommand) -> anyhow::Result<i32> {
    match cmd {
        PolicyCommand::Check { file, blocks } => check(&file, blocks),
        PolicyCommand::Eval {
            policy,
            observations,
            now,
            json,
        } => eval(&policy, &observations, now.as_deref(), json),
        PolicyCommand::Obligations {
            policies,
            node,
            observations,
            now,
        } => obligations(&policies, &node, observations.as_deref(), now.as_deref()),
        PolicyCommand::Bench {
            members,
            subjects,
            days,
            json,
        } => {
            let report = bench::run(members, subjects, days);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_bench(&report);
            }
            Ok(if report.error.is_some() { 1 } else { 0 })
        }
    }
}

/// What went wrong reading a file, in words (no "os error" numbers).
fn io_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound => "there is no such file".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::IsADirectory => "it is a folder, not a file".into(),
        _ => {
            let text = e.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text);
            text.to_lowercase()
        }
    }
}

/// The bytes of a file; with a `limit`, at most one byte more than it (enough to refuse it).
fn read(path: &Path, limit: Option<usize>) -> anyhow::Result<Vec<u8>> {
    let cannot =
        |e: std::io::Error| anyhow::anyhow!("cannot read {}: {}", path.display(), io_words(&e));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    match limit {
        Some(n) => file
            .take(u64::try_from(n).unwrap_or(u64::MAX).saturating_add(1))
            .read_to_end(&mut bytes),
        None => (&file).read_to_end(&mut bytes),
    }
    .map_err(cannot)?;
    Ok(bytes)
}

/// Reads and checks a policy; prints its problems and returns `None` when it has some.
fn load_policy(path: &Path) -> anyhow::Result<Option<Checked>> {
    match check_bytes(&read(path, Some(MAX_POLICY_BYTES))?) {
        Ok(checked) => Ok(Some(checked)),
        Err(problems) => {
            println!("{}: {problems}", path.display());
            Ok(None)
        }
    }
}

fn parse_now(now: Option<&str>) -> anyhow::Result<Timestamp> {
    match now {
        Some(text) => Timestamp::parse(text).context("--now"),
        None => Ok(Timestamp::from_millis(
            chrono::Utc::now().timestamp_millis(),
        )),
    }
}

fn read_observations(path: &Path) -> anyhow::Result<Observations> {
    input::observations(&read(path, None)?).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (the format is in docs/policy.md, \"The observations file\")",
            path.display()
        )
    })
}

fn check(file: &Path, blocks: u64) -> anyhow::Result<i32> {
    let Some(checked) = load_policy(file)? else {
        return Ok(1);
    };
    let settings = defaults::effective(&checked);
    let Checked {
        policy, warnings, ..
    } = checked;
    let read_as = serde_json::to_value(policy.policy_type)?
        .as_str()
        .unwrap_or_default()
        .to_string();
    // A type this version does not know is shown as written, and how it is read.
    let kind = if policy.record.policy_type == read_as {
        read_as
    } else {
        format!("{}, read as {read_as}", policy.record.policy_type)
    };
    println!(
        "{}: ok: \"{}\" ({kind}), {} members, {} account{}, minCopies {}, cid {}",
        file.display(),
        policy.name,
        policy.members.len(),
        policy.replication.subjects.len(),
        if policy.replication.subjects.len() == 1 {
            ""
        } else {
            "s"
        },
        policy.replication.min_copies,
        policy.reference.cid
    );
    println!(
        "effective policy (\"default\": left out of the file, the documented default applies):"
    );
    let width = settings.iter().map(|s| s.path.len()).max().unwrap_or(0);
    for s in settings {
        let mark = if s.defaulted { "  (default)" } else { "" };
        println!("  {:<width$}  {}{mark}", s.path, s.value);
    }
    if let Some(words) = detect::summary(&policy.verification, blocks) {
        println!("{words}");
    }
    for w in warnings {
        println!("warning: {w}");
    }
    Ok(0)
}

fn eval(policy: &Path, observations: &Path, now: Option<&str>, json: bool) -> anyhow::Result<i32> {
    let Some(checked) = load_policy(policy)? else {
        return Ok(1);
    };
    let obs = read_observations(observations)?;
    let now = parse_now(now)?;
    let report = compliance::evaluate(&checked.policy, &obs, now);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report));
    }
    Ok(0)
}

fn obligations(
    policies: &[PathBuf],
    node: &str,
    observations: Option<&Path>,
    now: Option<&str>,
) -> anyhow::Result<i32> {
    let mut loaded = Vec::new();
    for path in policies {
        match load_policy(path)? {
            Some(c) => loaded.push(c.policy),
            None => return Ok(1),
        }
    }
    let mut down = BTreeMap::new();
    if let Some(path) = observations {
        let obs = read_observations(path)?;
        let now = parse_now(now)?;
        for p in &loaded {
            for (member, since) in compliance::down_members(p, &obs, now) {
                let slot = down.entry(member).or_insert(since);
                *slot = (*slot).min(since);
            }
        }
    }
    let refs: Vec<&p2pds::policy::Policy> = loaded.iter().collect();
    match combine::obligations(&refs, node, &down) {
        Some(o) => {
            println!("{}", serde_json::to_string_pretty(&o)?);
            Ok(0)
        }
        None => {
            println!("{node} is not a member of any of these policies");
            Ok(1)
        }
    }
}

fn problem_line(out: &mut String, scope: &str, c: &Condition) {
    let _ = writeln!(
        out,
        "  - {scope}: {} is {:?} ({}): {}",
        c.kind, c.status, c.reason, c.message
    );
}

/// The report for a person: states first, then every condition that is not True.
/// "5 records / 12 kB", as a sync tool says what is out of sync.
fn needs_words(n: p2pds::policy::observations::Needs) -> String {
    if n.records == 0 && n.bytes == 0 {
        // A tree node the checker does not hold either: what is below it can't be counted.
        return "part of its tree (how much can't be told from here)".into();
    }
    format!(
        "{} record{} / {}",
        n.records,
        if n.records == 1 { "" } else { "s" },
        p2pds::store::space::size_words(n.bytes)
    )
}

pub(crate) fn human(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({})",
        r.policy.name,
        r.policy.uri.as_deref().unwrap_or(&r.policy.cid)
    );
    let _ = writeln!(
        out,
        "evaluated at {}: {}",
        r.evaluated_at,
        r.state.as_str().to_uppercase()
    );
    let phase = serde_json::to_value(r.lifecycle.phase).ok();
    let phase = phase.as_ref().and_then(|v| v.as_str()).unwrap_or("?");
    match r.lifecycle.active_since {
        Some(t) => {
            let _ = writeln!(out, "policy: {phase} since {t}");
        }
        None => {
            let _ = writeln!(out, "policy: {phase}");
        }
    }
    let _ = writeln!(out, "\naccounts (minCopies {})", r.policy.min_copies);
    for s in &r.subjects {
        let _ = writeln!(
            out,
            "  {:<32} {:<10} {} up, {} ok",
            s.did,
            s.state.as_str(),
            s.copies,
            s.healthy_copies
        );
    }
    let _ = writeln!(
        out,
        "\nnodes (figures over {} from {})",
        r.window.length, r.window.from
    );
    for n in &r.nodes {
        let uptime = n
            .figures
            .uptime
            .as_ref()
            .map_or("-".to_string(), |u| format!("{}%", u.percent));
        let pass = n
            .figures
            .verification
            .pass_rate
            .as_ref()
            .map_or("-".to_string(), |p| format!("{}/{}", p.part, p.whole));
        let _ = writeln!(
            out,
            "  {:<32} {:<10} uptime {:<9} verified {:<7} last seen {}",
            n.member,
            n.state.as_str(),
            uptime,
            pass,
            n.last_seen.map_or("never".to_string(), |t| t.to_string())
        );
        for c in &n.copies {
            if let Some(needs) = c.needs {
                let _ = writeln!(
                    out,
                    "    its copy of {} is not whole: needs {}",
                    c.subject,
                    needs_words(needs)
                );
            }
        }
    }
    let mut problems = String::new();
    for c in r.conditions.iter().filter(|c| c.status != Status::True) {
        problem_line(&mut problems, "group", c);
    }
    for s in &r.subjects {
        for c in s.conditions.iter().filter(|c| c.status != Status::True) {
            problem_line(&mut problems, &s.did, c);
        }
    }
    for n in &r.nodes {
        for c in n.conditions.iter().filter(|c| c.status == Status::False) {
            problem_line(&mut problems, &n.member, c);
        }
    }
    if !problems.is_empty() {
        let _ = writeln!(out, "\nnot true:");
        out.push_str(&problems);
    }
    out
}

fn print_bench(r: &bench::BenchReport) {
    if let Some(e) = &r.error {
        println!("the synthetic policy was refused: {e}");
        return;
    }
    println!(
        "policy bench: {} members, {} accounts, {} days of observations",
        r.members, r.subjects, r.days
    );
    let o = &r.observations;
    println!(
        "  observations: {} ({} heartbeats, {} heads, {} holdings, {} verification results, {} acks), {:.1} MB as JSON",
        o.total,
        o.heartbeats,
        o.heads,
        o.holdings,
        o.verifications,
        o.acks,
        r.observations_json_bytes as f64 / 1e6
    );
    println!("  generate:  {:>8.1} ms", r.generate_ms);
    println!("  parse:     {:>8.1} ms (observations JSON)", r.parse_ms);
    println!(
        "  evaluate:  {:>8.1} ms median of {} (min {:.1}, max {:.1})",
        r.evaluate_ms_median, r.runs, r.evaluate_ms_min, r.evaluate_ms_max
    );
    println!(
        "  serialize: {:>8.1} ms ({:.1} MB report)",
        r.serialize_ms,
        r.report_json_bytes as f64 / 1e6
    );
    let states = |m: &BTreeMap<p2pds::policy::State, usize>| {
        m.iter()
            .map(|(s, n)| format!("{} {n}", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "  result: group {}; nodes: {}; accounts: {}",
        r.state.as_str(),
        states(&r.nodes_by_state),
        states(&r.subjects_by_state)
    );
}
