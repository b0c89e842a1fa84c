//! Obligations: which accounts each member's node must hold, and whom it must verify, how
//! often, with what sample size and which layers (seed §8: policy → obligation).
//!
//! Placement `all`: every member holds every subject but its own. Placement `ring`: members
//! stand on a ring ordered by the SHA-256 of their DID (bytes ascending, DID as tie-break); a
//! member's account is held by the `minCopies` members that follow it on the ring, a non-member
//! subject by the `minCopies` members at or after the position of its own hash; members that
//! are down (failed or abandoned) are skipped, so the next ones take their accounts over.
//!
//! Verification: for each subject, its live holders in ring order form a chain. The owner (when
//! a live member) verifies the first holder, each holder verifies the next; without a live
//! owner the chain closes into a cycle. So every live copy has exactly one assigned verifier
//! (none when it is the only copy and the owner is absent).
//!
//! Invariants: the result depends on the policy and the set of down members only; any
//! implementation can recompute it from this description (SHA-256 of the DID's UTF-8 bytes).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::model::{Placement, Policy, PolicyRef, Strategy};
use super::time::{Duration, Timestamp};

/// Members in ring order.
#[derive(Debug, Clone)]
pub struct Ring {
    /// Member indices (into `policy.members`) in ring order.
    order: Vec<usize>,
    /// Ring position of each member index.
    pos: Vec<usize>,
    /// SHA-256 of each ring position's DID.
    digests: Vec<[u8; 32]>,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl Ring {
    pub fn new(policy: &Policy) -> Ring {
        let mut keyed: Vec<([u8; 32], usize)> = policy
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| (digest(&m.did), i))
            .collect();
        // Members are sorted by DID, so the index breaks digest ties by DID.
        keyed.sort();
        let mut pos = vec![0; keyed.len()];
        for (p, (_, i)) in keyed.iter().enumerate() {
            if let Some(slot) = pos.get_mut(*i) {
                *slot = p;
            }
        }
        Ring {
            order: keyed.iter().map(|(_, i)| *i).collect(),
            pos,
            digests: keyed.iter().map(|(d, _)| *d).collect(),
        }
    }

    /// Members that could hold `subject`, in the order they are asked: from the ring position
    /// after the owner (or the subject's own hash), all the way round, the owner left out.
    pub fn candidates(
        &self,
        owner: Option<usize>,
        subject: &str,
    ) -> impl Iterator<Item = usize> + '_ {
        let n = self.order.len();
        let start = match owner.and_then(|o| self.pos.get(o)) {
            Some(p) => p + 1,
            None => {
                let d = digest(subject);
                self.digests.partition_point(|x| *x < d)
            }
        };
        (0..n)
            .filter_map(move |k| self.order.get((start + k) % n.max(1)).copied())
            .filter(move |m| Some(*m) != owner)
    }
}

/// One member's duty to hold a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub member: usize,
    /// Down members whose copy this one replaces (placement `ring`).
    pub takes_over_from: Vec<usize>,
    /// When this member took the subject over (when the member it replaces went down).
    pub since: Option<Timestamp>,
}

/// Who holds one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holders {
    /// The subject's own member, if it is one.
    pub owner: Option<usize>,
    /// Live members that must hold it, in ring order.
    pub live: Vec<Slot>,
    /// Members that would hold it but are down.
    pub down: Vec<usize>,
}

impl Holders {
    /// The member assigned to verify `member`'s copy, if any.
    pub fn verifier_of(&self, member: usize, owner_live: bool) -> Option<usize> {
        let i = self.live.iter().position(|s| s.member == member)?;
        self.verifier_of_index(i, owner_live)
    }

    /// The member assigned to verify the copy of `live[i]`, if any.
    pub fn verifier_of_index(&self, i: usize, owner_live: bool) -> Option<usize> {
        match i {
            0 if owner_live => self.owner,
            0 if self.live.len() >= 2 => self.live.last().map(|s| s.member),
            0 => None,
            i => self.live.get(i - 1).map(|s| s.member),
        }
    }
}

/// The holders of `subject`. `down(m)` tells when member `m` went down, if it is down.
pub fn holders(
    policy: &Policy,
    ring: &Ring,
    subject: &str,
    down: &dyn Fn(usize) -> Option<Timestamp>,
) -> Holders {
    let owner = policy
        .members
        .binary_search_by(|m| m.did.as_str().cmp(subject))
        .ok();
    let k = usize::try_from(policy.replication.min_copies).unwrap_or(usize::MAX);
    let mut live = Vec::new();
    let mut down_nominal: Vec<(Timestamp, usize)> = Vec::new();
    match policy.replication.placement {
        Placement::All => {
            for m in ring.candidates(owner, subject) {
                match down(m) {
                    Some(t) => down_nominal.push((t, m)),
                    None => live.push(Slot {
                        member: m,
                        takes_over_from: Vec::new(),
                        since: None,
                    }),
                }
            }
        }
        Placement::Ring => {
            let mut replacements = Vec::new();
            for (seen, m) in ring.candidates(owner, subject).enumerate() {
                if seen >= k && live.len() >= k {
                    break;
                }
                let is_nominal = seen < k;
                match down(m) {
                    Some(t) if is_nominal => down_nominal.push((t, m)),
                    Some(_) => {}
                    None if live.len() < k => {
                        if !is_nominal {
                            replacements.push(live.len());
                        }
                        live.push(Slot {
                            member: m,
                            takes_over_from: Vec::new(),
                            since: None,
                        });
                    }
                    None => {}
                }
            }
            // The i-th replacement (in ring order) took over from the i-th member to go down.
            let mut by_time = down_nominal.clone();
            by_time.sort();
            for (slot, (t, m)) in replacements.iter().zip(by_time.iter()) {
                if let Some(s) = live.get_mut(*slot) {
                    s.takes_over_from.push(*m);
                    s.since = Some(*t);
                }
            }
        }
    }
    let mut down_members: Vec<usize> = down_nominal.into_iter().map(|(_, m)| m).collect();
    down_members.sort_by_key(|m| ring.pos.get(*m).copied());
    Holders {
        owner,
        live,
        down: down_members,
    }
}

/// A duty to hold one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldDuty {
    pub subject: String,
    pub strategy: Strategy,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<String>,
    pub max_lag: Duration,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub takes_over_from: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// The policies that ask for it.
    pub policies: Vec<PolicyRef>,
}

/// A duty to verify one member's copy of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyDuty {
    /// The member whose copy is verified.
    pub target: String,
    /// Its node (where its records and endpoint are).
    pub target_node: String,
    pub subject: String,
    pub interval: Duration,
    pub layers: Vec<u8>,
    pub sample_size: u32,
    pub policies: Vec<PolicyRef>,
}

/// Everything one member's node must do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeObligations {
    pub member: String,
    pub node: String,
    /// Sorted by subject.
    pub hold: Vec<HoldDuty>,
    /// Sorted by (subject, target).
    pub verify: Vec<VerifyDuty>,
    /// The smallest storage limit any of the policies sets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// What the member `who` (account or node DID) must do under `policy`, with the members in
/// `down` (member DID → when it went down) skipped. `None` when `who` is not a member.
pub fn for_member(
    policy: &Policy,
    who: &str,
    down: &BTreeMap<String, Timestamp>,
) -> Option<NodeObligations> {
    let me = policy
        .members
        .iter()
        .position(|m| m.did == who || m.node == who)?;
    let member = policy.members.get(me)?;
    let ring = Ring::new(policy);
    let is_down = |m: usize| {
        policy
            .members
            .get(m)
            .and_then(|mm| down.get(&mm.did).copied())
    };
    let mut hold = Vec::new();
    let mut verify = Vec::new();
    for subject in &policy.replication.subjects {
        let h = holders(policy, &ring, subject, &is_down);
        if let Some(slot) = h.live.iter().find(|s| s.member == me) {
            hold.push(HoldDuty {
                subject: subject.clone(),
                strategy: policy.replication.strategy,
                collections: policy.replication.collections.clone(),
                max_lag: policy.max_lag,
                takes_over_from: slot
                    .takes_over_from
                    .iter()
                    .filter_map(|m| policy.members.get(*m))
                    .map(|m| m.did.clone())
                    .collect(),
                since: slot.since,
                policies: vec![policy.reference.clone()],
            });
        }
        let owner_live = h.owner.is_some_and(|o| is_down(o).is_none());
        for slot in &h.live {
            if h.verifier_of(slot.member, owner_live) == Some(me) {
                if let Some(target) = policy.members.get(slot.member) {
                    verify.push(VerifyDuty {
                        target: target.did.clone(),
                        target_node: target.node.clone(),
                        subject: subject.clone(),
                        interval: policy.verification.interval,
                        layers: policy.verification.layers.clone(),
                        sample_size: policy.verification.sample_size,
                        policies: vec![policy.reference.clone()],
                    });
                }
            }
        }
    }
    verify.sort_by(|a, b| (&a.subject, &a.target).cmp(&(&b.subject, &b.target)));
    Some(NodeObligations {
        member: member.did.clone(),
        node: member.node.clone(),
        hold,
        verify,
        max_bytes: policy.max_bytes,
    })
}

/// The set of members that hold at least one subject: used to check coverage in tests and docs.
pub fn holders_of_all(policy: &Policy) -> BTreeMap<String, BTreeSet<String>> {
    let ring = Ring::new(policy);
    let none = |_: usize| None;
    let mut out = BTreeMap::new();
    for subject in &policy.replication.subjects {
        let h = holders(policy, &ring, subject, &none);
        let set: BTreeSet<String> = h
            .live
            .iter()
            .filter_map(|s| policy.members.get(s.member))
            .map(|m| m.did.clone())
            .collect();
        out.insert(subject.clone(), set);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::validate::check_value;
    use serde_json::json;

    fn policy(n: usize, min: u32, placement: &str) -> Policy {
        let members: Vec<serde_json::Value> = (0..n)
            .map(|i| json!({"did": format!("did:plc:m{i:03}")}))
            .collect();
        let record = json!({
            "$type": "org.p2pds.policy", "name": "c", "type": "mutual-aid", "members": members,
            "rules": {
                "replication": {"strategy": "full", "minCopies": min, "placement": placement},
                "verification": {"interval": "30m", "layers": [0, 1], "sampleSize": 10},
                "sync": {"maxLag": "5m"},
                "compliance": {"offlineGracePeriod": "1d", "recoveryGracePeriod": "1h", "maxConsecutiveFailures": 3}
            },
            "effectiveAt": "2026-01-01T00:00:00Z", "createdAt": "2026-01-01T00:00:00Z"
        });
        match check_value(&record) {
            Ok(c) => c.policy,
            Err(p) => panic!("{p}"),
        }
    }

    #[test]
    fn all_placement_gives_everyone_every_other_account() {
        let p = policy(3, 2, "all");
        for (subject, holders) in holders_of_all(&p) {
            assert_eq!(holders.len(), 2);
            assert!(!holders.contains(&subject));
        }
    }

    #[test]
    fn ring_placement_is_balanced_and_never_self() {
        let p = policy(50, 3, "ring");
        let mut load: BTreeMap<String, usize> = BTreeMap::new();
        for (subject, holders) in holders_of_all(&p) {
            assert_eq!(holders.len(), 3, "{subject}");
            assert!(!holders.contains(&subject));
            for h in holders {
                *load.entry(h).or_default() += 1;
            }
        }
        // Each member holds exactly the accounts of the 3 members before it.
        assert!(load.values().all(|n| *n == 3), "{load:?}");
    }

    #[test]
    fn ring_placement_skips_down_members_and_records_the_takeover() {
        let p = policy(10, 2, "ring");
        let ring = Ring::new(&p);
        let subject = "did:plc:m000";
        let none = |_: usize| None;
        let before = holders(&p, &ring, subject, &none);
        let Some(first) = before.live.first().map(|s| s.member) else {
            panic!("no holder")
        };
        let t = Timestamp::from_millis(1_000);
        let down = move |m: usize| (m == first).then_some(t);
        let after = holders(&p, &ring, subject, &down);
        assert_eq!(after.live.len(), 2);
        assert_eq!(after.down, vec![first]);
        let takeover: Vec<&Slot> = after
            .live
            .iter()
            .filter(|s| !s.takes_over_from.is_empty())
            .collect();
        assert_eq!(takeover.len(), 1);
        assert_eq!(
            takeover
                .first()
                .map(|s| (s.takes_over_from.clone(), s.since)),
            Some((vec![first], Some(t)))
        );
    }

    #[test]
    fn every_live_copy_has_exactly_one_verifier() {
        for (n, min, placement) in [(3, 2, "all"), (5, 2, "ring"), (8, 3, "ring"), (2, 1, "all")] {
            let p = policy(n, min, placement);
            let down = BTreeMap::new();
            let mut verified: BTreeMap<(String, String), usize> = BTreeMap::new();
            for m in &p.members {
                let Some(o) = for_member(&p, &m.did, &down) else {
                    panic!("member")
                };
                for v in o.verify {
                    assert_ne!(v.target, m.did, "nobody verifies itself");
                    *verified.entry((v.subject, v.target)).or_default() += 1;
                }
            }
            let held: usize = holders_of_all(&p).values().map(BTreeSet::len).sum();
            assert_eq!(verified.len(), held, "{n} {min} {placement}");
            assert!(verified.values().all(|c| *c == 1));
        }
    }

    #[test]
    fn obligations_can_be_asked_by_node_did() {
        let p = policy(3, 2, "all");
        let o = for_member(&p, "did:plc:m001", &BTreeMap::new());
        let subjects: Vec<String> = o
            .map(|o| o.hold.into_iter().map(|h| h.subject).collect())
            .unwrap_or_default();
        assert_eq!(subjects, vec!["did:plc:m000", "did:plc:m002"]);
        assert!(for_member(&p, "did:plc:stranger", &BTreeMap::new()).is_none());
    }
}
