//! The checks made against a peer's HTTP endpoint (`p2pds serve` on the other side), one per
//! verification layer (DESIGN §4). Each returns one [`Check`]; none trusts the peer: every
//! block is hashed against its CID and every commit's signature checked against the subject's
//! key.
//!
//! - Layer 0: the peer's latest commit for the subject, fetched as a block over RASL, is a
//!   commit signed by the subject, and is the account's head (or an older commit: a copy that
//!   lags is judged by the policy's `maxLag`, not here; the same revision with another commit
//!   is a forgery and fails).
//! - Layer 1: sampled blocks (see `sample`) fetched over RASL and hashed.
//! - Layer 3: sampled record paths fetched with `sync.getRecord`; the proof must verify against
//!   the subject's key and, at the commit this node holds, name the record this node holds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cid::Cid;
use futures_util::{stream, StreamExt};
use serde::Deserialize;

use crate::crypto::PublicKey;
use crate::policy::observations::{Needs, Outcome};
use crate::repo::commit::Commit;
use crate::repo::mst;
use crate::repo::{proof, verify_block};

/// Largest block accepted from a peer (the protocol's limit for a record is 1 MiB; MST nodes
/// are smaller).
const MAX_BLOCK: usize = 2 << 20;
/// Requests in flight to one peer.
const PARALLEL: usize = 4;
/// How long one request to a peer may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The result of one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub layer: u8,
    pub outcome: Outcome,
    pub latency_ms: u64,
    pub reason: Option<String>,
    /// Layer 2 found the copy lacking: what it needs to be whole.
    pub needs: Option<Needs>,
}

impl Check {
    pub(super) fn new(
        layer: u8,
        outcome: Outcome,
        started: Instant,
        reason: Option<String>,
    ) -> Check {
        Check {
            layer,
            outcome,
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            reason,
            needs: None,
        }
    }
}

/// A commit as the peer showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCommit {
    pub cid: Cid,
    pub rev: String,
    pub data: Cid,
}

/// The account's head as this node knows it (its PDS's latest commit, which this node holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub cid: Cid,
    pub rev: String,
}

/// What went wrong with one request.
pub(super) enum Fetch {
    /// No answer (connection refused, timeout, server error, rate limited).
    Unreachable(String),
    /// An answer saying the peer does not have it (404, or an XRPC "not found").
    NotFound(String),
    /// An answer that is not what was asked.
    Bad(String),
}

/// Times a request is retried after `429 Too Many Requests` (waiting as `Retry-After` says,
/// at most [`MAX_RETRY_WAIT`]).
const RATE_LIMIT_RETRIES: usize = 5;
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

pub(super) async fn get(
    http: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
) -> Result<Vec<u8>, Fetch> {
    let mut tries = 0;
    let resp = loop {
        let resp = http
            .get(url)
            .query(query)
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(|e| Fetch::Unreachable(format!("{url}: {e}")))?;
        if resp.status().as_u16() != 429 || tries >= RATE_LIMIT_RETRIES {
            break resp;
        }
        tries += 1;
        // A peer that asks us to slow down gets what it asks (it is not a failure).
        let wait = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::from_secs(1), Duration::from_secs)
            .min(MAX_RETRY_WAIT);
        tokio::time::sleep(wait).await;
    };
    // Bodies are read through `xrpc`: at most a few blocks' worth, within the deadline.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let status = resp.status();
    if status.as_u16() == 404 || status.as_u16() == 400 {
        let why = crate::xrpc::refusal(resp, url, deadline).await;
        return Err(Fetch::NotFound(why.to_string()));
    }
    if !status.is_success() {
        return Err(Fetch::Unreachable(format!("{url} answered {status}")));
    }
    match crate::xrpc::read_capped(resp, url, MAX_BLOCK as u64 * 4, deadline).await {
        Ok(bytes) => Ok(bytes),
        Err(e @ crate::xrpc::XrpcError::TooLarge { .. }) => Err(Fetch::Bad(e.to_string())),
        Err(e) => Err(Fetch::Unreachable(e.to_string())),
    }
}

pub(super) async fn rasl(http: &reqwest::Client, base: &str, cid: &Cid) -> Result<Vec<u8>, Fetch> {
    let url = format!("{base}/.well-known/rasl/{cid}");
    let bytes = get(http, &url, &[]).await?;
    if bytes.len() > MAX_BLOCK {
        return Err(Fetch::Bad(format!("block {cid} is larger than any block")));
    }
    verify_block(cid, &bytes)
        .map_err(|e| Fetch::Bad(format!("block {cid} does not match its CID: {e}")))?;
    Ok(bytes)
}

/// One block from a peer's RASL endpoint, hashed against its CID (`None`: not had, for
/// whatever reason).
pub async fn fetch_block(http: &reqwest::Client, base: &str, cid: &Cid) -> Option<Vec<u8>> {
    rasl(http, base, cid).await.ok()
}

/// Layer 0. Returns the check and, when it passed, the commit the peer holds.
pub async fn commit_root(
    http: &reqwest::Client,
    base: &str,
    subject: &str,
    key: &PublicKey,
    head: &Head,
) -> (Check, Option<PeerCommit>) {
    let started = Instant::now();
    let done = |outcome, reason: Option<String>| Check::new(0, outcome, started, reason);
    #[derive(Deserialize)]
    struct Latest {
        cid: String,
        rev: String,
    }
    let url = format!("{base}/xrpc/com.atproto.sync.getLatestCommit");
    let latest = match get(http, &url, &[("did", subject)]).await {
        Ok(bytes) => serde_json::from_slice::<Latest>(&bytes),
        Err(Fetch::Unreachable(r)) => return (done(Outcome::Unreachable, Some(r)), None),
        Err(Fetch::NotFound(r)) => {
            return (
                done(
                    Outcome::Fail,
                    Some(format!("does not serve a copy of the account ({r})")),
                ),
                None,
            )
        }
        Err(Fetch::Bad(r)) => return (done(Outcome::Fail, Some(r)), None),
    };
    let Ok(latest) = latest else {
        return (
            done(
                Outcome::Fail,
                Some("getLatestCommit did not answer {cid, rev}".into()),
            ),
            None,
        );
    };
    let Ok(cid) = latest.cid.parse::<Cid>() else {
        return (
            done(
                Outcome::Fail,
                Some(format!("{:?} is not a CID", latest.cid)),
            ),
            None,
        );
    };
    let bytes = match rasl(http, base, &cid).await {
        Ok(b) => b,
        Err(Fetch::Unreachable(r)) => return (done(Outcome::Unreachable, Some(r)), None),
        Err(Fetch::NotFound(r)) => {
            return (
                done(
                    Outcome::Fail,
                    Some(format!("names commit {cid} but does not serve it ({r})")),
                ),
                None,
            )
        }
        Err(Fetch::Bad(r)) => return (done(Outcome::Fail, Some(r)), None),
    };
    let commit = match Commit::decode(&bytes) {
        Ok(c) => c,
        Err(e) => {
            return (
                done(Outcome::Fail, Some(format!("commit {cid}: {e}"))),
                None,
            )
        }
    };
    if commit.did != subject {
        return (
            done(
                Outcome::Fail,
                Some(format!("commit {cid} belongs to {}", commit.did)),
            ),
            None,
        );
    }
    if let Err(e) = commit.verify_signature(key) {
        return (
            done(
                Outcome::Fail,
                Some(format!("commit {cid} is not signed by the account: {e}")),
            ),
            None,
        );
    }
    if commit.rev != latest.rev {
        return (
            done(
                Outcome::Fail,
                Some(format!(
                    "says rev {} but commit {cid} is rev {}",
                    latest.rev, commit.rev
                )),
            ),
            None,
        );
    }
    let peer = PeerCommit {
        cid,
        rev: commit.rev.clone(),
        data: commit.data,
    };
    if cid == head.cid {
        return (done(Outcome::Pass, None), Some(peer));
    }
    match commit.rev.cmp(&head.rev) {
        std::cmp::Ordering::Less => (
            done(
                Outcome::Pass,
                Some(format!(
                    "holds an older commit (rev {}, latest {})",
                    commit.rev, head.rev
                )),
            ),
            Some(peer),
        ),
        std::cmp::Ordering::Equal => (
            done(
                Outcome::Fail,
                Some(format!(
                    "commit {cid} has the revision of the account's head {} but is another commit",
                    head.cid
                )),
            ),
            None,
        ),
        std::cmp::Ordering::Greater => (
            done(
                Outcome::Fail,
                Some(format!(
                    "commit {cid} (rev {}) is newer than the account's head (rev {})",
                    commit.rev, head.rev
                )),
            ),
            None,
        ),
    }
}

/// Layer 1: every block in `cids` must come back and hash to its CID.
pub async fn blocks(http: &reqwest::Client, base: &str, cids: &[Cid]) -> Check {
    let started = Instant::now();
    if cids.is_empty() {
        return Check::new(
            1,
            Outcome::Pass,
            started,
            Some("no blocks to sample".into()),
        );
    }
    let results: Vec<(Cid, Result<Vec<u8>, Fetch>)> = stream::iter(cids.iter().copied())
        .map(|cid| async move { (cid, rasl(http, base, &cid).await) })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut missing = Vec::new();
    let mut bad = Vec::new();
    let mut unreachable = None;
    for (cid, r) in results {
        match r {
            Ok(_) => {}
            Err(Fetch::NotFound(_)) => missing.push(cid.to_string()),
            Err(Fetch::Bad(reason)) => bad.push(reason),
            Err(Fetch::Unreachable(reason)) => unreachable = Some(reason),
        }
    }
    let n = cids.len();
    if let Some(reason) = failures(&format!("of {n} sampled blocks"), &missing, &bad) {
        return Check::new(1, Outcome::Fail, started, Some(reason));
    }
    match unreachable {
        Some(r) => Check::new(1, Outcome::Unreachable, started, Some(r)),
        None => Check::new(1, Outcome::Pass, started, None),
    }
}

/// Layer 1 when this node does not hold the tree the peer is at (the peer lags behind this
/// node's copy): `k` random walks down the peer's tree from `root` (the data root of the
/// commit the peer showed, signed by the account), every node and the block each walk ends
/// on fetched from the peer and hashed. Hash links from the signed root authenticate them.
pub async fn walk(http: &reqwest::Client, base: &str, root: Cid, k: usize) -> Check {
    use rand::Rng;
    let started = Instant::now();
    let mut nodes: HashMap<Cid, mst::Node> = HashMap::new();
    let (mut fetched, mut missing, mut bad) = (0usize, Vec::new(), Vec::new());
    let mut unreachable = None;
    'walks: for _ in 0..k {
        let mut cid = root;
        for _ in 0..64 {
            let node = match nodes.get(&cid) {
                Some(n) => n.clone(),
                None => {
                    let bytes = match rasl(http, base, &cid).await {
                        Ok(b) => b,
                        Err(Fetch::NotFound(_)) => {
                            missing.push(cid.to_string());
                            continue 'walks;
                        }
                        Err(Fetch::Bad(r)) => {
                            bad.push(r);
                            continue 'walks;
                        }
                        Err(Fetch::Unreachable(r)) => {
                            unreachable = Some(r);
                            break 'walks;
                        }
                    };
                    fetched += 1;
                    match mst::decode_node(&cid, &bytes) {
                        Ok(n) => {
                            nodes.insert(cid, n.clone());
                            n
                        }
                        Err(e) => {
                            bad.push(e.to_string());
                            continue 'walks;
                        }
                    }
                }
            };
            let mut leaves = Vec::with_capacity(node.entries.len());
            let mut subtrees: Vec<Cid> = node.left.into_iter().collect();
            for e in &node.entries {
                leaves.push(e.value);
                subtrees.extend(e.right);
            }
            let choice = rand::rngs::OsRng.gen_range(0..1 + leaves.len() + subtrees.len());
            if choice == 0 {
                continue 'walks;
            }
            if let Some(leaf) = leaves.get(choice - 1) {
                match rasl(http, base, leaf).await {
                    Ok(_) => fetched += 1,
                    Err(Fetch::NotFound(_)) => missing.push(leaf.to_string()),
                    Err(Fetch::Bad(r)) => bad.push(r),
                    Err(Fetch::Unreachable(r)) => unreachable = Some(r),
                }
                continue 'walks;
            }
            match subtrees.get(choice - 1 - leaves.len()) {
                Some(next) => cid = *next,
                None => continue 'walks,
            }
        }
    }
    if let Some(reason) = failures("blocks of its tree", &missing, &bad) {
        return Check::new(1, Outcome::Fail, started, Some(reason));
    }
    match unreachable {
        Some(r) => Check::new(1, Outcome::Unreachable, started, Some(r)),
        None => Check::new(
            1,
            Outcome::Pass,
            started,
            Some(format!(
                "{fetched} blocks of the tree it holds, walked at random"
            )),
        ),
    }
}

/// "3 of 20 sampled blocks missing (e.g. …); 1 of 20 sampled blocks wrong: …", or `None`
/// when everything came back right.
fn failures(what: &str, missing: &[String], bad: &[String]) -> Option<String> {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        let first: Vec<&str> = missing.iter().take(3).map(String::as_str).collect();
        parts.push(format!(
            "{} {what} missing (e.g. {})",
            missing.len(),
            first.join(", ")
        ));
    }
    if let Some(b) = bad.first() {
        parts.push(format!("{} {what} wrong: {b}", bad.len()));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// One layer's checks made of parts: the worst outcome (fail, then unreachable, then pass),
/// the reasons of the parts that did not pass, the time of all.
pub fn merge(layer: u8, parts: &[Check]) -> Check {
    let rank = |o: Outcome| match o {
        Outcome::Fail => 2,
        Outcome::Unreachable => 1,
        Outcome::Pass => 0,
    };
    let outcome = parts
        .iter()
        .map(|c| c.outcome)
        .max_by_key(|o| rank(*o))
        .unwrap_or(Outcome::Pass);
    let reasons: Vec<String> = parts
        .iter()
        .filter(|c| c.outcome == outcome && outcome != Outcome::Pass)
        .filter_map(|c| c.reason.clone())
        .collect();
    Check {
        layer,
        outcome,
        latency_ms: parts.iter().map(|c| c.latency_ms).sum(),
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        needs: None,
    }
}

/// Layer 3: each path's proof from the peer must verify; at `held` (the commit this node holds)
/// it must name the record `expected` says (`None`: absent).
pub async fn record_proofs(
    http: &reqwest::Client,
    base: &str,
    subject: &str,
    key: &PublicKey,
    held: &Cid,
    paths: &[(String, String, Option<Cid>)],
) -> Check {
    let started = Instant::now();
    let url = format!("{base}/xrpc/com.atproto.sync.getRecord");
    let mut failures = Vec::new();
    let mut unreachable = None;
    for (collection, rkey, expected) in paths {
        let query = [
            ("did", subject),
            ("collection", collection.as_str()),
            ("rkey", rkey.as_str()),
        ];
        let car = match get(http, &url, &query).await {
            Ok(car) => car,
            Err(Fetch::Unreachable(r)) => {
                unreachable = Some(r);
                continue;
            }
            Err(Fetch::NotFound(r) | Fetch::Bad(r)) => {
                failures.push(format!("{collection}/{rkey}: {r}"));
                continue;
            }
        };
        match proof::verify_record(&car, subject, key, collection, rkey) {
            Ok(v) if v.commit == *held && v.cid != *expected => failures.push(format!(
                "{collection}/{rkey}: the proof at the held commit names another record"
            )),
            Ok(_) => {}
            Err(e) => failures.push(format!("{collection}/{rkey}: {e}")),
        }
    }
    if let Some(f) = failures.first() {
        return Check::new(
            3,
            Outcome::Fail,
            started,
            Some(format!(
                "{} of {} proofs failed: {f}",
                failures.len(),
                paths.len()
            )),
        );
    }
    match unreachable {
        Some(r) => Check::new(3, Outcome::Unreachable, started, Some(r)),
        None => Check::new(3, Outcome::Pass, started, None),
    }
}
