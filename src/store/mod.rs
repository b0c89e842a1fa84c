//! The local store: one SQLite file per data directory.
//!
//! Owns the schema and its migrations. One thread owns the write connection and
//! runs closures sent to it, so writes never block the async runtime and never
//! interleave; reads open their own connection (WAL lets them run beside a
//! write). Invariant: a repo's `head`, `rev`, `data` and its `records` rows only
//! ever change together, in the transaction that verified the new commit.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

pub mod blobfiles;
pub mod lock;
pub mod schema;
pub mod settings;
pub mod space;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store's writer has stopped")]
    WriterGone,
    #[error("could not open the store at {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("the store at {path} was written by a newer version of P2PDS (schema {found}, this build knows {known}): update the app")]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Settings of the one write connection.
///
/// - 16 KiB pages (a new file only): blocks are a few hundred bytes each and
///   shallower trees make bulk ingest faster.
/// - WAL: a crash mid-transaction leaves the transaction simply not done.
/// - `synchronous = FULL`: the log is synced at every commit, so a sync that
///   reports success is on disk, and a power cut loses no finished sync.
/// - No automatic checkpoints: they would copy a whole freshly ingested repo
///   into the main file inside the commit; [`Store::checkpoint`] runs after
///   each account's sync instead.
pub fn configure_writer(conn: &Connection) -> rusqlite::Result<()> {
    configure(conn)?;
    conn.pragma_update(None, "page_size", 16_384)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -32_000)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(())
}

impl Store {
    /// Opens (creating and migrating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        configure_writer(&conn)?;
        schema::migrate(&mut conn, path)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("p2pds-store".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&mut conn);
                }
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            jobs,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The data directory: the folder the SQLite file is in.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new(""))
    }

    /// Runs `f` on the writer thread and waits for its result.
    pub async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> R + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = tx.send(f(conn));
            }))
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)
    }

    /// Runs `f` on the writer thread from synchronous code.
    pub fn write_blocking<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> R + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = tx.send(f(conn));
            }))
            .map_err(|_| StoreError::WriterGone)?;
        rx.recv().map_err(|_| StoreError::WriterGone)
    }

    /// Copies the write-ahead log into the main file and truncates it.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        self.write(|conn| -> Result<(), StoreError> {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await?
    }

    /// Opens a read-only connection (for synchronous readers).
    pub fn reader(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        Ok(conn)
    }

    /// Runs `f` on a read connection on a blocking thread.
    pub async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = store.reader()?;
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::WriterGone)?
    }
}

/// A backed-up account as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RepoRow {
    pub id: i64,
    pub did: String,
    pub handle: Option<String>,
    pub pds: Option<String>,
    pub head: Option<String>,
    pub rev: Option<String>,
    pub data: Option<String>,
    pub records: i64,
    pub blocks: i64,
    pub bytes: i64,
    pub last_sync_at: Option<String>,
    pub upstream_status: Option<String>,
    pub state: String,
    pub error: Option<String>,
    /// The kind of the last failure (`sync::FailureKind`), while `state` is "error".
    pub error_code: Option<String>,
    /// The friend's node (its account's DID) the copy was last brought up to date from, and
    /// when, since the last backup from the account's own server.
    pub caught_up_from: Option<String>,
    pub caught_up_at: Option<String>,
}

const REPO_COLUMNS: &str = "id, did, handle, pds, head, rev, data, records, blocks, bytes, \
     last_sync_at, upstream_status, state, error, error_code, caught_up_from, caught_up_at";

fn cid_text(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.and_then(|b| cid::Cid::try_from(b.as_slice()).ok().map(|c| c.to_string()))
}

fn repo_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RepoRow> {
    Ok(RepoRow {
        id: row.get(0)?,
        did: row.get(1)?,
        handle: row.get(2)?,
        pds: row.get(3)?,
        head: cid_text(row.get(4)?),
        rev: row.get(5)?,
        data: cid_text(row.get(6)?),
        records: row.get(7)?,
        blocks: row.get(8)?,
        bytes: row.get(9)?,
        last_sync_at: row.get(10)?,
        upstream_status: row.get(11)?,
        state: row.get(12)?,
        error: row.get(13)?,
        error_code: row.get(14)?,
        caught_up_from: row.get(15)?,
        caught_up_at: row.get(16)?,
    })
}

pub fn list_repos(conn: &Connection) -> Result<Vec<RepoRow>, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {REPO_COLUMNS} FROM repos ORDER BY id"))?;
    let rows = stmt.query_map([], repo_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get_repo(conn: &Connection, did: &str) -> Result<Option<RepoRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {REPO_COLUMNS} FROM repos WHERE did = ?1"),
            [did],
            repo_from_row,
        )
        .optional()?)
}

/// Adds an account to back up; returns false when it was already there.
pub fn add_repo(
    conn: &Connection,
    did: &str,
    handle: Option<&str>,
    pds: Option<&str>,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "INSERT INTO repos (did, handle, pds, added_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (did) DO NOTHING",
        rusqlite::params![did, handle, pds, now_text()],
    )?;
    if n == 0 {
        update_repo_identity(conn, did, handle, pds)?;
    }
    Ok(n == 1)
}

/// Updates what an account's identity says (its handle, its PDS); false when the account is
/// not backed up. A sync uses this, never [`add_repo`]: an account removed while its backup
/// was under way stays removed.
pub fn update_repo_identity(
    conn: &Connection,
    did: &str,
    handle: Option<&str>,
    pds: Option<&str>,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE repos SET handle = coalesce(?2, handle), pds = coalesce(?3, pds) WHERE did = ?1",
        rusqlite::params![did, handle, pds],
    )?;
    Ok(n == 1)
}

/// Removes an account and everything held for it, then deletes the blob files no other
/// account names; returns false when unknown.
pub fn remove_repo_and_files(
    conn: &mut Connection,
    did: &str,
    blob_dir: &Path,
) -> Result<bool, StoreError> {
    if !remove_repo(conn, did)? {
        return Ok(false);
    }
    blobfiles::remove_unreferenced(conn, blob_dir)?;
    Ok(true)
}

/// Removes an account and everything held for it; returns false when unknown.
pub fn remove_repo(conn: &mut Connection, did: &str) -> Result<bool, StoreError> {
    let tx = conn.transaction()?;
    let Some(id) = tx
        .query_row("SELECT id FROM repos WHERE did = ?1", [did], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?
    else {
        return Ok(false);
    };
    for table in ["records", "blocks", "commits", "blobs", "blob_refs"] {
        tx.execute(&format!("DELETE FROM {table} WHERE repo_id = ?1"), [id])?;
    }
    tx.execute("DELETE FROM repos WHERE id = ?1", [id])?;
    tx.commit()?;
    Ok(true)
}

/// Records the outcome of a sync attempt that did not change the data.
pub fn set_repo_state(
    conn: &Connection,
    did: &str,
    state: &str,
    error: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE repos SET state = ?2, error = ?3, error_code = NULL, last_attempt_at = ?4
         WHERE did = ?1",
        rusqlite::params![did, state, error, now_text()],
    )?;
    Ok(())
}

/// Records a failed sync attempt: its message and the kind of failure (a stable code that
/// screens act on; see `sync::FailureKind`).
pub fn set_repo_failed(
    conn: &Connection,
    did: &str,
    message: &str,
    code: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE repos SET state = 'error', error = ?2, error_code = ?3, last_attempt_at = ?4
         WHERE did = ?1",
        rusqlite::params![did, message, code, now_text()],
    )?;
    Ok(())
}

pub fn set_upstream_status(conn: &Connection, did: &str, status: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE repos SET upstream_status = ?2 WHERE did = ?1",
        rusqlite::params![did, status],
    )?;
    Ok(())
}

pub fn mark_synced(conn: &Connection, did: &str) -> Result<(), StoreError> {
    let now = now_text();
    conn.execute(
        "UPDATE repos SET state = 'synced', error = NULL, error_code = NULL, last_sync_at = ?2,
           last_attempt_at = ?2, caught_up_from = NULL, caught_up_at = NULL
         WHERE did = ?1",
        rusqlite::params![did, now],
    )?;
    Ok(())
}

/// Notes that the copy of `did` was brought up to date from the node of `node` (a friend's
/// account DID) just now.
pub fn mark_caught_up(conn: &Connection, did: &str, node: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE repos SET caught_up_from = ?2, caught_up_at = ?3 WHERE did = ?1",
        rusqlite::params![did, node, now_text()],
    )?;
    Ok(())
}

/// A stored record.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RecordRow {
    pub collection: String,
    pub rkey: String,
    pub cid: String,
    pub value: serde_json::Value,
}

/// The records of one account, optionally of one collection, in key order.
pub fn list_records(
    conn: &Connection,
    repo_id: i64,
    collection: Option<&str>,
) -> Result<Vec<RecordRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT r.collection, r.rkey, r.cid, b.data FROM records r
         LEFT JOIN blocks b ON b.repo_id = r.repo_id AND b.cid = r.cid
         WHERE r.repo_id = ?1 AND (?2 IS NULL OR r.collection = ?2)
         ORDER BY r.collection, r.rkey",
    )?;
    let rows = stmt.query_map(rusqlite::params![repo_id, collection], |row| {
        let cid: Vec<u8> = row.get(2)?;
        let data: Option<Vec<u8>> = row.get(3)?;
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            cid,
            data,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (collection, rkey, cid, data) = row?;
        let cid = cid_text(Some(cid)).unwrap_or_default();
        let value = match data {
            Some(bytes) => crate::repo::record::to_json(&bytes)
                .unwrap_or_else(|e| serde_json::json!({ "$error": e.to_string() })),
            None => serde_json::json!({ "$error": "record block missing from the store" }),
        };
        out.push(RecordRow {
            collection,
            rkey,
            cid,
            value,
        });
    }
    Ok(out)
}

/// Blob figures of one account: (stored count, stored bytes, missing, bad).
pub fn blob_counts(conn: &Connection, repo_id: i64) -> Result<(i64, i64, i64, i64), StoreError> {
    Ok(conn.query_row(
        "SELECT
           count(*) FILTER (WHERE state = 'stored'),
           coalesce(sum(size) FILTER (WHERE state = 'stored'), 0),
           count(*) FILTER (WHERE state = 'missing'),
           count(*) FILTER (WHERE state = 'bad')
         FROM blobs WHERE repo_id = ?1",
        [repo_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?)
}

/// The folder of a data directory that holds the blob files.
pub fn blob_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("blobs")
}

/// Where a blob lives on disk: a file named by its CID in the blob folder ([`blob_dir`]).
/// Blob files are the store's, beside the SQLite file: `sync` writes them, `serve`, `export`
/// and `restore` read them, `history::gc` deletes them.
pub fn blob_path(dir: &Path, cid: &str) -> PathBuf {
    dir.join(cid)
}

pub fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_migrate_add_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("p2pds.sqlite")).unwrap();
        let added = store
            .write(|c| add_repo(c, "did:plc:abc", Some("abc.test"), None))
            .await
            .unwrap()
            .unwrap();
        assert!(added);
        let again = store
            .write(|c| add_repo(c, "did:plc:abc", None, Some("http://pds")))
            .await
            .unwrap()
            .unwrap();
        assert!(!again);
        let repos = store.read(list_repos).await.unwrap();
        assert_eq!(repos.len(), 1);
        assert_eq!(repos[0].handle.as_deref(), Some("abc.test"));
        assert_eq!(repos[0].pds.as_deref(), Some("http://pds"));
        assert_eq!(repos[0].state, "pending");
        let removed = store
            .write(|c| remove_repo(c, "did:plc:abc"))
            .await
            .unwrap()
            .unwrap();
        assert!(removed);
        assert!(store.read(list_repos).await.unwrap().is_empty());
        // Reopening finds the schema current.
        drop(store);
        Store::open(&dir.path().join("p2pds.sqlite")).unwrap();
    }
}
