//! Compliance: from a policy, the acks and the observations, at `now`, the state of every copy,
//! node, subject and of the group (seed §5, DESIGN §4).
//!
//! The state machine, per member's node:
//! - **abandoned** when silent longer than `abandonAfter`; **failed** when silent longer than
//!   `offlineGracePeriod` (silence counts from the last sign of life, or from the policy's start
//!   for a node never heard from); **unknown** when never heard from but not yet overdue.
//! - Otherwise, per copy it must hold: **at-risk** when not held, when the last
//!   `maxConsecutiveFailures` verification rounds failed, or when it lags more than `maxLag`
//!   behind the account's newest commit; **failed** when the failing streak has lasted longer
//!   than `offlineGracePeriod`; **degraded** after 1 or more failed rounds in a row; **ok**.
//!   Within `recoveryGracePeriod` of the copy's start (the policy becoming active, the node
//!   coming back after being offline, or the node taking an account over) any of these is
//!   **recovering** instead.
//! - The node is the worst of its copies, and at least degraded when its own verifications of
//!   others are overdue or it misses an SLA target.
//!
//! A subject is ok when `minCopies` copies are ok, degraded when enough copies are up but not
//! all ok, recovering when the copies being made would make up the number, at-risk when too few
//! copies are up, failed when none are. The group is the worst subject (at least degraded when a
//! node is not ok), and unknown while the policy is not active.
//!
//! Invariants: a pure function of (policy, observations, now); observations after `now` are
//! ignored; the output is sorted and does not depend on the order of the inputs.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use super::lifecycle::{self, AckState, Phase};
use super::model::Policy;
use super::obligations::{self, Holders, Ring};
use super::observations::{Head, Heartbeat, Holding, Needs, Observations, Outcome, Verification};
use super::report::{
    Commit, Condition, CopyReport, DutyReport, Figures, HolderSummary, Ignored, NodeReport,
    PolicySummary, Ratio, Report, SlaFigures, State, Status, SubjectReport, Summary,
    VerificationFigures, Window,
};
use super::time::{Duration, Timestamp};
use super::window::{self, Copied};

/// A small, fast, deterministic hasher for index maps (FxHash's mixing). Maps built with it are
/// only looked up, never iterated, so their order cannot leak into a report.
#[derive(Default, Clone, Copy)]
struct Fx(u64);

impl Fx {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let mut w = [0u8; 8];
        for (slot, b) in w.iter_mut().zip(chunks.remainder()) {
            *slot = *b;
        }
        self.add(u64::from_le_bytes(w));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

/// Remembers the last lookup: observations come grouped by node or account, so most lookups
/// repeat the one before (a string comparison instead of a hash).
struct Memo<'o, V: Copy> {
    key: Option<&'o str>,
    val: Option<V>,
}

impl<'o, V: Copy> Memo<'o, V> {
    fn new() -> Self {
        Memo {
            key: None,
            val: None,
        }
    }

    fn get(&mut self, map: &FxMap<&str, V>, key: &'o str) -> Option<V> {
        if self.key != Some(key) {
            self.key = Some(key);
            self.val = map.get(key).copied();
        }
        self.val
    }
}

/// Appends `at` unless it repeats the last value (sightings come in runs of equal times).
fn push_new(list: Option<&mut Vec<i64>>, at: i64) {
    if let Some(list) = list {
        if list.last() != Some(&at) {
            list.push(at);
        }
    }
}

/// Whether a member's node is heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Liveness {
    Alive,
    Offline,
    Abandoned,
    /// Never heard from, not overdue yet.
    Unseen,
}

#[derive(Debug, Clone, Copy)]
struct Live {
    kind: Liveness,
    last_seen: Option<i64>,
    /// Start of the current run of sightings without a gap longer than `offlineGracePeriod`.
    run_start: Option<i64>,
    /// The node was heard from before a gap: it came back.
    returned: bool,
    /// When the current kind began (went offline / abandoned / came online).
    since: Option<i64>,
}

fn liveness(sightings: &[i64], start: i64, now: i64, offline: i64, abandon: i64) -> Live {
    let Some(&last) = sightings.last() else {
        let silent = now - start;
        let (kind, since) = if silent > abandon {
            (Liveness::Abandoned, Some(start + abandon))
        } else if silent > offline {
            (Liveness::Offline, Some(start + offline))
        } else {
            (Liveness::Unseen, None)
        };
        return Live {
            kind,
            last_seen: None,
            run_start: None,
            returned: false,
            since,
        };
    };
    let mut run_start = last;
    let mut returned = false;
    for pair in sightings.windows(2).rev() {
        if let [a, b] = pair {
            if b - a > offline {
                returned = true;
                break;
            }
            run_start = *a;
        }
    }
    let silent = now - last;
    let (kind, since) = if silent > abandon {
        (Liveness::Abandoned, Some(last + abandon))
    } else if silent > offline {
        (Liveness::Offline, Some(last + offline))
    } else {
        (Liveness::Alive, Some(run_start))
    };
    Live {
        kind,
        last_seen: Some(last),
        run_start: Some(run_start),
        returned,
        since,
    }
}

/// A revision (TID), compared as its text is, but mostly without reading the text: the first 16
/// bytes are kept inline (a TID has 13), so comparisons do not chase pointers.
#[derive(Debug, Clone, Copy)]
struct Rev<'a> {
    head: [u8; 16],
    len: usize,
    full: &'a str,
}

impl<'a> Rev<'a> {
    fn new(full: &'a str) -> Self {
        let mut head = [0u8; 16];
        for (slot, b) in head.iter_mut().zip(full.bytes()) {
            *slot = b;
        }
        Rev {
            head,
            len: full.len(),
            full,
        }
    }
}

impl Ord for Rev<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Equal zero-padded heads of two short strings: one is the other plus NUL bytes, and
        // the shorter sorts first, as with `str`.
        self.head.cmp(&other.head).then_with(|| {
            if self.len <= 16 && other.len <= 16 {
                self.len.cmp(&other.len)
            } else {
                self.full.cmp(other.full)
            }
        })
    }
}

impl PartialOrd for Rev<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Rev<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Rev<'_> {}

/// What was observed about one member's copy of one subject.
#[derive(Default)]
struct PairObs<'a> {
    /// (syncedAt, rev).
    holdings: Vec<(i64, Rev<'a>)>,
    /// (at, outcome, verifier member index), required layers only.
    results: Vec<(i64, Outcome, usize)>,
}

/// One verification round: all results for a copy at the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Round {
    at: i64,
    outcome: Outcome,
}

fn rounds(results: &[(i64, Outcome, usize)]) -> Vec<Round> {
    let mut out: Vec<Round> = Vec::new();
    for &(at, outcome, _) in results {
        match out.last_mut() {
            Some(r) if r.at == at => {
                // A round fails if any layer failed, passes if any passed and none failed.
                r.outcome = match (r.outcome, outcome) {
                    (Outcome::Fail, _) | (_, Outcome::Fail) => Outcome::Fail,
                    (Outcome::Pass, _) | (_, Outcome::Pass) => Outcome::Pass,
                    _ => Outcome::Unreachable,
                };
            }
            _ => out.push(Round { at, outcome }),
        }
    }
    out
}

/// The evaluated copy, before it becomes a report.
struct PairEval {
    member: usize,
    subject: usize,
    obligated: bool,
    takes_over_from: Vec<usize>,
    state: State,
    held: Option<(i64, String)>,
    counted: bool,
    lag: Option<Duration>,
    streak: u32,
    last_verified: Option<i64>,
    /// Taken (moved) into the node's report once the node's aggregates are made.
    conditions: RefCell<Vec<Condition>>,
    delays: Vec<Copied>,
    passed: u64,
    failed: u64,
    unreachable: u64,
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn dur(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0))
}

/// Everything that does not change from one copy to the next.
struct Ctx<'p> {
    policy: &'p Policy,
    now: i64,
    start: i64,
    from: i64,
    offline: i64,
    recovery: i64,
    max_lag: i64,
    max_failures: u32,
}

/// The newest commit of a subject: the greatest rev, first seen at the earliest time.
fn newest_head<'a>(heads: &[(i64, Rev<'a>)]) -> Option<(i64, Rev<'a>)> {
    let mut best: Option<(i64, Rev)> = None;
    for &(at, rev) in heads {
        best = match best {
            Some((bat, brev)) if rev < brev || (rev == brev && at >= bat) => Some((bat, brev)),
            _ => Some((at, rev)),
        };
    }
    best
}

/// Per copy (node, subject), what the newest judged whole-copy check (layer 2, by any
/// verifier) found it lacks: `None` when that check passed.
fn newest_needs(results: &[Verification]) -> FxMap<(&str, &str), (Timestamp, Option<Needs>)> {
    let mut out: FxMap<(&str, &str), (Timestamp, Option<Needs>)> = FxMap::default();
    for v in results
        .iter()
        .filter(|v| v.layer == 2 && v.outcome != Outcome::Unreachable)
    {
        let found = (v.at, v.needs.filter(|_| v.outcome == Outcome::Fail));
        out.entry((v.node.as_str(), v.subject.as_str()))
            .and_modify(|e| {
                if v.at > e.0 {
                    *e = found;
                }
            })
            .or_insert(found);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn evaluate_pair(
    ctx: &Ctx,
    member: usize,
    subject: usize,
    obligated: bool,
    takes_over_from: Vec<usize>,
    slot_since: Option<i64>,
    live: &Live,
    obs: Option<&PairObs>,
    heads: &[(i64, Rev)],
    who: &str,
    subject_did: &str,
) -> PairEval {
    let empty = PairObs::default();
    let obs = obs.unwrap_or(&empty);
    let policy = ctx.policy;

    // Holdings: the latest one is the copy's state; prefix maxima of rev find when each commit
    // was first copied.
    let current = obs
        .holdings
        .last()
        .map(|(at, rev)| (*at, rev.full.to_string()));
    let mut prefix: Vec<Rev> = Vec::with_capacity(obs.holdings.len());
    for (_, rev) in &obs.holdings {
        let m = match prefix.last() {
            Some(p) if *p > *rev => *p,
            _ => *rev,
        };
        prefix.push(m);
    }
    let caught = |rev: Rev| -> Option<i64> {
        let i = prefix.partition_point(|p| *p < rev);
        obs.holdings.get(i).map(|(at, _)| *at)
    };

    // Lag and the sync condition.
    let pair_start = slot_since.map_or(ctx.start, |s| s.max(ctx.start));
    let mut oldest_open: Option<i64> = None;
    let mut last_late_close: Option<i64> = None;
    let mut delays = Vec::new();
    for &(at, rev) in heads {
        let c = caught(rev);
        match c {
            None => oldest_open = Some(oldest_open.map_or(at, |o: i64| o.min(at))),
            Some(c) if c - at > ctx.max_lag => {
                last_late_close = Some(last_late_close.map_or(c, |l: i64| l.max(c)))
            }
            Some(_) => {}
        }
        if obligated && at >= ctx.from && at >= pair_start {
            delays.push(match c {
                Some(c) => Copied::After(u64::try_from((c - at).max(0) / 1000).unwrap_or(0)),
                None => Copied::NotYet(u64::try_from((ctx.now - at).max(0) / 1000).unwrap_or(0)),
            });
        }
    }
    let lag = current
        .as_ref()
        .map(|_| dur(oldest_open.map_or(0, |o| ctx.now - o)));
    let lagging = lag.is_some_and(|l| l.millis() > ctx.max_lag);

    // Verification rounds.
    let rounds = rounds(&obs.results);
    let mut streak = 0u32;
    let mut streak_start: Option<i64> = None;
    let mut pass_run_start: Option<i64> = None;
    let mut judged_any = false;
    for r in rounds.iter().rev() {
        match r.outcome {
            Outcome::Unreachable => continue,
            Outcome::Fail if pass_run_start.is_none() => {
                judged_any = true;
                streak += 1;
                streak_start = Some(r.at);
            }
            Outcome::Pass if streak == 0 => {
                judged_any = true;
                pass_run_start = Some(r.at);
            }
            _ => break,
        }
    }
    let last_verified = rounds
        .iter()
        .rev()
        .find(|r| r.outcome != Outcome::Unreachable)
        .map(|r| r.at);
    let (mut passed, mut failed, mut unreachable) = (0, 0, 0);
    for r in rounds.iter().filter(|r| r.at >= ctx.from) {
        match r.outcome {
            Outcome::Pass => passed += 1,
            Outcome::Fail => failed += 1,
            Outcome::Unreachable => unreachable += 1,
        }
    }

    // Conditions.
    let mut conditions = Vec::with_capacity(3);
    let grace_start = match live.run_start {
        Some(run) if live.kind == Liveness::Alive => pair_start.max(run),
        _ => pair_start,
    };
    let in_grace = ctx.now < grace_start.saturating_add(ctx.recovery);
    conditions.push(match &current {
        Some((at, rev)) => Condition::new(
            "Held",
            Status::True,
            "CopyHeld",
            format!("{who} holds {subject_did} at rev {rev}"),
            obs.holdings
                .first()
                .map(|(first, _)| ts(*first))
                .or(Some(ts(*at))),
        ),
        None => Condition::new(
            "Held",
            Status::False,
            if in_grace { "InitialSync" } else { "NotHeld" },
            if in_grace {
                format!(
                    "{who} has no copy of {subject_did} yet; it has until {} to make one",
                    ts(grace_start + ctx.recovery)
                )
            } else {
                format!("{who} has published no copy of {subject_did}")
            },
            Some(ts(grace_start)),
        ),
    });
    conditions.push(if current.is_none() {
        Condition::new(
            "InSync",
            Status::Unknown,
            "NotHeld",
            format!("{who} holds no copy of {subject_did} to compare"),
            None,
        )
    } else if heads.is_empty() {
        Condition::new(
            "InSync",
            Status::Unknown,
            "NoCommitsSeen",
            format!("no commit of {subject_did} was observed to compare {who}'s copy with"),
            None,
        )
    } else if lagging {
        let o = oldest_open.unwrap_or(ctx.now);
        Condition::new(
            "InSync",
            Status::False,
            "SyncLagging",
            format!(
                "{who}'s copy of {subject_did} is {} behind (maxLag {})",
                dur(ctx.now - o),
                policy.max_lag
            ),
            Some(ts(o + ctx.max_lag)),
        )
    } else {
        let first = obs.holdings.first().map(|(at, _)| *at);
        let since = match (last_late_close, first) {
            (Some(l), Some(f)) => Some(l.max(f)),
            (None, f) => f,
            (l, None) => l,
        };
        let message = match lag {
            Some(l) if l > Duration::ZERO => format!(
                "{who}'s copy of {subject_did} is {l} behind, within maxLag {}",
                policy.max_lag
            ),
            _ => format!("{who}'s copy of {subject_did} is at the newest commit seen"),
        };
        Condition::new(
            "InSync",
            Status::True,
            "WithinMaxLag",
            message,
            since.map(ts),
        )
    });
    conditions.push(if !judged_any {
        Condition::new(
            "Verified",
            Status::Unknown,
            "NotVerifiedYet",
            format!("no verification of {who}'s copy of {subject_did} yet"),
            None,
        )
    } else if streak > 0 {
        Condition::new(
            "Verified",
            Status::False,
            "VerificationFailed",
            format!(
                "the last {} of {who}'s copy of {subject_did} failed (at risk at {})",
                if streak == 1 {
                    "verification round".to_string()
                } else {
                    format!("{streak} verification rounds")
                },
                ctx.max_failures
            ),
            streak_start.map(ts),
        )
    } else {
        Condition::new(
            "Verified",
            Status::True,
            "VerificationPassed",
            format!("the last verification of {who}'s copy of {subject_did} passed"),
            pass_run_start.map(ts),
        )
    });

    // State.
    let state = match live.kind {
        Liveness::Abandoned => State::Abandoned,
        Liveness::Offline => State::Failed,
        Liveness::Unseen => State::Unknown,
        Liveness::Alive => {
            let mut worst = State::Ok;
            if current.is_none() || lagging {
                worst = worst.max(State::AtRisk);
            }
            if streak >= ctx.max_failures {
                let persistent = streak_start.is_some_and(|s| ctx.now - s > ctx.offline);
                worst = worst.max(if persistent {
                    State::Failed
                } else {
                    State::AtRisk
                });
            } else if streak > 0 {
                worst = worst.max(State::Degraded);
            }
            if worst > State::Ok && in_grace {
                State::Recovering
            } else {
                worst
            }
        }
    };
    let counted = current.is_some() && live.kind == Liveness::Alive && state != State::Failed;
    PairEval {
        member,
        subject,
        obligated,
        takes_over_from,
        state,
        held: current,
        counted,
        lag,
        streak,
        last_verified,
        conditions: RefCell::new(conditions),
        delays,
        passed,
        failed,
        unreachable,
    }
}

/// Members that are down (failed or abandoned) at `now`, with when they went down: the input
/// of [`obligations::for_member`] that moves their accounts to the next members on the ring.
pub fn down_members(
    policy: &Policy,
    obs: &Observations,
    now: Timestamp,
) -> BTreeMap<String, Timestamp> {
    let report = evaluate(policy, obs, now);
    report
        .nodes
        .iter()
        .filter(|n| matches!(n.state, State::Failed | State::Abandoned))
        .filter_map(|n| {
            let online = n.conditions.iter().find(|c| c.kind == "Online")?;
            (online.status == Status::False)
                .then(|| (n.member.clone(), online.since.unwrap_or(now)))
        })
        .collect()
}

fn list(items: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    s
}

/// Aggregates copy conditions of one type: False when any is False (since the earliest such),
/// True when all are True (since the latest), Unknown otherwise.
fn aggregate(
    kind: &'static str,
    copies: &[&PairEval],
    who: &str,
    what_true: &str,
    what_false: &str,
    reason_true: &'static str,
    reason_false: &'static str,
) -> Condition {
    let mut falses: Vec<(String, Option<Timestamp>)> = Vec::new();
    let mut unknown = 0;
    let mut latest_true: Option<Timestamp> = None;
    for p in copies {
        if let Some(c) = p.conditions.borrow().iter().find(|c| c.kind == kind) {
            match c.status {
                Status::False => falses.push((c.message.clone(), c.since)),
                Status::Unknown => unknown += 1,
                Status::True => latest_true = latest_true.max(c.since),
            }
        }
    }
    if !falses.is_empty() {
        let since = falses.iter().filter_map(|(_, s)| *s).min();
        let messages: Vec<String> = falses.into_iter().map(|(m, _)| m).collect();
        Condition::new(
            kind,
            Status::False,
            reason_false,
            format!("{what_false}: {}", list(&messages)),
            since,
        )
    } else if unknown > 0 || copies.is_empty() {
        let message = if copies.is_empty() {
            format!("{who} has no copy to hold")
        } else {
            format!("{unknown} of {}'s copies cannot be judged yet", who)
        };
        Condition::new(
            kind,
            Status::Unknown,
            if copies.is_empty() {
                "NoCopies"
            } else {
                "NotJudgedYet"
            },
            message,
            None,
        )
    } else {
        Condition::new(
            kind,
            Status::True,
            reason_true,
            what_true.to_string(),
            latest_true,
        )
    }
}

/// Evaluates `policy` at `now` against everything observed.
pub fn evaluate(policy: &Policy, obs: &Observations, now: Timestamp) -> Report {
    let comp = &policy.compliance;
    let life = lifecycle::evaluate(policy, &obs.acks, now);
    let now_ms = now.millis();
    let start = life.start.millis();
    let window_len = policy.window();
    let from = now.minus(window_len).millis().max(start).min(now_ms);
    let ctx = Ctx {
        policy,
        now: now_ms,
        start,
        from,
        offline: comp.offline_grace_period.millis(),
        recovery: comp.recovery_grace_period.millis(),
        max_lag: policy.max_lag.millis(),
        max_failures: comp.max_consecutive_failures,
    };
    let n_members = policy.members.len();
    let subjects = &policy.replication.subjects;
    // Ignored entries, by why (0 future, 1 unknown node, 2 unknown subject, 3 unused
    // verification); counted once each however often they were read.
    let mut ignored_beats: Vec<(u8, &Heartbeat)> = Vec::new();
    let mut ignored_heads: Vec<(u8, &Head)> = Vec::new();
    let mut ignored_holdings: Vec<(u8, &Holding)> = Vec::new();
    let mut ignored_results: Vec<(u8, &Verification)> = Vec::new();

    // Indexes.
    let needs = newest_needs(&obs.verifications);
    let mut node_idx: FxMap<&str, usize> = FxMap::default();
    for (i, m) in policy.members.iter().enumerate() {
        node_idx.insert(m.node.as_str(), i);
    }
    let mut subj_idx: FxMap<&str, usize> = FxMap::default();
    for (i, s) in subjects.iter().enumerate() {
        subj_idx.insert(s.as_str(), i);
    }
    let owner_of: Vec<Option<usize>> = subjects
        .iter()
        .map(|s| {
            policy
                .members
                .binary_search_by(|m| m.did.as_str().cmp(s))
                .ok()
        })
        .collect();
    let layers = &policy.verification.layers;

    // Buckets.
    let mut beats: Vec<Vec<i64>> = vec![Vec::new(); n_members];
    let mut sightings: Vec<Vec<i64>> = vec![Vec::new(); n_members];
    let mut heads: Vec<Vec<(i64, Rev)>> = vec![Vec::new(); subjects.len()];
    let mut pair_of: FxMap<u64, usize> = FxMap::default();
    let mut pairs: Vec<(usize, usize, PairObs)> = Vec::new();
    let key = |m: usize, s: usize| ((m as u64) << 32) | s as u64;
    let mut pair_slot = |m: usize, s: usize, pairs: &mut Vec<(usize, usize, PairObs)>| -> usize {
        *pair_of.entry(key(m, s)).or_insert_with(|| {
            pairs.push((m, s, PairObs::default()));
            pairs.len() - 1
        })
    };

    let mut hb_node = Memo::new();
    for hb in &obs.heartbeats {
        let at = hb.at.millis();
        if at > now_ms {
            ignored_beats.push((0, hb));
            continue;
        }
        match hb_node.get(&node_idx, hb.node.as_str()) {
            Some(m) => {
                push_new(beats.get_mut(m), at);
                push_new(sightings.get_mut(m), at);
            }
            None => ignored_beats.push((1, hb)),
        }
    }
    let mut head_subject = Memo::new();
    for h in &obs.heads {
        let at = h.at.millis();
        if at > now_ms {
            ignored_heads.push((0, h));
            continue;
        }
        match head_subject
            .get(&subj_idx, h.subject.as_str())
            .and_then(|s| heads.get_mut(s))
        {
            Some(list) => list.push((at, Rev::new(&h.rev))),
            None => ignored_heads.push((2, h)),
        }
    }
    let (mut holding_node, mut holding_subject) = (Memo::new(), Memo::new());
    for h in &obs.holdings {
        let at = h.synced_at.millis();
        if at > now_ms {
            ignored_holdings.push((0, h));
            continue;
        }
        let Some(m) = holding_node.get(&node_idx, h.node.as_str()) else {
            ignored_holdings.push((1, h));
            continue;
        };
        push_new(sightings.get_mut(m), at);
        let Some(s) = holding_subject.get(&subj_idx, h.subject.as_str()) else {
            ignored_holdings.push((2, h));
            continue;
        };
        if owner_of.get(s).copied().flatten() == Some(m) {
            // A member's copy of its own account is not one of the group's copies.
            continue;
        }
        let p = pair_slot(m, s, &mut pairs);
        if let Some((_, _, po)) = pairs.get_mut(p) {
            po.holdings.push((at, Rev::new(&h.rev)));
        }
    }
    let (mut by_verifier, mut target, mut subject) = (Memo::new(), Memo::new(), Memo::new());
    let mut last_pair: Option<(usize, usize, usize)> = None;
    for v in &obs.verifications {
        let at = v.at.millis();
        if at > now_ms {
            ignored_results.push((0, v));
            continue;
        }
        let (Some(verifier), Some(m)) = (
            by_verifier.get(&node_idx, v.verifier.as_str()),
            target.get(&node_idx, v.node.as_str()),
        ) else {
            ignored_results.push((1, v));
            continue;
        };
        push_new(sightings.get_mut(verifier), at);
        if verifier == m || !layers.contains(&v.layer) {
            ignored_results.push((3, v));
            continue;
        }
        let Some(s) = subject.get(&subj_idx, v.subject.as_str()) else {
            ignored_results.push((2, v));
            continue;
        };
        if v.outcome == Outcome::Pass {
            push_new(sightings.get_mut(m), at);
        }
        if owner_of.get(s).copied().flatten() == Some(m) {
            ignored_results.push((3, v));
            continue;
        }
        let p = match last_pair {
            Some((lm, ls, lp)) if lm == m && ls == s => lp,
            _ => pair_slot(m, s, &mut pairs),
        };
        last_pair = Some((m, s, p));
        if let Some((_, _, po)) = pairs.get_mut(p) {
            po.results.push((at, v.outcome, verifier));
        }
    }
    let mut ignored = Ignored {
        acks: life.ignored_acks,
        ..Ignored::default()
    };
    let mut tally = |why: u8| match why {
        0 => ignored.future += 1,
        1 => ignored.unknown_nodes += 1,
        2 => ignored.unknown_subjects += 1,
        _ => ignored.verifications += 1,
    };
    ignored_beats.sort_unstable();
    ignored_beats.dedup();
    ignored_beats.iter().for_each(|(why, _)| tally(*why));
    ignored_heads.sort_unstable();
    ignored_heads.dedup();
    ignored_heads.iter().for_each(|(why, _)| tally(*why));
    ignored_holdings.sort_unstable();
    ignored_holdings.dedup();
    ignored_holdings.iter().for_each(|(why, _)| tally(*why));
    ignored_results.sort_unstable();
    ignored_results.dedup();
    ignored_results.iter().for_each(|(why, _)| tally(*why));

    for list in beats.iter_mut().chain(sightings.iter_mut()) {
        list.sort_unstable();
        list.dedup();
    }
    for list in heads.iter_mut() {
        list.sort_unstable();
        list.dedup();
    }
    for (_, _, po) in pairs.iter_mut() {
        po.holdings.sort_unstable();
        po.holdings.dedup();
        po.results.sort_unstable();
        po.results.dedup();
    }

    // Liveness, then placement (down members' accounts move on).
    let lives: Vec<Live> = sightings
        .iter()
        .map(|s| liveness(s, start, now_ms, ctx.offline, comp.abandon_after.millis()))
        .collect();
    let down = |m: usize| -> Option<Timestamp> {
        let l = lives.get(m)?;
        matches!(l.kind, Liveness::Offline | Liveness::Abandoned)
            .then(|| ts(l.since.unwrap_or(start)))
    };
    let ring = Ring::new(policy);
    let placements: Vec<Holders> = subjects
        .iter()
        .map(|s| obligations::holders(policy, &ring, s, &down))
        .collect();

    // Copies: obligated (live and down), then held without obligation.
    let dead = Live {
        kind: Liveness::Unseen,
        last_seen: None,
        run_start: None,
        returned: false,
        since: None,
    };
    let mut evals: Vec<PairEval> = Vec::new();
    let mut obligated_keys: FxMap<u64, ()> = FxMap::default();
    let did_of = |m: usize| policy.members.get(m).map_or("", |mm| mm.did.as_str());
    for (s, h) in placements.iter().enumerate() {
        let subject_did = subjects.get(s).map_or("", String::as_str);
        let subject_heads = heads.get(s).map_or(&[][..], Vec::as_slice);
        let slots = h.live.iter().map(|slot| {
            (
                slot.member,
                slot.takes_over_from.clone(),
                slot.since.map(Timestamp::millis),
            )
        });
        let downs = h.down.iter().map(|m| (*m, Vec::new(), None));
        for (m, takes, since) in slots.chain(downs) {
            obligated_keys.insert(key(m, s), ());
            let po = pair_of
                .get(&key(m, s))
                .and_then(|&p| pairs.get(p))
                .map(|(_, _, po)| po);
            let live = lives.get(m).unwrap_or(&dead);
            evals.push(evaluate_pair(
                &ctx,
                m,
                s,
                true,
                takes,
                since,
                live,
                po,
                subject_heads,
                did_of(m),
                subject_did,
            ));
        }
    }
    for (m, s, po) in &pairs {
        if obligated_keys.contains_key(&key(*m, *s)) || po.holdings.is_empty() {
            continue;
        }
        let subject_did = subjects.get(*s).map_or("", String::as_str);
        let subject_heads = heads.get(*s).map_or(&[][..], Vec::as_slice);
        let live = lives.get(*m).unwrap_or(&dead);
        evals.push(evaluate_pair(
            &ctx,
            *m,
            *s,
            false,
            Vec::new(),
            None,
            live,
            Some(po),
            subject_heads,
            did_of(*m),
            subject_did,
        ));
    }
    evals.sort_by_key(|e| (e.member, e.subject));

    // Verification duties.
    let interval = policy.verification.interval.millis();
    let mut duties: Vec<Vec<DutyReport>> = vec![Vec::new(); n_members];
    for (s, h) in placements.iter().enumerate() {
        let owner_live = h.owner.is_some_and(|o| down(o).is_none());
        for (i, slot) in h.live.iter().enumerate() {
            let Some(verifier) = h.verifier_of_index(i, owner_live) else {
                continue;
            };
            let po = pair_of
                .get(&key(slot.member, s))
                .and_then(|&p| pairs.get(p))
                .map(|(_, _, po)| po);
            let last_run = po.and_then(|po| {
                po.results
                    .iter()
                    .filter(|r| r.2 == verifier)
                    .map(|r| r.0)
                    .max()
            });
            let vlive = lives.get(verifier).unwrap_or(&dead);
            let duty_start = [
                Some(start),
                slot.since.map(Timestamp::millis),
                vlive.run_start.filter(|_| vlive.kind == Liveness::Alive),
            ]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(start);
            let due = last_run
                .map_or(duty_start, |l| l.max(duty_start))
                .saturating_add(interval);
            if let Some(d) = duties.get_mut(verifier) {
                d.push(DutyReport {
                    target: did_of(slot.member).to_string(),
                    subject: subjects.get(s).cloned().unwrap_or_default(),
                    last_run: last_run.map(ts),
                    due_at: ts(due),
                    overdue: now_ms > due.saturating_add(interval),
                });
            }
        }
    }

    // Nodes.
    let mut by_member: Vec<Vec<&PairEval>> = vec![Vec::new(); n_members];
    for e in &evals {
        if let Some(v) = by_member.get_mut(e.member) {
            v.push(e);
        }
    }
    let mut nodes = Vec::with_capacity(n_members);
    for (m, member) in policy.members.iter().enumerate() {
        let live = lives.get(m).unwrap_or(&dead);
        let copies = by_member.get(m).map_or(&[][..], Vec::as_slice);
        let obligated: Vec<&PairEval> = copies.iter().copied().filter(|e| e.obligated).collect();
        let mut my_duties = duties.get_mut(m).map(std::mem::take).unwrap_or_default();
        my_duties.sort_by(|a, b| (&a.subject, &a.target).cmp(&(&b.subject, &b.target)));
        let who = member.did.as_str();

        // Figures.
        let figures = node_figures(
            &ctx,
            policy,
            beats.get(m).map_or(&[][..], Vec::as_slice),
            copies,
        );

        let mut conditions = Vec::new();
        // `life.acks` has one entry per member, in the same order.
        let ack = life.acks.get(m).filter(|a| a.member == member.did);
        conditions.push(match ack.map(|a| a.state) {
            Some(AckState::Accepted) => Condition::new(
                "Acknowledged",
                Status::True,
                "Accepted",
                format!("{who} accepted this version"),
                ack.and_then(|a| a.at),
            ),
            Some(AckState::Declined) => Condition::new(
                "Acknowledged",
                Status::False,
                "Declined",
                match ack.and_then(|a| a.reason.as_deref()) {
                    Some(r) => format!("{who} declined this version: {r}"),
                    None => format!("{who} declined this version"),
                },
                ack.and_then(|a| a.at),
            ),
            Some(AckState::Stale) => Condition::new(
                "Acknowledged",
                Status::False,
                "AckedOlderVersion",
                format!("{who} acked an older version only"),
                None,
            ),
            _ => Condition::new(
                "Acknowledged",
                Status::False,
                "NotAcked",
                format!("{who} has not acked this version"),
                None,
            ),
        });
        conditions.push(match live.kind {
            Liveness::Alive => Condition::new(
                "Online",
                Status::True,
                if live.returned {
                    "Returned"
                } else {
                    "Heartbeating"
                },
                format!(
                    "{who} was last heard from at {}",
                    ts(live.last_seen.unwrap_or(start))
                ),
                live.since.map(ts),
            ),
            Liveness::Offline => Condition::new(
                "Online",
                Status::False,
                if live.last_seen.is_some() {
                    "Offline"
                } else {
                    "NeverSeen"
                },
                match live.last_seen {
                    Some(l) => format!(
                        "{who} has been silent for {} (offlineGracePeriod {})",
                        dur(now_ms - l),
                        comp.offline_grace_period
                    ),
                    None => format!(
                        "{who} has not been heard from since the policy started {} ago",
                        dur(now_ms - start)
                    ),
                },
                live.since.map(ts),
            ),
            Liveness::Abandoned => Condition::new(
                "Online",
                Status::False,
                "Abandoned",
                format!(
                    "{who} has been silent for {} (abandonAfter {})",
                    dur(now_ms - live.last_seen.unwrap_or(start)),
                    comp.abandon_after
                ),
                live.since.map(ts),
            ),
            Liveness::Unseen => Condition::new(
                "Online",
                Status::Unknown,
                "NotSeenYet",
                format!("{who} has not been heard from yet"),
                None,
            ),
        });
        conditions.push(aggregate(
            "Held",
            &obligated,
            who,
            "holds every copy it must",
            "missing copies",
            "AllCopiesHeld",
            "CopiesMissing",
        ));
        conditions.push(aggregate(
            "InSync",
            &obligated,
            who,
            "every copy is within maxLag",
            "copies behind",
            "AllInSync",
            "CopiesLagging",
        ));
        conditions.push(aggregate(
            "Verified",
            &obligated,
            who,
            "every copy passed its last verification",
            "failing copies",
            "AllVerified",
            "VerificationFailing",
        ));
        let overdue: Vec<&DutyReport> = my_duties.iter().filter(|d| d.overdue).collect();
        conditions.push(if live.kind != Liveness::Alive {
            Condition::new(
                "VerifyingPeers",
                Status::Unknown,
                "NotOnline",
                format!("{who} is not online to verify others"),
                None,
            )
        } else if overdue.is_empty() {
            Condition::new(
                "VerifyingPeers",
                Status::True,
                "UpToDate",
                format!("{who} verifies the {} copies it must", my_duties.len()),
                None,
            )
        } else {
            let items: Vec<String> = overdue
                .iter()
                .map(|d| format!("{}'s copy of {}", d.target, d.subject))
                .collect();
            Condition::new(
                "VerifyingPeers",
                Status::False,
                "VerificationsOverdue",
                format!(
                    "{who} is more than one interval ({}) late verifying {}",
                    policy.verification.interval,
                    list(&items)
                ),
                overdue
                    .iter()
                    .map(|d| d.due_at.plus(policy.verification.interval))
                    .min(),
            )
        });
        if let Some(sla) = &figures.sla {
            conditions.push(if sla.met {
                Condition::new(
                    "SLAMet",
                    Status::True,
                    "TargetsMet",
                    format!("{who} meets every SLA target over the last {}", window_len),
                    None,
                )
            } else {
                Condition::new(
                    "SLAMet",
                    Status::False,
                    "TargetsMissed",
                    format!("{who} misses SLA targets: {}", sla.missed.join("; ")),
                    None,
                )
            });
        }

        let state = match live.kind {
            Liveness::Abandoned => State::Abandoned,
            Liveness::Offline => State::Failed,
            Liveness::Unseen => State::Unknown,
            Liveness::Alive => {
                let mut s = obligated.iter().map(|e| e.state).max().unwrap_or(State::Ok);
                if !overdue.is_empty() || figures.sla.as_ref().is_some_and(|f| !f.met) {
                    s = s.max(State::Degraded);
                }
                s
            }
        };
        let copy_reports = copies
            .iter()
            .map(|e| CopyReport {
                subject: subjects.get(e.subject).cloned().unwrap_or_default(),
                state: e.state,
                obligated: e.obligated,
                takes_over_from: e
                    .takes_over_from
                    .iter()
                    .map(|t| did_of(*t).to_string())
                    .collect(),
                held: e.held.as_ref().map(|(at, rev)| Commit {
                    rev: rev.clone(),
                    at: ts(*at),
                }),
                lag_seconds: e.lag.map(Duration::secs),
                consecutive_failures: e.streak,
                last_verified: e.last_verified.map(ts),
                conditions: e.conditions.take(),
                needs: subjects.get(e.subject).and_then(|s| {
                    needs
                        .get(&(member.node.as_str(), s.as_str()))
                        .and_then(|(_, n)| *n)
                }),
            })
            .collect();
        nodes.push(NodeReport {
            member: member.did.clone(),
            node: member.node.clone(),
            state,
            last_seen: live.last_seen.map(ts),
            conditions,
            copies: copy_reports,
            duties: my_duties,
            figures,
        });
    }

    // Subjects.
    let mut by_subject: Vec<Vec<&PairEval>> = vec![Vec::new(); subjects.len()];
    for e in &evals {
        if let Some(v) = by_subject.get_mut(e.subject) {
            v.push(e);
        }
    }
    let min = policy.replication.min_copies as usize;
    let mut subject_reports = Vec::with_capacity(subjects.len());
    for (s, did) in subjects.iter().enumerate() {
        let holders = by_subject.get(s).map_or(&[][..], Vec::as_slice);
        let copies = holders.iter().filter(|e| e.counted).count();
        let healthy = holders
            .iter()
            .filter(|e| e.counted && e.state == State::Ok)
            .count();
        let pending = holders
            .iter()
            .filter(|e| e.obligated && !e.counted && e.state == State::Recovering)
            .count();
        let all_unknown = holders
            .iter()
            .filter(|e| e.obligated)
            .all(|e| e.state == State::Unknown);
        let state = if copies >= min {
            if healthy >= min {
                State::Ok
            } else {
                State::Degraded
            }
        } else if copies + pending >= min {
            State::Recovering
        } else if copies == 0 && all_unknown {
            State::Unknown
        } else if copies == 0 {
            State::Failed
        } else {
            State::AtRisk
        };
        let mut holder_list: Vec<HolderSummary> = holders
            .iter()
            .map(|e| HolderSummary {
                member: did_of(e.member).to_string(),
                state: e.state,
                obligated: e.obligated,
                counted: e.counted,
            })
            .collect();
        holder_list.sort_by(|a, b| a.member.cmp(&b.member));
        let conditions = vec![
            if copies >= min {
                Condition::new(
                    "Replicated",
                    Status::True,
                    "EnoughCopies",
                    format!("{copies} copies of {did} are up (minCopies {min})"),
                    None,
                )
            } else {
                Condition::new(
                    "Replicated",
                    Status::False,
                    if copies == 0 {
                        "NoCopies"
                    } else {
                        "TooFewCopies"
                    },
                    format!(
                        "{copies} of the {min} copies of {did} that the policy asks for are up"
                    ),
                    None,
                )
            },
            if healthy >= min {
                Condition::new(
                    "Healthy",
                    Status::True,
                    "CopiesOk",
                    format!("{healthy} copies of {did} are ok"),
                    None,
                )
            } else {
                Condition::new(
                    "Healthy",
                    Status::False,
                    "CopiesNotOk",
                    format!("{healthy} copies of {did} are ok, {min} are needed"),
                    None,
                )
            },
        ];
        subject_reports.push(SubjectReport {
            did: did.clone(),
            state,
            min_copies: policy.replication.min_copies,
            copies,
            healthy_copies: healthy,
            head: newest_head(heads.get(s).map_or(&[][..], Vec::as_slice)).map(|(at, rev)| {
                Commit {
                    rev: rev.full.to_string(),
                    at: ts(at),
                }
            }),
            holders: holder_list,
            conditions,
        });
    }

    // The group.
    let active = life.phase == Phase::Active;
    let worst_subject = subject_reports
        .iter()
        .map(|s| s.state)
        .max()
        .unwrap_or(State::Ok);
    let unhealthy: Vec<String> = nodes
        .iter()
        .filter(|n| !matches!(n.state, State::Ok | State::Recovering))
        .map(|n| format!("{} is {}", n.member, n.state.as_str()))
        .collect();
    let state = if !active {
        State::Unknown
    } else if worst_subject == State::Ok && !unhealthy.is_empty() {
        State::Degraded
    } else {
        worst_subject
    };
    let mut conditions = Vec::new();
    conditions.push(match life.phase {
        Phase::Active => Condition::new(
            "Active",
            Status::True,
            "AllMembersAccepted",
            "every member accepted this version".into(),
            life.active_since,
        ),
        Phase::Scheduled => Condition::new(
            "Active",
            Status::False,
            "NotYetEffective",
            format!(
                "every member accepted; the policy takes effect at {}",
                policy.effective_at
            ),
            None,
        ),
        Phase::Pending => {
            let waiting: Vec<String> = life
                .acks
                .iter()
                .filter(|a| a.state != AckState::Accepted)
                .map(|a| match a.state {
                    AckState::Stale => format!("{} (acked an older version)", a.member),
                    _ => a.member.clone(),
                })
                .collect();
            Condition::new(
                "Active",
                Status::False,
                "AwaitingAcks",
                format!(
                    "waiting for {} to accept this version ({})",
                    list(&waiting),
                    policy.reference.cid
                ),
                None,
            )
        }
        Phase::Rejected => {
            let declined: Vec<String> = life
                .acks
                .iter()
                .filter(|a| a.state == AckState::Declined)
                .map(|a| a.member.clone())
                .collect();
            Condition::new(
                "Active",
                Status::False,
                "Declined",
                format!("declined by {}", list(&declined)),
                None,
            )
        }
        Phase::Expired => Condition::new(
            "Active",
            Status::False,
            "Expired",
            "the policy has expired".into(),
            policy.expires_at,
        ),
        Phase::Revoked => Condition::new(
            "Active",
            Status::False,
            "Revoked",
            "the author revoked the policy".into(),
            None,
        ),
    });
    let short: Vec<String> = subject_reports
        .iter()
        .filter(|s| s.copies < min)
        .map(|s| format!("{} has {}", s.did, s.copies))
        .collect();
    conditions.push(if short.is_empty() {
        Condition::new(
            "Replicated",
            Status::True,
            "EnoughCopies",
            format!("every account has at least {min} copies up"),
            None,
        )
    } else {
        Condition::new(
            "Replicated",
            Status::False,
            "TooFewCopies",
            format!(
                "{} of {} accounts have fewer than {min} copies up: {}",
                short.len(),
                subject_reports.len(),
                list(&short)
            ),
            None,
        )
    });
    conditions.push(if unhealthy.is_empty() {
        Condition::new(
            "MembersHealthy",
            Status::True,
            "AllMembersOk",
            "every member's node is ok or recovering".into(),
            None,
        )
    } else {
        Condition::new(
            "MembersHealthy",
            Status::False,
            "MembersUnhealthy",
            list(&unhealthy),
            None,
        )
    });

    let mut summary = Summary {
        subjects: BTreeMap::new(),
        nodes: BTreeMap::new(),
    };
    for s in &subject_reports {
        *summary.subjects.entry(s.state).or_default() += 1;
    }
    for n in &nodes {
        *summary.nodes.entry(n.state).or_default() += 1;
    }
    Report {
        policy: PolicySummary {
            uri: policy.reference.uri.clone(),
            cid: policy.reference.cid.clone(),
            name: policy.name.clone(),
            policy_type: policy.policy_type,
            min_copies: policy.replication.min_copies,
            strategy: policy.replication.strategy,
        },
        evaluated_at: now,
        lifecycle: life,
        state,
        conditions,
        summary,
        window: Window {
            from: ts(from),
            to: now,
            length: window_len,
        },
        subjects: subject_reports,
        nodes,
        ignored,
    }
}

fn node_figures(ctx: &Ctx, policy: &Policy, beats: &[i64], copies: &[&PairEval]) -> Figures {
    let uptime = window::uptime(
        beats,
        ctx.from,
        ctx.now,
        policy.compliance.heartbeat_interval,
    );
    let (mut passed, mut failed, mut unreachable) = (0, 0, 0);
    let mut delays = Vec::new();
    for e in copies {
        passed += e.passed;
        failed += e.failed;
        unreachable += e.unreachable;
        delays.extend_from_slice(&e.delays);
    }
    let verification = VerificationFigures {
        passed,
        failed,
        unreachable,
        pass_rate: Ratio::new(passed, passed + failed),
    };
    let sync = window::sync(&mut delays, policy.max_lag);
    let sla = policy.sla.as_ref().map(|sla| {
        let mut missed = Vec::new();
        let mut check = |name: &str, target: Option<super::time::Percent>, got: Option<&Ratio>| {
            if let (Some(target), Some(got)) = (target, got.and_then(Ratio::share)) {
                if got < target {
                    missed.push(format!("{name} {got} < {target}"));
                }
            }
        };
        check("uptime", sla.uptime, uptime.as_ref());
        check(
            "verificationPassRate",
            sla.verification_pass_rate,
            verification.pass_rate.as_ref(),
        );
        check(
            "syncWithinMaxLag",
            sla.sync_within_max_lag,
            sync.within_max_lag_rate.as_ref(),
        );
        SlaFigures {
            met: missed.is_empty(),
            missed,
        }
    });
    Figures {
        uptime,
        verification,
        sync,
        sla,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::obligations::for_member;
    use crate::policy::observations::{AckObservation, Head, Heartbeat, Holding, Verification};
    use crate::policy::records::{AckRecord, StrongRef};
    use crate::policy::validate::check_value;
    use rstest::rstest;
    use serde_json::json;

    const HOUR: i64 = 3_600_000;
    const MIN: i64 = 60_000;
    /// effectiveAt of the test policy.
    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    const URI: &str = "at://did:plc:alice/org.p2pds.policy/3kpolicy";
    const ALICE: &str = "did:plc:alice";
    const BOB: &str = "did:plc:bob";
    const CAROL: &str = "did:plc:carol";

    fn policy() -> Policy {
        policy_with(json!({}))
    }

    /// The test policy with `extra` merged into `rules`.
    fn policy_with(extra: serde_json::Value) -> Policy {
        let mut record = json!({
            "$type": "org.p2pds.policy", "name": "circle", "type": "mutual-aid",
            "members": [{"did": ALICE}, {"did": BOB}, {"did": CAROL}],
            "rules": {
                "replication": {"strategy": "full", "minCopies": 2},
                "verification": {"interval": "1h", "layers": [0, 1], "sampleSize": 10},
                "sync": {"maxLag": "1h"},
                "compliance": {
                    "offlineGracePeriod": "24h", "recoveryGracePeriod": "2h", "maxConsecutiveFailures": 3,
                    "heartbeatInterval": "1h", "abandonAfter": "7d"
                }
            },
            "effectiveAt": "2026-01-01T00:00:00Z", "createdAt": "2025-12-31T00:00:00Z"
        });
        if let (Some(rules), Some(extra)) = (record["rules"].as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                rules.insert(k.clone(), v.clone());
            }
        }
        match check_value(&json!({"uri": URI, "value": record})) {
            Ok(c) => c.policy,
            Err(p) => panic!("{p}"),
        }
    }

    /// A story about bob's copy of alice's account; everything else is healthy.
    #[derive(Clone)]
    struct Story {
        now_h: f64,
        /// Bob is silent from this hour until `back_h` (or for good).
        silent_from_h: Option<i64>,
        back_h: Option<i64>,
        /// Bob never says anything.
        never: bool,
        /// Bob holds alice's account.
        holds: bool,
        /// Alice commits at this hour and bob does not copy it.
        unsynced_commit_h: Option<f64>,
        /// The last verification rounds of bob's copy of alice, oldest first, hourly up to now.
        rounds: Vec<Outcome>,
        /// Carol is silent from this hour.
        carol_silent_from_h: Option<i64>,
        acked: bool,
    }

    impl Default for Story {
        fn default() -> Self {
            Story {
                now_h: 48.0,
                silent_from_h: None,
                back_h: None,
                never: false,
                holds: true,
                unsynced_commit_h: None,
                rounds: Vec::new(),
                carol_silent_from_h: None,
                acked: true,
            }
        }
    }

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn observe(p: &Policy, s: &Story) -> (Observations, Timestamp) {
        let now = T0 + (s.now_h * HOUR as f64) as i64;
        let online = |who: &str, t: i64| -> bool {
            if t >= now {
                return false;
            }
            if who == BOB {
                let h = t.div_euclid(HOUR) - T0 / HOUR;
                let asleep =
                    s.silent_from_h.is_some_and(|f| h >= f) && s.back_h.is_none_or(|b| h < b);
                !(s.never || asleep)
            } else if who == CAROL {
                let h = t.div_euclid(HOUR) - T0 / HOUR;
                s.carol_silent_from_h.is_none_or(|f| h < f)
            } else {
                true
            }
        };
        let mut o = Observations::default();
        for who in [ALICE, BOB, CAROL] {
            if s.acked {
                o.acks.push(AckObservation {
                    uri: format!("at://{who}/org.p2pds.policy.ack/1"),
                    cid: None,
                    value: AckRecord {
                        lex_type: "org.p2pds.policy.ack".into(),
                        policy: StrongRef {
                            uri: URI.into(),
                            cid: p.reference.cid.clone(),
                        },
                        accepted: true,
                        reason: None,
                        created_at: "2025-12-31T12:00:00Z".into(),
                    },
                });
            }
            o.heads.push(Head {
                subject: who.into(),
                rev: "2rev0".into(),
                at: at(T0 - HOUR),
            });
            let mut t = T0 + 2 * MIN;
            while t < now {
                if online(who, t) {
                    o.heartbeats.push(Heartbeat {
                        node: who.into(),
                        at: at(t),
                    });
                }
                t += HOUR;
            }
        }
        if let Some(h) = s.unsynced_commit_h {
            o.heads.push(Head {
                subject: ALICE.into(),
                rev: "2rev1".into(),
                at: at(T0 + (h * HOUR as f64) as i64),
            });
        }
        for holder in [ALICE, BOB, CAROL] {
            for subject in [ALICE, BOB, CAROL] {
                if holder == subject || (holder == BOB && subject == ALICE && !s.holds) {
                    continue;
                }
                // First copy at +10 min, or when the holder is first online.
                let mut t = T0 + 10 * MIN;
                while t < now && !online(holder, t) {
                    t += HOUR;
                }
                if online(holder, t) {
                    o.holdings.push(Holding {
                        node: holder.into(),
                        subject: subject.into(),
                        rev: "2rev0".into(),
                        data: None,
                        synced_at: at(t),
                        bytes: None,
                    });
                }
            }
        }
        // Every duty is run hourly at :30 while the verifier is online; bob's copy of alice
        // gets the story's last rounds.
        let down = BTreeMap::new();
        let focal_from = now - 30 * MIN - (s.rounds.len() as i64 - 1) * HOUR;
        for verifier in [ALICE, BOB, CAROL] {
            let Some(ob) = for_member(p, verifier, &down) else {
                continue;
            };
            for duty in ob.verify {
                let mut t = T0 + 30 * MIN;
                while t < now {
                    let focal = duty.target == BOB && duty.subject == ALICE;
                    let outcome = if focal && !s.rounds.is_empty() && t >= focal_from {
                        let i = ((t - focal_from) / HOUR) as usize;
                        s.rounds.get(i).copied().unwrap_or(Outcome::Pass)
                    } else if !online(&duty.target, t) {
                        Outcome::Unreachable
                    } else {
                        Outcome::Pass
                    };
                    if online(verifier, t) {
                        for layer in [0u8, 1] {
                            o.verifications.push(Verification {
                                verifier: verifier.into(),
                                node: duty.target_node.clone(),
                                subject: duty.subject.clone(),
                                layer,
                                outcome,
                                at: at(t),
                                needs: None,
                            });
                        }
                    }
                    t += HOUR;
                }
            }
        }
        (o, at(now))
    }

    fn run(s: &Story) -> Report {
        let p = policy();
        let (o, now) = observe(&p, s);
        evaluate(&p, &o, now)
    }

    fn copy_state(r: &Report, member: &str, subject: &str) -> Option<State> {
        r.nodes
            .iter()
            .find(|n| n.member == member)?
            .copies
            .iter()
            .find(|c| c.subject == subject)
            .map(|c| c.state)
    }

    fn node_state(r: &Report, member: &str) -> Option<State> {
        r.nodes.iter().find(|n| n.member == member).map(|n| n.state)
    }

    fn subject_state(r: &Report, did: &str) -> Option<State> {
        r.subjects.iter().find(|s| s.did == did).map(|s| s.state)
    }

    use Outcome::{Fail as F, Pass as P, Unreachable as U};

    #[rstest]
    #[case::all_good(Story::default(), State::Ok)]
    #[case::one_failure(Story { rounds: vec![P, F], ..Story::default() }, State::Degraded)]
    #[case::two_failures(Story { rounds: vec![P, F, F], ..Story::default() }, State::Degraded)]
    #[case::max_failures(Story { rounds: vec![P, F, F, F], ..Story::default() }, State::AtRisk)]
    #[case::failing_for_longer_than_offline_grace(Story { rounds: vec![F; 26], ..Story::default() }, State::Failed)]
    #[case::a_pass_resets_the_streak(Story { rounds: vec![F, F, F, P], ..Story::default() }, State::Ok)]
    #[case::unreachable_neither_breaks_nor_extends(Story { rounds: vec![P, F, U, U, F], ..Story::default() }, State::Degraded)]
    #[case::lag_beyond_max_lag(Story { unsynced_commit_h: Some(46.0), ..Story::default() }, State::AtRisk)]
    #[case::lag_within_max_lag(Story { unsynced_commit_h: Some(47.5), ..Story::default() }, State::Ok)]
    #[case::not_held(Story { holds: false, ..Story::default() }, State::AtRisk)]
    #[case::not_held_yet_at_start(Story { holds: false, now_h: 1.0, ..Story::default() }, State::Recovering)]
    #[case::failing_at_start(Story { rounds: vec![F], now_h: 1.0, ..Story::default() }, State::Recovering)]
    #[case::silent_a_little(Story { silent_from_h: Some(40), ..Story::default() }, State::Ok)]
    #[case::offline(Story { silent_from_h: Some(20), ..Story::default() }, State::Failed)]
    #[case::abandoned(Story { silent_from_h: Some(20), now_h: 24.0 * 9.0, ..Story::default() }, State::Abandoned)]
    #[case::never_seen_yet(Story { never: true, now_h: 1.0, ..Story::default() }, State::Unknown)]
    #[case::never_seen(Story { never: true, now_h: 30.0, ..Story::default() }, State::Failed)]
    #[case::back_and_catching_up(Story { silent_from_h: Some(10), back_h: Some(40), now_h: 41.0, unsynced_commit_h: Some(20.0), ..Story::default() }, State::Recovering)]
    #[case::back_and_still_behind(Story { silent_from_h: Some(10), back_h: Some(40), now_h: 43.0, unsynced_commit_h: Some(20.0), ..Story::default() }, State::AtRisk)]
    fn copy_states(#[case] story: Story, #[case] expected: State) {
        let r = run(&story);
        assert_eq!(
            copy_state(&r, BOB, ALICE),
            Some(expected),
            "{:#?}",
            r.nodes.iter().find(|n| n.member == BOB).map(|n| &n.copies)
        );
    }

    #[rstest]
    #[case::healthy(Story::default(), State::Ok, State::Ok, State::Ok)]
    #[case::one_copy_degraded(Story { rounds: vec![P, F], ..Story::default() }, State::Degraded, State::Degraded, State::Degraded)]
    #[case::one_copy_at_risk(Story { rounds: vec![P, F, F, F], ..Story::default() }, State::AtRisk, State::Degraded, State::Degraded)]
    #[case::one_holder_offline(Story { silent_from_h: Some(20), ..Story::default() }, State::Failed, State::AtRisk, State::AtRisk)]
    #[case::both_holders_offline(Story { silent_from_h: Some(20), carol_silent_from_h: Some(20), ..Story::default() }, State::Failed, State::Failed, State::Failed)]
    #[case::starting(Story { holds: false, now_h: 1.0, ..Story::default() }, State::Recovering, State::Recovering, State::Recovering)]
    fn node_subject_and_group_states(
        #[case] story: Story,
        #[case] node: State,
        #[case] subject: State,
        #[case] group: State,
    ) {
        let r = run(&story);
        assert_eq!(node_state(&r, BOB), Some(node), "node");
        assert_eq!(subject_state(&r, ALICE), Some(subject), "subject");
        assert_eq!(r.state, group, "group");
    }

    #[test]
    fn a_group_without_every_ack_is_unknown_and_says_who_is_missing() {
        let r = run(&Story {
            acked: false,
            ..Story::default()
        });
        assert_eq!(r.state, State::Unknown);
        let active = r.conditions.iter().find(|c| c.kind == "Active");
        assert_eq!(
            active.map(|c| (c.status, c.reason)),
            Some((Status::False, "AwaitingAcks"))
        );
        assert!(active.is_some_and(|c| c.message.contains(BOB)));
    }

    #[test]
    fn an_offline_member_is_verified_by_nobody_and_its_duties_pass_on() {
        let r = run(&Story {
            silent_from_h: Some(20),
            ..Story::default()
        });
        let Some(bob) = r.nodes.iter().find(|n| n.member == BOB) else {
            panic!("bob")
        };
        let online = bob.conditions.iter().find(|c| c.kind == "Online");
        assert_eq!(
            online.map(|c| (c.status, c.reason)),
            Some((Status::False, "Offline"))
        );
        // Last heard at 19:30 (its last verification of others), offline 24h later.
        assert_eq!(
            online.and_then(|c| c.since),
            Some(at(T0 + 19 * HOUR + 30 * MIN + 24 * HOUR))
        );
        // Nobody is assigned to verify an offline member's copies.
        assert!(r
            .nodes
            .iter()
            .flat_map(|n| n.duties.iter())
            .all(|d| d.target != BOB));
    }

    #[test]
    fn a_degraded_copy_says_why_and_since_when() {
        let r = run(&Story {
            rounds: vec![P, F, F],
            ..Story::default()
        });
        let copy = r
            .nodes
            .iter()
            .find(|n| n.member == BOB)
            .and_then(|n| n.copies.iter().find(|c| c.subject == ALICE));
        let verified = copy.and_then(|c| c.conditions.iter().find(|c| c.kind == "Verified"));
        assert_eq!(
            verified.map(|c| (c.status, c.reason)),
            Some((Status::False, "VerificationFailed"))
        );
        assert_eq!(
            verified.and_then(|c| c.since),
            Some(at(T0 + 46 * HOUR + 30 * MIN))
        );
        assert_eq!(copy.map(|c| c.consecutive_failures), Some(2));
    }

    #[test]
    fn observations_after_now_are_ignored() {
        let s = Story::default();
        let p = policy();
        let (mut o, now) = observe(&p, &s);
        let before = evaluate(&p, &o, now);
        o.heads.push(Head {
            subject: ALICE.into(),
            rev: "2rev9".into(),
            at: now.plus(Duration::from_secs(60)),
        });
        let after = evaluate(&p, &o, now);
        assert_eq!(after.ignored.future, 1);
        assert_eq!(before.nodes, after.nodes);
    }

    #[rstest]
    #[case("3lbqf3dyx6o2c", "3lbqf3dyx6o2c")]
    #[case("3lbqf3dyx6o2c", "3lbqf3dyx6o2d")]
    #[case("a", "a\0")]
    #[case("", "\0")]
    #[case("0123456789abcdefX", "0123456789abcdefY")]
    #[case("0123456789abcdef", "0123456789abcdef\0")]
    #[case("0123456789abcdefgh", "0123456789abcdefg")]
    fn rev_order_is_text_order(#[case] a: &str, #[case] b: &str) {
        assert_eq!(Rev::new(a).cmp(&Rev::new(b)), a.cmp(b));
        assert_eq!(Rev::new(b).cmp(&Rev::new(a)), b.cmp(a));
    }

    proptest::proptest! {
        #[test]
        fn revs_compare_like_their_text(a in "[\\x00-\\x7f]{0,20}", b in "[\\x00-\\x7f]{0,20}", c in "3[a-z2-7]{12}") {
            proptest::prop_assert_eq!(Rev::new(&a).cmp(&Rev::new(&b)), a.cmp(&b));
            let long = format!("{c}{a}");
            proptest::prop_assert_eq!(Rev::new(&long).cmp(&Rev::new(&c)), long.as_str().cmp(c.as_str()));
            proptest::prop_assert_eq!(Rev::new(&c).cmp(&Rev::new(&b)), c.as_str().cmp(b.as_str()));
        }
    }

    #[test]
    fn a_missed_sla_target_degrades_the_node_and_says_which() {
        let p = policy_with(
            json!({"sla": {"window": "2d", "uptime": "99%", "verificationPassRate": "100%"}}),
        );
        let (mut o, now) = observe(&p, &Story::default());
        // Bob's heartbeats stop for ten hours; he still publishes and verifies (he is up).
        o.heartbeats.retain(|h| {
            let hour = (h.at.millis() - T0) / HOUR;
            h.node != BOB || !(10..20).contains(&hour)
        });
        let r = evaluate(&p, &o, now);
        let Some(bob) = r.nodes.iter().find(|n| n.member == BOB) else {
            panic!("bob")
        };
        assert_eq!(
            bob.figures.uptime.as_ref().map(|u| (u.part, u.whole)),
            Some((38, 48))
        );
        assert_eq!(
            bob.figures.sla.as_ref().map(|s| s.missed.clone()),
            Some(vec!["uptime 79.1666% < 99%".to_string()])
        );
        let sla = bob.conditions.iter().find(|c| c.kind == "SLAMet");
        assert_eq!(
            sla.map(|c| (c.status, c.reason)),
            Some((Status::False, "TargetsMissed"))
        );
        assert_eq!(bob.state, State::Degraded);
        // Alice meets the targets.
        let alice = r.nodes.iter().find(|n| n.member == ALICE);
        assert_eq!(
            alice.and_then(|n| n.figures.sla.as_ref()).map(|s| s.met),
            Some(true)
        );
        assert_eq!(alice.map(|n| n.state), Some(State::Ok));
    }

    #[test]
    fn uptime_counts_heartbeat_slots() {
        let r = run(&Story {
            silent_from_h: Some(36),
            ..Story::default()
        });
        let uptime = r
            .nodes
            .iter()
            .find(|n| n.member == BOB)
            .and_then(|n| n.figures.uptime.clone());
        assert_eq!(uptime.map(|u| (u.part, u.whole)), Some((36, 48)));
    }

    fn whole_check(at: i64, outcome: Outcome, records: u64) -> Verification {
        Verification {
            verifier: "did:plc:v".into(),
            node: "did:plc:n".into(),
            subject: "did:plc:s".into(),
            layer: 2,
            outcome,
            at: Timestamp::from_millis(at),
            needs: (records > 0).then_some(Needs {
                records,
                bytes: records * 100,
            }),
        }
    }

    #[rstest]
    #[case::one_failed_check(vec![(1, Outcome::Fail, 3)], Some(3))]
    #[case::the_newest_counts(vec![(2, Outcome::Fail, 1), (1, Outcome::Fail, 7)], Some(1))]
    #[case::a_pass_since_clears_it(vec![(1, Outcome::Fail, 3), (2, Outcome::Pass, 0)], None)]
    #[case::no_answer_changes_nothing(vec![(1, Outcome::Fail, 3), (2, Outcome::Unreachable, 0)], Some(3))]
    #[case::a_pass_before_does_not(vec![(2, Outcome::Fail, 4), (1, Outcome::Pass, 0)], Some(4))]
    fn a_copy_needs_what_its_newest_whole_copy_check_found(
        #[case] checks: Vec<(i64, Outcome, u64)>,
        #[case] want: Option<u64>,
    ) {
        let mut results: Vec<Verification> = checks
            .into_iter()
            .map(|(at, o, n)| whole_check(at, o, n))
            .collect();
        // Other layers never count.
        let mut other = whole_check(9, Outcome::Fail, 50);
        other.layer = 1;
        results.push(other);
        let found = newest_needs(&results);
        let got = found
            .get(&("did:plc:n", "did:plc:s"))
            .and_then(|(_, n)| *n)
            .map(|n| n.records);
        assert_eq!(got, want);
    }
}
