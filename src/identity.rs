//! Identity: handle → DID → DID document → PDS endpoint and signing key.
//!
//! did:plc documents come from a PLC directory (configurable); did:web from
//! `https://HOST/.well-known/did.json`, redirects refused (as the reference identity library
//! does), plain http only for loopback hosts and only when a caller allows it explicitly
//! ([`Resolver::allow_loopback_http`], for tests). Handles
//! resolve through an XRPC `resolveHandle` service when one is configured, DNS
//! TXT `_atproto.HANDLE`, and `https://HANDLE/.well-known/atproto-did`.
//! Documents are cached for an hour; callers re-resolve with `fresh = true`
//! before they declare a signature bad, since the key may have been rotated.
//!
//! A document's handle (`alsoKnownAs`) is only what the account claims: anyone can write any
//! handle there. A handle is shown for an account only once it resolves back to the same DID
//! ([`Resolver::verified_handle`], cached like documents); otherwise the account is called by
//! [`short_name`] ("account abcdef…").

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::crypto::PublicKey;

pub const DEFAULT_PLC_URL: &str = "https://plc.directory";
const CACHE_TTL: Duration = Duration::from_secs(3600);
/// How long a handle check that could not be completed (a lookup unreachable, the document not
/// fetched) is remembered: shorter than an answer, so a handle shows soon after the network
/// comes back, without a lookup on every pass meanwhile.
const UNCHECKED_TTL: Duration = Duration::from_secs(600);
/// Accounts remembered at most, in each of the resolver's caches (documents, checked
/// handles): past it, expired answers go, then the oldest.
const CACHE_MAX: usize = 4096;

/// Makes room in a cache for one more answer: expired ones go, then the oldest.
fn make_room<V>(cache: &mut HashMap<String, V>, at: impl Fn(&V) -> (Instant, Duration)) {
    if cache.len() < CACHE_MAX {
        return;
    }
    cache.retain(|_, v| {
        let (when, ttl) = at(v);
        when.elapsed() < ttl
    });
    while cache.len() >= CACHE_MAX {
        let Some(oldest) = cache
            .iter()
            .min_by_key(|(_, v)| at(v).0)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        cache.remove(&oldest);
    }
}

/// The name of an account whose handle is not known (or not verified): "account abcdef…",
/// the start of the DID's last part, as the app calls such accounts elsewhere.
pub fn short_name(did: &str) -> String {
    let tail = did.rsplit(':').next().unwrap_or(did);
    format!("account {}…", tail.chars().take(6).collect::<String>())
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("'{0}' is not a DID this app supports (did:plc or did:web)")]
    UnsupportedDid(String),
    #[error("'{0}' is not a valid handle")]
    BadHandle(String),
    /// Every way of looking the handle up answered, and none knows it. `reason` is what each
    /// said (for logs; the words are for people).
    #[error("There is no Bluesky account called {handle}. Check the spelling (it looks like name.bsky.social).")]
    HandleNotFound { handle: String, reason: String },
    /// No way of looking the handle up could be reached (offline, or DNS failing).
    #[error("Couldn't reach the internet to find {handle}. Check your connection and try again.")]
    HandleUnreachable { handle: String, reason: String },
    #[error("could not fetch the identity document of {did}: {reason}")]
    Fetch { did: String, reason: String },
    #[error("the identity document of {did} is invalid: {reason}")]
    BadDocument { did: String, reason: String },
}

impl IdentityError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Fetch { .. } | Self::HandleNotFound { .. } | Self::HandleUnreachable { .. }
        )
    }
}

/// How one way of looking a handle up ended without a DID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Miss {
    /// It could not be asked (no network, a timeout, a server failing).
    Unreachable,
    /// It answered: no such name.
    NoSuchName,
}

impl Miss {
    /// An HTTP lookup's failure: reached only when something answered that it does not know
    /// the name (a 4xx, or an answer that is not a DID).
    fn of_http(e: &crate::xrpc::XrpcError) -> Miss {
        use crate::xrpc::XrpcError as X;
        match e {
            X::Network { .. } | X::Timeout { .. } => Miss::Unreachable,
            X::Status { status, .. } if *status >= 500 => Miss::Unreachable,
            _ => Miss::NoSuchName,
        }
    }

    /// A DNS lookup's failure: a name server that says the name or its record does not exist
    /// answered; a timeout, an IO error or a failing server (SERVFAIL, as a local stub
    /// resolver answers when offline) did not.
    fn of_dns(e: &hickory_resolver::error::ResolveError) -> Miss {
        use hickory_resolver::error::ResolveErrorKind as K;
        use hickory_resolver::proto::op::ResponseCode;
        match e.kind() {
            K::NoRecordsFound { response_code, .. }
                if matches!(
                    *response_code,
                    ResponseCode::NXDomain | ResponseCode::NoError
                ) =>
            {
                Miss::NoSuchName
            }
            _ => Miss::Unreachable,
        }
    }
}

/// The error for a handle no lookup resolved: unreachable when none of them could be asked,
/// not found when one answered (a typo in the name is not a network failure).
fn unresolved(handle: String, misses: Vec<(Miss, String)>) -> IdentityError {
    let offline = !misses.is_empty() && misses.iter().all(|(m, _)| *m == Miss::Unreachable);
    let reason = if misses.is_empty() {
        "no way to look it up: pass --resolver-url".into()
    } else {
        misses
            .into_iter()
            .map(|(_, r)| r)
            .collect::<Vec<_>>()
            .join("; ")
    };
    if offline {
        IdentityError::HandleUnreachable { handle, reason }
    } else {
        IdentityError::HandleNotFound { handle, reason }
    }
}

/// The parts of a DID document a replicator needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DidDoc {
    pub did: String,
    /// The handle the document claims (`alsoKnownAs`), unverified: see
    /// [`Resolver::verified_handle`] before showing it.
    pub handle: Option<String>,
    pub pds: Option<String>,
    pub signing_key: Option<PublicKey>,
}

impl DidDoc {
    pub fn parse(did: &str, doc: &Value) -> Result<Self, IdentityError> {
        let bad = |reason: &str| IdentityError::BadDocument {
            did: did.to_string(),
            reason: reason.to_string(),
        };
        if doc.get("id").and_then(Value::as_str) != Some(did) {
            return Err(bad("its id does not match the DID"));
        }
        let handle = doc
            .get("alsoKnownAs")
            .and_then(Value::as_array)
            .and_then(|aka| {
                aka.iter()
                    .filter_map(Value::as_str)
                    .find_map(|s| s.strip_prefix("at://"))
            })
            .map(str::to_string);
        let matches_fragment = |id: Option<&str>, frag: &str| {
            id.is_some_and(|id| id == frag || id == format!("{did}{frag}"))
        };
        let pds = doc
            .get("service")
            .and_then(Value::as_array)
            .and_then(|services| {
                services
                    .iter()
                    .find(|s| matches_fragment(s.get("id").and_then(Value::as_str), "#atproto_pds"))
            })
            .and_then(|s| s.get("serviceEndpoint").and_then(Value::as_str))
            .map(|s| s.trim_end_matches('/').to_string());
        let signing_key = match doc
            .get("verificationMethod")
            .and_then(Value::as_array)
            .and_then(|methods| {
                methods
                    .iter()
                    .find(|m| matches_fragment(m.get("id").and_then(Value::as_str), "#atproto"))
            }) {
            Some(method) => {
                let kind = method
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("Multikey");
                let value = method
                    .get("publicKeyMultibase")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("the #atproto key has no publicKeyMultibase"))?;
                Some(
                    PublicKey::from_verification_method(kind, value)
                        .map_err(|e| bad(&format!("the #atproto key is unusable: {e}")))?,
                )
            }
            None => None,
        };
        Ok(Self {
            did: did.to_string(),
            handle,
            pds,
            signing_key,
        })
    }
}

/// Checks handle syntax (a DNS name with at least two labels).
pub fn valid_handle(handle: &str) -> bool {
    let labels: Vec<&str> = handle.split('.').collect();
    handle.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels.last().is_some_and(|tld| {
            tld.as_bytes()
                .first()
                .is_some_and(|b| b.is_ascii_alphabetic())
        })
}

/// Names under these suffixes never exist in public DNS.
fn is_reserved(handle: &str) -> bool {
    [".test", ".local", ".localhost", ".invalid", ".example"]
        .iter()
        .any(|s| handle.ends_with(s))
}

#[derive(Debug)]
pub struct Resolver {
    http: reqwest::Client,
    /// For did:web documents: the same timeouts, and no redirect is followed.
    web_http: Result<reqwest::Client, String>,
    plc_url: String,
    resolver_url: Option<String>,
    loopback_http: bool,
    cache: Mutex<HashMap<String, (DidDoc, Instant)>>,
    /// DID → its verified handle (None: no handle, or one that does not resolve back), when
    /// checked, and for how long the answer holds.
    handles: Mutex<HashMap<String, HandleCheck>>,
}

/// One handle check, remembered.
#[derive(Clone, Debug)]
struct HandleCheck {
    handle: Option<String>,
    at: Instant,
    ttl: Duration,
}

/// The address of a did:web document: `https://HOST/.well-known/did.json`. A port is allowed
/// for loopback hosts only, and plain http only there and only when `loopback_http` is set.
pub fn did_web_url(did: &str, loopback_http: bool) -> Result<String, IdentityError> {
    let unsupported = || IdentityError::UnsupportedDid(did.to_string());
    let host = did
        .strip_prefix("did:web:")
        .ok_or_else(unsupported)?
        .replace("%3A", ":");
    // A path (did:web:host:path) is not used by atproto accounts.
    let name = host.split(':').next().unwrap_or_default();
    let loopback = matches!(name, "localhost" | "127.0.0.1" | "[::1]");
    if name.is_empty() || (host.contains(':') && !loopback) {
        return Err(unsupported());
    }
    let scheme = if loopback && loopback_http {
        "http"
    } else {
        "https"
    };
    Ok(format!("{scheme}://{host}/.well-known/did.json"))
}

impl Resolver {
    pub fn new(http: reqwest::Client, plc_url: &str, resolver_url: Option<&str>) -> Self {
        let web_http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string());
        Self {
            http,
            web_http,
            plc_url: plc_url.trim_end_matches('/').to_string(),
            resolver_url: resolver_url.map(|u| u.trim_end_matches('/').to_string()),
            loopback_http: false,
            cache: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
        }
    }

    /// Lets did:web documents on loopback hosts (`localhost`, `127.0.0.1`) come over plain
    /// http: for tests and local development only; every other did:web needs https.
    pub fn allow_loopback_http(mut self, allow: bool) -> Self {
        self.loopback_http = allow;
        self
    }

    /// The PLC directory this resolver reads `did:plc` documents from.
    pub fn plc_url(&self) -> &str {
        &self.plc_url
    }

    /// Drops what the cache holds for `did` (its server said the identity changed), so the
    /// next resolution reads the document again.
    pub fn forget(&self, did: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(did);
        }
        if let Ok(mut handles) = self.handles.lock() {
            handles.remove(did);
        }
    }

    /// The handle of `did` as far as it is already checked, without asking the network:
    /// `Some(None)` when checked and there is no handle to show, `None` when not checked (or
    /// the check is out of date).
    pub fn checked_handle(&self, did: &str) -> Option<Option<String>> {
        let handles = self.handles.lock().ok()?;
        let check = handles.get(did)?;
        (check.at.elapsed() < check.ttl).then(|| check.handle.clone())
    }

    /// The handle to show for `did`: the one its DID document claims, only when that handle
    /// resolves back to `did` (a document can claim any handle; the handle's own DNS or web
    /// answer is what the handle's owner controls). `None` when the document claims none, or
    /// one that names another account or no account, or when either lookup failed. The answer
    /// is cached like documents (a failed lookup for a shorter time), so showing a name
    /// again costs no lookup.
    pub async fn verified_handle(&self, did: &str) -> Option<String> {
        if let Some(known) = self.checked_handle(did) {
            return known;
        }
        let (handle, ttl) = self.check_handle(did).await;
        if let Ok(mut handles) = self.handles.lock() {
            make_room(&mut handles, |c: &HandleCheck| (c.at, c.ttl));
            handles.insert(
                did.to_string(),
                HandleCheck {
                    handle: handle.clone(),
                    at: Instant::now(),
                    ttl,
                },
            );
        }
        handle
    }

    /// [`Resolver::verified_handle`] without its cache: the handle, and how long the answer
    /// holds.
    async fn check_handle(&self, did: &str) -> (Option<String>, Duration) {
        let claimed = match self.resolve_did(did, false).await {
            Ok(doc) => doc.handle,
            Err(e) if e.is_retryable() => return (None, UNCHECKED_TTL),
            Err(_) => return (None, CACHE_TTL),
        };
        let Some(claimed) = claimed.map(|h| h.to_ascii_lowercase()) else {
            return (None, CACHE_TTL);
        };
        match self.resolve_handle(&claimed).await {
            Ok(back) if back == did => (Some(claimed), CACHE_TTL),
            Ok(other) => {
                tracing::warn!(did, handle = %claimed, resolves_to = %other, "the handle an identity document claims belongs to another account: not shown");
                (None, CACHE_TTL)
            }
            // Not found may be a handle just set whose record has not spread yet.
            Err(
                e
                @ (IdentityError::HandleUnreachable { .. } | IdentityError::HandleNotFound { .. }),
            ) => {
                tracing::debug!(did, handle = %claimed, error = %e, "the handle an identity document claims could not be checked: not shown for now");
                (None, UNCHECKED_TTL)
            }
            Err(e) => {
                tracing::debug!(did, handle = %claimed, error = %e, "the handle an identity document claims does not resolve: not shown");
                (None, CACHE_TTL)
            }
        }
    }

    /// Resolves a DID to its document; `fresh` bypasses the cache.
    pub async fn resolve_did(&self, did: &str, fresh: bool) -> Result<DidDoc, IdentityError> {
        if !fresh {
            if let Ok(cache) = self.cache.lock() {
                if let Some((doc, at)) = cache.get(did) {
                    if at.elapsed() < CACHE_TTL {
                        return Ok(doc.clone());
                    }
                }
            }
        }
        let fetch_err = |reason: String| IdentityError::Fetch {
            did: did.to_string(),
            reason,
        };
        let (url, http) = if did.starts_with("did:plc:") {
            (format!("{}/{}", self.plc_url, did), self.http.clone())
        } else if did.starts_with("did:web:") {
            let url = did_web_url(did, self.loopback_http)?;
            (url, self.web_http.clone().map_err(fetch_err)?)
        } else {
            return Err(IdentityError::UnsupportedDid(did.to_string()));
        };
        // Read up to a stated size, within a deadline: a document is a few kilobytes.
        let value: Value = crate::xrpc::Client::new(http)
            .document(&url, crate::xrpc::DID_DOC_LIMIT)
            .await
            .map_err(|e| match e {
                crate::xrpc::XrpcError::Status { status, .. } if (300..400).contains(&status) => {
                    fetch_err(format!(
                        "{url} answered with a redirect ({status}), which is refused: a did:web \
                         document must be served at its own address"
                    ))
                }
                e => fetch_err(e.to_string()),
            })?;
        let doc = DidDoc::parse(did, &value)?;
        if let Ok(mut cache) = self.cache.lock() {
            make_room(&mut cache, |(_, at): &(DidDoc, Instant)| (*at, CACHE_TTL));
            cache.insert(did.to_string(), (doc.clone(), Instant::now()));
        }
        Ok(doc)
    }

    /// Resolves a handle to a DID, trying each method in turn.
    pub async fn resolve_handle(&self, handle: &str) -> Result<String, IdentityError> {
        let handle = handle.trim_start_matches('@').to_ascii_lowercase();
        if !valid_handle(&handle) {
            return Err(IdentityError::BadHandle(handle));
        }
        let mut misses = Vec::new();
        if let Some(url) = &self.resolver_url {
            match self.resolve_via_xrpc(url, &handle).await {
                Ok(did) => return Ok(did),
                Err((miss, e)) => misses.push((miss, format!("{url}: {e}"))),
            }
        }
        if !is_reserved(&handle) {
            match resolve_via_dns(&handle).await {
                Ok(did) => return Ok(did),
                Err((miss, e)) => misses.push((miss, format!("DNS: {e}"))),
            }
            let url = format!("https://{handle}/.well-known/atproto-did");
            // A DID is short: the answer is read up to a few kilobytes, within the deadline.
            let client = crate::xrpc::Client::new(self.http.clone());
            let deadline = tokio::time::Instant::now() + crate::xrpc::DEADLINE;
            let answer = match client.send(self.http.get(&url), &url, deadline).await {
                Ok(resp) => crate::xrpc::read_capped(resp, &url, 4096, deadline).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let did = text.trim();
                    if did.starts_with("did:") {
                        return Ok(did.to_string());
                    }
                    misses.push((Miss::NoSuchName, format!("{url}: not a DID")));
                }
                Err(e) => misses.push((Miss::of_http(&e), e.to_string())),
            }
        }
        Err(unresolved(handle, misses))
    }

    async fn resolve_via_xrpc(&self, base: &str, handle: &str) -> Result<String, (Miss, String)> {
        let v: Value = crate::xrpc::Client::new(self.http.clone())
            .get(
                base,
                "com.atproto.identity.resolveHandle",
                &[("handle", handle)],
            )
            .await
            .map_err(|e| (Miss::of_http(&e), e.to_string()))?;
        v.get("did")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| (Miss::NoSuchName, "no did in the answer".to_string()))
    }

    /// Resolves a handle or DID to a DID and its document.
    pub async fn resolve_account(&self, who: &str) -> Result<DidDoc, IdentityError> {
        let did = if who.starts_with("did:") {
            who.to_string()
        } else {
            self.resolve_handle(who).await?
        };
        self.resolve_did(&did, false).await
    }

    /// [`Resolver::resolve_account`], with the handle to call the account by: the handle
    /// looked up, when the document it led to claims it back (both directions checked);
    /// otherwise the document's claimed handle once it resolves back to the DID
    /// ([`Resolver::verified_handle`]); `None` when no handle checks out.
    pub async fn resolve_account_named(
        &self,
        who: &str,
    ) -> Result<(DidDoc, Option<String>), IdentityError> {
        let doc = self.resolve_account(who).await?;
        let typed = who.trim_start_matches('@');
        let handle = match &doc.handle {
            Some(claimed) if !who.starts_with("did:") && claimed.eq_ignore_ascii_case(typed) => {
                Some(claimed.to_ascii_lowercase())
            }
            _ => self.verified_handle(&doc.did).await,
        };
        Ok((doc, handle))
    }
}

async fn resolve_via_dns(handle: &str) -> Result<String, (Miss, String)> {
    let resolver = hickory_resolver::TokioAsyncResolver::tokio_from_system_conf()
        .map_err(|e| (Miss::of_dns(&e), e.to_string()))?;
    let lookup = tokio::time::timeout(
        Duration::from_secs(5),
        resolver.txt_lookup(format!("_atproto.{handle}.")),
    )
    .await
    .map_err(|_| (Miss::Unreachable, "timed out".to_string()))?
    .map_err(|e| (Miss::of_dns(&e), e.to_string()))?;
    for txt in lookup.iter() {
        let text: String = txt
            .txt_data()
            .iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect();
        if let Some(did) = text.strip_prefix("did=") {
            return Ok(did.to_string());
        }
    }
    Err((Miss::NoSuchName, "no did= TXT record".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_pds_key_and_handle() {
        let key = crate::crypto::SigningKey::generate_k256().public_key();
        let doc = json!({
            "id": "did:plc:abc",
            "alsoKnownAs": ["at://alice.test"],
            "verificationMethod": [{
                "id": "did:plc:abc#atproto", "type": "Multikey",
                "controller": "did:plc:abc", "publicKeyMultibase": key.to_multikey()
            }],
            "service": [{
                "id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "http://localhost:2583/"
            }]
        });
        let parsed = DidDoc::parse("did:plc:abc", &doc).unwrap();
        assert_eq!(parsed.handle.as_deref(), Some("alice.test"));
        assert_eq!(parsed.pds.as_deref(), Some("http://localhost:2583"));
        assert_eq!(parsed.signing_key, Some(key));
        assert!(DidDoc::parse("did:plc:other", &doc).is_err());
    }

    #[rstest::rstest]
    #[case::https(
        "did:web:example.com",
        false,
        Ok("https://example.com/.well-known/did.json")
    )]
    #[case::loopback_needs_the_setting(
        "did:web:localhost%3A2583",
        false,
        Ok("https://localhost:2583/.well-known/did.json")
    )]
    #[case::loopback_http(
        "did:web:127.0.0.1%3A2583",
        true,
        Ok("http://127.0.0.1:2583/.well-known/did.json")
    )]
    #[case::other_hosts_stay_https(
        "did:web:example.com",
        true,
        Ok("https://example.com/.well-known/did.json")
    )]
    #[case::no_port_elsewhere("did:web:example.com%3A8080", true, Err(()))]
    #[case::lookalike("did:web:localhost.evil.com%3A80", true, Err(()))]
    #[case::empty("did:web:", true, Err(()))]
    fn did_web_is_https_unless_loopback_http_is_allowed(
        #[case] did: &str,
        #[case] loopback_http: bool,
        #[case] url: Result<&str, ()>,
    ) {
        assert_eq!(
            did_web_url(did, loopback_http).map_err(|_| ()),
            url.map(str::to_string)
        );
    }

    /// A did:web server on loopback: `/.well-known/did.json` redirects to `/moved.json`, which
    /// serves a valid document; `/direct/…` is not used (the path is fixed by the method).
    async fn web_server(redirect: bool) -> String {
        use axum::response::IntoResponse;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let did = format!("did:web:127.0.0.1%3A{port}");
        let key = crate::crypto::SigningKey::generate_k256().public_key();
        let doc = json!({
            "id": did,
            "verificationMethod": [{
                "id": format!("{did}#atproto"), "type": "Multikey",
                "controller": did, "publicKeyMultibase": key.to_multikey()
            }],
            "service": [{
                "id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://pds.example.com"
            }]
        });
        let moved = doc.clone();
        let app = axum::Router::new()
            .route(
                "/.well-known/did.json",
                axum::routing::get(move || async move {
                    if redirect {
                        axum::response::Redirect::temporary("/moved.json").into_response()
                    } else {
                        axum::Json(doc).into_response()
                    }
                }),
            )
            .route(
                "/moved.json",
                axum::routing::get(move || async move { axum::Json(moved) }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        did
    }

    #[tokio::test]
    async fn a_did_web_redirect_is_refused() {
        let resolver = || Resolver::new(reqwest::Client::new(), DEFAULT_PLC_URL, None);
        let direct = web_server(false).await;
        let doc = resolver()
            .allow_loopback_http(true)
            .resolve_did(&direct, true)
            .await
            .unwrap();
        assert_eq!(doc.pds.as_deref(), Some("https://pds.example.com"));
        let moved = web_server(true).await;
        let err = resolver()
            .allow_loopback_http(true)
            .resolve_did(&moved, true)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("redirect") && err.contains("refused"), "{err}");
        // Without the setting, the loopback host is asked over https (which it does not speak).
        let err = resolver().resolve_did(&direct, true).await.unwrap_err();
        assert!(err.to_string().contains("https://127.0.0.1"), "{err}");
    }

    fn status(status: u16) -> crate::xrpc::XrpcError {
        crate::xrpc::XrpcError::Status {
            url: "https://x/xrpc/y".into(),
            status,
            error: "Bad Request".into(),
            message: String::new(),
        }
    }

    #[rstest::rstest]
    #[case::offline(
        crate::xrpc::XrpcError::Network { url: "https://x".into(), reason: "dns error".into() },
        Miss::Unreachable
    )]
    #[case::late(
        crate::xrpc::XrpcError::Timeout { url: "https://x".into(), secs: 60 },
        Miss::Unreachable
    )]
    #[case::server_failing(status(502), Miss::Unreachable)]
    #[case::unknown_name(status(400), Miss::NoSuchName)]
    #[case::no_page(status(404), Miss::NoSuchName)]
    fn an_http_lookup_failed_or_answered(#[case] e: crate::xrpc::XrpcError, #[case] want: Miss) {
        assert_eq!(Miss::of_http(&e), want);
    }

    #[test]
    fn a_dns_lookup_failed_or_answered() {
        use hickory_resolver::error::{ResolveError, ResolveErrorKind};
        use hickory_resolver::proto::op::{Query, ResponseCode};
        let none = |code| {
            ResolveError::from(ResolveErrorKind::NoRecordsFound {
                query: Box::new(Query::new()),
                soa: None,
                negative_ttl: None,
                response_code: code,
                trusted: true,
            })
        };
        assert_eq!(
            Miss::of_dns(&none(ResponseCode::NXDomain)),
            Miss::NoSuchName
        );
        assert_eq!(Miss::of_dns(&none(ResponseCode::NoError)), Miss::NoSuchName);
        assert_eq!(
            Miss::of_dns(&none(ResponseCode::ServFail)),
            Miss::Unreachable
        );
        let timeout = ResolveError::from(ResolveErrorKind::Timeout);
        assert_eq!(Miss::of_dns(&timeout), Miss::Unreachable);
    }

    #[rstest::rstest]
    #[case::offline(
        &[Miss::Unreachable, Miss::Unreachable],
        "Couldn't reach the internet to find alice.example. Check your connection and try again."
    )]
    #[case::unknown(
        &[Miss::NoSuchName, Miss::NoSuchName],
        "There is no Bluesky account called alice.example. Check the spelling (it looks like name.bsky.social)."
    )]
    // DNS said the name does not exist; the web lookup could not connect to a host that
    // does not exist either: a typo, not a network failure.
    #[case::typo(
        &[Miss::NoSuchName, Miss::Unreachable],
        "There is no Bluesky account called alice.example. Check the spelling (it looks like name.bsky.social)."
    )]
    fn an_unresolved_handle_in_words(#[case] misses: &[Miss], #[case] want: &str) {
        let misses = misses.iter().map(|m| (*m, "Query { name: … }".to_string()));
        let e = unresolved("alice.example".into(), misses.collect());
        assert_eq!(e.to_string(), want);
        assert!(!e.to_string().contains("Query"));
    }

    #[tokio::test]
    async fn a_handle_lookup_offline_or_refused_says_which() {
        let answering = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let app = axum::Router::new().route(
                "/xrpc/com.atproto.identity.resolveHandle",
                axum::routing::get(|| async {
                    (
                        axum::http::StatusCode::BAD_REQUEST,
                        axum::Json(json!({"error": "InvalidRequest", "message": "Unable to resolve handle"})),
                    )
                }),
            );
            tokio::spawn(async move { axum::serve(listener, app).await });
            url
        };
        let lookup = |url: String| async move {
            Resolver::new(reqwest::Client::new(), DEFAULT_PLC_URL, Some(&url))
                .resolve_handle("alice.example")
                .await
                .unwrap_err()
        };
        // Nothing listens on the discard port: as if offline.
        let offline = lookup("http://127.0.0.1:9".into()).await;
        assert!(
            matches!(offline, IdentityError::HandleUnreachable { .. }),
            "{offline:?}"
        );
        let unknown = lookup(answering).await;
        assert!(
            matches!(unknown, IdentityError::HandleNotFound { .. }),
            "{unknown:?}"
        );
        assert!(!unknown.to_string().contains("400"), "{unknown}");
    }

    /// A PLC directory and a handle resolver in one loopback server: each DID's document
    /// claims a handle (`alsoKnownAs`), and `resolveHandle` answers for the handles that
    /// exist. Returns the server's address and a count of the handle lookups it answered.
    async fn directory() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use axum::response::IntoResponse;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let claims = [
            ("did:plc:honest", Some("at://alice.test")),
            // Claims Alice's handle, which resolves to Alice's account.
            ("did:plc:liar", Some("at://alice.test")),
            // Claims a handle that no account has.
            ("did:plc:ghost", Some("at://ghost.test")),
            ("did:plc:quiet", None),
            ("did:plc:upper", Some("at://Bob.Test")),
        ];
        let handles = [
            ("alice.test", "did:plc:honest"),
            ("bob.test", "did:plc:upper"),
        ];
        let lookups = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = lookups.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| async move {
            let path = uri.path().trim_start_matches('/');
            if path == "xrpc/com.atproto.identity.resolveHandle" {
                counted.fetch_add(1, Ordering::SeqCst);
                let asked = uri.query().unwrap_or_default().replace("handle=", "");
                return match handles.iter().find(|(h, _)| *h == asked) {
                    Some((_, did)) => axum::Json(json!({ "did": did })).into_response(),
                    None => (
                        axum::http::StatusCode::BAD_REQUEST,
                        axum::Json(json!({"error": "InvalidRequest", "message": "Unable to resolve handle"})),
                    )
                        .into_response(),
                };
            }
            match claims.iter().find(|(did, _)| *did == path) {
                Some((did, aka)) => {
                    let aka: Vec<&str> = aka.iter().copied().collect();
                    axum::Json(json!({ "id": did, "alsoKnownAs": aka })).into_response()
                }
                None => axum::http::StatusCode::NOT_FOUND.into_response(),
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, lookups)
    }

    #[tokio::test]
    async fn a_handle_is_shown_only_when_it_resolves_back_to_the_account() {
        use std::sync::atomic::Ordering;
        let (url, lookups) = directory().await;
        let resolver = Resolver::new(reqwest::Client::new(), &url, Some(&url));
        // Each document claims its handle; only a handle that names the same DID is shown.
        for (did, want) in [
            ("did:plc:honest", Some("alice.test")),
            ("did:plc:liar", None),
            ("did:plc:ghost", None),
            ("did:plc:quiet", None),
            ("did:plc:upper", Some("bob.test")),
            // No document at all.
            ("did:plc:missing", None),
        ] {
            assert_eq!(
                resolver.verified_handle(did).await.as_deref(),
                want,
                "{did}"
            );
        }
        // The liar's document claims a handle anyway: the claim is not what is shown.
        let liar = resolver.resolve_did("did:plc:liar", false).await.unwrap();
        assert_eq!(liar.handle.as_deref(), Some("alice.test"));
        // Checked once: asking again is answered from the cache, without a lookup.
        let asked = lookups.load(Ordering::SeqCst);
        assert_eq!(asked, 4, "one lookup per claimed handle");
        for did in ["did:plc:honest", "did:plc:liar", "did:plc:ghost"] {
            resolver.verified_handle(did).await;
        }
        assert_eq!(lookups.load(Ordering::SeqCst), asked);
        assert_eq!(
            resolver.checked_handle("did:plc:honest"),
            Some(Some("alice.test".to_string()))
        );
        assert_eq!(resolver.checked_handle("did:plc:liar"), Some(None));
        assert_eq!(resolver.checked_handle("did:plc:never-asked"), None);
        // The identity changed: checked again.
        resolver.forget("did:plc:honest");
        assert_eq!(resolver.checked_handle("did:plc:honest"), None);
        assert_eq!(
            resolver.verified_handle("did:plc:honest").await.as_deref(),
            Some("alice.test")
        );
        assert_eq!(lookups.load(Ordering::SeqCst), asked + 1);
    }

    #[tokio::test]
    async fn an_account_looked_up_is_named_by_a_handle_that_checks_out() {
        let (url, _) = directory().await;
        let resolver = Resolver::new(reqwest::Client::new(), &url, Some(&url));
        let named = |who: &'static str| {
            let r = &resolver;
            async move {
                let (doc, handle) = r.resolve_account_named(who).await.unwrap();
                (doc.did, handle)
            }
        };
        // The handle typed leads to the account, whose document claims it back.
        assert_eq!(
            named("@Alice.Test").await,
            ("did:plc:honest".into(), Some("alice.test".into()))
        );
        // By DID: the claimed handle is shown once it resolves back.
        assert_eq!(
            named("did:plc:upper").await,
            ("did:plc:upper".into(), Some("bob.test".into()))
        );
        // A document claiming someone else's handle, or a handle nobody has: no handle.
        assert_eq!(named("did:plc:liar").await, ("did:plc:liar".into(), None));
        assert_eq!(named("did:plc:ghost").await, ("did:plc:ghost".into(), None));
    }

    #[test]
    fn an_account_without_a_handle_has_a_short_name() {
        assert_eq!(
            short_name("did:plc:abcdefghijklmnopqrstuvwx"),
            "account abcdef…"
        );
        assert_eq!(short_name("did:web:example.com"), "account exampl…");
    }

    #[test]
    fn handle_syntax_matches_interop_fixtures() {
        let Some(dir) = crate::testdata::interop_dir() else {
            return;
        };
        let read = |f: &str| std::fs::read_to_string(dir.join("syntax").join(f)).unwrap();
        for line in read("handle_syntax_valid.txt").lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            assert!(
                valid_handle(&line.to_ascii_lowercase()),
                "valid handle refused: {line}"
            );
        }
        for line in read("handle_syntax_invalid.txt").lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            assert!(!valid_handle(line), "invalid handle accepted: {line}");
        }
    }

    #[test]
    fn a_cache_keeps_at_most_its_limit_dropping_the_expired_then_the_oldest() {
        let now = Instant::now();
        let mut cache: HashMap<String, (Instant, Duration)> = HashMap::new();
        for i in 0..CACHE_MAX {
            cache.insert(format!("did:plc:{i}"), (now, CACHE_TTL));
        }
        // One expired answer goes first.
        cache.insert("did:plc:old".into(), (now, Duration::ZERO));
        cache.remove("did:plc:0");
        make_room(&mut cache, |v| *v);
        assert_eq!(cache.len(), CACHE_MAX - 1);
        assert!(!cache.contains_key("did:plc:old"));
        // Full of live answers: the oldest goes.
        cache.insert(
            "did:plc:0".into(),
            (now - Duration::from_secs(1), CACHE_TTL),
        );
        make_room(&mut cache, |v| *v);
        assert_eq!(cache.len(), CACHE_MAX - 1);
        assert!(!cache.contains_key("did:plc:0"));
    }
}
