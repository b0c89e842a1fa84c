//! Following a host's event stream (`com.atproto.sync.subscribeRepos`): one WebSocket per PDS
//! (or one to the relay the user names, [`FollowConfig::relay`]), frames handed one at a time to a [`Handler`], the cursor kept
//! in the store so a restart resumes where it stopped, and reconnection with backoff and
//! jitter when the stream ends, stalls or fails.
//!
//! What a frame means (decoding it, verifying a commit, applying it) is the handler's business:
//! this module is the transport, bounded like every read of this node: a frame larger than
//! [`FollowConfig::max_frame`] ends the connection, a connection that neither sends nor answers
//! a ping within two [`FollowConfig::ping_every`] is dropped, connecting has a deadline, and the
//! wait between tries doubles up to a cap.

use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

mod capture;
mod cursor;

pub use capture::{Capture, Captured, Notify};
pub use cursor::{host_state, hosts_to_follow, how_followed, lag_seconds, live_hosts, HostState};

/// Limits and timings of a follower.
#[derive(Clone, Debug)]
pub struct FollowConfig {
    /// The largest frame taken (the protocol caps a commit's blocks at 2 MiB).
    pub max_frame: usize,
    /// How often a quiet connection is pinged; one silent for two of these is dropped.
    pub ping_every: Duration,
    /// The deadline for connecting (TCP, TLS and the WebSocket handshake).
    pub connect_timeout: Duration,
    /// The first wait before trying again; it doubles after each failure…
    pub backoff_floor: Duration,
    /// …up to this.
    pub backoff_cap: Duration,
    /// How often the cursor is written to the store while events flow.
    pub save_every: Duration,
    /// Follow this relay's stream instead of each server's (`None`: each server's). A relay
    /// carries every account it crawls; those not backed up here are passed over.
    pub relay: Option<String>,
}

impl Default for FollowConfig {
    fn default() -> Self {
        Self {
            max_frame: 5 * 1024 * 1024,
            ping_every: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            backoff_floor: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(5 * 60),
            save_every: Duration::from_secs(1),
            relay: None,
        }
    }
}

/// What a handler made of one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Done with (applied, or not ours and passed over): the stream's position moves to `seq`.
    Seq(i64),
    /// A frame without a sequence number (`#info`, an unknown type): the position stays.
    NoSeq,
    /// The host says the cursor is older than what it keeps (`#info OutdatedCursor`): what
    /// happened in between must be caught up by other means (`getRepo?since=`).
    Outdated,
    /// The host sent an error frame: the connection ends and is tried again later.
    HostError(String),
}

/// Takes the frames of one host, in order.
pub trait Handler: Send + Sync {
    fn handle(&self, host: &str, frame: Vec<u8>) -> impl Future<Output = Handled> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("{0} is not an http(s) or ws(s) address")]
    BadHost(String),
    #[error("could not connect to {host}: {why}")]
    Connect { host: String, why: String },
    #[error("connecting to {0} took too long")]
    ConnectTimeout(String),
    #[error("{host} sent a frame larger than {max} bytes")]
    TooLarge { host: String, max: usize },
    #[error("{0} went silent (no answer to a ping)")]
    Silent(String),
    #[error("{host} ended the stream: {why}")]
    Ended { host: String, why: String },
    #[error("{host}: {message}")]
    HostError { host: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The stream's address for `host` (`https://pds.example` → `wss://pds.example/xrpc/…`),
/// resuming after `cursor` when there is one.
pub fn stream_url(host: &str, cursor: Option<i64>) -> Result<String, FollowError> {
    let mut url = url::Url::parse(host).map_err(|_| FollowError::BadHost(host.to_string()))?;
    let scheme = match url.scheme() {
        "https" | "wss" => "wss",
        "http" | "ws" => "ws",
        _ => return Err(FollowError::BadHost(host.to_string())),
    };
    url.set_scheme(scheme)
        .map_err(|_| FollowError::BadHost(host.to_string()))?;
    url.set_path("/xrpc/com.atproto.sync.subscribeRepos");
    url.set_query(None);
    if let Some(cursor) = cursor {
        url.query_pairs_mut()
            .append_pair("cursor", &cursor.to_string());
    }
    Ok(url.to_string())
}

/// Follows `host` until `cancel`: connects, hands every frame to `handler`, keeps the cursor,
/// and after any failure waits (with backoff and jitter) and connects again.
pub async fn follow_host<H: Handler>(
    store: Store,
    host: String,
    handler: &H,
    config: FollowConfig,
    cancel: CancellationToken,
) {
    let mut wait = config.backoff_floor;
    while !cancel.is_cancelled() {
        let mut delivered = false;
        let result = follow_once(&store, &host, handler, &config, &cancel, &mut delivered).await;
        if delivered {
            // It was live and delivered events: the wait starts from the floor again (a
            // connection ends with an error however it ends: closed, reset, silent).
            wait = config.backoff_floor;
        }
        let error = result.err().map(|e| e.to_string());
        if cancel.is_cancelled() {
            break;
        }
        if let Some(e) = &error {
            tracing::info!(%host, "event stream: {e}; trying again in {wait:?}");
        }
        let _ = cursor::set_state(&store, &host, "reconnecting", error.as_deref()).await;
        let jitter = wait.mul_f64(rand::random::<f64>() * 0.25);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait + jitter) => {}
        }
        wait = (wait * 2).min(config.backoff_cap);
    }
    let _ = cursor::set_state(&store, &host, "stopped", None).await;
}

/// One connection, until it ends (why, unless cancelled); `delivered` is set once an event
/// was handled.
async fn follow_once<H: Handler>(
    store: &Store,
    host: &str,
    handler: &H,
    config: &FollowConfig,
    cancel: &CancellationToken,
    delivered: &mut bool,
) -> Result<(), FollowError> {
    let mut position = cursor::load(store, host).await?;
    let url = stream_url(host, position)?;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_frame))
        .max_frame_size(Some(config.max_frame));
    let connect = tokio_tungstenite::connect_async_with_config(&url, Some(ws_config), false);
    let (mut ws, _) = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        r = tokio::time::timeout(config.connect_timeout, connect) => r
            .map_err(|_| FollowError::ConnectTimeout(host.to_string()))?
            .map_err(|e| FollowError::Connect { host: host.to_string(), why: e.to_string() })?,
    };
    cursor::set_state(store, host, "live", None).await?;
    let mut saved = position;
    let mut last_save = tokio::time::Instant::now();
    let mut ping = tokio::time::interval(config.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut heard = tokio::time::Instant::now();
    let outcome = loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => {
                let _ = ws.close(None).await;
                break Ok(());
            }
            _ = ping.tick() => {
                if heard.elapsed() >= config.ping_every * 2 {
                    break Err(FollowError::Silent(host.to_string()));
                }
                if heard.elapsed() >= config.ping_every {
                    let _ = ws.send(Message::Ping(Vec::new().into())).await;
                }
                continue;
            }
            msg = ws.next() => msg,
        };
        heard = tokio::time::Instant::now();
        let frame = match msg {
            None => break Err(ended(host, "closed")),
            Some(Err(e)) => break Err(read_error(host, e, config.max_frame)),
            Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
            Some(Ok(Message::Close(reason))) => {
                let why = reason.map(|r| r.reason.to_string()).unwrap_or_default();
                break Err(ended(host, if why.is_empty() { "closed" } else { &why }));
            }
            // Pings are answered by the library; text frames are not part of the protocol.
            Some(Ok(_)) => continue,
        };
        match handler.handle(host, frame).await {
            Handled::Seq(seq) => {
                position = Some(seq);
                *delivered = true;
            }
            Handled::NoSeq => {}
            Handled::Outdated => {
                tracing::warn!(%host, "the event stream no longer reaches back to the cursor");
            }
            Handled::HostError(message) => {
                break Err(FollowError::HostError {
                    host: host.to_string(),
                    message,
                })
            }
        }
        if position != saved && last_save.elapsed() >= config.save_every {
            cursor::save(store, host, position).await?;
            saved = position;
            last_save = tokio::time::Instant::now();
        }
    };
    if position != saved {
        cursor::save(store, host, position).await?;
    }
    outcome
}

fn ended(host: &str, why: &str) -> FollowError {
    FollowError::Ended {
        host: host.to_string(),
        why: why.to_string(),
    }
}

fn read_error(host: &str, e: tokio_tungstenite::tungstenite::Error, max: usize) -> FollowError {
    use tokio_tungstenite::tungstenite::error::CapacityError;
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Capacity(CapacityError::MessageTooLong { .. }) => FollowError::TooLarge {
            host: host.to_string(),
            max,
        },
        other => ended(host, &other.to_string()),
    }
}

#[cfg(test)]
mod tests;
