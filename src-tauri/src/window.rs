//! The window, seen from the app process: a process of its own (`p2pds-window`, the web view),
//! started when the window is opened and gone when it is closed, with its web processes: a
//! window nobody looks at costs nothing. It shows the engine's state at once (the page asks
//! the app over the socket). "Open" while it runs brings it to the front.
//!
//! For `scripts/bench-desktop` (`P2PDS_BENCH_STARTUP` set) the window process is told when it
//! was asked for (`P2PDS_BENCH_SINCE`, milliseconds since the epoch, and `P2PDS_BENCH_WHAT`:
//! `startup` or `reopen`) and prints the time to its page's first paint.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use p2pds_desktop::ipc::ToWindow;
use tokio::sync::broadcast;

pub struct Window {
    /// The window program, beside this one.
    exe: PathBuf,
    socket: PathBuf,
    /// The window process running now, if any.
    running: Arc<Mutex<Option<u32>>>,
    /// Whether a window was opened before (for the bench's figure: start-up or reopening).
    opened_before: Mutex<bool>,
    /// Orders to the window process ([`ToWindow::Focus`], [`ToWindow::Close`]).
    orders: broadcast::Sender<ToWindow>,
}

impl Window {
    pub fn new(exe: PathBuf, socket: PathBuf) -> Window {
        Window {
            exe,
            socket,
            running: Arc::new(Mutex::new(None)),
            opened_before: Mutex::new(false),
            orders: broadcast::channel(8).0,
        }
    }

    /// The window program beside this program.
    pub fn beside_this_program() -> std::io::Result<PathBuf> {
        let me = std::env::current_exe()?;
        Ok(me.with_file_name(format!("p2pds-window{}", std::env::consts::EXE_SUFFIX)))
    }

    pub fn orders(&self) -> broadcast::Receiver<ToWindow> {
        self.orders.subscribe()
    }

    /// Shows the window: brings the running one to the front, else starts one.
    pub fn open(&self) {
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        if running.is_some() {
            let _ = self.orders.send(ToWindow::Focus);
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
        *running = child.id();
        drop(running);
        let pid = child.id();
        let slot = self.running.clone();
        tokio::spawn(async move {
            let _ = child.wait().await;
            if let Ok(mut running) = slot.lock() {
                if *running == pid {
                    *running = None;
                }
            }
        });
    }

    /// Closes the window, if one is open.
    pub fn close(&self) {
        self.tell(ToWindow::Close);
    }

    /// Tells the window process (if one runs) `order`.
    pub fn tell(&self, order: ToWindow) {
        let _ = self.orders.send(order);
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}
