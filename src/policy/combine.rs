//! Several policies naming the same account: they combine deterministically, the strictest
//! requirement winning field by field (seed §9, "policy conflicts").
//!
//! Per account: the most copies (`minCopies` max), the whole repo over a partial copy (and the
//! union of the collections when all are partial), the shortest `maxLag`, the shortest
//! verification interval, the union of layers, the largest sample, the shortest grace periods
//! and the fewest tolerated failures. Per node: the union of the holding and verifying duties,
//! each merged the same way; storage limits add up (each policy is a separate commitment), and
//! a node with any unlimited policy is unlimited.
//!
//! Invariants: every merge is a max, min or union, so the result does not depend on the order
//! of the policies (tested by proptest); inactive policies are the caller's to filter out.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::model::{Policy, PolicyRef, Strategy};
use super::obligations::{self, HoldDuty, NodeObligations, VerifyDuty};
use super::time::{Duration, Timestamp};

/// What the group asks for one account, all policies together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirement {
    pub subject: String,
    pub strategy: Strategy,
    /// For a partial copy, the union of the collections; empty for a full copy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<String>,
    pub min_copies: u32,
    pub max_lag: Duration,
    pub verification_interval: Duration,
    pub layers: Vec<u8>,
    pub sample_size: u32,
    pub offline_grace_period: Duration,
    pub recovery_grace_period: Duration,
    pub max_consecutive_failures: u32,
    /// The policies naming this account, sorted.
    pub policies: Vec<PolicyRef>,
}

fn merge_strategy(a: (Strategy, &[String]), b: (Strategy, &[String])) -> (Strategy, Vec<String>) {
    match (a.0, b.0) {
        (Strategy::Partial, Strategy::Partial) => {
            let set: BTreeSet<&String> = a.1.iter().chain(b.1.iter()).collect();
            (Strategy::Partial, set.into_iter().cloned().collect())
        }
        _ => (Strategy::Full, Vec::new()),
    }
}

fn union<T: Ord + Clone>(a: &[T], b: &[T]) -> Vec<T> {
    let set: BTreeSet<&T> = a.iter().chain(b.iter()).collect();
    set.into_iter().cloned().collect()
}

/// Every account named by any of `policies`, with the strictest requirement on it.
pub fn requirements(policies: &[&Policy]) -> BTreeMap<String, Requirement> {
    let mut out: BTreeMap<String, Requirement> = BTreeMap::new();
    for p in policies {
        for subject in &p.replication.subjects {
            let mine = Requirement {
                subject: subject.clone(),
                strategy: p.replication.strategy,
                collections: p.replication.collections.clone(),
                min_copies: p.replication.min_copies,
                max_lag: p.max_lag,
                verification_interval: p.verification.interval,
                layers: p.verification.layers.clone(),
                sample_size: p.verification.sample_size,
                offline_grace_period: p.compliance.offline_grace_period,
                recovery_grace_period: p.compliance.recovery_grace_period,
                max_consecutive_failures: p.compliance.max_consecutive_failures,
                policies: vec![p.reference.clone()],
            };
            match out.get_mut(subject) {
                None => {
                    out.insert(subject.clone(), mine);
                }
                Some(r) => {
                    let (strategy, collections) = merge_strategy(
                        (r.strategy, &r.collections),
                        (mine.strategy, &mine.collections),
                    );
                    r.strategy = strategy;
                    r.collections = collections;
                    r.min_copies = r.min_copies.max(mine.min_copies);
                    r.max_lag = r.max_lag.min(mine.max_lag);
                    r.verification_interval =
                        r.verification_interval.min(mine.verification_interval);
                    r.layers = union(&r.layers, &mine.layers);
                    r.sample_size = r.sample_size.max(mine.sample_size);
                    r.offline_grace_period = r.offline_grace_period.min(mine.offline_grace_period);
                    r.recovery_grace_period =
                        r.recovery_grace_period.min(mine.recovery_grace_period);
                    r.max_consecutive_failures = r
                        .max_consecutive_failures
                        .min(mine.max_consecutive_failures);
                    r.policies = union(&r.policies, &mine.policies);
                }
            }
        }
    }
    out
}

/// What the member `who` must do under all of `policies` together; `None` when it is a member
/// of none. `down`: members (by DID) known to be down, and since when.
pub fn obligations(
    policies: &[&Policy],
    who: &str,
    down: &BTreeMap<String, Timestamp>,
) -> Option<NodeObligations> {
    let mut hold: BTreeMap<String, HoldDuty> = BTreeMap::new();
    let mut verify: BTreeMap<(String, String, String), VerifyDuty> = BTreeMap::new();
    let mut identity: Option<(String, String)> = None;
    let mut max_bytes: Option<Option<u64>> = None;
    for p in policies {
        let Some(o) = obligations::for_member(p, who, down) else {
            continue;
        };
        // The member's DIDs as the policies state them; the smallest pair if they disagree.
        let me = (o.member.clone(), o.node.clone());
        identity = Some(match identity {
            Some(old) if old <= me => old,
            _ => me,
        });
        max_bytes = Some(match (max_bytes, o.max_bytes) {
            (None, b) => b,
            (Some(Some(a)), Some(b)) => Some(a.saturating_add(b)),
            _ => None,
        });
        for h in o.hold {
            match hold.get_mut(&h.subject) {
                None => {
                    hold.insert(h.subject.clone(), h);
                }
                Some(old) => {
                    let (strategy, collections) = merge_strategy(
                        (old.strategy, &old.collections),
                        (h.strategy, &h.collections),
                    );
                    old.strategy = strategy;
                    old.collections = collections;
                    old.max_lag = old.max_lag.min(h.max_lag);
                    old.takes_over_from = union(&old.takes_over_from, &h.takes_over_from);
                    old.since = match (old.since, h.since) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        _ => None,
                    };
                    old.policies = union(&old.policies, &h.policies);
                }
            }
        }
        for v in o.verify {
            let key = (v.subject.clone(), v.target.clone(), v.target_node.clone());
            match verify.get_mut(&key) {
                None => {
                    verify.insert(key, v);
                }
                Some(old) => {
                    old.interval = old.interval.min(v.interval);
                    old.layers = union(&old.layers, &v.layers);
                    old.sample_size = old.sample_size.max(v.sample_size);
                    old.policies = union(&old.policies, &v.policies);
                }
            }
        }
    }
    let (member, node) = identity?;
    Some(NodeObligations {
        member,
        node,
        hold: hold.into_values().collect(),
        verify: verify.into_values().collect(),
        max_bytes: max_bytes.flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::validate::check_value;
    use proptest::prelude::{prop_assert_eq, proptest, Just, Strategy as _};
    use serde_json::json;

    fn policy(
        name: &str,
        min: u32,
        strategy: &str,
        collections: &[&str],
        lag: &str,
        interval: &str,
        layers: &[u8],
    ) -> Policy {
        let mut replication = json!({"strategy": strategy, "minCopies": min});
        if !collections.is_empty() {
            replication["collections"] = json!(collections);
        }
        let record = json!({
            "$type": "org.p2pds.policy", "name": name, "type": "mutual-aid",
            "members": [{"did": "did:plc:a"}, {"did": "did:plc:b"}, {"did": "did:plc:c"}, {"did": "did:plc:d"}],
            "rules": {
                "replication": replication,
                "verification": {"interval": interval, "layers": layers, "sampleSize": min * 10},
                "sync": {"maxLag": lag},
                "compliance": {"offlineGracePeriod": "1d", "recoveryGracePeriod": "1h", "maxConsecutiveFailures": min + 1}
            },
            "effectiveAt": "2026-01-01T00:00:00Z", "createdAt": "2026-01-01T00:00:00Z"
        });
        match check_value(&record) {
            Ok(c) => c.policy,
            Err(p) => panic!("{p}"),
        }
    }

    fn three() -> Vec<Policy> {
        vec![
            policy(
                "one",
                1,
                "partial",
                &["app.bsky.feed.post"],
                "1h",
                "1h",
                &[0],
            ),
            policy(
                "two",
                2,
                "partial",
                &["app.bsky.actor.profile"],
                "5m",
                "2h",
                &[1],
            ),
            policy("three", 1, "full", &[], "30m", "30m", &[0, 3]),
        ]
    }

    #[test]
    fn strictest_requirement_wins_field_by_field() {
        let ps = three();
        let refs: Vec<&Policy> = ps.iter().collect();
        let req = requirements(&refs);
        let Some(r) = req.get("did:plc:a") else {
            panic!("no requirement")
        };
        assert_eq!(r.strategy, super::Strategy::Full);
        assert!(r.collections.is_empty());
        assert_eq!(r.min_copies, 2);
        assert_eq!(r.max_lag, Duration::from_secs(300));
        assert_eq!(r.verification_interval, Duration::from_secs(1800));
        assert_eq!(r.layers, vec![0, 1, 3]);
        assert_eq!(r.sample_size, 20);
        assert_eq!(r.max_consecutive_failures, 2);
        assert_eq!(r.policies.len(), 3);
    }

    #[test]
    fn partial_copies_combine_into_the_union_of_collections() {
        let ps = three();
        let refs: Vec<&Policy> = ps.iter().take(2).collect();
        let req = requirements(&refs);
        assert_eq!(
            req.get("did:plc:a").map(|r| r.collections.clone()),
            Some(vec![
                "app.bsky.actor.profile".to_string(),
                "app.bsky.feed.post".to_string()
            ])
        );
    }

    proptest! {
        #[test]
        fn combining_does_not_depend_on_order(order in Just((0..3usize).collect::<Vec<_>>()).prop_shuffle()) {
            let ps = three();
            let refs: Vec<&Policy> = ps.iter().collect();
            let shuffled: Vec<&Policy> = order.iter().filter_map(|i| ps.get(*i)).collect();
            let a = serde_json::to_string(&requirements(&refs)).unwrap_or_default();
            let b = serde_json::to_string(&requirements(&shuffled)).unwrap_or_default();
            prop_assert_eq!(a, b);
            let down = BTreeMap::new();
            let a = serde_json::to_string(&obligations(&refs, "did:plc:b", &down)).unwrap_or_default();
            let b = serde_json::to_string(&obligations(&shuffled, "did:plc:b", &down)).unwrap_or_default();
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn node_obligations_merge_duties() {
        let ps = three();
        let refs: Vec<&Policy> = ps.iter().collect();
        let Some(o) = obligations(&refs, "did:plc:b", &BTreeMap::new()) else {
            panic!("member")
        };
        // "all" placement: b holds a, c, d under every policy, fully (policy three is full).
        assert_eq!(o.hold.len(), 3);
        assert!(o
            .hold
            .iter()
            .all(|h| h.strategy == super::Strategy::Full && h.policies.len() == 3));
        assert!(o.verify.iter().all(|v| v.layers == vec![0, 1, 3]));
    }
}
