//! Peer verification: proving that circle members really hold the copies they promised
//! (DESIGN §3–§4, seed §2–§6).
//!
//! A round ([`Verifier::round`]):
//! 1. answers the record challenges other members addressed to this node;
//! 2. resolves the challenges this node issued (the answer in the target's repo, read with a
//!    proof, against the digest this node computed from its own copy);
//! 3. for each copy the circles in force ask this node to verify (`policy::obligations`), checks
//!    the target through its advertised endpoint, layer by layer (`layers`), with unpredictable
//!    samples (`sample`); when the target has no endpoint or does not answer, issues a record
//!    challenge instead (`challenge`);
//! 4. optionally self-checks this node's own copies (`sync::selfcheck`) and repairs them;
//! 5. publishes the status record, which now carries the recent results, so every member
//!    computes the same compliance from the same public records (`report`).
//!
//! Every result is stored (`db`): time, verifier, target, subject, layer, outcome, latency,
//! reason. All results of one copy in one round share one time: the policy engine counts
//! rounds, not layers.
//!
//! Invariants: nothing a peer says is trusted (blocks are hashed, commits' signatures checked,
//! proofs verified); a node that does not answer is `unreachable`, never `fail` (the policy's
//! uptime rules judge absence); the copy this node checks against is its own verified copy,
//! brought up to date first.

pub mod challenge;
pub mod db;
pub mod history;
pub mod layers;
pub mod report;
pub mod sample;
pub mod whole;

/// `group_meta` key of the verifier's secret rotation seed (`sample::Rotation`).
const ROTATION_SEED: &str = "verify.rotationSeed";
/// `group_meta` key prefix of each copy's rotation cursor (then `target|subject`).
const ROTATION_CURSOR: &str = "verify.rotation.";

/// 32 bytes from 64 hex characters.
fn hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use cid::Cid;
use serde::Serialize;
use serde_json::json;

use crate::crypto::PublicKey;
use crate::group::plan;
use crate::group::{Circles, GroupError, PublishReport, PublishedResults};
use crate::policy::obligations::{self, VerifyDuty};
use crate::policy::observations::Outcome;
use crate::policy::records::{
    nsid, ChallengeRecord, ChallengeResponseRecord, PeerRecord, StatusRecord, StrongRef,
};
use crate::policy::time::{Duration, Timestamp};
use crate::repo::mst::MstError;
use crate::session::{Session, SessionError};
use crate::store::{self, RepoRow, Store, StoreError};
use crate::sync::{selfcheck, SyncError};
use db::{IssuedRow, ResultRow, Via};
use layers::{Check, Head};

/// Verification rounds per copy a status record carries (enough for the failure streaks of
/// any policy with the default `maxConsecutiveFailures`, and a little history).
pub const PUBLISHED_ROUNDS: usize = 8;

/// What this node's status records publish, for every circle it knows (by policy URI): the
/// results of the last [`PUBLISHED_ROUNDS`] rounds of every copy it verified under that
/// policy, oldest first. Given to [`Circles::publish`], which does not read these tables.
pub async fn published_results(store: &Store) -> Result<PublishedResults, StoreError> {
    store
        .read(|c| {
            let mut out = PublishedResults::new();
            for p in crate::group::db::policies(c)? {
                let rows = db::recent_for_policy(c, &p.uri, PUBLISHED_ROUNDS)?;
                out.insert(p.uri, rows.iter().map(db::to_record).collect());
            }
            Ok(out)
        })
        .await
}

/// How long a node must keep what it said it held: history samples come from holdings
/// published within this window.
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// The shortest wait between two rounds of one copy, even when escalated.
const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// Record paths checked per layer-3 round (each is a full proof).
const MAX_PATHS: usize = 10;
/// Blocks named by one challenge (the lexicon's limit is 1000).
const MAX_CHALLENGE_BLOCKS: usize = 1000;
/// Challenges answered in one round, at most (each is a write to this node's repo).
const MAX_ANSWERS: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("this node's own copy of {did} is damaged ({source}): run `p2pds verify --once` to self-check and repair it")]
    OwnCopy { did: String, source: MstError },
    #[error(
        "this node holds no copy of {0} yet to check others against: it will after its next sync"
    )]
    NotHeld(String),
    #[error("{0} is not a circle this node knows: see `p2pds circle list`")]
    UnknownCircle(String),
}

/// What one round should do.
#[derive(Debug, Clone, Default)]
pub struct RoundOptions {
    /// Only the copies held by this node (its account or node DID).
    pub peer: Option<String>,
    /// Only the copies whose next check is due (the schedule); otherwise all.
    pub only_due: bool,
    /// Also self-check this node's own copies.
    pub self_check: bool,
}

/// A challenge this node published in this round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedView {
    pub uri: String,
    pub target: String,
    pub subject: String,
    pub blocks: usize,
    pub expires_at: String,
}

/// A challenge this node answered (or could not) in this round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnsweredView {
    pub challenge: String,
    pub verifier: String,
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a round did: the `p2pds verify --json` document.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoundReport {
    pub at: String,
    /// Results stored in this round (checks through endpoints and resolved challenges).
    pub results: Vec<ResultRow>,
    pub challenges_issued: Vec<IssuedView>,
    pub challenges_answered: Vec<AnsweredView>,
    pub self_checks: Vec<selfcheck::SelfCheck>,
    /// Older blocks of repaired copies brought back from friends.
    pub history_repairs: Vec<history::HistoryRepair>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<PublishReport>,
    /// What could not be done, in words (the round goes on without it).
    pub warnings: Vec<String>,
}

/// A holding a node published: (rev, data root).
type Claim = (String, String);

/// Blocks to ask a peer for.
struct Plan {
    /// Blocks this node holds (history and its own samples).
    cids: Vec<Cid>,
    /// Random walks down the peer's tree: (data root, walks), when this node lacks that tree.
    walk: Option<(Cid, usize)>,
}

/// Verification for one node.
#[derive(Clone, Debug)]
pub struct Verifier {
    pub circles: Circles,
    /// How long a challenged node has to answer; default: the policy's verification interval.
    pub challenge_ttl: Option<Duration>,
    /// Stored blocks re-hashed per account by a self-check.
    pub self_check_sample: usize,
}

fn now() -> Timestamp {
    Timestamp::from_millis(chrono::Utc::now().timestamp_millis())
}

fn rkey_of(uri: &str) -> Option<String> {
    plan::split_uri(uri).map(|(_, _, rkey)| rkey)
}

impl Verifier {
    pub fn new(circles: Circles) -> Self {
        Verifier {
            circles,
            challenge_ttl: None,
            self_check_sample: 64,
        }
    }

    fn http(&self) -> &reqwest::Client {
        &self.circles.syncer.http
    }

    /// One verification round (see the module documentation).
    pub async fn round(
        &self,
        session: &Session,
        opts: &RoundOptions,
    ) -> Result<RoundReport, VerifyError> {
        let me = session.account.did.clone();
        let mut report = RoundReport {
            at: now().to_string(),
            ..Default::default()
        };
        if let Err(e) = self.circles.refresh(false).await {
            report
                .warnings
                .push(format!("could not bring the circles up to date: {e}"));
        }
        let policies = self.circles.in_force().await?;
        self.answer_challenges(session, &me, &policies, &mut report)
            .await?;
        self.resolve_challenges(session, &me, opts.peer.as_deref(), &mut report)
            .await?;
        for policy in &policies {
            let Some(uri) = policy.reference.uri.clone() else {
                continue;
            };
            let Some(ob) = obligations::for_member(policy, &me, &BTreeMap::new()) else {
                continue;
            };
            for duty in &ob.verify {
                if duty.target_node == me || duty.target == me {
                    continue;
                }
                if let Some(p) = &opts.peer {
                    if *p != duty.target && *p != duty.target_node {
                        continue;
                    }
                }
                if opts.only_due && !self.is_due(duty).await? {
                    continue;
                }
                let policy_ref = StrongRef {
                    uri: uri.clone(),
                    cid: policy.reference.cid.clone(),
                };
                match self.verify_copy(session, &me, &policy_ref, duty).await {
                    Ok((mut rows, issued)) => {
                        report.results.append(&mut rows);
                        report.challenges_issued.extend(issued);
                    }
                    Err(e) => report.warnings.push(format!(
                        "could not check {}'s copy of {}: {e}",
                        duty.target, duty.subject
                    )),
                }
            }
        }
        if opts.self_check {
            match selfcheck::run(&self.circles.syncer, self.self_check_sample).await {
                Ok(checks) => report.self_checks = checks,
                Err(e) => report.warnings.push(format!("self-check: {e}")),
            }
            // The PDS gave back the current tree; the history it no longer has comes from
            // the friends who hold the same account, and so does the current tree when the
            // PDS could not repair it.
            let repaired: Vec<String> = report
                .self_checks
                .iter()
                .filter(|c| c.repaired || c.repair_error.is_some())
                .map(|c| c.did.clone())
                .collect();
            for did in repaired {
                match self.repair_history(&did).await {
                    Ok(h) => report.history_repairs.push(h),
                    Err(e) => report
                        .warnings
                        .push(format!("could not restore the history of {did}: {e}")),
                }
            }
        }
        let published = match published_results(&self.circles.syncer.store).await {
            Ok(results) => self.circles.publish(session, &results).await,
            Err(e) => Err(GroupError::from(e)),
        };
        match published {
            Ok(p) => report.published = Some(p),
            Err(e) => report
                .warnings
                .push(format!("could not publish this node's status: {e}")),
        }
        Ok(report)
    }

    /// Whether a copy's next check is due: one interval after its last round (a quarter of it
    /// while the last round failed: escalation), spread by a stable jitter of ±10% so a circle's
    /// nodes do not all check at once. A copy with an open challenge waits for it.
    async fn is_due(&self, duty: &VerifyDuty) -> Result<bool, VerifyError> {
        let (t, s) = (duty.target_node.clone(), duty.subject.clone());
        let (last, open) = self
            .circles
            .syncer
            .store
            .read(move |c| Ok((db::last_round(c, &t, &s)?, db::challenge_open(c, &t, &s)?)))
            .await?;
        if open {
            return Ok(false);
        }
        let Some((at, failed)) = last else {
            return Ok(true);
        };
        let Ok(at) = Timestamp::parse(&at) else {
            return Ok(true);
        };
        Ok(now() >= next_due(at, duty, failed))
    }

    /// Our current verified copy of `subject` (added and synced first when needed) and the
    /// key its commits are signed with.
    async fn current_copy(&self, subject: &str) -> Result<(RepoRow, PublicKey), VerifyError> {
        let syncer = &self.circles.syncer;
        let s = subject.to_string();
        let held = syncer.store.read(move |c| store::get_repo(c, &s)).await?;
        if held.is_none() {
            // The account's owner checks the copies of its own account: it needs a copy too.
            let s = subject.to_string();
            syncer
                .store
                .write(move |c| store::add_repo(c, &s, None, None))
                .await??;
        }
        if let Err(e) = syncer.sync_repo(subject, &|_| {}).await {
            tracing::warn!(%subject, error = %e, "could not bring the copy up to date; checking against the copy held");
        }
        let s = subject.to_string();
        let row = syncer
            .store
            .read(move |c| store::get_repo(c, &s))
            .await?
            .filter(|r| r.head.is_some())
            .ok_or_else(|| VerifyError::NotHeld(subject.to_string()))?;
        let key = syncer
            .resolver
            .resolve_did(subject, false)
            .await
            .map_err(SyncError::from)?
            .signing_key
            .ok_or_else(|| SyncError::NoKey {
                did: subject.to_string(),
            })?;
        Ok((row, key))
    }

    /// Checks one member's copy of one account, through its endpoint or by a challenge.
    async fn verify_copy(
        &self,
        session: &Session,
        me: &str,
        policy: &StrongRef,
        duty: &VerifyDuty,
    ) -> Result<(Vec<ResultRow>, Option<IssuedView>), VerifyError> {
        let (node, subject) = (duty.target_node.as_str(), duty.subject.as_str());
        self.remember_claims(node, &policy.uri).await;
        let (repo, key) = self.current_copy(subject).await?;
        let head = head_of(&repo).ok_or_else(|| VerifyError::NotHeld(subject.to_string()))?;
        let endpoint = match self
            .circles
            .verified::<PeerRecord>(node, nsid::PEER, "self")
            .await
        {
            Ok(found) => found.and_then(|(_, p)| p.endpoint),
            Err(e) => {
                tracing::warn!(%node, error = %e, "could not read the peer record");
                None
            }
        };
        let at = now().to_string();
        let mut rows = Vec::new();
        let mut challenge = endpoint.is_none();
        if let Some(base) = endpoint {
            let checks = self
                .endpoint_checks(base.trim_end_matches('/'), &repo, &key, &head, duty)
                .await?;
            challenge = checks.iter().all(|c| c.outcome == Outcome::Unreachable);
            rows = checks
                .into_iter()
                .map(|c| ResultRow {
                    at: at.clone(),
                    verifier: me.to_string(),
                    target: node.to_string(),
                    subject: subject.to_string(),
                    layer: c.layer,
                    outcome: c.outcome,
                    latency_ms: Some(c.latency_ms),
                    reason: c.reason,
                    via: Via::Endpoint,
                    policy: Some(policy.uri.clone()),
                    needs: c.needs,
                })
                .collect();
            let stored = rows.clone();
            self.circles
                .syncer
                .store
                .write(move |c| {
                    let tx = c.transaction()?;
                    for r in &stored {
                        db::insert_result(&tx, r)?;
                    }
                    tx.commit()?;
                    Ok::<_, StoreError>(())
                })
                .await??;
        }
        let mut issued = None;
        if challenge {
            let (t, s) = (node.to_string(), subject.to_string());
            let open = self
                .circles
                .syncer
                .store
                .read(move |c| db::challenge_open(c, &t, &s))
                .await?;
            if !open {
                issued = Some(self.issue(session, policy, duty, &repo, &head).await?);
            }
        }
        Ok((rows, issued))
    }

    /// Reads the holdings `node` published for a circle and remembers them: what it said it
    /// held, it must still hold within [`RETENTION`].
    async fn remember_claims(&self, node: &str, policy_uri: &str) {
        let Some(rkey) = rkey_of(policy_uri) else {
            return;
        };
        let status = match self
            .circles
            .verified::<StatusRecord>(node, nsid::POLICY_STATUS, &rkey)
            .await
        {
            Ok(Some((_, s))) if s.policy.uri == policy_uri => s,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(%node, error = %e, "could not read the status record");
                return;
            }
        };
        let node = node.to_string();
        let at = now().to_string();
        let result = self
            .circles
            .syncer
            .store
            .write(move |c| db::remember_status(c, &node, &status, &at))
            .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => tracing::warn!(error = %e, "could not remember holdings"),
        }
    }

    /// The layers the policy asks for, against the peer's endpoint `base`.
    async fn endpoint_checks(
        &self,
        base: &str,
        repo: &RepoRow,
        key: &PublicKey,
        head: &Head,
        duty: &VerifyDuty,
    ) -> Result<Vec<Check>, VerifyError> {
        let http = self.http();
        let subject = duty.subject.as_str();
        let (root, peer) = layers::commit_root(http, base, subject, key, head).await;
        let mut out = Vec::new();
        let wants = |l: u8| duty.layers.contains(&l);
        if wants(0) {
            out.push(root.clone());
        }
        let unreachable = root.outcome == Outcome::Unreachable;
        let k = usize::try_from(duty.sample_size).unwrap_or(20).max(1);
        if wants(1) {
            let check = match (&peer, unreachable) {
                (_, true) => copy_of(&root, 1),
                (None, false) => Check {
                    layer: 1,
                    outcome: Outcome::Fail,
                    latency_ms: 0,
                    reason: Some(format!(
                        "no verified commit to sample: {}",
                        root.reason.clone().unwrap_or_default()
                    )),
                    needs: None,
                },
                (Some(p), false) => {
                    let plan = self
                        .sample_blocks(repo, Some((p.data, p.rev.clone())), &duty.target_node, k)
                        .await?;
                    let mut parts = vec![layers::blocks(http, base, &plan.cids).await];
                    if let Some((root, n)) = plan.walk {
                        parts.push(layers::walk(http, base, root, n).await);
                    }
                    layers::merge(1, &parts)
                }
            };
            out.push(check);
        }
        if wants(2) {
            // The tree the peer's verified latest commit names (else the newest held here).
            let own = repo.data.as_deref().and_then(|d| d.parse::<Cid>().ok());
            let check = match (unreachable, peer.as_ref().map(|p| p.data).or(own)) {
                (true, _) => copy_of(&root, 2),
                (false, None) => Check {
                    layer: 2,
                    outcome: Outcome::Unreachable,
                    latency_ms: 0,
                    reason: Some("this node holds no copy to compare with yet".into()),
                    needs: None,
                },
                (false, Some(data)) => {
                    let store = &self.circles.syncer.store;
                    whole::check(http, base, subject, store, repo.id, data)
                        .await
                        .0
                }
            };
            out.push(check);
        }
        if wants(3) {
            let check = if unreachable {
                copy_of(&root, 3)
            } else {
                let repo_id = repo.id;
                let n = k.min(MAX_PATHS);
                let paths = self
                    .circles
                    .syncer
                    .store
                    .read(move |c| {
                        let mut out = Vec::new();
                        for (collection, rkey) in sample::records(c, repo_id, n)? {
                            let cid = held_record(c, repo_id, &collection, &rkey)?;
                            out.push((collection, rkey, cid));
                        }
                        Ok(out)
                    })
                    .await?;
                layers::record_proofs(http, base, subject, key, &head.cid, &paths).await
            };
            out.push(check);
        }
        Ok(out)
    }

    /// What to ask for: about half of `k` from the history `node` said it held (record blocks
    /// gone from the tree since: a relay of the PDS cannot serve them); the rest from the tree
    /// the peer is at (`peer`: its data root and rev) when this node holds that tree, else as
    /// random walks down the peer's tree (`Plan::walk`); for a challenge (`peer` unknown), from
    /// the tree it last said it held when this node has it, else lasting record blocks.
    async fn sample_blocks(
        &self,
        repo: &RepoRow,
        peer: Option<(Cid, String)>,
        node: &str,
        k: usize,
    ) -> Result<Plan, VerifyError> {
        let (repo_id, subject, node) = (repo.id, repo.did.clone(), node.to_string());
        let own = repo
            .data
            .as_deref()
            .and_then(|d| d.parse::<Cid>().ok())
            .ok_or_else(|| VerifyError::NotHeld(repo.did.clone()))?;
        let since = now().minus(RETENTION).to_string();
        let seed = self.rotation_seed().await?;
        let cursor_key = format!("{ROTATION_CURSOR}{node}|{subject}");
        let ck = cursor_key.clone();
        let rotation = sample::Rotation::new(&seed, &node, &subject);
        let (plan, cursor) = self
            .circles
            .syncer
            .store
            .read(move |c| {
                let cursor = crate::group::db::meta(c, &ck)?
                    .and_then(|h| hex32(&h))
                    .map(sample::Position);
                let held = |cid: &Cid| -> Result<bool, StoreError> {
                    Ok(crate::export::get_block(c, repo_id, cid)?.is_some())
                };
                let claims = db::claims(c, &node, &subject, &since)?;
                let (current, older): (Option<(Cid, String)>, Vec<Claim>) = match &peer {
                    Some((root, rev)) => (
                        Some((*root, rev.clone())),
                        claims.into_iter().filter(|(r, _)| r < rev).collect(),
                    ),
                    None => {
                        let mut it = claims.into_iter();
                        let newest = it
                            .next()
                            .and_then(|(rev, d)| d.parse::<Cid>().ok().map(|d| (d, rev)));
                        (newest, it.collect())
                    }
                };
                let mut history = Vec::new();
                for (_, data) in older {
                    let Ok(old) = data.parse::<Cid>() else {
                        continue;
                    };
                    // On top of the current tree's `k` (which the detection target counts),
                    // within what one challenge may name.
                    let extra = (k / 2).min(MAX_CHALLENGE_BLOCKS.saturating_sub(k));
                    match sample::history_blocks(c, repo_id, old, own, extra) {
                        Ok(h) if !h.is_empty() => {
                            history = h;
                            break;
                        }
                        // An old tree this node no longer has whole: try an older claim.
                        _ => continue,
                    }
                }
                let rest = k;
                let mut plan = Plan {
                    cids: history,
                    walk: None,
                };
                let mut next_cursor = None;
                match (current, peer.is_some()) {
                    // A tree held here: the next blocks of this copy's rotation, so every
                    // block is checked within ⌈N / k⌉ rounds, in an order the peer can't know.
                    (Some((root, _)), _) if held(&root)? => {
                        match sample::tree_cids(c, repo_id, root) {
                            Ok(all) => {
                                let turn = rotation.order(&all).next(cursor, rest);
                                next_cursor = turn.cursor;
                                plan.cids.extend(turn.cids);
                            }
                            Err(e) => return Ok(Err(e)),
                        }
                    }
                    (Some((root, _)), true) => plan.walk = Some((root, rest)),
                    _ => plan.cids.extend(sample::lasting_records(c, repo_id, rest)?),
                }
                use rand::seq::SliceRandom;
                plan.cids.shuffle(&mut rand::rngs::OsRng);
                Ok(Ok((plan, next_cursor)))
            })
            .await?
            .map_err(|source| VerifyError::OwnCopy {
                did: repo.did.clone(),
                source,
            })?;
        if let Some(sample::Position(p)) = cursor {
            let text: String = p.iter().map(|b| format!("{b:02x}")).collect();
            self.circles
                .syncer
                .store
                .write(move |c| crate::group::db::set_meta(c, &cursor_key, &text))
                .await??;
        }
        Ok(plan)
    }

    /// This verifier's secret rotation seed (`group_meta`), made once from the operating
    /// system's random source and never published.
    async fn rotation_seed(&self) -> Result<[u8; sample::SEED_BYTES], VerifyError> {
        let store = &self.circles.syncer.store;
        let held = store
            .read(|c| crate::group::db::meta(c, ROTATION_SEED))
            .await?
            .and_then(|h| hex32(&h));
        if let Some(seed) = held {
            return Ok(seed);
        }
        let seed = sample::new_seed();
        let text: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        // Two rounds at once keep whichever seed was written first.
        store
            .write(move |c| {
                if crate::group::db::meta(c, ROTATION_SEED)?.is_none() {
                    crate::group::db::set_meta(c, ROTATION_SEED, &text)?;
                }
                crate::group::db::meta(c, ROTATION_SEED)
            })
            .await??
            .and_then(|h| hex32(&h))
            .ok_or_else(|| VerifyError::from(StoreError::Io(std::io::Error::other("no seed"))))
    }

    /// Publishes a challenge for `duty` and remembers the digest to expect.
    async fn issue(
        &self,
        session: &Session,
        policy: &StrongRef,
        duty: &VerifyDuty,
        repo: &RepoRow,
        head: &Head,
    ) -> Result<IssuedView, VerifyError> {
        let k = usize::try_from(duty.sample_size)
            .unwrap_or(20)
            .clamp(1, MAX_CHALLENGE_BLOCKS);
        let cids = self
            .sample_blocks(repo, None, &duty.target_node, k)
            .await?
            .cids;
        if cids.is_empty() {
            return Err(VerifyError::NotHeld(repo.did.clone()));
        }
        let nonce = challenge::nonce();
        let (repo_id, n, list) = (repo.id, nonce.clone(), cids.clone());
        let expected = self
            .circles
            .syncer
            .store
            .read(move |c| challenge::digest_from_store(c, repo_id, &n, &list))
            .await?
            .map_err(|missing| VerifyError::OwnCopy {
                did: repo.did.clone(),
                source: MstError::MissingBlock(missing.to_string()),
            })?;
        let issued_at = now();
        let ttl = self.challenge_ttl.unwrap_or(duty.interval);
        let expires_at = issued_at.plus(ttl);
        let record = ChallengeRecord {
            lex_type: nsid::CHALLENGE.into(),
            target: duty.target_node.clone(),
            subject: duty.subject.clone(),
            policy: Some(policy.clone()),
            commit: head.cid.to_string(),
            nonce,
            cids: Some(cids.iter().map(Cid::to_string).collect()),
            paths: None,
            expires_at: expires_at.to_string(),
            created_at: issued_at.to_string(),
        };
        let value = serde_json::to_value(&record).unwrap_or_else(|_| json!({}));
        let written = session.create_record(nsid::CHALLENGE, &value).await?;
        let row = IssuedRow {
            uri: written.uri.clone(),
            cid: written.cid.clone(),
            target: duty.target_node.clone(),
            subject: duty.subject.clone(),
            policy: Some(policy.uri.clone()),
            layer: 1,
            expected,
            issued_at: issued_at.to_string(),
            expires_at: expires_at.to_string(),
        };
        self.circles
            .syncer
            .store
            .write(move |c| db::insert_issued(c, &row))
            .await??;
        Ok(IssuedView {
            uri: written.uri,
            target: duty.target_node.clone(),
            subject: duty.subject.clone(),
            blocks: cids.len(),
            expires_at: expires_at.to_string(),
        })
    }

    /// Answers the challenges circle members addressed to this node and it has not answered.
    async fn answer_challenges(
        &self,
        session: &Session,
        me: &str,
        policies: &[crate::policy::model::Policy],
        report: &mut RoundReport,
    ) -> Result<(), VerifyError> {
        let members: BTreeSet<String> = policies
            .iter()
            .flat_map(|p| p.members.iter().map(|m| m.node.clone()))
            .filter(|d| d != me)
            .collect();
        let mut answered = 0;
        for member in members {
            let listed = match self.circles.list_records(&member, nsid::CHALLENGE).await {
                Ok(l) => l,
                Err(e) => {
                    report.warnings.push(format!(
                        "could not read the challenges in {member}'s repo: {e}"
                    ));
                    continue;
                }
            };
            for (uri, value) in listed {
                if answered >= MAX_ANSWERS {
                    return Ok(());
                }
                let Ok(ch) = serde_json::from_value::<ChallengeRecord>(value) else {
                    continue;
                };
                if ch.target != me {
                    continue;
                }
                let u = uri.clone();
                if self
                    .circles
                    .syncer
                    .store
                    .read(move |c| db::answered(c, &u))
                    .await?
                {
                    continue;
                }
                let view = self.answer_one(session, &member, &uri).await?;
                if view.response.is_some() {
                    answered += 1;
                }
                report.challenges_answered.push(view);
            }
        }
        Ok(())
    }

    async fn answer_one(
        &self,
        session: &Session,
        verifier: &str,
        uri: &str,
    ) -> Result<AnsweredView, VerifyError> {
        let mut view = AnsweredView {
            challenge: uri.to_string(),
            verifier: verifier.to_string(),
            subject: String::new(),
            response: None,
            error: None,
        };
        let Some(rkey) = rkey_of(uri) else {
            view.error = Some("not a record URI".into());
            return Ok(view);
        };
        // Read with a proof: the challenge must really be in the verifier's repo.
        let (cid, ch) = match self
            .circles
            .verified::<ChallengeRecord>(verifier, nsid::CHALLENGE, &rkey)
            .await
        {
            Ok(Some(found)) => found,
            Ok(None) => {
                view.error = Some("the challenge is gone or malformed".into());
                return Ok(view);
            }
            Err(e) => {
                view.error = Some(format!("could not read the challenge: {e}"));
                return Ok(view);
            }
        };
        view.subject = ch.subject.clone();
        let final_error = |view: &mut AnsweredView, error: String| {
            view.error = Some(error);
        };
        let expired = Timestamp::parse(&ch.expires_at).map_or(true, |t| t < now());
        let cids: Result<Vec<Cid>, _> = ch
            .cids
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|c| c.parse::<Cid>())
            .collect();
        let problem = match (&cids, expired) {
            (_, true) => Some("it expired before this node saw it".to_string()),
            (Err(e), _) => Some(format!("it names a malformed CID: {e}")),
            (Ok(c), _) if c.len() > MAX_CHALLENGE_BLOCKS => {
                Some(format!("it names more than {MAX_CHALLENGE_BLOCKS} blocks"))
            }
            _ => None,
        };
        if let Some(p) = problem {
            self.mark_answered(uri, verifier, &ch.subject, None, Some(&p))
                .await?;
            final_error(&mut view, p);
            return Ok(view);
        }
        let cids = cids.unwrap_or_default();
        let mut digest = self.digest_held(&ch, &cids).await?;
        if digest.is_none() {
            // Behind the verifier: catch up, then try again.
            if let Err(e) = self.circles.syncer.sync_repo(&ch.subject, &|_| {}).await {
                tracing::warn!(subject = %ch.subject, error = %e, "could not sync before answering");
            }
            digest = self.digest_held(&ch, &cids).await?;
        }
        let Some(digest) = digest else {
            // Not marked answered: a self-check may repair the copy before the deadline.
            final_error(
                &mut view,
                format!(
                    "this node lacks blocks of {} that the challenge names",
                    ch.subject
                ),
            );
            return Ok(view);
        };
        let response = ChallengeResponseRecord {
            lex_type: nsid::CHALLENGE_RESPONSE.into(),
            challenge: StrongRef {
                uri: uri.to_string(),
                cid,
            },
            digest,
            created_at: now().to_string(),
        };
        let value = serde_json::to_value(&response).unwrap_or_else(|_| json!({}));
        let written = session
            .put_record(nsid::CHALLENGE_RESPONSE, &rkey, &value, None)
            .await?;
        self.mark_answered(uri, verifier, &ch.subject, Some(&written.uri), None)
            .await?;
        view.response = Some(written.uri);
        Ok(view)
    }

    async fn digest_held(
        &self,
        ch: &ChallengeRecord,
        cids: &[Cid],
    ) -> Result<Option<String>, VerifyError> {
        let (s, nonce, list) = (ch.subject.clone(), ch.nonce.clone(), cids.to_vec());
        Ok(self
            .circles
            .syncer
            .store
            .read(move |c| {
                let Some(repo) = store::get_repo(c, &s)? else {
                    return Ok(None);
                };
                Ok(challenge::digest_from_store(c, repo.id, &nonce, &list)?.ok())
            })
            .await?)
    }

    async fn mark_answered(
        &self,
        uri: &str,
        verifier: &str,
        subject: &str,
        response: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), VerifyError> {
        let (u, v, s, r, e, at) = (
            uri.to_string(),
            verifier.to_string(),
            subject.to_string(),
            response.map(str::to_string),
            error.map(str::to_string),
            now().to_string(),
        );
        self.circles
            .syncer
            .store
            .write(move |c| db::set_answered(c, &u, &v, &s, r.as_deref(), &at, e.as_deref()))
            .await??;
        Ok(())
    }

    /// Looks for the answers to this node's open challenges; each answered, wrong or overdue
    /// challenge becomes a result (a round of its own).
    async fn resolve_challenges(
        &self,
        session: &Session,
        me: &str,
        peer: Option<&str>,
        report: &mut RoundReport,
    ) -> Result<(), VerifyError> {
        let open = self.circles.syncer.store.read(db::open_issued).await?;
        for c in open {
            if peer.is_some_and(|p| p != c.target) {
                continue;
            }
            let Some(rkey) = rkey_of(&c.uri) else {
                continue;
            };
            let at = now();
            let expires = Timestamp::parse(&c.expires_at).unwrap_or(at);
            let expired = at > expires;
            let read = self
                .circles
                .verified::<ChallengeResponseRecord>(&c.target, nsid::CHALLENGE_RESPONSE, &rkey)
                .await;
            let (outcome, reason, answered_at) = match read {
                Ok(Some((_, resp))) => {
                    let created = Timestamp::parse(&resp.created_at).ok();
                    if resp.challenge.uri != c.uri || resp.challenge.cid != c.cid {
                        (
                            Outcome::Fail,
                            Some("the answer names another challenge".to_string()),
                            created,
                        )
                    } else if resp.digest != c.expected {
                        (
                            Outcome::Fail,
                            Some(
                                "wrong digest: the node does not hold the blocks it was asked for"
                                    .to_string(),
                            ),
                            created,
                        )
                    } else if created.is_none_or(|t| t > expires) {
                        (
                            Outcome::Fail,
                            Some(format!("answered after the deadline ({})", c.expires_at)),
                            created,
                        )
                    } else {
                        (Outcome::Pass, None, created)
                    }
                }
                Ok(None) if expired => (
                    Outcome::Fail,
                    Some(format!("no answer before the deadline ({})", c.expires_at)),
                    None,
                ),
                Err(e) if expired => (
                    Outcome::Unreachable,
                    Some(format!("could not read the answer: {e}")),
                    None,
                ),
                // Not answered yet, still time.
                _ => continue,
            };
            let issued = Timestamp::parse(&c.issued_at).ok();
            let latency = match (issued, answered_at) {
                (Some(i), Some(a)) => u64::try_from(a.millis() - i.millis()).ok(),
                _ => None,
            };
            // An answer proves the target was there when it answered, not when this node
            // looked: the round is dated by the answer (within the challenge's lifetime).
            let round_at = match (answered_at, issued) {
                (Some(a), Some(i)) => a.max(i).min(at),
                _ => at,
            };
            let row = ResultRow {
                at: round_at.to_string(),
                verifier: me.to_string(),
                target: c.target.clone(),
                subject: c.subject.clone(),
                layer: c.layer,
                outcome,
                latency_ms: latency,
                reason: reason.clone(),
                via: Via::Challenge,
                policy: c.policy.clone(),
                needs: None,
            };
            let (stored, uri, at_text) = (row.clone(), c.uri.clone(), at.to_string());
            self.circles
                .syncer
                .store
                .write(move |conn| {
                    let tx = conn.transaction()?;
                    db::insert_result(&tx, &stored)?;
                    db::resolve_issued(&tx, &uri, &at_text, outcome, reason.as_deref())?;
                    tx.commit()?;
                    Ok::<_, StoreError>(())
                })
                .await??;
            // The challenge has served its purpose; keep the repo tidy.
            if let Err(e) = session.delete_record(nsid::CHALLENGE, &rkey).await {
                tracing::warn!(uri = %c.uri, error = %e, "could not delete a resolved challenge");
            }
            report.results.push(row);
        }
        Ok(())
    }

    /// Whether this node can reach its own PDS (rounds pause while it cannot).
    pub async fn online(&self, session: &Session) -> bool {
        let url = format!("{}/xrpc/_health", session.account.pds.trim_end_matches('/'));
        self.http()
            .get(&url)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

/// When a copy last checked at `last` is due again.
pub fn next_due(last: Timestamp, duty: &VerifyDuty, failed: bool) -> Timestamp {
    let base = if failed {
        Duration::from_secs(duty.interval.secs() / 4)
    } else {
        duty.interval
    };
    let base = base.max(MIN_INTERVAL);
    // ±10%, stable for one copy and one last round.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&duty.target_node, &duty.subject, last.millis()).hash(&mut h);
    let spread = base.secs() / 5;
    let jitter = match spread {
        0 => 0,
        s => h.finish() % (s + 1),
    };
    last.plus(Duration::from_secs(base.secs() - base.secs() / 10 + jitter))
}

fn head_of(repo: &RepoRow) -> Option<Head> {
    Some(Head {
        cid: repo.head.as_deref()?.parse().ok()?,
        rev: repo.rev.clone()?,
    })
}

fn copy_of(c: &Check, layer: u8) -> Check {
    Check {
        layer,
        outcome: c.outcome,
        latency_ms: c.latency_ms,
        reason: c.reason.clone(),
        needs: c.needs,
    }
}

fn held_record(
    conn: &rusqlite::Connection,
    repo_id: i64,
    collection: &str,
    rkey: &str,
) -> Result<Option<Cid>, StoreError> {
    use rusqlite::OptionalExtension;
    let bytes: Option<Vec<u8>> = conn
        .query_row(
            "SELECT cid FROM records WHERE repo_id = ?1 AND collection = ?2 AND rkey = ?3",
            rusqlite::params![repo_id, collection, rkey],
            |r| r.get(0),
        )
        .optional()?;
    Ok(bytes.and_then(|b| Cid::try_from(b.as_slice()).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duty(interval: u64) -> VerifyDuty {
        VerifyDuty {
            target: "did:plc:carol".into(),
            target_node: "did:plc:carol".into(),
            subject: "did:plc:bob".into(),
            interval: Duration::from_secs(interval),
            layers: vec![0, 1],
            sample_size: 20,
            policies: vec![],
        }
    }

    #[test]
    fn the_next_check_is_an_interval_later_within_ten_percent() {
        let last = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        let next = next_due(last, &duty(3600), false);
        let gap = next.since(last).secs();
        assert!((3240..=3960).contains(&gap), "{gap}");
        // Stable for the same copy and round.
        assert_eq!(next, next_due(last, &duty(3600), false));
    }

    #[test]
    fn a_failing_copy_is_checked_four_times_as_often_but_not_more_than_once_a_minute() {
        let last = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        let gap = next_due(last, &duty(3600), true).since(last).secs();
        assert!((810..=990).contains(&gap), "{gap}");
        let gap = next_due(last, &duty(120), true).since(last).secs();
        assert!((54..=66).contains(&gap), "{gap}");
    }
}
