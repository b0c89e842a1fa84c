//! The policy engine from outside: the example policies, the `p2pds policy` commands, and the
//! determinism of evaluation (same inputs in any order → byte-identical JSON).

use std::path::PathBuf;
use std::process::{Command, Output};

use p2pds::policy::bench;
use p2pds::policy::observations::Observations;
use p2pds::policy::report::State;
use p2pds::policy::{check_json, evaluate, Policy, Timestamp};
use proptest::prelude::*;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn p2pds(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pds"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run p2pds: {e}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const POLICY: &str = "docs/policy/policy-mutual-aid.record.json";
const OBSERVATIONS: &str = "docs/policy/observations-mutual-aid.json";
const NOW: &str = "2026-03-01T06:00:00Z";

fn walkthrough() -> (Policy, Observations, Timestamp) {
    let policy = match check_json(&read(POLICY)) {
        Ok(c) => c.policy,
        Err(p) => panic!("{p}"),
    };
    let obs: Observations =
        serde_json::from_str(&read(OBSERVATIONS)).unwrap_or_else(|e| panic!("{e}"));
    let now = Timestamp::parse(NOW).unwrap_or_else(|e| panic!("{e}"));
    (policy, obs, now)
}

#[test]
fn example_policies_are_valid_without_warnings() {
    for file in [
        "policy-mutual-aid.json",
        "policy-sla.json",
        "policy-partial.json",
    ] {
        let checked = check_json(&read(&format!("lexicons/examples/{file}")));
        match checked {
            Ok(c) => assert!(c.warnings.is_empty(), "{file}: {:?}", c.warnings),
            Err(p) => panic!("{file}: {p}"),
        }
    }
}

#[test]
fn the_walkthrough_policy_is_the_example_as_read_from_a_repo() {
    let envelope: Value = serde_json::from_str(&read(POLICY)).unwrap_or_default();
    let example: Value =
        serde_json::from_str(&read("lexicons/examples/policy-mutual-aid.json")).unwrap_or_default();
    assert_eq!(envelope["value"], example);
    // A stale `cid` (the example edited, the envelope not) would be warned about.
    match check_json(&read(POLICY)) {
        Ok(c) => assert!(c.warnings.is_empty(), "{:?}", c.warnings),
        Err(p) => panic!("{p}"),
    }
}

#[test]
fn check_exits_0_for_a_valid_policy() {
    let o = p2pds(&["policy", "check", "lexicons/examples/policy-sla.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("ok: \"Vault backup plan for Dana\""));
}

#[test]
fn check_exits_1_and_lists_the_problems() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("policy.json");
    let mut v: Value =
        serde_json::from_str(&read("lexicons/examples/policy-mutual-aid.json")).unwrap_or_default();
    v["rules"]["replication"]["minCopies"] = Value::from(5);
    v["rules"]["verification"]["interval"] = Value::from("half an hour");
    std::fs::write(&file, v.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let o = p2pds(&["policy", "check", &file.to_string_lossy()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("2 problems"), "{out}");
    assert!(out.contains("- rules.replication.minCopies is 5 but the circle has 3 members: at most 2 other members can hold each account"), "{out}");
    assert!(
        out.contains("- rules.verification.interval: \"half an hour\" is not a duration"),
        "{out}"
    );
}

#[test]
fn eval_prints_the_walkthrough_report() {
    let o = p2pds(&[
        "policy",
        "eval",
        "--policy",
        POLICY,
        "--observations",
        OBSERVATIONS,
        "--now",
        NOW,
        "--json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(report["state"], "degraded");
    assert_eq!(report["lifecycle"]["phase"], "active");
    let states: Vec<(String, String)> = report["nodes"]
        .as_array()
        .map(|n| {
            n.iter()
                .map(|n| {
                    (
                        n["member"].as_str().unwrap_or("").into(),
                        n["state"].as_str().unwrap_or("").into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        states,
        vec![
            ("did:plc:alice".into(), "ok".into()),
            ("did:plc:bob".into(), "degraded".into()),
            ("did:plc:carol".into(), "at-risk".into()),
        ]
    );
    // The CLI prints exactly the library's report.
    let (p, obs, now) = walkthrough();
    let lib = serde_json::to_string_pretty(&evaluate(&p, &obs, now)).unwrap_or_default();
    assert_eq!(stdout(&o).trim_end(), lib);
}

#[test]
fn eval_without_json_prints_a_summary() {
    let o = p2pds(&[
        "policy",
        "eval",
        "--policy",
        POLICY,
        "--observations",
        OBSERVATIONS,
        "--now",
        NOW,
    ]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.contains("evaluated at 2026-03-01T06:00:00.000Z: DEGRADED"),
        "{out}"
    );
    assert!(
        out.contains("did:plc:carol's copy of did:plc:alice is 2h behind (maxLag 1h)"),
        "{out}"
    );
}

#[test]
fn eval_refuses_an_observations_file_with_a_typo() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("obs.json");
    std::fs::write(&file, r#"{"heartbeat": []}"#).unwrap_or_else(|e| panic!("{e}"));
    let o = p2pds(&[
        "policy",
        "eval",
        "--policy",
        POLICY,
        "--observations",
        &file.to_string_lossy(),
        "--now",
        NOW,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown field `heartbeat`"));
}

#[test]
fn obligations_combine_policies() {
    let o = p2pds(&[
        "policy",
        "obligations",
        "--policy",
        POLICY,
        "--policy",
        "lexicons/examples/policy-sla.json",
        "--node",
        "did:plc:bob",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let holds: Vec<&str> = v["hold"]
        .as_array()
        .map(|h| h.iter().filter_map(|h| h["subject"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(holds, vec!["did:plc:alice", "did:plc:carol"]);
    let o = p2pds(&[
        "policy",
        "obligations",
        "--policy",
        POLICY,
        "--node",
        "did:plc:stranger",
    ]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn bench_command_prints_figures() {
    let o = p2pds(&[
        "policy",
        "bench",
        "--members",
        "20",
        "--subjects",
        "30",
        "--days",
        "2",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(v["members"], 20);
    assert_eq!(v["subjects"], 30);
    assert!(
        v["observations"]["total"]
            .as_u64()
            .is_some_and(|n| n > 1000),
        "{v:#}"
    );
    assert!(v["evaluateMsMedian"].as_f64().is_some());
}

/// A reproducible shuffle (SplitMix64-driven Fisher–Yates).
fn shuffle<T>(items: &mut [T], seed: &mut u64) {
    for i in (1..items.len()).rev() {
        *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let j = ((z ^ (z >> 31)) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

fn shuffled(obs: &Observations, seed: u64, duplicate: bool) -> Observations {
    let mut o = obs.clone();
    let mut s = seed;
    if duplicate {
        // The same record read twice changes nothing.
        if let Some(h) = o.heartbeats.first().cloned() {
            o.heartbeats.push(h);
        }
        if let Some(v) = o.verifications.last().cloned() {
            o.verifications.push(v);
        }
        if let Some(h) = o.holdings.first().cloned() {
            o.holdings.push(h);
        }
        if let Some(a) = o.acks.first().cloned() {
            o.acks.push(a);
        }
    }
    shuffle(&mut o.acks, &mut s);
    shuffle(&mut o.heartbeats, &mut s);
    shuffle(&mut o.heads, &mut s);
    shuffle(&mut o.holdings, &mut s);
    shuffle(&mut o.verifications, &mut s);
    o
}

fn bytes(p: &Policy, o: &Observations, now: Timestamp) -> String {
    serde_json::to_string(&evaluate(p, o, now)).unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn walkthrough_in_any_order_gives_the_same_bytes(seed in any::<u64>(), duplicate in any::<bool>()) {
        let (p, obs, now) = walkthrough();
        let expected = bytes(&p, &obs, now);
        prop_assert_eq!(bytes(&p, &shuffled(&obs, seed, duplicate), now), expected);
    }

    #[test]
    fn synthetic_groups_in_any_order_give_the_same_bytes(
        members in 3usize..12,
        extra_subjects in 0usize..4,
        days in 1u32..3,
        seed in any::<u64>(),
        hours_back in 0i64..30,
    ) {
        let (p, obs, now) = match bench::synthetic(members, members + extra_subjects, days) {
            Ok(x) => x,
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        };
        // Evaluate at various instants, so that states other than ok show up too.
        let now = Timestamp::from_millis(now.millis() - hours_back * 3_600_000);
        let expected = bytes(&p, &obs, now);
        prop_assert_eq!(bytes(&p, &shuffled(&obs, seed, seed % 2 == 0), now), expected);
    }
}

#[test]
fn the_bench_group_shows_more_than_one_state() {
    let (p, obs, now) = match bench::synthetic(100, 100, 3) {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    let r = evaluate(&p, &obs, now);
    assert!(r.summary.nodes.len() > 1, "{:?}", r.summary.nodes);
    assert!(r.summary.nodes.contains_key(&State::Ok));
}
