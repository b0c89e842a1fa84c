//! Discovery beyond the accounts a node knows: a backlink index (a Constellation-compatible
//! `links` API, `GET {index}/links?target=DID&collection=org.p2pds.policy&path=.members[].did`
//! answering `{total, linking_records: [{did, collection, rkey}], cursor}`) is asked which
//! policy records name this node's account.
//!
//! Invariants:
//! - The index is never trusted. An answer only names candidates; each is read from its
//!   author's repo with a proof against the key in the author's DID document
//!   (`Syncer::verified_record`) and counts only if that verified record is a valid policy
//!   naming this account. Anything else (a record that is not there, a policy for others, an
//!   account that does not resolve) is passed over with a log line and changes nothing.
//! - A found version is remembered exactly as discovery in known repos remembers one
//!   (`db::record_version`); what was not verified is never written.
//! - Bounded: at most [`MAX_PAGES`] pages and [`MAX_RECORDS`] candidates per discovery, every
//!   page read through `crate::xrpc` (a size cap and a deadline), a cursor that comes back ends
//!   the listing. The step runs inside a pass that holds the node's work, so it has a budget of
//!   its own ([`INDEX_BUDGET`], listing and checks together; what was verified by then is
//!   kept) and checks at most [`VERIFY_PER_PASS`] candidates not seen before (the rest wait
//!   for the next discovery).
//! - A candidate that did not check out is passed over for [`REJECTED_FOR`] (remembered in
//!   `group_meta`, at most [`MAX_REJECTED`] of them): a lying index costs its reads once a
//!   day, not at every pass.
//! - Off unless an index is configured (`--backlink-index`, `P2PDS_BACKLINK_INDEX`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{db, Circles, RefreshReport};
use crate::policy::records::nsid;
use crate::policy::validate::{check_value, is_did};
use crate::session::Account;
use crate::xrpc::{self, XrpcError};

/// Where a policy names its members, in the index's path syntax.
pub const MEMBERS_PATH: &str = ".members[].did";
/// Most pages read from the index in one discovery.
pub const MAX_PAGES: usize = 10;
/// Most candidates taken from the index in one discovery (each costs one verified read).
pub const MAX_RECORDS: usize = 500;
/// Longest one discovery spends on the index, listing and verifying together: the pass that
/// asks holds the node's work (backups and a storage move wait), so a slow or hostile index
/// must not hold it for long. What was verified by then is kept.
pub const INDEX_BUDGET: Duration = Duration::from_secs(120);
/// Most candidates not seen before verified in one discovery (each costs up to two DID
/// lookups and a read with a proof); the rest wait for the next discovery.
pub const VERIFY_PER_PASS: usize = 50;
/// How long a candidate that did not check out is passed over before it is read again.
pub const REJECTED_FOR: Duration = Duration::from_secs(86_400);
/// Most rejected candidates remembered (a few hundred kilobytes at most).
pub const MAX_REJECTED: usize = 2_000;
/// Where the rejected candidates are remembered (`group_meta`).
const REJECTED_KEY: &str = "backlinks.rejected";
/// Records asked for per page (Constellation's largest page).
const PAGE_SIZE: &str = "100";
/// Largest page answer read: 100 short entries are a few kilobytes.
const PAGE_LIMIT: u64 = 1 << 20;

/// Why a backlink index address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?} is not the address of a backlink index (an http:// or https:// URL, e.g. https://constellation.microcosm.blue)")]
pub struct BadIndexUrl {
    pub url: String,
}

/// A configured backlink index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacklinkIndex {
    base: String,
}

/// One entry of a `links` answer: a record that (the index says) links to the target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LinkingRecord {
    pub did: String,
    pub collection: String,
    pub rkey: String,
}

#[derive(Debug, Deserialize)]
struct LinksPage {
    #[serde(default)]
    linking_records: Vec<LinkingRecord>,
    #[serde(default)]
    cursor: Option<String>,
}

impl BacklinkIndex {
    /// The index at `url` (its base: `/links` is appended).
    pub fn new(url: &str) -> Result<BacklinkIndex, BadIndexUrl> {
        let bad = || BadIndexUrl {
            url: url.to_string(),
        };
        let parsed = reqwest::Url::parse(url.trim()).map_err(|_| bad())?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(bad());
        }
        Ok(BacklinkIndex {
            base: url.trim().trim_end_matches('/').to_string(),
        })
    }

    /// The index's base address.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The policy records the index says name `target`: `(author, rkey)`, each once, in the
    /// index's order, at most [`MAX_RECORDS`] from at most [`MAX_PAGES`] pages. Entries that
    /// cannot be a policy record (another collection, no DID, a malformed key) are left out.
    /// Unverified: candidates only.
    pub async fn policies_naming(
        &self,
        client: &xrpc::Client,
        target: &str,
    ) -> Result<Vec<(String, String)>, XrpcError> {
        let url = format!("{}/links", self.base);
        let mut pages = xrpc::Pages::new(&url, MAX_PAGES);
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![
                ("target", target),
                ("collection", nsid::POLICY),
                ("path", MEMBERS_PATH),
                ("limit", PAGE_SIZE),
            ];
            if let Some(c) = &cursor {
                query.push(("cursor", c.as_str()));
            }
            let req = client.http.get(&url).query(&query);
            let page: LinksPage = client.json(req, &url, PAGE_LIMIT).await?;
            let items = page.linking_records.len();
            for r in page.linking_records {
                if !candidate(&r) {
                    tracing::debug!(index = %self.base, ?r, "backlink index: not a policy record, passed over");
                    continue;
                }
                if seen.insert((r.did.clone(), r.rkey.clone())) {
                    out.push((r.did, r.rkey));
                }
                if out.len() >= MAX_RECORDS {
                    return Ok(out);
                }
            }
            cursor = match pages.next(page.cursor, items) {
                Ok(Some(c)) => Some(c),
                Ok(None) => break,
                // Past the page cap or a cursor that came back: what was read still counts.
                Err(e) => {
                    tracing::warn!(error = %e, "backlink index: listing stopped");
                    break;
                }
            };
        }
        Ok(out)
    }
}

/// Whether an entry can name a policy record: the policy collection, a DID, a record key.
fn candidate(r: &LinkingRecord) -> bool {
    r.collection == nsid::POLICY && is_did(&r.did) && valid_rkey(&r.rkey)
}

/// The atproto record key syntax: 1 to 512 of `A-Za-z0-9._:~-`, not `.` or `..`.
fn valid_rkey(k: &str) -> bool {
    (1..=512).contains(&k.len())
        && k != "."
        && k != ".."
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:~-".contains(&b))
}

impl Circles {
    /// Asks the backlink index (when one is configured) for policies naming `me`, reads each
    /// candidate not seen before from its author's repo with a proof and remembers the
    /// versions that are valid policies naming `me`. Nothing the index says counts otherwise;
    /// a failure of the index is a warning, a bad candidate a log line (and passed over for
    /// [`REJECTED_FOR`]). The whole step takes at most [`INDEX_BUDGET`] and verifies at most
    /// [`VERIFY_PER_PASS`] candidates: the pass holds the node's work, and what is left waits
    /// for the next discovery.
    pub(super) async fn discover_from_index(&self, me: &Account, report: &mut RefreshReport) {
        let Some(index) = &self.backlinks else {
            return;
        };
        let deadline = tokio::time::Instant::now() + INDEX_BUDGET;
        let client = xrpc::Client::new(self.syncer.http.clone());
        let listing = tokio::time::timeout_at(deadline, index.policies_naming(&client, &me.did));
        let candidates = match listing.await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                report.warnings.push(format!("backlink index: {e}"));
                return;
            }
            Err(_) => {
                tracing::warn!(index = %index.url(), "backlink index: no answer within {}s, asked again at the next discovery", INDEX_BUDGET.as_secs());
                return;
            }
        };
        let read = self
            .syncer
            .store
            .read(|c| Ok((db::policies(c)?, db::meta(c, REJECTED_KEY)?)));
        let (tracked, stored) = match read.await {
            Ok((p, r)) => (
                p.into_iter().map(|p| p.uri).collect::<BTreeSet<String>>(),
                r,
            ),
            Err(e) => {
                report.warnings.push(format!("backlink index: {e}"));
                return;
            }
        };
        let now = super::now().millis();
        let mut rejected = Rejected::read(stored.as_deref(), now);
        let total = candidates.len();
        let fresh = fresh(candidates, &tracked, &rejected, now);
        let checked = check_candidates(fresh, &mut rejected, now, deadline, |c| async move {
            self.verify_candidate(me, &c.author, &c.rkey, &c.uri).await
        })
        .await;
        report.warnings.extend(checked.warnings);
        if rejected.to_json() != stored.unwrap_or_default() {
            let text = rejected.to_json();
            let saved = self
                .syncer
                .store
                .write(move |c| db::set_meta(c, REJECTED_KEY, &text))
                .await;
            if let Err(e) = saved
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
            {
                tracing::warn!(error = %e, "backlink index: could not remember the answers that did not check out");
            }
        }
        // One line for what a wrong or hostile index said, however much it said.
        if checked.ignored > 0 {
            tracing::warn!(
                index = %index.url(),
                "backlink index: {} of its {total} answers did not check out against their authors' repos and were ignored",
                checked.ignored
            );
        }
        if checked.out_of_time {
            tracing::warn!(
                index = %index.url(),
                "backlink index: its answers took longer than {}s to check; what was verified is kept, {} answers wait for the next discovery",
                INDEX_BUDGET.as_secs(),
                checked.left
            );
        } else if checked.left > 0 {
            tracing::info!(
                index = %index.url(),
                "backlink index: {} answers wait for the next discovery (at most {VERIFY_PER_PASS} are checked at once)",
                checked.left
            );
        }
    }

    /// Reads `uri` with a proof and remembers it when it is a valid policy naming `me`.
    async fn verify_candidate(
        &self,
        me: &Account,
        author: &str,
        rkey: &str,
        uri: &str,
    ) -> Result<(), Ignored> {
        let vr = self
            .syncer
            .verified_record(author, nsid::POLICY, rkey)
            .await
            .map_err(|e| Ignored::Quiet(format!("can't be read from its author's repo: {e}")))?;
        let (Some(cid), Some(value)) = (vr.cid, vr.value) else {
            return Err(Ignored::Quiet(
                "its author's signed repo proves it absent".into(),
            ));
        };
        let cid = cid.to_string();
        let names_me = value
            .get("members")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|ms| {
                ms.iter().any(|m| {
                    m.get("did").and_then(serde_json::Value::as_str) == Some(me.did.as_str())
                })
            });
        if !names_me {
            return Err(Ignored::Quiet(
                "the policy does not name this account".into(),
            ));
        }
        if let Err(p) = check_value(&json!({"uri": uri, "cid": cid, "value": value})) {
            return Err(Ignored::Warn(format!(
                "{uri} names you but is not a valid policy: {p}"
            )));
        }
        let (u, c, a) = (uri.to_string(), cid, author.to_string());
        self.syncer
            .store
            .write(move |conn| db::record_version(conn, &u, &c, &a, &value))
            .await
            .map_err(|e| Ignored::Failed(format!("circle {uri}: {e}")))?
            .map_err(|e| Ignored::Failed(format!("circle {uri}: {e}")))?;
        tracing::debug!(%uri, "backlink index: a circle naming this account, verified");
        Ok(())
    }
}

/// One policy record the index named, not checked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    uri: String,
    author: String,
    rkey: String,
}

/// The candidates to check: each policy the index named (`(author, rkey)`), in its order,
/// but those already tracked and those passed over at `now`.
fn fresh(
    candidates: Vec<(String, String)>,
    tracked: &BTreeSet<String>,
    rejected: &Rejected,
    now: i64,
) -> Vec<Candidate> {
    candidates
        .into_iter()
        .map(|(author, rkey)| Candidate {
            uri: format!("at://{author}/{}/{rkey}", nsid::POLICY),
            author,
            rkey,
        })
        .filter(|c| !tracked.contains(&c.uri) && !rejected.holds(&c.uri, now))
        .collect()
}

/// Why a candidate from the index did not count: in the refresh's warnings (as discovery in
/// known repos reports them), or only in the log (what a wrong or hostile index says); both
/// are passed over for [`REJECTED_FOR`]. `Failed`: it was not checked to the end (the store
/// could not keep it), a warning, and checked again at the next discovery.
enum Ignored {
    Warn(String),
    Quiet(String),
    Failed(String),
}

/// What [`check_candidates`] did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Checked {
    /// Candidates verified now: policies naming this account, remembered.
    found: usize,
    /// Candidates that did not check out (only in the log).
    ignored: usize,
    /// For the refresh's warnings.
    warnings: Vec<String>,
    /// Candidates left for the next discovery (past the cap, or out of time).
    left: usize,
    /// The budget ran out.
    out_of_time: bool,
}

/// Verifies at most [`VERIFY_PER_PASS`] of `fresh` (candidates neither tracked nor
/// remembered as rejected), in order, one at a time, until `deadline`; each that does not
/// check out is remembered in `rejected` (from `now`, ms). A check the deadline cuts short
/// counts as not done: nothing is remembered of it.
async fn check_candidates<F, Fut>(
    fresh: Vec<Candidate>,
    rejected: &mut Rejected,
    now: i64,
    deadline: tokio::time::Instant,
    mut verify: F,
) -> Checked
where
    F: FnMut(Candidate) -> Fut,
    Fut: std::future::Future<Output = Result<(), Ignored>>,
{
    let mut out = Checked::default();
    let total = fresh.len();
    let mut done = 0usize;
    for c in fresh.into_iter().take(VERIFY_PER_PASS) {
        let uri = c.uri.clone();
        let Ok(result) = tokio::time::timeout_at(deadline, verify(c)).await else {
            out.out_of_time = true;
            break;
        };
        done += 1;
        match result {
            Ok(()) => out.found += 1,
            Err(Ignored::Warn(w)) => {
                out.warnings.push(w);
                rejected.insert(&uri, now);
            }
            Err(Ignored::Quiet(w)) => {
                out.ignored += 1;
                tracing::debug!(%uri, "backlink index answer ignored: {w}");
                rejected.insert(&uri, now);
            }
            Err(Ignored::Failed(w)) => out.warnings.push(w),
        }
    }
    out.left = total - done;
    out
}

/// The candidates that did not check out, each passed over until a time (ms since the
/// epoch): kept in `group_meta` ([`REJECTED_KEY`]) as a JSON object, at most
/// [`MAX_REJECTED`] entries (those that end first are forgotten first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Rejected {
    until: BTreeMap<String, i64>,
}

impl Rejected {
    /// The stored memory as of `now`: what has ended is forgotten, and anything unreadable
    /// is an empty memory (the index's answers are checked again, nothing worse).
    fn read(text: Option<&str>, now: i64) -> Rejected {
        let mut r = text
            .and_then(|t| serde_json::from_str::<Rejected>(t).ok())
            .unwrap_or_default();
        r.until.retain(|_, until| *until > now);
        r.trim();
        r
    }

    /// Whether `uri` is passed over at `now`.
    fn holds(&self, uri: &str, now: i64) -> bool {
        self.until.get(uri).is_some_and(|until| *until > now)
    }

    /// Passes `uri` over for [`REJECTED_FOR`] from `now`.
    fn insert(&mut self, uri: &str, now: i64) {
        let until = now.saturating_add(i64::try_from(REJECTED_FOR.as_millis()).unwrap_or(i64::MAX));
        self.until.insert(uri.to_string(), until);
        self.trim();
    }

    /// At most [`MAX_REJECTED`] entries: those that end first go.
    fn trim(&mut self) {
        while self.until.len() > MAX_REJECTED {
            let first = self
                .until
                .iter()
                .min_by_key(|(uri, until)| (**until, (*uri).clone()))
                .map(|(uri, _)| uri.clone());
            match first {
                Some(uri) => self.until.remove(&uri),
                None => break,
            };
        }
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("https://constellation.microcosm.blue", true)]
    #[case("http://127.0.0.1:8080/", true)]
    #[case("ftp://example.com", false)]
    #[case("constellation.microcosm.blue", false)]
    #[case("", false)]
    fn index_addresses(#[case] url: &str, #[case] ok: bool) {
        assert_eq!(BacklinkIndex::new(url).is_ok(), ok, "{url}");
    }

    #[test]
    fn the_base_loses_its_trailing_slash() {
        let i = BacklinkIndex::new("http://127.0.0.1:8080/").unwrap();
        assert_eq!(i.url(), "http://127.0.0.1:8080");
    }

    #[rstest]
    #[case("did:plc:abc", "org.p2pds.policy", "3kabc", true)]
    #[case("did:plc:abc", "app.bsky.feed.post", "3kabc", false)]
    #[case("alice.test", "org.p2pds.policy", "3kabc", false)]
    #[case("did:plc:abc", "org.p2pds.policy", "..", false)]
    #[case("did:plc:abc", "org.p2pds.policy", "a/b", false)]
    #[case("did:plc:abc", "org.p2pds.policy", "", false)]
    fn candidates(#[case] did: &str, #[case] coll: &str, #[case] rkey: &str, #[case] ok: bool) {
        let r = LinkingRecord {
            did: did.into(),
            collection: coll.into(),
            rkey: rkey.into(),
        };
        assert_eq!(candidate(&r), ok);
    }

    #[test]
    fn a_links_answer_reads() {
        let page: LinksPage = serde_json::from_value(json!({
            "total": 2,
            "linking_records": [
                {"did": "did:plc:a", "collection": "org.p2pds.policy", "rkey": "1"},
                {"did": "did:plc:b", "collection": "org.p2pds.policy", "rkey": "2"}
            ],
            "cursor": null
        }))
        .unwrap();
        assert_eq!(page.linking_records.len(), 2);
        assert_eq!(page.cursor, None);
    }

    const NOW: i64 = 1_767_000_000_000;
    const DAY_MS: i64 = 86_400_000;

    /// `n` candidates of a made-up author, as an index lists them.
    fn listed(n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| ("did:plc:liar".to_string(), format!("3zzzzzzzz{i:04}")))
            .collect()
    }

    fn far() -> tokio::time::Instant {
        tokio::time::Instant::now() + INDEX_BUDGET
    }

    /// One discovery against an index answering `listed` where every answer is a lie: the
    /// URIs it read.
    async fn lying_pass(
        listed: &[(String, String)],
        tracked: &BTreeSet<String>,
        rejected: &mut Rejected,
        now: i64,
    ) -> (Vec<String>, Checked) {
        let mut read = Vec::new();
        let todo = fresh(listed.to_vec(), tracked, rejected, now);
        let checked = check_candidates(todo, rejected, now, far(), |c| {
            read.push(c.uri.clone());
            async { Err(Ignored::Quiet("not there".into())) }
        })
        .await;
        (read, checked)
    }

    #[tokio::test]
    async fn lies_are_read_at_most_fifty_at_a_time_and_not_again_for_a_day() {
        let lies = listed(120);
        let tracked = BTreeSet::new();
        let mut rejected = Rejected::default();
        let mut all = Vec::new();
        for (pass, (reads, left)) in [(50, 70), (50, 20), (20, 0), (0, 0)]
            .into_iter()
            .enumerate()
        {
            let (read, checked) = lying_pass(&lies, &tracked, &mut rejected, NOW).await;
            assert_eq!(read.len(), reads, "pass {pass}");
            assert_eq!(checked.left, left, "pass {pass}");
            assert_eq!(checked.ignored, reads, "pass {pass}");
            all.extend(read);
        }
        // Every lie read exactly once, in the index's order.
        let want: Vec<String> = fresh(lies.clone(), &tracked, &Rejected::default(), NOW)
            .into_iter()
            .map(|c| c.uri)
            .collect();
        assert_eq!(all, want);
        // Remembered across restarts (the memory is kept as JSON).
        let mut again = Rejected::read(Some(&rejected.to_json()), NOW + 1);
        let (read, _) = lying_pass(&lies, &tracked, &mut again, NOW + 1).await;
        assert!(read.is_empty(), "{read:?}");
        // A day later they are read again (fifty at a time).
        let later = NOW + DAY_MS + 1;
        let mut expired = Rejected::read(Some(&rejected.to_json()), later);
        assert!(expired.until.is_empty());
        let (read, _) = lying_pass(&lies, &tracked, &mut expired, later).await;
        assert_eq!(read.len(), VERIFY_PER_PASS);
    }

    #[tokio::test]
    async fn tracked_policies_are_not_read_and_the_truth_is_not_rejected() {
        let listed = listed(3);
        let uris: Vec<String> = fresh(listed.clone(), &BTreeSet::new(), &Rejected::default(), NOW)
            .into_iter()
            .map(|c| c.uri)
            .collect();
        let tracked: BTreeSet<String> = [uris[0].clone()].into();
        let mut rejected = Rejected::default();
        let mut read = Vec::new();
        let todo = fresh(listed, &tracked, &rejected, NOW);
        let truth = uris[1].clone();
        let checked = check_candidates(todo, &mut rejected, NOW, far(), |c| {
            read.push(c.uri.clone());
            let r = if c.uri == truth {
                Ok(())
            } else {
                Err(Ignored::Failed("the store is busy".into()))
            };
            async move { r }
        })
        .await;
        assert_eq!(read, uris[1..]);
        assert_eq!(checked.found, 1);
        assert_eq!(checked.warnings, ["the store is busy"]);
        // Neither the truth nor a check the store cut short is passed over.
        assert!(rejected.until.is_empty(), "{rejected:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_stops_the_checks_and_keeps_what_was_learnt() {
        let lies = listed(10);
        let mut rejected = Rejected::default();
        let todo = fresh(lies, &BTreeSet::new(), &rejected, NOW);
        let uris: Vec<String> = todo.iter().map(|c| c.uri.clone()).collect();
        // Each check takes 50 s of (paused, auto-advanced) time: two fit in the budget.
        let deadline = tokio::time::Instant::now() + INDEX_BUDGET;
        let checked = check_candidates(todo, &mut rejected, NOW, deadline, |_| async {
            tokio::time::sleep(Duration::from_secs(50)).await;
            Err(Ignored::Quiet("no such account".into()))
        })
        .await;
        assert!(checked.out_of_time);
        assert_eq!(checked.ignored, 2);
        assert_eq!(checked.left, 8);
        let kept: Vec<&String> = rejected.until.keys().collect();
        assert_eq!(kept, [&uris[0], &uris[1]]);
    }

    #[test]
    fn the_memory_of_rejections_is_bounded() {
        let mut r = Rejected::default();
        for i in 0..MAX_REJECTED + 10 {
            r.insert(&format!("at://x/{i:05}"), NOW + i64::try_from(i).unwrap());
        }
        assert_eq!(r.until.len(), MAX_REJECTED);
        // The ten that end first were forgotten.
        assert!(!r.holds("at://x/00009", NOW));
        assert!(r.holds("at://x/00010", NOW));
        // Whatever is stored, what is read is bounded and current.
        let mut big = BTreeMap::new();
        for i in 0..MAX_REJECTED + 5 {
            big.insert(format!("at://y/{i}"), NOW + DAY_MS);
        }
        big.insert("at://y/old".into(), NOW - 1);
        let text = serde_json::to_string(&json!({ "until": big })).unwrap();
        let read = Rejected::read(Some(&text), NOW);
        assert_eq!(read.until.len(), MAX_REJECTED);
        assert!(!read.until.contains_key("at://y/old"));
        assert_eq!(Rejected::read(Some("not json"), NOW), Rejected::default());
        assert_eq!(Rejected::read(None, NOW), Rejected::default());
    }
}
