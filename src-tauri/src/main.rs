//! P2PDS desktop shell: a thin Tauri window over the engine (`p2pds::app::Engine`), hosted in
//! this process. Commands call the engine; the engine's events reach the window through one
//! forwarder, which also keeps the tray icon true and raises desktop notifications.
//!
//! Closing the window releases it entirely (the web view and its processes; see [`window`]):
//! the engine and the tray keep running, and "Open" builds the window anew. "Quit" stops the
//! engine and exits. Started with `--hidden` (start at login), no window is built at all.
//!
//! Options (or the environment variables the `p2pds` command reads): `--data-dir DIR`
//! (`P2PDS_DATA_DIR`), `--plc-url URL` (`P2PDS_PLC_URL`), `--resolver-url URL`
//! (`P2PDS_RESOLVER_URL`). Without `--data-dir`, the folder the copies were moved to in the app
//! (the `location` file, see [`location`]) is used, else the per-user data folder.
//!
//! Moving the copies restarts the app: the `move_storage` command records the new folder, asks
//! the app to exit, and on exit starts it again (shown, even if it was started `--hidden`).

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;
mod location;
mod tray;
mod window;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use p2pds::app::dto::Event;
use p2pds::app::{Engine, EngineConfig};
use tauri::{Emitter, Manager};

/// When this process started (for the startup figure).
pub static STARTED: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

/// Start again once the app has exited (after a move of the storage folder).
static RESTART: AtomicBool = AtomicBool::new(false);

/// What the commands reach.
pub struct AppState {
    pub engine: Engine,
    /// The file recording where the copies were moved to.
    pub location_file: Option<PathBuf>,
    /// The per-user data folder (moving back there needs no record).
    pub default_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    std::sync::LazyLock::force(&STARTED);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("P2PDS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2pds-desktop: {e}");
            // Started from a menu, nobody reads the terminal: say it on the desktop too.
            let _ = notify_rust::Notification::new()
                .appname("P2PDS")
                .summary("P2PDS could not start")
                .body(&e.to_string())
                .show();
            ExitCode::FAILURE
        }
    }
}

/// `--NAME VALUE` from the command line, else the environment variable.
fn option(args: &[String], name: &str, var: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var(var).ok())
}

/// The engine's configuration, and whether the data folder is fixed by an option.
fn config(args: &[String]) -> Result<(EngineConfig, bool), String> {
    let dir = location::data_dir(option(args, "--data-dir", "P2PDS_DATA_DIR"))?;
    let config = EngineConfig {
        data_dir: dir.path,
        plc_url: option(args, "--plc-url", "P2PDS_PLC_URL")
            .unwrap_or_else(|| p2pds::identity::DEFAULT_PLC_URL.to_string()),
        resolver_url: option(args, "--resolver-url", "P2PDS_RESOLVER_URL"),
    };
    Ok((config, dir.fixed))
}

/// Asks the app to exit and start again (a moment later, so the command's answer reaches
/// the window first).
pub fn restart_soon(app: &tauri::AppHandle) {
    RESTART.store(true, Ordering::SeqCst);
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        app.exit(0);
    });
}

/// Starts the app again, with the same options but shown.
fn relaunch(app: &tauri::AppHandle) {
    let env = app.env();
    let exe = match tauri::process::current_binary(&env) {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("p2pds-desktop: can't find the app to start it again: {e}");
            return;
        }
    };
    let args = env.args_os.iter().skip(1).filter(|a| *a != "--hidden");
    if let Err(e) = std::process::Command::new(exe).args(args).spawn() {
        eprintln!("p2pds-desktop: can't start the app again: {e}");
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let hidden = args.iter().any(|a| a == "--hidden");
    let (config, fixed) = config(&args)?;
    let engine = Engine::open(config)?;
    engine.set_location_fixed(fixed);
    let for_exit = engine.clone();
    let app = tauri::Builder::default()
        .manage(AppState {
            engine: engine.clone(),
            location_file: p2pds::app::platform::location_file(),
            default_dir: p2pds::app::platform::default_data_dir(),
        })
        .setup(move |app| {
            let handle = app.handle().clone();
            tray::build(&handle)?;
            window::bench_signals(&handle);
            forward(&handle, engine.clone());
            let e = engine.clone();
            tauri::async_runtime::spawn(async move { e.run().await });
            if !hidden {
                window::open(&handle)?;
            }
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            commands::overview,
            commands::sign_in,
            commands::skip_sign_in,
            commands::start_browser_sign_in,
            commands::finish_browser_sign_in,
            commands::cancel_browser_sign_in,
            commands::sign_out,
            commands::add_friend,
            commands::remove_friend,
            commands::sync_now,
            commands::pause,
            commands::resume,
            commands::create_circle,
            commands::accept_invitation,
            commands::decline_invitation,
            commands::leave_circle,
            commands::circle_health,
            commands::dismiss_flags,
            commands::reclaimable,
            commands::collect_garbage,
            commands::recovery_key_status,
            commands::add_recovery_key,
            commands::start_recovery_consent,
            commands::finish_recovery_consent,
            commands::cancel_recovery_consent,
            commands::restore_choice,
            commands::restore_account,
            commands::get_settings,
            commands::save_settings,
            commands::move_storage,
            commands::delete_old_copy,
            commands::open_help,
            commands::ready,
        ])
        .build(tauri::generate_context!())?;
    app.run(move |handle, event| {
        // The last window closed: keep running in the tray ("Quit" exits with a code).
        if let tauri::RunEvent::ExitRequested {
            code: None, api, ..
        } = &event
        {
            api.prevent_exit();
        }
        if let tauri::RunEvent::Exit = event {
            for_exit.stop();
            if RESTART.load(Ordering::SeqCst) {
                // Let the server give up its port before the new instance asks for it.
                std::thread::sleep(std::time::Duration::from_millis(300));
                relaunch(handle);
            }
        }
    });
    Ok(())
}

/// The one forwarder: engine events to the window, the tray and notifications.
fn forward(app: &tauri::AppHandle, engine: Engine) {
    let mut rx = engine.subscribe();
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        loop {
            let event = match rx.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Event::Changed,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            match &event {
                Event::Changed => {
                    if let Ok(o) = engine.overview().await {
                        tray::show(&app, &o);
                    }
                }
                Event::Alert { title, body, .. } => notify(&engine, title, body).await,
                Event::Progress { .. } | Event::Moving { .. } | Event::Restoring { .. } => {}
            }
            let _ = app.emit("engine", &event);
        }
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_come_from_the_command_line_before_the_environment() {
        let args: Vec<String> = ["app", "--data-dir", "/x", "--hidden"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            option(&args, "--data-dir", "P2PDS_TEST_UNSET_VAR"),
            Some("/x".into())
        );
        assert_eq!(option(&args, "--plc-url", "P2PDS_TEST_UNSET_VAR"), None);
        let (c, fixed) = config(&args).unwrap();
        assert_eq!(c.data_dir, std::path::PathBuf::from("/x"));
        assert!(fixed);
    }
}
