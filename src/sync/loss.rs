//! Upstream loss, as a sync sees it: each observation raises a flag (see [`crate::history`])
//! that names the state held before the event, and clears the flags of events that ended
//! on their own (an account active again, a PDS answering again). A flag never stops a
//! sync and never deletes anything: the copy held before it stays, pinned, until the user
//! dismisses the flag.

use std::time::Duration;

use rusqlite::{params, Connection};

use super::SyncError;
use crate::history::{self, kind, MASS_DELETION_MIN, MASS_DELETION_SHARE};
use crate::store::{now_text, StoreError};

/// How long a PDS may stay unreachable before it counts as gone, when no circle says: a day.
/// (The command line reads `P2PDS_PDS_GRACE` and sets `Syncer::pds_grace`; the library reads
/// no environment.)
pub fn default_pds_grace() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// The server did not answer at all (as opposed to answering "no").
pub fn is_unreachable(e: &SyncError) -> bool {
    match e {
        SyncError::Network { .. } => true,
        SyncError::Http { status, .. } => matches!(status, 502..=504),
        _ => false,
    }
}

fn repo(conn: &Connection, did: &str) -> Result<Option<(i64, Option<String>)>, StoreError> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row("SELECT id, rev FROM repos WHERE did = ?1", [did], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

/// Compares the DID document's PDS with the one last seen. A change may be a migration the
/// owner made, or a takeover: either way the state held before it is kept. (A new signing key
/// is flagged by [`observe_new_key`] when a commit signed by it is accepted: a document whose
/// key verifies nothing raises no flag.)
pub fn observe_identity(conn: &Connection, did: &str, pds: &str) -> Result<(), StoreError> {
    let Some((repo_id, rev)) = repo(conn, did)? else {
        return Ok(());
    };
    let old_pds: Option<String> =
        conn.query_row("SELECT pds FROM repos WHERE id = ?1", [repo_id], |r| {
            r.get(0)
        })?;
    let held = rev.is_some();
    if let Some(old) =
        old_pds.filter(|o| held && o.trim_end_matches('/') != pds.trim_end_matches('/'))
    {
        history::raise(
            conn,
            repo_id,
            kind::NEW_PDS,
            &format!(
                "the account now names another server ({pds}, was {old}): if its owner did not move it, someone else may have taken it over"
            ),
            rev.as_deref(),
        )?;
    }
    Ok(())
}

/// A commit signed by `new_key` is being accepted (in the ingest's transaction): when the key
/// that verified the state held (`old_key`) was another, the change is flagged once, keeping
/// that state (`held_rev`). Later syncs under the new key go on working; the flag stays until
/// the user dismisses it.
pub fn observe_new_key(
    conn: &Connection,
    repo_id: i64,
    old_key: Option<&str>,
    new_key: &str,
    held_rev: Option<&str>,
) -> Result<(), StoreError> {
    if let (Some(old), Some(_)) = (old_key, held_rev) {
        if old != new_key {
            history::raise(
                conn,
                repo_id,
                kind::NEW_KEY,
                "the account's signing key changed: if its owner did not move or reset it, someone else may have taken it over",
                held_rev,
            )?;
        }
    }
    Ok(())
}

/// The account's status on its PDS (recorded here): a change to anything but active is
/// flagged once (a flag the user dismissed stays dismissed while the status lasts), active
/// clears it.
pub fn observe_status(conn: &Connection, did: &str, status: &str) -> Result<(), StoreError> {
    let Some((repo_id, rev)) = repo(conn, did)? else {
        return Ok(());
    };
    let previous: Option<String> = conn.query_row(
        "SELECT upstream_status FROM repos WHERE id = ?1",
        [repo_id],
        |r| r.get(0),
    )?;
    conn.execute(
        "UPDATE repos SET unreachable_since = NULL, upstream_status = ?2 WHERE id = ?1",
        params![repo_id, status],
    )?;
    history::clear(conn, repo_id, &[kind::PDS_GONE])?;
    if status == "active" {
        history::clear_prefix(conn, repo_id, kind::ACCOUNT_PREFIX)?;
        return Ok(());
    }
    if previous.as_deref() == Some(status) {
        return Ok(());
    }
    let detail = match status {
        "deactivated" => "the account was deactivated on its server; your copy is kept".to_string(),
        "deleted" => "the account was deleted from its server; your copy is kept".to_string(),
        "takendown" => "the account was taken down by its server; your copy is kept".to_string(),
        "suspended" => "the account was suspended by its server; your copy is kept".to_string(),
        other => format!("the account is {other} on its server; your copy is kept"),
    };
    history::raise(
        conn,
        repo_id,
        &format!("{}{status}", kind::ACCOUNT_PREFIX),
        &detail,
        rev.as_deref(),
    )?;
    Ok(())
}

/// The PDS did not answer: from the first failure on, the time is kept; past the grace
/// period the PDS counts as gone.
pub fn observe_unreachable(
    conn: &Connection,
    did: &str,
    grace: Duration,
    reason: &str,
) -> Result<(), StoreError> {
    let Some((repo_id, rev)) = repo(conn, did)? else {
        return Ok(());
    };
    let now = now_text();
    conn.execute(
        "UPDATE repos SET unreachable_since = coalesce(unreachable_since, ?2) WHERE id = ?1",
        params![repo_id, now],
    )?;
    let since: String = conn.query_row(
        "SELECT unreachable_since FROM repos WHERE id = ?1",
        [repo_id],
        |r| r.get(0),
    )?;
    let elapsed = chrono::DateTime::parse_from_rfc3339(&since)
        .map(|t| chrono::Utc::now().signed_duration_since(t))
        .ok()
        .and_then(|d| d.to_std().ok())
        .unwrap_or_default();
    if elapsed >= grace {
        history::raise(
            conn,
            repo_id,
            kind::PDS_GONE,
            &format!(
                "the account's server has not answered since {since} ({reason}); your copy is kept and can be restored elsewhere"
            ),
            rev.as_deref(),
        )?;
    }
    Ok(())
}

/// After a sync: a mass deletion keeps the state from before it.
pub fn observe_deletions(
    conn: &Connection,
    did: &str,
    before: i64,
    after: i64,
    deleted: i64,
    good_rev: Option<&str>,
) -> Result<(), StoreError> {
    if !is_mass_deletion(before, after, deleted) {
        return Ok(());
    }
    let Some((repo_id, _)) = repo(conn, did)? else {
        return Ok(());
    };
    let detail = if after == 0 {
        format!("all {before} records were deleted at once")
    } else {
        format!("{deleted} of {before} records were deleted at once")
    };
    history::raise(conn, repo_id, kind::MASS_DELETION, &detail, good_rev)?;
    Ok(())
}

/// Every record gone, or at least 90% of at least 20.
pub fn is_mass_deletion(before: i64, after: i64, deleted: i64) -> bool {
    if before <= 0 || deleted <= 0 {
        return false;
    }
    (after == 0 && deleted >= before)
        || (before >= MASS_DELETION_MIN && deleted as f64 >= MASS_DELETION_SHARE * before as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mass_deletion_thresholds() {
        assert!(is_mass_deletion(3, 0, 3));
        assert!(is_mass_deletion(100, 5, 95));
        assert!(!is_mass_deletion(100, 20, 80));
        assert!(!is_mass_deletion(10, 1, 9));
        assert!(!is_mass_deletion(0, 0, 0));
        assert!(!is_mass_deletion(5, 5, 0));
    }

    fn conn() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut c, std::path::Path::new(":memory:")).unwrap();
        c.execute(
            "INSERT INTO repos (did, added_at, pds, rev, signing_key)
             VALUES ('did:plc:a', 'x', 'https://old.example', 'rev1', 'did:key:zOld')",
            [],
        )
        .unwrap();
        c
    }

    #[test]
    fn identity_changes_are_flagged_once_with_the_state_held() {
        let c = conn();
        observe_identity(&c, "did:plc:a", "https://old.example/").unwrap();
        observe_new_key(&c, 1, Some("did:key:zOld"), "did:key:zOld", Some("rev1")).unwrap();
        assert!(history::open_flags(&c).unwrap().is_empty());
        observe_identity(&c, "did:plc:a", "https://new.example").unwrap();
        observe_identity(&c, "did:plc:a", "https://new.example").unwrap();
        observe_new_key(&c, 1, Some("did:key:zOld"), "did:key:zNew", Some("rev1")).unwrap();
        observe_new_key(&c, 1, Some("did:key:zOld"), "did:key:zNew", Some("rev1")).unwrap();
        // A first copy (nothing held before) is no change.
        observe_new_key(&c, 1, None, "did:key:zNew", None).unwrap();
        let open = history::open_flags(&c).unwrap();
        let kinds: Vec<&str> = open.iter().map(|(_, _, f)| f.kind.as_str()).collect();
        assert_eq!(kinds, [kind::NEW_PDS, kind::NEW_KEY]);
        assert!(open
            .iter()
            .all(|(_, _, f)| f.good_rev.as_deref() == Some("rev1")));
        assert!(open[0].2.detail.contains("taken it over"));
    }

    #[test]
    fn status_flags_clear_when_the_account_is_back() {
        let c = conn();
        observe_status(&c, "did:plc:a", "deactivated").unwrap();
        let open = history::open_flags(&c).unwrap();
        assert_eq!(open[0].2.kind, "account-deactivated");
        assert!(open[0].2.detail.contains("your copy is kept"));
        observe_status(&c, "did:plc:a", "active").unwrap();
        assert!(history::open_flags(&c).unwrap().is_empty());
        // Dismissed while the account stays deactivated: not raised again.
        observe_status(&c, "did:plc:a", "deactivated").unwrap();
        history::dismiss(&c, 1).unwrap();
        observe_status(&c, "did:plc:a", "deactivated").unwrap();
        assert!(history::open_flags(&c).unwrap().is_empty());
    }

    #[test]
    fn an_unreachable_pds_is_gone_after_the_grace_period() {
        let c = conn();
        observe_unreachable(&c, "did:plc:a", Duration::from_secs(3600), "refused").unwrap();
        assert!(history::open_flags(&c).unwrap().is_empty());
        observe_unreachable(&c, "did:plc:a", Duration::ZERO, "refused").unwrap();
        assert_eq!(history::open_flags(&c).unwrap()[0].2.kind, kind::PDS_GONE);
        observe_status(&c, "did:plc:a", "active").unwrap();
        assert!(history::open_flags(&c).unwrap().is_empty());
        let since: Option<String> = c
            .query_row("SELECT unreachable_since FROM repos", [], |r| r.get(0))
            .unwrap();
        assert_eq!(since, None);
    }
}
