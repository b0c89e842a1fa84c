//! The window process's side of the socket: the page's commands out, their answers and the
//! engine's events in (see `p2pds_desktop::ipc`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use p2pds_desktop::ipc::{self, ToApp, ToWindow};
use serde_json::Value;
use tauri::ipc::{InvokeBody, InvokeError};
use tauri::{AppHandle, Emitter, Manager};
use tokio::io::BufReader;
use tokio::sync::{mpsc, oneshot};

/// Commands waiting for their answer, at most this many (the page asks one or two at a time).
const WAITING_AT_MOST: usize = 256;

type Answer = Result<Value, Value>;
type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>;

/// The page's commands on their way to the app.
#[derive(Clone)]
struct Bridge {
    out: mpsc::Sender<ToApp>,
    waiting: Waiting,
    next: Arc<AtomicU64>,
    early: Early,
}

/// The overview, asked for as the window process starts, while the web view and the page are
/// still loading: the page's first `overview` gets it without a second round trip, unless an
/// engine event came in since it was asked for (then it asks anew).
#[derive(Clone, Default)]
struct Early {
    answer: Arc<Mutex<Option<oneshot::Receiver<Answer>>>>,
    stale: Arc<std::sync::atomic::AtomicBool>,
}

impl Early {
    /// The early overview, once: none when it was never asked for, already taken, failed,
    /// or is stale.
    async fn take(&self) -> Option<Value> {
        let rx = self.answer.lock().ok()?.take()?;
        let v = rx.await.ok()?.ok()?;
        (!self.stale.load(Ordering::SeqCst)).then_some(v)
    }
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

    /// Asks for the overview now, for the page's first `overview` ([`Early`]).
    fn ask_early(&self) {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut a) = self.early.answer.lock() {
            *a = Some(rx);
        }
        let me = self.clone();
        tauri::async_runtime::spawn(async move {
            let _ = tx.send(me.call("overview".into(), Value::Null).await);
        });
    }

    /// The page's command `cmd`, answered by the app (the first `overview` by [`Early`]).
    async fn answer(&self, cmd: String, args: Value) -> Result<Value, Value> {
        if cmd == "overview" {
            if let Some(v) = self.early.take().await {
                return Ok(v);
            }
        }
        self.call(cmd, args).await
    }
}

fn said(message: &str) -> Value {
    serde_json::json!({ "code": "other", "message": message })
}

fn gone() -> Value {
    said("P2PDS has stopped. Start it again from your applications menu.")
}

/// The window is mapped at its page's first call, or after this long if the page never calls.
/// Mapped earlier, GTK's first draw of the web view can come while the new web process is
/// still starting: the window process then waits for the web process's first frame while the
/// web process waits for an answer from the window process, until WebKit gives up after
/// half a second (seen in a third to half of the opens on a 2-core machine). By its first
/// call the page is loaded and its web process free to draw.
const SHOW_AT_LATEST: std::time::Duration = std::time::Duration::from_secs(2);

/// Shows the window and brings it to the front, once.
fn show(app: &AppHandle, shown: &AtomicBool) {
    if shown.swap(true, Ordering::SeqCst) {
        return;
    }
    mark("shown");
    raise(app);
}

/// Brings the window to the front: restored if minimized, shown, focused.
fn raise(app: &AppHandle) {
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.unminimize();
        let _ = w.show();
        let _ = w.set_focus();
    }
}

/// Runs the window until it is closed or the app goes away.
pub fn run(socket: &Path) -> Result<(), Box<dyn std::error::Error>> {
    mark("process");
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("can't reach the app at {}: {e}", socket.display()))?;
    stream.set_nonblocking(true)?;
    let (out, outgoing) = mpsc::channel::<ToApp>(64);
    let bridge = Bridge {
        out,
        waiting: Arc::new(Mutex::new(HashMap::new())),
        next: Arc::new(AtomicU64::new(1)),
        early: Early::default(),
    };
    let for_calls = bridge.clone();
    let answers = bridge.out.clone();
    let shown = Arc::new(AtomicBool::new(false));
    let shown_at_call = shown.clone();
    let app = tauri::Builder::default()
        .setup(move |app| {
            mark("toolkit");
            let handle = app.handle().clone();
            let (waiting, stale) = (bridge.waiting.clone(), bridge.early.stale.clone());
            bridge.ask_early();
            tauri::async_runtime::spawn(async move {
                match tokio::net::UnixStream::from_std(stream) {
                    Ok(stream) => {
                        connection(handle, stream, outgoing, answers, waiting, stale).await
                    }
                    Err(e) => {
                        eprintln!("p2pds-window: the app's socket: {e}");
                        handle.exit(1);
                    }
                }
            });
            if let Some(config) = app.config().app.windows.first() {
                // Built hidden, shown at the page's first call (see `show`).
                let mut window =
                    tauri::WebviewWindowBuilder::from_config(app.handle(), config)?.visible(false);
                if let Some(script) = system_font_script() {
                    window = window.initialization_script(script);
                }
                window.build()?;
                mark("web view");
                let (handle, shown) = (app.handle().clone(), shown.clone());
                tauri::async_runtime::spawn(async move {
                    tokio::time::sleep(SHOW_AT_LATEST).await;
                    show(&handle, &shown);
                });
            }
            Ok(())
        })
        .invoke_handler(move |invoke| {
            let cmd = invoke.message.command().to_string();
            mark("page's first call");
            show(invoke.message.webview().app_handle(), &shown_at_call);
            if cmd == "ready" {
                if let InvokeBody::Json(args) = invoke.message.payload() {
                    page_steps(args);
                }
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
                .respond_async(async move { bridge.answer(cmd, args).await.map_err(InvokeError) });
            true
        })
        .build(tauri::generate_context!())?;
    app.run(|_, _| {});
    Ok(())
}

/// A script, run before the page's own, that gives the page the desktop's UI font (GTK's
/// `gtk-font-name`, e.g. "Cantarell 11") as `--system-font`.
#[cfg(target_os = "linux")]
fn system_font_script() -> Option<String> {
    use gtk::prelude::GtkSettingsExt;
    let name = gtk::Settings::default()?.gtk_font_name()?;
    let family = gtk::pango::FontDescription::from_string(&name).family()?;
    css_family(&family)
        .map(|f| format!("document.documentElement.style.setProperty('--system-font', '\"{f}\"');"))
}

#[cfg(not(target_os = "linux"))]
fn system_font_script() -> Option<String> {
    None
}

/// A font family name fit to be quoted in CSS inside a script: letters, digits, spaces and
/// `-_.` only, at most 64 characters.
fn css_family(family: &str) -> Option<&str> {
    let family = family.trim();
    let plain = family
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'));
    (plain && !family.is_empty() && family.len() <= 64).then_some(family)
}

/// The socket: calls out; answers, events and orders in. When the app goes away, every
/// waiting command gets its answer in words and the window closes.
async fn connection(
    app: AppHandle,
    stream: tokio::net::UnixStream,
    mut outgoing: mpsc::Receiver<ToApp>,
    answers: mpsc::Sender<ToApp>,
    waiting: Waiting,
    stale: Arc<std::sync::atomic::AtomicBool>,
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
                stale.store(true, Ordering::SeqCst);
                let _ = app.emit("engine", event);
            }
            Ok(Some(ToWindow::Focus)) => {
                // From the main thread: a window whose main thread is stuck never answers,
                // and the app replaces it.
                let (a, answers) = (app.clone(), answers.clone());
                let _ = app.run_on_main_thread(move || {
                    raise(&a);
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

/// The page drew its first frame (see [`mark`]).
fn ready() {
    mark("first paint");
}

/// Under `P2PDS_BENCH_STARTUP`: what the window was asked for (`startup` or `reopen`,
/// `P2PDS_BENCH_WHAT`) and when (ms since 1970, `P2PDS_BENCH_SINCE`), read once; else none,
/// and nothing is measured.
static BENCH: std::sync::LazyLock<Option<(String, u128)>> = std::sync::LazyLock::new(|| {
    std::env::var_os("P2PDS_BENCH_STARTUP")?;
    let since = std::env::var("P2PDS_BENCH_SINCE").ok()?.parse().ok()?;
    let what = std::env::var("P2PDS_BENCH_WHAT").unwrap_or_else(|_| "startup".into());
    Some((what, since))
});

/// Under the bench, prints when the page's steps before its first paint ended
/// (`{"timing": {"origin": MS_SINCE_1970, "steps": [[NAME, MS_SINCE_ORIGIN], …]}}`), as [`mark`]
/// does, at most 16 of them.
fn page_steps(args: &Value) {
    if BENCH.is_none() {
        return;
    }
    let timing = &args["timing"];
    let (Some(origin), Some(steps)) = (timing["origin"].as_f64(), timing["steps"].as_array())
    else {
        return;
    };
    for step in steps.iter().take(16) {
        if let (Some(name), Some(at)) = (step[0].as_str(), step[1].as_f64()) {
            if at >= 0.0 {
                print_step(
                    &name.chars().take(40).collect::<String>(),
                    (origin + at) as u128,
                );
            }
        }
    }
}

/// Under the bench, prints once the time from the window being asked for (since the app
/// started, or since "Open") to `step`, as `startup: STEP after N ms` or `reopen: …`
/// (`scripts/bench-desktop` reads them): where the time to the first paint goes.
fn mark(step: &'static str) {
    static DONE: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    if BENCH.is_none() {
        return;
    }
    let Ok(mut done) = DONE.lock() else {
        return;
    };
    if done.contains(&step) {
        return;
    }
    done.push(step);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    print_step(step, now);
}

/// Prints `startup: STEP after N ms` (or `reopen: …`): from the window being asked for to
/// `at` (ms since 1970).
fn print_step(step: &str, at: u128) {
    if let Some((what, since)) = BENCH.as_ref() {
        eprintln!("{what}: {step} after {} ms", at.saturating_sub(*since));
    }
}

#[cfg(test)]
mod tests {
    use super::{css_family, Early};
    use serde_json::json;
    use std::sync::atomic::Ordering;
    use tokio::sync::oneshot;

    fn early(answer: Result<serde_json::Value, serde_json::Value>) -> Early {
        let e = Early::default();
        let (tx, rx) = oneshot::channel();
        tx.send(answer).unwrap();
        *e.answer.lock().unwrap() = Some(rx);
        e
    }

    #[tokio::test]
    async fn the_early_overview_is_given_once_and_only_while_nothing_happened() {
        let e = early(Ok(json!({"welcomed": true})));
        assert_eq!(e.take().await, Some(json!({"welcomed": true})));
        assert_eq!(e.take().await, None, "once only: later ones go to the app");

        let e = early(Ok(json!({"welcomed": true})));
        e.stale.store(true, Ordering::SeqCst);
        assert_eq!(e.take().await, None, "an event came in: asked anew");

        assert_eq!(early(Err(json!({"code": "other"}))).take().await, None);
        assert_eq!(Early::default().take().await, None, "never asked for");
    }

    #[test]
    fn only_plain_font_names_reach_the_page() {
        assert_eq!(css_family("Cantarell"), Some("Cantarell"));
        assert_eq!(css_family(" Noto Sans "), Some("Noto Sans"));
        assert_eq!(css_family("Ubuntu Sans"), Some("Ubuntu Sans"));
        assert_eq!(css_family("x'); alert(1); ('"), None);
        assert_eq!(css_family("a\"b"), None);
        assert_eq!(css_family(""), None);
        assert_eq!(css_family(&"a".repeat(65)), None);
    }
}
