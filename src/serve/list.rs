//! The listings of `com.atproto.sync`: `listRepos` (every copy held, with its state),
//! `getRepoStatus` (one), `listBlobs` (the blobs held for one account, `since` a revision).
//! Pages are cut by `limit` and resumed by `cursor` (the last DID or CID of the page before),
//! in the lexicons' shapes.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::params::Params;
use super::xrpc::{held_repo, open_repo, repo_not_found};
use super::{internal, Ctx, Refusal};
use crate::store::StoreError;

/// A page's size when none is asked, and the most answered at once.
const DEFAULT_PAGE: usize = 500;
const MAX_PAGE: usize = 1000;

/// A cursor longer than this is no DID or CID this server gave.
const MAX_CURSOR: usize = 2048;

fn cursor(params: &Params) -> Result<String, Refusal> {
    match params.optional("cursor")? {
        Some(c) if c.len() > MAX_CURSOR => Err(Refusal::invalid("`cursor` is too long")),
        Some(c) => Ok(c.to_string()),
        None => Ok(String::new()),
    }
}

/// A held copy as `listRepos` reads it: DID, head, rev, the status its server gave.
type RepoRow = (String, Vec<u8>, String, Option<String>);

/// One account as `listRepos` and `getRepoStatus` show it.
fn repo_entry(did: &str, head: Option<String>, rev: Option<String>, status: Option<&str>) -> Value {
    let mut entry = json!({ "did": did, "active": status.is_none() });
    if let Some(head) = head {
        entry["head"] = json!(head);
    }
    if let Some(rev) = rev {
        entry["rev"] = json!(rev);
    }
    if let Some(status) = status {
        entry["status"] = json!(status);
    }
    entry
}

pub(super) async fn list_repos(
    State(ctx): State<Ctx>,
    params: Params,
) -> Result<Response, Refusal> {
    let limit = params.limit(DEFAULT_PAGE, MAX_PAGE)?;
    let after = cursor(&params)?;
    let rows = ctx
        .store
        .read(move |c| -> Result<Vec<RepoRow>, StoreError> {
            let mut stmt = c.prepare_cached(
                "SELECT did, head, coalesce(rev, ''), upstream_status FROM repos
                 WHERE head IS NOT NULL AND did > ?1 ORDER BY did LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(rusqlite::params![after, limit as i64 + 1], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
        .map_err(internal)?;
    let more = rows.len() > limit;
    let mut repos = Vec::with_capacity(limit.min(rows.len()));
    for (did, head, rev, status) in rows.into_iter().take(limit) {
        let Ok(head) = cid::Cid::try_from(head.as_slice()) else {
            continue;
        };
        let status = status.filter(|s| s != "active");
        repos.push(repo_entry(
            &did,
            Some(head.to_string()),
            Some(rev),
            status.as_deref(),
        ));
    }
    let mut answer = json!({ "repos": repos });
    if more {
        if let Some(last) = repos.last().and_then(|r| r["did"].as_str()) {
            answer["cursor"] = json!(last);
        }
    }
    Ok(Json(answer).into_response())
}

pub(super) async fn repo_status(
    State(ctx): State<Ctx>,
    params: Params,
) -> Result<Response, Refusal> {
    let did = params.required("did")?.to_string();
    let d = did.clone();
    let held = ctx
        .store
        .read(move |c| held_repo(c, &d))
        .await
        .map_err(internal)?
        .ok_or_else(|| repo_not_found(&did))?;
    let status = held.status.as_deref();
    // The revision is told only of an active account, as the lexicon has it.
    let rev = status.is_none().then(|| held.rev.clone());
    Ok(Json(repo_entry(&did, None, rev, status)).into_response())
}

pub(super) async fn list_blobs(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, Refusal> {
    let did = params.required("did")?.to_string();
    let since = params.since()?;
    let limit = params.limit(DEFAULT_PAGE, MAX_PAGE)?;
    let after = cursor(&params)?;
    let held = open_repo(&ctx, &did, &headers, "com.atproto.sync.listBlobs").await?;
    let mut cids = ctx
        .store
        .read(move |c| -> Result<Vec<String>, StoreError> {
            // Blobs held, in CID order; with `since`, those a record written after it names.
            let mut stmt = c.prepare_cached(
                "SELECT b.cid FROM blobs b
                 WHERE b.repo_id = ?1 AND b.state = 'stored' AND b.cid > ?2
                   AND (?3 IS NULL OR EXISTS (SELECT 1 FROM blob_refs r
                        WHERE r.repo_id = b.repo_id AND r.cid = b.cid AND r.rev > ?3))
                 ORDER BY b.cid LIMIT ?4",
            )?;
            let cids = stmt
                .query_map(
                    rusqlite::params![held.id, after, since, limit as i64 + 1],
                    |r| r.get(0),
                )?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(cids)
        })
        .await
        .map_err(internal)?;
    let more = cids.len() > limit;
    cids.truncate(limit);
    let mut answer = json!({ "cids": cids });
    if more {
        answer["cursor"] = json!(cids.last());
    }
    Ok(Json(answer).into_response())
}
