//! Connections: accepted here and served by hyper, HTTP/1.1 or HTTP/2 without TLS (h2c, with
//! prior knowledge), told apart by the first bytes (hyper-util's `auto`), with the time limits
//! that `axum::serve` does not set.
//!
//! - A client has [`ServeConfig::header_read_timeout`] to send a request's headers, counted
//!   from when the server starts waiting for them: a half-sent request, a connection that
//!   never sends one and a kept-alive connection left idle are all closed after it. (HTTP/1:
//!   hyper's header-read timeout; any connection, HTTP/2 too: one with no request in progress
//!   for that long is shut down.)
//! - A response that the client stops taking (no byte accepted by its socket for
//!   [`ServeConfig::send_timeout`]) ends the connection, which drops the answer being made and
//!   frees its slot.
//! - Each answer must be taken whole within [`ServeConfig::answer_time_floor`] plus its length at
//!   [`ServeConfig::answer_min_rate`], counted from its request; past that the connection is
//!   closed. This catches what the send timeout cannot: a client that takes a few bytes just
//!   before each timeout, and an HTTP/2 client that never opens its flow-control window (then
//!   nothing is even written).
//! - Shutdown: no new connections; each open one finishes its answers in progress and closes
//!   (the limits above bound how long that takes).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ServeConfig;

/// Streams an HTTP/2 client may have open at once on one connection.
const MAX_STREAMS: u32 = 16;

/// Accepts connections on `listener` and serves `app` on them until `shutdown` resolves,
/// then waits for the open connections to finish.
pub(super) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    config: &ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS);
    let stopping = CancellationToken::new();
    // Each connection holds a sender: when all are dropped, all connections are done.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let reset = Reset::default();
        let io = TokioIo::new(SendTimeout::new(stream, config.send_timeout, reset.clone()));
        let answers = Answers::new(config);
        let service = Answering {
            routes: TowerToHyperService::new(app.clone()),
            peer,
            answers: answers.clone(),
        };
        let conn = http.serve_connection(io, service).into_owned();
        tokio::spawn(drive(
            conn,
            answers,
            reset,
            stopping.clone(),
            open.clone(),
            peer,
        ));
    }
    drop(listener);
    stopping.cancel();
    drop(open);
    let _ = all_closed.recv().await;
    Ok(())
}

type Connection = auto::Connection<'static, TokioIo<SendTimeout>, Answering, TokioExecutor>;

/// Runs one connection to its end: shut down gracefully when the server stops or when it has
/// been idle too long; dropped when an answer is past its deadline (reset) or when it is still
/// open an idle period after being shut down.
async fn drive(
    conn: Connection,
    answers: Arc<Answers>,
    reset: Reset,
    stopping: CancellationToken,
    _open: mpsc::Sender<()>,
    peer: SocketAddr,
) {
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        let wake = match answers.verdict(Instant::now()) {
            Verdict::Late => {
                tracing::debug!(%peer, "an answer was taken too slowly: resetting the connection");
                reset.reset();
                return;
            }
            Verdict::Idle if closing => return,
            Verdict::Idle => {
                conn.as_mut().graceful_shutdown();
                closing = true;
                answers.quiet_from(Instant::now());
                continue;
            }
            Verdict::Wait(wake) => wake,
        };
        tokio::select! {
            biased;
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, "connection closed: {e}");
                }
                return;
            }
            () = stopping.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = answers.changed.notified() => {}
            () = sleep_until(wake) => {}
        }
    }
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A failed accept: a connection reset before it was taken is nothing; running out of file
/// descriptors (or another error of the listener) waits a second rather than spinning.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    ) {
        return;
    }
    tracing::warn!("serve: accepting a connection failed: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The router as a hyper service for one connection: each request carries the client's
/// address (what the router's guard reads) and its answer is watched ([`Answers`]).
#[derive(Clone)]
struct Answering {
    routes: TowerToHyperService<Router>,
    peer: SocketAddr,
    answers: Arc<Answers>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Answering {
    type Response = hyper::Response<Watched>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let progress = Answers::begin(&self.answers);
        let answer = self.routes.call(req);
        Box::pin(async move {
            let resp = answer.await?;
            Ok(resp.map(|body| Watched { body, progress }))
        })
    }
}

/// A response body that counts what it has handed to hyper; its answer is in progress until it
/// is dropped.
struct Watched {
    body: axum::body::Body,
    progress: Arc<Progress>,
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.progress
                    .sent
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The answers in progress on one connection, for their deadlines and its idle time.
struct Answers {
    floor: Duration,
    min_rate: u64,
    idle: Duration,
    state: Mutex<AnswersState>,
    /// An answer began or ended.
    changed: Notify,
}

struct AnswersState {
    in_progress: Vec<Weak<Progress>>,
    /// When the last answer ended (or the connection opened, or was shut down).
    quiet_since: Instant,
}

/// One answer: from its request until its body is dropped.
struct Progress {
    started: Instant,
    sent: AtomicU64,
    answers: Arc<Answers>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.answers.quiet_from(Instant::now());
        self.answers.changed.notify_one();
    }
}

enum Verdict {
    /// An answer is past its deadline: drop the connection.
    Late,
    /// No answer for the idle time: shut the connection down.
    Idle,
    /// Look again then (or when an answer begins or ends).
    Wait(Option<Instant>),
}

impl Answers {
    fn new(config: &ServeConfig) -> Arc<Self> {
        Arc::new(Self {
            floor: config.answer_time_floor,
            min_rate: config.answer_min_rate,
            idle: config.header_read_timeout,
            state: Mutex::new(AnswersState {
                in_progress: Vec::new(),
                quiet_since: Instant::now(),
            }),
            changed: Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, AnswersState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin(this: &Arc<Self>) -> Arc<Progress> {
        let progress = Arc::new(Progress {
            started: Instant::now(),
            sent: AtomicU64::new(0),
            answers: this.clone(),
        });
        this.state().in_progress.push(Arc::downgrade(&progress));
        this.changed.notify_one();
        progress
    }

    fn quiet_from(&self, at: Instant) {
        self.state().quiet_since = at;
    }

    /// When `progress` must be sent whole, given what it has sent (`None`: never).
    fn deadline(&self, progress: &Progress) -> Option<Instant> {
        if self.min_rate == 0 {
            return None;
        }
        let sent = progress.sent.load(Ordering::Relaxed) as f64;
        let credit = Duration::try_from_secs_f64(sent / self.min_rate as f64).ok()?;
        progress
            .started
            .checked_add(self.floor)?
            .checked_add(credit)
    }

    fn verdict(&self, now: Instant) -> Verdict {
        // Taken out of the lock: the last reference to an answer may be dropped here, and that
        // takes the lock.
        let in_progress: Vec<Arc<Progress>> = {
            let mut state = self.state();
            state.in_progress.retain(|p| p.strong_count() > 0);
            if state.in_progress.is_empty() {
                return match state.quiet_since.checked_add(self.idle) {
                    Some(at) if at <= now => Verdict::Idle,
                    at => Verdict::Wait(at),
                };
            }
            state.in_progress.iter().filter_map(Weak::upgrade).collect()
        };
        match in_progress.iter().filter_map(|p| self.deadline(p)).min() {
            Some(at) if at <= now => Verdict::Late,
            at => Verdict::Wait(at),
        }
    }
}

/// A connection whose writes must make progress: a write (or flush) that waits longer than
/// `limit` for the client to take bytes fails with `TimedOut`. Reads are untouched (hyper's
/// header-read timeout covers them).
///
/// A connection cut for a slow client (that, or [`Reset::reset`]) is reset when dropped rather
/// than closed: the kernel drops what it still holds for the client instead of trickling it
/// out (megabytes, for minutes).
struct SendTimeout {
    inner: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    reset: Reset,
}

/// Whether to reset a connection when it is dropped.
#[derive(Clone, Default)]
struct Reset(Arc<AtomicBool>);

impl Reset {
    fn reset(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl SendTimeout {
    fn new(inner: TcpStream, limit: Duration, reset: Reset) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
            reset,
        }
    }

    /// Passes on a write's outcome; a pending one starts (or checks) the stall clock.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = self.limit;
                let clock = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if clock.as_mut().poll(cx).is_ready() {
                    self.reset.reset();
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped taking the answer",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl Drop for SendTimeout {
    fn drop(&mut self) {
        if self.reset.0.load(Ordering::Relaxed) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for SendTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(floor: u64, min_rate: u64, idle: u64) -> Arc<Answers> {
        Answers::new(&ServeConfig {
            answer_time_floor: Duration::from_secs(floor),
            answer_min_rate: min_rate,
            header_read_timeout: Duration::from_secs(idle),
            ..ServeConfig::default()
        })
    }

    fn wake(v: Verdict) -> Option<Instant> {
        match v {
            Verdict::Wait(at) => at,
            Verdict::Late => panic!("late"),
            Verdict::Idle => panic!("idle"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_has_a_floor_plus_its_length_at_the_minimum_rate() {
        let a = answers(10, 1000, 5);
        let open = Instant::now();
        assert_eq!(wake(a.verdict(open)), Some(open + Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(4)).await;
        let answer = Answers::begin(&a);
        let start = Instant::now();
        assert_eq!(
            wake(a.verdict(start)),
            Some(start + Duration::from_secs(10))
        );
        answer.sent.store(5000, Ordering::Relaxed);
        let deadline = start + Duration::from_secs(15);
        assert_eq!(wake(a.verdict(start)), Some(deadline));
        assert!(matches!(
            a.verdict(deadline - Duration::from_millis(1)),
            Verdict::Wait(_)
        ));
        assert!(matches!(a.verdict(deadline), Verdict::Late));
        // Its end starts the idle time.
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(answer);
        let ended = Instant::now();
        assert_eq!(wake(a.verdict(ended)), Some(ended + Duration::from_secs(5)));
        assert!(matches!(
            a.verdict(ended + Duration::from_secs(5)),
            Verdict::Idle
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn no_minimum_rate_means_no_deadline() {
        let a = answers(1, 0, 1);
        let _answer = Answers::begin(&a);
        assert_eq!(
            wake(a.verdict(Instant::now() + Duration::from_secs(3600))),
            None
        );
    }
}
