//! Blobs (images, video): listed with `listBlobs`, fetched with `getBlob`,
//! hashed against their CID, stored content-addressed as files named by CID.
//!
//! Resumable: the `blobs` table remembers which are stored, so a pass picks up
//! where the last stopped. A blob that could not be fetched, or whose bytes do not match
//! (wrong, too big, cut off), is recorded with its reason and tried again on later syncs,
//! less and less often ([`retry_after`]); it never stops the account's sync, and the report
//! says how many are still waiting. Files are written to a temporary name, synced, then
//! renamed, so a crash leaves no half blob. An account removed during its sync stays removed:
//! its blob rows are never written back.

/// How long after its `attempts`-th failure a blob is tried again: 15 minutes, doubling,
/// at most a day.
pub fn retry_after(attempts: u32) -> std::time::Duration {
    let minutes = 15u64.saturating_mul(1u64 << attempts.saturating_sub(1).min(16));
    std::time::Duration::from_secs(minutes.min(24 * 60) * 60)
}

use cid::Cid;
use rusqlite::params;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{SyncError, SyncProgress, Syncer};
use crate::store::{blob_path, now_text};

/// The largest blob fetched.
pub const MAX_BLOB_BYTES: u64 = 200 * 1024 * 1024;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BlobReport {
    pub listed: u64,
    pub fetched: u64,
    pub bad: u64,
    pub failed: u64,
    /// Blobs of the account not held after this sync (failed now or earlier, waiting for
    /// their next try).
    pub waiting: u64,
}

#[derive(Deserialize)]
struct ListBlobs {
    cursor: Option<String>,
    cids: Vec<String>,
}

pub async fn sync_blobs(
    syncer: &Syncer,
    did: &str,
    pds: &str,
    progress: &(dyn Fn(SyncProgress) + Send + Sync),
) -> Result<BlobReport, SyncError> {
    let mut report = BlobReport::default();
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    // A listing that never ends is refused (a thousand pages: a million blobs).
    let mut pages =
        crate::xrpc::Pages::new(&format!("{pds}/xrpc/com.atproto.sync.listBlobs"), 1000);
    loop {
        let mut query = vec![("did", did), ("limit", "1000")];
        if let Some(c) = cursor.as_deref() {
            query.push(("cursor", c));
        }
        let page: ListBlobs = syncer
            .get_json(pds, "com.atproto.sync.listBlobs", &query)
            .await?;
        let n = page.cids.len();
        listed.extend(page.cids);
        cursor = pages.next(page.cursor, n)?;
        if cursor.is_none() {
            break;
        }
    }
    report.listed = listed.len() as u64;
    let d = did.to_string();
    let now = now_text();
    let missing: Option<Vec<String>> = syncer
        .store
        .write(move |conn| -> Result<Option<Vec<String>>, rusqlite::Error> {
            use rusqlite::OptionalExtension;
            let tx = conn.transaction()?;
            let Some(repo_id) = tx
                .query_row("SELECT id FROM repos WHERE did = ?1", [&d], |r| r.get::<_, i64>(0))
                .optional()?
            else {
                return Ok(None);
            };
            {
                let mut ins = tx.prepare(
                    "INSERT INTO blobs (repo_id, cid, state, updated_at) VALUES (?1, ?2, 'missing', ?3)
                     ON CONFLICT (repo_id, cid) DO NOTHING",
                )?;
                for cid in &listed {
                    ins.execute(params![repo_id, cid, now_text()])?;
                }
            }
            // Never fetched, and those whose last try failed once their wait is over.
            let mut q = tx.prepare(
                "SELECT cid FROM blobs WHERE repo_id = ?1 AND state IN ('missing', 'bad')
                   AND (retry_at IS NULL OR retry_at <= ?2) ORDER BY cid",
            )?;
            let missing = q
                .query_map(params![repo_id, now], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            drop(q);
            tx.commit()?;
            Ok(Some(missing))
        })
        .await?
        .map_err(crate::store::StoreError::from)?;
    let Some(missing) = missing else {
        return Err(SyncError::NotBackedUp(did.to_string()));
    };

    let dir = syncer.blob_dir();
    tokio::fs::create_dir_all(&dir).await?;
    let total = missing.len() as u64;
    let room = syncer.room().await?;
    let name = syncer.display_name(did).await;
    let mut budget = Budget {
        room,
        name,
        spent: 0,
    };
    for (i, cid) in missing.into_iter().enumerate() {
        progress(SyncProgress::Blobs {
            done: i as u64,
            total,
        });
        let outcome = fetch_blob(syncer, pds, did, &cid, &dir, &mut budget).await;
        if let Err(BlobError::Sync(
            e @ (SyncError::DiskFull { .. } | SyncError::StorageLimit { .. }),
        )) = outcome
        {
            // No room: the blobs stored so far stay; the rest wait for room.
            return Err(e);
        }
        let (state, size, error) = match &outcome {
            Ok(size) => {
                report.fetched += 1;
                ("stored", Some(*size as i64), None)
            }
            Err(BlobError::Bad(msg)) => {
                report.bad += 1;
                tracing::warn!(%did, %cid, "bad blob: {msg}");
                ("bad", None, Some(msg.clone()))
            }
            Err(BlobError::Sync(e)) => {
                report.failed += 1;
                ("missing", None, Some(e.to_string()))
            }
        };
        let (d, c, s, e) = (did.to_string(), cid.clone(), state.to_string(), error);
        let dir = dir.clone();
        let still_held = syncer
            .store
            .write(move |conn| -> Result<bool, crate::store::StoreError> {
                use rusqlite::OptionalExtension;
                let which = "repo_id = (SELECT id FROM repos WHERE did = ?1) AND cid = ?2";
                let attempts: Option<u32> = conn
                    .query_row(
                        &format!("SELECT attempts FROM blobs WHERE {which}"),
                        params![d, c],
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(attempts) = attempts else {
                    // The account was removed meanwhile: what was just written goes too.
                    crate::store::blobfiles::remove_unreferenced(conn, &dir)?;
                    return Ok(false);
                };
                let (attempts, retry_at) = if e.is_some() {
                    let wait =
                        chrono::Duration::from_std(retry_after(attempts + 1)).unwrap_or_default();
                    let at = (chrono::Utc::now() + wait)
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                    (attempts + 1, Some(at))
                } else {
                    (0, None)
                };
                conn.execute(
                    &format!(
                        "UPDATE blobs SET state = ?3, size = ?4, error = ?5, updated_at = ?6,
                           attempts = ?7, retry_at = ?8 WHERE {which}"
                    ),
                    params![d, c, s, size, e, now_text(), attempts, retry_at],
                )?;
                Ok(true)
            })
            .await??;
        if !still_held {
            return Err(SyncError::NotBackedUp(did.to_string()));
        }
    }
    progress(SyncProgress::Blobs { done: total, total });
    let d = did.to_string();
    report.waiting = syncer
        .store
        .read(move |conn| {
            Ok(conn.query_row(
                "SELECT count(*) FROM blobs
                 WHERE repo_id = (SELECT id FROM repos WHERE did = ?1) AND state != 'stored'",
                [d],
                |r| r.get::<_, i64>(0),
            )?)
        })
        .await?
        .max(0) as u64;
    Ok(report)
}

/// What the blobs of one pass may still take.
struct Budget {
    room: crate::store::space::Room,
    name: String,
    spent: u64,
}

enum BlobError {
    /// The server's bytes are wrong: recorded, not retried soon.
    Bad(String),
    Sync(SyncError),
}

async fn fetch_blob(
    syncer: &Syncer,
    pds: &str,
    did: &str,
    cid_text: &str,
    dir: &std::path::Path,
    budget: &mut Budget,
) -> Result<u64, BlobError> {
    let cid: Cid = cid_text
        .parse()
        .map_err(|e| BlobError::Bad(format!("invalid CID: {e}")))?;
    if cid.hash().code() != crate::repo::SHA2_256 {
        return Err(BlobError::Bad("blob CID does not use SHA-256".into()));
    }
    let final_path = blob_path(dir, cid_text);
    if let Ok(meta) = tokio::fs::metadata(&final_path).await {
        // Already held (blobs are content-addressed; another account may share it).
        return Ok(meta.len());
    }
    let url = format!("{pds}/xrpc/com.atproto.sync.getBlob");
    let start = tokio::time::Instant::now();
    let resp = syncer
        .get_stream(&url, &[("did", did), ("cid", cid_text)])
        .await
        .map_err(BlobError::Sync)?;
    // A name of its own: two backups (or two processes) fetching one shared blob at once
    // must not write into the same file.
    let tmp = dir.join(format!(
        "{cid_text}.{}-{:016x}.part",
        std::process::id(),
        rand::random::<u64>()
    ));
    let io = |e: std::io::Error| BlobError::Sync(SyncError::Io(e));
    let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let announced = resp.content_length();
    let mut stream = resp.bytes_stream();
    loop {
        let next = syncer
            .transfer
            .next_chunk(&mut stream, &url, start, announced, size)
            .await;
        let chunk = match next {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                drop(file);
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(BlobError::Sync(e.into()));
            }
        };
        size += chunk.len() as u64;
        let spent = budget.spent + size;
        if let Err(e) = budget.room.fits(spent, spent) {
            drop(file);
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(BlobError::Sync(super::no_room(&budget.name, e)));
        }
        if size > MAX_BLOB_BYTES {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(BlobError::Bad(format!(
                "larger than {MAX_BLOB_BYTES} bytes"
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io)?;
    }
    if hasher.finalize()[..] != *cid.hash().digest() {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(BlobError::Bad(
            "the bytes served do not match the blob's CID".into(),
        ));
    }
    file.sync_all().await.map_err(io)?;
    drop(file);
    tokio::fs::rename(&tmp, &final_path).await.map_err(io)?;
    budget.spent += size;
    Ok(size)
}
