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
//!   the listing.
//! - Off unless an index is configured (`--backlink-index`, `P2PDS_BACKLINK_INDEX`).

use std::collections::BTreeSet;

use serde::Deserialize;
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
    /// candidate from its author's repo with a proof and remembers the versions that are valid
    /// policies naming `me`. Nothing the index says counts otherwise; a failure of the index
    /// is a warning, a bad candidate a log line.
    pub(super) async fn discover_from_index(&self, me: &Account, report: &mut RefreshReport) {
        let Some(index) = &self.backlinks else {
            return;
        };
        let client = xrpc::Client::new(self.syncer.http.clone());
        let candidates = match index.policies_naming(&client, &me.did).await {
            Ok(c) => c,
            Err(e) => {
                report.warnings.push(format!("backlink index: {e}"));
                return;
            }
        };
        let tracked: BTreeSet<String> = match self.syncer.store.read(db::policies).await {
            Ok(p) => p.into_iter().map(|p| p.uri).collect(),
            Err(e) => {
                report.warnings.push(format!("backlink index: {e}"));
                return;
            }
        };
        let total = candidates.len();
        let mut ignored = 0usize;
        for (author, rkey) in candidates {
            let uri = format!("at://{author}/{}/{rkey}", nsid::POLICY);
            if tracked.contains(&uri) {
                continue;
            }
            match self.verify_candidate(me, &author, &rkey, &uri).await {
                Ok(()) => {}
                Err(Ignored::Warn(w)) => report.warnings.push(w),
                Err(Ignored::Quiet(w)) => {
                    ignored += 1;
                    tracing::debug!(index = %index.url(), %uri, "backlink index answer ignored: {w}");
                }
            }
        }
        // One line for what a wrong or hostile index said, however much it said.
        if ignored > 0 {
            tracing::warn!(
                index = %index.url(),
                "backlink index: {ignored} of its {total} answers did not check out against their authors' repos and were ignored"
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
            .map_err(|e| Ignored::Warn(format!("circle {uri}: {e}")))?
            .map_err(|e| Ignored::Warn(format!("circle {uri}: {e}")))?;
        tracing::debug!(%uri, "backlink index: a circle naming this account, verified");
        Ok(())
    }
}

/// Why a candidate from the index did not count: in the refresh's warnings (as discovery in
/// known repos reports them), or only in the log (what a wrong or hostile index says).
enum Ignored {
    Warn(String),
    Quiet(String),
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
}
