//! A benchmark of evaluation: a synthetic group (N members, M accounts, D days of
//! observations), generated deterministically, and the time [`evaluate`] takes on it.
//!
//! The one place in `policy` that reads a clock: the monotonic clock, to time the pure
//! evaluation. The engine never calls it; `p2pds policy bench` does.
//!
//! The synthetic group: placement `ring`, `minCopies` 3, hourly heartbeats, verification of
//! layers 0 and 1 every 6 hours, each account committing 4 times a day and each holder copying
//! every commit within minutes (2 % of copies late by two hours, 2 % of verification rounds
//! failing), 1 % of members silent for the last two days. Invariant: the same arguments give
//! the same inputs (a fixed-seed generator), so runs compare.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::compliance::evaluate;
use super::model::Policy;
use super::obligations::{holders, Ring};
use super::observations::{
    AckObservation, Head, Heartbeat, Holding, Observations, Outcome, Verification,
};
use super::records::{AckRecord, StrongRef};
use super::report::State;
use super::time::Timestamp;
use super::validate::{check_value, Problems};

/// Timed evaluations after one warm-up run.
pub const RUNS: usize = 5;

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    pub members: usize,
    pub subjects: usize,
    pub days: u32,
    pub observations: Counts,
    /// Generating the synthetic inputs.
    pub generate_ms: f64,
    /// Size of the observations as JSON, and the time to parse them.
    pub observations_json_bytes: usize,
    pub parse_ms: f64,
    pub runs: usize,
    /// Evaluation (policy + parsed observations + now → report), median / fastest / slowest.
    pub evaluate_ms_median: f64,
    pub evaluate_ms_min: f64,
    pub evaluate_ms_max: f64,
    /// Writing the report as JSON, and its size.
    pub serialize_ms: f64,
    pub report_json_bytes: usize,
    pub state: State,
    pub nodes_by_state: BTreeMap<State, usize>,
    pub subjects_by_state: BTreeMap<State, usize>,
    /// The error, when the synthetic policy itself was refused (a bug in the generator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub acks: usize,
    pub heartbeats: usize,
    pub heads: usize,
    pub holdings: usize,
    pub verifications: usize,
    pub total: usize,
}

/// SplitMix64: tiny, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn member_did(i: usize) -> String {
    format!("did:plc:bench{i:06}")
}

fn rev(ms: i64) -> String {
    // Fixed width: string order is time order, as with TIDs.
    format!("{ms:015}")
}

/// The synthetic policy, observations and `now`.
pub fn synthetic(
    members: usize,
    subjects: usize,
    days: u32,
) -> Result<(Policy, Observations, Timestamp), Problems> {
    let members = members.max(2);
    let now = Timestamp::from_millis(1_780_000_000_000 - 1_780_000_000_000 % DAY);
    let span = i64::from(days.max(1)) * DAY;
    let effective = now.millis() - span;
    let effective_at = Timestamp::from_millis(effective);
    let dids: Vec<String> = (0..members).map(member_did).collect();
    let mut replication =
        json!({"strategy": "full", "minCopies": 3.min(members - 1), "placement": "ring"});
    if subjects != members {
        let list: Vec<String> = (0..subjects)
            .map(|i| {
                if i < members {
                    member_did(i)
                } else {
                    format!("did:plc:other{i:06}")
                }
            })
            .collect();
        replication["subjects"] = json!(list);
    }
    let record = json!({
        "$type": "org.p2pds.policy",
        "name": format!("bench {members}x{subjects}"),
        "type": "mutual-aid",
        "members": dids.iter().map(|d| json!({"did": d})).collect::<Vec<_>>(),
        "rules": {
            "replication": replication,
            "verification": {"interval": "6h", "layers": [0, 1], "sampleSize": 20},
            "sync": {"maxLag": "1h"},
            "compliance": {
                "offlineGracePeriod": "24h", "recoveryGracePeriod": "2h", "maxConsecutiveFailures": 3,
                "heartbeatInterval": "1h", "abandonAfter": "7d"
            }
        },
        "effectiveAt": effective_at.to_string(),
        "createdAt": Timestamp::from_millis(effective - DAY).to_string(),
    });
    let uri = "at://did:plc:bench000000/org.p2pds.policy/3bench";
    let policy = check_value(&json!({"uri": uri, "value": record}))?.policy;

    let mut rng =
        Rng(0x5eed_0000 ^ ((members as u64) << 20) ^ ((subjects as u64) << 40) ^ u64::from(days));
    let mut obs = Observations::default();
    let ack_at = Timestamp::from_millis(effective - HOUR).to_string();
    for did in &dids {
        obs.acks.push(AckObservation {
            uri: format!("at://{did}/org.p2pds.policy.ack/3bench"),
            cid: None,
            value: AckRecord {
                lex_type: "org.p2pds.policy.ack".into(),
                policy: StrongRef {
                    uri: uri.into(),
                    cid: policy.reference.cid.clone(),
                },
                accepted: true,
                reason: None,
                created_at: ack_at.clone(),
            },
        });
    }
    // 1 % of members fall silent two days before the end.
    let silent_from: Vec<i64> = (0..members)
        .map(|_| {
            if rng.chance(1) {
                now.millis() - 2 * DAY
            } else {
                i64::MAX
            }
        })
        .collect();
    let silent = |m: usize, at: i64| silent_from.get(m).is_some_and(|s| at >= *s);
    let heartbeat = policy.compliance.heartbeat_interval.millis().max(MINUTE);
    for (m, did) in dids.iter().enumerate() {
        let mut t = effective;
        while t < now.millis() {
            let at = t + i64::try_from(rng.below(30)).unwrap_or(0) * MINUTE;
            if !silent(m, at) && !rng.chance(1) && at < now.millis() {
                obs.heartbeats.push(Heartbeat {
                    node: did.clone(),
                    at: Timestamp::from_millis(at),
                });
            }
            t += heartbeat;
        }
    }
    let ring = Ring::new(&policy);
    let nobody_down = |_: usize| None;
    let interval = policy.verification.interval.millis().max(MINUTE);
    for subject in &policy.replication.subjects {
        let h = holders(&policy, &ring, subject, &nobody_down);
        // Four commits a day.
        let mut commits: Vec<i64> = (0..i64::from(days.max(1)) * 4)
            .map(|_| {
                effective + i64::try_from(rng.below(u64::try_from(span).unwrap_or(1))).unwrap_or(0)
            })
            .collect();
        commits.sort_unstable();
        for at in &commits {
            obs.heads.push(Head {
                subject: subject.clone(),
                rev: rev(*at),
                at: Timestamp::from_millis(*at),
            });
        }
        for (i, slot) in h.live.iter().enumerate() {
            let node = dids.get(slot.member).cloned().unwrap_or_default();
            obs.holdings.push(Holding {
                node: node.clone(),
                subject: subject.clone(),
                rev: rev(0),
                data: None,
                synced_at: effective_at,
                bytes: None,
            });
            for at in &commits {
                let delay = if rng.chance(2) {
                    2 * HOUR
                } else {
                    i64::try_from(1 + rng.below(10)).unwrap_or(1) * MINUTE
                };
                let synced = at + delay;
                if synced < now.millis() && !silent(slot.member, synced) {
                    obs.holdings.push(Holding {
                        node: node.clone(),
                        subject: subject.clone(),
                        rev: rev(*at),
                        data: None,
                        synced_at: Timestamp::from_millis(synced),
                        bytes: None,
                    });
                }
            }
            let Some(verifier) = h.verifier_of_index(i, h.owner.is_some()) else {
                continue;
            };
            let verifier_did = dids.get(verifier).cloned().unwrap_or_default();
            let mut t = effective
                + i64::try_from(rng.below(u64::try_from(interval).unwrap_or(1))).unwrap_or(0);
            while t < now.millis() {
                if !silent(verifier, t) {
                    let outcome = if silent(slot.member, t) {
                        Outcome::Unreachable
                    } else if rng.chance(2) {
                        Outcome::Fail
                    } else {
                        Outcome::Pass
                    };
                    for layer in [0u8, 1] {
                        obs.verifications.push(Verification {
                            verifier: verifier_did.clone(),
                            node: node.clone(),
                            subject: subject.clone(),
                            layer,
                            outcome,
                            at: Timestamp::from_millis(t),
                            needs: None,
                        });
                    }
                }
                t += interval;
            }
        }
    }
    Ok((policy, obs, now))
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Generates the synthetic group and times its evaluation.
pub fn run(members: usize, subjects: usize, days: u32) -> BenchReport {
    let started = Instant::now();
    let generated = synthetic(members, subjects, days);
    let generate_ms = ms(started);
    let mut report = BenchReport {
        members,
        subjects,
        days,
        observations: Counts::default(),
        generate_ms,
        observations_json_bytes: 0,
        parse_ms: 0.0,
        runs: 0,
        evaluate_ms_median: 0.0,
        evaluate_ms_min: 0.0,
        evaluate_ms_max: 0.0,
        serialize_ms: 0.0,
        report_json_bytes: 0,
        state: State::Unknown,
        nodes_by_state: BTreeMap::new(),
        subjects_by_state: BTreeMap::new(),
        error: None,
    };
    let (policy, obs, now) = match generated {
        Ok(g) => g,
        Err(problems) => {
            report.error = Some(problems.to_string());
            return report;
        }
    };
    report.observations = Counts {
        acks: obs.acks.len(),
        heartbeats: obs.heartbeats.len(),
        heads: obs.heads.len(),
        holdings: obs.holdings.len(),
        verifications: obs.verifications.len(),
        total: obs.acks.len()
            + obs.heartbeats.len()
            + obs.heads.len()
            + obs.holdings.len()
            + obs.verifications.len(),
    };
    let text = serde_json::to_string(&obs).unwrap_or_default();
    report.observations_json_bytes = text.len();
    let started = Instant::now();
    // As `p2pds policy eval` reads them: the repeated-key pass, then serde.
    let parsed: Option<Observations> = super::input::observations(text.as_bytes()).ok();
    report.parse_ms = ms(started);
    let obs = parsed.unwrap_or(obs);

    // One warm-up run; the reports are kept until the end so that freeing them is not timed.
    let mut results = vec![evaluate(&policy, &obs, now)];
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let r = evaluate(&policy, &obs, now);
        times.push(ms(started));
        results.push(r);
    }
    let Some(result) = results.pop() else {
        return report;
    };
    drop(results);
    times.sort_by(f64::total_cmp);
    report.runs = RUNS;
    report.evaluate_ms_min = times.first().copied().unwrap_or(0.0);
    report.evaluate_ms_max = times.last().copied().unwrap_or(0.0);
    report.evaluate_ms_median = times.get(RUNS / 2).copied().unwrap_or(0.0);
    let started = Instant::now();
    let json = serde_json::to_string(&result).unwrap_or_default();
    report.serialize_ms = ms(started);
    report.report_json_bytes = json.len();
    report.state = result.state;
    report.nodes_by_state = result.summary.nodes.clone();
    report.subjects_by_state = result.summary.subjects.clone();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_bench_runs_and_is_deterministic() {
        let a = run(12, 15, 2);
        assert_eq!(a.error, None);
        assert!(a.observations.total > 0);
        assert_eq!(a.runs, RUNS);
        assert_eq!(a.nodes_by_state.values().sum::<usize>(), 12);
        assert_eq!(a.subjects_by_state.values().sum::<usize>(), 15);
        let (p1, o1, n1) = match synthetic(12, 15, 2) {
            Ok(x) => x,
            Err(e) => panic!("{e}"),
        };
        let (p2, o2, n2) = match synthetic(12, 15, 2) {
            Ok(x) => x,
            Err(e) => panic!("{e}"),
        };
        assert_eq!((p1, o1, n1), (p2, o2, n2));
    }
}
