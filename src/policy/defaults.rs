//! What a policy may leave out, and what it then means: the documented defaults, filled in
//! before a policy is read, and the effective policy shown to people.
//!
//! The research's simplest policy (seed, "Simplest Useful Thing": no `rules.compliance`, no
//! `rules.verification.layers`, no dates, a `version` number) is a valid policy. `fill` writes
//! the defaults into a copy of the record inside
//! [`check_value`](super::validate::check_value), the one reading that every caller uses (the
//! CLI, compliance evaluation, the circles), so every member computes the same policy from the
//! same record. The record's CID is computed before, from the record as its author wrote it:
//! acks pin what the author's repo holds.
//!
//! Invariants: filling is a pure function of the record; a field the record states is never
//! changed; a field that is present with the wrong type is left as it is, for validation to
//! refuse with its path.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::model::{
    Placement, Strategy, DEFAULT_LAYERS, DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_OFFLINE_GRACE_PERIOD, DEFAULT_RECOVERY_GRACE_PERIOD, DEFAULT_WINDOW, UNSTATED_TIME,
};
use super::validate::{Checked, Problem};

/// The optional fields that take a default when a record leaves them out (or sets them to
/// null), by JSON path, in the order the effective policy lists them.
pub const OPTIONAL: [&str; 14] = [
    "rules.replication.placement",
    "rules.replication.subjects",
    "rules.verification.layers",
    "rules.compliance.offlineGracePeriod",
    "rules.compliance.recoveryGracePeriod",
    "rules.compliance.maxConsecutiveFailures",
    "rules.compliance.heartbeatInterval",
    "rules.compliance.abandonAfter",
    "rules.storage.maxBytes",
    "rules.sla",
    "effectiveAt",
    "expiresAt",
    "status",
    "createdAt",
];

/// A record with its defaults filled in, ready to be read.
pub(crate) struct Filled {
    pub record: Value,
    /// JSON paths (from [`OPTIONAL`]) the record left out.
    pub defaulted: Vec<String>,
    /// The record's `version`, when it has a valid one.
    pub version: Option<u64>,
    /// A `version` that is not a whole number from 1.
    pub problems: Vec<Problem>,
}

/// Whether a field is left out: absent, or null (as the reader treats optional fields).
fn absent(v: Option<&Value>) -> bool {
    v.is_none_or(Value::is_null)
}

fn lookup<'v>(record: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(record, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

/// The paths of [`OPTIONAL`] that `record` leaves out. Only the fields whose enclosing object
/// is there count (a missing `rules` is a problem, not a default).
pub fn defaulted(record: &Value) -> Vec<String> {
    OPTIONAL
        .iter()
        .filter(|path| {
            let parent = path.rsplit_once('.').map(|(p, _)| p);
            let parent_there = match parent {
                None => record.is_object(),
                // A missing `rules.compliance` or `rules.storage` is itself a default.
                Some("rules.compliance") | Some("rules.storage") => {
                    lookup(record, "rules").is_some_and(Value::is_object)
                }
                Some(p) => lookup(record, p).is_some_and(Value::is_object),
            };
            parent_there && lookup(record, path).is_none()
        })
        .map(|p| (*p).to_string())
        .collect()
}

fn insert_absent(obj: &mut Map<String, Value>, key: &str, value: Value) {
    if absent(obj.get(key)) {
        obj.insert(key.to_string(), value);
    }
}

/// The record to read: `record` with the defaults that validation cannot supply itself written
/// in (the compliance thresholds, the layers, the dates), and `version` taken out (it is the
/// author's own label; the version members ack is the CID).
pub(crate) fn fill(record: &Value) -> Filled {
    let defaulted = defaulted(record);
    let mut out = record.clone();
    let mut version = None;
    let mut problems = Vec::new();
    if let Some(obj) = out.as_object_mut() {
        match obj.remove("version") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_u64().is_some_and(|v| v >= 1) => version = n.as_u64(),
            Some(other) => problems.push(Problem {
                path: "version".into(),
                message: format!("version is {other}: write a whole number from 1 (the author's own count of revisions), or leave it out"),
            }),
        }
        insert_absent(obj, "effectiveAt", json!(UNSTATED_TIME.to_string()));
        insert_absent(obj, "createdAt", json!(UNSTATED_TIME.to_string()));
        if let Some(Value::Object(rules)) = obj.get_mut("rules") {
            if let Some(Value::Object(verification)) = rules.get_mut("verification") {
                insert_absent(verification, "layers", json!(DEFAULT_LAYERS));
            }
            insert_absent(rules, "compliance", json!({}));
            if let Some(Value::Object(c)) = rules.get_mut("compliance") {
                insert_absent(
                    c,
                    "offlineGracePeriod",
                    json!(DEFAULT_OFFLINE_GRACE_PERIOD.to_string()),
                );
                insert_absent(
                    c,
                    "recoveryGracePeriod",
                    json!(DEFAULT_RECOVERY_GRACE_PERIOD.to_string()),
                );
                insert_absent(
                    c,
                    "maxConsecutiveFailures",
                    json!(DEFAULT_MAX_CONSECUTIVE_FAILURES),
                );
            }
        }
    }
    Filled {
        record: out,
        defaulted,
        version,
        problems,
    }
}

/// One line of the effective policy: a field by its JSON path, the value in force, and whether
/// that value is the default (the record left the field out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub path: String,
    pub value: String,
    pub defaulted: bool,
}

fn list<T: ToString>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}

/// The effective policy: every rule with the value in force, the defaults marked.
pub fn effective(checked: &Checked) -> Vec<Setting> {
    let p = &checked.policy;
    let is_default = |path: &str| checked.defaulted.iter().any(|d| d == path);
    let mut out: Vec<Setting> = Vec::new();
    let mut push = |path: &str, value: String| {
        out.push(Setting {
            path: path.to_string(),
            value,
            defaulted: is_default(path),
        });
    };
    if let Some(v) = checked.version_label {
        push(
            "version",
            format!("{v} (the author's label; members ack the CID)"),
        );
    }
    let rep = &p.replication;
    push(
        "rules.replication.strategy",
        match rep.strategy {
            Strategy::Full => "full".into(),
            Strategy::Partial => "partial".into(),
        },
    );
    if rep.strategy == Strategy::Partial {
        push("rules.replication.collections", list(&rep.collections));
    }
    push("rules.replication.minCopies", rep.min_copies.to_string());
    push(
        "rules.replication.placement",
        match rep.placement {
            Placement::All => "all".into(),
            Placement::Ring => "ring".into(),
        },
    );
    let accounts = format!(
        "{} account{}",
        rep.subjects.len(),
        if rep.subjects.len() == 1 { "" } else { "s" }
    );
    push(
        "rules.replication.subjects",
        if is_default("rules.replication.subjects") {
            format!("every member's account ({accounts})")
        } else {
            accounts
        },
    );
    let ver = &p.verification;
    push("rules.verification.interval", ver.interval.to_string());
    push("rules.verification.layers", list(&ver.layers));
    let stated = p.record.rules.verification.sample_size;
    push(
        "rules.verification.sampleSize",
        if i64::from(ver.sample_size) > stated {
            format!(
                "{} (rules.verification.detect asks for more than the {stated} stated)",
                ver.sample_size
            )
        } else {
            ver.sample_size.to_string()
        },
    );
    if let Some(d) = &ver.detect {
        let (t, n) = (d.target, d.derived);
        push(
            "rules.verification.detect",
            format!(
                "a loss of {} within {} with {} confidence: {} blocks in {} round{}, {} a round",
                t.loss,
                t.within,
                t.confidence,
                super::detect::thousands(n.total),
                super::detect::thousands(n.rounds),
                if n.rounds == 1 { "" } else { "s" },
                n.per_round
            ),
        );
    }
    push("rules.sync.maxLag", p.max_lag.to_string());
    let c = &p.compliance;
    push(
        "rules.compliance.offlineGracePeriod",
        c.offline_grace_period.to_string(),
    );
    push(
        "rules.compliance.recoveryGracePeriod",
        c.recovery_grace_period.to_string(),
    );
    push(
        "rules.compliance.maxConsecutiveFailures",
        c.max_consecutive_failures.to_string(),
    );
    push(
        "rules.compliance.heartbeatInterval",
        c.heartbeat_interval.to_string(),
    );
    push("rules.compliance.abandonAfter", c.abandon_after.to_string());
    push(
        "rules.storage.maxBytes",
        p.max_bytes
            .map_or_else(|| "no limit".to_string(), |b| b.to_string()),
    );
    match &p.sla {
        None => push(
            "rules.sla",
            format!("none: figures over {DEFAULT_WINDOW}, no targets"),
        ),
        Some(sla) => {
            let target = |t: Option<super::time::Percent>| {
                t.map_or_else(|| "no target".to_string(), |t| t.to_string())
            };
            push("rules.sla.window", sla.window.to_string());
            push("rules.sla.uptime", target(sla.uptime));
            push(
                "rules.sla.verificationPassRate",
                target(sla.verification_pass_rate),
            );
            push(
                "rules.sla.syncWithinMaxLag",
                target(sla.sync_within_max_lag),
            );
        }
    }
    push(
        "effectiveAt",
        if is_default("effectiveAt") {
            "as soon as every member has accepted".into()
        } else {
            p.effective_at.to_string()
        },
    );
    push(
        "expiresAt",
        p.expires_at
            .map_or_else(|| "never".to_string(), |t| t.to_string()),
    );
    push(
        "status",
        if p.revoked { "revoked" } else { "active" }.to_string(),
    );
    push(
        "createdAt",
        if is_default("createdAt") {
            "not stated".into()
        } else {
            p.created_at.to_string()
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{DEFAULT_ABANDON_AFTER, DEFAULT_HEARTBEAT_INTERVAL};
    use crate::policy::validate::check_value;
    use crate::policy::version::record_cid;

    /// The defaults as documented (docs/policy.md): heartbeat and abandon are applied by validation
    /// itself, listed here so one test covers every default.
    const DOCUMENTED: [(&str, &str); 7] = [
        ("rules.verification.layers", "[0, 1]"),
        ("rules.compliance.offlineGracePeriod", "1h"),
        ("rules.compliance.recoveryGracePeriod", "30m"),
        ("rules.compliance.maxConsecutiveFailures", "3"),
        ("rules.compliance.heartbeatInterval", "15m"),
        ("rules.compliance.abandonAfter", "7d"),
        ("rules.replication.placement", "all"),
    ];

    /// The policy of the research's "Simplest Useful Thing", as written there.
    fn simplest() -> Value {
        json!({
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
        })
    }

    fn checked(v: &Value) -> Checked {
        match check_value(v) {
            Ok(c) => c,
            Err(p) => panic!("{p}"),
        }
    }

    #[test]
    fn the_simplest_policy_is_valid_with_the_documented_defaults() {
        let c = checked(&simplest());
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let p = &c.policy;
        assert_eq!(p.verification.layers, DEFAULT_LAYERS.to_vec());
        assert_eq!(
            p.compliance.offline_grace_period,
            DEFAULT_OFFLINE_GRACE_PERIOD
        );
        assert_eq!(
            p.compliance.recovery_grace_period,
            DEFAULT_RECOVERY_GRACE_PERIOD
        );
        assert_eq!(
            p.compliance.max_consecutive_failures,
            DEFAULT_MAX_CONSECUTIVE_FAILURES
        );
        assert_eq!(p.compliance.heartbeat_interval, DEFAULT_HEARTBEAT_INTERVAL);
        assert_eq!(p.compliance.abandon_after, DEFAULT_ABANDON_AFTER);
        assert_eq!(p.effective_at, UNSTATED_TIME);
        assert_eq!(c.version_label, Some(1));
        let settings = effective(&c);
        for (path, value) in DOCUMENTED {
            let s = settings.iter().find(|s| s.path == path);
            assert_eq!(
                s.map(|s| (s.value.as_str(), s.defaulted)),
                Some((value, true)),
                "{path}"
            );
        }
        // The CID is the record's as written, not the filled one.
        let cid = record_cid(&simplest()).map_err(|e| e.to_string());
        assert_eq!(Ok(p.reference.cid.clone()), cid);
    }

    #[test]
    fn the_defaults_mean_the_same_as_writing_them_out() {
        let mut explicit = simplest();
        explicit["rules"]["verification"]["layers"] = json!([0, 1]);
        explicit["rules"]["compliance"] = json!({
            "offlineGracePeriod": "1h", "recoveryGracePeriod": "30m", "maxConsecutiveFailures": 3
        });
        explicit["effectiveAt"] = json!("1970-01-01T00:00:00Z");
        explicit["createdAt"] = json!("1970-01-01T00:00:00Z");
        let (a, b) = (checked(&simplest()).policy, checked(&explicit).policy);
        assert_ne!(a.reference.cid, b.reference.cid);
        assert_eq!(a.verification, b.verification);
        assert_eq!(a.compliance, b.compliance);
        assert_eq!(
            (a.effective_at, a.created_at),
            (b.effective_at, b.created_at)
        );
        assert_eq!(a.record.rules, b.record.rules);
    }

    #[test]
    fn stated_fields_are_never_replaced() {
        let mut v = simplest();
        v["rules"]["compliance"] = json!({"offlineGracePeriod": "24h"});
        v["rules"]["verification"]["layers"] = json!([3]);
        let c = checked(&v);
        assert_eq!(c.policy.verification.layers, vec![3]);
        assert_eq!(c.policy.compliance.offline_grace_period.to_string(), "1d");
        assert_eq!(
            c.policy.compliance.recovery_grace_period,
            DEFAULT_RECOVERY_GRACE_PERIOD
        );
        assert!(!c.defaulted.iter().any(|d| d == "rules.verification.layers"));
        assert!(c
            .defaulted
            .iter()
            .any(|d| d == "rules.compliance.recoveryGracePeriod"));
    }

    #[test]
    fn a_present_field_of_the_wrong_type_is_refused_not_defaulted() {
        let mut v = simplest();
        v["rules"]["compliance"] = json!("strict");
        v["rules"]["verification"]["layers"] = json!("0,1");
        let messages: Vec<String> = match check_value(&v) {
            Ok(_) => Vec::new(),
            Err(p) => p.problems.into_iter().map(|p| p.message).collect(),
        };
        assert!(
            messages.contains(&"rules.compliance must be an object, not text".to_string()),
            "{messages:?}"
        );
        assert!(
            messages.contains(&"rules.verification.layers must be a list, not text".to_string()),
            "{messages:?}"
        );
    }

    #[test]
    fn the_effective_policy_shows_the_detection_and_the_sample_it_raises() {
        let value_of = |v: &Value, path: &str| {
            effective(&checked(v))
                .into_iter()
                .find(|s| s.path == path)
                .map(|s| (s.value, s.defaulted))
        };
        let mut v = simplest();
        assert_eq!(value_of(&v, "rules.verification.detect"), None);
        assert_eq!(
            value_of(&v, "rules.verification.sampleSize"),
            Some(("50".to_string(), false))
        );
        v["rules"]["verification"]["interval"] = json!("6h");
        v["rules"]["verification"]["detect"] =
            json!({"loss": "1%", "confidence": "99%", "within": "1d"});
        assert_eq!(
            value_of(&v, "rules.verification.detect"),
            Some((
                "a loss of 1% within 1d with 99% confidence: 459 blocks in 4 rounds, 115 a round"
                    .to_string(),
                false
            ))
        );
        assert_eq!(
            value_of(&v, "rules.verification.sampleSize"),
            Some((
                "115 (rules.verification.detect asks for more than the 50 stated)".to_string(),
                false
            ))
        );
    }

    #[test]
    fn a_version_that_is_not_a_whole_number_is_a_problem() {
        let mut v = simplest();
        v["version"] = json!("1");
        let messages: Vec<String> = match check_value(&v) {
            Ok(_) => Vec::new(),
            Err(p) => p.problems.into_iter().map(|p| p.message).collect(),
        };
        assert_eq!(
            messages,
            vec!["version is \"1\": write a whole number from 1 (the author's own count of revisions), or leave it out"]
        );
    }
}
