//! `org.p2pds.sync.getDigests`: keyed digests of subtrees and blocks of a copy this node holds
//! (`crate::reconcile`), for a friend's whole-copy check (layer 2). The root of a large copy
//! takes one pass over all of it, so an answer holds a large-answer slot, and each block is
//! hashed at most once per request however often it is named.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cid::Cid;

use super::params::Params;
use super::xrpc::open_repo;
use super::{internal, parse_cid, Ctx, Refusal};

/// Subtrees and blocks named in one request, at most.
pub const MAX_ASKED: usize = 400;
/// The nonce's length bounds, in characters.
const NONCE: std::ops::RangeInclusive<usize> = 16..=128;

fn cids(params: &Params, name: &str, max: usize) -> Result<Vec<Cid>, Refusal> {
    params
        .optional_list(name, max)?
        .iter()
        .map(|t| parse_cid(t).ok_or_else(|| Refusal::invalid(format!("not a CID: {t}"))))
        .collect()
}

pub(super) async fn get_digests(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, Refusal> {
    let did = params.required("did")?.to_string();
    let nonce = params.required("nonce")?.to_string();
    if !NONCE.contains(&nonce.len()) {
        return Err(Refusal::invalid(format!(
            "the nonce must be {} to {} characters",
            NONCE.start(),
            NONCE.end()
        )));
    }
    let trees = cids(&params, "trees", MAX_ASKED)?;
    let blocks = cids(&params, "blocks", MAX_ASKED)?;
    if trees.is_empty() && blocks.is_empty() {
        return Err(Refusal::invalid(
            "name at least one subtree (`trees`) or block (`blocks`)",
        ));
    }
    if trees.len() + blocks.len() > MAX_ASKED {
        return Err(Refusal::invalid(format!(
            "ask for at most {MAX_ASKED} subtrees and blocks at once"
        )));
    }
    let _slot = ctx.slots.take().await?;
    let held = open_repo(&ctx, &did, &headers, "org.p2pds.sync.getDigests").await?;
    let (trees, blocks) = ctx
        .store
        .read(move |c| crate::reconcile::digests(c, held.id, nonce.as_bytes(), &trees, &blocks))
        .await
        .map_err(internal)?;
    let hex = |d: &[crate::reconcile::Digest32]| -> Vec<Option<String>> {
        d.iter()
            .map(|d| d.map(|d| d.iter().map(|b| format!("{b:02x}")).collect()))
            .collect()
    };
    Ok(Json(serde_json::json!({ "trees": hex(&trees), "blocks": hex(&blocks) })).into_response())
}
