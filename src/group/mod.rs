//! Circles: the policy lifecycle over real atproto records. The author publishes an
//! `org.p2pds.policy` in its repo; each member answers with an `org.p2pds.policy.ack` in its
//! own repo; each node publishes what it holds (`org.p2pds.policy.status`, record key = the
//! policy's) and a heartbeat (`org.p2pds.peer`, key `self`).
//!
//! This module owns reading those records (discovery of invitations in the repos of the
//! accounts a node knows: its contacts, the accounts it backs up, the accounts its own repo
//! follows, its circles' members and authors; and, when one is configured, what a backlink
//! index says names this account, verified: `backlinks`), the local memory of them (`db`:
//! every version seen, verified acks, this node's answers), turning the version in force into
//! duties (the accounts to back up: `store::add_repo`), and writing this node's own records.
//! The rules are in `plan` (pure); the meaning of a policy, its lifecycle and obligations are
//! `crate::policy`'s.
//!
//! Invariants:
//! - Authority: a policy counts only as read from its author's repo, an ack only from the
//!   acking member's repo, and both only as verified records (`Syncer::verified_record`: a
//!   proof against the account's signed commit). `listRecords` answers are used only to find
//!   record keys, and only keys in the repo that was asked (`plan::rkey_in`): an ack for bob
//!   found anywhere but bob's repo does not exist.
//! - Every version seen is kept (`policy_versions`), so an edited policy's old version stays
//!   in force while the new one waits for acks (`plan::version_in_force`).
//! - Ending a duty never deletes a copy by itself: only `leave`/`revoke` with
//!   [`Copies::Delete`] do, and only for accounts a circle added and no other circle needs.
//! - Status and heartbeat writes are rate-limited (`plan::should_publish`).

pub mod backlinks;
pub mod db;
mod invite;
pub mod link;
pub mod plan;

pub use invite::OpenedLink;

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::identity::IdentityError;
use crate::policy::lifecycle::{self, AckState, Lifecycle};
use crate::policy::model::Policy;
use crate::policy::observations::AckObservation;
use crate::policy::records::{
    nsid, AckRecord, HoldingRecord, PeerRecord, PolicyRecord, StatusRecord, StrongRef,
    VerificationResultRecord,
};
use crate::policy::time::Timestamp;
use crate::policy::validate::{check_value, Problems};
use crate::session::{self, Account, Session, SessionError};
use crate::store::{self, StoreError};
use crate::sync::{SyncError, Syncer};
use plan::{Answer, CircleState, LastWrite, PublishRate};

/// Follow records read to find contacts (`app.bsky.graph.follow`).
const FOLLOW: &str = "app.bsky.graph.follow";
/// Most records read from one listing (50 pages of 100).
const MAX_LISTED: usize = 5000;
/// A repo larger than this is not measured to the end for an invitation's estimate.
const SIZE_CAP: u64 = 256 << 20;
/// Where the advertised endpoint is kept (`group_meta`).
const ENDPOINT_KEY: &str = "endpoint";
/// The node software, as its heartbeat says.
pub const SOFTWARE: &str = concat!("p2pds/", env!("CARGO_PKG_VERSION"));

/// The verification results a node publishes in its status records, by policy URI (each
/// list oldest first, as its status record carries it). Read by the caller from the
/// verification tables (`verify::published_results`) and given to [`Circles::publish`].
pub type PublishedResults = BTreeMap<String, Vec<VerificationResultRecord>>;

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("{0:?} is not the AT-URI of a circle (at://did:…/org.p2pds.policy/…): copy it from `p2pds invitations` or `p2pds circle list`")]
    BadUri(String),
    #[error("the circle {uri} is not in its author's repo (deleted or never there)")]
    Gone { uri: String },
    #[error("the circle {uri} does not include you ({me})")]
    NotAMember { uri: String, me: String },
    #[error("only the circle's author ({author}) can change or revoke {uri}")]
    NotAuthor { uri: String, author: String },
    #[error("you wrote the circle {uri}: to end it for everyone, revoke it with `p2pds circle revoke {uri}`")]
    AuthorCannotLeave { uri: String },
    #[error("the circle {uri} was revoked by its author: there is nothing to answer")]
    Revoked { uri: String },
    #[error("the circle would not be a valid policy: {0}")]
    InvalidPolicy(Problems),
    #[error("nothing to change: give --name, --min-copies or --description")]
    NothingToEdit,
    #[error("{member} is you: list the other members only")]
    SelfAsMember { member: String },
    #[error("{0}")]
    BadEndpoint(String),
    #[error("could not read the records of {did}: {reason}")]
    Read { did: String, reason: String },
    /// An invitation link refused (`link`), each kind in words.
    #[error(transparent)]
    Link(#[from] link::LinkError),
}

/// What happens to the copies when a duty ends by this node's own act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Copies {
    Keep,
    Delete,
}

/// A member as `circle list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    pub did: String,
    pub handle: Option<String>,
    /// Its answer to the latest version.
    pub ack: AckState,
}

/// The version in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InForce {
    pub cid: String,
    pub active_since: Option<Timestamp>,
}

/// One circle as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CircleView {
    pub uri: String,
    /// The latest version (`None` when the author deleted the record).
    pub cid: Option<String>,
    pub name: String,
    pub author: String,
    pub author_handle: Option<String>,
    pub state: CircleState,
    pub in_force: Option<InForce>,
    pub members: Vec<MemberView>,
    pub min_copies: u32,
    /// This node's latest answer to any version.
    pub my_answer: Option<Answer>,
    /// The accounts this node backs up for the circle.
    pub holding: Vec<String>,
}

/// A version waiting for this node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invitation {
    pub uri: String,
    pub cid: String,
    pub author: String,
    pub name: String,
    pub members: Vec<MemberView>,
    pub facts: plan::InvitationFacts,
    pub text: String,
}

/// What a refresh found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshReport {
    /// Accounts whose records could not be read (the last verified state is used).
    pub warnings: Vec<String>,
    /// Policy URIs seen in a new version.
    pub new_versions: Vec<String>,
    /// (circle, account) duties started: the account is now backed up.
    pub started: Vec<(String, String)>,
    /// (circle, accounts) duties ended; their copies are kept.
    pub ended: Vec<(String, Vec<String>)>,
}

/// What ending a circle's duties did to the copies: (account, deleted).
pub type CopiesOutcome = Vec<(String, bool)>;

/// What a status pass wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishReport {
    /// Status records written (policy URIs).
    pub statuses: Vec<String>,
    /// Status records skipped by the rate limit or because nothing changed.
    pub skipped: usize,
    pub heartbeat: bool,
}

/// A version with its validated policy.
struct Version {
    row: db::VersionRow,
    policy: Option<Policy>,
}

/// Everything known of one circle, evaluated at `now`.
struct Assessed {
    uri: String,
    author: String,
    versions: Vec<Version>,
    latest: Option<(usize, Lifecycle)>,
    in_force: Option<(usize, Lifecycle)>,
    left: bool,
    my_answers: Vec<(String, Answer)>,
}

impl Assessed {
    fn latest_policy(&self) -> Option<&Policy> {
        let (i, _) = self.latest.as_ref()?;
        self.versions.get(*i)?.policy.as_ref()
    }

    fn in_force_policy(&self) -> Option<&Policy> {
        let (i, _) = self.in_force.as_ref()?;
        self.versions.get(*i)?.policy.as_ref()
    }

    fn answer_to(&self, cid: &str) -> Option<Answer> {
        self.my_answers
            .iter()
            .rev()
            .find(|(c, _)| c == cid)
            .map(|(_, a)| *a)
    }
}

fn now() -> Timestamp {
    Timestamp::from_millis(chrono::Utc::now().timestamp_millis())
}

fn policy_of(row: &db::VersionRow) -> Option<Policy> {
    check_value(&json!({"uri": row.uri, "cid": row.cid, "value": row.record}))
        .ok()
        .map(|c| c.policy)
}

/// Evaluates one circle from what the store holds.
fn assess(
    policy: &db::PolicyRow,
    rows: Vec<db::VersionRow>,
    acks: &[AckObservation],
    my_answers: Vec<(String, Answer)>,
    now: Timestamp,
) -> Assessed {
    let versions: Vec<Version> = rows
        .into_iter()
        .map(|row| Version {
            policy: policy_of(&row),
            row,
        })
        .collect();
    let lifecycles: Vec<Option<Lifecycle>> = versions
        .iter()
        .map(|v| v.policy.as_ref().map(|p| lifecycle::evaluate(p, acks, now)))
        .collect();
    let latest_index = policy
        .latest_cid
        .as_ref()
        .and_then(|cid| versions.iter().position(|v| &v.row.cid == cid));
    // Versions in the order seen, with the latest last (it may have been seen before: an edit
    // reverted to an older content has that older CID again).
    let mut order: Vec<usize> = (0..versions.len())
        .filter(|i| Some(*i) != latest_index)
        .collect();
    if let Some(l) = latest_index {
        order.push(l);
    }
    let phases: Vec<plan::VersionPhase> = order
        .iter()
        .filter_map(|&i| {
            let v = versions.get(i)?;
            let p = v.policy.as_ref()?;
            let lc = lifecycles.get(i)?.as_ref()?;
            Some(plan::VersionPhase {
                phase: lc.phase,
                first_seen: v.row.first_seen(),
                grace: p.compliance.offline_grace_period,
            })
        })
        .collect();
    // Keep only valid versions in `order` (the ones `phases` describes).
    let order: Vec<usize> = order
        .into_iter()
        .filter(|&i| {
            versions.get(i).is_some_and(|v| v.policy.is_some())
                && lifecycles.get(i).is_some_and(Option::is_some)
        })
        .collect();
    let in_force = if latest_index.is_some() {
        plan::version_in_force(&phases, now).and_then(|k| order.get(k).copied())
    } else {
        None
    };
    let take = |i: usize| lifecycles.get(i).cloned().flatten().map(|lc| (i, lc));
    let left = my_answers.last().is_some_and(|(_, a)| *a == Answer::Left);
    Assessed {
        uri: policy.uri.clone(),
        author: policy.author.clone(),
        latest: latest_index.and_then(take),
        in_force: in_force.and_then(take),
        versions,
        left,
        my_answers,
    }
}

/// Circles for one node: reads, remembers and publishes.
#[derive(Clone, Debug)]
pub struct Circles {
    pub syncer: Syncer,
    pub rate: PublishRate,
    /// A backlink index asked for circles naming this account beyond the accounts known
    /// (`backlinks`); none by default.
    pub backlinks: Option<backlinks::BacklinkIndex>,
}

impl Circles {
    pub fn new(syncer: Syncer) -> Self {
        Circles {
            syncer,
            rate: PublishRate::default(),
            backlinks: None,
        }
    }

    /// The account this node is signed in as.
    pub async fn me(&self) -> Result<Account, GroupError> {
        self.syncer
            .store
            .read(session::signed_in)
            .await?
            .ok_or(GroupError::Session(SessionError::NotSignedIn))
    }

    // ---- reading remote records ------------------------------------------------------------

    /// `com.atproto.repo.listRecords` on `did`'s own PDS: (uri, cid, value) of up to
    /// [`MAX_LISTED`] records. Unverified: only good for finding record keys.
    pub(crate) async fn list_records(
        &self,
        did: &str,
        collection: &str,
    ) -> Result<Vec<(String, Value)>, GroupError> {
        let doc = self.syncer.resolver.resolve_did(did, false).await?;
        let pds = doc.pds.ok_or_else(|| GroupError::Read {
            did: did.to_string(),
            reason: "its identity document names no PDS".into(),
        })?;
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        // A cursor that comes back is refused (the record cap ends the pages otherwise).
        let url = format!("{pds}/xrpc/com.atproto.repo.listRecords");
        let mut pages = crate::xrpc::Pages::new(&url, usize::MAX);
        loop {
            let mut query = vec![("repo", did), ("collection", collection), ("limit", "100")];
            if let Some(c) = &cursor {
                query.push(("cursor", c.as_str()));
            }
            let page: Value = match self
                .syncer
                .get_json(&pds, "com.atproto.repo.listRecords", &query)
                .await
            {
                Ok(v) => v,
                // An account that is gone has no records to offer.
                Err(SyncError::Http {
                    status: 400, error, ..
                }) if error == "RepoNotFound" || error == "RepoDeactivated" => return Ok(out),
                Err(e) => return Err(e.into()),
            };
            let records = page
                .get("records")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for r in &records {
                if let Some(uri) = r.get("uri").and_then(Value::as_str) {
                    out.push((
                        uri.to_string(),
                        r.get("value").cloned().unwrap_or(Value::Null),
                    ));
                }
            }
            if out.len() >= MAX_LISTED {
                break;
            }
            let next = page
                .get("cursor")
                .and_then(Value::as_str)
                .map(str::to_string);
            cursor = pages
                .next(next, records.len())
                .map_err(crate::sync::SyncError::from)?;
            if cursor.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// Reads one policy from its author's repo with a proof and remembers the version.
    /// `Ok(None)`: the signed tree proves the record is gone.
    async fn verify_policy(
        &self,
        author: &str,
        rkey: &str,
    ) -> Result<Option<(String, Result<Policy, Problems>)>, GroupError> {
        let uri = format!("at://{author}/{}/{rkey}", nsid::POLICY);
        let vr = self
            .syncer
            .verified_record(author, nsid::POLICY, rkey)
            .await?;
        let (Some(cid), Some(value)) = (vr.cid, vr.value) else {
            let u = uri.clone();
            self.syncer
                .store
                .write(move |c| db::record_deleted(c, &u))
                .await??;
            return Ok(None);
        };
        let cid = cid.to_string();
        let checked = check_value(&json!({"uri": uri, "cid": cid, "value": value}));
        let checked = match checked {
            Ok(c) => c.policy,
            Err(p) => return Ok(Some((cid, Err(p)))),
        };
        let (u, c, a, v) = (uri.clone(), cid.clone(), author.to_string(), value.clone());
        self.syncer
            .store
            .write(move |conn| db::record_version(conn, &u, &c, &a, &v))
            .await??;
        Ok(Some((cid, Ok(checked))))
    }

    /// Makes sure the latest version of `uri` is known (read from its author's repo now).
    async fn refresh_policy(&self, uri: &str) -> Result<Policy, GroupError> {
        let (author, collection, rkey) =
            plan::split_uri(uri).ok_or_else(|| GroupError::BadUri(uri.to_string()))?;
        if collection != nsid::POLICY {
            return Err(GroupError::BadUri(uri.to_string()));
        }
        match self.verify_policy(&author, &rkey).await? {
            None => Err(GroupError::Gone {
                uri: uri.to_string(),
            }),
            Some((_, Err(p))) => Err(GroupError::InvalidPolicy(p)),
            Some((_, Ok(policy))) => {
                self.read_acks(std::slice::from_ref(&policy)).await?;
                Ok(policy)
            }
        }
    }

    /// Reads, with proofs, the acks that the members of `policies` published for them, each
    /// from the member's own repo, and replaces what the store held. Returns warnings.
    async fn read_acks(&self, policies: &[Policy]) -> Result<Vec<String>, GroupError> {
        let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in policies {
            let Some(uri) = &p.reference.uri else {
                continue;
            };
            for m in &p.members {
                wanted.entry(m.did.clone()).or_default().insert(uri.clone());
            }
        }
        let mut warnings = Vec::new();
        for (member, uris) in wanted {
            let listed = match self.list_records(&member, nsid::POLICY_ACK).await {
                Ok(l) => l,
                Err(e) => {
                    warnings.push(format!("acks of {member}: {e}"));
                    continue;
                }
            };
            let mut found: BTreeMap<String, Vec<AckObservation>> =
                uris.iter().map(|u| (u.clone(), Vec::new())).collect();
            let mut failed = false;
            for (uri, value) in listed {
                // Only keys in the member's own repo; the listed content only picks candidates.
                let Some(rkey) = plan::rkey_in(&uri, &member, nsid::POLICY_ACK) else {
                    continue;
                };
                let listed_policy = value
                    .pointer("/policy/uri")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !uris.contains(listed_policy) {
                    continue;
                }
                let vr = match self
                    .syncer
                    .verified_record(&member, nsid::POLICY_ACK, &rkey)
                    .await
                {
                    Ok(vr) => vr,
                    Err(e) => {
                        warnings.push(format!("ack {uri}: {e}"));
                        failed = true;
                        continue;
                    }
                };
                let (Some(cid), Some(value)) = (vr.cid, vr.value) else {
                    continue;
                };
                let Ok(ack) = serde_json::from_value::<AckRecord>(value) else {
                    continue;
                };
                if let Some(list) = found.get_mut(&ack.policy.uri) {
                    list.push(AckObservation {
                        uri: format!("at://{member}/{}/{rkey}", nsid::POLICY_ACK),
                        cid: Some(cid.to_string()),
                        value: ack,
                    });
                }
            }
            if failed {
                // Keep the last verified state rather than forget acks we could not re-read.
                continue;
            }
            for (policy_uri, acks) in found {
                let m = member.clone();
                self.syncer
                    .store
                    .write(move |c| db::replace_acks(c, &m, &policy_uri, &acks))
                    .await??;
            }
        }
        Ok(warnings)
    }

    /// The accounts whose repos are searched for invitations.
    async fn known_accounts(&self, me: &Account) -> Result<BTreeSet<String>, GroupError> {
        let mut dids: BTreeSet<String> = BTreeSet::new();
        dids.insert(me.did.clone());
        let (contacts, repos, tracked) = self
            .syncer
            .store
            .read(|c| {
                Ok((
                    db::contacts(c)?,
                    store::list_repos(c)?,
                    db::policies(c)?
                        .into_iter()
                        .map(|p| (p.uri.clone(), p.author))
                        .collect::<Vec<_>>(),
                ))
            })
            .await?;
        dids.extend(contacts.into_iter().map(|(d, _)| d));
        dids.extend(repos.into_iter().map(|r| r.did));
        for (uri, author) in tracked {
            dids.insert(author);
            let u = uri.clone();
            let versions = self.syncer.store.read(move |c| db::versions(c, &u)).await?;
            for v in versions {
                if let Some(p) = policy_of(&v) {
                    dids.extend(p.members.into_iter().map(|m| m.did));
                }
            }
        }
        // The accounts this account follows (public records in its own repo).
        match self.list_records(&me.did, FOLLOW).await {
            Ok(follows) => {
                for (_, v) in follows {
                    if let Some(s) = v.get("subject").and_then(Value::as_str) {
                        if s.starts_with("did:") {
                            dids.insert(s.to_string());
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the follows of this account"),
        }
        Ok(dids)
    }

    /// Brings the circles up to date: the latest version of every tracked policy (and, with
    /// `discover`, new policies naming this node in the repos of every known account), the
    /// members' acks, and this node's duties (accounts to back up).
    pub async fn refresh(&self, discover: bool) -> Result<RefreshReport, GroupError> {
        let me = self.me().await?;
        let mut report = RefreshReport::default();
        let tracked = self.syncer.store.read(db::policies).await?;
        let tracked_uris: BTreeSet<String> = tracked.iter().map(|p| p.uri.clone()).collect();
        let before: BTreeMap<String, Option<String>> = tracked
            .iter()
            .map(|p| (p.uri.clone(), p.latest_cid.clone()))
            .collect();
        // 1. Tracked policies, straight from their authors' repos.
        for p in &tracked {
            let Some((author, _, rkey)) = plan::split_uri(&p.uri) else {
                continue;
            };
            if let Err(e) = self.verify_policy(&author, &rkey).await {
                report.warnings.push(format!("circle {}: {e}", p.uri));
            }
        }
        // 2. New policies naming this node.
        if discover {
            for did in self.known_accounts(&me).await? {
                let listed = match self.list_records(&did, nsid::POLICY).await {
                    Ok(l) => l,
                    Err(e) => {
                        report.warnings.push(format!("circles of {did}: {e}"));
                        continue;
                    }
                };
                for (uri, value) in listed {
                    let Some(rkey) = plan::rkey_in(&uri, &did, nsid::POLICY) else {
                        continue;
                    };
                    let canonical = format!("at://{did}/{}/{rkey}", nsid::POLICY);
                    if tracked_uris.contains(&canonical) {
                        continue;
                    }
                    let names_me =
                        value
                            .get("members")
                            .and_then(Value::as_array)
                            .is_some_and(|ms| {
                                ms.iter().any(|m| {
                                    m.get("did").and_then(Value::as_str) == Some(me.did.as_str())
                                })
                            });
                    if !names_me {
                        continue;
                    }
                    match self.verify_policy(&did, &rkey).await {
                        Ok(Some((_, Err(p)))) => report.warnings.push(format!(
                            "{canonical} names you but is not a valid policy: {p}"
                        )),
                        Ok(_) => {}
                        Err(e) => report.warnings.push(format!("circle {canonical}: {e}")),
                    }
                }
            }
            // 2b. Beyond the accounts known: the backlink index, every answer verified.
            self.discover_from_index(&me, &mut report).await;
            let now_text = store::now_text();
            self.syncer
                .store
                .write(move |c| db::set_meta(c, "discovered_at", &now_text))
                .await??;
        }
        // 3. Acks of every version held.
        let policies = self.all_policies().await?;
        let mut warnings = self.read_acks(&policies).await?;
        report.warnings.append(&mut warnings);
        let after = self.syncer.store.read(db::policies).await?;
        for p in after {
            if before.get(&p.uri) != Some(&p.latest_cid) {
                report.new_versions.push(p.uri);
            }
        }
        // 4. Duties.
        let (started, ended) = self.apply_duties(&me).await?;
        report.started = started;
        report.ended = ended;
        Ok(report)
    }

    /// Every valid version of every tracked policy, except policies whose latest version is
    /// revoked or deleted: their acks no longer matter, so they cost no reads.
    async fn all_policies(&self) -> Result<Vec<Policy>, GroupError> {
        self.syncer
            .store
            .read(|c| {
                let mut out = Vec::new();
                for p in db::policies(c)? {
                    let versions: Vec<Policy> = db::versions(c, &p.uri)?
                        .iter()
                        .filter_map(policy_of)
                        .collect();
                    let latest = versions
                        .iter()
                        .find(|v| Some(&v.reference.cid) == p.latest_cid.as_ref());
                    if latest.is_none_or(|l| l.revoked) {
                        continue;
                    }
                    out.extend(versions);
                }
                Ok(out)
            })
            .await
            .map_err(GroupError::from)
    }

    async fn assessed(&self) -> Result<Vec<Assessed>, GroupError> {
        let now = now();
        self.syncer
            .store
            .read(move |c| {
                let mut out = Vec::new();
                for p in db::policies(c)? {
                    let versions = db::versions(c, &p.uri)?;
                    let acks = db::acks(c, &p.uri)?;
                    let answers = db::answers(c, &p.uri)?;
                    out.push(assess(&p, versions, &acks, answers, now));
                }
                Ok(out)
            })
            .await
            .map_err(GroupError::from)
    }

    /// The accounts each circle in force asks this node to hold.
    fn duties(me: &Account, circles: &[Assessed]) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for a in circles {
            if a.left {
                continue;
            }
            let Some(policy) = a.in_force_policy() else {
                continue;
            };
            let Some(ob) =
                crate::policy::obligations::for_member(policy, &me.did, &BTreeMap::new())
            else {
                continue;
            };
            let set = out.entry(a.uri.clone()).or_default();
            for h in ob.hold {
                if h.subject != me.did {
                    set.insert(h.subject);
                }
            }
        }
        out
    }

    /// Starts and ends duties to match the circles in force. Ending keeps the copies.
    async fn apply_duties(
        &self,
        me: &Account,
    ) -> Result<(Vec<(String, String)>, Vec<(String, Vec<String>)>), GroupError> {
        let circles = self.assessed().await?;
        let want = Self::duties(me, &circles);
        let have = self.syncer.store.read(db::subjects).await?;
        let mut have_by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in have.iter().filter(|s| s.active) {
            have_by
                .entry(s.policy_uri.clone())
                .or_default()
                .insert(s.did.clone());
        }
        let mut started = Vec::new();
        for (uri, dids) in &want {
            for did in dids {
                if have_by.get(uri).is_some_and(|h| h.contains(did)) {
                    continue;
                }
                let doc = self.syncer.resolver.resolve_did(did, false).await.ok();
                let pds = doc.as_ref().and_then(|d| d.pds.clone());
                // Named only by a handle that resolves back to the account.
                let handle = match &doc {
                    Some(_) => self.syncer.resolver.verified_handle(did).await,
                    None => None,
                };
                let (u, d) = (uri.clone(), did.clone());
                self.syncer
                    .store
                    .write(move |c| {
                        let added = store::add_repo(c, &d, handle.as_deref(), pds.as_deref())?;
                        db::add_subject(c, &u, &d, added)?;
                        db::add_contact(c, &d, handle.as_deref(), "member")
                    })
                    .await??;
                started.push((uri.clone(), did.clone()));
            }
        }
        let mut ended = Vec::new();
        for (uri, dids) in have_by {
            let still = want.get(&uri);
            let gone: Vec<String> = dids
                .into_iter()
                .filter(|d| !still.is_some_and(|s| s.contains(d)))
                .collect();
            if gone.is_empty() {
                continue;
            }
            let (u, g) = (uri.clone(), gone.clone());
            self.syncer
                .store
                .write(move |c| {
                    for d in &g {
                        db::deactivate_subject(c, &u, d)?;
                    }
                    Ok::<_, StoreError>(())
                })
                .await??;
            ended.push((uri, gone));
        }
        Ok((started, ended))
    }

    /// Ends this node's duties for `uri`, deleting the copies the circle added (and no other
    /// circle needs) when asked.
    async fn end_duties(&self, uri: &str, copies: Copies) -> Result<CopiesOutcome, GroupError> {
        let uri = uri.to_string();
        let blobs = self.syncer.blob_dir();
        Ok(self
            .syncer
            .store
            .write(move |c| {
                let all = db::subjects(c)?;
                let others: BTreeSet<String> = all
                    .iter()
                    .filter(|s| s.policy_uri != uri && s.active)
                    .map(|s| s.did.clone())
                    .collect();
                let mut out = Vec::new();
                for s in all.into_iter().filter(|s| s.policy_uri == uri) {
                    let delete =
                        copies == Copies::Delete && s.added_repo && !others.contains(&s.did);
                    if delete {
                        store::remove_repo(c, &s.did)?;
                    }
                    out.push((s.did, delete));
                }
                if out.iter().any(|(_, deleted)| *deleted) {
                    store::blobfiles::remove_unreferenced(c, &blobs)?;
                }
                db::remove_subjects(c, &uri)?;
                Ok::<_, StoreError>(out)
            })
            .await??)
    }

    // ---- views -------------------------------------------------------------------------------

    /// A handle already remembered for `did` (its contact's).
    async fn contact_handle(&self, did: &str) -> Option<String> {
        let d = did.to_string();
        let contacts = self.syncer.store.read(db::contacts).await.ok()?;
        contacts
            .into_iter()
            .find(|(c, _)| *c == d)
            .and_then(|(_, h)| h)
    }

    /// The handle to show for `did`, writing nothing: its contact's, else the one its DID
    /// document claims once that handle resolves back to `did`
    /// (`identity::Resolver::verified_handle`, cached). For accounts a pasted link or any other
    /// untrusted source names: looking a name up does not make them known.
    pub(crate) async fn shown_handle(&self, did: &str) -> Option<String> {
        match self.contact_handle(did).await {
            Some(h) => Some(h),
            None => self.syncer.resolver.verified_handle(did).await,
        }
    }

    /// The handle of an account this node already deals with (a member of its circles): as
    /// `Circles::shown_handle`, and a verified handle found is remembered with its contact.
    async fn handle_of(&self, did: &str) -> Option<String> {
        if let Some(h) = self.contact_handle(did).await {
            return Some(h);
        }
        let handle = self.syncer.resolver.verified_handle(did).await?;
        let (d, h) = (did.to_string(), handle.clone());
        let _ = self
            .syncer
            .store
            .write(move |c| db::add_contact(c, &d, Some(&h), "member"))
            .await;
        Some(handle)
    }

    async fn members_view(&self, a: &Assessed) -> Vec<MemberView> {
        let mut out = Vec::new();
        let Some((_, lc)) = &a.latest else {
            return out;
        };
        for m in &lc.acks {
            out.push(MemberView {
                did: m.member.clone(),
                handle: self.handle_of(&m.member).await,
                ack: m.state,
            });
        }
        out
    }

    /// The circles this node is in (or was: left, revoked), as of the last refresh.
    pub async fn list(&self) -> Result<Vec<CircleView>, GroupError> {
        let me = self.me().await?;
        let circles = self.assessed().await?;
        let holding = self.syncer.store.read(db::subjects).await?;
        let mut out = Vec::new();
        for a in &circles {
            let latest = a.latest_policy();
            let mine = a.author == me.did
                || a.my_answers.iter().any(|(_, x)| *x != Answer::Declined)
                || a.latest.as_ref().is_some_and(|(_, lc)| {
                    lc.acks
                        .iter()
                        .any(|m| m.member == me.did && m.state == AckState::Accepted)
                });
            if !mine {
                continue;
            }
            let shown = latest.or_else(|| a.versions.last().and_then(|v| v.policy.as_ref()));
            let Some(shown) = shown else {
                continue;
            };
            out.push(CircleView {
                uri: a.uri.clone(),
                cid: latest.map(|p| p.reference.cid.clone()),
                name: shown.name.clone(),
                author: a.author.clone(),
                author_handle: self.handle_of(&a.author).await,
                state: plan::circle_state(a.latest.as_ref().map(|(_, lc)| lc.phase), a.left),
                in_force: a.in_force.as_ref().and_then(|(i, lc)| {
                    a.versions.get(*i).map(|v| InForce {
                        cid: v.row.cid.clone(),
                        active_since: lc.active_since,
                    })
                }),
                members: self.members_view(a).await,
                min_copies: shown.replication.min_copies,
                my_answer: a.my_answers.last().map(|(_, x)| *x),
                holding: holding
                    .iter()
                    .filter(|s| s.policy_uri == a.uri && s.active)
                    .map(|s| s.did.clone())
                    .collect(),
            });
        }
        Ok(out)
    }

    /// The versions waiting for this node's answer, with what they would cost. Measures the
    /// size of accounts not held yet (once; remembered).
    pub async fn invitations(&self) -> Result<Vec<Invitation>, GroupError> {
        let me = self.me().await?;
        let circles = self.assessed().await?;
        let mut out = Vec::new();
        for a in &circles {
            let (Some(policy), Some((_, lc))) = (a.latest_policy(), a.latest.as_ref()) else {
                continue;
            };
            let cid = policy.reference.cid.clone();
            let mine_seen = lc.acks.iter().any(|m| {
                m.member == me.did && m.state != AckState::Missing && m.state != AckState::Stale
            });
            let answer = a.answer_to(&cid).or(a.left.then_some(Answer::Left));
            if !plan::is_invitation(plan::names(policy, &me.did), lc.phase, answer, mine_seen) {
                continue;
            }
            let hold: Vec<String> =
                crate::policy::obligations::for_member(policy, &me.did, &BTreeMap::new())
                    .map(|o| {
                        o.hold
                            .into_iter()
                            .map(|h| h.subject)
                            .filter(|s| *s != me.did)
                            .collect()
                    })
                    .unwrap_or_default();
            let mut bytes = 0u64;
            let mut unknown = 0usize;
            for did in &hold {
                match self.estimate_size(did).await {
                    Some(n) => bytes += n,
                    None => unknown += 1,
                }
            }
            let author = self
                .handle_of(&a.author)
                .await
                .unwrap_or_else(|| a.author.clone());
            let members = self.members_view(a).await;
            let others: Vec<String> = members
                .iter()
                .filter(|m| m.did != me.did && m.did != a.author)
                .map(|m| m.handle.clone().unwrap_or_else(|| m.did.clone()))
                .collect();
            let update = a
                .my_answers
                .iter()
                .any(|(c, x)| *x == Answer::Accepted && *c != cid);
            let facts = plan::InvitationFacts {
                author,
                name: policy.name.clone(),
                others,
                hold: hold.len(),
                estimated_bytes: bytes,
                unknown_sizes: unknown,
                min_copies: policy.replication.min_copies,
                check_interval: policy.verification.interval,
                offline_grace: policy.compliance.offline_grace_period,
                update,
            };
            out.push(Invitation {
                uri: a.uri.clone(),
                cid,
                author: a.author.clone(),
                name: policy.name.clone(),
                members,
                text: plan::invitation_text(&facts),
                facts,
            });
        }
        Ok(out)
    }

    /// The size of an account's repo: the copy held, a remembered estimate, or a measurement
    /// (the CAR streamed and counted, not kept, up to [`SIZE_CAP`]).
    async fn estimate_size(&self, did: &str) -> Option<u64> {
        let d = did.to_string();
        let (held, remembered) = self
            .syncer
            .store
            .read(move |c| Ok((store::get_repo(c, &d)?, db::size_estimate(c, &d)?)))
            .await
            .ok()?;
        if let Some(r) = held.filter(|r| r.head.is_some()) {
            return u64::try_from(r.bytes).ok();
        }
        if let Some((n, _)) = remembered {
            return Some(n);
        }
        let doc = self.syncer.resolver.resolve_did(did, false).await.ok()?;
        let pds = doc.pds?;
        let url = format!("{pds}/xrpc/com.atproto.sync.getRepo");
        let resp = self.syncer.get_stream(&url, &[("did", did)]).await.ok()?;
        let mut stream = resp.bytes_stream();
        let mut n = 0u64;
        let mut complete = true;
        while let Some(chunk) = stream.next().await {
            n += chunk.ok()?.len() as u64;
            if n >= SIZE_CAP {
                complete = false;
                break;
            }
        }
        let d = did.to_string();
        let _ = self
            .syncer
            .store
            .write(move |c| db::set_size_estimate(c, &d, n, complete))
            .await;
        Some(n)
    }

    /// One circle's view after reading it fresh from the network.
    pub async fn view(&self, uri: &str) -> Result<Option<CircleView>, GroupError> {
        Ok(self.list().await?.into_iter().find(|c| c.uri == uri))
    }

    // ---- this node's acts ------------------------------------------------------------------

    /// Publishes a new circle: the policy in the author's repo (validated first, so it passes
    /// `p2pds policy check`), then the author's own ack. Members are handles or DIDs.
    pub async fn create(
        &self,
        session: &Session,
        name: &str,
        description: Option<String>,
        members: &[String],
        min_copies: Option<u32>,
        rules: plan::RuleOverrides,
    ) -> Result<CircleView, GroupError> {
        let me = session.account.clone();
        let mut dids = Vec::new();
        for m in members {
            let (doc, handle) = self.syncer.resolver.resolve_account_named(m).await?;
            if doc.did == me.did {
                return Err(GroupError::SelfAsMember { member: m.clone() });
            }
            let (d, h) = (doc.did.clone(), handle);
            self.syncer
                .store
                .write(move |c| db::add_contact(c, &d, h.as_deref(), "member"))
                .await??;
            dids.push(doc.did);
        }
        let record = plan::new_policy_record(&plan::NewCircle {
            name: name.to_string(),
            description,
            author: me.did.clone(),
            members: dids,
            min_copies,
            rules,
            now: now(),
        });
        let value = to_value(&record)?;
        check_value(&value).map_err(GroupError::InvalidPolicy)?;
        let r = session.create_record(nsid::POLICY, &value).await?;
        self.after_publish(session, &r.uri).await
    }

    /// After the author wrote a version: read it back with a proof, ack it, refresh.
    async fn after_publish(&self, session: &Session, uri: &str) -> Result<CircleView, GroupError> {
        let policy = self.refresh_policy(uri).await?;
        self.ack(session, &policy, true, None).await?;
        self.refresh_policy(uri).await?;
        self.apply_duties(&session.account).await?;
        self.view(uri).await?.ok_or_else(|| GroupError::Gone {
            uri: uri.to_string(),
        })
    }

    async fn ack(
        &self,
        session: &Session,
        policy: &Policy,
        accepted: bool,
        reason: Option<String>,
    ) -> Result<StrongRef, GroupError> {
        let uri = policy.reference.uri.clone().unwrap_or_default();
        let ack = AckRecord {
            lex_type: nsid::POLICY_ACK.into(),
            policy: StrongRef {
                uri: uri.clone(),
                cid: policy.reference.cid.clone(),
            },
            accepted,
            reason,
            created_at: now().to_string(),
        };
        let r = session
            .create_record(nsid::POLICY_ACK, &to_value(&ack)?)
            .await?;
        let (u, c, a) = (
            uri,
            policy.reference.cid.clone(),
            if accepted {
                Answer::Accepted
            } else {
                Answer::Declined
            },
        );
        let ack_uri = r.uri.clone();
        self.syncer
            .store
            .write(move |conn| {
                if a == Answer::Accepted {
                    db::clear_left(conn, &u)?;
                }
                db::set_answer(conn, &u, &c, a, Some(&ack_uri))
            })
            .await??;
        Ok(r)
    }

    fn require_member(me: &Account, policy: &Policy) -> Result<(), GroupError> {
        if plan::names(policy, &me.did) {
            Ok(())
        } else {
            Err(GroupError::NotAMember {
                uri: policy.reference.uri.clone().unwrap_or_default(),
                me: me.handle.clone().unwrap_or_else(|| me.did.clone()),
            })
        }
    }

    /// Accepts the latest version of a circle; duties start once every member has accepted.
    pub async fn accept(&self, session: &Session, uri: &str) -> Result<CircleView, GroupError> {
        let policy = self.refresh_policy(uri).await?;
        Self::require_member(&session.account, &policy)?;
        if policy.revoked {
            return Err(GroupError::Revoked {
                uri: uri.to_string(),
            });
        }
        self.ack(session, &policy, true, None).await?;
        self.refresh_policy(uri).await?;
        self.apply_duties(&session.account).await?;
        self.view(uri).await?.ok_or_else(|| GroupError::Gone {
            uri: uri.to_string(),
        })
    }

    /// Declines the latest version; remembered, so it is not offered again.
    pub async fn decline(
        &self,
        session: &Session,
        uri: &str,
        reason: Option<String>,
    ) -> Result<String, GroupError> {
        let policy = self.refresh_policy(uri).await?;
        Self::require_member(&session.account, &policy)?;
        if policy.revoked {
            return Err(GroupError::Revoked {
                uri: uri.to_string(),
            });
        }
        self.ack(session, &policy, false, reason).await?;
        Ok(policy.name)
    }

    /// Publishes an edited version (same record key, new CID) and the author's ack of it.
    /// The other members must ack it again; the old version stays in force meanwhile.
    pub async fn edit(
        &self,
        session: &Session,
        uri: &str,
        edit: &plan::CircleEdit,
    ) -> Result<CircleView, GroupError> {
        if edit.is_empty() {
            return Err(GroupError::NothingToEdit);
        }
        let (policy, rkey) = self.authored(session, uri).await?;
        let record = plan::apply_edit(&policy.record, edit);
        self.put_version(session, uri, &rkey, &policy, &record)
            .await?;
        self.after_publish(session, uri).await
    }

    /// Revokes a circle (`status: revoked`): every member's duties end.
    pub async fn revoke(
        &self,
        session: &Session,
        uri: &str,
        copies: Copies,
    ) -> Result<CopiesOutcome, GroupError> {
        let (policy, rkey) = self.authored(session, uri).await?;
        if !policy.revoked {
            let record = plan::revoked(&policy.record);
            self.put_version(session, uri, &rkey, &policy, &record)
                .await?;
        }
        self.refresh_policy(uri).await?;
        let outcome = self.end_duties(uri, copies).await?;
        self.withdraw_status(session, &rkey).await;
        Ok(outcome)
    }

    /// Leaves a circle: this node's acks of it are deleted from its repo, its duties end.
    pub async fn leave(
        &self,
        session: &Session,
        uri: &str,
        copies: Copies,
    ) -> Result<CopiesOutcome, GroupError> {
        let me = session.account.clone();
        let (author, _, rkey) =
            plan::split_uri(uri).ok_or_else(|| GroupError::BadUri(uri.to_string()))?;
        if author == me.did {
            return Err(GroupError::AuthorCannotLeave {
                uri: uri.to_string(),
            });
        }
        // The circle may be gone or revoked: leaving still withdraws the acks.
        let latest_cid = match self.refresh_policy(uri).await {
            Ok(p) => p.reference.cid,
            Err(GroupError::Gone { .. }) => String::new(),
            Err(e) => return Err(e),
        };
        // This node's own repo: the listing finds the keys to delete (no authority needed).
        for (ack_uri, value) in self.list_records(&me.did, nsid::POLICY_ACK).await? {
            let Some(ack_rkey) = plan::rkey_in(&ack_uri, &me.did, nsid::POLICY_ACK) else {
                continue;
            };
            if value.pointer("/policy/uri").and_then(Value::as_str) == Some(uri) {
                session.delete_record(nsid::POLICY_ACK, &ack_rkey).await?;
            }
        }
        let u = uri.to_string();
        self.syncer
            .store
            .write(move |c| db::set_answer(c, &u, &latest_cid, Answer::Left, None))
            .await??;
        let outcome = self.end_duties(uri, copies).await?;
        self.withdraw_status(session, &rkey).await;
        // Read the acks again so this node's view shows the withdrawal.
        let _ = self.refresh_policy(uri).await;
        Ok(outcome)
    }

    /// The latest version of a circle this node wrote, and its record key.
    async fn authored(&self, session: &Session, uri: &str) -> Result<(Policy, String), GroupError> {
        let (author, _, rkey) =
            plan::split_uri(uri).ok_or_else(|| GroupError::BadUri(uri.to_string()))?;
        if author != session.account.did {
            let shown = self.handle_of(&author).await.unwrap_or(author);
            return Err(GroupError::NotAuthor {
                uri: uri.to_string(),
                author: shown,
            });
        }
        Ok((self.refresh_policy(uri).await?, rkey))
    }

    async fn put_version(
        &self,
        session: &Session,
        uri: &str,
        rkey: &str,
        current: &Policy,
        record: &PolicyRecord,
    ) -> Result<StrongRef, GroupError> {
        let value = to_value(record)?;
        check_value(&json!({"uri": uri, "value": value})).map_err(GroupError::InvalidPolicy)?;
        Ok(session
            .put_record(nsid::POLICY, rkey, &value, Some(&current.reference.cid))
            .await?)
    }

    /// Deletes this node's status record for a circle it no longer serves (best effort).
    async fn withdraw_status(&self, session: &Session, rkey: &str) {
        if let Err(e) = session.delete_record(nsid::POLICY_STATUS, rkey).await {
            tracing::debug!(error = %e, "no status record to delete");
        }
        let r = rkey.to_string();
        let _ = self
            .syncer
            .store
            .write(move |c| db::forget_write(c, nsid::POLICY_STATUS, &r))
            .await;
    }

    /// Remembers an account to look for invitations in.
    pub async fn add_contact(&self, who: &str) -> Result<(String, Option<String>), GroupError> {
        let (doc, handle) = self.syncer.resolver.resolve_account_named(who).await?;
        let (d, h) = (doc.did.clone(), handle.clone());
        self.syncer
            .store
            .write(move |c| db::add_contact(c, &d, h.as_deref(), "manual"))
            .await??;
        Ok((doc.did, handle))
    }

    /// The versions in force of the circles this node is in (and has not left).
    pub async fn in_force(&self) -> Result<Vec<Policy>, GroupError> {
        let circles = self.assessed().await?;
        Ok(circles
            .iter()
            .filter(|a| !a.left)
            .filter_map(|a| a.in_force_policy().cloned())
            .collect())
    }

    /// How long an account's PDS may stay unreachable before it counts as gone: the
    /// shortest offline grace period of the circles in force (`None` outside circles).
    pub async fn pds_grace(&self) -> Option<std::time::Duration> {
        let policies = self.in_force().await.ok()?;
        policies
            .iter()
            .map(|p| std::time::Duration::from_secs(p.compliance.offline_grace_period.secs()))
            .min()
    }

    /// What a compliance report of one circle starts from: the version in force (else the
    /// latest) and the verified acks. `None` for a circle this node does not know.
    pub async fn report_basis(
        &self,
        uri: &str,
    ) -> Result<Option<(Policy, Vec<AckObservation>)>, GroupError> {
        let circles = self.assessed().await?;
        let Some(a) = circles.iter().find(|a| a.uri == uri) else {
            return Ok(None);
        };
        let Some(policy) = a.in_force_policy().or_else(|| a.latest_policy()).cloned() else {
            return Ok(None);
        };
        let u = uri.to_string();
        let acks = self.syncer.store.read(move |c| db::acks(c, &u)).await?;
        Ok(Some((policy, acks)))
    }

    /// The circles this node has answered or written (URIs), for reports.
    pub async fn known_circles(&self) -> Result<Vec<String>, GroupError> {
        Ok(self.list().await?.into_iter().map(|c| c.uri).collect())
    }

    /// One record of `did`'s repo, read with a proof against its signed commit and decoded.
    /// `Ok(None)`: the signed tree proves it absent (or it does not decode as `T`).
    pub async fn verified<T: serde::de::DeserializeOwned>(
        &self,
        did: &str,
        collection: &str,
        rkey: &str,
    ) -> Result<Option<(String, T)>, GroupError> {
        let r = self.syncer.verified_record(did, collection, rkey).await?;
        let (Some(cid), Some(value)) = (r.cid, r.value) else {
            return Ok(None);
        };
        Ok(serde_json::from_value(value)
            .ok()
            .map(|v| (cid.to_string(), v)))
    }

    /// The HTTP endpoint this node advertises in its `org.p2pds.peer` record, if any.
    pub async fn endpoint(&self) -> Result<Option<String>, GroupError> {
        Ok(self
            .syncer
            .store
            .read(|c| db::meta(c, ENDPOINT_KEY))
            .await?)
    }

    /// Sets (or with `None` clears) the endpoint to advertise; the next heartbeat carries it.
    pub async fn set_endpoint(&self, endpoint: Option<&str>) -> Result<(), GroupError> {
        if let Some(e) = endpoint {
            plan::check_endpoint(e).map_err(GroupError::BadEndpoint)?;
        }
        let e = endpoint.map(str::to_string);
        self.syncer
            .store
            .write(move |c| {
                match &e {
                    Some(e) => db::set_meta(c, ENDPOINT_KEY, e)?,
                    None => db::delete_meta(c, ENDPOINT_KEY)?,
                }
                // A change the user made goes out with the next heartbeat, not after the
                // rate limit's interval.
                db::forget_write(c, nsid::PEER, "self")
            })
            .await??;
        Ok(())
    }

    // ---- status and heartbeat ----------------------------------------------------------------

    /// Writes this node's status record for every circle in force (what it holds for it and
    /// the verification results it is given for that circle's policy, oldest first) and its
    /// heartbeat, each only when [`plan::should_publish`] allows. The results are the caller's
    /// to read (`verify::published_results`): circles publish them, they do not compute them.
    pub async fn publish(
        &self,
        session: &Session,
        results: &PublishedResults,
    ) -> Result<PublishReport, GroupError> {
        let me = session.account.clone();
        let circles = self.assessed().await?;
        let duties = Self::duties(&me, &circles);
        let repos = self.syncer.store.read(store::list_repos).await?;
        let now = now();
        let mut report = PublishReport::default();
        let mut in_any = false;
        for a in &circles {
            let (Some(subjects), Some(policy)) = (duties.get(&a.uri), a.in_force_policy()) else {
                continue;
            };
            in_any = true;
            let Some((_, _, rkey)) = plan::split_uri(&a.uri) else {
                continue;
            };
            let holdings: Vec<HoldingRecord> = repos
                .iter()
                .filter(|r| subjects.contains(&r.did))
                .filter_map(|r| {
                    Some(HoldingRecord {
                        did: r.did.clone(),
                        rev: r.rev.clone()?,
                        data: r.data.clone()?,
                        synced_at: r.last_sync_at.clone()?,
                        bytes: Some(r.bytes),
                    })
                })
                .collect();
            let pinned = StrongRef {
                uri: a.uri.clone(),
                cid: policy.reference.cid.clone(),
            };
            let verifications: Vec<VerificationResultRecord> =
                results.get(&a.uri).cloned().unwrap_or_default();
            let digest = digest(&json!({
                "policy": pinned,
                "holdings": holdings.iter().map(|h| json!([h.did, h.rev, h.data, h.bytes])).collect::<Vec<_>>(),
                "verifications": verifications.iter().map(|v| json!([v.target, v.subject, v.layer, v.outcome, v.at])).collect::<Vec<_>>(),
            }));
            let r = rkey.clone();
            let last = self
                .syncer
                .store
                .read(move |c| db::last_write(c, nsid::POLICY_STATUS, &r))
                .await?;
            if !plan::should_publish(last.as_ref(), &digest, now, self.rate) {
                report.skipped += 1;
                continue;
            }
            let status = StatusRecord {
                lex_type: nsid::POLICY_STATUS.into(),
                policy: pinned,
                holdings,
                verifications,
                updated_at: now.to_string(),
            };
            session
                .put_record(nsid::POLICY_STATUS, &rkey, &to_value(&status)?, None)
                .await?;
            let w = LastWrite { digest, at: now };
            self.syncer
                .store
                .write(move |c| db::set_last_write(c, nsid::POLICY_STATUS, &rkey, &w))
                .await??;
            report.statuses.push(a.uri.clone());
        }
        if in_any {
            let endpoint = self.endpoint().await?;
            let digest = digest(&json!({"software": SOFTWARE, "endpoint": endpoint}));
            let last = self
                .syncer
                .store
                .read(|c| db::last_write(c, nsid::PEER, "self"))
                .await?;
            if plan::should_publish(last.as_ref(), &digest, now, self.rate) {
                let peer = PeerRecord {
                    lex_type: nsid::PEER.into(),
                    software: SOFTWARE.into(),
                    endpoint,
                    capacity_bytes: None,
                    heartbeat_at: now.to_string(),
                };
                session
                    .put_record(nsid::PEER, "self", &to_value(&peer)?, None)
                    .await?;
                let w = LastWrite { digest, at: now };
                self.syncer
                    .store
                    .write(move |c| db::set_last_write(c, nsid::PEER, "self", &w))
                    .await??;
                report.heartbeat = true;
            }
        }
        Ok(report)
    }
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, GroupError> {
    serde_json::to_value(v).map_err(|e| {
        GroupError::Store(StoreError::Io(std::io::Error::other(format!(
            "encoding a record: {e}"
        ))))
    })
}

fn digest(v: &Value) -> String {
    let bytes = Sha256::digest(v.to_string().as_bytes());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::lifecycle::Phase;
    use crate::policy::records::AckRecord;

    const URI: &str = "at://did:plc:alice/org.p2pds.policy/3k";

    fn version(cid_tag: u32, min_copies: u32, seen: &str) -> db::VersionRow {
        let mut record = plan::new_policy_record(&plan::NewCircle {
            name: "c".into(),
            description: None,
            author: "did:plc:alice".into(),
            members: vec!["did:plc:bob".into(), "did:plc:carol".into()],
            min_copies: Some(min_copies),
            rules: Default::default(),
            now: Timestamp::parse("2026-03-01T00:00:00Z").unwrap(),
        });
        record.description = Some(format!("v{cid_tag}"));
        let value = serde_json::to_value(&record).unwrap();
        db::VersionRow {
            uri: URI.into(),
            cid: crate::policy::version::record_cid(&value).unwrap(),
            author: "did:plc:alice".into(),
            record: value,
            first_seen_at: seen.into(),
        }
    }

    fn ack(repo: &str, cid: &str, at: &str) -> AckObservation {
        AckObservation {
            uri: format!("at://{repo}/org.p2pds.policy.ack/{at}"),
            cid: None,
            value: AckRecord {
                lex_type: nsid::POLICY_ACK.into(),
                policy: StrongRef {
                    uri: URI.into(),
                    cid: cid.into(),
                },
                accepted: true,
                reason: None,
                created_at: at.into(),
            },
        }
    }

    fn row(latest: &str) -> db::PolicyRow {
        db::PolicyRow {
            uri: URI.into(),
            author: "did:plc:alice".into(),
            latest_cid: Some(latest.into()),
        }
    }

    #[test]
    fn an_edit_keeps_the_old_version_in_force_until_everyone_acks_it() {
        let v1 = version(1, 2, "2026-03-01T00:00:00.000Z");
        let v2 = version(2, 1, "2026-03-02T00:00:00.000Z");
        let now = Timestamp::parse("2026-03-02T01:00:00Z").unwrap();
        let mut acks = vec![
            ack("did:plc:alice", &v1.cid, "2026-03-01T00:01:00Z"),
            ack("did:plc:bob", &v1.cid, "2026-03-01T00:02:00Z"),
            ack("did:plc:carol", &v1.cid, "2026-03-01T00:03:00Z"),
            ack("did:plc:alice", &v2.cid, "2026-03-02T00:01:00Z"),
        ];
        let a = assess(
            &row(&v2.cid),
            vec![v1.clone(), v2.clone()],
            &acks,
            vec![],
            now,
        );
        assert_eq!(
            a.latest.as_ref().map(|(_, l)| l.phase),
            Some(Phase::Pending)
        );
        assert_eq!(
            a.in_force_policy().map(|p| p.reference.cid.clone()),
            Some(v1.cid.clone())
        );
        acks.push(ack("did:plc:bob", &v2.cid, "2026-03-02T00:02:00Z"));
        acks.push(ack("did:plc:carol", &v2.cid, "2026-03-02T00:03:00Z"));
        let a = assess(&row(&v2.cid), vec![v1, v2.clone()], &acks, vec![], now);
        assert_eq!(
            a.in_force_policy().map(|p| p.reference.cid.clone()),
            Some(v2.cid)
        );
    }

    #[test]
    fn a_forged_ack_in_another_repo_does_not_count() {
        let v1 = version(1, 2, "2026-03-01T00:00:00.000Z");
        let now = Timestamp::parse("2026-03-02T01:00:00Z").unwrap();
        // Carol's repo holds two acks: her own and one "for bob".
        let acks = vec![
            ack("did:plc:alice", &v1.cid, "2026-03-01T00:01:00Z"),
            ack("did:plc:carol", &v1.cid, "2026-03-01T00:02:00Z"),
            ack("did:plc:carol", &v1.cid, "2026-03-01T00:03:00Z"),
        ];
        let a = assess(&row(&v1.cid), vec![v1], &acks, vec![], now);
        let (_, lc) = a.latest.unwrap();
        assert_eq!(lc.phase, Phase::Pending);
        let bob = lc.acks.iter().find(|m| m.member == "did:plc:bob").unwrap();
        assert_eq!(bob.state, AckState::Missing);
        assert!(a.in_force.is_none());
    }

    #[test]
    fn leaving_is_the_last_answer() {
        let v1 = version(1, 2, "2026-03-01T00:00:00.000Z");
        let now = Timestamp::parse("2026-03-02T01:00:00Z").unwrap();
        let answers = vec![
            (v1.cid.clone(), Answer::Accepted),
            (v1.cid.clone(), Answer::Left),
        ];
        let a = assess(&row(&v1.cid), vec![v1], &[], answers, now);
        assert!(a.left);
        let me = Account {
            did: "did:plc:bob".into(),
            handle: None,
            pds: String::new(),
        };
        assert!(Circles::duties(&me, &[a]).is_empty());
    }
}
