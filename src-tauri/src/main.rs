//! P2PDS desktop shell: a thin Tauri window over the `p2pds` engine.
//!
//! For now it only shows a placeholder page (`ui/index.html`); the engine is driven
//! from the `p2pds` command.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2pds-desktop: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> tauri::Result<()> {
    tauri::Builder::default().run(tauri::generate_context!())
}
