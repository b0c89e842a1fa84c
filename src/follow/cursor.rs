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

/// The servers of the accounts held (each a stream to follow).
pub fn hosts_to_follow(
    c: &rusqlite::Connection,
) -> Result<std::collections::BTreeSet<String>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT DISTINCT pds FROM repos WHERE pds IS NOT NULL AND head IS NOT NULL",
    )?;
    let hosts = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(hosts)
}

/// How an account on `pds` is kept up to date now, in one word for tools: `live` (its
/// server's stream, or a relay's, is followed), `catching-up` (the stream is being
/// reconnected; it resumes from the cursor), or `polling` (no stream followed: backups come
/// due by time). A relay is a followed host that is no held account's server.
pub fn how_followed(
    c: &rusqlite::Connection,
    pds: Option<&str>,
) -> Result<&'static str, StoreError> {
    let own = match pds {
        Some(pds) => host_state(c, pds)?
            .map(|s| s.state)
            .filter(|s| s != "stopped"),
        None => None,
    };
    let state = match own {
        Some(state) => Some(state),
        None => c
            .query_row(
                "SELECT state FROM follow_hosts WHERE state != 'stopped'
                   AND host NOT IN (SELECT pds FROM repos WHERE pds IS NOT NULL)
                 ORDER BY state = 'live' DESC LIMIT 1",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()?,
    };
    Ok(match state.as_deref() {
        Some("live") => "live",
        Some("reconnecting") => "catching-up",
        _ => "polling",
    })
}

/// How long after its own time the newest kept version of repo `repo_id` was kept, in
/// seconds (`None`: nothing kept, or a revision that is not a time).
pub fn lag_seconds(c: &rusqlite::Connection, repo_id: i64) -> Result<Option<f64>, StoreError> {
    let newest: Option<(String, String)> = c
        .query_row(
            "SELECT rev, synced_at FROM commits WHERE repo_id = ?1 ORDER BY rev DESC LIMIT 1",
            [repo_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(newest.and_then(|(rev, kept)| {
        let made = crate::repo::tid::timestamp_micros(&rev)?;
        let kept = chrono::DateTime::parse_from_rfc3339(&kept).ok()?;
        let kept = u64::try_from(kept.timestamp_micros()).ok()?;
        Some(kept.saturating_sub(made) as f64 / 1e6)
    }))
}
