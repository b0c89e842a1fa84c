//! Where each followed stream stands (`follow_hosts`): the last sequence number handled (the
//! cursor a reconnection resumes after), the connection's state and its last error.

use rusqlite::OptionalExtension;

use crate::store::{Store, StoreError};

/// One followed host as the store has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    pub host: String,
    /// The last sequence number handled.
    pub cursor: Option<i64>,
    /// `live`, `reconnecting` or `stopped`.
    pub state: String,
    /// When the state last changed (RFC 3339).
    pub since: String,
    /// When the cursor last moved.
    pub last_event_at: Option<String>,
    pub error: Option<String>,
}

pub(super) async fn load(store: &Store, host: &str) -> Result<Option<i64>, StoreError> {
    let host = host.to_string();
    store
        .read(move |c| -> Result<Option<i64>, StoreError> {
            Ok(c.query_row(
                "SELECT cursor FROM follow_hosts WHERE host = ?1",
                [&host],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten())
        })
        .await
}

pub(super) async fn save(store: &Store, host: &str, cursor: Option<i64>) -> Result<(), StoreError> {
    let host = host.to_string();
    store
        .write(move |c| -> Result<(), StoreError> {
            let now = crate::store::now_text();
            c.execute(
                "INSERT INTO follow_hosts (host, cursor, state, since, last_event_at)
                 VALUES (?1, ?2, 'live', ?3, ?3)
                 ON CONFLICT (host) DO UPDATE SET cursor = excluded.cursor,
                   last_event_at = excluded.last_event_at",
                rusqlite::params![host, cursor, now],
            )?;
            Ok(())
        })
        .await?
}

pub(super) async fn set_state(
    store: &Store,
    host: &str,
    state: &'static str,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let host = host.to_string();
    let error = error.map(str::to_string);
    store
        .write(move |c| -> Result<(), StoreError> {
            let now = crate::store::now_text();
            c.execute(
                "INSERT INTO follow_hosts (host, state, since, error) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (host) DO UPDATE SET
                   since = CASE WHEN follow_hosts.state = excluded.state
                           THEN follow_hosts.since ELSE excluded.since END,
                   state = excluded.state, error = excluded.error",
                rusqlite::params![host, state, now, error],
            )?;
            Ok(())
        })
        .await?
}

/// What the store knows of the stream of `host` (`None`: never followed).
pub fn host_state(c: &rusqlite::Connection, host: &str) -> Result<Option<HostState>, StoreError> {
    Ok(c.query_row(
        "SELECT host, cursor, state, since, last_event_at, error FROM follow_hosts
         WHERE host = ?1",
        [host],
        |r| {
            Ok(HostState {
                host: r.get(0)?,
                cursor: r.get(1)?,
                state: r.get(2)?,
                since: r.get(3)?,
                last_event_at: r.get(4)?,
                error: r.get(5)?,
            })
        },
    )
    .optional()?)
}

/// The hosts whose streams are live now.
pub fn live_hosts(
    c: &rusqlite::Connection,
) -> Result<std::collections::BTreeSet<String>, StoreError> {
    let mut stmt = c.prepare_cached("SELECT host FROM follow_hosts WHERE state = 'live'")?;
    let hosts = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(hosts)
}
