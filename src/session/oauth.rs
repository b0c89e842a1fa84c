//! Signing in with OAuth, as the atproto OAuth profile asks of a native app: the account's
//! handle (or DID) → its PDS → the PDS's authorization server (`/.well-known/…` metadata) →
//! a pushed authorization request (PAR) with PKCE and a DPoP key → the server's sign-in page in
//! the person's browser → its answer at a loopback address this node listens on
//! (`http://127.0.0.1:PORT/callback`) → tokens bound to the DPoP key.
//!
//! P2PDS asks for the least it uses ([`SCOPE`]): `atproto` and writing its own `org.p2pds.*`
//! collections, nothing else. A server that refuses those scopes is said to in words, with the
//! app-password path offered instead; P2PDS never asks for more.
//!
//! Every answer is checked before anything is kept: the callback's `state` must be the one this
//! sign-in made and its `iss` the server asked; the tokens must be DPoP-bound, for the account
//! the person asked to sign in, and carry the scopes asked for. Otherwise the tokens are revoked
//! and nothing is stored.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::dpop::{self, DpopKey};
use super::{answer, network, SessionError};
use crate::xrpc;

/// What P2PDS asks for: signing in, and creating, changing and deleting records in the
/// collections it writes (policy, acks, status, heartbeats, challenges and their answers).
pub const SCOPE: &str = "atproto repo:org.p2pds.policy repo:org.p2pds.policy.ack \
    repo:org.p2pds.policy.status repo:org.p2pds.peer repo:org.p2pds.challenge \
    repo:org.p2pds.challenge.response";

/// What "Protect your account" asks for, in a second consent when it is set up (never at
/// sign-in): changing the account's identity (adding a recovery key to its rotation keys).
pub const IDENTITY_SCOPE: &str = "atproto identity:*";

/// Every scope this client may ask for (its client metadata's `scope`): the sign-in's and the
/// identity consent's.
pub const CLIENT_SCOPE: &str = "atproto repo:org.p2pds.policy repo:org.p2pds.policy.ack \
    repo:org.p2pds.policy.status repo:org.p2pds.peer repo:org.p2pds.challenge \
    repo:org.p2pds.challenge.response identity:*";

/// The path of the loopback address the server's answer comes back to.
pub const CALLBACK_PATH: &str = "/callback";

/// The request head of the browser's visit to the loopback address, at most.
const HEAD_LIMIT: usize = 16 << 10;

/// A token is renewed this long before it expires.
pub const RENEW_BEFORE_MS: i64 = 60_000;

/// How this build identifies itself to authorization servers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ClientId {
    /// The development client every atproto server knows without a document: `http://localhost`
    /// with the redirect address and scope in its query (for local use and tests).
    #[default]
    Loopback,
    /// A released build: the URL of its published client metadata document
    /// (`contrib/oauth/client-metadata.json`, hosted by the maintainers).
    Hosted(String),
}

impl ClientId {
    /// The `client_id` sent to the server.
    pub fn id(&self) -> String {
        match self {
            ClientId::Loopback => {
                let query: String = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("redirect_uri", &format!("http://127.0.0.1{CALLBACK_PATH}"))
                    .append_pair("scope", CLIENT_SCOPE)
                    .finish();
                format!("http://localhost?{query}")
            }
            ClientId::Hosted(url) => url.clone(),
        }
    }

    /// This build's: the client metadata URL it was built with (`P2PDS_OAUTH_CLIENT_ID` at
    /// build time), else the loopback client.
    pub fn of_build() -> ClientId {
        ClientId::from_setting(option_env!("P2PDS_OAUTH_CLIENT_ID"))
    }

    /// From a configured value: empty means the loopback client.
    pub fn from_setting(value: Option<&str>) -> ClientId {
        match value.map(str::trim) {
            Some(v) if !v.is_empty() => ClientId::Hosted(v.to_string()),
            _ => ClientId::Loopback,
        }
    }
}

/// What an OAuth session keeps beside its tokens (in the secret store, with them).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub issuer: String,
    pub token_endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    pub client_id: String,
    /// The DPoP key the tokens are bound to ([`DpopKey::to_text`]).
    pub dpop_key: String,
    /// When the access token expires (milliseconds since the epoch).
    pub expires_at: i64,
    pub scope: String,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Grant({}, {})", self.issuer, self.scope)
    }
}

impl Grant {
    pub fn key(&self) -> Result<DpopKey, SessionError> {
        DpopKey::from_text(&self.dpop_key).ok_or_else(|| SessionError::OAuth {
            server: self.issuer.clone(),
            message: "the kept DPoP key is damaged: sign in again".into(),
        })
    }

    /// Whether the access token should be renewed before it is used.
    pub fn expiring(&self) -> bool {
        self.expires_at - chrono::Utc::now().timestamp_millis() < RENEW_BEFORE_MS
    }
}

#[derive(Deserialize)]
struct ResourceMeta {
    authorization_servers: Vec<String>,
}

#[derive(Clone, Deserialize)]
struct ServerMeta {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    pushed_authorization_request_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
    #[serde(default)]
    dpop_signing_alg_values_supported: Vec<String>,
}

#[derive(Deserialize)]
pub(crate) struct TokenAnswer {
    pub access_token: String,
    pub token_type: String,
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub scope: String,
    pub expires_in: Option<i64>,
    pub sub: Option<String>,
}

impl TokenAnswer {
    pub fn expires_at(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.expires_in.unwrap_or(300).max(0) * 1000
    }
}

/// A request body.
pub(crate) enum Body<'a> {
    Form(&'a [(&'a str, &'a str)]),
    Json(&'a Value),
    Empty,
}

/// Sends requests with DPoP proofs, remembering each server's latest nonce.
#[derive(Debug)]
pub(crate) struct Dpop {
    pub key: DpopKey,
    nonces: std::sync::Mutex<HashMap<String, String>>,
}

fn origin(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default()
}

impl Dpop {
    pub fn new(key: DpopKey) -> Dpop {
        Dpop {
            key,
            nonces: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn nonce(&self, url: &str) -> Option<String> {
        self.nonces.lock().ok()?.get(&origin(url)).cloned()
    }

    fn remember(&self, url: &str, resp: &reqwest::Response) {
        let Some(n) = resp
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
        else {
            return;
        };
        if let Ok(mut map) = self.nonces.lock() {
            map.insert(origin(url), n.chars().take(256).collect());
        }
    }

    /// `method url` with a proof (and the access token, toward a resource server); an answer
    /// asking for a fresh nonce is tried once more with it. Unsuccessful answers are errors.
    pub async fn send(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        url: &str,
        access: Option<&str>,
        body: Body<'_>,
    ) -> Result<reqwest::Response, SessionError> {
        let deadline = tokio::time::Instant::now() + xrpc::DEADLINE;
        let mut retried = false;
        loop {
            let nonce = self.nonce(url);
            let proof = self
                .key
                .proof(method.as_str(), url, nonce.as_deref(), access);
            let mut req = http.request(method.clone(), url).header("DPoP", proof);
            if let Some(t) = access {
                req = req.header("Authorization", format!("DPoP {t}"));
            }
            req = match &body {
                Body::Form(f) => req.form(f),
                Body::Json(v) => req.json(v),
                Body::Empty => req,
            };
            let resp = tokio::time::timeout_at(deadline, req.send())
                .await
                .map_err(|_| SessionError::Network {
                    url: url.to_string(),
                    reason: format!("no answer within {} s", xrpc::DEADLINE.as_secs()),
                })?
                .map_err(network(url))?;
            self.remember(url, &resp);
            let status = resp.status().as_u16();
            if (200..300).contains(&status) {
                return Ok(resp);
            }
            let asks_nonce = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("use_dpop_nonce"));
            let refused = refusal(resp, url, deadline).await;
            let nonce_error = asks_nonce
                || matches!(&refused, SessionError::Xrpc { error, .. } if error == "use_dpop_nonce");
            if nonce_error && !retried && matches!(status, 400 | 401) {
                retried = true;
                continue;
            }
            return Err(refused);
        }
    }
}

/// An unsuccessful answer as an error: XRPC (`error`, `message`) and OAuth (`error`,
/// `error_description`) alike.
async fn refusal(
    resp: reqwest::Response,
    url: &str,
    deadline: tokio::time::Instant,
) -> SessionError {
    let status = resp.status().as_u16();
    let body = match xrpc::read_capped(resp, url, 64 << 10, deadline).await {
        Ok(b) => b,
        Err(e) => return e.into(),
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(|s| s.chars().take(500).collect())
    };
    SessionError::Xrpc {
        url: url.to_string(),
        status,
        error: field("error").unwrap_or_default(),
        message: field("message")
            .or_else(|| field("error_description"))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect()),
    }
}

/// A sign-in started: the address to open in the browser, and what its answer is checked
/// against. Dropping it cancels the sign-in (the loopback address closes).
pub struct Pending {
    /// The server's sign-in page for this request.
    pub url: String,
    /// The account asked for.
    pub did: String,
    pub handle: Option<String>,
    pub pds: String,
    meta: ServerMeta,
    client_id: String,
    redirect_uri: String,
    state: String,
    verifier: String,
    /// What was asked for (the tokens must carry all of it).
    scope: &'static str,
    dpop: Dpop,
    listener: TcpListener,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({}, {})", self.did, self.url)
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, SessionError> {
    let c = xrpc::Client::new(http.clone());
    Ok(c.document(url, 256 << 10).await?)
}

/// The authorization server of `pds`, from its metadata, checked.
async fn server_of(http: &reqwest::Client, pds: &str) -> Result<ServerMeta, SessionError> {
    let pds = pds.trim_end_matches('/');
    let resource: ResourceMeta =
        get_json(http, &format!("{pds}/.well-known/oauth-protected-resource")).await?;
    let issuer = resource
        .authorization_servers
        .first()
        .map(|s| s.trim_end_matches('/').to_string())
        .ok_or_else(|| SessionError::OAuth {
            server: pds.to_string(),
            message: "it names no authorization server".into(),
        })?;
    let meta: ServerMeta = get_json(
        http,
        &format!("{issuer}/.well-known/oauth-authorization-server"),
    )
    .await?;
    let bad = |message: String| SessionError::OAuth {
        server: issuer.clone(),
        message,
    };
    if meta.issuer.trim_end_matches('/') != issuer {
        return Err(bad(format!(
            "its metadata names another issuer ({})",
            meta.issuer
        )));
    }
    if meta.pushed_authorization_request_endpoint.is_none() {
        return Err(bad("it offers no pushed authorization requests".into()));
    }
    // Every endpoint is the issuer's own (the sign-in page is opened by the system's opener:
    // nothing but an http(s) address on the issuer's host goes there).
    let origin_of = |u: &str| url::Url::parse(u).ok().map(|u| u.origin());
    let issuer_origin = origin_of(&issuer);
    let issuer_url =
        url::Url::parse(&issuer).map_err(|e| bad(format!("its issuer is no address: {e}")))?;
    let loopback = matches!(
        issuer_url.host_str(),
        Some("localhost" | "127.0.0.1" | "[::1]")
    );
    if !(issuer_url.scheme() == "https" || (issuer_url.scheme() == "http" && loopback)) {
        return Err(bad("its issuer is not an https address".into()));
    }
    let endpoints = [
        Some(&meta.authorization_endpoint),
        Some(&meta.token_endpoint),
        meta.pushed_authorization_request_endpoint.as_ref(),
        meta.revocation_endpoint.as_ref(),
    ];
    for e in endpoints.into_iter().flatten() {
        if origin_of(e) != issuer_origin {
            return Err(bad(format!(
                "its endpoint {e:.200} is not on the issuer's own address"
            )));
        }
    }
    if !meta.dpop_signing_alg_values_supported.is_empty()
        && !meta
            .dpop_signing_alg_values_supported
            .iter()
            .any(|a| a == "ES256")
    {
        return Err(bad("it does not accept ES256 DPoP keys".into()));
    }
    Ok(meta)
}

/// Starts a sign-in of `doc`'s account on its PDS's authorization server: listens on a
/// loopback port, pushes the request (PKCE, DPoP) and returns the page to open.
pub(crate) async fn start(
    http: &reqwest::Client,
    doc: &crate::identity::DidDoc,
    client: &ClientId,
    scope: &'static str,
) -> Result<Pending, SessionError> {
    let pds = doc.pds.clone().ok_or_else(|| SessionError::NoPds {
        did: doc.did.clone(),
    })?;
    let meta = server_of(http, &pds).await?;
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| SessionError::OAuth {
            server: "this computer".into(),
            message: format!("could not listen on a loopback port for the answer: {e}"),
        })?;
    let port = listener
        .local_addr()
        .map_err(|e| SessionError::OAuth {
            server: "this computer".into(),
            message: e.to_string(),
        })?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}{CALLBACK_PATH}");
    let client_id = client.id();
    let state = dpop::random_text(24);
    let (verifier, challenge) = dpop::pkce();
    let dpop = Dpop::new(DpopKey::generate());
    let par = meta
        .pushed_authorization_request_endpoint
        .clone()
        .unwrap_or_default();
    let hint = doc.handle.clone().unwrap_or_else(|| doc.did.clone());
    let form = [
        ("client_id", client_id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", redirect_uri.as_str()),
        ("scope", scope),
        ("state", state.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("login_hint", hint.as_str()),
    ];
    #[derive(Deserialize)]
    struct Pushed {
        request_uri: String,
    }
    let resp = dpop
        .send(http, reqwest::Method::POST, &par, None, Body::Form(&form))
        .await
        .map_err(|e| match e {
            SessionError::Xrpc { error, message, .. } if error == "invalid_scope" => {
                SessionError::ScopesRefused {
                    server: meta.issuer.clone(),
                    message,
                }
            }
            other => other,
        })?;
    let pushed: Pushed = answer(resp, &par).await?;
    let url = format!(
        "{}?{}",
        meta.authorization_endpoint,
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &client_id)
            .append_pair("request_uri", &pushed.request_uri)
            .finish()
    );
    Ok(Pending {
        url,
        did: doc.did.clone(),
        handle: doc.handle.clone(),
        pds,
        meta,
        client_id,
        redirect_uri,
        state,
        verifier,
        scope,
        dpop,
        listener,
    })
}

/// What the browser brought back.
struct Callback {
    params: HashMap<String, String>,
}

/// Waits (until `deadline`) for the browser's visit to the loopback address and answers it
/// with a short page. Other paths get a 404 and the wait goes on.
async fn wait_for_callback(
    listener: &TcpListener,
    state: &str,
    deadline: tokio::time::Instant,
) -> Result<Callback, SessionError> {
    loop {
        let (mut sock, _) = tokio::time::timeout_at(deadline, listener.accept())
            .await
            .map_err(|_| SessionError::SignInTimedOut)?
            .map_err(|e| SessionError::OAuth {
                server: "this computer".into(),
                message: format!("the loopback address failed: {e}"),
            })?;
        let mut head = Vec::new();
        let mut buf = [0u8; 2048];
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HEAD_LIMIT {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        if read.is_err() {
            continue;
        }
        let text = String::from_utf8_lossy(&head);
        let target = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("GET "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or("");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if path != CALLBACK_PATH {
            let _ = sock
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            continue;
        }
        let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let page = if params.get("state").map(String::as_str) != Some(state) {
            "This answer does not belong to the sign-in P2PDS started, so it was ignored. Start the sign-in again from P2PDS."
        } else if params.contains_key("error") {
            "The sign-in was cancelled. You can close this tab."
        } else {
            "You are signed in to P2PDS. You can close this tab and go back to the app."
        };
        let body = format!(
            "<!doctype html><meta charset=utf-8><title>P2PDS</title><p style=\"font:16px system-ui;margin:3em\">{page}</p>"
        );
        let _ = sock
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        return Ok(Callback { params });
    }
}

impl Pending {
    /// The loopback address the server's answer comes back to.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits up to `wait` for an identity consent's answer: the tokens, held in memory only
    /// (for the few calls that add a recovery key), never stored.
    pub async fn finish_identity(
        self,
        http: &reqwest::Client,
        wait: Duration,
    ) -> Result<IdentityGrant, SessionError> {
        let did = self.did.clone();
        let pds = self.pds.clone();
        let key = self.dpop.key.clone();
        let (tokens, grant) = self.finish(http, wait).await?;
        Ok(IdentityGrant {
            did,
            pds,
            dpop: Dpop::new(key),
            access: tokens.access_token,
            refresh: tokens.refresh_token,
            grant,
        })
    }

    /// Waits up to `wait` for the answer, then exchanges its code for tokens, checked. Returns
    /// the tokens and what to keep with them; nothing is stored here.
    pub(crate) async fn finish(
        self,
        http: &reqwest::Client,
        wait: Duration,
    ) -> Result<(TokenAnswer, Grant), SessionError> {
        let deadline = tokio::time::Instant::now() + wait;
        let cb = wait_for_callback(&self.listener, &self.state, deadline).await?;
        let p = |k: &str| cb.params.get(k).map(String::as_str);
        if p("state") != Some(self.state.as_str()) {
            return Err(SessionError::WrongState);
        }
        if let Some(error) = p("error") {
            return Err(if error == "access_denied" {
                SessionError::SignInCancelled
            } else {
                SessionError::OAuth {
                    server: self.meta.issuer.clone(),
                    message: format!(
                        "{error}: {}",
                        p("error_description").unwrap_or("no reason given")
                    ),
                }
            });
        }
        if let Some(iss) = p("iss") {
            if iss.trim_end_matches('/') != self.meta.issuer.trim_end_matches('/') {
                return Err(SessionError::OAuth {
                    server: self.meta.issuer.clone(),
                    message: format!("the answer came from another server ({iss})"),
                });
            }
        }
        let code = p("code").ok_or_else(|| SessionError::OAuth {
            server: self.meta.issuer.clone(),
            message: "the answer carries no code".into(),
        })?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", self.verifier.as_str()),
            ("client_id", self.client_id.as_str()),
        ];
        let url = self.meta.token_endpoint.clone();
        let resp = self
            .dpop
            .send(http, reqwest::Method::POST, &url, None, Body::Form(&form))
            .await?;
        let tokens: TokenAnswer = answer(resp, &url).await?;
        let grant = Grant {
            issuer: self.meta.issuer.clone(),
            token_endpoint: self.meta.token_endpoint.clone(),
            revocation_endpoint: self.meta.revocation_endpoint.clone(),
            client_id: self.client_id.clone(),
            dpop_key: self.dpop.key.to_text(),
            expires_at: tokens.expires_at(),
            scope: tokens.scope.clone(),
        };
        if let Err(e) = self.check(&tokens) {
            revoke(
                http,
                &self.dpop,
                &grant,
                &tokens.access_token,
                tokens.refresh_token.as_deref(),
            )
            .await;
            return Err(e);
        }
        Ok((tokens, grant))
    }

    /// The tokens are for the account asked, DPoP-bound, with the scopes asked for.
    fn check(&self, t: &TokenAnswer) -> Result<(), SessionError> {
        if !t.token_type.eq_ignore_ascii_case("DPoP") {
            return Err(SessionError::OAuth {
                server: self.meta.issuer.clone(),
                message: format!("it gave a {} token, not a DPoP-bound one", t.token_type),
            });
        }
        match t.sub.as_deref() {
            Some(sub) if sub == self.did => {}
            got => {
                return Err(SessionError::WrongAccount {
                    wanted: self.handle.clone().unwrap_or_else(|| self.did.clone()),
                    got: got.unwrap_or("no account").to_string(),
                })
            }
        }
        let granted: Vec<&str> = t.scope.split_whitespace().collect();
        let missing: Vec<&str> = self
            .scope
            .split_whitespace()
            .filter(|s| !granted.contains(s))
            .collect();
        if !missing.is_empty() {
            return Err(SessionError::ScopesRefused {
                server: self.meta.issuer.clone(),
                message: format!("it did not grant {}", missing.join(", ")),
            });
        }
        if t.refresh_token.is_none() {
            return Err(SessionError::OAuth {
                server: self.meta.issuer.clone(),
                message: "it gave no refresh token, so the session would end within the hour"
                    .into(),
            });
        }
        Ok(())
    }
}

/// The identity permission of one consent ([`IDENTITY_SCOPE`]), in memory only: used for the
/// calls that add a recovery key, then revoked.
pub struct IdentityGrant {
    pub did: String,
    pub pds: String,
    dpop: Dpop,
    access: String,
    refresh: Option<String>,
    grant: Grant,
}

impl std::fmt::Debug for IdentityGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityGrant({}, {})", self.did, self.pds)
    }
}

impl IdentityGrant {
    /// An XRPC procedure on the account's PDS with this permission (`body` `None`: no input).
    pub async fn procedure(
        &self,
        http: &reqwest::Client,
        nsid: &str,
        body: Option<&Value>,
    ) -> Result<Value, SessionError> {
        let url = format!("{}/xrpc/{nsid}", self.pds.trim_end_matches('/'));
        let body = body.map_or(Body::Empty, Body::Json);
        let resp = self
            .dpop
            .send(http, reqwest::Method::POST, &url, Some(&self.access), body)
            .await?;
        answer(resp, &url).await
    }

    /// Gives the permission back (best effort).
    pub async fn revoke(&self, http: &reqwest::Client) {
        revoke(
            http,
            &self.dpop,
            &self.grant,
            &self.access,
            self.refresh.as_deref(),
        )
        .await;
    }
}

/// New tokens for `refresh_token`.
pub(crate) async fn refresh(
    http: &reqwest::Client,
    dpop: &Dpop,
    grant: &Grant,
    refresh_token: &str,
) -> Result<TokenAnswer, SessionError> {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", grant.client_id.as_str()),
    ];
    let url = &grant.token_endpoint;
    let resp = dpop
        .send(http, reqwest::Method::POST, url, None, Body::Form(&form))
        .await?;
    answer(resp, url).await
}

/// Revokes the tokens (best effort: a server that can't be reached keeps them until they
/// expire).
pub(crate) async fn revoke(
    http: &reqwest::Client,
    dpop: &Dpop,
    grant: &Grant,
    access: &str,
    refresh: Option<&str>,
) {
    let Some(url) = grant.revocation_endpoint.as_deref() else {
        return;
    };
    for token in refresh.into_iter().chain([access]) {
        let form = [("token", token), ("client_id", grant.client_id.as_str())];
        if let Err(e) = dpop
            .send(http, reqwest::Method::POST, url, None, Body::Form(&form))
            .await
        {
            tracing::warn!("revoking a token at {url}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_client_names_its_redirect_and_exactly_the_scope_asked() {
        let id = ClientId::Loopback.id();
        let (base, query) = id.split_once('?').unwrap();
        assert_eq!(base, "http://localhost");
        let q: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(q["redirect_uri"], "http://127.0.0.1/callback");
        assert_eq!(q["scope"], CLIENT_SCOPE);
        // Signing in asks for nothing beyond its own collections; the identity permission is
        // declared, and asked for only by its own consent.
        for s in SCOPE.split_whitespace() {
            assert!(s == "atproto" || s.starts_with("repo:org.p2pds."), "{s}");
        }
        let declared: Vec<&str> = CLIENT_SCOPE.split_whitespace().collect();
        for s in SCOPE
            .split_whitespace()
            .chain(IDENTITY_SCOPE.split_whitespace())
        {
            assert!(declared.contains(&s), "{s}");
        }
        assert_eq!(declared.len(), 8);
        assert_eq!(ClientId::from_setting(Some(" ")), ClientId::Loopback);
        assert_eq!(
            ClientId::from_setting(Some("https://example.org/c.json")).id(),
            "https://example.org/c.json"
        );
    }

    #[test]
    fn the_published_client_document_asks_what_the_code_asks() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("contrib/oauth/client-metadata.json");
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(doc["scope"], CLIENT_SCOPE);
        assert_eq!(
            doc["redirect_uris"],
            serde_json::json!([format!("http://127.0.0.1{CALLBACK_PATH}")])
        );
        assert_eq!(doc["application_type"], "native");
        assert_eq!(doc["dpop_bound_access_tokens"], true);
        assert_eq!(doc["token_endpoint_auth_method"], "none");
        assert!(doc["client_id"].as_str().unwrap().starts_with("https://"));
    }

    #[tokio::test]
    async fn the_callback_waits_past_other_paths_and_answers_in_words() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let waiting = tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            wait_for_callback(&listener, "s1", deadline)
                .await
                .map(|c| c.params)
        });
        let http = reqwest::Client::new();
        let other = http
            .get(format!("http://127.0.0.1:{port}/favicon.ico"))
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 404);
        let page = http
            .get(format!(
                "http://127.0.0.1:{port}/callback?state=s1&code=c-1&iss=http%3A%2F%2Flocalhost"
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("You are signed in"), "{page}");
        let params = waiting.await.unwrap().unwrap();
        assert_eq!(params["code"], "c-1");
        assert_eq!(params["iss"], "http://localhost");
    }

    /// A server answering each path with a fixed (status, body), made from its own address;
    /// what a real one would not do: refuse P2PDS's limited scopes.
    async fn stub(answers: impl FnOnce(&str) -> Vec<(&'static str, u16, String)>) -> String {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let answers = answers(&base);
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = vec![0u8; 16 << 10];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                let (status, body) = answers
                    .iter()
                    .find(|(p, _, _)| path.starts_with(p))
                    .map_or((404, String::new()), |(_, s, b)| (*s, b.clone()));
                let _ = sock
                    .write_all(
                        format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        base
    }

    #[tokio::test]
    async fn a_server_refusing_the_limited_scopes_is_said_so_and_asked_nothing_more() {
        let served = stub(|base| {
            let meta = serde_json::json!({
                "issuer": base,
                "authorization_endpoint": format!("{base}/oauth/authorize"),
                "token_endpoint": format!("{base}/oauth/token"),
                "pushed_authorization_request_endpoint": format!("{base}/oauth/par"),
                "dpop_signing_alg_values_supported": ["ES256"],
            });
            let resource = serde_json::json!({"authorization_servers": [base]});
            let refusal = serde_json::json!({"error": "invalid_scope", "error_description": "Scope \"repo:org.p2pds.policy\" is not supported"});
            vec![
                ("/.well-known/oauth-protected-resource", 200, resource.to_string()),
                ("/.well-known/oauth-authorization-server", 200, meta.to_string()),
                ("/oauth/par", 400, refusal.to_string()),
            ]
        })
        .await;
        let doc = crate::identity::DidDoc {
            did: "did:plc:someone".into(),
            handle: Some("someone.test".into()),
            pds: Some(served),
            signing_key: None,
        };
        let e = start(&reqwest::Client::new(), &doc, &ClientId::Loopback, SCOPE)
            .await
            .unwrap_err();
        assert!(matches!(e, SessionError::ScopesRefused { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("won't ask for more"), "{text}");
        assert!(text.contains("app password"), "{text}");
        assert!(text.contains("is not supported"), "{text}");
    }

    #[tokio::test]
    async fn a_sign_in_page_elsewhere_than_the_issuer_is_refused() {
        let served = stub(|base| {
            let meta = serde_json::json!({
                "issuer": base,
                "authorization_endpoint": "https://elsewhere.example/&calc&",
                "token_endpoint": format!("{base}/oauth/token"),
                "pushed_authorization_request_endpoint": format!("{base}/oauth/par"),
            });
            let resource = serde_json::json!({"authorization_servers": [base]});
            vec![
                (
                    "/.well-known/oauth-protected-resource",
                    200,
                    resource.to_string(),
                ),
                (
                    "/.well-known/oauth-authorization-server",
                    200,
                    meta.to_string(),
                ),
            ]
        })
        .await;
        let doc = crate::identity::DidDoc {
            did: "did:plc:someone".into(),
            handle: None,
            pds: Some(served),
            signing_key: None,
        };
        let e = start(&reqwest::Client::new(), &doc, &ClientId::Loopback, SCOPE)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("not on the issuer's own address"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn no_answer_in_time_is_said_so() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
        let e = wait_for_callback(&listener, "s", deadline).await.err();
        assert!(matches!(e, Some(SessionError::SignInTimedOut)), "{e:?}");
    }
}
