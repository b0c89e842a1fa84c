//! The verification tables (schema migration 3): results, challenges issued and answered,
//! and the holdings other nodes published.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::policy::observations::{Needs, Outcome};
use crate::policy::records::VerificationResultRecord;
use crate::store::StoreError;

/// How a result was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Asked the peer's HTTP endpoint.
    Endpoint,
    /// A challenge record, answered (or not) in the peer's repo.
    Challenge,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Endpoint => "endpoint",
            Via::Challenge => "challenge",
        }
    }
}

pub fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Fail => "fail",
        Outcome::Unreachable => "unreachable",
    }
}

/// One stored result: `verifier` checked `target`'s copy of `subject` with one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultRow {
    pub at: String,
    pub verifier: String,
    pub target: String,
    pub subject: String,
    pub layer: u8,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub via: Via,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// A failed whole-copy check: what the copy lacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<Needs>,
}

pub fn insert_result(conn: &Connection, r: &ResultRow) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO verifications
            (at, verifier, target, subject, layer, outcome, latency_ms, reason, via, policy_uri,
             needs_records, needs_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            r.at,
            r.verifier,
            r.target,
            r.subject,
            r.layer,
            outcome_str(r.outcome),
            r.latency_ms.and_then(|l| i64::try_from(l).ok()),
            r.reason,
            r.via.as_str(),
            r.policy,
            r.needs.and_then(|n| i64::try_from(n.records).ok()),
            r.needs.and_then(|n| i64::try_from(n.bytes).ok()),
        ],
    )?;
    Ok(())
}

fn result_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ResultRow> {
    let outcome: String = row.get(5)?;
    let via: String = row.get(8)?;
    let latency: Option<i64> = row.get(6)?;
    let needs_records: Option<i64> = row.get(10)?;
    let needs_bytes: Option<i64> = row.get(11)?;
    Ok(ResultRow {
        at: row.get(0)?,
        verifier: row.get(1)?,
        target: row.get(2)?,
        subject: row.get(3)?,
        layer: row.get(4)?,
        outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Fail),
        latency_ms: latency.and_then(|l| u64::try_from(l).ok()),
        reason: row.get(7)?,
        via: if via == "challenge" {
            Via::Challenge
        } else {
            Via::Endpoint
        },
        policy: row.get(9)?,
        needs: match (needs_records, needs_bytes) {
            (Some(r), Some(b)) => Some(Needs {
                records: u64::try_from(r).unwrap_or(0),
                bytes: u64::try_from(b).unwrap_or(0),
            }),
            _ => None,
        },
    })
}

const RESULT_COLUMNS: &str =
    "at, verifier, target, subject, layer, outcome, latency_ms, reason, via, policy_uri, needs_records, needs_bytes";

/// The results of the last `rounds` rounds of every copy this node verified under a policy,
/// oldest first: what its status record publishes.
pub fn recent_for_policy(
    conn: &Connection,
    policy_uri: &str,
    rounds: usize,
) -> Result<Vec<ResultRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RESULT_COLUMNS} FROM verifications v
         WHERE policy_uri = ?1 AND at IN (
            SELECT DISTINCT at FROM verifications w
            WHERE w.policy_uri = ?1 AND w.target = v.target AND w.subject = v.subject
            ORDER BY at DESC LIMIT ?2)
         ORDER BY target, subject, at, layer"
    ))?;
    let rows = stmt.query_map(
        params![policy_uri, i64::try_from(rounds).unwrap_or(i64::MAX)],
        result_from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The results stored at or after `since` (RFC 3339 text).
pub fn results_since(conn: &Connection, since: &str) -> Result<Vec<ResultRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RESULT_COLUMNS} FROM verifications WHERE at >= ?1 ORDER BY at, target, subject, layer"
    ))?;
    let rows = stmt.query_map([since], result_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// When `target`'s copy of `subject` was last checked, and whether that round failed.
pub fn last_round(
    conn: &Connection,
    target: &str,
    subject: &str,
) -> Result<Option<(String, bool)>, StoreError> {
    let at: Option<String> = conn
        .query_row(
            "SELECT max(at) FROM verifications WHERE target = ?1 AND subject = ?2",
            params![target, subject],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let Some(at) = at else { return Ok(None) };
    let failed: i64 = conn.query_row(
        "SELECT count(*) FROM verifications WHERE target = ?1 AND subject = ?2 AND at = ?3
         AND outcome = 'fail'",
        params![target, subject, at],
        |r| r.get(0),
    )?;
    Ok(Some((at, failed > 0)))
}

/// A result as published in a status record.
pub fn to_record(r: &ResultRow) -> VerificationResultRecord {
    VerificationResultRecord {
        target: r.target.clone(),
        subject: r.subject.clone(),
        layer: i64::from(r.layer),
        outcome: outcome_str(r.outcome).to_string(),
        at: r.at.clone(),
        detail: r.reason.as_ref().map(|s| s.chars().take(300).collect()),
        needs_records: r.needs.and_then(|n| i64::try_from(n.records).ok()),
        needs_bytes: r.needs.and_then(|n| i64::try_from(n.bytes).ok()),
    }
}

// ---- challenges ------------------------------------------------------------------------------

/// A challenge this node published and waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedRow {
    pub uri: String,
    pub cid: String,
    pub target: String,
    pub subject: String,
    pub policy: Option<String>,
    pub layer: u8,
    pub expected: String,
    pub issued_at: String,
    pub expires_at: String,
}

pub fn insert_issued(conn: &Connection, c: &IssuedRow) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO challenges_issued
            (uri, cid, target, subject, policy_uri, layer, expected, issued_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            c.uri,
            c.cid,
            c.target,
            c.subject,
            c.policy,
            c.layer,
            c.expected,
            c.issued_at,
            c.expires_at
        ],
    )?;
    Ok(())
}

/// Challenges not resolved yet.
pub fn open_issued(conn: &Connection) -> Result<Vec<IssuedRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT uri, cid, target, subject, policy_uri, layer, expected, issued_at, expires_at
         FROM challenges_issued WHERE resolved_at IS NULL ORDER BY issued_at",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(IssuedRow {
            uri: r.get(0)?,
            cid: r.get(1)?,
            target: r.get(2)?,
            subject: r.get(3)?,
            policy: r.get(4)?,
            layer: r.get(5)?,
            expected: r.get(6)?,
            issued_at: r.get(7)?,
            expires_at: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn resolve_issued(
    conn: &Connection,
    uri: &str,
    at: &str,
    outcome: Outcome,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE challenges_issued SET resolved_at = ?2, outcome = ?3, reason = ?4 WHERE uri = ?1",
        params![uri, at, outcome_str(outcome), reason],
    )?;
    Ok(())
}

/// Whether this node already answered (or gave up on) a challenge.
pub fn answered(conn: &Connection, uri: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM challenges_answered WHERE uri = ?1",
            [uri],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

pub fn set_answered(
    conn: &Connection,
    uri: &str,
    verifier: &str,
    subject: &str,
    response_uri: Option<&str>,
    at: &str,
    error: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO challenges_answered (uri, verifier, subject, response_uri, at, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![uri, verifier, subject, response_uri, at, error],
    )?;
    Ok(())
}

// ---- holdings other nodes published ------------------------------------------------------------

pub fn remember_claim(
    conn: &Connection,
    node: &str,
    subject: &str,
    rev: &str,
    data: &str,
    at: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO holding_claims (node, subject, rev, data, first_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![node, subject, rev, data, at],
    )?;
    Ok(())
}

/// Remembers every holding of one status record `node` published.
pub fn remember_status(
    conn: &Connection,
    node: &str,
    status: &crate::policy::records::StatusRecord,
    at: &str,
) -> Result<(), StoreError> {
    for h in &status.holdings {
        remember_claim(conn, node, &h.did, &h.rev, &h.data, at)?;
    }
    Ok(())
}

/// Whether a challenge to `target` about `subject` is still open.
pub fn challenge_open(conn: &Connection, target: &str, subject: &str) -> Result<bool, StoreError> {
    Ok(open_issued(conn)?
        .iter()
        .any(|i| i.target == target && i.subject == subject))
}

/// The data roots `node` said it held for `subject` since `since`, newest first.
pub fn claims(
    conn: &Connection,
    node: &str,
    subject: &str,
    since: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT rev, data FROM holding_claims WHERE node = ?1 AND subject = ?2
         AND first_seen_at >= ?3 ORDER BY rev DESC",
    )?;
    let rows = stmt.query_map(params![node, subject, since], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("s.db")).unwrap();
        let path = store.path().to_path_buf();
        drop(store);
        let c = Connection::open(&path).unwrap();
        // Keep the directory alive for the connection's lifetime.
        std::mem::forget(dir);
        c
    }

    fn row(at: &str, target: &str, layer: u8, outcome: Outcome) -> ResultRow {
        ResultRow {
            at: at.into(),
            verifier: "did:plc:me".into(),
            target: target.into(),
            subject: "did:plc:s".into(),
            layer,
            outcome,
            latency_ms: Some(3),
            reason: None,
            via: Via::Endpoint,
            policy: Some("at://p".into()),
            needs: None,
        }
    }

    #[test]
    fn recent_keeps_the_last_rounds_of_each_copy() {
        let c = conn();
        for (i, at) in [
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:00:00Z",
            "2026-01-01T02:00:00Z",
        ]
        .iter()
        .enumerate()
        {
            let o = if i == 2 { Outcome::Fail } else { Outcome::Pass };
            insert_result(&c, &row(at, "did:plc:a", 0, o)).unwrap();
            insert_result(&c, &row(at, "did:plc:a", 1, Outcome::Pass)).unwrap();
            insert_result(&c, &row(at, "did:plc:b", 0, Outcome::Pass)).unwrap();
        }
        let recent = recent_for_policy(&c, "at://p", 2).unwrap();
        assert_eq!(recent.len(), 6);
        assert!(recent
            .iter()
            .all(|r| r.at.as_str() > "2026-01-01T00:00:00Z"));
        assert_eq!(
            last_round(&c, "did:plc:a", "did:plc:s").unwrap(),
            Some(("2026-01-01T02:00:00Z".into(), true))
        );
        assert_eq!(last_round(&c, "did:plc:x", "did:plc:s").unwrap(), None);
    }

    #[test]
    fn claims_are_remembered_once() {
        let c = conn();
        remember_claim(&c, "n", "s", "r1", "d1", "2026-01-01T00:00:00Z").unwrap();
        remember_claim(&c, "n", "s", "r1", "d1", "2026-01-02T00:00:00Z").unwrap();
        remember_claim(&c, "n", "s", "r2", "d2", "2026-01-02T00:00:00Z").unwrap();
        assert_eq!(
            claims(&c, "n", "s", "2025-01-01T00:00:00Z").unwrap(),
            vec![("r2".into(), "d2".into()), ("r1".into(), "d1".into())]
        );
        assert_eq!(
            claims(&c, "n", "s", "2026-01-01T12:00:00Z").unwrap().len(),
            1
        );
    }
}
