//! Drives the reference PDS's OAuth sign-in and consent pages the way a browser does, for the
//! tests of signing in with OAuth (issue 17).
//!
//! [`approve`] and [`reject`] take the authorization URL a client would open in the browser
//! (`<authorization_endpoint>?client_id=…&request_uri=…`, after a PAR) and answer the page
//! as its script would: load it (a top-level navigation, which sets the device and CSRF
//! cookies), sign in through its API (`POST /@atproto/oauth-provider/~api/sign-in`), then
//! consent or reject, and finally load the address the page would navigate to
//! (`/oauth/authorize/redirect?…`). That answers `303 See Other` to the client's
//! `redirect_uri` (the loopback callback) with `code` (or `error`), `state` and `iss`: the
//! address the browser would go to next, which is what both return. Nothing is sent there.
//!
//! The page refuses requests that do not look like its own: its API wants
//! `Sec-Fetch-Mode: same-origin`, `Sec-Fetch-Site: same-origin`, `Origin` = the issuer,
//! `Referer` = the exact authorization URL (it carries the `request_uri`) and `X-CSRF-Token`
//! = the `csrf-token` cookie; the page itself wants a navigation (`Sec-Fetch-Mode: navigate`,
//! `Sec-Fetch-Dest: document`). Cookies are kept by hand (the tests' reqwest has no cookie
//! store): signing in replaces the `ses-id` cookie, and a cookie set empty or with
//! `Max-Age=0` is dropped.
//!
//! The authorization URL must use the issuer's own host (`http://localhost:PORT` on the test
//! bed, never `127.0.0.1`): take it from `/.well-known/oauth-authorization-server`.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{redirect, Client, Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::pds;

/// The page's API, under the issuer.
const API: &str = "/@atproto/oauth-provider/~api";
/// How much of a server's answer an error quotes.
const BODY_CAP: usize = 2000;

/// Signs `username` in on the authorization page with `password` and approves the request
/// (as the account signed in). Returns the address the server then sends the browser to: the
/// client's `redirect_uri` with `code`, `state` and `iss` (or `error` and `error_description`
/// when the server turned the approval down: the address is returned as it is).
///
/// Fails, saying at which step and with the server's answer, when the page does not load,
/// the sign-in is refused (a wrong password, or an app password: the page takes only the
/// main password) or the consent is not answered with an address.
pub async fn approve(authorize_url: &str, username: &str, password: &str) -> Result<String> {
    let mut page = Page::open(authorize_url).await?;
    let signed_in = page.sign_in(username, password).await?;
    let did = str_at(&signed_in, &["account", "did"]).context("sign-in: the answer")?;
    // Without "remember me" the page gets a short-lived token instead of a device session.
    let bearer = signed_in
        .get("ephemeralToken")
        .and_then(Value::as_str)
        .map(str::to_string);
    let answer = page
        .api("consent", &json!({ "did": did }), bearer.as_deref())
        .await?;
    let url = str_at(&answer, &["url"]).context("consent: the answer")?;
    page.follow("consent", &url).await
}

/// Signs `username` in on the authorization page with `password` and rejects the request, as
/// the "Deny access" button does. Returns the address the server then sends the browser to:
/// the client's `redirect_uri` with `error=access_denied`, `state` and `iss`.
pub async fn reject(authorize_url: &str, username: &str, password: &str) -> Result<String> {
    let mut page = Page::open(authorize_url).await?;
    page.sign_in(username, password).await?;
    let answer = page.api("reject", &json!({}), None).await?;
    let url = str_at(&answer, &["url"]).context("reject: the answer")?;
    page.follow("reject", &url).await
}

/// One browser tab on the authorization page: its address, its origin and its cookies.
struct Page {
    http: Client,
    /// The authorization URL, as loaded (the `Referer` of everything after).
    url: String,
    /// `scheme://host:port` of the page: the issuer.
    origin: String,
    cookies: BTreeMap<String, String>,
}

impl Page {
    /// Loads the authorization page as a top-level navigation typed into the address bar.
    async fn open(authorize_url: &str) -> Result<Page> {
        let parsed = url::Url::parse(authorize_url)
            .with_context(|| format!("the authorization URL {authorize_url:?}"))?;
        let origin = parsed.origin().ascii_serialization();
        let http = Client::builder()
            .redirect(redirect::Policy::none())
            .build()
            .context("building the HTTP client")?;
        let mut page = Page {
            http,
            url: authorize_url.to_string(),
            origin,
            cookies: BTreeMap::new(),
        };
        let res = page
            .http
            .get(authorize_url)
            .header("accept", "text/html")
            .header("sec-fetch-mode", "navigate")
            .header("sec-fetch-dest", "document")
            .header("sec-fetch-site", "none")
            .send()
            .await
            .with_context(|| format!("loading the authorization page {authorize_url}"))?;
        page.keep_cookies(res.headers());
        let status = res.status();
        let location = location(&res);
        let body = capped(res.text().await.unwrap_or_default());
        if status != StatusCode::OK {
            // An invalid or expired request sends the browser back to the client at once.
            let to = location.map(|l| format!(" (to {l})")).unwrap_or_default();
            bail!("loading the authorization page: HTTP {status}{to}: {body}");
        }
        if !page.cookies.contains_key("csrf-token") {
            bail!(
                "loading the authorization page: no csrf-token cookie (cookies: {:?}): {body}",
                page.cookies.keys().collect::<Vec<_>>()
            );
        }
        Ok(page)
    }

    /// `POST …/~api/sign-in`, remembered on this device; → the answer (`account`, …).
    async fn sign_in(&mut self, username: &str, password: &str) -> Result<Value> {
        let body = json!({
            "locale": "en",
            "username": username,
            "password": password,
            "remember": true,
        });
        self.api("sign-in", &body, None).await
    }

    /// A call of the page's API, `POST …/~api/<endpoint>`, as the page's script makes it.
    async fn api(&mut self, endpoint: &str, body: &Value, bearer: Option<&str>) -> Result<Value> {
        let csrf = self
            .cookies
            .get("csrf-token")
            .cloned()
            .ok_or_else(|| anyhow!("{endpoint}: no csrf-token cookie"))?;
        let mut req = self
            .http
            .post(format!("{}{API}/{endpoint}", self.origin))
            .header("origin", &self.origin)
            .header("referer", &self.url)
            .header("sec-fetch-mode", "same-origin")
            .header("sec-fetch-site", "same-origin")
            .header("sec-fetch-dest", "empty")
            .header("x-csrf-token", csrf)
            .header("cookie", self.cookie_header())
            .json(body);
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("{endpoint}: POST {API}/{endpoint}"))?;
        self.keep_cookies(res.headers());
        let status = res.status();
        let text = res
            .text()
            .await
            .with_context(|| format!("{endpoint}: reading the answer"))?;
        if !status.is_success() {
            bail!("{endpoint}: HTTP {status}: {}", capped(text));
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{endpoint}: HTTP {status}, not JSON: {}", capped(text)))
    }

    /// Loads `url` (the `/oauth/authorize/redirect?…` address the page's API answered `step`
    /// with) as the page's own navigation, without following the redirect; → its `Location`.
    async fn follow(&mut self, step: &str, url: &str) -> Result<String> {
        let res = self
            .http
            .get(url)
            .header("accept", "text/html")
            .header("referer", &self.url)
            .header("sec-fetch-mode", "navigate")
            .header("sec-fetch-dest", "document")
            .header("sec-fetch-site", "same-origin")
            .header("cookie", self.cookie_header())
            .send()
            .await
            .with_context(|| format!("{step}: loading {url}"))?;
        self.keep_cookies(res.headers());
        let status = res.status();
        match location(&res) {
            Some(to) if status.is_redirection() => Ok(to),
            _ => {
                let body = capped(res.text().await.unwrap_or_default());
                bail!("{step}: loading {url}: HTTP {status} and no redirect: {body}")
            }
        }
    }

    /// Keeps the cookies a response sets (names and values only: one host, one path).
    fn keep_cookies(&mut self, headers: &HeaderMap) {
        for set in headers.get_all(SET_COOKIE) {
            let Ok(set) = set.to_str() else { continue };
            let mut parts = set.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            let expired = parts.any(|attr| {
                attr.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("max-age")
                        && v.trim().parse::<i64>().is_ok_and(|age| age <= 0)
                })
            });
            if value.is_empty() || expired {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn location(res: &Response) -> Option<String> {
    res.headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(str::to_string)
}

/// The string at `path` in `v`, or an error quoting `v`.
fn str_at(v: &Value, path: &[&str]) -> Result<String> {
    let mut at = v;
    for key in path {
        at = at.get(key).unwrap_or(&Value::Null);
    }
    at.as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no string at {path:?} in {}", capped(v.to_string())))
}

/// `text`, cut to [`BODY_CAP`] characters.
fn capped(text: String) -> String {
    match text.char_indices().nth(BODY_CAP) {
        Some((at, _)) => format!("{}… ({} bytes in all)", &text[..at], text.len()),
        None => text,
    }
}

// ---- the driver, proven against the shared test bed ----

/// The development (loopback) client: its metadata is implied by its id. Its registered
/// redirect URI has no port, so any port is allowed at request time.
const CLIENT_ID: &str =
    "http://localhost?redirect_uri=http%3A%2F%2F127.0.0.1%2Fcallback&scope=atproto";

/// A pushed authorization request from the loopback client (PKCE S256, no DPoP: the
/// server asks for DPoP only at the token endpoint); → (authorization URL, state).
async fn push(metadata: &Value, redirect_uri: &str) -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
    let par = metadata["pushed_authorization_request_endpoint"]
        .as_str()
        .unwrap();
    let res = Client::new()
        .post(par)
        .form(&[
            ("client_id", CLIENT_ID),
            ("response_type", "code"),
            ("redirect_uri", redirect_uri),
            ("scope", "atproto"),
            ("state", &state),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "PAR: {body}");
    let request_uri = body["request_uri"].as_str().unwrap();
    let mut url = url::Url::parse(metadata["authorization_endpoint"].as_str().unwrap()).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("request_uri", request_uri);
    (url.to_string(), state)
}

/// The query of `url` as a map.
fn query(url: &str) -> BTreeMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn the_oauth_pages_approve_and_reject_as_a_browser_would() {
    let bed = pds::shared().await;
    let alice = bed.create_account("oauth").await.unwrap();
    let metadata: Value = reqwest::get(format!(
        "{}/.well-known/oauth-authorization-server",
        bed.pds
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let issuer = metadata["issuer"].as_str().unwrap();
    assert!(issuer.starts_with("http://localhost:"), "{metadata}");
    // Nothing listens there: the driver returns the address instead of going to it.
    let callback = "http://127.0.0.1:49321/callback";

    // The main password signs in and approves: back to the callback with a code.
    let (authorize, state) = push(&metadata, callback).await;
    let to = approve(&authorize, &alice.handle, &alice.password)
        .await
        .unwrap();
    assert!(to.starts_with(&format!("{callback}?")), "{to}");
    let q = query(&to);
    assert_eq!(q.get("state"), Some(&state), "{to}");
    assert_eq!(q.get("iss").map(String::as_str), Some(issuer), "{to}");
    assert!(q.get("code").is_some_and(|c| !c.is_empty()), "{to}");
    assert!(!q.contains_key("error"), "{to}");
    // The request is used up: it does not load again.
    let err = approve(&authorize, &alice.handle, &alice.password)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("loading the authorization page"),
        "{err:#}"
    );

    // The page takes no app password: the sign-in step fails, with the server's words.
    let (authorize, _) = push(&metadata, callback).await;
    let err = approve(&authorize, &alice.handle, &alice.app_password)
        .await
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(err.starts_with("sign-in: HTTP 4"), "{err}");
    assert!(err.contains("App passwords are not allowed"), "{err}");
    // Nor a wrong password.
    let (authorize, _) = push(&metadata, callback).await;
    let err = approve(&authorize, &alice.handle, "not-her-password")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").starts_with("sign-in: HTTP 4"), "{err:#}");

    // Rejected: back to the callback with access_denied and the same state.
    let (authorize, state) = push(&metadata, callback).await;
    let to = reject(&authorize, &alice.handle, &alice.password)
        .await
        .unwrap();
    assert!(to.starts_with(&format!("{callback}?")), "{to}");
    let q = query(&to);
    assert_eq!(
        q.get("error").map(String::as_str),
        Some("access_denied"),
        "{to}"
    );
    assert_eq!(q.get("state"), Some(&state), "{to}");
    assert_eq!(q.get("iss").map(String::as_str), Some(issuer), "{to}");
    assert!(!q.contains_key("code"), "{to}");
}

#[tokio::test]
async fn a_pds_can_start_with_short_lived_oauth_tokens() {
    let bed = pds::shared().await;
    // The patch's property path exists (the script fails to start otherwise), and the
    // OAuth pages work on such a PDS.
    let short = bed
        .start_extra_pds_with(&[("P2PDS_TEST_OAUTH_TOKEN_MAX_AGE_MS", "2000")])
        .await
        .unwrap();
    let bob = short.create_account("bob").await.unwrap();
    let metadata: Value = reqwest::get(format!(
        "{}/.well-known/oauth-authorization-server",
        short.pds
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let (authorize, _) = push(&metadata, "http://127.0.0.1:49322/callback").await;
    let to = approve(&authorize, &bob.handle, &bob.password)
        .await
        .unwrap();
    assert!(query(&to).contains_key("code"), "{to}");
    // A value that is not a number of milliseconds is refused in words.
    let err = bed
        .start_extra_pds_with(&[("P2PDS_TEST_OAUTH_TOKEN_MAX_AGE_MS", "soon")])
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("P2PDS_TEST_OAUTH_TOKEN_MAX_AGE_MS must be"),
        "{err:#}"
    );
}
