//! The `com.atproto.sync` reads: `getLatestCommit`, `getRepo`, `getRecord`, `getBlob`, for
//! served accounts only. `getRepo` and `getBlob` are large answers: each takes a slot
//! ([`super::limits::Slots`]) that its body holds until sent.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cid::Cid;
use rusqlite::Connection;

use super::params::Params;
use super::{blob_answer, car, internal, parse_cid, with_slot, Ctx, Refusal, SERVED};
use crate::repo::car::CarWriter;
use crate::repo::mst::BlockSource;
use crate::repo::proof;
use crate::store::StoreError;

/// The served account's id and head commit.
fn served_repo(c: &Connection, did: &str) -> Result<Option<(i64, Cid, String)>, StoreError> {
    use rusqlite::OptionalExtension;
    let row: Option<(i64, Vec<u8>, String)> = c
        .query_row(
            &format!("SELECT id, head, rev FROM repos WHERE id IN ({SERVED}) AND did = ?1"),
            [did],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(row.and_then(|(id, head, rev)| Cid::try_from(head.as_slice()).ok().map(|h| (id, h, rev))))
}

fn repo_not_found(did: &str) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "RepoNotFound",
        format!("this node serves no copy of {did}"),
    )
}

/// The served account `did`: its id and head commit, and its rev.
async fn find_repo(ctx: &Ctx, did: &str) -> Result<(i64, Cid, String), Refusal> {
    let d = did.to_string();
    ctx.store
        .read(move |c| served_repo(c, &d))
        .await
        .map_err(internal)?
        .ok_or_else(|| repo_not_found(did))
}

pub(super) async fn latest_commit(
    State(ctx): State<Ctx>,
    params: Params,
) -> Result<Response, Refusal> {
    let (_, head, rev) = find_repo(&ctx, params.required("did")?).await?;
    Ok(Json(serde_json::json!({ "cid": head.to_string(), "rev": rev })).into_response())
}

pub(super) async fn get_repo(State(ctx): State<Ctx>, params: Params) -> Result<Response, Refusal> {
    let did = params.required("did")?.to_string();
    // The slot first: requests waiting for one hold no store connection.
    let slot = ctx.slots.take().await?;
    let (repo_id, head, _) = find_repo(&ctx, &did).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(car::QUEUED_CHUNKS);
    let store = ctx.store.clone();
    tokio::task::spawn_blocking(move || car::send_repo_car(&store, &did, repo_id, head, tx));
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok((
        [(header::CONTENT_TYPE, "application/vnd.ipld.car")],
        Body::from_stream(with_slot(stream, slot)),
    )
        .into_response())
}

pub(super) async fn get_record(
    State(ctx): State<Ctx>,
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
    let d = did.clone();
    let car = ctx
        .store
        .read(
            move |c| -> Result<Option<Result<Vec<u8>, String>>, StoreError> {
                let Some((repo_id, head, _)) = served_repo(c, &d)? else {
                    return Ok(None);
                };
                let mut src = crate::export::StoreSource { conn: c, repo_id };
                let mut build = || -> Result<Vec<u8>, String> {
                    let commit_bytes = src
                        .get_block(&head)
                        .map_err(|e| e.to_string())?
                        .ok_or("commit missing")?;
                    let commit = crate::repo::commit::Commit::decode(&commit_bytes)
                        .map_err(|e| e.to_string())?;
                    let path = proof::find_key(&mut src, commit.data, key.as_bytes())
                        .map_err(|e| e.to_string())?;
                    let mut car =
                        CarWriter::new(Vec::new(), vec![head]).map_err(|e| e.to_string())?;
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
                };
                Ok(Some(build()))
            },
        )
        .await
        .map_err(internal)?
        .ok_or_else(|| repo_not_found(&did))?;
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

pub(super) async fn get_blob(State(ctx): State<Ctx>, params: Params) -> Result<Response, Refusal> {
    let did = params.required("did")?.to_string();
    let cid = parse_cid(params.required("cid")?).ok_or_else(|| Refusal::invalid("not a CID"))?;
    blob_answer(&ctx, cid, Some(did)).await?.ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "BlobNotFound",
            "this node holds no such blob",
        )
    })
}
