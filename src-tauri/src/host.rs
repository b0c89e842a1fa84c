//! The app process: the engine, the tray, notifications, and the socket the window process
//! talks to (see [`crate::window`] for that process's life). Nothing here loads a web view: what
//! stays running all day costs what the engine costs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use p2pds::app::dto::{ErrorAnswer, ErrorCode, Event, MoveReport};
use p2pds::app::Engine;
use serde_json::Value;
use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use p2pds_desktop::ipc::{self, ToApp, ToWindow};

use crate::commands::{dispatch, said};
use crate::window::Window;

/// Commands of one window worked on at once (more wait their turn).
const CALLS_AT_ONCE: usize = 32;

/// What the commands, the tray and the socket reach.
pub struct Host {
    pub engine: Engine,
    pub window: Window,
    /// The file recording where the copies were moved to.
    pub location_file: Option<PathBuf>,
    /// The per-user data folder (moving back there needs no record).
    pub default_dir: Option<PathBuf>,
    /// Quit: stops everything.
    pub quit: CancellationToken,
    /// Start again once stopped (after a move of the storage folder).
    pub restart: AtomicBool,
    /// An invitation link the system opened the app with, until the page takes it.
    pub pending_link: std::sync::Mutex<Option<String>>,
}

/// The longest invitation link taken from the system (a real one is a few hundred bytes).
const LINK_AT_MOST: usize = 4096;

impl Host {
    /// An invitation link opened with the app: kept for the page, and the window shown at it.
    pub fn open_link(&self, link: &str) {
        if link.len() > LINK_AT_MOST {
            return;
        }
        if let Ok(mut pending) = self.pending_link.lock() {
            *pending = Some(link.to_string());
        }
        self.window.open();
        self.window.tell(ToWindow::Link);
    }

    /// The link waiting for the page, once.
    pub fn take_pending_link(&self) -> Option<String> {
        self.pending_link.lock().ok().and_then(|mut p| p.take())
    }

    /// Copies the data to `dir`, checks the copy, records the new place and restarts the app
    /// there. The old folder is left as it was: the settings then offer to delete it.
    pub async fn move_storage(&self, dir: &str) -> Result<Value, ErrorAnswer> {
        let report: MoveReport = self
            .engine
            .move_storage(dir)
            .await
            .map_err(|e| e.answer())?;
        let to = std::path::PathBuf::from(&report.to);
        if let Err(e) = crate::location::record(
            self.location_file.as_deref(),
            self.default_dir.as_deref(),
            &to,
        ) {
            self.engine.cancel_move();
            return Err(said(ErrorCode::Storage, format!(
                "{e} Nothing changed: your copies are still kept in {}. (The copy made in {} can be deleted.)",
                report.from, report.to
            )));
        }
        // A moment later, so this answer reaches the window first.
        self.restart.store(true, Ordering::SeqCst);
        let quit = self.quit.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            quit.cancel();
        });
        serde_json::to_value(report).map_err(|e| said(ErrorCode::Other, e.to_string()))
    }
}

/// Answers whoever connects to `listener` (the window process, a second start of the app)
/// until quit.
pub async fn serve(host: Arc<Host>, listener: UnixListener, owner: u32) {
    loop {
        let stream = tokio::select! {
            _ = host.quit.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    eprintln!("p2pds-desktop: the window's socket: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Only this user's processes may drive the engine.
        match stream.peer_cred() {
            Ok(c) if c.uid() == owner => {}
            _ => continue,
        }
        tokio::spawn(connection(host.clone(), stream));
    }
}

/// One connection: its calls answered (several at once), the engine's events and the window
/// orders passed on, until either side ends.
async fn connection(host: Arc<Host>, stream: UnixStream) {
    let (r, mut w) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<ToWindow>(256);
    let mut events = host.engine.subscribe();
    let mut orders = host.window.orders();
    let quit = host.quit.clone();
    let writer = tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                _ = quit.cancelled() => ToWindow::Close,
                m = rx.recv() => match m { Some(m) => m, None => break },
                e = events.recv() => match e {
                    Ok(e) => event(&e),
                    Err(broadcast::error::RecvError::Lagged(_)) => event(&Event::Changed),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                o = orders.recv() => match o {
                    Ok(o) => o,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            let closing = message == ToWindow::Close && quit.is_cancelled();
            if ipc::write(&mut w, &message).await.is_err() || closing {
                break;
            }
        }
    });
    let slots = Arc::new(Semaphore::new(CALLS_AT_ONCE));
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        let message = tokio::select! {
            _ = host.quit.cancelled() => break,
            m = ipc::read::<_, ToApp>(&mut r, &mut buf) => m,
        };
        match message {
            Ok(Some(ToApp::Call { id, cmd, args })) => {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let (host, tx) = (host.clone(), tx.clone());
                tokio::spawn(async move {
                    let _ = tx.send(answer(host, id, cmd, args).await).await;
                    drop(slot);
                });
            }
            Ok(Some(ToApp::Open)) => host.window.open(),
            Ok(Some(ToApp::OpenLink { link })) => host.open_link(&link),
            Ok(Some(ToApp::Focused)) => host.window.focused(),
            Ok(None) => break,
            Err(e) => {
                eprintln!("p2pds-desktop: the window's socket: {e}");
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// The answer to one call. A command that fails unexpectedly (a panic) is still answered, in
/// words, so the page never waits forever; so is an answer too large to send.
async fn answer(host: Arc<Host>, id: u64, cmd: String, args: Value) -> ToWindow {
    let failed = |e: ErrorAnswer| {
        ToWindow::Answer {
        id,
        ok: None,
        err: Some(serde_json::to_value(&e).unwrap_or_else(|_| {
            serde_json::json!({ "code": "other", "message": "Something went wrong. Please try again." })
        })),
    }
    };
    let name = cmd.clone();
    let result = tokio::spawn(async move { dispatch(&host, &cmd, &args).await }).await;
    match result {
        Ok(Ok(v)) => {
            let size = serde_json::to_vec(&v).map_or(usize::MAX, |b| b.len());
            if size > ipc::MAX_LINE - 1024 {
                return failed(said(
                    ErrorCode::Other,
                    "That answer is too large for the window to show.".into(),
                ));
            }
            ToWindow::Answer {
                id,
                ok: Some(v),
                err: None,
            }
        }
        Ok(Err(e)) => failed(e),
        Err(_) => failed(said(
            ErrorCode::Other,
            format!("Something went wrong in P2PDS while doing that ({name}). Please try again."),
        )),
    }
}

fn event(e: &Event) -> ToWindow {
    ToWindow::Event {
        event: serde_json::to_value(e).unwrap_or(Value::Null),
    }
}

/// Whether an app is running on this socket (it takes connections).
pub fn running(socket: &std::path::Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// Asks the app already running on this socket to show its window (at `link`, an invitation
/// link, when there is one): true when it answered.
pub fn ask_running_to_open(socket: &std::path::Path, link: Option<&str>) -> bool {
    use std::io::Write;
    let message = match link {
        Some(link) => ToApp::OpenLink {
            link: link.to_string(),
        },
        None => ToApp::Open,
    };
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(mut s) => {
            let mut line = serde_json::to_vec(&message).unwrap_or_default();
            line.push(b'\n');
            s.write_all(&line).is_ok()
        }
        Err(_) => false,
    }
}

/// Engine events to the tray and notifications (the window gets them through its socket).
pub async fn forward(host: Arc<Host>, tray: crate::tray::TrayHandle) {
    let mut rx = host.engine.subscribe();
    if let Ok(o) = host.engine.overview().await {
        tray.show(&o).await;
    }
    loop {
        let event = tokio::select! {
            _ = host.quit.cancelled() => break,
            e = rx.recv() => match e {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(_)) => Event::Changed,
                Err(broadcast::error::RecvError::Closed) => break,
            },
        };
        match &event {
            Event::Changed => {
                if let Ok(o) = host.engine.overview().await {
                    tray.show(&o).await;
                }
            }
            Event::Alert { title, body, .. } => notify(&host.engine, title, body).await,
            Event::Progress { .. } | Event::Moving { .. } | Event::Restoring { .. } => {}
        }
    }
}

/// A desktop notification; when the desktop cannot show one, the app says so.
async fn notify(engine: &Engine, title: &str, body: &str) {
    let (t, b) = (title.to_string(), body.to_string());
    let shown = tokio::task::spawn_blocking(move || {
        notify_rust::Notification::new()
            .appname("P2PDS")
            .summary(&t)
            .body(&b)
            .show()
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match shown {
        Ok(()) => engine.set_notifications(true, None),
        Err(e) => engine.set_notifications(
            false,
            Some(format!(
                "the desktop has no notification service ({e}); alerts show in the app only"
            )),
        ),
    }
}

/// Under `P2PDS_BENCH_STARTUP`: real-time signal [`CLOSE_SIGNAL`] closes the window,
/// [`OPEN_SIGNAL`] opens it, as a person would (for `scripts/bench-desktop`).
pub const CLOSE_SIGNAL: i32 = 40;
/// See [`CLOSE_SIGNAL`].
pub const OPEN_SIGNAL: i32 = 41;

/// Quit on SIGINT / SIGTERM; the bench's signals.
pub async fn signals(host: Arc<Host>) {
    use tokio::signal::unix::{signal, SignalKind};
    let bench = std::env::var_os("P2PDS_BENCH_STARTUP").is_some();
    let (Ok(mut int), Ok(mut term), Ok(mut close), Ok(mut open)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::from_raw(CLOSE_SIGNAL)),
        signal(SignalKind::from_raw(OPEN_SIGNAL)),
    ) else {
        return;
    };
    loop {
        tokio::select! {
            _ = host.quit.cancelled() => return,
            _ = int.recv() => host.quit.cancel(),
            _ = term.recv() => host.quit.cancel(),
            _ = close.recv() => if bench { host.window.close() },
            _ = open.recv() => if bench { host.window.open() },
        }
    }
}
