//! Where a policy version is in its life: scheduled, waiting for acks, active, rejected,
//! expired or revoked (seed §4).
//!
//! Invariants: an ack counts only from the acking member's own repo (the DID in its URI) and
//! only for the exact version it pins (CID, and URI when the policy's URI is known); acks dated
//! after `now` do not exist yet; a member's latest ack for the version decides.

use serde::Serialize;

use super::model::Policy;
use super::observations::AckObservation;
use super::time::Timestamp;

/// Ordered by precedence: the first that applies is the phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The author withdrew it (`status: revoked`).
    Revoked,
    /// `expiresAt` has passed.
    Expired,
    /// A member declined this version.
    Rejected,
    /// Some member has not accepted this version yet.
    Pending,
    /// Everyone accepted; `effectiveAt` is still ahead.
    Scheduled,
    /// Binding.
    Active,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AckState {
    Accepted,
    Declined,
    /// Acked another version (an older CID) only.
    Stale,
    Missing,
}

/// One member's answer to this version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberAck {
    pub member: String,
    pub state: AckState,
    /// When the deciding ack was made.
    pub at: Option<Timestamp>,
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    pub phase: Phase,
    /// When the version became binding: the later of `effectiveAt` and the last acceptance.
    pub active_since: Option<Timestamp>,
    /// From when obligations are measured: `activeSince`, or `effectiveAt` while not active.
    pub start: Timestamp,
    /// One per member, sorted by member DID.
    pub acks: Vec<MemberAck>,
    /// Acks not counted: unreadable dates, authors who are not members, other policies.
    pub ignored_acks: usize,
}

/// The phase of `policy` at `now`, given every ack observed.
pub fn evaluate(policy: &Policy, acks: &[AckObservation], now: Timestamp) -> Lifecycle {
    // The deciding ack per member: the latest one for this version (ties: by URI, then CID).
    type Candidate<'a> = (Timestamp, &'a str, &'a str, &'a AckObservation);
    let mut current: Vec<Option<Candidate>> = vec![None; policy.members.len()];
    let mut stale = vec![false; policy.members.len()];
    // Ignored acks are counted once each, however often they were read.
    let mut ignored: Vec<&AckObservation> = Vec::new();
    for ack in acks {
        let member = ack.author().and_then(|a| {
            policy
                .members
                .binary_search_by(|m| m.did.as_str().cmp(a))
                .ok()
        });
        let at = Timestamp::parse(&ack.value.created_at).ok();
        let (Some(i), Some(at)) = (member, at) else {
            ignored.push(ack);
            continue;
        };
        if at > now {
            ignored.push(ack);
            continue;
        }
        let pinned = &ack.value.policy;
        let same_uri = policy
            .reference
            .uri
            .as_ref()
            .is_none_or(|u| *u == pinned.uri);
        if pinned.cid == policy.reference.cid && same_uri {
            let candidate = (at, ack.uri.as_str(), ack.cid.as_deref().unwrap_or(""), ack);
            if let Some(slot) = current.get_mut(i) {
                let better = match slot {
                    None => true,
                    Some(old) => {
                        (
                            candidate.0,
                            candidate.1,
                            candidate.2,
                            candidate.3.value.accepted,
                        ) > (old.0, old.1, old.2, old.3.value.accepted)
                    }
                };
                if better {
                    *slot = Some(candidate);
                }
            }
        } else if policy
            .reference
            .uri
            .as_ref()
            .is_some_and(|u| *u == pinned.uri)
        {
            if let Some(s) = stale.get_mut(i) {
                *s = true;
            }
        } else {
            ignored.push(ack);
        }
    }
    ignored.sort_unstable();
    ignored.dedup();
    let mut member_acks = Vec::with_capacity(policy.members.len());
    for (i, m) in policy.members.iter().enumerate() {
        let entry = match current.get(i).copied().flatten() {
            Some((at, uri, _, ack)) => MemberAck {
                member: m.did.clone(),
                state: if ack.value.accepted {
                    AckState::Accepted
                } else {
                    AckState::Declined
                },
                at: Some(at),
                uri: Some(uri.to_string()),
                reason: ack.value.reason.clone(),
            },
            None => MemberAck {
                member: m.did.clone(),
                state: if stale.get(i).copied().unwrap_or(false) {
                    AckState::Stale
                } else {
                    AckState::Missing
                },
                at: None,
                uri: None,
                reason: None,
            },
        };
        member_acks.push(entry);
    }
    let all_accepted = member_acks.iter().all(|a| a.state == AckState::Accepted);
    let last_ack = member_acks.iter().filter_map(|a| a.at).max();
    let phase = if policy.revoked {
        Phase::Revoked
    } else if policy.expires_at.is_some_and(|x| now >= x) {
        Phase::Expired
    } else if member_acks.iter().any(|a| a.state == AckState::Declined) {
        Phase::Rejected
    } else if !all_accepted {
        Phase::Pending
    } else if now < policy.effective_at {
        Phase::Scheduled
    } else {
        Phase::Active
    };
    let active_since = match phase {
        Phase::Active => Some(last_ack.map_or(policy.effective_at, |a| a.max(policy.effective_at))),
        _ => None,
    };
    Lifecycle {
        phase,
        active_since,
        start: active_since.unwrap_or(policy.effective_at),
        acks: member_acks,
        ignored_acks: ignored.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::records::{AckRecord, StrongRef};
    use crate::policy::validate::check_value;
    use rstest::rstest;
    use serde_json::json;

    const URI: &str = "at://did:plc:alice/org.p2pds.policy/3kpolicy";

    fn policy(extra: serde_json::Value) -> Policy {
        let mut record = json!({
            "$type": "org.p2pds.policy", "name": "c", "type": "mutual-aid",
            "members": [{"did": "did:plc:alice"}, {"did": "did:plc:bob"}],
            "rules": {
                "replication": {"strategy": "full", "minCopies": 1},
                "verification": {"interval": "30m", "layers": [0], "sampleSize": 1},
                "sync": {"maxLag": "5m"},
                "compliance": {"offlineGracePeriod": "1d", "recoveryGracePeriod": "1h", "maxConsecutiveFailures": 3}
            },
            "effectiveAt": "2026-01-02T00:00:00Z", "createdAt": "2026-01-01T00:00:00Z"
        });
        if let (Some(obj), Some(extra)) = (record.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        let checked = check_value(&json!({"uri": URI, "cid": "bafyv2", "value": record}));
        match checked {
            Ok(c) => c.policy,
            Err(p) => panic!("{p}"),
        }
    }

    fn ack(who: &str, cid: &str, accepted: bool, at: &str) -> AckObservation {
        AckObservation {
            uri: format!("at://{who}/org.p2pds.policy.ack/{at}"),
            cid: None,
            value: AckRecord {
                lex_type: "org.p2pds.policy.ack".into(),
                policy: StrongRef {
                    uri: URI.into(),
                    cid: cid.into(),
                },
                accepted,
                reason: None,
                created_at: at.into(),
            },
        }
    }

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap_or(Timestamp::from_millis(0))
    }

    #[rstest]
    // Both accepted before effectiveAt: scheduled, then active from effectiveAt.
    #[case(&[("did:plc:alice", "bafyv2", true, "2026-01-01T01:00:00Z"), ("did:plc:bob", "bafyv2", true, "2026-01-01T02:00:00Z")], "2026-01-01T03:00:00Z", Phase::Scheduled)]
    #[case(&[("did:plc:alice", "bafyv2", true, "2026-01-01T01:00:00Z"), ("did:plc:bob", "bafyv2", true, "2026-01-01T02:00:00Z")], "2026-01-03T00:00:00Z", Phase::Active)]
    // Bob acked the previous version only.
    #[case(&[("did:plc:alice", "bafyv2", true, "2026-01-01T01:00:00Z"), ("did:plc:bob", "bafyv1", true, "2026-01-01T02:00:00Z")], "2026-01-03T00:00:00Z", Phase::Pending)]
    // Bob declines; later accepts: the latest decides.
    #[case(&[("did:plc:alice", "bafyv2", true, "2026-01-01T01:00:00Z"), ("did:plc:bob", "bafyv2", false, "2026-01-01T02:00:00Z")], "2026-01-03T00:00:00Z", Phase::Rejected)]
    #[case(&[("did:plc:alice", "bafyv2", true, "2026-01-01T01:00:00Z"), ("did:plc:bob", "bafyv2", false, "2026-01-01T02:00:00Z"), ("did:plc:bob", "bafyv2", true, "2026-01-02T05:00:00Z")], "2026-01-03T00:00:00Z", Phase::Active)]
    // An ack from the future does not count yet.
    #[case(&[("did:plc:alice", "bafyv2", true, "2026-01-01T01:00:00Z"), ("did:plc:bob", "bafyv2", true, "2026-01-09T00:00:00Z")], "2026-01-03T00:00:00Z", Phase::Pending)]
    // Someone who is not a member cannot ack for bob.
    #[case(&[("did:plc:alice", "bafyv2", true, "2026-01-01T01:00:00Z"), ("did:plc:mallory", "bafyv2", true, "2026-01-01T02:00:00Z")], "2026-01-03T00:00:00Z", Phase::Pending)]
    fn phases(#[case] acks: &[(&str, &str, bool, &str)], #[case] now: &str, #[case] phase: Phase) {
        let acks: Vec<AckObservation> =
            acks.iter().map(|(w, c, a, at)| ack(w, c, *a, at)).collect();
        assert_eq!(evaluate(&policy(json!({})), &acks, t(now)).phase, phase);
    }

    #[test]
    fn active_since_is_the_later_of_effective_at_and_the_last_ack() {
        let acks = [
            ack("did:plc:alice", "bafyv2", true, "2026-01-01T01:00:00Z"),
            ack("did:plc:bob", "bafyv2", true, "2026-01-02T06:00:00Z"),
        ];
        let l = evaluate(&policy(json!({})), &acks, t("2026-01-03T00:00:00Z"));
        assert_eq!(l.active_since, Some(t("2026-01-02T06:00:00Z")));
        assert_eq!(l.start, t("2026-01-02T06:00:00Z"));
    }

    #[rstest]
    #[case(json!({"status": "revoked"}), Phase::Revoked)]
    #[case(json!({"expiresAt": "2026-01-02T12:00:00Z"}), Phase::Expired)]
    fn revoked_and_expired_override_acks(#[case] extra: serde_json::Value, #[case] phase: Phase) {
        let acks = [
            ack("did:plc:alice", "bafyv2", true, "2026-01-01T01:00:00Z"),
            ack("did:plc:bob", "bafyv2", true, "2026-01-01T02:00:00Z"),
        ];
        assert_eq!(
            evaluate(&policy(extra), &acks, t("2026-01-03T00:00:00Z")).phase,
            phase
        );
    }

    #[test]
    fn member_acks_say_who_is_missing_and_who_is_stale() {
        let acks = [ack("did:plc:bob", "bafyv1", true, "2026-01-01T02:00:00Z")];
        let l = evaluate(&policy(json!({})), &acks, t("2026-01-03T00:00:00Z"));
        let states: Vec<(String, AckState)> =
            l.acks.into_iter().map(|a| (a.member, a.state)).collect();
        assert_eq!(
            states,
            vec![
                ("did:plc:alice".into(), AckState::Missing),
                ("did:plc:bob".into(), AckState::Stale)
            ]
        );
    }
}
