//! Recovery keys: a rotation key of the owner's own, so the account's identity can move even
//! when its PDS is gone.
//!
//! A `did:plc` identity is changed by operations signed with one of its *rotation keys*. A PDS
//! lists its own key there, so while the PDS works it can move the account (after an emailed
//! code, see [`crate::restore`]). When the PDS is gone, only another listed key can. This
//! module registers a k256 key the owner holds (kept in the OS keyring, and shown once as a
//! code to write down) at the front of the list, while the PDS still works:
//! `requestPlcOperationSignature` (the PDS emails a code), then `signPlcOperation` with the
//! code and the longer key list, then `submitPlcOperation`. The signed operation is checked
//! before it goes out: it may change the rotation keys and nothing else.
//!
//! With the key, [`crate::restore`] signs PLC operations itself: first one that names the new
//! PDS and the recovery key as the account's signing key (so this node can sign the proof the
//! new PDS asks for before it creates the account with the same DID), then, once the account
//! is there, one with the new PDS's recommended credentials.
//!
//! PLC operations are DAG-CBOR maps signed (ECDSA, low-S) over the encoding without `sig`;
//! `prev` is the CID of the operation before. Facts from the PLC directory are only used to
//! write the next operation: the directory checks each operation against the one before, so a
//! directory that lied would only get its own operation refused.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cid::Cid;
use ipld_core::ipld::Ipld;
use serde_json::{json, Value};

use crate::crypto::{PublicKey, SigningKey};
use crate::identity::Resolver;
use crate::session::oauth::IdentityGrant;
use crate::session::SessionError;

/// The most rotation keys a PLC identity may list.
pub const MAX_ROTATION_KEYS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("that is not a recovery key: it is 64 letters and digits (0-9, a-f), spaces and dashes aside")]
    BadCode,
    #[error("only accounts with a did:plc identity can have a recovery key ({0} is not one)")]
    NotPlc(String),
    #[error("could not reach {what}: {reason}")]
    Network { what: String, reason: String },
    #[error("{what} refused: {reason}")]
    Refused {
        what: String,
        reason: String,
        /// The XRPC error name (`AuthenticationRequired`, `InvalidToken`, …), empty when none.
        error: String,
    },
    #[error("the identity directory sent something unexpected: {0}")]
    BadPlcAnswer(String),
    #[error("the server signed a change that does more than add the recovery key ({0}); it was not sent")]
    UnexpectedChange(String),
    #[error("the identity already lists {MAX_ROTATION_KEYS} rotation keys, the most it may; no room for one more")]
    TooManyKeys,
    #[error("this recovery key is not listed in the account's identity: it cannot move it (was it registered for another account?)")]
    NotRegistered,
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
}

impl RecoveryError {
    /// The account's server refused the password (signing in with it).
    pub fn is_wrong_password(&self) -> bool {
        matches!(self, Self::Refused { error, .. } if error == "AuthenticationRequired")
    }

    /// The account's server refused the emailed confirmation code.
    pub fn is_bad_code(&self) -> bool {
        matches!(self, Self::Refused { error, .. } if error == "InvalidToken" || error == "ExpiredToken")
    }
}

/// A recovery key: a k256 private key the owner holds.
#[derive(Clone, Debug)]
pub struct RecoveryKey(SigningKey);

impl RecoveryKey {
    pub fn generate() -> Self {
        Self(SigningKey::generate_k256())
    }

    /// Reads the code a person wrote down (hex, any spaces or dashes ignored).
    pub fn from_code(text: &str) -> Result<Self, RecoveryError> {
        let hex: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect::<String>()
            .to_ascii_lowercase();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RecoveryError::BadCode);
        }
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| RecoveryError::BadCode)?;
        SigningKey::k256_from_bytes(&bytes)
            .map(Self)
            .map_err(|_| RecoveryError::BadCode)
    }

    /// The code to write down: 64 hex digits in groups of four.
    pub fn code(&self) -> String {
        let SigningKey::K256(k) = &self.0 else {
            return String::new();
        };
        let hex: String = k.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        hex.as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-")
    }

    pub fn public_key(&self) -> PublicKey {
        self.0.public_key()
    }

    /// The key as it appears in the identity (`did:key:z…`).
    pub fn did_key(&self) -> String {
        self.public_key().to_did_key()
    }

    /// A service-auth token for `aud` and the method `lxm`, as the account's own signing key
    /// would sign it (valid 10 minutes).
    pub fn service_jwt(&self, iss: &str, aud: &str, lxm: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let header = json!({"typ": "JWT", "alg": "ES256K"});
        let nonce: [u8; 16] = rand::random();
        let jti: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let payload = json!({
            "iss": iss, "aud": aud, "lxm": lxm, "iat": now, "exp": now + 600, "jti": jti,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let sig = self.0.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// Signs a PLC operation (the map without `sig`) and returns it with `sig`.
    pub fn sign_operation(&self, unsigned: &Value) -> Result<Value, RecoveryError> {
        let bytes = dag_cbor(unsigned)?;
        let sig = self.0.sign(&bytes);
        let mut op = unsigned.clone();
        op["sig"] = json!(URL_SAFE_NO_PAD.encode(sig));
        Ok(op)
    }
}

fn to_ipld(value: &Value) -> Result<Ipld, RecoveryError> {
    Ok(match value {
        Value::Null => Ipld::Null,
        Value::Bool(b) => Ipld::Bool(*b),
        Value::Number(n) => Ipld::Integer(
            n.as_i64()
                .ok_or_else(|| RecoveryError::BadPlcAnswer(format!("a non-integer number {n}")))?
                .into(),
        ),
        Value::String(s) => Ipld::String(s.clone()),
        Value::Array(items) => Ipld::List(items.iter().map(to_ipld).collect::<Result<_, _>>()?),
        Value::Object(map) => Ipld::Map(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), to_ipld(v)?)))
                .collect::<Result<BTreeMap<_, _>, RecoveryError>>()?,
        ),
    })
}

fn dag_cbor(value: &Value) -> Result<Vec<u8>, RecoveryError> {
    serde_ipld_dagcbor::to_vec(&to_ipld(value)?)
        .map_err(|e| RecoveryError::BadPlcAnswer(format!("cannot encode an operation: {e}")))
}

/// The CID of a signed PLC operation (what the next operation names as `prev`).
pub fn operation_cid(op: &Value) -> Result<Cid, RecoveryError> {
    Ok(crate::repo::cid_for_cbor(&dag_cbor(op)?))
}

/// The PLC directory, for reading an identity's current state and sending operations.
pub struct Plc<'a> {
    pub http: &'a reqwest::Client,
    pub url: String,
}

impl<'a> Plc<'a> {
    pub fn new(http: &'a reqwest::Client, resolver: &Resolver) -> Self {
        Self {
            http,
            url: resolver.plc_url().trim_end_matches('/').to_string(),
        }
    }

    async fn get(&self, did: &str, path: &str) -> Result<Value, RecoveryError> {
        if !did.starts_with("did:plc:") {
            return Err(RecoveryError::NotPlc(did.to_string()));
        }
        let url = format!("{}/{did}{path}", self.url);
        let net = |reason: String| RecoveryError::Network {
            what: "the identity directory".into(),
            reason,
        };
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| net(e.to_string()))?;
        crate::session::answer(resp, &url)
            .await
            .map_err(|e| match e {
                // A success whose body is not JSON.
                SessionError::Xrpc {
                    status, message, ..
                } if (200..300).contains(&status) => RecoveryError::BadPlcAnswer(message),
                other => net(other.to_string()),
            })
    }

    /// The identity's current state: `rotationKeys`, `verificationMethods`, `alsoKnownAs`,
    /// `services`.
    pub async fn data(&self, did: &str) -> Result<Value, RecoveryError> {
        self.get(did, "/data").await
    }

    /// The last operation, and its CID.
    pub async fn last(&self, did: &str) -> Result<(Value, Cid), RecoveryError> {
        let op = self.get(did, "/log/last").await?;
        let cid = operation_cid(&op)?;
        Ok((op, cid))
    }

    /// Sends a signed operation.
    pub async fn submit(&self, did: &str, op: &Value) -> Result<(), RecoveryError> {
        let url = format!("{}/{did}", self.url);
        let resp =
            self.http
                .post(&url)
                .json(op)
                .send()
                .await
                .map_err(|e| RecoveryError::Network {
                    what: "the identity directory".into(),
                    reason: e.to_string(),
                })?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        let url = resp.url().to_string();
        let deadline = tokio::time::Instant::now() + crate::xrpc::DEADLINE;
        let text = crate::xrpc::read_capped(resp, &url, 64 << 10, deadline)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Err(RecoveryError::Refused {
            what: "the identity directory".into(),
            reason: format!("{status}: {}", text.chars().take(300).collect::<String>()),
            error: String::new(),
        })
    }

    /// Signs with `key` and sends an operation that follows the current last one, built from
    /// the current state by `change`.
    pub async fn update(
        &self,
        did: &str,
        key: &RecoveryKey,
        change: impl FnOnce(&mut Value),
    ) -> Result<(), RecoveryError> {
        let data = self.data(did).await?;
        if !rotation_keys(&data).contains(&key.did_key()) {
            return Err(RecoveryError::NotRegistered);
        }
        let (_, prev) = self.last(did).await?;
        let mut unsigned = json!({
            "type": "plc_operation",
            "rotationKeys": data.get("rotationKeys").cloned().unwrap_or(json!([])),
            "verificationMethods": data.get("verificationMethods").cloned().unwrap_or(json!({})),
            "alsoKnownAs": data.get("alsoKnownAs").cloned().unwrap_or(json!([])),
            "services": data.get("services").cloned().unwrap_or(json!({})),
            "prev": prev.to_string(),
        });
        change(&mut unsigned);
        let op = key.sign_operation(&unsigned)?;
        self.submit(did, &op).await
    }
}

/// The rotation keys an identity state (or operation) lists.
pub fn rotation_keys(data: &Value) -> Vec<String> {
    data.get("rotationKeys")
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `first` then `rest` without repeats, at most [`MAX_ROTATION_KEYS`].
pub fn key_list(first: &str, rest: &[String]) -> Vec<String> {
    let mut keys = vec![first.to_string()];
    for k in rest {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    keys.truncate(MAX_ROTATION_KEYS);
    keys
}

/// What registering did.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    pub did: String,
    /// `code-sent` (the PDS emailed a confirmation code: register again with it),
    /// `registered` (the identity now lists the key) or `already` (it did before).
    pub state: String,
    /// The key as the identity lists it.
    pub did_key: Option<String>,
    /// The code to write down (also kept in the keyring): only right after registering.
    pub code: Option<String>,
}

/// An XRPC call to a PDS; `Err` carries the server's reason.
async fn xrpc(req: reqwest::RequestBuilder, what: &str) -> Result<Value, RecoveryError> {
    let resp = req.send().await.map_err(|e| RecoveryError::Network {
        what: what.to_string(),
        reason: e.to_string(),
    })?;
    let url = resp.url().to_string();
    crate::session::answer(resp, &url)
        .await
        .map_err(|e| refused(what, e))
}

/// A failed call to `what`, in its words.
fn refused(what: &str, e: SessionError) -> RecoveryError {
    match e {
        SessionError::Xrpc {
            status,
            error,
            message,
            ..
        } => RecoveryError::Refused {
            what: what.to_string(),
            reason: format!("{status} {error}: {message}")
                .trim_end_matches([':', ' '])
                .to_string(),
            error,
        },
        other => RecoveryError::Network {
            what: what.to_string(),
            reason: other.to_string(),
        },
    }
}

/// How the identity calls of [`register_with`] are allowed.
pub enum IdentityAuth<'a> {
    /// The account's main password (PDSes refuse identity changes to app passwords).
    MainPassword(&'a str),
    /// The identity permission of a consent in the browser (OAuth, `identity:*`).
    Granted(&'a IdentityGrant),
}

/// Makes the identity calls, as `auth` allows.
enum Caller<'a> {
    Bearer(String),
    Granted(&'a IdentityGrant),
}

impl Caller<'_> {
    async fn call(
        &self,
        http: &reqwest::Client,
        pds: &str,
        nsid: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, RecoveryError> {
        match self {
            Caller::Bearer(token) => {
                let mut req = http.post(format!("{pds}/xrpc/{nsid}")).bearer_auth(token);
                if let Some(b) = body {
                    req = req.json(b);
                }
                xrpc(req, what).await
            }
            Caller::Granted(g) => g
                .procedure(http, nsid, body)
                .await
                .map_err(|e| refused(what, e)),
        }
    }
}

/// Whether the identity of `did` lists `key`.
pub async fn is_registered(
    http: &reqwest::Client,
    resolver: &Resolver,
    did: &str,
    key: &RecoveryKey,
) -> Result<bool, RecoveryError> {
    let data = Plc::new(http, resolver).data(did).await?;
    Ok(rotation_keys(&data).contains(&key.did_key()))
}

/// The recovery key kept in this computer's keyring for `did`, listed or not (a code that
/// does not read as a key counts as none).
pub async fn kept_key(did: &str) -> Result<Option<RecoveryKey>, SessionError> {
    Ok(crate::session::load_recovery_key(did)
        .await?
        .and_then(|code| RecoveryKey::from_code(&code).ok()))
}

/// The recovery key kept in this computer's keyring for `did`, when the identity lists it
/// (a key kept but never registered, or a keyring that cannot be read, counts as none).
pub async fn held_key(
    http: &reqwest::Client,
    resolver: &Resolver,
    did: &str,
) -> Option<RecoveryKey> {
    let key = kept_key(did).await.ok()??;
    is_registered(http, resolver, did, &key)
        .await
        .ok()
        .filter(|listed| *listed)
        .map(|_| key)
}

/// Registers a recovery key for `who` (handle or DID) with its PDS. Without `code`, asks the
/// PDS to email a confirmation code; with it, adds the key (the one kept in the keyring for
/// this account, else a new one, kept there first) at the front of the rotation keys.
/// `password` is the account's main password: PDSes refuse identity changes to app passwords.
pub async fn register(
    http: &reqwest::Client,
    resolver: &Resolver,
    who: &str,
    password: &str,
    code: Option<&str>,
) -> Result<Registration, RecoveryError> {
    register_with(
        http,
        resolver,
        who,
        IdentityAuth::MainPassword(password),
        code,
    )
    .await
}

/// [`register`], with the identity calls allowed by `auth`.
pub async fn register_with(
    http: &reqwest::Client,
    resolver: &Resolver,
    who: &str,
    auth: IdentityAuth<'_>,
    code: Option<&str>,
) -> Result<Registration, RecoveryError> {
    let doc = resolver.resolve_account(who).await?;
    let did = doc.did.clone();
    if !did.starts_with("did:plc:") {
        return Err(RecoveryError::NotPlc(did));
    }
    let pds = doc
        .pds
        .clone()
        .ok_or_else(|| RecoveryError::Refused {
            what: "the identity".into(),
            reason: "it names no server".into(),
            error: String::new(),
        })?
        .trim_end_matches('/')
        .to_string();
    let plc = Plc::new(http, resolver);
    let data = plc.data(&did).await?;
    let held = kept_key(&did).await?;
    if let Some(key) = &held {
        if rotation_keys(&data).contains(&key.did_key()) {
            return Ok(Registration {
                did,
                state: "already".into(),
                did_key: Some(key.did_key()),
                code: None,
            });
        }
    }
    let caller = match auth {
        IdentityAuth::MainPassword(password) => {
            let session = xrpc(
                http.post(format!("{pds}/xrpc/com.atproto.server.createSession"))
                    .json(&json!({"identifier": did, "password": password})),
                "signing in to the account's server",
            )
            .await?;
            Caller::Bearer(
                session
                    .get("accessJwt")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )
        }
        IdentityAuth::Granted(g) if g.did == did => Caller::Granted(g),
        IdentityAuth::Granted(g) => {
            return Err(RecoveryError::Refused {
                what: "the permission given in the browser".into(),
                reason: format!("it is for {}, not {did}", g.did),
                error: String::new(),
            })
        }
    };
    let Some(code) = code else {
        caller
            .call(
                http,
                &pds,
                "com.atproto.identity.requestPlcOperationSignature",
                None,
                "the account's server (asking for a confirmation code; it needs the main password or the permission to change the identity, not an app password)",
            )
            .await?;
        return Ok(Registration {
            did,
            state: "code-sent".into(),
            did_key: None,
            code: None,
        });
    };
    let current = rotation_keys(&data);
    if current.len() >= MAX_ROTATION_KEYS {
        return Err(RecoveryError::TooManyKeys);
    }
    // Kept before anything is sent: a key the identity lists is never one nobody holds.
    let key = match held {
        Some(k) => k,
        None => {
            let k = RecoveryKey::generate();
            crate::session::save_recovery_key(&did, &k.code()).await?;
            k
        }
    };
    let wanted = key_list(&key.did_key(), &current);
    let signed = caller
        .call(
            http,
            &pds,
            "com.atproto.identity.signPlcOperation",
            Some(&json!({"token": code.trim(), "rotationKeys": wanted})),
            "the account's server (signing the change; is the confirmation code right and recent?)",
        )
        .await?;
    let op = signed.get("operation").cloned().unwrap_or(Value::Null);
    check_only_keys_added(&data, &op, &wanted)?;
    caller
        .call(
            http,
            &pds,
            "com.atproto.identity.submitPlcOperation",
            Some(&json!({"operation": op})),
            "the account's server (sending the change)",
        )
        .await?;
    let after = plc.data(&did).await?;
    if !rotation_keys(&after).contains(&key.did_key()) {
        return Err(RecoveryError::Refused {
            what: "the identity directory".into(),
            reason: "the change was sent but the identity does not list the key".into(),
            error: String::new(),
        });
    }
    Ok(Registration {
        did,
        state: "registered".into(),
        did_key: Some(key.did_key()),
        code: Some(key.code()),
    })
}

/// The operation a PDS signed may change the rotation keys (to `wanted`) and nothing else.
fn check_only_keys_added(data: &Value, op: &Value, wanted: &[String]) -> Result<(), RecoveryError> {
    if rotation_keys(op) != wanted {
        return Err(RecoveryError::UnexpectedChange(
            "the rotation keys are not the ones asked for".into(),
        ));
    }
    for field in ["verificationMethods", "alsoKnownAs", "services"] {
        if op.get(field) != data.get(field) {
            return Err(RecoveryError::UnexpectedChange(format!(
                "it changes {field}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_round_trips_and_typos_are_refused() {
        let key = RecoveryKey::generate();
        let code = key.code();
        assert_eq!(code.len(), 64 + 15);
        let back = RecoveryKey::from_code(&code).unwrap();
        assert_eq!(back.did_key(), key.did_key());
        let spaced = code.replace('-', " ").to_uppercase();
        assert_eq!(
            RecoveryKey::from_code(&spaced).unwrap().did_key(),
            key.did_key()
        );
        assert!(RecoveryKey::from_code(&code[..70]).is_err());
        let typo = format!("{}g", &code[..code.len() - 1]);
        assert!(matches!(
            RecoveryKey::from_code(&typo),
            Err(RecoveryError::BadCode)
        ));
        assert!(key.did_key().starts_with("did:key:zQ3s"));
    }

    #[test]
    fn an_operation_is_signed_over_its_encoding_without_sig() {
        let key = RecoveryKey::generate();
        let unsigned = json!({
            "type": "plc_operation",
            "rotationKeys": [key.did_key()],
            "verificationMethods": {"atproto": key.did_key()},
            "alsoKnownAs": ["at://alice.test"],
            "services": {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": "http://localhost:1"}},
            "prev": null,
        });
        let op = key.sign_operation(&unsigned).unwrap();
        let sig = URL_SAFE_NO_PAD.decode(op["sig"].as_str().unwrap()).unwrap();
        key.public_key()
            .verify(&dag_cbor(&unsigned).unwrap(), &sig)
            .unwrap();
        // The CID covers the signed form, and key order in the JSON does not matter.
        let reordered: Value = serde_json::from_str(&serde_json::to_string(&op).unwrap()).unwrap();
        assert_eq!(
            operation_cid(&op).unwrap(),
            operation_cid(&reordered).unwrap()
        );
        assert_ne!(
            operation_cid(&op).unwrap(),
            operation_cid(&unsigned).unwrap()
        );
    }

    #[test]
    fn a_service_token_verifies_with_the_key() {
        let key = RecoveryKey::generate();
        let jwt = key.service_jwt(
            "did:plc:abc",
            "did:web:pds.test",
            "com.atproto.server.createAccount",
        );
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["iss"], "did:plc:abc");
        assert_eq!(payload["lxm"], "com.atproto.server.createAccount");
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        key.public_key()
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
    }

    #[test]
    fn key_lists_put_the_owner_first_without_repeats() {
        let rest = vec!["b".to_string(), "a".to_string(), "c".to_string()];
        assert_eq!(key_list("a", &rest), vec!["a", "b", "c"]);
        let many: Vec<String> = (0..9).map(|i| i.to_string()).collect();
        assert_eq!(key_list("x", &many).len(), MAX_ROTATION_KEYS);
    }

    #[test]
    fn a_signed_change_may_only_add_keys() {
        let data = json!({
            "rotationKeys": ["did:key:pds"],
            "verificationMethods": {"atproto": "did:key:sig"},
            "alsoKnownAs": ["at://alice.test"],
            "services": {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": "http://a"}},
        });
        let wanted = vec!["did:key:me".to_string(), "did:key:pds".to_string()];
        let mut op = data.clone();
        op["rotationKeys"] = json!(wanted);
        check_only_keys_added(&data, &op, &wanted).unwrap();
        let mut moved = op.clone();
        moved["services"]["atproto_pds"]["endpoint"] = json!("http://evil");
        assert!(matches!(
            check_only_keys_added(&data, &moved, &wanted),
            Err(RecoveryError::UnexpectedChange(_))
        ));
        assert!(check_only_keys_added(&data, &data, &wanted).is_err());
    }
}
