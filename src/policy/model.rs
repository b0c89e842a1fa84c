//! The validated policy: what a policy record means, with every duration parsed, every default
//! filled in and every list in a canonical order.
//!
//! Invariants: a [`Policy`] exists only after validation ([`crate::policy::validate`]) found no
//! problem; members are sorted by DID, subjects and collections sorted and unique, layers sorted
//! and unique; so two records that differ only in list order mean the same policy (they still
//! have different CIDs: a version is its bytes).

use serde::Serialize;

use super::detect::Detection;
use super::records::PolicyRecord;
use super::time::{Duration, Percent, Timestamp};

/// Heartbeat interval when a policy does not state one.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Silence after which a member counts as abandoned when a policy does not state it (seed §5).
pub const DEFAULT_ABANDON_AFTER: Duration = Duration::from_secs(7 * 86_400);
/// Rolling window of the SLA figures when a policy has no `rules.sla`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(7 * 86_400);
/// Verification layers when a policy does not list them: commit root and block sampling, the
/// research's "basic" verification (seed §3).
pub const DEFAULT_LAYERS: [u8; 2] = [0, 1];
/// Silence after which a node counts as failed when a policy does not state it (seed §5).
pub const DEFAULT_OFFLINE_GRACE_PERIOD: Duration = Duration::from_secs(3600);
/// Time to catch up after a return, a join or a takeover when a policy does not state it
/// (seed §5).
pub const DEFAULT_RECOVERY_GRACE_PERIOD: Duration = Duration::from_secs(30 * 60);
/// Failed verification rounds in a row before a copy is at risk when a policy does not state
/// it (seed §5).
pub const DEFAULT_MAX_CONSECUTIVE_FAILURES: u32 = 3;
/// `effectiveAt` when a policy does not state it: the Unix epoch, so the policy binds as soon as
/// every member has accepted it (a policy is active from the later of `effectiveAt` and the last
/// acceptance). Also the `createdAt` of a policy that does not state one (it decides nothing).
pub const UNSTATED_TIME: Timestamp = Timestamp::from_millis(0);

/// Which version of which policy: the record's AT-URI (when known) and CID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PolicyRef {
    pub uri: Option<String>,
    pub cid: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyType {
    MutualAid,
    Sla,
    Custom,
}

impl PolicyType {
    pub const KNOWN: [&'static str; 3] = ["mutual-aid", "sla", "custom"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "mutual-aid" => Some(PolicyType::MutualAid),
            "sla" => Some(PolicyType::Sla),
            "custom" => Some(PolicyType::Custom),
            _ => None,
        }
    }
}

/// What of an account is copied. Ordered from least to most demanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Only the listed collections.
    Partial,
    /// The whole repo.
    Full,
}

impl Strategy {
    pub const KNOWN: [&'static str; 2] = ["full", "partial"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "full" => Some(Strategy::Full),
            "partial" => Some(Strategy::Partial),
            _ => None,
        }
    }
}

/// Who must hold each account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Every member holds every subject except its own account.
    All,
    /// Members on a ring ordered by SHA-256 of their DID; each subject is held by the
    /// `minCopies` live members that follow its owner (see `obligations`).
    Ring,
}

impl Placement {
    pub const KNOWN: [&'static str; 2] = ["all", "ring"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "all" => Some(Placement::All),
            "ring" => Some(Placement::Ring),
            _ => None,
        }
    }
}

/// Verification layers a policy may require (DESIGN §4): 0 commit root, 1 block sampling,
/// 2 whole copy (subtree digests, `crate::reconcile`), 3 record proofs.
pub const KNOWN_LAYERS: [u8; 4] = [0, 1, 2, 3];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The account.
    pub did: String,
    /// The DID its node publishes under (the account's own DID unless the record says otherwise).
    pub node: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replication {
    pub strategy: Strategy,
    /// Sorted, unique; empty for [`Strategy::Full`].
    pub collections: Vec<String>,
    pub min_copies: u32,
    pub placement: Placement,
    /// Sorted, unique; the members' DIDs when the record lists none.
    pub subjects: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationRule {
    pub interval: Duration,
    /// Sorted, unique, each in [`KNOWN_LAYERS`].
    pub layers: Vec<u8>,
    /// Blocks (layer 1) or records (layer 3) checked per round: the record's `sampleSize`, or
    /// what [`detect`](Self::detect) derives when that is larger (the record's own value stays
    /// in [`Policy::record`]).
    pub sample_size: u32,
    /// The detection target (`rules.verification.detect`) and the numbers derived from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detect: Option<Detection>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceRule {
    pub offline_grace_period: Duration,
    pub recovery_grace_period: Duration,
    pub max_consecutive_failures: u32,
    pub heartbeat_interval: Duration,
    pub abandon_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaRule {
    pub window: Duration,
    pub uptime: Option<Percent>,
    pub verification_pass_rate: Option<Percent>,
    pub sync_within_max_lag: Option<Percent>,
}

/// A validated policy version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub reference: PolicyRef,
    /// The DID of the repo the policy was read from (from its URI), when known.
    pub author: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub policy_type: PolicyType,
    /// Sorted by DID.
    pub members: Vec<Member>,
    pub replication: Replication,
    pub verification: VerificationRule,
    pub max_lag: Duration,
    pub compliance: ComplianceRule,
    pub max_bytes: Option<u64>,
    pub sla: Option<SlaRule>,
    pub effective_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked: bool,
    pub created_at: Timestamp,
    /// The record as published.
    pub record: PolicyRecord,
}

impl Policy {
    /// The member whose account is `did`, if any.
    pub fn member(&self, did: &str) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.did.as_str().cmp(did))
            .ok()
            .and_then(|i| self.members.get(i))
    }

    /// The rolling window of SLA figures: `rules.sla.window`, or [`DEFAULT_WINDOW`].
    pub fn window(&self) -> Duration {
        self.sla.as_ref().map_or(DEFAULT_WINDOW, |s| s.window)
    }
}
