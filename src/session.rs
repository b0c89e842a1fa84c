//! Signing in: the node's own account, its session with its PDS, and where the secrets live.
//!
//! One data directory is one node is one signed-in account. The store keeps who is signed in
//! (DID, handle, PDS: the `account` table); the app password and the session tokens live in the
//! OS keyring (the `keyring` crate: the Secret Service over D-Bus on Linux, Keychain on macOS,
//! the Credential Manager on Windows) under service [`KEYRING_SERVICE`] and the account's DID,
//! so several nodes on one machine never share an entry.
//!
//! Invariants: no secret is ever written to SQLite, a config file or a log; a call that fails
//! because the access token expired (or was refused) refreshes the session once and is tried
//! once more; when the refresh token is dead too, the app password from the keyring makes a
//! new session. Keyring calls are blocking (D-Bus) and run on blocking threads.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::identity::{IdentityError, Resolver};
use crate::policy::records::StrongRef;
use crate::store::{self, Store, StoreError};

/// The keyring service name; the keyring "user" is the account's DID.
pub const KEYRING_SERVICE: &str = "p2pds";

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no secret service (keyring) is running, so P2PDS has nowhere safe to keep your app password: start one (on a desktop, log in to a GNOME/KDE session; on a server, run the command inside `dbus-run-session` with `gnome-keyring-daemon --unlock --components=secrets`), then sign in again ({detail})")]
    NoSecretService { detail: String },
    #[error("the keyring is locked or refused access: unlock it (log in to your desktop session, or `echo -n PASSWORD | gnome-keyring-daemon --unlock`) and try again ({detail})")]
    KeyringLocked { detail: String },
    #[error("the keyring failed: {0}")]
    Keyring(String),
    #[error("not signed in: run `p2pds login HANDLE` first")]
    NotSignedIn,
    #[error("the keyring holds no password for {did}: sign in again with `p2pds login`")]
    NoSecret { did: String },
    #[error("this data directory is signed in as {current}: run `p2pds logout` first (one data directory is one node and one account)")]
    OtherAccount { current: String },
    #[error("{who}'s server refused the sign-in: {message}. Check the handle and the password (use an app password: Settings → Privacy and security → App passwords)")]
    LoginRefused { who: String, message: String },
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
    pub app_password: String,
    pub access_jwt: String,
    pub refresh_jwt: String,
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

/// What a keyring error means for the person.
fn keyring_error(e: keyring::Error) -> SessionError {
    match e {
        keyring::Error::NoDefaultStore => SessionError::NoSecretService {
            detail: e.to_string(),
        },
        keyring::Error::NoStorageAccess(inner) => {
            let detail = inner.to_string();
            // A bus without a secret-service provider answers "ServiceUnknown"/"not provided".
            if detail.contains("ServiceUnknown") || detail.contains("not provided") {
                SessionError::NoSecretService { detail }
            } else {
                SessionError::KeyringLocked { detail }
            }
        }
        keyring::Error::PlatformFailure(inner) => {
            let detail = inner.to_string();
            if detail.contains("ServiceUnknown")
                || detail.contains("DBUS_SESSION_BUS_ADDRESS")
                || detail.contains("not provided")
            {
                SessionError::NoSecretService { detail }
            } else {
                SessionError::Keyring(detail)
            }
        }
        other => SessionError::Keyring(other.to_string()),
    }
}

fn entry(did: &str) -> Result<keyring::Entry, SessionError> {
    keyring::Entry::new(KEYRING_SERVICE, did).map_err(keyring_error)
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, SessionError> + Send + 'static,
) -> Result<R, SessionError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SessionError::Keyring(format!("the keyring call did not finish: {e}")))?
}

/// Reads the secrets of `did` from the keyring.
pub async fn load_secrets(did: &str) -> Result<Secrets, SessionError> {
    let did = did.to_string();
    blocking(move || {
        let text = match entry(&did)?.get_password() {
            Ok(t) => t,
            Err(keyring::Error::NoEntry) => return Err(SessionError::NoSecret { did }),
            Err(e) => return Err(keyring_error(e)),
        };
        serde_json::from_str(&text).map_err(|_| SessionError::NoSecret { did })
    })
    .await
}

/// Writes the secrets of `did` to the keyring.
pub async fn save_secrets(did: &str, secrets: &Secrets) -> Result<(), SessionError> {
    let did = did.to_string();
    let text = serde_json::to_string(secrets)
        .map_err(|e| SessionError::Keyring(format!("encoding the secrets: {e}")))?;
    blocking(move || entry(&did)?.set_password(&text).map_err(keyring_error)).await
}

/// Removes the secrets of `did` from the keyring (nothing to remove is fine).
pub async fn delete_secrets(did: &str) -> Result<(), SessionError> {
    let did = did.to_string();
    blocking(move || match entry(&did)?.delete_credential() {
        Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(keyring_error(e)),
    })
    .await
}

/// The keyring user under which the recovery key of `did` is kept (see [`crate::recovery`]).
fn recovery_user(did: &str) -> String {
    format!("recovery-key:{did}")
}

/// The recovery key text of `did` kept in the keyring, if any.
pub async fn load_recovery_key(did: &str) -> Result<Option<String>, SessionError> {
    let user = recovery_user(did);
    blocking(move || match entry(&user)?.get_password() {
        Ok(t) => Ok(Some(t)),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(keyring_error(e)),
    })
    .await
}

/// Keeps the recovery key text of `did` in the keyring.
pub async fn save_recovery_key(did: &str, text: &str) -> Result<(), SessionError> {
    let (user, text) = (recovery_user(did), text.to_string());
    blocking(move || entry(&user)?.set_password(&text).map_err(keyring_error)).await
}

/// Whether an XRPC error answer means "get a new access token and try again".
pub fn needs_new_token(status: u16, error: &str) -> bool {
    matches!(
        (status, error),
        (400 | 401, "ExpiredToken" | "InvalidToken") | (401, "AuthenticationRequired")
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
}

impl Session {
    /// Signs in with a handle (or DID) and an app password: `createSession` on the account's own
    /// PDS, then keeps the password and tokens in the keyring and the account in the store.
    pub async fn login(
        http: reqwest::Client,
        resolver: &Resolver,
        store: &Store,
        who: &str,
        password: &str,
    ) -> Result<Arc<Session>, SessionError> {
        // Fail early, before any network call, when there is nowhere to keep the secrets.
        blocking(|| {
            keyring::Entry::store_status()
                .as_ref()
                .map(|_| ())
                .map_err(|_| keyring_error(keyring::Error::NoDefaultStore))
        })
        .await?;
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
        let secrets = Secrets {
            app_password: password.to_string(),
            access_jwt: answer.access_jwt,
            refresh_jwt: answer.refresh_jwt,
        };
        save_secrets(&doc.did, &secrets).await?;
        let account = Account {
            did: doc.did.clone(),
            handle: answer.handle.or(doc.handle),
            pds,
        };
        let a = account.clone();
        store.write(move |c| save_account(c, &a)).await??;
        Ok(Arc::new(Session {
            account,
            http,
            secrets: tokio::sync::Mutex::new(secrets),
        }))
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
        let secrets = load_secrets(&account.did).await?;
        Ok(Arc::new(Session {
            account,
            http,
            secrets: tokio::sync::Mutex::new(secrets),
        }))
    }

    /// Signs out: ends the session on the PDS (best effort), removes the secrets from the
    /// keyring and the account from the store. Returns who was signed in.
    pub async fn logout(
        http: reqwest::Client,
        store: &Store,
    ) -> Result<Option<Account>, SessionError> {
        let Some(account) = store.read(signed_in).await? else {
            return Ok(None);
        };
        if let Ok(secrets) = load_secrets(&account.did).await {
            let url = format!("{}/xrpc/com.atproto.server.deleteSession", account.pds);
            let _ = http
                .post(&url)
                .bearer_auth(&secrets.refresh_jwt)
                .send()
                .await;
        }
        delete_secrets(&account.did).await?;
        store.write(|c| forget_account(c)).await??;
        Ok(Some(account))
    }

    pub fn did(&self) -> &str {
        &self.account.did
    }

    /// An XRPC procedure (POST) as the signed-in account. An expired or refused access token
    /// renews the session and the call is tried once more.
    pub async fn procedure(&self, nsid: &str, body: &Value) -> Result<Value, SessionError> {
        let access = self.secrets.lock().await.access_jwt.clone();
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
    /// refresh token is dead too) and keeps them in the keyring. `stale` is the access token
    /// that was refused: when another call already renewed it, nothing is done.
    async fn renew(&self, stale: &str) -> Result<(), SessionError> {
        let mut secrets = self.secrets.lock().await;
        if secrets.access_jwt != stale {
            return Ok(());
        }
        let pds = &self.account.pds;
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
        save_secrets(&self.account.did, &secrets).await
    }

    async fn post(&self, nsid: &str, body: &Value, access: &str) -> Result<Value, SessionError> {
        let url = format!("{}/xrpc/{nsid}", self.account.pds);
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

/// A JSON answer, or the XRPC error (`{error, message}`) it carries.
pub(crate) async fn answer<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    url: &str,
) -> Result<T, SessionError> {
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(network(url))?;
    if !(200..300).contains(&status) {
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let field = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let message = if body.is_null() {
            text.chars().take(300).collect()
        } else {
            field("message")
        };
        return Err(SessionError::Xrpc {
            url: url.to_string(),
            status,
            error: field("error"),
            message,
        });
    }
    let text = if text.is_empty() { "null" } else { &text };
    serde_json::from_str(text).map_err(|e| SessionError::Xrpc {
        url: url.to_string(),
        status,
        error: "BadAnswer".into(),
        message: e.to_string(),
    })
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

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = Secrets {
            app_password: "hunter2".into(),
            access_jwt: "a".into(),
            refresh_jwt: "r".into(),
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
}
