//! The start-up program of the P2PDS AppImage. An AppImage (type 2) is this program with a
//! SquashFS file system after it and the AppImage mark in its header. This one needs no FUSE:
//! the first start of an image unpacks it into the user's cache folder
//! (`$XDG_CACHE_HOME/p2pds/appimage/KEY`, KEY naming the image's contents), later starts use
//! that copy, and it runs the image's `AppRun` with `APPIMAGE` (this file), `APPDIR`, `ARGV0`
//! and `OWD` set, as AppImages do. The copies of other images that no program runs from any
//! more are removed, so updating the AppImage does not pile copies up.
//!   P2PDS.AppImage [ARGS…]             runs the app
//!   P2PDS.AppImage --appimage-extract  unpacks the image into ./squashfs-root
//!   P2PDS.AppImage --appimage-offset   prints where the file system starts
//!   P2PDS.AppImage --appimage-help

mod cache;
mod image;

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const HELP: &str = "\
This is P2PDS as an AppImage: open it to start the app.
  --appimage-extract  unpack the app into ./squashfs-root
  --appimage-offset   print where the app's file system starts in this file
  --appimage-help     this help
Any other arguments go to the app (p2pds-desktop --help).
The first start unpacks the app into your cache folder (about the size of this file);
copies left by older versions are removed once nothing runs from them.";

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let rest: Vec<OsString> = args.collect();
    let outcome = match rest.first().and_then(|a| a.to_str()) {
        Some("--appimage-help") => {
            println!("{HELP}");
            Ok(())
        }
        Some("--appimage-offset") => this_image().map(|(_, _, offset)| println!("{offset}")),
        Some("--appimage-extract") if rest.len() == 1 => extract_here(),
        Some(a) if a.starts_with("--appimage-") => {
            eprintln!("P2PDS: {a} is not an option of this AppImage\n{HELP}");
            return ExitCode::from(2);
        }
        _ => run(argv0, rest),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e = format!("P2PDS could not start: {e}");
            eprintln!("{e}");
            tell_the_desktop(&e);
            ExitCode::FAILURE
        }
    }
}

/// This file, opened, and where its file system starts.
fn this_image() -> Result<(PathBuf, File, u64), String> {
    let me = std::env::current_exe().map_err(|e| format!("can't find its own file ({e})"))?;
    let mut file = File::open(&me).map_err(|e| format!("can't read {} ({e})", me.display()))?;
    let offset = image::payload_offset(&mut file).map_err(|e| {
        format!(
            "{} is damaged: {e}. Download the AppImage again.",
            me.display()
        )
    })?;
    Ok((me, file, offset))
}

fn extract_here() -> Result<(), String> {
    let (_, file, offset) = this_image()?;
    let to = Path::new("squashfs-root");
    if to.exists() {
        return Err("./squashfs-root is already there: move it away first".into());
    }
    image::unpack(file, offset, to)
        .map_err(|e| format!("can't unpack into ./squashfs-root ({e})"))?;
    println!("squashfs-root");
    Ok(())
}

/// Unpacks the image into the cache (once), then becomes its `AppRun`.
fn run(argv0: OsString, args: Vec<OsString>) -> Result<(), String> {
    let (me, mut file, offset) = this_image()?;
    let key = image::key(&mut file, offset).map_err(|e| format!("can't read the app ({e})"))?;
    let base = cache::folder()?;
    let dir = cache::unpacked(&base, &key, file, offset)?;
    cache::sweep(&base, &key);
    let app_run = dir.join("AppRun");
    let owd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let e = Command::new(&app_run)
        .args(args)
        .env("APPIMAGE", &me)
        .env("APPDIR", &dir)
        .env("ARGV0", argv0)
        .env("OWD", owd)
        .exec();
    Err(format!("can't run {} ({e})", app_run.display()))
}

/// A person who started the app from their file manager sees no terminal: say it on the
/// desktop too, if it has a notification service (best effort).
fn tell_the_desktop(message: &str) {
    let _ = Command::new("notify-send")
        .args(["--app-name=P2PDS", "P2PDS could not start", message])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}
