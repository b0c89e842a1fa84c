//! Replication of one account from its PDS: full and incremental sync, blobs,
//! upstream account status.
//!
//! Order of a pass: resolve the DID → `getRepoStatus` (a deactivated, taken
//! down or deleted account is recorded, and the local copy kept) → the cheap
//! `getLatestCommit` poll → if it moved, `getRepo` (with `since` when a copy is
//! held) streamed to a temporary file → [`ingest::ingest_car`] on the store's
//! writer thread → blobs. A bad signature triggers one fresh DID resolution (the
//! key may have rotated) before it counts as bad; an incomplete `since` answer
//! falls back to a full download.

pub mod blobrefs;
pub mod blobs;
pub mod ingest;
pub(crate) mod kept;
pub mod loss;
pub mod peers;
pub mod selfcheck;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::identity::{DidDoc, IdentityError, Resolver};
use crate::store::{self, Store, StoreError};
use ingest::{IngestError, IngestOutcome, IngestProgress};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("{did} has no PDS in its identity document")]
    NoPds { did: String },
    #[error("{did} has no signing key in its identity document")]
    NoKey { did: String },
    #[error("could not reach {url}: {reason}")]
    Network { url: String, reason: String },
    #[error("{url} answered {status}: {body}")]
    Http {
        url: String,
        status: u16,
        /// The XRPC error name (`RepoNotFound`, …), empty when the answer had none.
        error: String,
        body: String,
    },
    /// An answer refused before it was used: too large, or not what was asked for.
    #[error(transparent)]
    Answer(crate::xrpc::XrpcError),
    #[error("the copy was refused and the previous copy kept: {0}")]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not write a temporary file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the disk holding your backups is nearly full: backing up {name} needs about {} more, and {} is free. Nothing was changed: free some space, or move the backups to a larger disk in Settings", crate::store::space::size_words(*needed), crate::store::space::size_words(*free))]
    DiskFull {
        name: String,
        needed: u64,
        free: u64,
    },
    #[error("{name}'s backup does not fit within your storage limit: it needs about {} more, and {} of {} is used. Nothing was changed: raise the limit in Settings, or stop backing up someone", crate::store::space::size_words(*needed), crate::store::space::size_words(*used), crate::store::space::size_words(*limit))]
    StorageLimit {
        name: String,
        needed: u64,
        used: u64,
        limit: u64,
    },
    #[error("{0} is not backed up: add it first")]
    NotBackedUp(String),
    #[error("{0} has no verified copy yet: nothing to check")]
    NotHeld(String),
    #[error("{did} is {status} on its PDS: its repo cannot be fetched")]
    Upstream { did: String, status: String },
    #[error("the local copy of {did} is damaged ({bad} corrupt blocks removed, {missing} blocks missing) and could not be repaired from its PDS: {source}; the rest of the copy is kept and the repair will be retried")]
    Damaged {
        did: String,
        bad: u64,
        missing: u64,
        source: Box<SyncError>,
    },
    #[error("the record proof from {did}'s server was refused: {source}")]
    Proof {
        did: String,
        source: crate::repo::proof::ProofError,
    },
    /// A friend's node served something that does not verify; the copy held was kept.
    /// `layer` is the verification layer the failure counts as: 0 for its commit, 1 for
    /// its blocks.
    #[error("the friend's node at {endpoint} served {what}; the copy held was kept")]
    Peer {
        endpoint: String,
        what: String,
        layer: u8,
    },
}

/// What kind of failure a backup met, kept beside its message so screens and tools act on the
/// kind, never on the words. Stored as text (`repos.error_code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The account's server or its identity directory could not be reached, or answered late.
    Unreachable,
    /// The server answered with an error.
    Refused,
    /// What the server sent failed verification (or was too large); the previous copy was kept.
    BadData,
    /// The account is deactivated, taken down or deleted on its server.
    Gone,
    /// The identity document is missing what a backup needs, or is invalid.
    Identity,
    /// The disk holding the backups is nearly full.
    DiskFull,
    /// The user's storage limit is reached.
    StorageLimit,
    /// The local copy is damaged and the repair from the server failed.
    Damaged,
    /// Anything else (the store, a local file).
    Local,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Refused => "refused",
            Self::BadData => "bad_data",
            Self::Gone => "gone",
            Self::Identity => "identity",
            Self::DiskFull => "disk_full",
            Self::StorageLimit => "storage_limit",
            Self::Damaged => "damaged",
            Self::Local => "local",
        }
    }

    /// The kind a stored code names (None for an unknown or missing code).
    pub fn parse(code: &str) -> Option<Self> {
        [
            Self::Unreachable,
            Self::Refused,
            Self::BadData,
            Self::Gone,
            Self::Identity,
            Self::DiskFull,
            Self::StorageLimit,
            Self::Damaged,
            Self::Local,
        ]
        .into_iter()
        .find(|k| k.as_str() == code)
    }

    /// A backup that did not fit (the storage limit, or a full disk).
    pub fn is_no_room(self) -> bool {
        matches!(self, Self::DiskFull | Self::StorageLimit)
    }
}

impl SyncError {
    /// The kind of failure, for screens and tools.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Network { .. } => FailureKind::Unreachable,
            Self::Http { status, .. } if *status >= 500 => FailureKind::Unreachable,
            Self::Http { .. } => FailureKind::Refused,
            Self::Identity(e) if e.is_retryable() => FailureKind::Unreachable,
            Self::Identity(_) | Self::NoPds { .. } | Self::NoKey { .. } => FailureKind::Identity,
            Self::Answer(crate::xrpc::XrpcError::Timeout { .. }) => FailureKind::Unreachable,
            Self::Answer(_) | Self::Ingest(_) | Self::Proof { .. } | Self::Peer { .. } => {
                FailureKind::BadData
            }
            Self::Upstream { .. } => FailureKind::Gone,
            Self::DiskFull { .. } => FailureKind::DiskFull,
            Self::StorageLimit { .. } => FailureKind::StorageLimit,
            Self::Damaged { .. } => FailureKind::Damaged,
            Self::Store(_) | Self::Io(_) | Self::NotBackedUp(_) | Self::NotHeld(_) => {
                FailureKind::Local
            }
        }
    }

    /// Worth trying again later (as opposed to bad data that will stay bad).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Network { .. } | Self::Io(_) | Self::Damaged { .. } => true,
            Self::Http { status, .. } => *status >= 500 || *status == 429,
            Self::Identity(e) => e.is_retryable(),
            _ => false,
        }
    }
}

impl From<crate::xrpc::XrpcError> for SyncError {
    fn from(e: crate::xrpc::XrpcError) -> Self {
        use crate::xrpc::XrpcError as X;
        match e {
            X::Network { url, reason } => SyncError::Network { url, reason },
            // A server that does not finish answering in time did not answer.
            X::Timeout { ref url, .. } => SyncError::Network {
                url: url.clone(),
                reason: e.to_string(),
            },
            X::Status {
                url,
                status,
                error,
                message,
            } => SyncError::Http {
                url,
                status,
                body: format!("{error}: {message}"),
                error,
            },
            other @ (X::TooLarge { .. } | X::Decode { .. } | X::Endless { .. }) => {
                SyncError::Answer(other)
            }
        }
    }
}

/// The largest `getRecord` proof read (a record is at most 1 MiB; the path above it is small).
const PROOF_LIMIT: u64 = 4 << 20;

/// Progress of one account's sync, for terminals and the desktop app.
#[derive(Clone, Debug)]
pub enum SyncProgress {
    Checking,
    Downloading { bytes: u64, total: Option<u64> },
    Ingesting(IngestProgress),
    Blobs { done: u64, total: u64 },
}

/// What a sync pass did for one account.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyncReport {
    pub did: String,
    pub upstream_status: String,
    pub up_to_date: bool,
    pub full: bool,
    pub ingest: Option<IngestOutcome>,
    pub blobs: blobs::BlobReport,
}

#[derive(Deserialize)]
struct LatestCommit {
    cid: String,
    rev: String,
}

#[derive(Deserialize)]
struct RepoStatus {
    active: bool,
    status: Option<String>,
}

/// Shared machinery to sync accounts into one store.
#[derive(Clone, Debug)]
pub struct Syncer {
    pub store: Store,
    pub http: reqwest::Client,
    pub resolver: Arc<Resolver>,
    pub data_dir: PathBuf,
    /// How long an account's PDS may stay unreachable before it is flagged as gone.
    pub pds_grace: std::time::Duration,
    /// The disk's free space as the caller states it (None: measured). See `Room::measure`.
    pub free_space: Option<u64>,
    /// How long a repository or a blob may take to download, by its size.
    pub transfer: crate::xrpc::Transfer,
    /// How long a poll of an account whose server's event stream is followed live waits for
    /// the stream to bring the newest commit (each commit then kept as its own version)
    /// before fetching the repository itself (which would keep only the newest).
    pub stream_grace: std::time::Duration,
}

impl Syncer {
    pub fn new(
        store: Store,
        http: reqwest::Client,
        resolver: Arc<Resolver>,
        data_dir: &Path,
    ) -> Self {
        Self {
            store,
            http,
            resolver,
            data_dir: data_dir.to_path_buf(),
            pds_grace: loss::default_pds_grace(),
            free_space: None,
            transfer: crate::xrpc::Transfer::default(),
            stream_grace: std::time::Duration::from_secs(5),
        }
    }

    /// Whether the event stream brings the account to revision `rev` (or past it) within
    /// [`Self::stream_grace`] (false at once when no stream of it is live).
    async fn stream_brings(&self, did: &str, pds: &str, rev: &str) -> Result<bool, SyncError> {
        let p = pds.to_string();
        let how = self
            .store
            .read(move |c| crate::follow::how_followed(c, Some(&p)))
            .await?;
        if how != "live" {
            return Ok(false);
        }
        let deadline = tokio::time::Instant::now() + self.stream_grace;
        loop {
            let d = did.to_string();
            let held = self.store.read(move |c| store::get_repo(c, &d)).await?;
            if held
                .and_then(|r| r.head.and(r.rev))
                .is_some_and(|r| r.as_str() >= rev)
            {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    pub fn blob_dir(&self) -> PathBuf {
        crate::store::blob_dir(&self.data_dir)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }

    /// Syncs one account; on failure the account's state records the error and
    /// the previous good copy stays as it was.
    pub async fn sync_repo(
        &self,
        did: &str,
        progress: &(dyn Fn(SyncProgress) + Send + Sync),
    ) -> Result<SyncReport, SyncError> {
        let result = self.sync_repo_inner(did, progress).await;
        if let Err(SyncError::Identity(IdentityError::Fetch { reason, .. })) = &result {
            // The PLC directory answers 410 Gone for a tombstoned (deleted) identity.
            if reason.contains("410") {
                let d = did.to_string();
                self.store
                    .write(move |c| loss::observe_status(c, &d, "deleted"))
                    .await??;
            }
        }
        if let Err(e) = &result {
            let (did, msg, kind) = (did.to_string(), e.to_string(), e.kind());
            self.store
                .write(move |c| store::set_repo_failed(c, &did, &msg, kind.as_str()))
                .await??;
        }
        result
    }

    /// A backed-up account's row, its DID document and its PDS.
    async fn locate(&self, did: &str) -> Result<(store::RepoRow, DidDoc, String), SyncError> {
        let owned = did.to_string();
        let row = self
            .store
            .read(move |c| store::get_repo(c, &owned))
            .await?
            .ok_or_else(|| SyncError::NotBackedUp(did.to_string()))?;
        let doc = self.resolver.resolve_did(did, false).await?;
        let pds = doc
            .pds
            .clone()
            .ok_or_else(|| SyncError::NoPds { did: did.into() })?;
        Ok((row, doc, pds))
    }

    async fn sync_repo_inner(
        &self,
        did: &str,
        progress: &(dyn Fn(SyncProgress) + Send + Sync),
    ) -> Result<SyncReport, SyncError> {
        progress(SyncProgress::Checking);
        let (row, doc, pds) = self.locate(did).await?;
        {
            // The handle the account is called by: only one that resolves back to it.
            let handle = match &doc.handle {
                Some(_) => self.resolver.verified_handle(did).await,
                None => None,
            };
            let (d, h, p) = (did.to_string(), handle, pds.clone());
            let held = self
                .store
                .write(move |c| {
                    loss::observe_identity(c, &d, &p)?;
                    store::update_repo_identity(c, &d, h.as_deref(), Some(&p))
                })
                .await??;
            if !held {
                // Removed while its identity was looked up: it stays removed.
                return Err(SyncError::NotBackedUp(did.to_string()));
            }
        }
        let mut report = SyncReport {
            did: did.to_string(),
            ..Default::default()
        };

        let status = match self.repo_status(&pds, did).await {
            Err(e) if loss::is_unreachable(&e) => {
                let (d, grace, reason) = (did.to_string(), self.pds_grace, e.to_string());
                self.store
                    .write(move |c| loss::observe_unreachable(c, &d, grace, &reason))
                    .await??;
                return Err(e);
            }
            other => other?,
        };
        report.upstream_status = status.clone();
        {
            let (d, s) = (did.to_string(), status.clone());
            self.store
                .write(move |c| {
                    loss::observe_status(c, &d, &s)?;
                    store::set_upstream_status(c, &d, &s)
                })
                .await??;
        }
        if status != "active" {
            // Never delete: the copy held is what lets the account come back.
            let d = did.to_string();
            self.store
                .write(move |c| store::mark_synced(c, &d))
                .await??;
            return Ok(report);
        }

        let latest: LatestCommit = self
            .get_json(&pds, "com.atproto.sync.getLatestCommit", &[("did", did)])
            .await?;
        if row.head.as_deref() == Some(latest.cid.as_str())
            || self.stream_brings(did, &pds, &latest.rev).await?
        {
            report.up_to_date = true;
        } else {
            let since = row.rev.clone().filter(|_| row.head.is_some());
            let outcome = match self
                .fetch_and_ingest(&doc, &pds, since.as_deref(), false, progress)
                .await
            {
                Err(SyncError::Ingest(e)) if since.is_some() && e.is_incomplete() => {
                    tracing::warn!(%did, error = %e, "incremental answer incomplete; fetching the whole repo");
                    self.fetch_and_ingest(&doc, &pds, None, false, progress)
                        .await?
                }
                other => other?,
            };
            report.full = since.is_none();
            tracing::info!(%did, rev = %outcome.rev, latest = %latest.rev, "synced");
            {
                let (d, before, good) = (did.to_string(), row.records, row.rev.clone());
                let (after, deleted) = (outcome.records, outcome.deletes as i64);
                self.store
                    .write(move |c| {
                        loss::observe_deletions(c, &d, before, after, deleted, good.as_deref())
                    })
                    .await??;
            }
            report.ingest = Some(outcome);
            self.store.checkpoint().await?;
        }
        report.blobs = blobs::sync_blobs(self, did, &pds, progress).await?;
        let d = did.to_string();
        self.store
            .write(move |c| store::mark_synced(c, &d))
            .await??;
        Ok(report)
    }

    /// Fetches the whole repo again (`getRepo` without `since`) and re-ingests it
    /// with full verification, even when the PDS's head is the one held: blocks
    /// lost from the local copy come back, `records` is rebuilt from the verified
    /// tree (see [`ingest::reingest_full_car`]). Blobs are left to [`Self::sync_repo`].
    /// When the account is not active upstream nothing is fetched: the report's
    /// `ingest` is `None` and `upstream_status` says why.
    pub async fn resync_full(
        &self,
        did: &str,
        progress: &(dyn Fn(SyncProgress) + Send + Sync),
    ) -> Result<SyncReport, SyncError> {
        progress(SyncProgress::Checking);
        let (_, doc, pds) = self.locate(did).await?;
        let status = self.repo_status(&pds, did).await?;
        {
            let (d, s) = (did.to_string(), status.clone());
            self.store
                .write(move |c| store::set_upstream_status(c, &d, &s))
                .await??;
        }
        let mut report = SyncReport {
            did: did.to_string(),
            upstream_status: status.clone(),
            full: true,
            ..Default::default()
        };
        if status != "active" {
            return Ok(report);
        }
        let outcome = self
            .fetch_and_ingest(&doc, &pds, None, true, progress)
            .await?;
        tracing::info!(%did, rev = %outcome.rev, restored = outcome.blocks_added, "re-ingested the whole repo");
        report.ingest = Some(outcome);
        self.store.checkpoint().await?;
        Ok(report)
    }

    async fn fetch_and_ingest(
        &self,
        doc: &DidDoc,
        pds: &str,
        since: Option<&str>,
        full: bool,
        progress: &(dyn Fn(SyncProgress) + Send + Sync),
    ) -> Result<IngestOutcome, SyncError> {
        let file = self.download_repo(pds, &doc.did, since, progress).await?;
        let key = doc.signing_key.clone().ok_or_else(|| SyncError::NoKey {
            did: doc.did.clone(),
        })?;
        let result = self
            .ingest_file(&doc.did, &file, key.clone(), full, progress)
            .await;
        let result = match result {
            Err(SyncError::Ingest(IngestError::Signature(_))) => {
                // The key may have been rotated since the document was cached.
                let fresh = self.resolver.resolve_did(&doc.did, true).await?;
                match fresh.signing_key {
                    Some(new_key) if new_key != key => {
                        self.ingest_file(&doc.did, &file, new_key, full, progress)
                            .await
                    }
                    _ => result,
                }
            }
            other => other,
        };
        let _ = tokio::fs::remove_file(&file).await;
        match result {
            // Removed while its copy was downloading: it stays removed.
            Err(SyncError::Ingest(IngestError::UnknownRepo)) => {
                Err(SyncError::NotBackedUp(doc.did.clone()))
            }
            other => other,
        }
    }

    async fn ingest_file(
        &self,
        did: &str,
        file: &Path,
        key: crate::crypto::PublicKey,
        full: bool,
        progress: &(dyn Fn(SyncProgress) + Send + Sync),
    ) -> Result<IngestOutcome, SyncError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (did, file) = (did.to_string(), file.to_path_buf());
        let job = self.store.write(move |conn| {
            let reader = std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(&file)?);
            let mut report = |p| {
                let _ = tx.send(p);
            };
            let result = if full {
                ingest::reingest_full_car(conn, &did, &key, reader, &mut report)
            } else {
                ingest::ingest_car(conn, &did, &key, reader, &mut report)
            };
            result.map_err(SyncError::from)
        });
        tokio::pin!(job);
        loop {
            tokio::select! {
                result = &mut job => return result?,
                Some(p) = rx.recv() => progress(SyncProgress::Ingesting(p)),
            }
        }
    }

    /// Streams `getRepo` to a temporary file (never the whole CAR in memory).
    async fn download_repo(
        &self,
        pds: &str,
        did: &str,
        since: Option<&str>,
        progress: &(dyn Fn(SyncProgress) + Send + Sync),
    ) -> Result<PathBuf, SyncError> {
        let url = format!("{pds}/xrpc/com.atproto.sync.getRepo");
        let mut query = vec![("did", did)];
        if let Some(since) = since {
            query.push(("since", since));
        }
        let room = self.room().await?;
        let name = self.display_name(did).await;
        let start = tokio::time::Instant::now();
        let resp = self.send(self.http.get(&url).query(&query), &url).await?;
        let total = resp.content_length();
        // The CAR is written twice (the temporary file, then the store): both must fit.
        if let Some(t) = total {
            room.fits(2 * t, t).map_err(|e| no_room(&name, e))?;
        }
        tokio::fs::create_dir_all(self.tmp_dir()).await?;
        // A name of its own (two runs never share a temporary file).
        let path = self.tmp_dir().join(format!(
            "{}.{}-{:016x}.car.part",
            did.replace(':', "_"),
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut out = tokio::io::BufWriter::new(tokio::fs::File::create(&path).await?);
        let mut stream = resp.bytes_stream();
        let mut bytes = 0u64;
        let mut last_report = 0u64;
        loop {
            let next = self
                .transfer
                .next_chunk(&mut stream, &url, start, total, bytes)
                .await;
            let chunk = match next {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    drop(out);
                    let _ = tokio::fs::remove_file(&path).await;
                    return Err(e.into());
                }
            };
            bytes += chunk.len() as u64;
            if let Err(e) = room.fits(2 * bytes, bytes) {
                drop(out);
                let _ = tokio::fs::remove_file(&path).await;
                return Err(no_room(&name, e));
            }
            out.write_all(&chunk).await?;
            if bytes - last_report >= 1 << 20 {
                last_report = bytes;
                progress(SyncProgress::Downloading { bytes, total });
            }
        }
        out.flush().await?;
        progress(SyncProgress::Downloading { bytes, total });
        Ok(path)
    }

    /// What may still be written (free disk space, the storage limit).
    pub async fn room(&self) -> Result<crate::store::space::Room, SyncError> {
        let (dir, free) = (self.data_dir.clone(), self.free_space);
        Ok(self
            .store
            .read(move |c| crate::store::space::Room::measure(c, &dir, free))
            .await?)
    }

    /// The handle of a backed-up account, else its DID.
    pub async fn display_name(&self, did: &str) -> String {
        let d = did.to_string();
        self.store
            .read(move |c| store::get_repo(c, &d))
            .await
            .ok()
            .flatten()
            .and_then(|r| r.handle)
            .unwrap_or_else(|| did.to_string())
    }

    /// Reads one record from its account's own PDS with `sync.getRecord` and
    /// verifies the proof against the account's key: the way to read records
    /// whose authority matters (policies, acks). A bad signature re-resolves
    /// the DID once, in case the key was rotated.
    pub async fn verified_record(
        &self,
        did: &str,
        collection: &str,
        rkey: &str,
    ) -> Result<crate::repo::proof::VerifiedRecord, SyncError> {
        let mut doc = self.resolver.resolve_did(did, false).await?;
        for attempt in 0..2 {
            let pds = doc
                .pds
                .clone()
                .ok_or_else(|| SyncError::NoPds { did: did.into() })?;
            let key = doc
                .signing_key
                .clone()
                .ok_or_else(|| SyncError::NoKey { did: did.into() })?;
            let url = format!("{pds}/xrpc/com.atproto.sync.getRecord");
            let resp = self
                .send(
                    self.http.get(&url).query(&[
                        ("did", did),
                        ("collection", collection),
                        ("rkey", rkey),
                    ]),
                    &url,
                )
                .await?;
            // A proof is a commit, a path of tree nodes and one record: a few kilobytes.
            let deadline = tokio::time::Instant::now() + crate::xrpc::DEADLINE;
            let car = crate::xrpc::read_capped(resp, &url, PROOF_LIMIT, deadline).await?;
            match crate::repo::proof::verify_record(&car, did, &key, collection, rkey) {
                Ok(record) => return Ok(record),
                Err(crate::repo::proof::ProofError::Signature(_)) if attempt == 0 => {
                    doc = self.resolver.resolve_did(did, true).await?;
                }
                Err(source) => {
                    return Err(SyncError::Proof {
                        did: did.to_string(),
                        source,
                    })
                }
            }
        }
        Err(SyncError::Proof {
            did: did.to_string(),
            source: crate::repo::proof::ProofError::Signature(
                crate::crypto::SignatureError::Mismatch,
            ),
        })
    }

    async fn repo_status(&self, pds: &str, did: &str) -> Result<String, SyncError> {
        match self
            .get_json::<RepoStatus>(pds, "com.atproto.sync.getRepoStatus", &[("did", did)])
            .await
        {
            Ok(s) if s.active => Ok("active".into()),
            Ok(s) => Ok(s.status.unwrap_or_else(|| "inactive".into())),
            Err(SyncError::Http {
                status: 400 | 404,
                error,
                ..
            }) if error == "RepoNotFound" => Ok("deleted".into()),
            Err(e) => Err(e),
        }
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, SyncError> {
        let resp = req.send().await.map_err(|e| SyncError::Network {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        if !resp.status().is_success() {
            // The refusal's body, read up to a small size within the deadline.
            let deadline = tokio::time::Instant::now() + crate::xrpc::DEADLINE;
            return Err(crate::xrpc::refusal(resp, url, deadline).await.into());
        }
        Ok(resp)
    }

    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        pds: &str,
        method: &str,
        query: &[(&str, &str)],
    ) -> Result<T, SyncError> {
        crate::xrpc::Client::new(self.http.clone())
            .get(pds, method, query)
            .await
            .map_err(SyncError::from)
    }

    pub(crate) async fn get_stream(
        &self,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<reqwest::Response, SyncError> {
        self.send(self.http.get(url).query(query), url).await
    }
}

/// The error for a sync that does not fit.
pub(crate) fn no_room(name: &str, e: crate::store::space::NoRoom) -> SyncError {
    match e {
        crate::store::space::NoRoom::Disk { needed, free } => SyncError::DiskFull {
            name: name.to_string(),
            needed,
            free,
        },
        crate::store::space::NoRoom::Limit {
            needed,
            used,
            limit,
        } => SyncError::StorageLimit {
            name: name.to_string(),
            needed,
            used,
            limit,
        },
    }
}
