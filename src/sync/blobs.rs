//! Blobs (images, video): listed with `listBlobs`, fetched with `getBlob`,
//! hashed against their CID, stored content-addressed as files named by CID.
//!
//! Resumable: the `blobs` table remembers which are stored, so a pass picks up
//! where the last stopped. A blob whose bytes do not match is recorded as bad
//! and skipped; it never stops the account's sync. Files are written to a
//! temporary name, synced, then renamed, so a crash leaves no half blob.

use cid::Cid;
use futures_util::StreamExt;
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
    let missing: Vec<String> = syncer
        .store
        .write(move |conn| -> Result<Vec<String>, rusqlite::Error> {
            let tx = conn.transaction()?;
            let repo_id: i64 = tx.query_row("SELECT id FROM repos WHERE did = ?1", [&d], |r| r.get(0))?;
            {
                let mut ins = tx.prepare(
                    "INSERT INTO blobs (repo_id, cid, state, updated_at) VALUES (?1, ?2, 'missing', ?3)
                     ON CONFLICT (repo_id, cid) DO NOTHING",
                )?;
                for cid in &listed {
                    ins.execute(params![repo_id, cid, now_text()])?;
                }
            }
            let mut q = tx.prepare("SELECT cid FROM blobs WHERE repo_id = ?1 AND state = 'missing' ORDER BY cid")?;
            let missing = q
                .query_map([repo_id], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            drop(q);
            tx.commit()?;
            Ok(missing)
        })
        .await?
        .map_err(crate::store::StoreError::from)?;

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
        syncer
            .store
            .write(move |conn| {
                conn.execute(
                    "UPDATE blobs SET state = ?3, size = ?4, error = ?5, updated_at = ?6
                     WHERE repo_id = (SELECT id FROM repos WHERE did = ?1) AND cid = ?2",
                    params![d, c, s, size, e, now_text()],
                )
            })
            .await?
            .map_err(crate::store::StoreError::from)?;
    }
    progress(SyncProgress::Blobs { done: total, total });
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
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            BlobError::Sync(SyncError::Network {
                url: url.clone(),
                reason: e.to_string(),
            })
        })?;
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
