//! The P2PDS window: the web view of the app, a process of its own. `p2pds-desktop` starts it
//! with `--socket PATH` when the window is opened; closing the window ends it (and its web
//! processes). The page's commands go to the app over the socket and come back answered; the
//! engine's events come the other way and reach the page as the `engine` event. When the app
//! goes away (Quit, or it ended), the window closes too.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

#[cfg(unix)]
mod bridge;

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(socket) = args
        .iter()
        .position(|a| a == "--socket")
        .and_then(|i| args.get(i + 1))
    else {
        eprintln!("p2pds-window: this is the window of P2PDS; start p2pds-desktop instead");
        return std::process::ExitCode::FAILURE;
    };
    // Without a display the toolkit would panic deep inside tauri: say it in a sentence.
    #[cfg(target_os = "linux")]
    if let Err(e) = gtk::init() {
        eprintln!(
            "p2pds-window: there is no display to show the window on ({e}); the app keeps \
             running in the background. Open it from a desktop session."
        );
        return std::process::ExitCode::FAILURE;
    }
    match bridge::run(std::path::Path::new(socket)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2pds-window: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    eprintln!("p2pds-window: the desktop app runs on Linux and macOS only for now");
    std::process::ExitCode::FAILURE
}
