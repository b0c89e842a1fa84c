//! The `com.atproto.sync` reads of one account: `getLatestCommit`, `getRepo` (with `since`),
//! `getRecord`, `getBlocks`, `getBlob`. An account its own server has withdrawn (deactivated,
//! taken down, suspended, deleted) is refused with the lexicons' error names, except to its
//! owner ([`open_repo`]). `getRepo` and `getBlob` are large answers: each takes a slot
//! ([`super::limits::Slots`]) that its body holds until sent.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cid::Cid;
use rusqlite::Connection;

use super::params::Params;
use super::{auth, blob_answer, car, internal, parse_cid, with_slot, Ctx, Refusal};
use crate::repo::car::CarWriter;
use crate::repo::mst::BlockSource;
use crate::repo::proof;
use crate::store::StoreError;

/// A held copy of an account, as the store has it.
pub(super) struct Held {
    pub(super) id: i64,
    pub(super) head: Cid,
    pub(super) rev: String,
    /// What the account's own server last said of it (`None`: active).
    pub(super) status: Option<String>,
    /// The signing key its commits were last verified with (`did:key`).
    pub(super) key: Option<String>,
}

/// The held copy of `did` (`None`: not held, or never synced).
pub(super) fn held_repo(c: &Connection, did: &str) -> Result<Option<Held>, StoreError> {
    use rusqlite::OptionalExtension;
    let row = c
        .query_row(
            "SELECT id, head, rev, upstream_status, signing_key FROM repos
             WHERE head IS NOT NULL AND did = ?1",
            [did],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            },
        )
        .optional()?;
    Ok(row.and_then(|(id, head, rev, status, key)| {
        Some(Held {
            id,
            head: Cid::try_from(head.as_slice()).ok()?,
            rev: rev.unwrap_or_default(),
            status: status.filter(|s| s != "active"),
            key,
        })
    }))
}

pub(super) fn repo_not_found(did: &str) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "RepoNotFound",
        format!("this node serves no copy of {did}"),
    )
}

/// The refusal for an account its own server has withdrawn (`None`: it may be served).
pub(super) fn withdrawn(did: &str, status: Option<&str>) -> Option<Refusal> {
    let (name, words) = match status? {
        "deactivated" => ("RepoDeactivated", "deactivated"),
        "takendown" => ("RepoTakendown", "taken down"),
        "suspended" => ("RepoSuspended", "suspended"),
        "deleted" => ("RepoNotFound", "deleted"),
        _ => ("RepoNotFound", "not active"),
    };
    Some(Refusal::new(
        StatusCode::BAD_REQUEST,
        name,
        format!(
            "{did} is {words} on its own server, so this node does not show it; its owner can \
             still fetch this copy with service auth"
        ),
    ))
}

/// The held copy of `did` if the caller may read it with `lxm`: anyone while the account is
/// active; once its server has withdrawn it, only its owner, by service auth.
pub(super) async fn open_repo(
    ctx: &Ctx,
    did: &str,
    headers: &HeaderMap,
    lxm: &str,
) -> Result<Held, Refusal> {
    let d = did.to_string();
    let (held, node_did) = ctx
        .store
        .read(move |c| -> Result<_, StoreError> {
            use rusqlite::OptionalExtension;
            let node_did: Option<String> = c
                .query_row("SELECT did FROM account WHERE id = 1", [], |r| r.get(0))
                .optional()?;
            Ok((held_repo(c, &d)?, node_did))
        })
        .await
        .map_err(internal)?;
    let held = held.ok_or_else(|| repo_not_found(did))?;
    let Some(refusal) = withdrawn(did, held.status.as_deref()) else {
        return Ok(held);
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::bearer);
    let Some(token) = token else {
        return Err(refusal);
    };
    let unauthorized = |why: String| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "AuthenticationRequired",
            format!("not the owner's service auth: {why}"),
        )
    };
    let (Some(audience), Some(key)) = (node_did, held.key.as_deref()) else {
        return Err(unauthorized(
            "this node has no account signed in to be addressed as, or holds no key for the \
             account"
                .into(),
        ));
    };
    let want = auth::Expect {
        did,
        key,
        audience: &audience,
        lxm,
        now: chrono::Utc::now().timestamp(),
    };
    auth::check(token, &want).map_err(unauthorized)?;
    Ok(held)
}

pub(super) async fn latest_commit(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, Refusal> {
    let did = params.required("did")?;
    let held = open_repo(&ctx, did, &headers, "com.atproto.sync.getLatestCommit").await?;
    Ok(Json(serde_json::json!({ "cid": held.head.to_string(), "rev": held.rev })).into_response())
}

pub(super) async fn get_repo(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, Refusal> {
    let did = params.required("did")?.to_string();
    let since = params.since()?;
    // The slot first: requests waiting for one hold no store connection.
    let slot = ctx.slots.take().await?;
    let held = open_repo(&ctx, &did, &headers, "com.atproto.sync.getRepo").await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(car::QUEUED_CHUNKS);
    let store = ctx.store.clone();
    tokio::task::spawn_blocking(move || {
        car::send_repo_car(&store, &did, held.id, held.head, since.as_deref(), tx)
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok((
        [(header::CONTENT_TYPE, "application/vnd.ipld.car")],
        Body::from_stream(with_slot(stream, slot)),
    )
        .into_response())
}

pub(super) async fn get_record(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, Refusal> {
    let did = params.required("did")?.to_string();
    let key = format!(
        "{}/{}",
        params.required("collection")?,
        params.required("rkey")?
    );
    if !crate::repo::mst::valid_key(key.as_bytes()) {
        return Err(Refusal::invalid("not a valid collection and record key"));
    }
    let held = open_repo(&ctx, &did, &headers, "com.atproto.sync.getRecord").await?;
    let car = ctx
        .store
        .read(move |c| -> Result<Result<Vec<u8>, String>, StoreError> {
            Ok(record_proof(c, held.id, held.head, &key))
        })
        .await
        .map_err(internal)?;
    car_answer(&did, car)
}

/// The proof CAR of `key` in the held state `head`: the commit, the covering path, the record.
fn record_proof(c: &Connection, repo_id: i64, head: Cid, key: &str) -> Result<Vec<u8>, String> {
    let mut src = crate::export::StoreSource { conn: c, repo_id };
    let commit_bytes = src
        .get_block(&head)
        .map_err(|e| e.to_string())?
        .ok_or("commit missing")?;
    let commit = crate::repo::commit::Commit::decode(&commit_bytes).map_err(|e| e.to_string())?;
    let path =
        proof::covering_path(&mut src, commit.data, key.as_bytes()).map_err(|e| e.to_string())?;
    let mut car = CarWriter::new(Vec::new(), vec![head]).map_err(|e| e.to_string())?;
    car.write_block(&head, &commit_bytes)
        .map_err(|e| e.to_string())?;
    for cid in path.nodes.iter().chain(path.value.iter()) {
        let bytes = src
            .get_block(cid)
            .map_err(|e| e.to_string())?
            .ok_or("block missing")?;
        car.write_block(cid, &bytes).map_err(|e| e.to_string())?;
    }
    car.finish().map_err(|e| e.to_string())
}

/// A small CAR made whole in memory, or the refusal for a damaged copy.
fn car_answer(did: &str, car: Result<Vec<u8>, String>) -> Result<Response, Refusal> {
    match car {
        Ok(bytes) => {
            Ok(([(header::CONTENT_TYPE, "application/vnd.ipld.car")], bytes).into_response())
        }
        Err(e) => {
            tracing::error!(%did, "stored copy damaged: {e}");
            Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "the stored copy is damaged",
            ))
        }
    }
}

/// Blocks a `getBlocks` call may ask for at once (a CAR of at most this many blocks, each
/// within the store's block size cap).
const MAX_BLOCKS_ASKED: usize = 1000;

pub(super) async fn get_blocks(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, Refusal> {
    let did = params.required("did")?.to_string();
    let mut cids = Vec::new();
    for text in params.list("cids", MAX_BLOCKS_ASKED)? {
        cids.push(parse_cid(text).ok_or_else(|| Refusal::invalid(format!("not a CID: {text}")))?);
    }
    let held = open_repo(&ctx, &did, &headers, "com.atproto.sync.getBlocks").await?;
    let found = ctx
        .store
        .read(move |c| -> Result<Result<Vec<u8>, Cid>, StoreError> {
            let mut car = Vec::new();
            let mut writer = match CarWriter::new(&mut car, Vec::new()) {
                Ok(w) => w,
                Err(e) => return Err(StoreError::Io(e)),
            };
            for cid in &cids {
                let Some(bytes) = crate::export::get_block(c, held.id, cid)? else {
                    return Ok(Err(*cid));
                };
                writer.write_block(cid, &bytes).map_err(StoreError::Io)?;
            }
            writer.finish().map_err(StoreError::Io)?;
            Ok(Ok(car))
        })
        .await
        .map_err(internal)?;
    match found {
        Ok(car) => car_answer(&did, Ok(car)),
        Err(missing) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "BlockNotFound",
            format!("this node holds no block {missing} of {did}"),
        )),
    }
}

pub(super) async fn get_blob(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, Refusal> {
    let did = params.required("did")?.to_string();
    let cid = parse_cid(params.required("cid")?).ok_or_else(|| Refusal::invalid("not a CID"))?;
    let held = open_repo(&ctx, &did, &headers, "com.atproto.sync.getBlob").await?;
    blob_answer(&ctx, cid, Some(held.id)).await?.ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "BlobNotFound",
            "this node holds no such blob",
        )
    })
}
