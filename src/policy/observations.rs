//! What the nodes saw and published, as one JSON document: the input of an evaluation besides
//! the policy and `now`.
//!
//! The same facts come from public records: acks are `org.p2pds.policy.ack` records, heartbeats
//! are `org.p2pds.peer` `heartbeatAt` values as observed over time, holdings and verification
//! results are the entries of each node's `org.p2pds.policy.status` record (the record's author
//! is the holding node or the verifier), and heads are the accounts' latest commits as read from
//! their PDSes (`com.atproto.sync.getLatestCommit`). [`Observations::add_status`] and
//! [`Observations::add_peer`] make that mapping. The format is documented in `docs/policy.md`.
//!
//! Invariants: a set, not a sequence: evaluation sorts everything it reads, so the order of
//! entries (and exact duplicates) never changes a result.

use serde::{Deserialize, Serialize};

use super::records::{AckRecord, PeerRecord, StatusRecord, VerificationResultRecord};
use super::time::{TimeError, Timestamp};

/// Everything observed, from every node. All lists may be empty or missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Observations {
    #[serde(default)]
    pub acks: Vec<AckObservation>,
    #[serde(default)]
    pub heartbeats: Vec<Heartbeat>,
    #[serde(default)]
    pub heads: Vec<Head>,
    #[serde(default)]
    pub holdings: Vec<Holding>,
    #[serde(default)]
    pub verifications: Vec<Verification>,
}

/// An `org.p2pds.policy.ack` record as read from a repo (the `getRecord` shape). The acking
/// member is the DID in `uri`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AckObservation {
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    pub value: AckRecord,
}

impl AckObservation {
    /// The DID of the repo the ack was read from.
    pub fn author(&self) -> Option<&str> {
        let rest = self.uri.strip_prefix("at://")?;
        let authority = rest.split('/').next()?;
        authority.starts_with("did:").then_some(authority)
    }
}

/// A node was heard from: its `org.p2pds.peer` record said `heartbeatAt` = `at`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The node's DID.
    pub node: String,
    pub at: Timestamp,
}

/// An account's commit, as seen on its PDS: `rev` existed at `at` (first seen, or commit time).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub subject: String,
    pub rev: String,
    pub at: Timestamp,
}

/// A node held a verified copy of `subject` at revision `rev`, as of `syncedAt`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Holding {
    pub node: String,
    pub subject: String,
    pub rev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    pub synced_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// The result of one verification layer: `verifier` checked `node`'s copy of `subject`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    pub verifier: String,
    pub node: String,
    pub subject: String,
    pub layer: u8,
    pub outcome: Outcome,
    pub at: Timestamp,
    /// What a whole-copy check (layer 2) found the copy lacks; only on a failed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<Needs>,
}

/// What a copy lacks to be whole: records (and the tree nodes above them), and their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Needs {
    pub records: u64,
    pub bytes: u64,
}

/// The needs a published result states, when it states both figures.
fn needs_of(v: &VerificationResultRecord) -> Option<Needs> {
    Some(Needs {
        records: u64::try_from(v.needs_records?).ok()?,
        bytes: u64::try_from(v.needs_bytes?).ok()?,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    /// The node answered, wrongly: it does not hold what it should.
    Fail,
    /// The node did not answer. Not a failed check (uptime accounts for absence).
    Unreachable,
}

impl Outcome {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pass" => Some(Outcome::Pass),
            "fail" => Some(Outcome::Fail),
            "unreachable" => Some(Outcome::Unreachable),
            _ => None,
        }
    }
}

/// Why a published record could not be turned into observations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObservationError {
    #[error("{field}: {source}")]
    Time { field: String, source: TimeError },
    #[error("{field}: {value:?} is not a known {what}")]
    Unknown {
        field: String,
        value: String,
        what: &'static str,
    },
}

impl Observations {
    /// Adds the facts of one node's `org.p2pds.policy.status` record (`node` is the record's
    /// author). All or nothing: on error nothing is added.
    pub fn add_status(
        &mut self,
        node: &str,
        status: &StatusRecord,
    ) -> Result<(), ObservationError> {
        let time = |field: String, text: &str| {
            Timestamp::parse(text).map_err(|source| ObservationError::Time { field, source })
        };
        let mut holdings = Vec::with_capacity(status.holdings.len());
        for (i, h) in status.holdings.iter().enumerate() {
            holdings.push(Holding {
                node: node.to_string(),
                subject: h.did.clone(),
                rev: h.rev.clone(),
                data: Some(h.data.clone()),
                synced_at: time(format!("holdings[{i}].syncedAt"), &h.synced_at)?,
                bytes: h.bytes.and_then(|b| u64::try_from(b).ok()),
            });
        }
        let mut verifications = Vec::with_capacity(status.verifications.len());
        for (i, v) in status.verifications.iter().enumerate() {
            let outcome = Outcome::parse(&v.outcome).ok_or_else(|| ObservationError::Unknown {
                field: format!("verifications[{i}].outcome"),
                value: v.outcome.clone(),
                what: "outcome",
            })?;
            let layer = u8::try_from(v.layer).map_err(|_| ObservationError::Unknown {
                field: format!("verifications[{i}].layer"),
                value: v.layer.to_string(),
                what: "layer",
            })?;
            verifications.push(Verification {
                verifier: node.to_string(),
                node: v.target.clone(),
                subject: v.subject.clone(),
                layer,
                outcome,
                at: time(format!("verifications[{i}].at"), &v.at)?,
                needs: needs_of(v),
            });
        }
        self.holdings.append(&mut holdings);
        self.verifications.append(&mut verifications);
        Ok(())
    }

    /// Adds a heartbeat from one reading of a node's `org.p2pds.peer` record.
    pub fn add_peer(&mut self, node: &str, peer: &PeerRecord) -> Result<(), ObservationError> {
        let at = Timestamp::parse(&peer.heartbeat_at).map_err(|source| ObservationError::Time {
            field: "heartbeatAt".into(),
            source,
        })?;
        self.heartbeats.push(Heartbeat {
            node: node.to_string(),
            at,
        });
        Ok(())
    }

    /// All entries of `other` added to these.
    pub fn merge(&mut self, mut other: Observations) {
        self.acks.append(&mut other.acks);
        self.heartbeats.append(&mut other.heartbeats);
        self.heads.append(&mut other.heads);
        self.holdings.append(&mut other.holdings);
        self.verifications.append(&mut other.verifications);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::records::{HoldingRecord, StrongRef, VerificationResultRecord};

    fn status() -> StatusRecord {
        StatusRecord {
            lex_type: "org.p2pds.policy.status".into(),
            policy: StrongRef {
                uri: "at://did:plc:a/org.p2pds.policy/1".into(),
                cid: "bafy".into(),
            },
            holdings: vec![HoldingRecord {
                did: "did:plc:b".into(),
                rev: "3lbqf3dyx6o2c".into(),
                data: "bafydata".into(),
                synced_at: "2026-01-01T00:00:00Z".into(),
                bytes: Some(10),
            }],
            verifications: vec![VerificationResultRecord {
                target: "did:plc:c".into(),
                subject: "did:plc:b".into(),
                layer: 1,
                outcome: "pass".into(),
                at: "2026-01-01T00:01:00Z".into(),
                detail: None,
                needs_records: None,
                needs_bytes: None,
            }],
            updated_at: "2026-01-01T00:02:00Z".into(),
        }
    }

    #[test]
    fn status_records_become_holdings_and_verifications() {
        let mut obs = Observations::default();
        assert_eq!(obs.add_status("did:plc:a", &status()), Ok(()));
        assert_eq!(obs.holdings.len(), 1);
        assert_eq!(
            obs.holdings.first().map(|h| h.node.as_str()),
            Some("did:plc:a")
        );
        assert_eq!(
            obs.verifications
                .first()
                .map(|v| (v.verifier.as_str(), v.node.as_str())),
            Some(("did:plc:a", "did:plc:c"))
        );
    }

    #[test]
    fn a_bad_status_record_adds_nothing() {
        let mut s = status();
        if let Some(v) = s.verifications.first_mut() {
            v.outcome = "maybe".into();
        }
        let mut obs = Observations::default();
        assert!(obs.add_status("did:plc:a", &s).is_err());
        assert_eq!(obs, Observations::default());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r = serde_json::from_str::<Observations>(r#"{"heartbeat": []}"#);
        assert!(r.is_err());
    }
}
