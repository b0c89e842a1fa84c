//! The window, seen from the app process: a process of its own (`p2pds-window`, the web view),
//! started when the window is opened and gone when it is closed, with its web processes: a
//! window nobody looks at costs nothing. It shows the engine's state at once (the page asks
//! the app over the socket). "Open" while it runs brings it to the front: the window answers
//! [`ToWindow::Focus`] from its main thread ([`ToApp::Focused`](p2pds_desktop::ipc::ToApp));
//! one that does not within [`FOCUS_DEADLINE`] is hung, so it is ended and a new one opened
//! (unless it is still starting: [`START_GRACE`]).
//!
//! For `scripts/bench-desktop` (`P2PDS_BENCH_STARTUP` set) the window process is told when it
//! was asked for (`P2PDS_BENCH_SINCE`, milliseconds since the epoch, and `P2PDS_BENCH_WHAT`:
//! `startup` or `reopen`) and prints the time to its page's first paint.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use p2pds_desktop::ipc::ToWindow;
use tokio::sync::{broadcast, oneshot, watch};

/// How long a running window has to answer "come to the front" before it counts as hung.
pub const FOCUS_DEADLINE: Duration = Duration::from_secs(5);
/// A window process younger than this may still be starting (not yet listening): it is left
/// to come up rather than counted as hung.
pub const START_GRACE: Duration = Duration::from_secs(20);
/// How long an ended window process has to go before a new one is opened anyway.
const END_WAIT: Duration = Duration::from_secs(2);

pub struct Window {
    inner: Arc<Inner>,
}

struct Inner {
    /// The window program, beside this one.
    exe: PathBuf,
    socket: PathBuf,
    /// The window process running now, if any.
    running: Mutex<Option<Running>>,
    /// Whether a window was opened before (for the bench's figure: start-up or reopening).
    opened_before: Mutex<bool>,
    /// Orders to the window process ([`ToWindow::Focus`], [`ToWindow::Close`]).
    orders: broadcast::Sender<ToWindow>,
    /// Counts the window's answers to [`ToWindow::Focus`].
    focused: watch::Sender<u64>,
    focus_deadline: Duration,
    start_grace: Duration,
}

/// A window process.
struct Running {
    pid: Option<u32>,
    started: Instant,
    /// Ends it (its waiter kills it and reaps it).
    end: Option<oneshot::Sender<()>>,
}

impl Window {
    pub fn new(exe: PathBuf, socket: PathBuf) -> Window {
        Window::with_deadlines(exe, socket, FOCUS_DEADLINE, START_GRACE)
    }

    fn with_deadlines(
        exe: PathBuf,
        socket: PathBuf,
        focus_deadline: Duration,
        start_grace: Duration,
    ) -> Window {
        Window {
            inner: Arc::new(Inner {
                exe,
                socket,
                running: Mutex::new(None),
                opened_before: Mutex::new(false),
                orders: broadcast::channel(8).0,
                focused: watch::channel(0).0,
                focus_deadline,
                start_grace,
            }),
        }
    }

    /// The window program beside this program.
    pub fn beside_this_program() -> std::io::Result<PathBuf> {
        let me = std::env::current_exe()?;
        Ok(me.with_file_name(format!("p2pds-window{}", std::env::consts::EXE_SUFFIX)))
    }

    pub fn orders(&self) -> broadcast::Receiver<ToWindow> {
        self.inner.orders.subscribe()
    }

    /// Shows the window: brings the running one to the front (a hung one is replaced), else
    /// starts one.
    pub fn open(&self) {
        self.inner.open();
    }

    /// The window came to the front, as [`ToWindow::Focus`] asked.
    pub fn focused(&self) {
        self.inner.focused.send_modify(|n| *n += 1);
    }

    /// Closes the window, if one is open.
    pub fn close(&self) {
        self.tell(ToWindow::Close);
    }

    /// Tells the window process (if one runs) `order`.
    pub fn tell(&self, order: ToWindow) {
        let _ = self.inner.orders.send(order);
    }

    /// The window process running now (for tests).
    #[cfg(test)]
    fn pid(&self) -> Option<u32> {
        self.inner.running.lock().ok()?.as_ref()?.pid
    }
}

impl Inner {
    fn open(self: &Arc<Self>) {
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        if let Some(r) = running.as_ref() {
            let old_enough = r.started.elapsed() >= self.start_grace;
            drop(running);
            self.bring_to_front(old_enough);
            return;
        }
        let what = match self.opened_before.lock() {
            Ok(mut before) => {
                let what = if *before { "reopen" } else { "startup" };
                *before = true;
                what
            }
            Err(_) => "reopen",
        };
        let since = match what {
            // Start-up counts from this process's start.
            "startup" => *crate::STARTED_AT,
            _ => now_ms(),
        };
        let mut command = tokio::process::Command::new(&self.exe);
        // Pages this simple need no GPU compositing; drawn without it, the web process takes
        // half the memory. `P2PDS_GPU=1` keeps WebKit's default.
        if std::env::var_os("P2PDS_GPU").is_none()
            && std::env::var_os("WEBKIT_DISABLE_COMPOSITING_MODE").is_none()
        {
            command.env("WEBKIT_DISABLE_COMPOSITING_MODE", "1");
        }
        let child = command
            .arg("--socket")
            .arg(&self.socket)
            .env("P2PDS_BENCH_SINCE", since.to_string())
            .env("P2PDS_BENCH_WHAT", what)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "p2pds-desktop: can't open the window ({}): {e}. It is installed beside \
                     p2pds-desktop (from the sources: cargo build -p p2pds-desktop).",
                    self.exe.display()
                );
                return;
            }
        };
        let (end, ended) = oneshot::channel::<()>();
        let pid = child.id();
        *running = Some(Running {
            pid,
            started: Instant::now(),
            end: Some(end),
        });
        drop(running);
        let me = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = child.wait() => {}
                Ok(()) = ended => {
                    let _ = child.kill().await;
                }
            }
            if let Ok(mut running) = me.running.lock() {
                if running.as_ref().is_some_and(|r| r.pid == pid) {
                    *running = None;
                }
            }
        });
    }

    /// Asks the running window to come to the front; one that does not answer in time (and
    /// is past starting, `old_enough`) is hung: it is ended and a new window opened.
    fn bring_to_front(self: &Arc<Self>, old_enough: bool) {
        let mut answers = self.focused.subscribe();
        answers.borrow_and_update();
        let _ = self.orders.send(ToWindow::Focus);
        if !old_enough {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(me.focus_deadline, answers.changed())
                .await
                .is_ok()
            {
                return;
            }
            let end = me
                .running
                .lock()
                .ok()
                .and_then(|mut r| r.as_mut().and_then(|r| r.end.take()));
            let Some(end) = end else {
                return; // gone already, or being ended
            };
            eprintln!("p2pds-desktop: the window did not answer: opening a new one");
            let _ = end.send(());
            let gone_by = Instant::now() + END_WAIT;
            while Instant::now() < gone_by {
                if me.running.lock().map(|r| r.is_none()).unwrap_or(true) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Ok(mut running) = me.running.lock() {
                *running = None;
            }
            me.open();
        });
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window program that starts and never answers anything (a hung window).
    fn hung_program(dir: &std::path::Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let exe = dir.join("hung-window");
        std::fs::write(&exe, "#!/bin/sh\nexec sleep 600\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    }

    /// A window of the hung program on `socket` in `dir`: "come to the front" answered within
    /// 100 ms, or hung (past `start_grace`).
    fn window(dir: &std::path::Path, socket: &str, start_grace: Duration) -> Window {
        Window::with_deadlines(
            hung_program(dir),
            dir.join(socket),
            Duration::from_millis(100),
            start_grace,
        )
    }

    fn alive(pid: u32) -> bool {
        // A reaped process has no /proc entry (a zombie's state is Z).
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
    }

    async fn until(what: impl Fn() -> bool) -> bool {
        for _ in 0..200 {
            if what() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_window_that_does_not_come_to_the_front_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let w = window(dir.path(), "sock", Duration::ZERO);
        w.open();
        let first = w.pid().expect("a window process");
        // "Open" again: the window never answers, so it is ended and a new one started.
        w.open();
        assert!(until(|| w.pid().is_some_and(|p| p != first)).await);
        assert!(until(|| !alive(first)).await, "the hung window was ended");
        let second = w.pid().unwrap();
        assert!(alive(second));
        drop(w);
    }

    #[tokio::test]
    async fn a_window_that_answers_or_is_still_starting_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        // Answers "come to the front" (as the window's main thread does).
        let w = window(dir.path(), "sock", Duration::ZERO);
        let mut orders = w.orders();
        w.open();
        let first = w.pid().unwrap();
        w.open();
        assert_eq!(orders.recv().await.unwrap(), ToWindow::Focus);
        w.focused();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(w.pid(), Some(first));
        assert!(alive(first));

        // Still starting: not counted as hung.
        let starting = window(dir.path(), "sock2", Duration::from_secs(600));
        starting.open();
        let pid = starting.pid().unwrap();
        starting.open();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(starting.pid(), Some(pid));
    }
}
