//! Identity: handle → DID → DID document → PDS endpoint and signing key.
//!
//! did:plc documents come from a PLC directory (configurable); did:web from
//! `https://HOST/.well-known/did.json` (plain http only for `localhost`). Handles
//! resolve through an XRPC `resolveHandle` service when one is configured, DNS
//! TXT `_atproto.HANDLE`, and `https://HANDLE/.well-known/atproto-did`.
//! Documents are cached for an hour; callers re-resolve with `fresh = true`
//! before they declare a signature bad, since the key may have been rotated.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::crypto::PublicKey;

pub const DEFAULT_PLC_URL: &str = "https://plc.directory";
const CACHE_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("'{0}' is not a DID this app supports (did:plc or did:web)")]
    UnsupportedDid(String),
    #[error("'{0}' is not a valid handle")]
    BadHandle(String),
    #[error("could not find the account '{handle}': {reason}")]
    HandleNotFound { handle: String, reason: String },
    #[error("could not fetch the identity document of {did}: {reason}")]
    Fetch { did: String, reason: String },
    #[error("the identity document of {did} is invalid: {reason}")]
    BadDocument { did: String, reason: String },
}

impl IdentityError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Fetch { .. } | Self::HandleNotFound { .. })
    }
}

/// The parts of a DID document a replicator needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DidDoc {
    pub did: String,
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
    plc_url: String,
    resolver_url: Option<String>,
    cache: Mutex<HashMap<String, (DidDoc, Instant)>>,
}

impl Resolver {
    pub fn new(http: reqwest::Client, plc_url: &str, resolver_url: Option<&str>) -> Self {
        Self {
            http,
            plc_url: plc_url.trim_end_matches('/').to_string(),
            resolver_url: resolver_url.map(|u| u.trim_end_matches('/').to_string()),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The PLC directory this resolver reads `did:plc` documents from.
    pub fn plc_url(&self) -> &str {
        &self.plc_url
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
        let url = if did.starts_with("did:plc:") {
            format!("{}/{}", self.plc_url, did)
        } else if let Some(host) = did.strip_prefix("did:web:") {
            let host = host.replace("%3A", ":");
            if host.contains(':') && !host.starts_with("localhost:") {
                return Err(IdentityError::UnsupportedDid(did.to_string()));
            }
            let scheme = if host.starts_with("localhost") {
                "http"
            } else {
                "https"
            };
            format!("{scheme}://{host}/.well-known/did.json")
        } else {
            return Err(IdentityError::UnsupportedDid(did.to_string()));
        };
        let fetch_err = |reason: String| IdentityError::Fetch {
            did: did.to_string(),
            reason,
        };
        // Read up to a stated size, within a deadline: a document is a few kilobytes.
        let value: Value = crate::xrpc::Client::new(self.http.clone())
            .document(&url, crate::xrpc::DID_DOC_LIMIT)
            .await
            .map_err(|e| fetch_err(e.to_string()))?;
        let doc = DidDoc::parse(did, &value)?;
        if let Ok(mut cache) = self.cache.lock() {
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
        let mut reasons = Vec::new();
        if let Some(url) = &self.resolver_url {
            match self.resolve_via_xrpc(url, &handle).await {
                Ok(did) => return Ok(did),
                Err(e) => reasons.push(format!("{url}: {e}")),
            }
        }
        if !is_reserved(&handle) {
            match resolve_via_dns(&handle).await {
                Ok(did) => return Ok(did),
                Err(e) => reasons.push(format!("DNS: {e}")),
            }
            let url = format!("https://{handle}/.well-known/atproto-did");
            match self.http.get(&url).send().await {
                Ok(resp) if resp.status().is_success() => {
                    let text = resp.text().await.unwrap_or_default();
                    let did = text.trim();
                    if did.starts_with("did:") {
                        return Ok(did.to_string());
                    }
                    reasons.push(format!("{url}: not a DID"));
                }
                Ok(resp) => reasons.push(format!("{url}: {}", resp.status())),
                Err(e) => reasons.push(format!("{url}: {e}")),
            }
        }
        Err(IdentityError::HandleNotFound {
            handle,
            reason: if reasons.is_empty() {
                "no way to look it up: pass --resolver-url".into()
            } else {
                reasons.join("; ")
            },
        })
    }

    async fn resolve_via_xrpc(&self, base: &str, handle: &str) -> Result<String, String> {
        let v: Value = crate::xrpc::Client::new(self.http.clone())
            .get(
                base,
                "com.atproto.identity.resolveHandle",
                &[("handle", handle)],
            )
            .await
            .map_err(|e| e.to_string())?;
        v.get("did")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| "no did in the answer".to_string())
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
}

async fn resolve_via_dns(handle: &str) -> Result<String, String> {
    let resolver = hickory_resolver::TokioAsyncResolver::tokio_from_system_conf()
        .map_err(|e| e.to_string())?;
    let lookup = tokio::time::timeout(
        Duration::from_secs(5),
        resolver.txt_lookup(format!("_atproto.{handle}.")),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|e| e.to_string())?;
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
    Err("no did= TXT record".into())
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
}
