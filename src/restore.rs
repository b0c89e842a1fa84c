//! Restore: gives an account back from the copy this node holds, into an account on a new
//! PDS, the way an account migration does it.
//!
//! 1. A kept state is picked (see [`crate::history::pick`]): the one at a time the user
//!    names, else the last good state before an upstream loss, else the newest. It is
//!    written as a CAR from the store, every block as verified when it was synced.
//! 2. The account is created on the new PDS with the *same* DID. The PDS asks for proof that
//!    the account agrees: a service-auth token from the account's current PDS (signed with
//!    the account's key), which needs that PDS alive and the owner's password. A restore that
//!    finds the account already there (an earlier run) signs in instead: restores resume.
//! 3. `importRepo` sends the CAR; the new PDS indexes the records and learns which blobs
//!    they name.
//! 4. `listMissingBlobs` until it is empty or nothing more can be sent: each blob this node
//!    holds is hashed against its CID again and uploaded (honouring `Retry-After`, one at a
//!    time, so the PDS's upload limit applies per blob). What could not be sent is reported
//!    with the reason.
//! 5. The account on the new PDS stays deactivated until its identity (the DID document)
//!    names the new PDS: that step needs the old PDS (an emailed code) or the recovery key the
//!    owner registered ([`crate::recovery`]), which also stands in for the old PDS in step 2
//!    when that one is gone. [`RestoreReport::next_steps`] says which, in words.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cid::Cid;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::export::{get_block, ExportError};
use crate::history::{self, HistoryError};
use crate::recovery::{self, Plc, RecoveryError, RecoveryKey};
use crate::repo::mst::{self, MstError};
use crate::store::StoreError;
use crate::sync::Syncer;

/// What to restore, and where to (its `Debug` leaves out the passwords, code and key).
#[derive(Clone)]
pub struct RestoreRequest {
    pub did: String,
    pub at: Option<DateTime<Utc>>,
    /// The new PDS, e.g. `https://pds.example.net`.
    pub to_pds: String,
    /// The handle on the new PDS.
    pub handle: String,
    /// The password of the account on the new PDS.
    pub password: String,
    /// The owner's password on the current PDS, for the proof it signs (defaults to
    /// `password`). An app password is not enough: the PDS reserves this for the owner.
    pub old_password: Option<String>,
    /// The account's email on the new PDS (default: the one the current PDS has).
    pub email: Option<String>,
    pub invite_code: Option<String>,
    /// The confirmation code the old PDS emailed to the owner: with it the restore also
    /// moves the identity (the DID document then names the new PDS) and activates the
    /// account there.
    pub plc_token: Option<String>,
    /// The owner's recovery key (see [`crate::recovery`]): with it, the restore works when
    /// the old PDS is gone, and moves the identity without an emailed code.
    pub recovery_key: Option<RecoveryKey>,
}

impl std::fmt::Debug for RestoreRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreRequest")
            .field("did", &self.did)
            .field("at", &self.at)
            .field("to_pds", &self.to_pds)
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl RestoreRequest {
    /// The password the old PDS takes.
    fn old_password(&self) -> &str {
        self.old_password.as_deref().unwrap_or(&self.password)
    }
}

/// Something that could not be restored, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotRestored {
    pub what: String,
    pub reason: String,
}

/// What a restore did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreReport {
    pub did: String,
    /// The state restored: its rev, its time, and why it was picked.
    pub rev: String,
    pub time: String,
    pub why: String,
    /// Why the state was picked, for screens to act on.
    pub picked_by: crate::history::PickedBy,
    pub to_pds: String,
    /// `created` (this run made the account) or `existing` (an earlier run did: resumed).
    pub account: String,
    pub records: u64,
    pub car_bytes: u64,
    /// Blobs the restored records name.
    pub blobs_referenced: u64,
    pub blobs_uploaded: u64,
    pub blob_bytes_uploaded: u64,
    pub not_restored: Vec<NotRestored>,
    /// What the new PDS reports after the restore (`checkAccountStatus`).
    pub new_pds_status: Value,
    /// Whether the account's DID document names the new PDS.
    pub identity_moved: bool,
    /// The old PDS emailed a confirmation code: restoring again with it moves the identity.
    pub code_sent: bool,
    /// The owner's recovery key signed the identity changes (the old PDS was not needed).
    pub used_recovery_key: bool,
    /// What is left to do, in words.
    pub next_steps: Vec<String>,
}

impl RestoreReport {
    /// Everything the state names is on the new PDS.
    pub fn complete(&self) -> bool {
        self.not_restored.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("the kept copy could not be written out: {0}")]
    Export(#[from] ExportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not write a temporary file: {0}")]
    Io(#[from] std::io::Error),
    #[error("could not reach the new server {url}: {reason}")]
    NewPds { url: String, reason: String },
    #[error("the new server refused {what}: {reason}")]
    Refused { what: String, reason: String },
    #[error("{0}")]
    NeedsIdentityStep(String),
    #[error("{0}")]
    WouldUndo(String),
    #[error("with the recovery key: {0}")]
    Recovery(#[from] RecoveryError),
}

fn rotation_key_explanation(did: &str, old_pds: &str, why: &str) -> String {
    format!(
        "The new server only accepts {did} when the account itself agrees, and today only its \
         current server ({old_pds}) can say so: {why}. \
         If that server is gone for good, the account's identity has to be moved first, with a \
         rotation key: a key listed in the account's identity record (its PLC entry) that may \
         sign a change naming a new server and a new signing key. The key of the old server \
         can do that, and so can a key of the owner's own, registered while the old server \
         still worked (a recovery key: `p2pds recovery-key add`, or \"Protect your account\" in \
         the app's settings). Restore again with the recovery key (`--recovery-key-env VAR`, or \
         the key in this computer's keyring) and P2PDS points the identity at the new server \
         itself. Without one, the posts can still be brought back into a new account (a new \
         identity): ask your friend to register a recovery key of their own \
         while their server works, so this never blocks a restore."
    )
}

struct Xrpc<'a> {
    http: &'a reqwest::Client,
}

impl Xrpc<'_> {
    async fn call(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<Result<Value, (u16, String)>, RestoreError> {
        let resp = req.send().await.map_err(|e| RestoreError::NewPds {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        // The upload may be long (a whole repo); the answer is read through `xrpc`: up to a
        // stated size, within a deadline.
        let deadline = tokio::time::Instant::now() + crate::xrpc::DEADLINE;
        let status = resp.status().as_u16();
        let failed = |e: crate::xrpc::XrpcError| RestoreError::NewPds {
            url: url.to_string(),
            reason: e.to_string(),
        };
        if (200..300).contains(&status) {
            let body = crate::xrpc::read_capped(resp, url, crate::xrpc::JSON_LIMIT, deadline)
                .await
                .map_err(failed)?;
            return Ok(Ok(serde_json::from_slice(&body).unwrap_or(Value::Null)));
        }
        match crate::xrpc::refusal(resp, url, deadline).await {
            crate::xrpc::XrpcError::Status { error, message, .. } => {
                let reason = format!("{error}: {message}")
                    .trim_matches([':', ' '])
                    .to_string();
                Ok(Err((status, reason)))
            }
            other => Err(failed(other)),
        }
    }

    async fn post(
        &self,
        pds: &str,
        nsid: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<Result<Value, (u16, String)>, RestoreError> {
        let url = format!("{pds}/xrpc/{nsid}");
        let mut req = self.http.post(&url).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.call(req, &url).await
    }

    /// `createSession` on `pds`.
    async fn sign_in(
        &self,
        pds: &str,
        identifier: &str,
        password: &str,
    ) -> Result<Result<Value, (u16, String)>, RestoreError> {
        let body = json!({ "identifier": identifier, "password": password });
        self.post(pds, "com.atproto.server.createSession", None, &body)
            .await
    }

    /// A procedure that takes no input.
    async fn post_empty(
        &self,
        pds: &str,
        nsid: &str,
        token: &str,
    ) -> Result<Result<Value, (u16, String)>, RestoreError> {
        let url = format!("{pds}/xrpc/{nsid}");
        self.call(self.http.post(&url).bearer_auth(token), &url)
            .await
    }

    async fn get(
        &self,
        pds: &str,
        nsid: &str,
        token: Option<&str>,
        query: &[(&str, &str)],
    ) -> Result<Result<Value, (u16, String)>, RestoreError> {
        let url = format!("{pds}/xrpc/{nsid}");
        let mut req = self.http.get(&url).query(query);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.call(req, &url).await
    }
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Blob CIDs (with their MIME types) named by the records of one kept state.
fn state_blobs(
    conn: &rusqlite::Connection,
    repo_id: i64,
    data: &str,
) -> Result<(u64, HashMap<String, String>), ExportError> {
    let root: Cid = data
        .parse()
        .map_err(|e| ExportError::Damaged(format!("tree root {data}: {e}")))?;
    let mut leaves = Vec::new();
    let mut src = crate::export::StoreSource { conn, repo_id };
    mst::walk(&mut src, root, |_, cid| {
        leaves.push(*cid);
        Ok::<(), MstError>(())
    })
    .map_err(|e| ExportError::Damaged(e.to_string()))?;
    let mut blobs = HashMap::new();
    for leaf in &leaves {
        let Some(bytes) = get_block(conn, repo_id, leaf)? else {
            return Err(ExportError::Damaged(format!("record {leaf} missing")));
        };
        if let Ok(value) = crate::repo::record::to_json(&bytes) {
            collect_blobs(&value, &mut blobs);
        }
    }
    Ok((leaves.len() as u64, blobs))
}

fn collect_blobs(value: &Value, out: &mut HashMap<String, String>) {
    match value {
        Value::Object(map) => {
            if map.get("$type").and_then(Value::as_str) == Some("blob") {
                if let Some(link) = map
                    .get("ref")
                    .and_then(|r| r.get("$link"))
                    .and_then(Value::as_str)
                {
                    let mime = map
                        .get("mimeType")
                        .and_then(Value::as_str)
                        .unwrap_or("application/octet-stream");
                    out.insert(link.to_string(), mime.to_string());
                }
            }
            map.values().for_each(|v| collect_blobs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_blobs(v, out)),
        _ => {}
    }
}

/// A blob file held here, hashed against its CID.
async fn held_blob(dir: &Path, cid: &str) -> Result<Vec<u8>, String> {
    let parsed: Cid = cid.parse().map_err(|e| format!("invalid CID: {e}"))?;
    let path = crate::store::blob_path(dir, cid);
    let mut bytes = Vec::new();
    tokio::fs::File::open(&path)
        .await
        .map_err(|_| {
            "this node holds no copy of it (it was never fetched, or was bad)".to_string()
        })?
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("reading the copy held: {e}"))?;
    if Sha256::digest(&bytes)[..] != *parsed.hash().digest() {
        return Err("the copy held is damaged (its bytes do not match its CID)".into());
    }
    Ok(bytes)
}

fn car_body(file: tokio::fs::File) -> reqwest::Body {
    let stream = futures_util::stream::try_unfold(file, |mut f| async move {
        let mut buf = vec![0u8; 256 * 1024];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok::<_, std::io::Error>(Some((bytes::Bytes::from(buf), f)))
    });
    reqwest::Body::wrap_stream(stream)
}

/// Progress of a restore, for terminals and the app.
#[derive(Clone, Debug)]
pub enum RestoreProgress {
    Preparing,
    Account,
    Importing { bytes: u64 },
    Blobs { done: u64, total: u64 },
}

/// Restores `req.did` as described in the module documentation.
pub async fn restore(
    syncer: &Syncer,
    req: &RestoreRequest,
    progress: &(dyn Fn(RestoreProgress) + Send + Sync),
) -> Result<RestoreReport, RestoreError> {
    progress(RestoreProgress::Preparing);
    let to_pds = req.to_pds.trim_end_matches('/').to_string();
    let (did, at) = (req.did.clone(), req.at);
    let picked = syncer
        .store
        .read(move |c| Ok(history::pick(c, &did, at)))
        .await??;
    let tmp_dir = syncer.data_dir.join("tmp");
    tokio::fs::create_dir_all(&tmp_dir).await?;
    let car_path: PathBuf = tmp_dir.join(format!("restore-{}.car", req.did.replace(':', "_")));
    let (did, rev, data, path, repo_id) = (
        req.did.clone(),
        picked.state.rev.clone(),
        picked.state.data.clone(),
        car_path.clone(),
        picked.repo_id,
    );
    let (export, records, blobs) = syncer
        .store
        .read(move |c| {
            let run = || -> Result<_, ExportError> {
                let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
                let export = crate::export::write_state_car(c, &did, &rev, file)?;
                let (records, blobs) = state_blobs(c, repo_id, &data)?;
                Ok((export, records, blobs))
            };
            Ok(run())
        })
        .await??;
    let mut report = RestoreReport {
        did: req.did.clone(),
        rev: picked.state.rev.clone(),
        time: picked.state.time.clone(),
        why: picked.why.clone(),
        picked_by: picked.by.clone(),
        to_pds: to_pds.clone(),
        records,
        car_bytes: export.bytes,
        blobs_referenced: blobs.len() as u64,
        ..Default::default()
    };
    let xrpc = Xrpc { http: &syncer.http };

    // 2. The account on the new PDS.
    progress(RestoreProgress::Account);
    let token = account(syncer, &xrpc, req, &to_pds, &mut report).await?;
    if report.account == "existing" {
        refuse_to_undo(&xrpc, &to_pds, &token, &picked.state.rev).await?;
    }

    // 3. The repo.
    let len = tokio::fs::metadata(&car_path).await?.len();
    progress(RestoreProgress::Importing { bytes: len });
    let url = format!("{to_pds}/xrpc/com.atproto.repo.importRepo");
    let file = tokio::fs::File::open(&car_path).await?;
    let answer = xrpc
        .call(
            syncer
                .http
                .post(&url)
                .bearer_auth(&token)
                .header(reqwest::header::CONTENT_TYPE, "application/vnd.ipld.car")
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(car_body(file)),
            &url,
        )
        .await?;
    let _ = tokio::fs::remove_file(&car_path).await;
    if let Err((status, reason)) = answer {
        let reason = if status == 413 {
            format!(
                "the repo ({}) is larger than it accepts",
                crate::store::space::size_words(len)
            )
        } else {
            reason
        };
        return Err(RestoreError::Refused {
            what: "the records".into(),
            reason,
        });
    }

    // 4. The blobs.
    upload_blobs(
        syncer,
        &xrpc,
        &to_pds,
        &token,
        &blobs,
        &mut report,
        progress,
    )
    .await?;

    // 5. The identity, then where things stand.
    let doc = syncer.resolver.resolve_did(&req.did, true).await.ok();
    let current = doc.as_ref().and_then(|d| d.pds.clone()).unwrap_or_default();
    // Pointed here by the recovery key for the account's creation, but still signed by that
    // key, not the new PDS's: the identity step is still to come.
    let interim = req.recovery_key.as_ref().is_some_and(|k| {
        doc.as_ref().and_then(|d| d.signing_key.as_ref()) == Some(&k.public_key())
    });
    report.identity_moved = current.trim_end_matches('/') == to_pds && !interim;
    if !report.identity_moved {
        identity_step(syncer, &xrpc, req, &to_pds, &token, &current, &mut report).await?;
    } else {
        activate(&xrpc, &to_pds, &token, &mut report).await?;
    }
    if let Ok(Ok(status)) = xrpc
        .get(
            &to_pds,
            "com.atproto.server.checkAccountStatus",
            Some(&token),
            &[],
        )
        .await
    {
        report.new_pds_status = status;
    }
    if !report.not_restored.is_empty() {
        report.next_steps.push(format!(
            "{} item(s) could not be restored (listed above); running the same restore again \
             retries only those.",
            report.not_restored.len()
        ));
    }
    Ok(report)
}

/// An account already live on the new PDS whose repo moved past the state to restore (the
/// owner wrote there since) is not overwritten: an import would undo those writes.
async fn refuse_to_undo(
    xrpc: &Xrpc<'_>,
    to_pds: &str,
    token: &str,
    rev: &str,
) -> Result<(), RestoreError> {
    let Ok(Ok(status)) = xrpc
        .get(
            to_pds,
            "com.atproto.server.checkAccountStatus",
            Some(token),
            &[],
        )
        .await
    else {
        return Ok(());
    };
    let live = status.get("activated").and_then(Value::as_bool) == Some(true);
    let there = str_of(&status, "repoRev").unwrap_or_default();
    if live && there.as_str() > rev {
        return Err(RestoreError::WouldUndo(format!(
            "The account on {to_pds} is online and has changed since the version to restore \
             (it is at {there}, the version is {rev}): restoring it would undo those changes, \
             so nothing was sent."
        )));
    }
    Ok(())
}

/// Moves the identity when the owner's emailed code is given; otherwise asks the old PDS to
/// email one and says how to finish.
async fn identity_step(
    syncer: &Syncer,
    xrpc: &Xrpc<'_>,
    req: &RestoreRequest,
    to_pds: &str,
    token: &str,
    old_pds: &str,
    report: &mut RestoreReport,
) -> Result<(), RestoreError> {
    if let Some(key) = &req.recovery_key {
        identity_with_recovery_key(syncer, xrpc, key, &req.did, to_pds, token, report).await?;
        // When the old server still answers, its account is switched off too.
        if old_pds.trim_end_matches('/') != to_pds {
            if let Ok(Ok(session)) = xrpc.sign_in(old_pds, &req.did, req.old_password()).await {
                let old_token = str_of(&session, "accessJwt").unwrap_or_default();
                retire_old_account(xrpc, old_pds, &old_token, to_pds, report).await;
            }
        }
        return Ok(());
    }
    let signed_in = xrpc.sign_in(old_pds, &req.did, req.old_password()).await;
    let old_session = match signed_in {
        Ok(Ok(session)) => session,
        Ok(Err((_, reason))) => {
            report.next_steps.push(rotation_key_explanation(
                &req.did,
                old_pds,
                &format!("signing in there failed ({reason})"),
            ));
            return Ok(());
        }
        Err(e) => {
            report.next_steps.push(rotation_key_explanation(
                &req.did,
                old_pds,
                &format!("it cannot be reached ({e})"),
            ));
            return Ok(());
        }
    };
    let old_token = str_of(&old_session, "accessJwt").unwrap_or_default();
    let Some(code) = req.plc_token.as_deref() else {
        let asked = xrpc
            .post_empty(
                old_pds,
                "com.atproto.identity.requestPlcOperationSignature",
                &old_token,
            )
            .await?;
        report.code_sent = asked.is_ok();
        report.next_steps.push(match asked {
            Ok(_) => format!(
                "The restored account waits, deactivated, on {to_pds}: people still reach the old \
                 account on {old_pds}. To switch over, the old server must confirm the move: it \
                 has just emailed a confirmation code to the account's address. Run the same \
                 restore again with that code: P2PDS then points the account's identity \
                 at {to_pds} and activates it there."
            ),
            Err((_, reason)) => format!(
                "The restored account waits, deactivated, on {to_pds}. The old server did not \
                 send a confirmation code ({reason}); without one, the identity can only move \
                 with a rotation key."
            ),
        });
        return Ok(());
    };
    let mut body = recommended_credentials(xrpc, to_pds, token).await?;
    body["token"] = json!(code);
    let signed = xrpc
        .post(
            old_pds,
            "com.atproto.identity.signPlcOperation",
            Some(&old_token),
            &body,
        )
        .await?
        .map_err(|(_, reason)| {
            RestoreError::NeedsIdentityStep(format!(
                "The old server refused to sign the move ({reason}). Check the confirmation code \
                 (it expires after a while: restore again without a code to get a new one)."
            ))
        })?;
    let operation = signed.get("operation").cloned().unwrap_or(Value::Null);
    xrpc.post(
        to_pds,
        "com.atproto.identity.submitPlcOperation",
        Some(token),
        &json!({ "operation": operation }),
    )
    .await?
    .map_err(|(_, reason)| RestoreError::Refused {
        what: "the identity change".into(),
        reason,
    })?;
    switch_over(syncer, xrpc, &req.did, to_pds, token, report).await?;
    retire_old_account(xrpc, old_pds, &old_token, to_pds, report).await;
    Ok(())
}

/// The old account stops answering, so nobody mistakes it for the live one (best effort: the
/// identity names the new PDS either way).
async fn retire_old_account(
    xrpc: &Xrpc<'_>,
    old_pds: &str,
    old_token: &str,
    to_pds: &str,
    report: &mut RestoreReport,
) {
    if let Ok(Err((_, reason))) = xrpc
        .post(
            old_pds,
            "com.atproto.server.deactivateAccount",
            Some(old_token),
            &json!({}),
        )
        .await
    {
        report.next_steps.push(format!(
            "The old account on {old_pds} could not be deactivated ({reason}); it no longer \
             counts, since the identity names {to_pds}."
        ));
    }
}

async fn activate(
    xrpc: &Xrpc<'_>,
    to_pds: &str,
    token: &str,
    report: &mut RestoreReport,
) -> Result<(), RestoreError> {
    xrpc.post_empty(to_pds, "com.atproto.server.activateAccount", token)
        .await?
        .map_err(|(_, reason)| RestoreError::Refused {
            what: "to activate the account".into(),
            reason,
        })?;
    report.next_steps.push(format!(
        "The account is back online on {to_pds}, with its identity pointing there."
    ));
    Ok(())
}

/// Signs in to the account on the new PDS, creating it first when it is not there.
async fn account(
    syncer: &Syncer,
    xrpc: &Xrpc<'_>,
    req: &RestoreRequest,
    to_pds: &str,
    report: &mut RestoreReport,
) -> Result<String, RestoreError> {
    let login = xrpc.sign_in(to_pds, &req.handle, &req.password).await?;
    if let Ok(session) = login {
        let did = str_of(&session, "did").unwrap_or_default();
        if did != req.did {
            return Err(RestoreError::Refused {
                what: format!("the handle {}", req.handle),
                reason: format!("it belongs to another account there ({did})"),
            });
        }
        report.account = "existing".into();
        return str_of(&session, "accessJwt").ok_or_else(|| RestoreError::Refused {
            what: "the sign-in".into(),
            reason: "no access token in its answer".into(),
        });
    }
    let describe = xrpc
        .get(to_pds, "com.atproto.server.describeServer", None, &[])
        .await?
        .map_err(|(_, reason)| RestoreError::NewPds {
            url: to_pds.to_string(),
            reason,
        })?;
    let service_did = str_of(&describe, "did").ok_or_else(|| RestoreError::NewPds {
        url: to_pds.to_string(),
        reason: "describeServer names no server DID".into(),
    })?;

    // The proof, from the account's current PDS.
    let doc = syncer
        .resolver
        .resolve_did(&req.did, true)
        .await
        .map_err(|e| {
            RestoreError::NeedsIdentityStep(rotation_key_explanation(
                &req.did,
                "unknown",
                &e.to_string(),
            ))
        })?;
    let old_pds = doc.pds.clone().unwrap_or_default();
    let (proof, email) = match old_pds_proof(xrpc, req, &old_pds, &service_did).await {
        Ok(found) => found,
        Err((why, reached)) => {
            // The key rewrites the identity, so it stands in only for a server that is gone
            // (or for the new one, where an earlier run with the key already pointed it): a
            // live old server that refused (a mistyped password, say) is told as it is.
            let interim = old_pds.trim_end_matches('/') == to_pds;
            let key = match &req.recovery_key {
                Some(key) if !reached || interim => key,
                _ => {
                    return Err(RestoreError::NeedsIdentityStep(rotation_key_explanation(
                        &req.did, &old_pds, &why,
                    )))
                }
            };
            report.used_recovery_key = true;
            let proof = recovery_proof(syncer, key, &req.did, to_pds, &service_did).await?;
            let email = req.email.clone().ok_or_else(|| RestoreError::Refused {
                what: "the new account".into(),
                reason: format!(
                    "an email address is needed for it, and the old server ({why}) cannot tell \
                     it: give one (--email)"
                ),
            })?;
            (proof, email)
        }
    };
    let mut body = json!({
        "did": req.did,
        "handle": req.handle,
        "password": req.password,
        "email": email,
    });
    if let Some(code) = &req.invite_code {
        body["inviteCode"] = json!(code);
    }
    let created = xrpc
        .post(
            to_pds,
            "com.atproto.server.createAccount",
            Some(&proof),
            &body,
        )
        .await?
        .map_err(|(_, reason)| RestoreError::Refused {
            what: "the new account".into(),
            reason,
        })?;
    report.account = "created".into();
    str_of(&created, "accessJwt").ok_or_else(|| RestoreError::Refused {
        what: "the new account".into(),
        reason: "no access token in its answer".into(),
    })
}

/// The proof the new PDS asks for, signed by the account's current PDS, and the account's
/// email there; `Err` says in words why the current PDS could not give them, and whether it
/// answered at all.
async fn old_pds_proof(
    xrpc: &Xrpc<'_>,
    req: &RestoreRequest,
    old_pds: &str,
    service_did: &str,
) -> Result<(String, String), (String, bool)> {
    let old_session = xrpc
        .sign_in(old_pds, &req.did, req.old_password())
        .await
        .map_err(|e| (format!("it cannot be reached ({e})"), false))?
        .map_err(|(status, reason)| {
            (format!("signing in there failed ({reason})"), status < 500)
        })?;
    let old_token = str_of(&old_session, "accessJwt").unwrap_or_default();
    let exp = (Utc::now() + chrono::Duration::minutes(10))
        .timestamp()
        .to_string();
    let proof = xrpc
        .get(
            old_pds,
            "com.atproto.server.getServiceAuth",
            Some(&old_token),
            &[
                ("aud", service_did),
                ("lxm", "com.atproto.server.createAccount"),
                ("exp", exp.as_str()),
            ],
        )
        .await
        .map_err(|e| (format!("it cannot be reached ({e})"), false))?
        .map_err(|(status, reason)| {
            (
                format!(
                    "it refused to sign the proof ({reason}); sign in with the account's main password, not an app password"
                ),
                status < 500,
            )
        })?;
    let proof = str_of(&proof, "token").unwrap_or_default();
    let email = req
        .email
        .clone()
        .or_else(|| str_of(&old_session, "email"))
        .unwrap_or_default();
    Ok((proof, email))
}

/// The proof for the new PDS, signed with the recovery key: first the identity is pointed at
/// the new PDS with the recovery key as its signing key (unless an earlier run did that).
async fn recovery_proof(
    syncer: &Syncer,
    key: &RecoveryKey,
    did: &str,
    to_pds: &str,
    service_did: &str,
) -> Result<String, RestoreError> {
    let plc = Plc::new(&syncer.http, &syncer.resolver);
    let data = plc.data(did).await?;
    let points_here = data
        .pointer("/verificationMethods/atproto")
        .and_then(Value::as_str)
        == Some(key.did_key().as_str())
        && data
            .pointer("/services/atproto_pds/endpoint")
            .and_then(Value::as_str)
            .map(|e| e.trim_end_matches('/'))
            == Some(to_pds);
    if !points_here {
        let (did_key, endpoint) = (key.did_key(), to_pds.to_string());
        plc.update(did, key, move |op| {
            op["verificationMethods"]["atproto"] = json!(did_key);
            op["services"]["atproto_pds"] =
                json!({"type": "AtprotoPersonalDataServer", "endpoint": endpoint});
        })
        .await?;
        // Later reads (ours) see the change; the new PDS re-reads it when a proof fails.
        let _ = syncer.resolver.resolve_did(did, true).await;
    }
    Ok(key.service_jwt(did, service_did, "com.atproto.server.createAccount"))
}

/// The identity step with the recovery key: the new PDS's recommended credentials, signed
/// here and sent to the PLC directory, then the account activated.
async fn identity_with_recovery_key(
    syncer: &Syncer,
    xrpc: &Xrpc<'_>,
    key: &RecoveryKey,
    did: &str,
    to_pds: &str,
    token: &str,
    report: &mut RestoreReport,
) -> Result<(), RestoreError> {
    let creds = recommended_credentials(xrpc, to_pds, token).await?;
    // The owner's key stays first; the old server's key goes (it may be in other hands now).
    let keys = recovery::key_list(&key.did_key(), &recovery::rotation_keys(&creds));
    let plc = Plc::new(&syncer.http, &syncer.resolver);
    plc.update(did, key, move |op| {
        op["rotationKeys"] = json!(keys);
        for field in ["verificationMethods", "alsoKnownAs", "services"] {
            if let Some(v) = creds.get(field) {
                op[field] = v.clone();
            }
        }
    })
    .await?;
    report.used_recovery_key = true;
    switch_over(syncer, xrpc, did, to_pds, token, report).await
}

/// The DID document, rotation keys and handle the new PDS asks the identity to name.
async fn recommended_credentials(
    xrpc: &Xrpc<'_>,
    to_pds: &str,
    token: &str,
) -> Result<Value, RestoreError> {
    xrpc.get(
        to_pds,
        "com.atproto.identity.getRecommendedDidCredentials",
        Some(token),
        &[],
    )
    .await?
    .map_err(|(_, reason)| RestoreError::Refused {
        what: "to describe the new identity".into(),
        reason,
    })
}

/// After an identity change: checks (freshly resolved) that it names the new PDS, then
/// activates the account there.
async fn switch_over(
    syncer: &Syncer,
    xrpc: &Xrpc<'_>,
    did: &str,
    to_pds: &str,
    token: &str,
    report: &mut RestoreReport,
) -> Result<(), RestoreError> {
    let doc = syncer.resolver.resolve_did(did, true).await.ok();
    let now = doc.as_ref().and_then(|d| d.pds.clone()).unwrap_or_default();
    report.identity_moved = now.trim_end_matches('/') == to_pds;
    if !report.identity_moved {
        return Err(RestoreError::Refused {
            what: "the identity change".into(),
            reason: format!("the identity still names {now}"),
        });
    }
    activate(xrpc, to_pds, token, report).await
}

/// Uploads what `listMissingBlobs` asks for until it is empty or no upload succeeds.
async fn upload_blobs(
    syncer: &Syncer,
    xrpc: &Xrpc<'_>,
    to_pds: &str,
    token: &str,
    named: &HashMap<String, String>,
    report: &mut RestoreReport,
    progress: &(dyn Fn(RestoreProgress) + Send + Sync),
) -> Result<(), RestoreError> {
    let dir = syncer.blob_dir();
    let mut failed: HashMap<String, String> = HashMap::new();
    loop {
        let mut missing = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", "500")];
            if let Some(c) = cursor.as_deref() {
                query.push(("cursor", c));
            }
            let page = xrpc
                .get(
                    to_pds,
                    "com.atproto.repo.listMissingBlobs",
                    Some(token),
                    &query,
                )
                .await?
                .map_err(|(_, reason)| RestoreError::Refused {
                    what: "the list of missing images".into(),
                    reason,
                })?;
            let blobs = page
                .get("blobs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            missing.extend(blobs.iter().filter_map(|b| str_of(b, "cid")));
            cursor = str_of(&page, "cursor");
            if blobs.is_empty() || cursor.is_none() {
                break;
            }
        }
        let todo: Vec<String> = missing
            .into_iter()
            .filter(|c| !failed.contains_key(c))
            .collect();
        if todo.is_empty() {
            break;
        }
        let total = todo.len() as u64;
        let mut sent = 0u64;
        for (i, cid) in todo.iter().enumerate() {
            progress(RestoreProgress::Blobs {
                done: i as u64,
                total,
            });
            let bytes = match held_blob(&dir, cid).await {
                Ok(b) => b,
                Err(reason) => {
                    failed.insert(cid.clone(), reason);
                    continue;
                }
            };
            let mime = named
                .get(cid)
                .cloned()
                .unwrap_or_else(|| "application/octet-stream".into());
            match upload_one(syncer, xrpc, to_pds, token, &bytes, &mime, cid).await? {
                Ok(()) => {
                    sent += 1;
                    report.blobs_uploaded += 1;
                    report.blob_bytes_uploaded += bytes.len() as u64;
                }
                Err(reason) => {
                    failed.insert(cid.clone(), reason);
                }
            }
        }
        progress(RestoreProgress::Blobs { done: total, total });
        if sent == 0 {
            break;
        }
    }
    let mut failed: Vec<_> = failed.into_iter().collect();
    failed.sort();
    report
        .not_restored
        .extend(failed.into_iter().map(|(cid, reason)| NotRestored {
            what: format!("image or file {cid}"),
            reason,
        }));
    Ok(())
}

/// One upload, retried on rate limits and passing failures; `Err` is the reason it failed.
async fn upload_one(
    syncer: &Syncer,
    xrpc: &Xrpc<'_>,
    to_pds: &str,
    token: &str,
    bytes: &[u8],
    mime: &str,
    cid: &str,
) -> Result<Result<(), String>, RestoreError> {
    let url = format!("{to_pds}/xrpc/com.atproto.repo.uploadBlob");
    let mut last = String::new();
    for attempt in 0..5u32 {
        let answer = xrpc
            .call(
                syncer
                    .http
                    .post(&url)
                    .bearer_auth(token)
                    .header(reqwest::header::CONTENT_TYPE, mime)
                    .body(bytes.to_vec()),
                &url,
            )
            .await;
        match answer {
            Ok(Ok(value)) => {
                let got = value
                    .pointer("/blob/ref/$link")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if got == cid {
                    return Ok(Ok(()));
                }
                return Ok(Err(format!("the new server stored it as {got}")));
            }
            Ok(Err((413, _))) => {
                return Ok(Err(format!(
                    "it is larger ({}) than the new server accepts",
                    crate::store::space::size_words(bytes.len() as u64)
                )))
            }
            Ok(Err((status @ (429 | 500..=599), reason))) => {
                last = format!("{status}: {reason}");
            }
            Ok(Err((_, reason))) => return Ok(Err(reason)),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt + 1))).await;
    }
    Ok(Err(format!("the new server kept failing ({last})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_collected_with_their_types() {
        let record = json!({
            "text": "hi",
            "embed": {"images": [
                {"image": {"$type": "blob", "ref": {"$link": "bafkA"}, "mimeType": "image/png", "size": 3}},
                {"image": {"$type": "blob", "ref": {"$link": "bafkB"}, "size": 3}}
            ]}
        });
        let mut out = HashMap::new();
        collect_blobs(&record, &mut out);
        assert_eq!(out.get("bafkA").map(String::as_str), Some("image/png"));
        assert_eq!(
            out.get("bafkB").map(String::as_str),
            Some("application/octet-stream")
        );
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn a_request_prints_without_its_secrets() {
        let key = RecoveryKey::generate();
        let req = RestoreRequest {
            did: "did:plc:alice".into(),
            at: None,
            to_pds: "https://new.example".into(),
            handle: "alice.new.example".into(),
            password: "new-secret".into(),
            old_password: Some("old-secret".into()),
            email: None,
            invite_code: None,
            plc_token: Some("ABCDE-12345".into()),
            recovery_key: Some(key.clone()),
        };
        let shown = format!("{req:?}");
        assert!(shown.contains("did:plc:alice") && shown.contains("alice.new.example"));
        for secret in [
            "new-secret",
            "old-secret",
            "ABCDE-12345",
            key.code().as_str(),
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(req.old_password(), "old-secret");
    }

    #[test]
    fn the_identity_step_is_explained() {
        let text = rotation_key_explanation("did:plc:x", "https://old.example", "it is gone");
        assert!(text.contains("rotation key"));
        assert!(text.contains("https://old.example"));
        assert!(text.contains("it is gone"));
    }

    #[tokio::test]
    async fn a_blob_held_is_hashed_before_it_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"picture".to_vec();
        let cid = crate::repo::cid_for(0x55, &bytes).to_string();
        std::fs::write(dir.path().join(&cid), &bytes).unwrap();
        assert_eq!(held_blob(dir.path(), &cid).await.unwrap(), bytes);
        std::fs::write(dir.path().join(&cid), b"tampered").unwrap();
        assert!(held_blob(dir.path(), &cid)
            .await
            .unwrap_err()
            .contains("damaged"));
        let other = crate::repo::cid_for(0x55, b"other").to_string();
        assert!(held_blob(dir.path(), &other)
            .await
            .unwrap_err()
            .contains("no copy"));
    }
}
