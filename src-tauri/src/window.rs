//! The main window. It is built when the app starts (unless `--hidden`) and when "Open" is
//! chosen; closing it destroys it, and with it the web view and its web process: a window
//! nobody looks at costs nothing. The engine and the tray do not depend on it, and a new
//! window shows the current state at once (the page asks the engine). And, for
//! `scripts/bench-desktop` only (`P2PDS_BENCH_STARTUP` set), signals close and open it as a
//! person would (real-time signals [`CLOSE_SIGNAL`] and [`OPEN_SIGNAL`]: WebKit's JavaScript
//! engine takes SIGUSR1/SIGUSR2 for itself), and the page's first paint after an opening is
//! timed.

use std::sync::Mutex;
use std::time::Instant;

use tauri::{AppHandle, Manager};

/// `kill -40 PID` closes the window (SIGRTMIN+6 on Linux).
pub const CLOSE_SIGNAL: i32 = 40;
/// `kill -41 PID` opens it.
pub const OPEN_SIGNAL: i32 = 41;

/// When the window was last asked to open (for the figure of its first paint).
static OPENED_AT: Mutex<Option<Instant>> = Mutex::new(None);

/// Shows the main window, building it from the configuration when there is none.
pub fn open(app: &AppHandle) -> tauri::Result<()> {
    if let Ok(mut at) = OPENED_AT.lock() {
        *at = Some(Instant::now());
    }
    if let Some(w) = app.get_webview_window("main") {
        w.show()?;
        return w.set_focus();
    }
    let Some(config) = app.config().app.windows.first() else {
        return Ok(());
    };
    let w = tauri::WebviewWindowBuilder::from_config(app, config)?.build()?;
    w.set_focus()
}

/// The page's first frame after the last opening: milliseconds since, once.
pub fn painted() -> Option<u128> {
    OPENED_AT
        .lock()
        .ok()
        .and_then(|mut at| at.take())
        .map(|t| t.elapsed().as_millis())
}

/// Under `P2PDS_BENCH_STARTUP`: [`CLOSE_SIGNAL`] closes the window, [`OPEN_SIGNAL`] opens it.
#[cfg(unix)]
pub fn bench_signals(app: &AppHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    if std::env::var_os("P2PDS_BENCH_STARTUP").is_none() {
        return;
    }
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        let (Ok(mut close), Ok(mut reopen)) = (
            signal(SignalKind::from_raw(CLOSE_SIGNAL)),
            signal(SignalKind::from_raw(OPEN_SIGNAL)),
        ) else {
            return;
        };
        loop {
            tokio::select! {
                _ = close.recv() => {
                    let a = app.clone();
                    let _ = app.run_on_main_thread(move || {
                        if let Some(w) = a.get_webview_window("main") {
                            let _ = w.close();
                        }
                    });
                }
                _ = reopen.recv() => {
                    let a = app.clone();
                    let _ = app.run_on_main_thread(move || {
                        if let Err(e) = open(&a) {
                            eprintln!("p2pds-desktop: can't open the window: {e}");
                        }
                    });
                }
            }
        }
    });
}

#[cfg(not(unix))]
pub fn bench_signals(_app: &AppHandle) {}
