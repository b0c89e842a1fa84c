//! The pure half of circles: what a new policy looks like, which version is in force, what a
//! circle's state is, how an invitation reads, and when a status record is due. No IO, no
//! clock: `now` is an argument, so every rule here is a table test.
//!
//! Invariants: a superseded version stays in force only while its own acks still accept it,
//! no later version is active, the latest is not revoked or expired, and (unless the latest is
//! merely scheduled) for at most the old version's `offlineGracePeriod` after the new version
//! was first seen; a revoked or expired latest version ends everything at once.

use std::fmt::Write as _;

use serde::Serialize;

use crate::policy::lifecycle::Phase;
use crate::policy::model::Policy;
use crate::policy::records::{
    ComplianceRecord, MemberRecord, PolicyRecord, ReplicationRecord, RulesRecord, SyncRecord,
    VerificationRecord,
};
use crate::policy::time::{Duration, Timestamp};

/// What `p2pds circle create` asks for; everything else takes [`new_policy_record`]'s defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCircle {
    pub name: String,
    pub description: Option<String>,
    /// The author's DID; always a member.
    pub author: String,
    /// The other members' DIDs.
    pub members: Vec<String>,
    /// Copies each account needs on other members' nodes; default: 2, or fewer when the circle
    /// is smaller.
    pub min_copies: Option<u32>,
    /// Rules other than the defaults, as the author gave them.
    pub rules: RuleOverrides,
    pub now: Timestamp,
}

/// Rules a circle's author may set at creation instead of the defaults (durations as text,
/// checked with the rest of the policy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleOverrides {
    /// How often each copy is verified (`rules.verification.interval`).
    pub check_every: Option<String>,
    /// Verification layers (`rules.verification.layers`).
    pub layers: Option<Vec<i64>>,
    /// How long a member may be silent before it counts as failed
    /// (`rules.compliance.offlineGracePeriod`; heartbeats come at least this often).
    pub offline_grace: Option<String>,
    /// How long a new or returning copy has to catch up (`rules.compliance.recoveryGracePeriod`).
    pub recovery_grace: Option<String>,
}

/// Default rules, chosen for friends' laptops that sleep at night: checks every hour,
/// a copy may lag six hours, a node may be offline three days before it counts as failed,
/// and heartbeats every 30 minutes (two writes an hour at most).
pub fn default_rules(min_copies: u32) -> RulesRecord {
    RulesRecord {
        replication: ReplicationRecord {
            strategy: "full".into(),
            min_copies: i64::from(min_copies),
            placement: None,
            subjects: None,
            collections: None,
        },
        verification: VerificationRecord {
            interval: "1h".into(),
            layers: vec![0, 1],
            sample_size: 20,
            detect: None,
        },
        sync: SyncRecord {
            max_lag: "6h".into(),
        },
        compliance: ComplianceRecord {
            offline_grace_period: "3d".into(),
            recovery_grace_period: "6h".into(),
            max_consecutive_failures: 3,
            heartbeat_interval: Some("30m".into()),
            abandon_after: Some("14d".into()),
        },
        storage: None,
        sla: None,
    }
}

fn with_overrides(mut rules: RulesRecord, o: &RuleOverrides) -> RulesRecord {
    if let Some(i) = &o.check_every {
        rules.verification.interval = i.clone();
    }
    if let Some(l) = &o.layers {
        rules.verification.layers = l.clone();
    }
    if let Some(r) = &o.recovery_grace {
        rules.compliance.recovery_grace_period = r.clone();
    }
    if let Some(g) = &o.offline_grace {
        rules.compliance.offline_grace_period = g.clone();
        // Heartbeats must come within the grace period.
        let beat = rules
            .compliance
            .heartbeat_interval
            .as_deref()
            .map(Duration::parse);
        if let (Ok(grace), Some(Ok(beat))) = (Duration::parse(g), beat) {
            if grace < beat {
                rules.compliance.heartbeat_interval = Some(g.clone());
            }
        }
    }
    rules
}

/// The `org.p2pds.policy` record for a new circle: the author first, then the others in the
/// order given (duplicates and the author named twice dropped).
pub fn new_policy_record(c: &NewCircle) -> PolicyRecord {
    let mut members = vec![c.author.clone()];
    for m in &c.members {
        if !members.contains(m) {
            members.push(m.clone());
        }
    }
    let others = u32::try_from(members.len().saturating_sub(1)).unwrap_or(u32::MAX);
    let min_copies = c.min_copies.unwrap_or_else(|| others.clamp(1, 2));
    let now = c.now.to_string();
    PolicyRecord {
        lex_type: crate::policy::records::nsid::POLICY.into(),
        name: c.name.clone(),
        description: c.description.clone(),
        policy_type: "mutual-aid".into(),
        members: members
            .into_iter()
            .map(|did| MemberRecord { did, node: None })
            .collect(),
        rules: with_overrides(default_rules(min_copies), &c.rules),
        effective_at: now.clone(),
        expires_at: None,
        status: None,
        created_at: now,
    }
}

/// What `p2pds circle edit` changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CircleEdit {
    pub name: Option<String>,
    pub min_copies: Option<u32>,
    pub description: Option<String>,
}

impl CircleEdit {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.min_copies.is_none() && self.description.is_none()
    }
}

/// The edited record (a new version: it needs every member's ack again).
pub fn apply_edit(record: &PolicyRecord, edit: &CircleEdit) -> PolicyRecord {
    let mut r = record.clone();
    if let Some(name) = &edit.name {
        r.name = name.clone();
    }
    if let Some(k) = edit.min_copies {
        r.rules.replication.min_copies = i64::from(k);
    }
    if let Some(d) = &edit.description {
        r.description = (!d.is_empty()).then(|| d.clone());
    }
    r
}

/// The record revoked: same content, `status: revoked`.
pub fn revoked(record: &PolicyRecord) -> PolicyRecord {
    let mut r = record.clone();
    r.status = Some("revoked".into());
    r
}

/// One version of a policy as the node saw it, oldest first in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionPhase {
    /// Its phase at `now` given the acks held.
    pub phase: Phase,
    /// When this node first saw it.
    pub first_seen: Timestamp,
    /// How long it may stay in force after a newer version appears.
    pub grace: Duration,
}

/// Which version is in force (its index), given every version seen, oldest first.
pub fn version_in_force(versions: &[VersionPhase], now: Timestamp) -> Option<usize> {
    let last = versions.len().checked_sub(1)?;
    let latest = versions.get(last)?;
    match latest.phase {
        Phase::Active => return Some(last),
        Phase::Revoked | Phase::Expired => return None,
        Phase::Pending | Phase::Rejected | Phase::Scheduled => {}
    }
    // The newest older version that is still accepted by all its members.
    (0..last).rev().find(|&i| {
        let (Some(v), Some(next)) = (versions.get(i), versions.get(i + 1)) else {
            return false;
        };
        v.phase == Phase::Active
            && (latest.phase == Phase::Scheduled || now < next.first_seen.plus(v.grace))
    })
}

/// This node's own answer to a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    Accepted,
    Declined,
    Left,
}

impl Answer {
    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Accepted => "accepted",
            Answer::Declined => "declined",
            Answer::Left => "left",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "accepted" => Some(Answer::Accepted),
            "declined" => Some(Answer::Declined),
            "left" => Some(Answer::Left),
            _ => None,
        }
    }
}

/// A circle's state as `p2pds circle list` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CircleState {
    /// Waiting for acks (an older version may still be in force: see `inForce`).
    Pending,
    Scheduled,
    Active,
    /// A member declined the current version.
    Rejected,
    Expired,
    Revoked,
    /// The author deleted the policy record.
    Deleted,
    /// This node left the circle.
    Left,
}

/// The state of a circle from the latest version's phase and this node's own answers.
pub fn circle_state(latest: Option<Phase>, left: bool) -> CircleState {
    if left {
        return CircleState::Left;
    }
    match latest {
        None => CircleState::Deleted,
        Some(Phase::Revoked) => CircleState::Revoked,
        Some(Phase::Expired) => CircleState::Expired,
        Some(Phase::Rejected) => CircleState::Rejected,
        Some(Phase::Pending) => CircleState::Pending,
        Some(Phase::Scheduled) => CircleState::Scheduled,
        Some(Phase::Active) => CircleState::Active,
    }
}

/// Whether the latest version waits for this node's answer.
pub fn is_invitation(
    me_is_member: bool,
    latest_phase: Phase,
    my_answer_to_latest: Option<Answer>,
    my_ack_seen_for_latest: bool,
) -> bool {
    me_is_member
        && !matches!(latest_phase, Phase::Revoked | Phase::Expired)
        && my_answer_to_latest.is_none()
        && !my_ack_seen_for_latest
}

/// Everything an invitation says, for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvitationFacts {
    /// Who asks: the author's handle (or DID).
    pub author: String,
    pub name: String,
    /// The other members, by handle (or DID), the author and this node left out.
    pub others: Vec<String>,
    /// Accounts this node would keep a copy of.
    pub hold: usize,
    /// Their estimated size in bytes, and how many accounts have no estimate.
    pub estimated_bytes: u64,
    pub unknown_sizes: usize,
    pub min_copies: u32,
    pub check_interval: Duration,
    /// Silent this long, a member counts as missing (`offlineGracePeriod`).
    pub offline_grace: Duration,
    /// This node accepted an older version of the same circle: this is a change.
    pub update: bool,
}

/// `"every hour"`, `"every 30 minutes"`, `"every 6 hours"`, `"every day"`.
pub fn human_every(d: Duration) -> String {
    let s = d.secs();
    let (n, unit) = if s % 86_400 == 0 {
        (s / 86_400, "day")
    } else if s % 3600 == 0 {
        (s / 3600, "hour")
    } else if s % 60 == 0 {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    if n == 1 {
        format!("every {unit}")
    } else {
        format!("every {n} {unit}s")
    }
}

fn list(names: &[String]) -> String {
    match names {
        [] => "nobody else".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The invitation in plain language.
pub fn invitation_text(f: &InvitationFacts) -> String {
    let mut t = String::new();
    if f.update {
        let _ = write!(
            t,
            "{} changed the circle \u{201c}{}\u{201d} (with {}): accept the new version to keep it in force.",
            f.author,
            f.name,
            list(&f.others)
        );
    } else {
        let _ = write!(
            t,
            "{} invites you to the circle \u{201c}{}\u{201d} with {}.",
            f.author,
            f.name,
            list(&f.others)
        );
    }
    let accounts = if f.hold == 1 { "account" } else { "accounts" };
    let _ = write!(t, " You would keep a copy of {} {accounts}", f.hold);
    if f.hold > 0 {
        if f.unknown_sizes == f.hold {
            t.push_str(" (size not known yet)");
        } else if f.unknown_sizes > 0 {
            let _ = write!(
                t,
                " (at least {} now; {} not measured yet)",
                crate::store::space::size_words(f.estimated_bytes),
                f.unknown_sizes
            );
        } else {
            let _ = write!(
                t,
                " (about {} now)",
                crate::store::space::size_words(f.estimated_bytes)
            );
        }
    }
    t.push('.');
    let rules = CircleRules {
        min_copies: f.min_copies,
        check_every: f.check_interval,
        missing_after: Some(f.offline_grace),
        new_copy_within: None,
    };
    for r in rules_sentences(&rules) {
        t.push(' ');
        t.push_str(&r);
    }
    t
}

/// A circle's rules as a person can check them (see [`rules_sentences`]); what is not known
/// is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircleRules {
    /// Copies each account needs on other members' computers.
    pub min_copies: u32,
    /// How often each copy is checked.
    pub check_every: Duration,
    /// Silent this long, a member counts as missing (`offlineGracePeriod`).
    pub missing_after: Option<Duration>,
    /// A new copy is due within this (`recoveryGracePeriod`).
    pub new_copy_within: Option<Duration>,
}

impl CircleRules {
    pub fn of(policy: &Policy) -> CircleRules {
        CircleRules {
            min_copies: policy.replication.min_copies,
            check_every: policy.verification.interval,
            missing_after: Some(policy.compliance.offline_grace_period),
            new_copy_within: Some(policy.compliance.recovery_grace_period),
        }
    }
}

/// The rules in sentences a person can check: "Each member's account is kept by 2 friends in
/// the circle.", "Each copy is checked every hour by another member.", "Someone silent for 3
/// days is marked as missing.", "A new copy is made within 6 hours."
pub fn rules_sentences(r: &CircleRules) -> Vec<String> {
    let friends = if r.min_copies == 1 {
        "friend"
    } else {
        "friends"
    };
    let mut out = vec![
        format!(
            "Each member's account is kept by {} {friends} in the circle.",
            r.min_copies
        ),
        format!(
            "Each copy is checked {} by another member.",
            human_every(r.check_every)
        ),
    ];
    if let Some(d) = r.missing_after {
        out.push(format!(
            "Someone silent for {} is marked as missing.",
            human_span(d)
        ));
    }
    if let Some(d) = r.new_copy_within {
        out.push(format!("A new copy is made within {}.", human_span(d)));
    }
    out
}

/// `"a day"`, `"3 days"`, `"an hour"`, `"30 minutes"`: a duration, in the largest whole unit.
fn human_span(d: Duration) -> String {
    let every = human_every(d);
    let what = every.strip_prefix("every ").unwrap_or(&every);
    match what {
        "hour" => "an hour".into(),
        "day" | "minute" | "second" => format!("a {what}"),
        other => other.to_string(),
    }
}

/// The last write of a status or heartbeat record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWrite {
    pub digest: String,
    pub at: Timestamp,
}

/// How often this node may write its status and heartbeat records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRate {
    /// The least time between two writes of one record: a change waits for it.
    pub min_interval: Duration,
    /// An unchanged record is rewritten (a fresh `syncedAt`/`heartbeatAt`) after this long.
    pub refresh_after: Duration,
}

impl Default for PublishRate {
    /// At most three writes an hour per record; an unchanged one every hour.
    fn default() -> Self {
        PublishRate {
            min_interval: Duration::from_secs(20 * 60),
            refresh_after: Duration::from_secs(60 * 60),
        }
    }
}

impl PublishRate {
    /// A rate from the least interval: unchanged records are rewritten three intervals apart.
    pub fn every(min_interval: Duration) -> Self {
        PublishRate {
            min_interval,
            refresh_after: Duration::from_secs(min_interval.secs().saturating_mul(3)),
        }
    }
}

/// Whether a record with content `digest` should be written now.
pub fn should_publish(
    last: Option<&LastWrite>,
    digest: &str,
    now: Timestamp,
    rate: PublishRate,
) -> bool {
    let Some(last) = last else {
        return true;
    };
    let since = if now < last.at {
        // The clock went back: count from now on.
        Duration::ZERO
    } else {
        now.since(last.at)
    };
    if last.digest != digest {
        since >= rate.min_interval
    } else {
        since >= rate.refresh_after.max(rate.min_interval)
    }
}

/// The record key of an AT-URI `at://did/collection/rkey`, when the URI is in `did`'s repo and
/// `collection`: listings from a server are only trusted to name keys in the repo asked for.
pub fn rkey_in(uri: &str, did: &str, collection: &str) -> Option<String> {
    let rest = uri.strip_prefix("at://")?;
    let mut parts = rest.splitn(3, '/');
    let (authority, coll, rkey) = (parts.next()?, parts.next()?, parts.next()?);
    (authority == did && coll == collection && !rkey.is_empty() && !rkey.contains('/'))
        .then(|| rkey.to_string())
}

/// `(did, collection, rkey)` of an AT-URI.
pub fn split_uri(uri: &str) -> Option<(String, String, String)> {
    let rest = uri.strip_prefix("at://")?;
    let mut parts = rest.splitn(3, '/');
    let (authority, coll, rkey) = (parts.next()?, parts.next()?, parts.next()?);
    (authority.starts_with("did:") && !coll.is_empty() && !rkey.is_empty())
        .then(|| (authority.to_string(), coll.to_string(), rkey.to_string()))
}

/// Whether a policy names `did` as a member.
pub fn names(policy: &Policy, did: &str) -> bool {
    policy.members.iter().any(|m| m.did == did || m.node == did)
}

/// An endpoint a node may advertise: an absolute `http(s)` URL with a host and nothing after
/// the path (peers append `/.well-known/rasl/…` and `/xrpc/…`).
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let url = url::Url::parse(endpoint).map_err(|e| {
        format!("{endpoint:?} is not a URL ({e}): give the address peers can reach, e.g. https://backup.example.net")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{endpoint:?} is not an http(s) address: give e.g. https://backup.example.net"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "{endpoint:?} has a query, fragment or user name: give only scheme, host, port and path"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::validate::check_value;
    use rstest::rstest;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn d(s: &str) -> Duration {
        Duration::parse(s).unwrap()
    }

    #[rstest]
    #[case::three_friends(&["did:plc:bob", "did:plc:carol"], None, 3, 2)]
    #[case::two_friends(&["did:plc:bob"], None, 2, 1)]
    #[case::author_named_twice(&["did:plc:alice", "did:plc:bob", "did:plc:bob"], None, 2, 1)]
    #[case::five_friends(&["did:plc:b", "did:plc:c", "did:plc:d", "did:plc:e"], None, 5, 2)]
    #[case::asked(&["did:plc:b", "did:plc:c", "did:plc:d"], Some(3), 4, 3)]
    fn new_circles_are_valid_policies(
        #[case] members: &[&str],
        #[case] min_copies: Option<u32>,
        #[case] n: usize,
        #[case] k: i64,
    ) {
        let record = new_policy_record(&NewCircle {
            name: "Kitchen table".into(),
            description: None,
            author: "did:plc:alice".into(),
            members: members.iter().map(|s| s.to_string()).collect(),
            min_copies,
            rules: Default::default(),
            now: t("2026-03-01T00:00:00Z"),
        });
        assert_eq!(record.members.len(), n);
        assert_eq!(record.members[0].did, "did:plc:alice");
        assert_eq!(record.rules.replication.min_copies, k);
        let checked = check_value(&serde_json::to_value(&record).unwrap());
        let checked = checked.unwrap_or_else(|p| panic!("{p}"));
        assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
    }

    #[test]
    fn too_many_copies_is_refused_by_validation() {
        let record = new_policy_record(&NewCircle {
            name: "x".into(),
            description: None,
            author: "did:plc:alice".into(),
            members: vec!["did:plc:bob".into()],
            min_copies: Some(3),
            rules: Default::default(),
            now: t("2026-03-01T00:00:00Z"),
        });
        let err = check_value(&serde_json::to_value(&record).unwrap()).unwrap_err();
        assert!(err.to_string().contains("minCopies"), "{err}");
    }

    #[test]
    fn edits_change_only_what_is_asked() {
        let record = new_policy_record(&NewCircle {
            name: "x".into(),
            description: Some("d".into()),
            author: "did:plc:alice".into(),
            members: vec!["did:plc:bob".into(), "did:plc:carol".into()],
            min_copies: None,
            rules: Default::default(),
            now: t("2026-03-01T00:00:00Z"),
        });
        let edited = apply_edit(
            &record,
            &CircleEdit {
                min_copies: Some(1),
                ..Default::default()
            },
        );
        assert_eq!(edited.rules.replication.min_copies, 1);
        assert_eq!(edited.name, "x");
        assert_eq!(edited.description.as_deref(), Some("d"));
        assert_eq!(edited.created_at, record.created_at);
        let renamed = apply_edit(
            &record,
            &CircleEdit {
                name: Some("y".into()),
                description: Some(String::new()),
                ..Default::default()
            },
        );
        assert_eq!((renamed.name.as_str(), renamed.description), ("y", None));
        assert_eq!(revoked(&record).status.as_deref(), Some("revoked"));
    }

    fn v(phase: Phase, seen: &str) -> VersionPhase {
        VersionPhase {
            phase,
            first_seen: t(seen),
            grace: d("3d"),
        }
    }

    const NOW: &str = "2026-03-05T00:00:00Z";

    #[rstest]
    #[case::nothing(&[], None)]
    #[case::active(&[v(Phase::Active, "2026-03-01T00:00:00Z")], Some(0))]
    #[case::pending_alone(&[v(Phase::Pending, "2026-03-01T00:00:00Z")], None)]
    // An edit waits for acks: the old version stays in force within its grace period…
    #[case::edit_waits(&[v(Phase::Active, "2026-03-01T00:00:00Z"), v(Phase::Pending, "2026-03-04T00:00:00Z")], Some(0))]
    // …but not after it.
    #[case::edit_too_late(&[v(Phase::Active, "2026-03-01T00:00:00Z"), v(Phase::Pending, "2026-03-01T12:00:00Z")], None)]
    // A scheduled edit (all accepted, not yet effective) keeps the old one without limit.
    #[case::scheduled(&[v(Phase::Active, "2026-03-01T00:00:00Z"), v(Phase::Scheduled, "2026-03-01T12:00:00Z")], Some(0))]
    // The edit is accepted: it is in force.
    #[case::edit_active(&[v(Phase::Active, "2026-03-01T00:00:00Z"), v(Phase::Active, "2026-03-04T00:00:00Z")], Some(1))]
    // Revocation ends everything at once.
    #[case::revoked(&[v(Phase::Active, "2026-03-01T00:00:00Z"), v(Phase::Revoked, "2026-03-04T23:00:00Z")], None)]
    #[case::expired(&[v(Phase::Active, "2026-03-01T00:00:00Z"), v(Phase::Expired, "2026-03-04T23:00:00Z")], None)]
    // A member withdrew its ack of the old version (left): it is no longer active.
    #[case::withdrawn(&[v(Phase::Pending, "2026-03-01T00:00:00Z"), v(Phase::Pending, "2026-03-04T00:00:00Z")], None)]
    // Two edits: the newest active older version counts, from when its successor appeared.
    #[case::two_edits(&[v(Phase::Active, "2026-03-01T00:00:00Z"), v(Phase::Active, "2026-03-02T00:00:00Z"), v(Phase::Pending, "2026-03-04T00:00:00Z")], Some(1))]
    fn which_version_is_in_force(#[case] versions: &[VersionPhase], #[case] want: Option<usize>) {
        assert_eq!(version_in_force(versions, t(NOW)), want);
    }

    #[rstest]
    #[case(Some(Phase::Active), false, CircleState::Active)]
    #[case(Some(Phase::Pending), false, CircleState::Pending)]
    #[case(Some(Phase::Active), true, CircleState::Left)]
    #[case(Some(Phase::Revoked), false, CircleState::Revoked)]
    #[case(Some(Phase::Rejected), false, CircleState::Rejected)]
    #[case(None, false, CircleState::Deleted)]
    fn circle_states(#[case] phase: Option<Phase>, #[case] left: bool, #[case] want: CircleState) {
        assert_eq!(circle_state(phase, left), want);
    }

    #[rstest]
    #[case::new(true, Phase::Pending, None, false, true)]
    #[case::not_named(false, Phase::Pending, None, false, false)]
    #[case::declined_is_not_asked_again(
        true,
        Phase::Rejected,
        Some(Answer::Declined),
        false,
        false
    )]
    #[case::accepted(true, Phase::Pending, Some(Answer::Accepted), false, false)]
    #[case::left(true, Phase::Pending, Some(Answer::Left), false, false)]
    #[case::answered_elsewhere(true, Phase::Pending, None, true, false)]
    #[case::revoked(true, Phase::Revoked, None, false, false)]
    #[case::someone_declined(true, Phase::Rejected, None, false, true)]
    fn invitations(
        #[case] member: bool,
        #[case] phase: Phase,
        #[case] answer: Option<Answer>,
        #[case] seen: bool,
        #[case] want: bool,
    ) {
        assert_eq!(is_invitation(member, phase, answer, seen), want);
    }

    fn facts(hold: usize, bytes: u64, unknown: usize, update: bool) -> InvitationFacts {
        InvitationFacts {
            author: "alice.test".into(),
            name: "Kitchen table".into(),
            others: vec!["carol.test".into(), "dan.test".into()],
            hold,
            estimated_bytes: bytes,
            unknown_sizes: unknown,
            min_copies: 2,
            check_interval: d("1h"),
            offline_grace: d("3d"),
            update,
        }
    }

    #[rstest]
    #[case(facts(3, 3_200_000, 0, false), "alice.test invites you to the circle “Kitchen table” with carol.test and dan.test. You would keep a copy of 3 accounts (about 3.2 MB now). Each member's account is kept by 2 friends in the circle. Each copy is checked every hour by another member. Someone silent for 3 days is marked as missing.")]
    #[case(facts(3, 1500, 1, false), "alice.test invites you to the circle “Kitchen table” with carol.test and dan.test. You would keep a copy of 3 accounts (at least 1.5 kB now; 1 not measured yet). Each member's account is kept by 2 friends in the circle. Each copy is checked every hour by another member. Someone silent for 3 days is marked as missing.")]
    #[case(facts(1, 0, 1, false), "alice.test invites you to the circle “Kitchen table” with carol.test and dan.test. You would keep a copy of 1 account (size not known yet). Each member's account is kept by 2 friends in the circle. Each copy is checked every hour by another member. Someone silent for 3 days is marked as missing.")]
    #[case(facts(2, 999, 0, true), "alice.test changed the circle “Kitchen table” (with carol.test and dan.test): accept the new version to keep it in force. You would keep a copy of 2 accounts (about 999 bytes now). Each member's account is kept by 2 friends in the circle. Each copy is checked every hour by another member. Someone silent for 3 days is marked as missing.")]
    fn invitation_texts(#[case] f: InvitationFacts, #[case] want: &str) {
        assert_eq!(invitation_text(&f), want);
    }

    #[rstest]
    #[case(1, "30m", None, None, &["Each member's account is kept by 1 friend in the circle.", "Each copy is checked every 30 minutes by another member."])]
    #[case(2, "1h", Some("1d"), Some("6h"), &["Each member's account is kept by 2 friends in the circle.", "Each copy is checked every hour by another member.", "Someone silent for a day is marked as missing.", "A new copy is made within 6 hours."])]
    #[case(3, "1d", Some("3d"), Some("1h"), &["Each member's account is kept by 3 friends in the circle.", "Each copy is checked every day by another member.", "Someone silent for 3 days is marked as missing.", "A new copy is made within an hour."])]
    #[case(1, "90s", Some("36h"), Some("1m"), &["Each member's account is kept by 1 friend in the circle.", "Each copy is checked every 90 seconds by another member.", "Someone silent for 36 hours is marked as missing.", "A new copy is made within a minute."])]
    fn rules_in_sentences(
        #[case] min_copies: u32,
        #[case] every: &str,
        #[case] missing: Option<&str>,
        #[case] new_copy: Option<&str>,
        #[case] want: &[&str],
    ) {
        let r = CircleRules {
            min_copies,
            check_every: d(every),
            missing_after: missing.map(d),
            new_copy_within: new_copy.map(d),
        };
        assert_eq!(rules_sentences(&r), want);
    }

    #[test]
    fn a_new_circles_rules_read_from_its_policy() {
        let record = new_policy_record(&NewCircle {
            name: "Kitchen table".into(),
            description: None,
            author: "did:plc:alice".into(),
            members: vec!["did:plc:bob".into()],
            min_copies: None,
            rules: RuleOverrides::default(),
            now: t("2026-01-01T00:00:00Z"),
        });
        let value =
            serde_json::json!({"uri": "at://did:plc:alice/org.p2pds.policy/1", "value": record});
        let policy = crate::policy::validate::check_value(&value).unwrap().policy;
        assert_eq!(
            rules_sentences(&CircleRules::of(&policy)),
            [
                "Each member's account is kept by 1 friend in the circle.",
                "Each copy is checked every hour by another member.",
                "Someone silent for 3 days is marked as missing.",
                "A new copy is made within 6 hours.",
            ]
        );
    }

    #[rstest]
    #[case("1h", "every hour")]
    #[case("30m", "every 30 minutes")]
    #[case("6h", "every 6 hours")]
    #[case("1d", "every day")]
    #[case("90s", "every 90 seconds")]
    fn intervals_in_words(#[case] d_: &str, #[case] want: &str) {
        assert_eq!(human_every(d(d_)), want);
    }

    fn last(digest: &str, at: &str) -> LastWrite {
        LastWrite {
            digest: digest.into(),
            at: t(at),
        }
    }

    #[rstest]
    #[case::first_write(None, "a", "2026-03-01T00:00:00Z", true)]
    #[case::unchanged_recent(
        Some(last("a", "2026-03-01T00:00:00Z")),
        "a",
        "2026-03-01T00:30:00Z",
        false
    )]
    #[case::unchanged_old(
        Some(last("a", "2026-03-01T00:00:00Z")),
        "a",
        "2026-03-01T01:00:00Z",
        true
    )]
    #[case::changed_too_soon(
        Some(last("a", "2026-03-01T00:00:00Z")),
        "b",
        "2026-03-01T00:10:00Z",
        false
    )]
    #[case::changed_later(
        Some(last("a", "2026-03-01T00:00:00Z")),
        "b",
        "2026-03-01T00:20:00Z",
        true
    )]
    #[case::clock_went_back(
        Some(last("a", "2026-03-01T00:00:00Z")),
        "b",
        "2026-02-28T00:00:00Z",
        false
    )]
    fn publishing_is_rate_limited(
        #[case] previous: Option<LastWrite>,
        #[case] digest: &str,
        #[case] now: &str,
        #[case] want: bool,
    ) {
        assert_eq!(
            should_publish(previous.as_ref(), digest, t(now), PublishRate::default()),
            want
        );
    }

    #[test]
    fn the_default_rate_is_at_most_three_writes_an_hour() {
        // Content changing every minute for an hour: the writes allowed.
        let rate = PublishRate::default();
        let start = t("2026-03-01T00:00:00Z").millis();
        let mut previous: Option<LastWrite> = None;
        let mut writes = 0;
        for minute in 0..60 {
            let now = Timestamp::from_millis(start + minute * 60_000);
            let digest = format!("d{minute}");
            if should_publish(previous.as_ref(), &digest, now, rate) {
                writes += 1;
                previous = Some(LastWrite { digest, at: now });
            }
        }
        assert_eq!(writes, 3);
    }

    #[rstest]
    #[case("at://did:plc:bob/org.p2pds.policy.ack/3k", "did:plc:bob", Some("3k"))]
    // A listing from carol's server that claims a record of bob's: not carol's key.
    #[case("at://did:plc:bob/org.p2pds.policy.ack/3k", "did:plc:carol", None)]
    #[case("at://did:plc:bob/org.p2pds.policy/3k", "did:plc:bob", None)]
    #[case("at://did:plc:bob/org.p2pds.policy.ack/", "did:plc:bob", None)]
    #[case("at://did:plc:bob/org.p2pds.policy.ack/a/b", "did:plc:bob", None)]
    #[case("https://example.com", "did:plc:bob", None)]
    fn listings_only_name_keys_in_the_repo_asked(
        #[case] uri: &str,
        #[case] did: &str,
        #[case] want: Option<&str>,
    ) {
        assert_eq!(rkey_in(uri, did, "org.p2pds.policy.ack").as_deref(), want);
    }

    #[rstest]
    #[case("https://backup.example.net", true)]
    #[case("http://127.0.0.1:8080", true)]
    #[case("http://127.0.0.1:8080/p2pds", true)]
    #[case("ftp://example.net", false)]
    #[case("example.net", false)]
    #[case("https://example.net/?x=1", false)]
    #[case("https://me@example.net", false)]
    fn endpoints(#[case] e: &str, #[case] ok: bool) {
        assert_eq!(check_endpoint(e).is_ok(), ok, "{e}");
    }
}
