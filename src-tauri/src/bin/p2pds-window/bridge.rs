//! The window process's side of the socket: the page's commands out, their answers and the
//! engine's events in (see `p2pds_desktop::ipc`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use p2pds_desktop::ipc::{self, ToApp, ToWindow};
use serde_json::Value;
use tauri::ipc::{InvokeBody, InvokeError};
use tauri::{AppHandle, Emitter, Manager};
use tokio::io::BufReader;
use tokio::sync::{mpsc, oneshot};

/// Commands waiting for their answer, at most this many (the page asks one or two at a time).
const WAITING_AT_MOST: usize = 256;

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, Value>>>>>;

/// The page's commands on their way to the app.
#[derive(Clone)]
struct Bridge {
    out: mpsc::Sender<ToApp>,
    waiting: Waiting,
    next: Arc<AtomicU64>,
}

impl Bridge {
    async fn call(&self, cmd: String, args: Value) -> Result<Value, Value> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut w = self.waiting.lock().map_err(|_| gone())?;
            if w.len() >= WAITING_AT_MOST {
                return Err(said("The app is busy. Please try again."));
            }
            w.insert(id, tx);
        }
        if self.out.send(ToApp::Call { id, cmd, args }).await.is_err() {
            if let Ok(mut w) = self.waiting.lock() {
                w.remove(&id);
            }
            return Err(gone());
        }
        rx.await.unwrap_or_else(|_| Err(gone()))
    }
}

fn said(message: &str) -> Value {
    serde_json::json!({ "code": "other", "message": message })
}

fn gone() -> Value {
    said("P2PDS has stopped. Start it again from your applications menu.")
}

/// Runs the window until it is closed or the app goes away.
pub fn run(socket: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("can't reach the app at {}: {e}", socket.display()))?;
    stream.set_nonblocking(true)?;
    let (out, outgoing) = mpsc::channel::<ToApp>(64);
    let bridge = Bridge {
        out,
        waiting: Arc::new(Mutex::new(HashMap::new())),
        next: Arc::new(AtomicU64::new(1)),
    };
    let for_calls = bridge.clone();
    let answers = bridge.out.clone();
    let app = tauri::Builder::default()
        .setup(move |app| {
            let handle = app.handle().clone();
            let waiting = bridge.waiting.clone();
            tauri::async_runtime::spawn(async move {
                match tokio::net::UnixStream::from_std(stream) {
                    Ok(stream) => connection(handle, stream, outgoing, answers, waiting).await,
                    Err(e) => {
                        eprintln!("p2pds-window: the app's socket: {e}");
                        handle.exit(1);
                    }
                }
            });
            if let Some(config) = app.config().app.windows.first() {
                tauri::WebviewWindowBuilder::from_config(app.handle(), config)?
                    .build()?
                    .set_focus()?;
            }
            Ok(())
        })
        .invoke_handler(move |invoke| {
            let cmd = invoke.message.command().to_string();
            if cmd == "ready" {
                ready();
                invoke.resolver.resolve(Value::Null);
                return true;
            }
            let args = match invoke.message.payload() {
                InvokeBody::Json(v) => v.clone(),
                InvokeBody::Raw(_) => Value::Null,
            };
            let bridge = for_calls.clone();
            invoke
                .resolver
                .respond_async(async move { bridge.call(cmd, args).await.map_err(InvokeError) });
            true
        })
        .build(tauri::generate_context!())?;
    app.run(|_, _| {});
    Ok(())
}

/// The socket: calls out; answers, events and orders in. When the app goes away, every
/// waiting command gets its answer in words and the window closes.
async fn connection(
    app: AppHandle,
    stream: tokio::net::UnixStream,
    mut outgoing: mpsc::Receiver<ToApp>,
    answers: mpsc::Sender<ToApp>,
    waiting: Waiting,
) {
    let (r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        while let Some(m) = outgoing.recv().await {
            if ipc::write(&mut w, &m).await.is_err() {
                break;
            }
        }
    });
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        match ipc::read::<_, ToWindow>(&mut r, &mut buf).await {
            Ok(Some(ToWindow::Answer { id, ok, err })) => {
                let tx = waiting.lock().ok().and_then(|mut w| w.remove(&id));
                if let Some(tx) = tx {
                    let _ = tx.send(match err {
                        Some(e) => Err(e),
                        None => Ok(ok.unwrap_or(Value::Null)),
                    });
                }
            }
            Ok(Some(ToWindow::Event { event })) => {
                let _ = app.emit("engine", event);
            }
            Ok(Some(ToWindow::Focus)) => {
                // From the main thread: a window whose main thread is stuck never answers,
                // and the app replaces it.
                let (a, answers) = (app.clone(), answers.clone());
                let _ = app.run_on_main_thread(move || {
                    if let Some(w) = a.get_webview_window("main") {
                        let _ = w.unminimize();
                        let _ = w.show();
                        let _ = w.set_focus();
                    }
                    let _ = answers.try_send(ToApp::Focused);
                });
            }
            Ok(Some(ToWindow::Link)) => {
                let _ = app.emit("link", ());
            }
            Ok(Some(ToWindow::Close)) | Ok(None) => break,
            Err(e) => {
                eprintln!("p2pds-window: the app's socket: {e}");
                break;
            }
        }
    }
    writer.abort();
    if let Ok(mut w) = waiting.lock() {
        for (_, tx) in w.drain() {
            let _ = tx.send(Err(gone()));
        }
    }
    app.exit(0);
}

/// The page drew its first frame. With `P2PDS_BENCH_STARTUP` set, prints the time since the
/// window was asked for (`scripts/bench-desktop` reads it): since the app started, or since
/// "Open".
fn ready() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("P2PDS_BENCH_STARTUP").is_none() {
            return;
        }
        let since: Option<u128> = std::env::var("P2PDS_BENCH_SINCE")
            .ok()
            .and_then(|s| s.parse().ok());
        let what = std::env::var("P2PDS_BENCH_WHAT").unwrap_or_else(|_| "startup".into());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        if let Some(since) = since {
            eprintln!("{what}: first paint after {} ms", now.saturating_sub(since));
        }
    });
}
