//! Serving: what this node shows to peers and to the people it backs up.
//!
//! - RASL (`GET`/`HEAD /.well-known/rasl/<cid>`): the bytes of a block or blob of
//!   an account this node replicates, for peers that check it holds them.
//! - The read-only sync API of the accounts held, as the lexicons shape it (`xrpc.rs`,
//!   `list.rs`): `getLatestCommit`, `getRepo` (with `since`: only what was written after that
//!   revision, `since.rs`), `getRecord` (proofs of presence and absence, as the reference
//!   client checks them), `getBlocks`, `getBlob` (with the type the record declares),
//!   `listBlobs`, `listRepos`, `getRepoStatus`, so a friend can take their data back with
//!   standard tools and peers can sync from peers.
//!
//! Nothing else: no files by path, nothing written. CIDs are parsed strictly (a path that is
//! not a CID never reaches the store); Range requests are refused; each client address has a
//! request budget; responses are capped by the store's block and blob limits; every answer
//! carries `Content-Security-Policy: default-src 'none'; sandbox` and `nosniff`. An account
//! whose own server says it is deactivated, taken down, suspended or deleted is not served to
//! the public (mirror etiquette: `RepoDeactivated`, `RepoTakendown`, …); its owner still takes
//! the copy back with service auth signed by the account's key (`auth.rs`).
//!
//! Bounds (`limits.rs`, `conn.rs`, `car.rs`): whole repos stream from the store a block at a
//! time (memory follows the tree's depth, not its size); at most
//! [`ServeConfig::large_answers`] repos and blobs are sent at once, one client (an IPv4 address
//! or an IPv6 /64) holding at most half of them, past which a request is answered `503` with
//! `Retry-After`; at most [`ServeConfig::concurrent_requests`] requests are worked on at once;
//! a client has a set time to send its request's headers, and every answer must be sent whole
//! within a floor plus its size at a minimum rate, else the connection is reset and its slot
//! freed. HTTP/1.1 and HTTP/2 without TLS are served alike. Every refusal this server makes,
//! whatever its cause (a missing or repeated parameter, a method, a path), is XRPC JSON
//! `{"error", "message"}`; a request hyper cannot parse at all (a broken request line,
//! oversized headers) is refused by hyper itself with a bare status, before any handler runs.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cid::Cid;
use futures_util::{Stream, StreamExt};
use rusqlite::{Connection, OptionalExtension};

use crate::repo::{DAG_CBOR, RAW, SHA2_256};
use crate::store::{Store, StoreError};

mod auth;
mod car;
mod conn;
mod digests;
mod limits;
mod list;
mod params;
mod since;
mod xrpc;

pub use digests::MAX_ASKED as MAX_DIGESTS_ASKED;

use limits::{Limiter, Slot, Slots};

/// Limits of the server.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Requests each client address may make per second, on average.
    pub requests_per_second: f64,
    /// Requests a client may make in a burst.
    pub burst: f64,
    /// Time a client has to send a request's headers, counted from when the server waits for
    /// them: also how long a kept-alive connection may sit idle.
    pub header_read_timeout: Duration,
    /// Time an answer may wait for the client to take more of it before the connection is
    /// closed.
    pub send_timeout: Duration,
    /// Large answers (whole repos, blobs) sent at once, from all clients together.
    pub large_answers: usize,
    /// How long a request for a large answer waits for a free slot before it is told to come
    /// back (`503` with `Retry-After`). One client (an IPv4 address, an IPv6 /64) holds at most
    /// half of the slots (at least one); past that it is told to come back at once.
    pub large_answer_wait: Duration,
    /// Requests being worked on at once, from all clients together, until their answer starts
    /// (a large answer's body is then bounded by the slots): past them a request is answered
    /// `503` with `Retry-After`.
    pub concurrent_requests: usize,
    /// Every answer may take this long to be taken whole, plus its length at
    /// [`ServeConfig::answer_min_rate`] (counted from its request): past that its connection is
    /// reset, which frees a large answer's slot from a client that reads just fast enough to
    /// escape [`ServeConfig::send_timeout`] (or, on HTTP/2, keeps its window shut).
    pub answer_time_floor: Duration,
    /// Bytes a second an answer is sent at, at least, after [`ServeConfig::answer_time_floor`]
    /// (0: no deadline).
    pub answer_min_rate: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            requests_per_second: 20.0,
            burst: 100.0,
            header_read_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
            large_answers: 8,
            large_answer_wait: Duration::from_secs(2),
            concurrent_requests: 64,
            answer_time_floor: Duration::from_secs(60),
            answer_min_rate: 32 * 1024,
        }
    }
}

#[derive(Clone)]
struct Ctx {
    store: Store,
    blob_dir: PathBuf,
    limiter: Arc<Mutex<Limiter>>,
    slots: Slots,
    /// Requests being worked on ([`ServeConfig::concurrent_requests`]).
    requests: Arc<tokio::sync::Semaphore>,
}

/// The routes. [`serve`] is how the node serves them (with its connection time limits); the
/// router alone may be given to `axum::serve` with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(store: Store, blob_dir: PathBuf, config: ServeConfig) -> Router {
    let ctx = Ctx {
        store,
        blob_dir,
        slots: Slots::new(config.large_answers, config.large_answer_wait),
        requests: Arc::new(tokio::sync::Semaphore::new(config.concurrent_requests)),
        limiter: Arc::new(Mutex::new(Limiter::new(config))),
    };
    Router::new()
        .route("/.well-known/rasl/{cid}", get(rasl))
        .route(
            "/xrpc/com.atproto.sync.getLatestCommit",
            get(xrpc::latest_commit),
        )
        .route("/xrpc/com.atproto.sync.getRepo", get(xrpc::get_repo))
        .route("/xrpc/com.atproto.sync.getRecord", get(xrpc::get_record))
        .route("/xrpc/com.atproto.sync.getBlob", get(xrpc::get_blob))
        .route("/xrpc/com.atproto.sync.getBlocks", get(xrpc::get_blocks))
        .route("/xrpc/com.atproto.sync.listBlobs", get(list::list_blobs))
        .route("/xrpc/com.atproto.sync.listRepos", get(list::list_repos))
        .route(
            "/xrpc/com.atproto.sync.getRepoStatus",
            get(list::repo_status),
        )
        .route("/xrpc/org.p2pds.sync.getDigests", get(digests::get_digests))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(ctx.clone(), guard))
        .with_state(ctx)
}

/// Serves on `listener` until `shutdown` resolves, then lets the connections in progress
/// finish (each within the time limits of `config`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    blob_dir: PathBuf,
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(store, blob_dir, config.clone());
    conn::accept_loop(listener, app, &config, shutdown).await
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

/// A refusal, answered as XRPC JSON `{"error": name, "message": message}`.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    name: &'static str,
    message: String,
    /// Whether to tell the client when to ask again (`Retry-After`).
    retry_after: bool,
}

/// What a client told to come back later waits, in seconds.
const RETRY_AFTER_SECONDS: &str = "1";

impl Refusal {
    fn new(status: StatusCode, name: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            name,
            message: message.into(),
            retry_after: false,
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidRequest", message)
    }

    fn retry_later(self) -> Self {
        Self {
            retry_after: true,
            ..self
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.name, "message": self.message });
        let mut resp = (self.status, Json(body)).into_response();
        if self.retry_after {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        resp
    }
}

/// Rate limit, read-only methods, no Range, a bound on requests worked on at once, security
/// headers on everything. The request is answered knowing its client ([`limits::CLIENT`]).
async fn guard(State(ctx): State<Ctx>, req: Request<Body>, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let allowed = ctx.limiter.lock().map(|mut l| l.allow(ip)).unwrap_or(false);
    let resp = if !allowed {
        Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RateLimitExceeded",
            "too many requests: slow down",
        )
        .retry_later()
        .into_response()
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "this server is read-only",
        )
        .into_response()
    } else if req.headers().contains_key(header::RANGE) {
        Refusal::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "RangeNotSupported",
            "ranges are not served: ask for the whole block",
        )
        .into_response()
    } else if let Ok(_working) = ctx.requests.clone().try_acquire_owned() {
        limits::CLIENT.scope(ip, next.run(req)).await
    } else {
        limits::busy("this node is answering as many requests as it can: try again shortly")
            .into_response()
    };
    secure(resp)
}

async fn not_found() -> Refusal {
    Refusal::new(StatusCode::NOT_FOUND, "NotFound", "nothing is served here")
}

/// A CID this server could hold: SHA-256, DAG-CBOR or raw.
pub fn parse_cid(text: &str) -> Option<Cid> {
    if text.len() > 128 || !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let cid = Cid::try_from(text).ok()?;
    (cid.hash().code() == SHA2_256 && (cid.codec() == DAG_CBOR || cid.codec() == RAW))
        .then_some(cid)
}

fn internal(e: StoreError) -> Refusal {
    tracing::error!("serve: {e}");
    Refusal::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "the store could not be read",
    )
}

/// Accounts served: replicated, and not withdrawn by their own server.
const SERVED: &str = "SELECT id FROM repos WHERE head IS NOT NULL \
     AND coalesce(upstream_status, 'active') = 'active'";

async fn rasl(
    State(ctx): State<Ctx>,
    cid: Result<Path<String>, PathRejection>,
) -> Result<Response, Refusal> {
    let Some(cid) = cid.ok().and_then(|Path(cid)| parse_cid(&cid)) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "InvalidCid",
            "not a CID",
        ));
    };
    let block = ctx
        .store
        .read(move |c| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(c.query_row(
                &format!(
                    "SELECT data FROM blocks WHERE repo_id IN ({SERVED}) AND cid = ?1 LIMIT 1"
                ),
                [cid.to_bytes()],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
        .map_err(internal)?;
    if let Some(bytes) = block {
        return Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response());
    }
    blob_answer(&ctx, cid, None).await?.ok_or_else(|| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "this node holds no such block",
        )
    })
}

/// The file of a stored blob, and the type its account's records declare for it: of any served
/// account (`repo` `None`: RASL), or of the one held copy `repo`.
fn held_blob(
    c: &Connection,
    blob_dir: &std::path::Path,
    cid: &str,
    repo: Option<i64>,
) -> Result<Option<(PathBuf, Option<String>)>, StoreError> {
    let held: Option<Option<String>> = match repo {
        None => c
            .query_row(
                &format!(
                    "SELECT NULL FROM blobs WHERE repo_id IN ({SERVED})
                     AND cid = ?1 AND state = 'stored' LIMIT 1"
                ),
                [cid],
                |r| r.get(0),
            )
            .optional()?,
        Some(repo_id) => c
            .query_row(
                "SELECT (SELECT mime FROM blob_refs r WHERE r.repo_id = b.repo_id AND r.cid = b.cid)
                 FROM blobs b WHERE b.repo_id = ?1 AND b.cid = ?2 AND b.state = 'stored'",
                rusqlite::params![repo_id, cid],
                |r| r.get(0),
            )
            .optional()?,
    };
    Ok(held.map(|mime| (crate::store::blob_path(blob_dir, cid), mime)))
}

/// A held blob streamed from its file in a slot of its own (`None`: not held), or the refusal.
/// Sent with the type its record declares when one is known and well-formed, else as bytes.
async fn blob_answer(ctx: &Ctx, cid: Cid, repo: Option<i64>) -> Result<Option<Response>, Refusal> {
    let blob_dir = ctx.blob_dir.clone();
    let held = ctx
        .store
        .read(move |c| held_blob(c, &blob_dir, &cid.to_string(), repo))
        .await
        .map_err(internal)?;
    let Some((path, mime)) = held else {
        return Ok(None);
    };
    let mime = mime
        .filter(|m| crate::sync::blobrefs::sane_mime(m))
        .unwrap_or_else(|| "application/octet-stream".to_string());
    let slot = ctx.slots.take().await?;
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(internal(e.into())),
    };
    let len = file.metadata().await.map_err(|e| internal(e.into()))?.len();
    let stream = futures_util::stream::try_unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0u8; 64 * 1024];
        let n = file.read(&mut chunk).await?;
        chunk.truncate(n);
        Ok::<_, std::io::Error>((n > 0).then(|| (bytes::Bytes::from(chunk), file)))
    });
    Ok(Some(
        (
            [
                (header::CONTENT_TYPE, mime),
                (header::CONTENT_LENGTH, len.to_string()),
            ],
            Body::from_stream(with_slot(stream, slot)),
        )
            .into_response(),
    ))
}

/// `stream`, holding `slot` until it is sent whole or dropped (the client gone).
fn with_slot<S: Stream + Send + 'static>(
    stream: S,
    slot: Slot,
) -> impl Stream<Item = S::Item> + Send + 'static {
    stream.map(move |item| {
        let _held = &slot;
        item
    })
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
}
