//! The policy engine from outside: the example policies, the `p2pds policy` commands, and the
//! determinism of evaluation (same inputs in any order → byte-identical JSON).

use std::path::PathBuf;
use std::process::{Command, Output};

use p2pds::policy::bench;
use p2pds::policy::observations::Observations;
use p2pds::policy::report::State;
use p2pds::policy::validate::check_value;
use p2pds::policy::{check_json, evaluate, Policy, Timestamp, MAX_POLICY_BYTES};
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
        "policy-minimal.json",
        "policy-detect.json",
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
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "heartbeat is not a field of the observations file (did you mean heartbeats?)"
        ),
        "{err}"
    );
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

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `bytes` to `name` in a fresh folder; the folder lives as long as the guard.
fn file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}

/// Words that belong to Rust or serde, not to a person reading a refusal.
const INTERNALS: [&str; 12] = [
    "`",
    "invalid type",
    "expected struct",
    "expected a sequence",
    "Mismatch",
    "InvalidUtf8",
    "Error(",
    "os error",
    "Observations",
    "u64",
    "error: error",
    "stream did not contain",
];

/// A refusal in words, said once: exit 1, no Rust internals, and no sentence twice.
fn said_once_in_words(o: &Output, expected: &str) {
    let all = format!("{}{}", stdout(o), stderr(o));
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert!(all.contains(expected), "expected {expected:?} in:\n{all}");
    for internal in INTERNALS {
        assert!(!all.contains(internal), "{internal:?} in:\n{all}");
    }
    assert_eq!(all.matches(expected).count(), 1, "said twice:\n{all}");
    assert!(all.matches("error:").count() <= 1, "{all}");
}

#[test]
fn check_refuses_a_policy_with_a_repeated_key() {
    let text = read("lexicons/examples/policy-mutual-aid.json").replacen(
        "\"minCopies\": 2",
        "\"minCopies\": 2, \"minCopies\": 1",
        1,
    );
    assert_ne!(text, read("lexicons/examples/policy-mutual-aid.json"));
    let (_dir, path) = file("policy.json", text.as_bytes());
    let o = p2pds(&["policy", "check", &path]);
    said_once_in_words(
        &o,
        "the key \"minCopies\" appears twice in rules.replication",
    );
    // The library refuses it the same way (serde_json alone would keep the last one).
    let problems = check_json(&text)
        .err()
        .map(|p| p.problems)
        .unwrap_or_default();
    assert_eq!(
        problems.first().map(|p| p.path.as_str()),
        Some("rules.replication.minCopies")
    );
}

#[test]
fn eval_refuses_observations_with_a_repeated_key() {
    let text = read(OBSERVATIONS).replacen(
        "{\"node\": \"did:plc:alice\", \"at\": \"2026-03-01T00:02:00.000Z\"}",
        "{\"node\": \"did:plc:alice\", \"node\": \"did:plc:bob\", \"at\": \"2026-03-01T00:02:00.000Z\"}",
        1,
    );
    assert_ne!(text, read(OBSERVATIONS));
    let (_dir, path) = file("obs.json", text.as_bytes());
    let o = p2pds(&[
        "policy",
        "eval",
        "--policy",
        POLICY,
        "--observations",
        &path,
        "--now",
        NOW,
    ]);
    said_once_in_words(&o, "the key \"node\" appears twice in heartbeats[0]");
}

#[test]
fn eval_refuses_observations_that_are_not_the_documented_object() {
    let cases: [(&str, &str); 6] = [
        ("[]", "the observations file must be an object with the lists acks, heartbeats, heads, holdings and verifications (each may be left out), not a list"),
        ("42", "the observations file must be an object with the lists acks, heartbeats, heads, holdings and verifications (each may be left out), not a whole number"),
        (r#"{"heads": [{"subject": "did:plc:alice", "at": "2026-03-01T00:00:00Z"}]}"#, "heads[0].rev is missing: a head needs subject, rev and at"),
        (r#"{"heartbeats": [{"node": ["did:plc:alice"], "at": "2026-03-01T00:00:00Z"}]}"#, "heartbeats[0].node must be text, not a list"),
        (r#"{"verifications": [{"verifier": "did:plc:alice", "node": "did:plc:bob", "subject": "did:plc:carol", "layer": "one", "outcome": "pass", "at": "2026-03-01T00:00:00Z"}]}"#, "verifications[0].layer must be a layer number (0, 1 or 3), not text"),
        (r#"{"holdings": [{"node": "did:plc:bob", "subject": "did:plc:alice", "rev": "3mfxu2l5w222b", "syncedAt": 1772323200}]}"#, "holdings[0].syncedAt must be a date-time (RFC 3339 text with a time zone), not a whole number"),
    ];
    for (text, expected) in cases {
        let (_dir, path) = file("obs.json", text.as_bytes());
        let o = p2pds(&[
            "policy",
            "eval",
            "--policy",
            POLICY,
            "--observations",
            &path,
            "--now",
            NOW,
        ]);
        said_once_in_words(&o, expected);
        let o = p2pds(&[
            "policy",
            "obligations",
            "--policy",
            POLICY,
            "--node",
            "did:plc:bob",
            "--observations",
            &path,
            "--now",
            NOW,
        ]);
        said_once_in_words(&o, expected);
    }
}

#[test]
fn check_refuses_a_policy_over_the_size_cap_before_parsing() {
    // Valid JSON (the example, padded with spaces) but one byte too long.
    let example = read("lexicons/examples/policy-mutual-aid.json");
    let padded = format!(
        "{example}{}",
        " ".repeat(MAX_POLICY_BYTES + 1 - example.len())
    );
    let (_dir, path) = file("policy.json", padded.as_bytes());
    let o = p2pds(&["policy", "check", &path]);
    said_once_in_words(
        &o,
        "the file is larger than 1 MiB (1048576 bytes), the most a policy may be",
    );
    // At the cap it is read.
    let at_cap = &padded[..MAX_POLICY_BYTES];
    let (_dir, path) = file("policy.json", at_cap.as_bytes());
    assert_eq!(p2pds(&["policy", "check", &path]).status.code(), Some(0));
}

#[test]
fn every_policy_command_refuses_bad_inputs_in_words_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let folder = dir.path().to_string_lossy().into_owned();
    let missing = dir
        .path()
        .join("missing.json")
        .to_string_lossy()
        .into_owned();
    let bad: [(&str, &[u8], &str); 5] = [
        ("latin1.json", b"{\"name\": \"caf\xe9\"}", "the file is not UTF-8 text: byte 14 (line 1) is not part of a UTF-8 character"),
        ("empty.json", b"  \n", "the file is empty"),
        ("cut.json", b"{\"name\": [1, 2", "the file ends at line 1, column 14 before the JSON does"),
        ("comma.json", b"{\"name\": 1,}", "the file is not valid JSON at line 1, column 12: a comma comes before a closing bracket"),
        ("two.json", b"{} {}", "the file is not valid JSON at line 1, column 4: there is more after the JSON value"),
    ];
    for (name, bytes, expected) in bad {
        let (_d, path) = file(name, bytes);
        said_once_in_words(&p2pds(&["policy", "check", &path]), expected);
        said_once_in_words(
            &p2pds(&[
                "policy",
                "obligations",
                "--policy",
                &path,
                "--node",
                "did:plc:bob",
            ]),
            expected,
        );
        said_once_in_words(
            &p2pds(&[
                "policy",
                "eval",
                "--policy",
                POLICY,
                "--observations",
                &path,
                "--now",
                NOW,
            ]),
            expected,
        );
    }
    said_once_in_words(
        &p2pds(&["policy", "check", &missing]),
        "there is no such file",
    );
    said_once_in_words(
        &p2pds(&["policy", "check", &folder]),
        "it is a folder, not a file",
    );
    said_once_in_words(
        &p2pds(&[
            "policy",
            "eval",
            "--policy",
            POLICY,
            "--observations",
            OBSERVATIONS,
            "--now",
            "yesterday",
        ]),
        "--now: \"yesterday\" is not a date-time",
    );
    // A policy that is JSON but not an object, through each command.
    let (_d, path) = file("list.json", b"[1, 2]");
    said_once_in_words(
        &p2pds(&["policy", "check", &path]),
        "the policy must be an object, not a list",
    );
    said_once_in_words(
        &p2pds(&[
            "policy",
            "eval",
            "--policy",
            &path,
            "--observations",
            OBSERVATIONS,
            "--now",
            NOW,
        ]),
        "the policy must be an object, not a list",
    );
}

/// The policy of the research's "Simplest Useful Thing" (seed §8), as written there: no
/// `rules.compliance`, no `rules.verification.layers`, no dates, a `version` number.
const SIMPLEST: &str = r#"{
  "$type": "org.p2pds.policy",
  "version": 1,
  "type": "mutual-aid",
  "name": "my-cluster",
  "members": [
    { "did": "did:plc:alice" },
    { "did": "did:plc:bob" },
    { "did": "did:plc:carol" }
  ],
  "rules": {
    "replication": { "strategy": "full", "minCopies": 2 },
    "verification": { "interval": "30m", "sampleSize": 50 },
    "sync": { "maxLag": "5m" }
  }
}"#;

#[test]
fn check_accepts_the_simplest_policy_and_prints_its_defaults() {
    let (_dir, path) = file("simplest.json", SIMPLEST.as_bytes());
    let o = p2pds(&["policy", "check", &path]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(
        out.contains("ok: \"my-cluster\" (mutual-aid), 3 members, 3 accounts, minCopies 2"),
        "{out}"
    );
    assert!(!out.contains("warning"), "{out}");
    let line = |path: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(path))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(line("rules.verification.layers"), "[0, 1] (default)");
    assert_eq!(line("rules.compliance.offlineGracePeriod"), "1h (default)");
    assert_eq!(
        line("rules.compliance.recoveryGracePeriod"),
        "30m (default)"
    );
    assert_eq!(
        line("rules.compliance.maxConsecutiveFailures"),
        "3 (default)"
    );
    assert_eq!(line("rules.verification.interval"), "30m");
    assert_eq!(line("rules.sync.maxLag"), "5m");
    assert_eq!(
        line("effectiveAt"),
        "as soon as every member has accepted (default)"
    );
    assert_eq!(
        line("version"),
        "1 (the author's label; members ack the CID)"
    );
}

/// The walkthrough's observations, with the acks pinning `policy` instead.
fn acking(policy: &Policy) -> Observations {
    let (_, mut obs, _) = walkthrough();
    for ack in &mut obs.acks {
        ack.value.policy.uri = policy.reference.uri.clone().unwrap_or_default();
        ack.value.policy.cid = policy.reference.cid.clone();
    }
    obs
}

#[test]
fn the_simplest_policy_evaluates_as_its_defaults_written_out_for_every_member() {
    let uri = "at://did:plc:alice/org.p2pds.policy/3mfwsjov4222b";
    let simplest: Value = serde_json::from_str(SIMPLEST).unwrap_or_default();
    let mut explicit = simplest.clone();
    explicit["rules"]["verification"]["layers"] = serde_json::json!([0, 1]);
    explicit["rules"]["compliance"] = serde_json::json!({
        "offlineGracePeriod": "1h", "recoveryGracePeriod": "30m", "maxConsecutiveFailures": 3
    });
    explicit["effectiveAt"] = Value::from("1970-01-01T00:00:00.000Z");
    explicit["createdAt"] = Value::from("1970-01-01T00:00:00.000Z");
    let check =
        |record: &Value| match check_value(&serde_json::json!({"uri": uri, "value": record})) {
            Ok(c) => c.policy,
            Err(p) => panic!("{p}"),
        };
    let (a, b) = (check(&simplest), check(&explicit));
    assert_ne!(a.reference.cid, b.reference.cid);
    let now = Timestamp::parse(NOW).unwrap_or_else(|e| panic!("{e}"));
    let report = |p: &Policy| {
        let mut v = serde_json::to_value(evaluate(p, &acking(p), now)).unwrap_or_default();
        // The versions differ; everything they mean is the same.
        v["policy"]["cid"] = Value::Null;
        v
    };
    let (ra, rb) = (report(&a), report(&b));
    assert_eq!(ra["lifecycle"]["phase"], "active", "{ra:#}");
    assert_eq!(ra, rb);
    // The file a person checks and the record a node reads give the same policy.
    let file = check_json(&serde_json::json!({"uri": uri, "value": simplest}).to_string())
        .map(|c| c.policy)
        .map_err(|p| p.to_string());
    assert_eq!(file, Ok(a));
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

/// The mutual-aid example with `field` set to `value`, written to a fresh folder.
fn example_with(field: &[&str], value: Value) -> (tempfile::TempDir, String) {
    let mut v: Value =
        serde_json::from_str(&read("lexicons/examples/policy-mutual-aid.json")).unwrap_or_default();
    let mut cur = &mut v;
    for key in &field[..field.len() - 1] {
        cur = &mut cur[*key];
    }
    cur[field[field.len() - 1]] = value;
    file("policy.json", v.to_string().as_bytes())
}

#[test]
fn check_accepts_values_of_open_sets_that_a_newer_writer_uses() {
    // `type`, `strategy`, `placement` and `status` are knownValues in the lexicon: open sets.
    let cases: [(&[&str], &str, &str); 4] = [
        (&["type"], "co-op", "type is \"co-op\", which this version does not know (mutual-aid, sla, custom): read as custom"),
        (&["rules", "replication", "strategy"], "mirror", "rules.replication.strategy is \"mirror\", which this version does not know (\"full\" or \"partial\"): read as full"),
        (&["rules", "replication", "placement"], "nearest", "rules.replication.placement is \"nearest\", which this version does not know (\"all\" or \"ring\"): read as all"),
        (&["status"], "paused", "status is \"paused\", which this version does not know (\"active\" or \"revoked\"): read as active"),
    ];
    for (field, value, warning) in cases {
        let (_dir, path) = example_with(field, Value::from(value));
        let o = p2pds(&["policy", "check", &path]);
        let out = stdout(&o);
        assert_eq!(o.status.code(), Some(0), "{value}: {out}{}", stderr(&o));
        assert!(out.contains(&format!("warning: {warning}")), "{out}");
        assert_eq!(out.matches("warning:").count(), 1, "{out}");
    }
    let (_dir, path) = example_with(&["type"], Value::from("co-op"));
    let out = stdout(&p2pds(&["policy", "check", &path]));
    assert!(
        out.contains("ok: \"Kitchen table circle\" (co-op, read as custom), 3 members"),
        "{out}"
    );
}

#[test]
fn check_says_what_a_record_of_another_type_is() {
    let ack = read("lexicons/examples/ack.json");
    let post = r#"{"$type": "app.bsky.feed.post", "text": "hello", "createdAt": "2026-01-01T00:00:00.000Z"}"#;
    let envelope =
        format!(r#"{{"uri": "at://did:plc:alice/org.p2pds.policy.ack/3k", "value": {ack}}}"#);
    let untyped = r#"{"text": "hello", "createdAt": "2026-01-01T00:00:00.000Z"}"#;
    let cases = [
        (ack.as_str(), "this is an org.p2pds.policy.ack record, not a policy (org.p2pds.policy)"),
        (post, "this is an app.bsky.feed.post record, not a policy (org.p2pds.policy)"),
        (envelope.as_str(), "this is an org.p2pds.policy.ack record, not a policy (org.p2pds.policy)"),
        (untyped, "this record has no $type and none of a policy's fields (name, type, members, rules): it is not a policy (org.p2pds.policy)"),
    ];
    for (text, expected) in cases {
        let (_dir, path) = file("record.json", text.as_bytes());
        let o = p2pds(&["policy", "check", &path]);
        said_once_in_words(&o, expected);
        let out = stdout(&o);
        assert!(out.contains("1 problem"), "{out}");
        assert!(!out.contains("missing"), "{out}");
    }
}

#[test]
fn check_accepts_the_minimal_example_of_the_lexicon() {
    let o = p2pds(&["policy", "check", "lexicons/examples/policy-minimal.json"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(!out.contains("warning"), "{out}");
    assert!(out.contains("(default)"), "{out}");
    // The same record as docs/policy.md's simplest policy: the same CID.
    let simplest = check_json(SIMPLEST).map(|c| c.policy.reference.cid);
    let example =
        check_json(&read("lexicons/examples/policy-minimal.json")).map(|c| c.policy.reference.cid);
    assert_eq!(example, simplest);
}

#[test]
fn check_says_what_the_detection_target_asks_in_words() {
    let o = p2pds(&["policy", "check", "lexicons/examples/policy-detect.json"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(!out.contains("warning"), "{out}");
    let line = |path: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(path))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    // K = ⌈ln 0.01 / ln 0.99⌉ = 459 over 1d / 6h = 4 rounds: 115 a round, more than the 20
    // stated.
    assert_eq!(
        line("rules.verification.detect"),
        "a loss of 1% within 1d with 99% confidence: 459 blocks in 4 rounds, 115 a round"
    );
    assert_eq!(
        line("rules.verification.sampleSize"),
        "115 (rules.verification.detect asks for more than the 20 stated)"
    );
    assert!(
        out.lines().any(|l| l == "Checks 115 blocks of each copy every 6 hours (460 a day): a loss of 1% is found within a day with 99% confidence; every block of a copy of 10,000 blocks is checked at least once every 22 days."),
        "{out}"
    );
    // The obligations carry the size in force.
    let o = p2pds(&[
        "policy",
        "obligations",
        "--policy",
        "lexicons/examples/policy-detect.json",
        "--node",
        "did:plc:judy",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let sizes: Vec<&Value> = v["verify"]
        .as_array()
        .map(|a| a.iter().map(|d| &d["sampleSize"]).collect())
        .unwrap_or_default();
    assert!(!sizes.is_empty(), "{v:#}");
    assert!(sizes.iter().all(|s| s.as_u64() == Some(115)), "{v:#}");
    // Another copy size.
    let out = stdout(&p2pds(&[
        "policy",
        "check",
        "lexicons/examples/policy-detect.json",
        "--blocks",
        "1000",
    ]));
    assert!(
        out.contains(
            "every block of a copy of 1,000 blocks is checked at least once every 3 days."
        ),
        "{out}"
    );
}

#[test]
fn check_says_the_sampling_of_a_policy_without_a_target_too() {
    let (_dir, path) = file("simplest.json", SIMPLEST.as_bytes());
    let out = stdout(&p2pds(&["policy", "check", &path]));
    // 10,000 / 50 = 200 rounds of 30 minutes: 100 hours, 4 days and 4 hours.
    assert!(
        out.lines().any(|l| l == "Checks 50 blocks of each copy every 30 minutes (2,400 a day); every block of a copy of 10,000 blocks is checked at least once every 5 days."),
        "{out}"
    );
    assert!(!out.contains("rules.verification.detect"), "{out}");
}

#[test]
fn check_refuses_a_detection_target_the_sample_cap_cannot_reach() {
    let (_d, path) = example_with(
        &["rules", "verification", "detect"],
        serde_json::json!({"loss": "0.01%", "confidence": "99.9%", "within": "1h"}),
    );
    let o = p2pds(&["policy", "check", &path]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("- rules.verification.detect asks to find a loss of 0.01% within 1h with 99.9% confidence: that takes 69,075 blocks in 1 round of 1h, 69,075 a round, more than the 1,000 a round a policy may ask for: make within at least 2d22h, verify more often, or look for a larger loss or with less confidence"),
        "{out}"
    );
}
