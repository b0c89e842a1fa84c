//! P2PDS desktop app: this process hosts the engine (`p2pds::app::Engine`), the tray icon and
//! desktop notifications, and loads no web view. The window is a process of its own
//! (`p2pds-window`, in `src/bin/p2pds-window/`), started when it is opened and ended when it is
//! closed; its page's commands and the engine's events cross a Unix socket ([`ipc`], answered
//! by [`commands`]). So the app in the tray costs what the engine costs.
//!
//! "Quit" (or SIGTERM / SIGINT) stops the engine, closes the window and exits. Started with
//! `--hidden` (start at login), no window is opened. Started again while it runs on the same
//! data folder, it asks the running app to show its window and exits. Given an invitation link
//! (`p2pds:…`, as the system opens one with the app), the window opens at it.
//!
//! Options (or the environment variables the `p2pds` command reads): `--data-dir DIR`
//! (`P2PDS_DATA_DIR`), `--plc-url URL` (`P2PDS_PLC_URL`), `--resolver-url URL`
//! (`P2PDS_RESOLVER_URL`), `--backlink-index URL` (`P2PDS_BACKLINK_INDEX`). Without
//! `--data-dir`, the folder the copies were moved to in the app (the `location` file, see
//! [`location`]) is used, else the per-user data folder.
//!
//! Moving the copies restarts the app: the `move_storage` command records the new folder and
//! quits; on the way out the app starts again (shown, even if it was started `--hidden`).
//!
//! [`ipc`]: p2pds_desktop::ipc

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

#[cfg(unix)]
mod commands;
#[cfg(unix)]
mod host;
mod location;
#[cfg(unix)]
mod tray;
#[cfg(unix)]
mod window;

use std::process::ExitCode;

use p2pds::app::EngineConfig;

/// When this process started, in milliseconds since the epoch (for the start-up figure).
#[cfg(unix)]
pub static STARTED_AT: std::sync::LazyLock<u128> = std::sync::LazyLock::new(window::now_ms);

fn main() -> ExitCode {
    #[cfg(unix)]
    std::sync::LazyLock::force(&STARTED_AT);
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
        backlink_index: option(args, "--backlink-index", "P2PDS_BACKLINK_INDEX"),
    };
    Ok((config, dir.fixed))
}

#[cfg(not(unix))]
fn run() -> Result<(), Box<dyn std::error::Error>> {
    Err("the desktop app runs on Linux and macOS only for now; use the p2pds command".into())
}

#[cfg(unix)]
fn run() -> Result<(), Box<dyn std::error::Error>> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let args: Vec<String> = std::env::args().collect();
    let hidden = args.iter().any(|a| a == "--hidden");
    // An invitation link the system opens with the app (the desktop entry's `%u`).
    let link = args
        .iter()
        .skip(1)
        .find(|a| a.starts_with("p2pds:"))
        .cloned();
    let (config, fixed) = config(&args)?;
    let socket = p2pds_desktop::ipc::socket_for(&config.data_dir)?;
    // Already running on this folder: show its window (start at login: nothing to do).
    if hidden && host::running(&socket) {
        return Ok(());
    }
    if !hidden && host::ask_running_to_open(&socket, link.as_deref()) {
        eprintln!("p2pds-desktop: already running; showing its window");
        return Ok(());
    }
    let data_dir = config.data_dir.clone();
    let engine = p2pds::app::Engine::open(config)?;
    // Named after the folder as it now exists (a second start finds it however it is spelled).
    let socket = p2pds_desktop::ipc::socket_for(&data_dir)?;
    engine.set_location_fixed(fixed);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let host = Arc::new(host::Host {
        engine: engine.clone(),
        window: window::Window::new(window::Window::beside_this_program()?, socket.clone()),
        location_file: p2pds::app::platform::location_file(),
        default_dir: p2pds::app::platform::default_data_dir(),
        quit: tokio_util::sync::CancellationToken::new(),
        restart: AtomicBool::new(false),
        pending_link: std::sync::Mutex::new(None),
    });
    rt.block_on(async {
        // This process holds the data folder's lock: a socket file left there is stale.
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket)?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
        let owner = std::fs::metadata(&socket)?.uid();
        let tray = tray::start(host.clone()).await;
        let serving = tokio::spawn(host::serve(host.clone(), listener, owner));
        let forwarding = tokio::spawn(host::forward(host.clone(), tray));
        tokio::spawn(host::signals(host.clone()));
        let e = engine.clone();
        let running = tokio::spawn(async move { e.run().await });
        match &link {
            Some(link) => host.open_link(link),
            None if !hidden => host.window.open(),
            None => {}
        }
        host.quit.cancelled().await;
        host.window.close();
        engine.stop();
        let _ = running.await;
        let _ = serving.await;
        let _ = forwarding.await;
        // Let the window process read its order to close.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let _ = std::fs::remove_file(&socket);
        Ok::<_, std::io::Error>(())
    })?;
    // Work still running on blocking threads (a notification, a copy) gets a moment, not
    // forever: Quit must quit.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    let restart = host.restart.load(Ordering::SeqCst);
    // The data folder's lock goes with the last handle on the engine.
    drop(host);
    drop(engine);
    if restart {
        // Let the server give up its port before the new instance asks for it.
        std::thread::sleep(std::time::Duration::from_millis(300));
        relaunch(&args);
    }
    Ok(())
}

/// Starts the app again, with the same options but shown.
#[cfg(unix)]
fn relaunch(args: &[String]) {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("p2pds-desktop: can't find the app to start it again: {e}");
            return;
        }
    };
    // Shown, and without the invitation link it may have been opened with (already taken).
    let args = args
        .iter()
        .skip(1)
        .filter(|a| *a != "--hidden" && !a.starts_with("p2pds:"));
    if let Err(e) = std::process::Command::new(exe).args(args).spawn() {
        eprintln!("p2pds-desktop: can't start the app again: {e}");
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
