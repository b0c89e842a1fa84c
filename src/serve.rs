//! Serving: what this node shows to peers and to the people it backs up.
//!
//! - RASL (`GET`/`HEAD /.well-known/rasl/<cid>`): the bytes of a block or blob of
//!   an account this node replicates, for peers that check it holds them.
//! - `com.atproto.sync.getLatestCommit`, `getRepo`, `getRecord`, `getBlob` for
//!   replicated accounts, so a friend can pull their own data back and peers can
//!   sync from peers.
//!
//! Nothing else: no listing, no files by path, read-only. CIDs are parsed
//! strictly (a path that is not a CID never reaches the store); Range requests
//! are refused; each client address has a request budget; responses are capped
//! by the store's block and blob limits; every answer carries
//! `Content-Security-Policy: default-src 'none'; sandbox` and `nosniff`. An
//! account whose own server says it is deactivated, taken down or deleted is
//! not served (mirror etiquette); the copy is still kept for its owner.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cid::Cid;
use rusqlite::{Connection, OptionalExtension};
use serde::Deserialize;

use crate::repo::car::CarWriter;
use crate::repo::mst::BlockSource;
use crate::repo::{proof, DAG_CBOR, RAW, SHA2_256};
use crate::store::{Store, StoreError};

/// Limits of the server.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Requests each client address may make per second, on average.
    pub requests_per_second: f64,
    /// Requests a client may make in a burst.
    pub burst: f64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            requests_per_second: 20.0,
            burst: 100.0,
        }
    }
}

#[derive(Clone)]
struct Ctx {
    store: Store,
    blob_dir: PathBuf,
    limiter: Arc<Mutex<Limiter>>,
}

/// A token bucket per client address (bounded: the oldest are forgotten).
struct Limiter {
    config: ServeConfig,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

const MAX_TRACKED_CLIENTS: usize = 10_000;

impl Limiter {
    fn allow(&mut self, ip: IpAddr) -> bool {
        let now = Instant::now();
        if self.buckets.len() >= MAX_TRACKED_CLIENTS && !self.buckets.contains_key(&ip) {
            let full = self.config.burst;
            let rate = self.config.requests_per_second;
            // Forget clients whose buckets have refilled: they lose nothing.
            self.buckets
                .retain(|_, (tokens, at)| *tokens + at.elapsed().as_secs_f64() * rate < full);
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((self.config.burst, now));
        *tokens = (*tokens
            + now.duration_since(*at).as_secs_f64() * self.config.requests_per_second)
            .min(self.config.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The router, for `axum::serve` with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(store: Store, blob_dir: PathBuf, config: ServeConfig) -> Router {
    let ctx = Ctx {
        store,
        blob_dir,
        limiter: Arc::new(Mutex::new(Limiter {
            config,
            buckets: HashMap::new(),
        })),
    };
    Router::new()
        .route("/.well-known/rasl/{cid}", get(rasl))
        .route("/xrpc/com.atproto.sync.getLatestCommit", get(latest_commit))
        .route("/xrpc/com.atproto.sync.getRepo", get(get_repo))
        .route("/xrpc/com.atproto.sync.getRecord", get(get_record))
        .route("/xrpc/com.atproto.sync.getBlob", get(get_blob))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(ctx.clone(), guard))
        .with_state(ctx)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    blob_dir: PathBuf,
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(store, blob_dir, config).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn error(status: StatusCode, name: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": name, "message": message })),
    )
        .into_response()
}

/// Rate limit, read-only methods, no Range, security headers on everything.
async fn guard(State(ctx): State<Ctx>, req: Request<Body>, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let allowed = ctx.limiter.lock().map(|mut l| l.allow(ip)).unwrap_or(false);
    let resp = if !allowed {
        let mut resp = error(
            StatusCode::TOO_MANY_REQUESTS,
            "RateLimitExceeded",
            "too many requests: slow down",
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        resp
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "this server is read-only",
        )
    } else if req.headers().contains_key(header::RANGE) {
        error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "RangeNotSupported",
            "ranges are not served: ask for the whole block",
        )
    } else {
        next.run(req).await
    };
    secure(resp)
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "NotFound", "nothing is served here")
}

/// A CID this server could hold: SHA-256, DAG-CBOR or raw.
fn parse_cid(text: &str) -> Option<Cid> {
    if text.len() > 128 || !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let cid = Cid::try_from(text).ok()?;
    (cid.hash().code() == SHA2_256 && (cid.codec() == DAG_CBOR || cid.codec() == RAW))
        .then_some(cid)
}

fn internal(e: StoreError) -> Response {
    tracing::error!("serve: {e}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "the store could not be read",
    )
}

/// Accounts served: replicated, and not withdrawn by their own server.
const SERVED: &str = "SELECT id FROM repos WHERE head IS NOT NULL \
     AND coalesce(upstream_status, 'active') = 'active'";

async fn rasl(State(ctx): State<Ctx>, Path(cid): Path<String>) -> Response {
    let Some(cid) = parse_cid(&cid) else {
        return error(StatusCode::BAD_REQUEST, "InvalidCid", "not a CID");
    };
    let blob_dir = ctx.blob_dir.clone();
    let found = ctx
        .store
        .read(move |c| -> Result<Option<Vec<u8>>, StoreError> {
            let block: Option<Vec<u8>> = c
                .query_row(
                    &format!(
                        "SELECT data FROM blocks WHERE repo_id IN ({SERVED}) AND cid = ?1 LIMIT 1"
                    ),
                    [cid.to_bytes()],
                    |r| r.get(0),
                )
                .optional()?;
            if block.is_some() {
                return Ok(block);
            }
            blob_bytes(c, &blob_dir, &cid.to_string(), None)
        })
        .await;
    match found {
        Ok(Some(bytes)) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "this node holds no such block",
        ),
        Err(e) => internal(e),
    }
}

/// A stored blob of a served account (of `did` only, when given).
fn blob_bytes(
    c: &Connection,
    blob_dir: &std::path::Path,
    cid: &str,
    did: Option<&str>,
) -> Result<Option<Vec<u8>>, StoreError> {
    let held: Option<i64> = c
        .query_row(
            &format!(
                "SELECT 1 FROM blobs WHERE repo_id IN ({SERVED} AND (?2 IS NULL OR did = ?2))
                 AND cid = ?1 AND state = 'stored' LIMIT 1"
            ),
            rusqlite::params![cid, did],
            |r| r.get(0),
        )
        .optional()?;
    if held.is_none() {
        return Ok(None);
    }
    match std::fs::read(crate::store::blob_path(blob_dir, cid)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct DidQuery {
    did: String,
}

/// The served account's id and head commit.
fn served_repo(c: &Connection, did: &str) -> Result<Option<(i64, Cid, String)>, StoreError> {
    let row: Option<(i64, Vec<u8>, String)> = c
        .query_row(
            &format!("SELECT id, head, rev FROM repos WHERE id IN ({SERVED}) AND did = ?1"),
            [did],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(row.and_then(|(id, head, rev)| Cid::try_from(head.as_slice()).ok().map(|h| (id, h, rev))))
}

fn repo_not_found(did: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "RepoNotFound",
        &format!("this node serves no copy of {did}"),
    )
}

async fn latest_commit(State(ctx): State<Ctx>, Query(q): Query<DidQuery>) -> Response {
    let did = q.did.clone();
    match ctx.store.read(move |c| served_repo(c, &did)).await {
        Ok(Some((_, head, rev))) => {
            Json(serde_json::json!({ "cid": head.to_string(), "rev": rev })).into_response()
        }
        Ok(None) => repo_not_found(&q.did),
        Err(e) => internal(e),
    }
}

/// Writes into a channel from a blocking thread: the CAR streams out as it is made.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

async fn get_repo(State(ctx): State<Ctx>, Query(q): Query<DidQuery>) -> Response {
    let did = q.did.clone();
    match ctx.store.read(move |c| served_repo(c, &did)).await {
        Ok(Some(_)) => {}
        Ok(None) => return repo_not_found(&q.did),
        Err(e) => return internal(e),
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let store = ctx.store.clone();
    let did = q.did.clone();
    tokio::task::spawn_blocking(move || {
        let result = store.reader().map_err(|e| e.to_string()).and_then(|c| {
            let mut out = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::new(),
            };
            crate::export::write_car(&c, &did, &mut out).map_err(|e| e.to_string())?;
            std::io::Write::flush(&mut out).map_err(|e| e.to_string())
        });
        if let Err(e) = result {
            tracing::warn!(%did, "getRepo stopped: {e}");
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (
        [(header::CONTENT_TYPE, "application/vnd.ipld.car")],
        Body::from_stream(stream),
    )
        .into_response()
}

#[derive(Deserialize)]
struct RecordQuery {
    did: String,
    collection: String,
    rkey: String,
}

async fn get_record(State(ctx): State<Ctx>, Query(q): Query<RecordQuery>) -> Response {
    let key = format!("{}/{}", q.collection, q.rkey);
    if !crate::repo::mst::valid_key(key.as_bytes()) {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "not a valid collection and record key",
        );
    }
    let did = q.did.clone();
    let car = ctx
        .store
        .read(
            move |c| -> Result<Option<Result<Vec<u8>, String>>, StoreError> {
                let Some((repo_id, head, _)) = served_repo(c, &did)? else {
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
        .await;
    match car {
        Ok(Some(Ok(bytes))) => {
            ([(header::CONTENT_TYPE, "application/vnd.ipld.car")], bytes).into_response()
        }
        Ok(Some(Err(e))) => {
            tracing::error!(did = %q.did, "stored copy damaged: {e}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "the stored copy is damaged",
            )
        }
        Ok(None) => repo_not_found(&q.did),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct BlobQuery {
    did: String,
    cid: String,
}

async fn get_blob(State(ctx): State<Ctx>, Query(q): Query<BlobQuery>, _h: HeaderMap) -> Response {
    let Some(cid) = parse_cid(&q.cid) else {
        return error(StatusCode::BAD_REQUEST, "InvalidRequest", "not a CID");
    };
    let (did, blob_dir) = (q.did.clone(), ctx.blob_dir.clone());
    match ctx
        .store
        .read(move |c| blob_bytes(c, &blob_dir, &cid.to_string(), Some(&did)))
        .await
    {
        Ok(Some(bytes)) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Ok(None) => error(
            StatusCode::BAD_REQUEST,
            "BlobNotFound",
            "this node holds no such blob",
        ),
        Err(e) => internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_strict_cids_parse() {
        let good = crate::repo::cid_for_cbor(b"\xa0").to_string();
        assert!(parse_cid(&good).is_some());
        for bad in [
            "..",
            "../../etc/passwd",
            "%2e%2e",
            "bafy",
            "",
            "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
        ] {
            assert!(parse_cid(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn limiter_allows_a_burst_then_refuses() {
        let mut l = Limiter {
            config: ServeConfig {
                requests_per_second: 0.001,
                burst: 5.0,
            },
            buckets: HashMap::new(),
        };
        let ip = IpAddr::from([127, 0, 0, 1]);
        let allowed = (0..20).filter(|_| l.allow(ip)).count();
        assert_eq!(allowed, 5);
        assert!(
            l.allow(IpAddr::from([127, 0, 0, 2])),
            "another client has its own budget"
        );
    }
}
