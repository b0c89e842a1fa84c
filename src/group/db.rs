//! The circle tables of the store (schema version 2): policy versions seen, verified acks,
//! this node's answers, the accounts it replicates because of a circle, contacts, the last
//! status and heartbeat writes, and repo size estimates.
//!
//! Invariants: a row in `policy_versions` or `acks` was read as a verified record (a proof
//! against the author's signed commit), never from a bare listing; `policy_versions` is only
//! ever added to, so a node keeps every version it has seen.

use rusqlite::{Connection, OptionalExtension};

use super::plan::{Answer, LastWrite};
use crate::policy::observations::AckObservation;
use crate::policy::time::Timestamp;
use crate::store::{now_text, StoreError};

/// One version of a policy, as verified from its author's repo.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRow {
    pub uri: String,
    pub cid: String,
    pub author: String,
    pub record: serde_json::Value,
    pub first_seen_at: String,
}

fn ts(text: &str) -> Timestamp {
    Timestamp::parse(text).unwrap_or(Timestamp::from_millis(0))
}

impl VersionRow {
    pub fn first_seen(&self) -> Timestamp {
        ts(&self.first_seen_at)
    }
}

/// Adds a version (kept forever) and makes it the policy's latest; returns true when new.
pub fn record_version(
    conn: &Connection,
    uri: &str,
    cid: &str,
    author: &str,
    record: &serde_json::Value,
) -> Result<bool, StoreError> {
    let now = now_text();
    let n = conn.execute(
        "INSERT INTO policy_versions (uri, cid, author, record, first_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (uri, cid) DO NOTHING",
        rusqlite::params![uri, cid, author, record.to_string(), now],
    )?;
    conn.execute(
        "INSERT INTO policies (uri, author, latest_cid, checked_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (uri) DO UPDATE SET latest_cid = ?3, checked_at = ?4",
        rusqlite::params![uri, author, cid, now],
    )?;
    Ok(n == 1)
}

/// The author's repo proves the policy record is gone.
pub fn record_deleted(conn: &Connection, uri: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE policies SET latest_cid = NULL, checked_at = ?2 WHERE uri = ?1",
        rusqlite::params![uri, now_text()],
    )?;
    Ok(())
}

/// Every version of a policy, oldest first (in the order this node saw them).
pub fn versions(conn: &Connection, uri: &str) -> Result<Vec<VersionRow>, StoreError> {
    // Same instant (never in practice: a node sees one version per read): CID breaks the tie.
    let mut stmt = conn.prepare(
        "SELECT uri, cid, author, record, first_seen_at FROM policy_versions WHERE uri = ?1
         ORDER BY first_seen_at, cid",
    )?;
    let rows = stmt.query_map([uri], |r| {
        let record: String = r.get(3)?;
        Ok(VersionRow {
            uri: r.get(0)?,
            cid: r.get(1)?,
            author: r.get(2)?,
            record: serde_json::from_str(&record).unwrap_or(serde_json::Value::Null),
            first_seen_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A tracked policy: its URI, author and latest CID (`None`: the record was deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRow {
    pub uri: String,
    pub author: String,
    pub latest_cid: Option<String>,
}

pub fn policies(conn: &Connection) -> Result<Vec<PolicyRow>, StoreError> {
    let mut stmt = conn.prepare("SELECT uri, author, latest_cid FROM policies ORDER BY uri")?;
    let rows = stmt.query_map([], |r| {
        Ok(PolicyRow {
            uri: r.get(0)?,
            author: r.get(1)?,
            latest_cid: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn policy(conn: &Connection, uri: &str) -> Result<Option<PolicyRow>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT uri, author, latest_cid FROM policies WHERE uri = ?1",
            [uri],
            |r| {
                Ok(PolicyRow {
                    uri: r.get(0)?,
                    author: r.get(1)?,
                    latest_cid: r.get(2)?,
                })
            },
        )
        .optional()?)
}

/// Replaces the verified acks of `member` for `policy_uri` with `acks` (what the member's repo
/// holds now: a withdrawn ack disappears).
pub fn replace_acks(
    conn: &mut Connection,
    member: &str,
    policy_uri: &str,
    acks: &[AckObservation],
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    tx.execute(
        "DELETE FROM acks WHERE member = ?1 AND policy_uri = ?2",
        [member, policy_uri],
    )?;
    let now = now_text();
    for a in acks {
        let record = serde_json::to_string(&a.value)
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
        tx.execute(
            "INSERT INTO acks (uri, member, policy_uri, cid, record, verified_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (uri) DO UPDATE SET member = ?2, policy_uri = ?3, cid = ?4,
               record = ?5, verified_at = ?6",
            rusqlite::params![
                a.uri,
                member,
                policy_uri,
                a.cid.clone().unwrap_or_default(),
                record,
                now
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// The verified acks held for a policy (every version), as observations.
pub fn acks(conn: &Connection, policy_uri: &str) -> Result<Vec<AckObservation>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT uri, cid, record FROM acks WHERE policy_uri = ?1 ORDER BY uri")?;
    let rows = stmt.query_map([policy_uri], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (uri, cid, record) = row?;
        if let Ok(value) = serde_json::from_str(&record) {
            out.push(AckObservation {
                uri,
                cid: (!cid.is_empty()).then_some(cid),
                value,
            });
        }
    }
    Ok(out)
}

/// Remembers this node's answer to one version (`cid`) of a policy.
pub fn set_answer(
    conn: &Connection,
    policy_uri: &str,
    cid: &str,
    answer: Answer,
    ack_uri: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO answers (policy_uri, policy_cid, answer, ack_uri, at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (policy_uri, policy_cid) DO UPDATE SET answer = ?3, ack_uri = ?4, at = ?5",
        rusqlite::params![policy_uri, cid, answer.as_str(), ack_uri, now_text()],
    )?;
    Ok(())
}

/// This node's answers to a policy: (cid, answer), oldest first.
pub fn answers(conn: &Connection, policy_uri: &str) -> Result<Vec<(String, Answer)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT policy_cid, answer FROM answers WHERE policy_uri = ?1 ORDER BY at, policy_cid",
    )?;
    let rows = stmt.query_map([policy_uri], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (cid, a) = row?;
        if let Some(a) = Answer::parse(&a) {
            out.push((cid, a));
        }
    }
    Ok(out)
}

/// Forgets that this node left a policy (it accepts again).
pub fn clear_left(conn: &Connection, policy_uri: &str) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM answers WHERE policy_uri = ?1 AND answer = 'left'",
        [policy_uri],
    )?;
    Ok(())
}

/// An account this node replicates (or did) because of a circle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRow {
    pub policy_uri: String,
    pub did: String,
    /// The circle added it to the backed-up accounts (it was not backed up before).
    pub added_repo: bool,
    /// The circle asks for it now; false: the duty ended (the copy is kept) but the circle
    /// is still known, so leaving or revoking may still delete the copy.
    pub active: bool,
}

pub fn subjects(conn: &Connection) -> Result<Vec<SubjectRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT policy_uri, did, added_repo, active FROM circle_subjects ORDER BY policy_uri, did",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(SubjectRow {
            policy_uri: r.get(0)?,
            did: r.get(1)?,
            added_repo: r.get::<_, i64>(2)? != 0,
            active: r.get::<_, i64>(3)? != 0,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Starts (or restarts) a duty; `added_repo` is kept from the first start.
pub fn add_subject(
    conn: &Connection,
    policy_uri: &str,
    did: &str,
    added_repo: bool,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO circle_subjects (policy_uri, did, added_repo, active) VALUES (?1, ?2, ?3, 1)
         ON CONFLICT (policy_uri, did) DO UPDATE SET active = 1",
        rusqlite::params![policy_uri, did, i64::from(added_repo)],
    )?;
    Ok(())
}

/// Ends a duty without forgetting it (the copy is kept).
pub fn deactivate_subject(
    conn: &Connection,
    policy_uri: &str,
    did: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE circle_subjects SET active = 0 WHERE policy_uri = ?1 AND did = ?2",
        [policy_uri, did],
    )?;
    Ok(())
}

pub fn remove_subjects(conn: &Connection, policy_uri: &str) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM circle_subjects WHERE policy_uri = ?1",
        [policy_uri],
    )?;
    Ok(())
}

/// Remembers an account (to look for invitations in its repo, and to show its handle).
pub fn add_contact(
    conn: &Connection,
    did: &str,
    handle: Option<&str>,
    source: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO contacts (did, handle, source, added_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (did) DO UPDATE SET handle = coalesce(?2, handle)",
        rusqlite::params![did, handle, source, now_text()],
    )?;
    Ok(())
}

/// Every contact: (did, handle).
pub fn contacts(conn: &Connection) -> Result<Vec<(String, Option<String>)>, StoreError> {
    let mut stmt = conn.prepare("SELECT did, handle FROM contacts ORDER BY did")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn last_write(
    conn: &Connection,
    collection: &str,
    rkey: &str,
) -> Result<Option<LastWrite>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT digest, at FROM publications WHERE collection = ?1 AND rkey = ?2",
            [collection, rkey],
            |r| {
                Ok(LastWrite {
                    digest: r.get(0)?,
                    at: ts(&r.get::<_, String>(1)?),
                })
            },
        )
        .optional()?)
}

pub fn set_last_write(
    conn: &Connection,
    collection: &str,
    rkey: &str,
    w: &LastWrite,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO publications (collection, rkey, digest, at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (collection, rkey) DO UPDATE SET digest = ?3, at = ?4",
        rusqlite::params![collection, rkey, w.digest, w.at.to_string()],
    )?;
    Ok(())
}

pub fn forget_write(conn: &Connection, collection: &str, rkey: &str) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM publications WHERE collection = ?1 AND rkey = ?2",
        [collection, rkey],
    )?;
    Ok(())
}

/// A repo size estimate: (bytes, complete: false when the measurement stopped at a cap).
pub fn size_estimate(conn: &Connection, did: &str) -> Result<Option<(u64, bool)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT bytes, complete FROM size_estimates WHERE did = ?1",
            [did],
            |r| {
                Ok((
                    u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    r.get::<_, i64>(1)? != 0,
                ))
            },
        )
        .optional()?)
}

pub fn set_size_estimate(
    conn: &Connection,
    did: &str,
    bytes: u64,
    complete: bool,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO size_estimates (did, bytes, complete, at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (did) DO UPDATE SET bytes = ?2, complete = ?3, at = ?4",
        rusqlite::params![
            did,
            i64::try_from(bytes).unwrap_or(i64::MAX),
            i64::from(complete),
            now_text()
        ],
    )?;
    Ok(())
}

pub fn meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM group_meta WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?)
}

pub fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO group_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = ?2",
        [key, value],
    )?;
    Ok(())
}

pub fn delete_meta(conn: &Connection, key: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM group_meta WHERE key = ?1", [key])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::records::{AckRecord, StrongRef};
    use crate::store::Store;

    #[tokio::test]
    async fn versions_are_kept_and_acks_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("p2pds.sqlite")).unwrap();
        let uri = "at://did:plc:a/org.p2pds.policy/3k";
        store
            .write(move |c| {
                assert!(record_version(
                    c,
                    uri,
                    "bafy1",
                    "did:plc:a",
                    &serde_json::json!({"v": 1})
                )?);
                assert!(!record_version(
                    c,
                    uri,
                    "bafy1",
                    "did:plc:a",
                    &serde_json::json!({"v": 1})
                )?);
                assert!(record_version(
                    c,
                    uri,
                    "bafy2",
                    "did:plc:a",
                    &serde_json::json!({"v": 2})
                )?);
                let ack = |rkey: &str| AckObservation {
                    uri: format!("at://did:plc:b/org.p2pds.policy.ack/{rkey}"),
                    cid: Some("bafyack".into()),
                    value: AckRecord {
                        lex_type: "org.p2pds.policy.ack".into(),
                        policy: StrongRef {
                            uri: uri.into(),
                            cid: "bafy1".into(),
                        },
                        accepted: true,
                        reason: None,
                        created_at: "2026-03-01T00:00:00.000Z".into(),
                    },
                };
                replace_acks(c, "did:plc:b", uri, &[ack("1"), ack("2")])?;
                replace_acks(c, "did:plc:b", uri, &[ack("2")])?;
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap()
            .unwrap();
        let (vs, acks_held, p) = store
            .read(move |c| Ok((versions(c, uri)?, acks(c, uri)?, policy(c, uri)?)))
            .await
            .unwrap();
        assert_eq!(
            vs.iter().map(|v| v.cid.as_str()).collect::<Vec<_>>(),
            ["bafy1", "bafy2"]
        );
        assert_eq!(acks_held.len(), 1);
        assert!(acks_held[0].uri.ends_with("/2"));
        assert_eq!(p.unwrap().latest_cid.as_deref(), Some("bafy2"));
    }
}
