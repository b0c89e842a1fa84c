//! The compliance report: graduated states (seed §5) and Kubernetes-style conditions, for the
//! group, each subject (account), each member's node and each copy.
//!
//! Invariants: every list is sorted (subjects and nodes by DID, conditions in a fixed order per
//! level) and every number is an integer or an exact ratio of integers, so the JSON form of a
//! report is a pure function of the evaluation's inputs.

use std::collections::BTreeMap;

use serde::Serialize;

use super::lifecycle::Lifecycle;
use super::model::{PolicyType, Strategy};
use super::observations::Needs;
use super::time::{Duration, Percent, Timestamp};

/// Graduated states, ordered by severity: the worst of several is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Every check passes.
    Ok,
    /// Catching up within `recoveryGracePeriod` (returned, joined, took over, policy started).
    Recovering,
    /// One or more failed verification rounds in a row (fewer than `maxConsecutiveFailures`),
    /// overdue verifications of others, or a missed SLA target.
    Degraded,
    /// Nothing observed yet to judge by.
    Unknown,
    /// `maxConsecutiveFailures` failed rounds in a row, lag beyond `maxLag`, or a copy not held.
    AtRisk,
    /// Offline longer than `offlineGracePeriod`, or failing verification for that long.
    Failed,
    /// Silent longer than `abandonAfter` (7 days by default).
    Abandoned,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Recovering => "recovering",
            State::Degraded => "degraded",
            State::Unknown => "unknown",
            State::AtRisk => "at-risk",
            State::Failed => "failed",
            State::Abandoned => "abandoned",
        }
    }
}

/// `True`, `False` or `Unknown`, as in Kubernetes conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Status {
    True,
    False,
    Unknown,
}

/// One observed fact, Kubernetes style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: Status,
    /// A CamelCase word a program can match on.
    pub reason: &'static str,
    /// A sentence for a person.
    pub message: String,
    /// Since when the condition has had this status, as far as the observations tell; `null`
    /// when they do not (aggregate conditions, or nothing observed).
    pub since: Option<Timestamp>,
}

impl Condition {
    pub fn new(
        kind: &'static str,
        status: Status,
        reason: &'static str,
        message: String,
        since: Option<Timestamp>,
    ) -> Self {
        Condition {
            kind,
            status,
            reason,
            message,
            since,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySummary {
    pub uri: Option<String>,
    pub cid: String,
    pub name: String,
    #[serde(rename = "type")]
    pub policy_type: PolicyType,
    pub min_copies: u32,
    pub strategy: Strategy,
}

/// The rolling window the figures cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    pub from: Timestamp,
    pub to: Timestamp,
    pub length: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub policy: PolicySummary,
    #[serde(rename = "evaluatedAt")]
    pub evaluated_at: Timestamp,
    pub lifecycle: Lifecycle,
    pub state: State,
    pub conditions: Vec<Condition>,
    pub summary: Summary,
    pub window: Window,
    pub subjects: Vec<SubjectReport>,
    pub nodes: Vec<NodeReport>,
    pub ignored: Ignored,
}

impl Report {
    /// When every copy the policy asks for last passed its verification: the oldest of those
    /// passes (so "checked … ago" is true of every copy); `None` while any copy has not passed
    /// its latest round, or none is asked for. Until then a circle is "not checked yet",
    /// whatever its state.
    pub fn checked_at(&self) -> Option<Timestamp> {
        let mut oldest: Option<Timestamp> = None;
        for c in self
            .nodes
            .iter()
            .flat_map(|n| &n.copies)
            .filter(|c| c.obligated)
        {
            let passed = c
                .conditions
                .iter()
                .any(|v| v.kind == "Verified" && v.status == Status::True);
            let at = c.last_verified.filter(|_| passed)?;
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
        oldest
    }
}

/// How many subjects and nodes are in each state (states absent from a map have none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub subjects: BTreeMap<State, usize>,
    pub nodes: BTreeMap<State, usize>,
}

/// One account's replication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectReport {
    pub did: String,
    pub state: State,
    pub min_copies: u32,
    /// Copies held by members that are up (not failed, abandoned or unknown).
    pub copies: usize,
    /// Of those, copies in state ok.
    pub healthy_copies: usize,
    /// The newest commit seen on the account's PDS.
    pub head: Option<Commit>,
    /// Members assigned to hold it, or holding it anyway, by DID.
    pub holders: Vec<HolderSummary>,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HolderSummary {
    pub member: String,
    pub state: State,
    pub obligated: bool,
    pub counted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Commit {
    pub rev: String,
    pub at: Timestamp,
}

/// One member's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub member: String,
    pub node: String,
    pub state: State,
    /// The latest sign of life (heartbeat, published holding or verification, passed check).
    pub last_seen: Option<Timestamp>,
    pub conditions: Vec<Condition>,
    /// Copies it must hold, and copies it holds without having to, by subject.
    pub copies: Vec<CopyReport>,
    /// Copies it must verify, by (subject, target).
    pub duties: Vec<DutyReport>,
    pub figures: Figures,
}

/// One member's copy of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyReport {
    pub subject: String,
    pub state: State,
    /// `false`: held without being asked to (counts as a copy, not as a duty).
    pub obligated: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub takes_over_from: Vec<String>,
    pub held: Option<Commit>,
    /// How far behind the newest commit the copy is, in seconds (0 when current).
    pub lag_seconds: Option<u64>,
    pub consecutive_failures: u32,
    pub last_verified: Option<Timestamp>,
    pub conditions: Vec<Condition>,
    /// The newest whole-copy check (layer 2) found the copy lacking: what it needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<Needs>,
}

/// One verification this node must run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DutyReport {
    pub target: String,
    pub subject: String,
    pub last_run: Option<Timestamp>,
    /// When the next round is due (last run, or the duty's start, plus the interval).
    pub due_at: Timestamp,
    pub overdue: bool,
}

/// Rolling-window figures of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    pub uptime: Option<Ratio>,
    pub verification: VerificationFigures,
    pub sync: SyncFigures,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sla: Option<SlaFigures>,
}

/// `part` of `whole`, and the share in percent (exact to 4 decimals, rounded down).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    pub part: u64,
    pub whole: u64,
    pub percent: f64,
}

// `percent` is ppm / 10 000, an exact function of part and whole: equality of the integers is
// equality of the ratio.
impl Eq for Ratio {}

impl Ratio {
    pub fn new(part: u64, whole: u64) -> Option<Ratio> {
        Percent::ratio(part, whole).map(|p| Ratio {
            part,
            whole,
            percent: p.as_f64(),
        })
    }

    pub fn share(&self) -> Option<Percent> {
        Percent::ratio(self.part, self.whole)
    }
}

/// Verification rounds against this node's copies in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationFigures {
    pub passed: u64,
    pub failed: u64,
    pub unreachable: u64,
    /// `passed / (passed + failed)`: unreachable rounds count against uptime instead.
    pub pass_rate: Option<Ratio>,
}

/// How quickly the node copied its accounts' commits in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncFigures {
    /// Commits made in the window to accounts this node must hold.
    pub commits: u64,
    /// Copied within `maxLag`.
    pub within_max_lag: u64,
    /// Copied late, or not copied and already older than `maxLag`.
    pub late: u64,
    /// Not copied yet, but younger than `maxLag`: not judged yet.
    pub pending: u64,
    pub within_max_lag_rate: Option<Ratio>,
    pub p50_seconds: Option<u64>,
    pub p95_seconds: Option<u64>,
    pub max_seconds: Option<u64>,
}

/// The node's figures against the policy's SLA targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaFigures {
    pub met: bool,
    /// Targets missed, e.g. `"uptime 99.5% < 99.9%"`.
    pub missed: Vec<String>,
}

/// Observations that did not count, by why.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ignored {
    /// Acks with unreadable dates, from non-members, or for other policies.
    pub acks: usize,
    /// Entries about nodes that are not members' nodes.
    pub unknown_nodes: usize,
    /// Entries about accounts that are not subjects.
    pub unknown_subjects: usize,
    /// Entries dated after `now`.
    pub future: usize,
    /// Verification results for layers the policy does not ask for, or of a node by itself.
    pub verifications: usize,
}
