//! The `org.p2pds.*` records as they travel: hand-written serde types for the Lexicon files in
//! `lexicons/` (the wire contract; see `docs/policy.md` for what each field means).
//!
//! Invariants: these types mirror the lexicons property for property (a test in
//! `tests/it/lexicons.rs` compares them); they keep what the author wrote (date-times, durations
//! and open enumerations stay text), so reading and re-writing a record does not change it.
//! Meaning is given by [`crate::policy::model`], which validates them.

use serde::{Deserialize, Serialize};

/// Collection names (NSIDs) of the records.
pub mod nsid {
    pub const POLICY: &str = "org.p2pds.policy";
    pub const POLICY_ACK: &str = "org.p2pds.policy.ack";
    pub const POLICY_STATUS: &str = "org.p2pds.policy.status";
    pub const PEER: &str = "org.p2pds.peer";
    pub const CHALLENGE: &str = "org.p2pds.challenge";
    pub const CHALLENGE_RESPONSE: &str = "org.p2pds.challenge.response";
}

fn policy_nsid() -> String {
    nsid::POLICY.to_string()
}
fn ack_nsid() -> String {
    nsid::POLICY_ACK.to_string()
}
fn status_nsid() -> String {
    nsid::POLICY_STATUS.to_string()
}
fn peer_nsid() -> String {
    nsid::PEER.to_string()
}
fn challenge_nsid() -> String {
    nsid::CHALLENGE.to_string()
}
fn response_nsid() -> String {
    nsid::CHALLENGE_RESPONSE.to_string()
}

/// `com.atproto.repo.strongRef`: a record pinned by URI and CID (one exact version).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StrongRef {
    pub uri: String,
    pub cid: String,
}

/// `org.p2pds.policy`: a group's replication policy, published in its author's repo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRecord {
    #[serde(rename = "$type", default = "policy_nsid")]
    pub lex_type: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `mutual-aid`, `sla` or `custom`.
    #[serde(rename = "type")]
    pub policy_type: String,
    pub members: Vec<MemberRecord>,
    pub rules: RulesRecord,
    pub effective_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `active` (the default) or `revoked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub created_at: String,
}

/// One member of the group: an account (`did`) and the node that acts for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub did: String,
    /// The DID under which the member's node publishes its records; the member's own DID when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesRecord {
    pub replication: ReplicationRecord,
    pub verification: VerificationRecord,
    pub sync: SyncRecord,
    pub compliance: ComplianceRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<SlaRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationRecord {
    /// `full` or `partial`.
    pub strategy: String,
    pub min_copies: i64,
    /// `all` (the default) or `ring`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collections: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationRecord {
    pub interval: String,
    pub layers: Vec<i64>,
    pub sample_size: i64,
    /// The detection the circle wants; the blocks checked per round are derived from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect: Option<DetectRecord>,
}

/// `rules.verification.detect`: find a copy that lost `loss` of its blocks within `within`,
/// with `confidence`. Percentages and the duration stay text, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetectRecord {
    /// Share of a copy's blocks missing, e.g. `"1%"`.
    pub loss: String,
    /// Chance of finding such a loss in time, e.g. `"99%"`.
    pub confidence: String,
    /// The time to find it in, e.g. `"1d"`.
    pub within: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRecord {
    pub max_lag: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceRecord {
    pub offline_grace_period: String,
    pub recovery_grace_period: String,
    pub max_consecutive_failures: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandon_after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaRecord {
    pub window: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_pass_rate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_within_max_lag: Option<String>,
}

/// `org.p2pds.policy.ack`: a member accepts (or declines) one exact version of a policy. Counts
/// only when read from the acking member's own repo.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AckRecord {
    #[serde(rename = "$type", default = "ack_nsid")]
    pub lex_type: String,
    pub policy: StrongRef,
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: String,
}

/// `org.p2pds.peer` (rkey `self`): facts about a node, rewritten on every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerRecord {
    #[serde(rename = "$type", default = "peer_nsid")]
    pub lex_type: String,
    pub software: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<i64>,
    pub heartbeat_at: String,
}

/// `org.p2pds.policy.status`: what the publishing node holds for one policy and what it observed
/// when verifying others (the "status" to the policy's "spec").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRecord {
    #[serde(rename = "$type", default = "status_nsid")]
    pub lex_type: String,
    pub policy: StrongRef,
    pub holdings: Vec<HoldingRecord>,
    pub verifications: Vec<VerificationResultRecord>,
    pub updated_at: String,
}

/// One account copy held by the publishing node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldingRecord {
    /// The account (subject) held.
    pub did: String,
    /// Revision (TID) of the newest verified commit held.
    pub rev: String,
    /// MST root CID of that commit.
    pub data: String,
    pub synced_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
}

/// One verification the publishing node ran against a peer's copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationResultRecord {
    /// The node whose copy was checked.
    pub target: String,
    /// The account whose copy was checked.
    pub subject: String,
    /// Verification layer: 0 commit root, 1 block sampling, 2 whole copy, 3 MST path proof.
    pub layer: i64,
    /// `pass`, `fail` or `unreachable`.
    pub outcome: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A failed whole-copy check (layer 2): the records the copy lacks or holds wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_records: Option<i64>,
    /// And the bytes it would need to be whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_bytes: Option<i64>,
}

/// `org.p2pds.challenge`: an asynchronous proof-of-possession request for a peer that cannot
/// be reached directly. The target answers with [`ChallengeResponseRecord`] before `expiresAt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeRecord {
    #[serde(rename = "$type", default = "challenge_nsid")]
    pub lex_type: String,
    /// The node that must answer.
    pub target: String,
    /// The account whose blocks are asked for.
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<StrongRef>,
    /// The commit (CID) the blocks belong to.
    pub commit: String,
    /// Random, unpredictable; at least 16 bytes of entropy.
    pub nonce: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    pub expires_at: String,
    pub created_at: String,
}

/// `org.p2pds.challenge.response`: `digest` = hex SHA-256 of the nonce's UTF-8 bytes followed by
/// the requested blocks' bytes, in the order the challenge lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeResponseRecord {
    #[serde(rename = "$type", default = "response_nsid")]
    pub lex_type: String,
    pub challenge: StrongRef,
    pub digest: String,
    pub created_at: String,
}
