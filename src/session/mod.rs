//! Signing in: the node's own account, its session with its PDS, and where the secrets live.
//!
//! One data directory is one node is one signed-in account. The store keeps who is signed in
//! (DID, handle, PDS: the `account` table); the app password and the session tokens live in the
//! OS keyring (the `keyring` crate: the Secret Service over D-Bus on Linux, Keychain on macOS,
//! the Credential Manager on Windows) under service [`KEYRING_SERVICE`] and the account's DID,
//! so several nodes on one machine never share an entry.
//!
//! A home server often has no Secret Service. There the person may choose, explicitly, the
//! secrets file instead ([`SecretStore::File`]): [`SECRETS_FILE`] in the data directory, mode
//! 0600, a JSON map DID → the same JSON the keyring entry holds, written to a temporary file,
//! synced and renamed; a file that other users may read is refused. The choice is kept in
//! `group_meta` under [`SECRET_STORE_KEY`] (value `file`; absent = the keyring) and nowhere else:
//! the library reads no environment variable for it.
//!
//! Invariants: no secret is ever written to SQLite, a config file or a log (the secrets file,
//! when chosen, is the one place outside the keyring); a call that fails because the access
//! token expired (or was refused) refreshes the session once and is tried once more; when the
//! refresh token is dead too, the stored app password makes a new session. Keyring calls are
//! blocking (D-Bus), like file IO, and run on blocking threads.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::identity::{IdentityError, Resolver};
use crate::policy::records::StrongRef;
use crate::store::{self, Store, StoreError};

mod dpop;
pub mod oauth;
mod secrets;
use secrets::{blocking, keyring_error, read_secrets_file};
pub use secrets::{
    delete_secrets, load_recovery_key, load_secrets, save_recovery_key, save_secrets,
    secret_store_words, use_secrets_file, SecretStore,
};

/// The keyring service name; the keyring "user" is the account's DID.
pub const KEYRING_SERVICE: &str = "p2pds";

/// The secrets file's name in the data directory (only when chosen, see [`SecretStore`]).
pub const SECRETS_FILE: &str = "secrets.json";

/// The `group_meta` key of the secret store choice: `file`, or absent for the keyring.
pub const SECRET_STORE_KEY: &str = "secrets.store";

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no secret service (keyring) is running, so P2PDS has nowhere safe to keep your app password: start one (on a desktop, log in to a GNOME/KDE session; on a server, run the command inside `dbus-run-session` with `gnome-keyring-daemon --unlock --components=secrets`), then sign in again; or keep it in a file in the data folder that only you can read: `p2pds login --secrets-file HANDLE` ({detail})")]
    NoSecretService { detail: String },
    #[error("the keyring is locked or refused access: unlock it (log in to your desktop session, or `echo -n PASSWORD | gnome-keyring-daemon --unlock`) and try again ({detail})")]
    KeyringLocked { detail: String },
    #[error("the keyring failed: {0}")]
    Keyring(String),
    #[error("not signed in: run `p2pds login HANDLE` first")]
    NotSignedIn,
    #[error("{place} holds no password for {did}: sign in again with `p2pds login`")]
    NoSecret { did: String, place: String },
    #[error("the secrets file {path} can be read or changed by other users (mode {mode:o}): run `chmod 600 {path}` (and make sure only you could have changed it), then try again")]
    SecretsFileOpen { path: String, mode: u32 },
    #[error("could not {what} the secrets file {path}: {reason}. Check that the data folder is yours and that its disk is not full, then try again")]
    SecretsFile {
        path: String,
        what: &'static str,
        reason: String,
    },
    #[error("the secrets file {path} is damaged ({reason}): move it away and sign in again with `p2pds login --secrets-file HANDLE`")]
    SecretsFileDamaged { path: String, reason: String },
    #[error("this data directory keeps its secrets in \"{0}\", which this version of P2PDS does not know: update P2PDS")]
    UnknownSecretStore(String),
    #[error("this data directory is signed in as {current}: run `p2pds logout` first (one data directory is one node and one account)")]
    OtherAccount { current: String },
    #[error("{who}'s server refused the sign-in: {message}. Check the handle and the password (use an app password: Settings → Privacy and security → App passwords)")]
    LoginRefused { who: String, message: String },
    #[error("that is {who}'s main password, not an app password. P2PDS never keeps the main password: it opens the whole account. Make an app password on your server (on Bluesky: Settings → Privacy and security → App passwords → Add) and sign in with it, or sign in with Bluesky in your browser instead (`p2pds login HANDLE` at a terminal, or \"Sign in with Bluesky\" in the app). Nothing was stored")]
    MainPassword { who: String },
    #[error("{server}'s sign-in did not work: {message}. Nothing was stored; try again, or use an app password instead")]
    OAuth { server: String, message: String },
    #[error("{server} does not offer the limited access P2PDS asks for (writing only its own org.p2pds records; {message}). P2PDS won't ask for more: sign in with an app password instead (`p2pds login HANDLE --password-env VAR`, or \"Use an app password instead\" in the app). Nothing was stored")]
    ScopesRefused { server: String, message: String },
    #[error("the sign-in was cancelled on the server's page. Nothing was stored; sign in again when you are ready")]
    SignInCancelled,
    #[error("the browser signed in {got}, not {wanted}. Nothing was stored: sign out of the other account on the server's page (or use a private window) and try again")]
    WrongAccount { wanted: String, got: String },
    #[error("an answer reached P2PDS that does not belong to the sign-in it started (its state differs), so it was ignored and nothing was stored. Start the sign-in again")]
    WrongState,
    #[error(
        "no answer came from the browser in time. Nothing was stored; start the sign-in again"
    )]
    SignInTimedOut,
    #[error("the session with {pds} ended and could not be renewed: {message}. Sign in again with `p2pds login`")]
    SessionEnded { pds: String, message: String },
    #[error("could not reach {url}: {reason}")]
    Network { url: String, reason: String },
    #[error("{url} answered {status} {error}: {message}")]
    Xrpc {
        url: String,
        status: u16,
        error: String,
        message: String,
    },
    #[error("{did} has no PDS in its identity document")]
    NoPds { did: String },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SessionError {
    /// Worth trying again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Network { .. } => true,
            Self::Xrpc { status, .. } => *status >= 500 || *status == 429,
            Self::Identity(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// The secrets kept in the keyring, as one JSON entry.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Secrets {
    /// Empty when signed in with OAuth.
    #[serde(default)]
    pub app_password: String,
    pub access_jwt: String,
    pub refresh_jwt: String,
    /// Signed in with OAuth: the server, the DPoP key and the token's expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<oauth::Grant>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(…)")
    }
}

/// Who this node is signed in as (not secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Account {
    pub did: String,
    pub handle: Option<String>,
    pub pds: String,
}

/// The signed-in account, if any.
pub fn signed_in(conn: &Connection) -> Result<Option<Account>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT did, handle, pds FROM account WHERE id = 1",
            [],
            |r| {
                Ok(Account {
                    did: r.get(0)?,
                    handle: r.get(1)?,
                    pds: r.get(2)?,
                })
            },
        )
        .optional()?)
}

fn save_account(conn: &Connection, a: &Account) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO account (id, did, handle, pds, signed_in_at) VALUES (1, ?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET did = ?1, handle = ?2, pds = ?3, signed_in_at = ?4",
        rusqlite::params![a.did, a.handle, a.pds, store::now_text()],
    )?;
    Ok(())
}

fn forget_account(conn: &Connection) -> Result<(), StoreError> {
    conn.execute("DELETE FROM account", [])?;
    Ok(())
}

/// Whether an XRPC error answer means "get a new access token and try again".
pub fn needs_new_token(status: u16, error: &str) -> bool {
    matches!(
        (status, error),
        (400 | 401, "ExpiredToken" | "InvalidToken")
            | (401, "AuthenticationRequired" | "invalid_token")
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionAnswer {
    did: String,
    handle: Option<String>,
    access_jwt: String,
    refresh_jwt: String,
}

/// A signed-in session with the account's PDS.
#[derive(Debug)]
pub struct Session {
    pub account: Account,
    http: reqwest::Client,
    secrets: tokio::sync::Mutex<Secrets>,
    /// Where the secrets are kept (renewed tokens go there too).
    secrets_at: SecretStore,
    /// Signed in with OAuth: the proofs of the DPoP key the tokens are bound to.
    dpop: Option<oauth::Dpop>,
}

impl Session {
    /// Signs in with a handle (or DID) and an app password: `createSession` on the account's own
    /// PDS, then keeps the password and tokens in the data directory's [`SecretStore`] (the
    /// keyring unless the secrets file was chosen) and the account in the store.
    pub async fn login(
        http: reqwest::Client,
        resolver: &Resolver,
        store: &Store,
        who: &str,
        password: &str,
    ) -> Result<Arc<Session>, SessionError> {
        let (secrets_at, doc, pds) = prepare(resolver, store, who).await?;
        let answer = create_session(&http, &pds, who, password)
            .await
            .map_err(|e| match e {
                SessionError::Xrpc { error, message, .. } => SessionError::LoginRefused {
                    who: who.to_string(),
                    message: if message.is_empty() { error } else { message },
                },
                other => other,
            })?;
        if answer.did != doc.did {
            return Err(SessionError::LoginRefused {
                who: who.to_string(),
                message: format!("the server signed in {} instead of {}", answer.did, doc.did),
            });
        }
        if is_main_password_session(&answer.access_jwt) {
            // Ended at once: nothing of it is kept.
            let url = format!("{pds}/xrpc/com.atproto.server.deleteSession");
            let _ = http
                .post(&url)
                .bearer_auth(&answer.refresh_jwt)
                .send()
                .await;
            return Err(SessionError::MainPassword {
                who: doc.handle.clone().unwrap_or_else(|| who.to_string()),
            });
        }
        let secrets = Secrets {
            app_password: password.to_string(),
            access_jwt: answer.access_jwt,
            refresh_jwt: answer.refresh_jwt,
            oauth: None,
        };
        let handle = answer.handle.or(doc.handle);
        keep(http, store, secrets_at, &doc.did, handle, pds, secrets).await
    }

    /// Starts signing in with OAuth (see [`oauth`]): the returned sign-in's `url` is the
    /// server's page to open in the browser; [`Session::finish_oauth`] waits for its answer.
    pub async fn start_oauth(
        http: &reqwest::Client,
        resolver: &Resolver,
        store: &Store,
        who: &str,
        client: &oauth::ClientId,
    ) -> Result<oauth::Pending, SessionError> {
        let (_, doc, _) = prepare(resolver, store, who).await?;
        oauth::start(http, &doc, client, oauth::SCOPE).await
    }

    /// Starts the second consent "Protect your account" needs: the identity permission of
    /// `who`'s account ([`oauth::IDENTITY_SCOPE`]), for adding a recovery key. Finish it with
    /// [`oauth::Pending::finish_identity`]; nothing of it is stored.
    pub async fn start_identity_consent(
        http: &reqwest::Client,
        resolver: &Resolver,
        who: &str,
        client: &oauth::ClientId,
    ) -> Result<oauth::Pending, SessionError> {
        let doc = resolver.resolve_account(who).await?;
        oauth::start(http, &doc, client, oauth::IDENTITY_SCOPE).await
    }

    /// Waits up to `wait` for the browser's answer to `pending`, checks it, and keeps the
    /// tokens and the DPoP key where this data directory keeps secrets.
    pub async fn finish_oauth(
        http: reqwest::Client,
        store: &Store,
        pending: oauth::Pending,
        wait: std::time::Duration,
    ) -> Result<Arc<Session>, SessionError> {
        let secrets_at = SecretStore::of(store).await?;
        let (did, handle, pds) = (
            pending.did.clone(),
            pending.handle.clone(),
            pending.pds.clone(),
        );
        let (tokens, grant) = pending.finish(&http, wait).await?;
        let secrets = Secrets {
            app_password: String::new(),
            access_jwt: tokens.access_token,
            refresh_jwt: tokens.refresh_token.unwrap_or_default(),
            oauth: Some(grant),
        };
        keep(http, store, secrets_at, &did, handle, pds, secrets).await
    }

    /// Whether this session was made with OAuth.
    pub async fn is_oauth(&self) -> bool {
        self.secrets.lock().await.oauth.is_some()
    }

    /// The session of the account this store is signed in as.
    pub async fn resume(
        http: reqwest::Client,
        store: &Store,
    ) -> Result<Arc<Session>, SessionError> {
        let account = store
            .read(signed_in)
            .await?
            .ok_or(SessionError::NotSignedIn)?;
        let secrets_at = SecretStore::of(store).await?;
        let secrets = load_secrets(&secrets_at, &account.did).await?;
        if let Some(grant) = &secrets.oauth {
            // Never downgraded to a bearer session: without its key the grant is of no use.
            grant.key().map_err(|_| SessionError::SessionEnded {
                pds: grant.issuer.clone(),
                message: "the key the session is bound to is damaged".into(),
            })?;
        }
        Ok(Arc::new(Session::new(account, http, secrets, secrets_at)))
    }

    fn new(account: Account, http: reqwest::Client, secrets: Secrets, at: SecretStore) -> Session {
        let dpop = secrets
            .oauth
            .as_ref()
            .and_then(|g| g.key().ok())
            .map(oauth::Dpop::new);
        Session {
            account,
            http,
            secrets: tokio::sync::Mutex::new(secrets),
            secrets_at: at,
            dpop,
        }
    }

    /// Signs out: ends the session on the PDS (best effort), removes the secrets from where
    /// they are kept and the account from the store. Returns who was signed in.
    pub async fn logout(
        http: reqwest::Client,
        store: &Store,
    ) -> Result<Option<Account>, SessionError> {
        let Some(account) = store.read(signed_in).await? else {
            return Ok(None);
        };
        let secrets_at = SecretStore::of(store).await?;
        let loaded = load_secrets(&secrets_at, &account.did).await;
        if let Ok(Secrets {
            oauth: Some(grant),
            access_jwt,
            refresh_jwt,
            ..
        }) = &loaded
        {
            if let Ok(key) = grant.key() {
                let dpop = oauth::Dpop::new(key);
                oauth::revoke(&http, &dpop, grant, access_jwt, Some(refresh_jwt)).await;
            }
        } else if let Ok(secrets) = loaded {
            let url = format!("{}/xrpc/com.atproto.server.deleteSession", account.pds);
            let _ = http
                .post(&url)
                .bearer_auth(&secrets.refresh_jwt)
                .send()
                .await;
        }
        delete_secrets(&secrets_at, &account.did).await?;
        store.write(|c| forget_account(c)).await??;
        Ok(Some(account))
    }

    pub fn did(&self) -> &str {
        &self.account.did
    }

    /// An XRPC procedure (POST) as the signed-in account. An expired or refused access token
    /// renews the session and the call is tried once more.
    pub async fn procedure(&self, nsid: &str, body: &Value) -> Result<Value, SessionError> {
        let (mut access, expiring) = {
            let s = self.secrets.lock().await;
            let expiring = s.oauth.as_ref().is_some_and(oauth::Grant::expiring);
            (s.access_jwt.clone(), expiring)
        };
        if expiring {
            // Renewed before it expires, not after a refusal.
            self.renew(&access).await?;
            access = self.secrets.lock().await.access_jwt.clone();
        }
        match self.post(nsid, body, &access).await {
            Err(SessionError::Xrpc { status, error, .. }) if needs_new_token(status, &error) => {
                self.renew(&access).await?;
                let access = self.secrets.lock().await.access_jwt.clone();
                self.post(nsid, body, &access).await
            }
            other => other,
        }
    }

    /// Renews the tokens (refreshSession; createSession with the app password when the
    /// refresh token is dead too) and keeps them in the secret store. `stale` is the access token
    /// that was refused: when another call already renewed it, nothing is done.
    async fn renew(&self, stale: &str) -> Result<(), SessionError> {
        let mut secrets = self.secrets.lock().await;
        if secrets.access_jwt != stale {
            return Ok(());
        }
        let pds = &self.account.pds;
        if let (Some(grant), Some(dpop)) = (secrets.oauth.clone(), self.dpop.as_ref()) {
            let answer = oauth::refresh(&self.http, dpop, &grant, &secrets.refresh_jwt)
                .await
                .map_err(|e| match e {
                    SessionError::Xrpc {
                        status: 400 | 401,
                        message,
                        error,
                        ..
                    } => SessionError::SessionEnded {
                        pds: grant.issuer.clone(),
                        message: if message.is_empty() { error } else { message },
                    },
                    other => other,
                })?;
            secrets.access_jwt = answer.access_token.clone();
            if let Some(r) = &answer.refresh_token {
                secrets.refresh_jwt = r.clone();
            }
            if let Some(g) = secrets.oauth.as_mut() {
                g.expires_at = answer.expires_at();
            }
            return save_secrets(&self.secrets_at, &self.account.did, &secrets).await;
        }
        let url = format!("{pds}/xrpc/com.atproto.server.refreshSession");
        let refreshed = async {
            let resp = self
                .http
                .post(&url)
                .bearer_auth(&secrets.refresh_jwt)
                .send()
                .await
                .map_err(network(&url))?;
            answer::<SessionAnswer>(resp, &url).await
        }
        .await;
        let answer = match refreshed {
            Ok(a) => a,
            Err(SessionError::Xrpc { status, error, .. }) if needs_new_token(status, &error) => {
                tracing::info!(did = %self.account.did, "refresh token refused; signing in again with the app password");
                create_session(&self.http, pds, &self.account.did, &secrets.app_password)
                    .await
                    .map_err(|e| SessionError::SessionEnded {
                        pds: pds.clone(),
                        message: e.to_string(),
                    })?
            }
            Err(e) => return Err(e),
        };
        secrets.access_jwt = answer.access_jwt;
        secrets.refresh_jwt = answer.refresh_jwt;
        save_secrets(&self.secrets_at, &self.account.did, &secrets).await
    }

    async fn post(&self, nsid: &str, body: &Value, access: &str) -> Result<Value, SessionError> {
        let url = format!("{}/xrpc/{nsid}", self.account.pds);
        if let Some(dpop) = &self.dpop {
            let resp = dpop
                .send(
                    &self.http,
                    reqwest::Method::POST,
                    &url,
                    Some(access),
                    oauth::Body::Json(body),
                )
                .await?;
            return answer::<Value>(resp, &url).await;
        }
        let resp = self
            .http
            .post(&url)
            .bearer_auth(access)
            .json(body)
            .send()
            .await
            .map_err(network(&url))?;
        answer::<Value>(resp, &url).await
    }

    /// `com.atproto.repo.createRecord` in the account's repo → (uri, cid).
    pub async fn create_record(
        &self,
        collection: &str,
        record: &Value,
    ) -> Result<StrongRef, SessionError> {
        let v = self
            .procedure(
                "com.atproto.repo.createRecord",
                &json!({"repo": self.account.did, "collection": collection, "record": record}),
            )
            .await?;
        strong_ref(&v)
    }

    /// `com.atproto.repo.putRecord` (create or replace; `swap` = the CID the record must still
    /// have, so an edit never overwrites a change made elsewhere) → (uri, cid).
    pub async fn put_record(
        &self,
        collection: &str,
        rkey: &str,
        record: &Value,
        swap: Option<&str>,
    ) -> Result<StrongRef, SessionError> {
        let mut body = json!({
            "repo": self.account.did, "collection": collection, "rkey": rkey, "record": record,
        });
        if let (Some(swap), Some(obj)) = (swap, body.as_object_mut()) {
            obj.insert("swapRecord".into(), Value::String(swap.to_string()));
        }
        let v = self.procedure("com.atproto.repo.putRecord", &body).await?;
        strong_ref(&v)
    }

    /// `com.atproto.repo.deleteRecord` in the account's repo.
    pub async fn delete_record(&self, collection: &str, rkey: &str) -> Result<(), SessionError> {
        self.procedure(
            "com.atproto.repo.deleteRecord",
            &json!({"repo": self.account.did, "collection": collection, "rkey": rkey}),
        )
        .await?;
        Ok(())
    }

    /// The current access token, for tests that check renewal.
    #[doc(hidden)]
    pub async fn access_token(&self) -> String {
        self.secrets.lock().await.access_jwt.clone()
    }
}

/// Before any sign-in: where the secrets will be kept (failing early, before any network call,
/// when there is nowhere), the account's identity and PDS, and that this data directory is not
/// signed in as someone else.
async fn prepare(
    resolver: &Resolver,
    store: &Store,
    who: &str,
) -> Result<(SecretStore, crate::identity::DidDoc, String), SessionError> {
    let secrets_at = SecretStore::of(store).await?;
    match &secrets_at {
        SecretStore::Keyring => {
            blocking(|| {
                keyring::Entry::store_status()
                    .as_ref()
                    .map(|_| ())
                    .map_err(|_| keyring_error(keyring::Error::NoDefaultStore))
            })
            .await?
        }
        SecretStore::File(path) => {
            let path = path.clone();
            blocking(move || read_secrets_file(&path).map(|_| ())).await?
        }
    }
    let doc = resolver.resolve_account(who).await?;
    let pds = doc.pds.clone().ok_or_else(|| SessionError::NoPds {
        did: doc.did.clone(),
    })?;
    if let Some(current) = store.read(signed_in).await? {
        if current.did != doc.did {
            return Err(SessionError::OtherAccount {
                current: current.handle.unwrap_or(current.did),
            });
        }
    }
    Ok((secrets_at, doc, pds))
}

/// Keeps a new session: the secrets where this data directory keeps them, then the account.
async fn keep(
    http: reqwest::Client,
    store: &Store,
    secrets_at: SecretStore,
    did: &str,
    handle: Option<String>,
    pds: String,
    secrets: Secrets,
) -> Result<Arc<Session>, SessionError> {
    save_secrets(&secrets_at, did, &secrets).await?;
    let account = Account {
        did: did.to_string(),
        handle,
        pds,
    };
    let a = account.clone();
    store.write(move |c| save_account(c, &a)).await??;
    Ok(Arc::new(Session::new(account, http, secrets, secrets_at)))
}

/// Whether a password session's access token was made with the account's main password: its
/// scope is full access (`com.atproto.access`), where an app password's is
/// `com.atproto.appPass` (or `…appPassPrivileged`). The token is only read, not trusted: the
/// server that made it is the one being asked.
fn is_main_password_session(access_jwt: &str) -> bool {
    use base64::Engine as _;
    let Some(payload) = access_jwt.split('.').nth(1) else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return false;
    };
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("scope").and_then(Value::as_str).map(str::to_string))
        .is_some_and(|scope| scope == "com.atproto.access")
}

fn strong_ref(v: &Value) -> Result<StrongRef, SessionError> {
    serde_json::from_value(v.clone()).map_err(|e| SessionError::Xrpc {
        url: String::new(),
        status: 200,
        error: "BadAnswer".into(),
        message: format!("the answer has no uri and cid ({e}): {v}"),
    })
}

async fn create_session(
    http: &reqwest::Client,
    pds: &str,
    identifier: &str,
    password: &str,
) -> Result<SessionAnswer, SessionError> {
    let url = format!("{pds}/xrpc/com.atproto.server.createSession");
    let resp = http
        .post(&url)
        .json(&json!({"identifier": identifier, "password": password}))
        .send()
        .await
        .map_err(network(&url))?;
    answer(resp, &url).await
}

/// Maps a transport failure talking to `url` into a [`SessionError`].
fn network(url: &str) -> impl Fn(reqwest::Error) -> SessionError + '_ {
    move |e| SessionError::Network {
        url: url.to_string(),
        reason: e.to_string(),
    }
}

/// A JSON answer, or the XRPC error (`{error, message}`) it carries; read through
/// [`crate::xrpc`] (a size limit and a deadline).
pub(crate) async fn answer<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    url: &str,
) -> Result<T, SessionError> {
    let deadline = tokio::time::Instant::now() + crate::xrpc::DEADLINE;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(crate::xrpc::refusal(resp, url, deadline).await.into());
    }
    let body = crate::xrpc::read_capped(resp, url, crate::xrpc::JSON_LIMIT, deadline).await?;
    let body: &[u8] = if body.is_empty() { b"null" } else { &body };
    serde_json::from_slice(body).map_err(|e| SessionError::Xrpc {
        url: url.to_string(),
        status,
        error: "BadAnswer".into(),
        message: e.to_string(),
    })
}

impl From<crate::xrpc::XrpcError> for SessionError {
    fn from(e: crate::xrpc::XrpcError) -> Self {
        use crate::xrpc::XrpcError as X;
        match e {
            X::Network { url, reason } => SessionError::Network { url, reason },
            X::Timeout { ref url, .. } => SessionError::Network {
                url: url.clone(),
                reason: e.to_string(),
            },
            X::Status {
                url,
                status,
                error,
                message,
            } => SessionError::Xrpc {
                url,
                status,
                error,
                message,
            },
            X::TooLarge { ref url, .. }
            | X::Decode { ref url, .. }
            | X::Endless { ref url, .. } => SessionError::Xrpc {
                url: url.clone(),
                status: 200,
                error: "BadAnswer".into(),
                message: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(400, "ExpiredToken", true)]
    #[case(401, "ExpiredToken", true)]
    #[case(401, "InvalidToken", true)]
    #[case(401, "AuthenticationRequired", true)]
    #[case(400, "InvalidRequest", false)]
    #[case(400, "InvalidSwap", false)]
    #[case(500, "ExpiredToken", false)]
    #[case(403, "Forbidden", false)]
    fn which_answers_renew_the_session(
        #[case] status: u16,
        #[case] error: &str,
        #[case] renew: bool,
    ) {
        assert_eq!(needs_new_token(status, error), renew);
    }

    fn jwt_with(payload: &str) -> String {
        use base64::Engine as _;
        let b = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
        format!("{}.{}.sig", b(r#"{"alg":"ES256K"}"#), b(payload))
    }

    #[rstest]
    #[case(r#"{"scope":"com.atproto.access","sub":"did:plc:a"}"#, true)]
    #[case(r#"{"scope":"com.atproto.appPass","sub":"did:plc:a"}"#, false)]
    #[case(r#"{"scope":"com.atproto.appPassPrivileged"}"#, false)]
    #[case(r#"{"sub":"did:plc:a"}"#, false)]
    #[case("not json", false)]
    fn a_main_password_session_is_told_by_its_scope(#[case] payload: &str, #[case] main: bool) {
        assert_eq!(is_main_password_session(&jwt_with(payload)), main);
        assert!(!is_main_password_session("no-dots"));
    }

    #[test]
    fn older_secrets_without_oauth_still_read() {
        let old = r#"{"appPassword":"p","accessJwt":"a","refreshJwt":"r"}"#;
        let s: Secrets = serde_json::from_str(old).unwrap();
        assert!(s.oauth.is_none());
        assert_eq!(s.app_password, "p");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = Secrets {
            app_password: "hunter2".into(),
            access_jwt: "a".into(),
            refresh_jwt: "r".into(),
            oauth: None,
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[rstest]
    #[case(keyring::Error::NoDefaultStore, "no secret service")]
    #[case(keyring::Error::NoEntry, "keyring failed")]
    fn keyring_errors_say_what_to_do(#[case] e: keyring::Error, #[case] says: &str) {
        let text = keyring_error(e).to_string();
        assert!(text.contains(says), "{text}");
    }

    #[test]
    fn without_a_secret_service_the_error_names_the_file_option() {
        let text = keyring_error(keyring::Error::NoDefaultStore).to_string();
        assert!(text.contains("p2pds login --secrets-file"), "{text}");
        assert!(text.contains("gnome-keyring-daemon"), "{text}");
    }

    fn secrets(n: &str) -> Secrets {
        Secrets {
            app_password: format!("pw-{n}"),
            access_jwt: format!("access-{n}"),
            refresh_jwt: format!("refresh-{n}"),
            oauth: None,
        }
    }

    fn file_in(dir: &tempfile::TempDir) -> SecretStore {
        SecretStore::File(dir.path().join(SECRETS_FILE))
    }

    #[tokio::test]
    async fn the_secrets_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let at = file_in(&dir);
        let missing = load_secrets(&at, "did:plc:a").await;
        assert!(
            matches!(&missing, Err(SessionError::NoSecret { place, .. }) if place.contains(SECRETS_FILE)),
            "{missing:?}"
        );
        save_secrets(&at, "did:plc:a", &secrets("a")).await.unwrap();
        save_secrets(&at, "did:plc:b", &secrets("b")).await.unwrap();
        save_secrets(&at, "did:plc:a", &secrets("a2"))
            .await
            .unwrap();
        assert_eq!(load_secrets(&at, "did:plc:a").await.unwrap(), secrets("a2"));
        assert_eq!(load_secrets(&at, "did:plc:b").await.unwrap(), secrets("b"));
        // A JSON map DID → the same JSON a keyring entry holds.
        let text = std::fs::read_to_string(dir.path().join(SECRETS_FILE)).unwrap();
        let map: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(
            map["did:plc:b"],
            serde_json::from_str::<Value>(&serde_json::to_string(&secrets("b")).unwrap()).unwrap()
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SECRETS_FILE)]);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_secrets_file_is_readable_only_by_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let at = file_in(&dir);
        save_secrets(&at, "did:plc:a", &secrets("a")).await.unwrap();
        let path = dir.path().join(SECRETS_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        // A rewrite keeps it so.
        save_secrets(&at, "did:plc:b", &secrets("b")).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    #[cfg(unix)]
    #[rstest]
    #[case(0o640)]
    #[case(0o604)]
    #[case(0o620)]
    #[tokio::test]
    async fn a_secrets_file_others_may_read_is_refused(#[case] mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let at = file_in(&dir);
        save_secrets(&at, "did:plc:a", &secrets("a")).await.unwrap();
        let path = dir.path().join(SECRETS_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = load_secrets(&at, "did:plc:a").await.unwrap_err();
        assert!(
            matches!(err, SessionError::SecretsFileOpen { .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("chmod 600 {}", path.display())),
            "{text}"
        );
        // Nor is it written to (which would read it first).
        let err = save_secrets(&at, "did:plc:b", &secrets("b"))
            .await
            .unwrap_err();
        assert!(matches!(err, SessionError::SecretsFileOpen { .. }));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_secrets(&at, "did:plc:a").await.unwrap(), secrets("a"));
    }

    #[tokio::test]
    async fn deleting_removes_only_that_account() {
        let dir = tempfile::tempdir().unwrap();
        let at = file_in(&dir);
        save_secrets(&at, "did:plc:a", &secrets("a")).await.unwrap();
        save_secrets(&at, "did:plc:b", &secrets("b")).await.unwrap();
        delete_secrets(&at, "did:plc:a").await.unwrap();
        assert!(matches!(
            load_secrets(&at, "did:plc:a").await,
            Err(SessionError::NoSecret { .. })
        ));
        assert_eq!(load_secrets(&at, "did:plc:b").await.unwrap(), secrets("b"));
        // Nothing to remove is fine; the last one gone, the file goes.
        delete_secrets(&at, "did:plc:a").await.unwrap();
        delete_secrets(&at, "did:plc:b").await.unwrap();
        assert!(!dir.path().join(SECRETS_FILE).exists());
    }

    #[tokio::test]
    async fn a_damaged_secrets_file_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let at = file_in(&dir);
        save_secrets(&at, "did:plc:a", &secrets("a")).await.unwrap();
        std::fs::write(dir.path().join(SECRETS_FILE), "{not json").unwrap();
        let err = load_secrets(&at, "did:plc:a").await.unwrap_err();
        assert!(err.to_string().contains("--secrets-file"), "{err}");
    }

    #[tokio::test]
    async fn the_choice_is_kept_in_the_store_and_said_in_words() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("p2pds.sqlite")).unwrap();
        assert_eq!(SecretStore::of(&store).await.unwrap(), SecretStore::Keyring);
        assert!(secret_store_words(&store).await.contains("system keyring"));
        use_secrets_file(&store).await.unwrap();
        let path = dir.path().join(SECRETS_FILE);
        assert_eq!(
            SecretStore::of(&store).await.unwrap(),
            SecretStore::File(path.clone())
        );
        let words = secret_store_words(&store).await;
        assert!(words.contains(&path.display().to_string()), "{words}");
        #[cfg(unix)]
        assert!(words.contains("readable only by you"), "{words}");
        // Kept across openings.
        drop(store);
        let store = Store::open(&dir.path().join("p2pds.sqlite")).unwrap();
        assert_eq!(
            SecretStore::of(&store).await.unwrap(),
            SecretStore::File(path)
        );
        // A value this version does not know is an error, never a silent fallback.
        store
            .write(|c| {
                c.execute(
                    "UPDATE group_meta SET value = 'tpm' WHERE key = ?1",
                    [SECRET_STORE_KEY],
                )
            })
            .await
            .unwrap()
            .unwrap();
        let err = SecretStore::of(&store).await.unwrap_err();
        assert!(err.to_string().contains("update P2PDS"), "{err}");
    }
}
