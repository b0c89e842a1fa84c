//! History: every verified state of each backed-up account, kept so that no upstream event
//! erases what this node already holds.
//!
//! - A *state* is a commit this node synced (table `commits`): its rev, the signed commit,
//!   the record tree's root, when it was seen, and how many records it held. Blocks are never
//!   deleted by a sync, so every synced state stays complete until garbage collection.
//! - A state is *retained* while it was the account's newest at some moment within the
//!   retention window (the user's setting, default 30 days; never less than
//!   [`crate::verify::RETENTION`] for an account one of this node's circles covers, since
//!   peers sample the trees this node said it held), while it is the newest, while an open
//!   flag names it as the last good state, or while a peer's published holding names its
//!   tree. [`gc`] removes the rest, and only blocks no retained state needs.
//! - A *flag* is an upstream event that may mean loss: every record deleted at once, the
//!   account deactivated or deleted, its PDS gone for longer than the grace period, a new
//!   signing key or PDS in its DID document (a possible takeover). Each flag keeps the state
//!   held before it (`good_rev`) until the user dismisses it; a restore without a time picks
//!   that state.

pub mod check;
pub mod gc;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::store::{now_text, StoreError};

// The retention window and the storage limit are the app's settings, which the store owns
// (`store::settings`); re-exported here, where the command line and the node controller read
// them.
pub use crate::store::settings::{
    limits, set_storage_limit, Limits, DEFAULT_RETENTION_DAYS, SETTINGS_KEY,
};

/// A deletion this large in one sync raises a flag: every record, or at least this share of
/// them when the account held at least [`MASS_DELETION_MIN`] records.
pub const MASS_DELETION_SHARE: f64 = 0.9;
pub const MASS_DELETION_MIN: i64 = 20;

/// Kinds of flags.
pub mod kind {
    pub const MASS_DELETION: &str = "mass-deletion";
    pub const PDS_GONE: &str = "pds-gone";
    pub const NEW_PDS: &str = "new-pds";
    pub const NEW_KEY: &str = "new-key";
    /// The account's status upstream, e.g. `account-deactivated`, `account-deleted`.
    pub const ACCOUNT_PREFIX: &str = "account-";
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{0} is not backed up")]
    Unknown(String),
    #[error("{0} has no verified copy yet: run a sync first")]
    Empty(String),
    #[error(
        "no copy of {did} as it was at {at} is kept: the oldest kept version is from {oldest}"
    )]
    NothingBefore {
        did: String,
        at: String,
        oldest: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for HistoryError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

/// One kept state of an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct State {
    pub rev: String,
    /// The signed commit's CID.
    pub commit: String,
    /// The record tree's root.
    pub data: String,
    /// When the account was in this state (the commit's time, from its rev).
    pub time: String,
    /// When this node synced it.
    pub synced_at: String,
    /// Records in this state (unknown for states synced before version 4 of the store).
    pub records: Option<i64>,
    pub creates: i64,
    pub updates: i64,
    pub deletes: i64,
}

/// An upstream event that may mean loss.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Flag {
    pub id: i64,
    pub kind: String,
    pub detected_at: String,
    /// What happened, in words.
    pub detail: String,
    /// The last good state kept because of it.
    pub good_rev: Option<String>,
    pub cleared_at: Option<String>,
}

/// The time a rev names, as RFC 3339 (empty when the rev is not a TID).
pub fn rev_time(rev: &str) -> String {
    crate::repo::tid::timestamp_micros(rev)
        .and_then(|m| DateTime::<Utc>::from_timestamp_micros(m as i64))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn cid_text(bytes: Vec<u8>) -> String {
    cid::Cid::try_from(bytes.as_slice())
        .map(|c| c.to_string())
        .unwrap_or_default()
}

pub fn repo_id(conn: &Connection, did: &str) -> Result<i64, HistoryError> {
    conn.query_row("SELECT id FROM repos WHERE did = ?1", [did], |r| r.get(0))
        .optional()?
        .ok_or_else(|| HistoryError::Unknown(did.to_string()))
}

/// The kept states of one account, oldest first.
pub fn states(conn: &Connection, repo_id: i64) -> Result<Vec<State>, HistoryError> {
    let mut stmt = conn.prepare_cached(
        "SELECT rev, cid, data, synced_at, records, creates, updates, deletes
         FROM commits WHERE repo_id = ?1 ORDER BY rev",
    )?;
    let rows = stmt.query_map([repo_id], |r| {
        let rev: String = r.get(0)?;
        Ok(State {
            time: rev_time(&rev),
            rev,
            commit: cid_text(r.get(1)?),
            data: cid_text(r.get(2)?),
            synced_at: r.get(3)?,
            records: r.get(4)?,
            creates: r.get(5)?,
            updates: r.get(6)?,
            deletes: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Raises a flag unless one of the same kind is open; returns whether it was raised.
pub fn raise(
    conn: &Connection,
    repo_id: i64,
    kind: &str,
    detail: &str,
    good_rev: Option<&str>,
) -> Result<bool, StoreError> {
    let open: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM upstream_flags
           WHERE repo_id = ?1 AND kind = ?2 AND cleared_at IS NULL)",
        params![repo_id, kind],
        |r| r.get(0),
    )?;
    if open {
        return Ok(false);
    }
    conn.execute(
        "INSERT INTO upstream_flags (repo_id, kind, detected_at, detail, good_rev)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![repo_id, kind, now_text(), detail, good_rev],
    )?;
    tracing::warn!(repo_id, kind, detail, "upstream event flagged");
    Ok(true)
}

/// Clears the open flags of the given kinds (events that ended on their own, such as an
/// account active again); returns how many.
pub fn clear(conn: &Connection, repo_id: i64, kinds: &[&str]) -> Result<usize, StoreError> {
    let mut n = 0;
    for kind in kinds {
        n += conn.execute(
            "UPDATE upstream_flags SET cleared_at = ?3
             WHERE repo_id = ?1 AND kind = ?2 AND cleared_at IS NULL",
            params![repo_id, kind, now_text()],
        )?;
    }
    Ok(n)
}

/// Clears the open flags whose kind starts with `prefix`.
pub fn clear_prefix(conn: &Connection, repo_id: i64, prefix: &str) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "UPDATE upstream_flags SET cleared_at = ?3
         WHERE repo_id = ?1 AND substr(kind, 1, length(?2)) = ?2 AND cleared_at IS NULL",
        params![repo_id, prefix, now_text()],
    )?)
}

/// The user has seen the flags of an account and accepts its current state: all are cleared
/// (their last good states become ordinary history, kept for the retention window).
pub fn dismiss(conn: &Connection, repo_id: i64) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "UPDATE upstream_flags SET cleared_at = ?2 WHERE repo_id = ?1 AND cleared_at IS NULL",
        params![repo_id, now_text()],
    )?)
}

fn flag_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Flag> {
    Ok(Flag {
        id: r.get(0)?,
        kind: r.get(1)?,
        detected_at: r.get(2)?,
        detail: r.get(3)?,
        good_rev: r.get(4)?,
        cleared_at: r.get(5)?,
    })
}

/// Every flag of one account, newest first (open and cleared).
pub fn flags(conn: &Connection, repo_id: i64) -> Result<Vec<Flag>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, detected_at, detail, good_rev, cleared_at FROM upstream_flags
         WHERE repo_id = ?1 ORDER BY id DESC",
    )?;
    let rows = stmt.query_map([repo_id], flag_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The open flags of every account: (did, handle, flag), oldest first.
pub fn open_flags(conn: &Connection) -> Result<Vec<(String, Option<String>, Flag)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT f.id, f.kind, f.detected_at, f.detail, f.good_rev, f.cleared_at, r.did, r.handle
         FROM upstream_flags f JOIN repos r ON r.id = f.repo_id
         WHERE f.cleared_at IS NULL ORDER BY f.id",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(6)?, r.get(7)?, flag_from_row(r)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest flag's id (0 when there is none): what [`flags_after`] counts from.
pub fn last_flag_id(conn: &Connection) -> Result<i64, StoreError> {
    Ok(
        conn.query_row("SELECT coalesce(max(id), 0) FROM upstream_flags", [], |r| {
            r.get(0)
        })?,
    )
}

/// The flags of one account raised after the flag `after` (see [`last_flag_id`]), oldest first.
pub fn flags_after(conn: &Connection, did: &str, after: i64) -> Result<Vec<Flag>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT f.id, f.kind, f.detected_at, f.detail, f.good_rev, f.cleared_at
         FROM upstream_flags f JOIN repos r ON r.id = f.repo_id
         WHERE r.did = ?1 AND f.id > ?2 ORDER BY f.id",
    )?;
    let rows = stmt.query_map(params![did, after], flag_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The state a restore uses.
#[derive(Clone, Debug, Serialize)]
pub struct Picked {
    pub repo_id: i64,
    pub state: State,
    /// Why this one, in words.
    pub why: String,
    /// Why this one, for screens to act on.
    pub by: PickedBy,
}

/// How a kept state was picked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PickedBy {
    /// The newest one at or before the time asked for.
    At,
    /// The last good state of an open flag (`detail`: what happened, in words).
    BeforeLoss { detail: String },
    /// The newest one: nothing suggests a loss.
    #[default]
    Newest,
}

/// Picks a kept state: the newest one at or before `at`; without a time, the last good state
/// of the oldest open flag that names one (the state before the loss), else the newest.
pub fn pick(
    conn: &Connection,
    did: &str,
    at: Option<DateTime<Utc>>,
) -> Result<Picked, HistoryError> {
    let repo_id = repo_id(conn, did)?;
    let all = states(conn, repo_id)?;
    let Some(oldest) = all.first() else {
        return Err(HistoryError::Empty(did.to_string()));
    };
    if let Some(at) = at {
        let at_micros = at.timestamp_micros().max(0) as u64;
        let found = all
            .iter()
            .rev()
            .find(|s| crate::repo::tid::timestamp_micros(&s.rev).is_some_and(|t| t <= at_micros));
        return match found {
            Some(s) => Ok(Picked {
                repo_id,
                state: s.clone(),
                why: format!("the newest version kept from before {}", at.to_rfc3339()),
                by: PickedBy::At,
            }),
            None => Err(HistoryError::NothingBefore {
                did: did.to_string(),
                at: at.to_rfc3339(),
                oldest: oldest.time.clone(),
            }),
        };
    }
    let open: Vec<Flag> = flags(conn, repo_id)?
        .into_iter()
        .filter(|f| f.cleared_at.is_none())
        .collect();
    if let Some(flag) = open.iter().rev().find(|f| f.good_rev.is_some()) {
        if let Some(s) = all
            .iter()
            .find(|s| Some(s.rev.as_str()) == flag.good_rev.as_deref())
        {
            return Ok(Picked {
                repo_id,
                state: s.clone(),
                why: format!("the last good version, from before: {}", flag.detail),
                by: PickedBy::BeforeLoss {
                    detail: flag.detail.clone(),
                },
            });
        }
    }
    let head: Option<String> =
        conn.query_row("SELECT rev FROM repos WHERE id = ?1", [repo_id], |r| {
            r.get(0)
        })?;
    let newest = all
        .iter()
        .find(|s| Some(&s.rev) == head.as_ref())
        .or(all.last())
        .cloned()
        .ok_or_else(|| HistoryError::Empty(did.to_string()))?;
    Ok(Picked {
        repo_id,
        state: newest,
        why: "the newest version".into(),
        by: PickedBy::Newest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut c, std::path::Path::new(":memory:")).unwrap();
        c.execute(
            "INSERT INTO repos (did, added_at, rev) VALUES ('did:plc:a', 'x', ?1)",
            [crate::repo::tid::format(3_000_000, 0)],
        )
        .unwrap();
        for (i, secs) in [1u64, 2, 3].iter().enumerate() {
            c.execute(
                "INSERT INTO commits (repo_id, rev, cid, data, synced_at, creates, updates, deletes, records)
                 VALUES (1, ?1, x'00', x'00', ?2, 0, 0, 0, ?3)",
                params![crate::repo::tid::format(secs * 1_000_000, 0), format!("t{i}"), i as i64],
            )
            .unwrap();
        }
        c
    }

    #[test]
    fn flags_are_raised_once_and_name_the_good_state() {
        let c = conn();
        let good = crate::repo::tid::format(2_000_000, 0);
        assert!(raise(
            &c,
            1,
            kind::MASS_DELETION,
            "all 5 records deleted",
            Some(&good)
        )
        .unwrap());
        assert!(!raise(&c, 1, kind::MASS_DELETION, "again", None).unwrap());
        let picked = pick(&c, "did:plc:a", None).unwrap();
        assert_eq!(picked.state.rev, good);
        assert!(
            picked.why.contains("all 5 records deleted"),
            "{}",
            picked.why
        );
        assert_eq!(dismiss(&c, 1).unwrap(), 1);
        let picked = pick(&c, "did:plc:a", None).unwrap();
        assert_eq!(picked.state.rev, crate::repo::tid::format(3_000_000, 0));
        assert_eq!(flags(&c, 1).unwrap().len(), 1);
        assert!(open_flags(&c).unwrap().is_empty());
    }

    #[test]
    fn a_time_picks_the_newest_state_at_or_before_it() {
        let c = conn();
        let at = |s: i64| DateTime::<Utc>::from_timestamp(s, 500_000_000).unwrap();
        assert_eq!(
            pick(&c, "did:plc:a", Some(at(2))).unwrap().state.rev,
            crate::repo::tid::format(2_000_000, 0)
        );
        let err = pick(&c, "did:plc:a", Some(at(0))).unwrap_err();
        assert!(err.to_string().contains("oldest kept version"), "{err}");
        assert!(matches!(
            pick(&c, "did:plc:zzz", None),
            Err(HistoryError::Unknown(_))
        ));
    }
}
