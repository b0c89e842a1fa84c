//! What the app asks of the operating system: whether it runs on battery, starting at login
//! (Linux (freedesktop) is implemented; elsewhere the app says it is not available), and where
//! the copies are kept after the person moved them (the `location` file).

use std::io::Write;
use std::path::{Path, PathBuf};

/// The computer runs on battery: it has a battery and no mains supply is online. Unknown
/// (no power-supply information) counts as not on battery.
pub fn on_battery() -> bool {
    let Ok(entries) = std::fs::read_dir("/sys/class/power_supply") else {
        return false;
    };
    let mut battery = false;
    let mut mains_online = false;
    for e in entries.flatten() {
        let read = |name: &str| {
            std::fs::read_to_string(e.path().join(name))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        match read("type").as_str() {
            "Battery" => battery = true,
            "Mains" | "USB" => mains_online |= read("online") == "1",
            _ => {}
        }
    }
    battery && !mains_online
}

fn autostart_file() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("autostart").join("org.p2pds.desktop.desktop"))
}

/// Starts the app at login (hidden, in the tray) or stops doing so.
pub fn set_autostart(enabled: bool) -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return if enabled {
            Err("starting at login is not available on this system yet".into())
        } else {
            Ok(())
        };
    }
    let file = autostart_file().ok_or("no home folder to keep the start-at-login setting in")?;
    if !enabled {
        return match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("could not turn off start at login: {e}")),
        };
    }
    let exe = program_to_start(
        std::env::var_os("APPIMAGE"),
        std::env::current_exe()
            .map_err(|e| format!("could not find the app's program file: {e}"))?,
    );
    let text = format!(
        "[Desktop Entry]\nType=Application\nName=P2PDS\nComment=Keep copies of your friends' accounts safe\nExec=\"{}\" --hidden\nX-GNOME-Autostart-enabled=true\n",
        exe.display()
    );
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("could not turn on start at login: {e}"))?;
    }
    std::fs::write(&file, text).map_err(|e| format!("could not turn on start at login: {e}"))
}

/// The program a login starts: the AppImage file when the app runs from one (its start-up
/// program sets `APPIMAGE`; the running program is a copy unpacked into the cache, replaced
/// when the AppImage is), else the running program.
fn program_to_start(appimage: Option<std::ffi::OsString>, exe: PathBuf) -> PathBuf {
    appimage
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_file())
        .unwrap_or(exe)
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("org", "p2pds", "p2pds")
}

/// The per-user data folder: where the copies are kept unless told otherwise.
pub fn default_data_dir() -> Option<PathBuf> {
    project_dirs().map(|d| d.data_dir().to_path_buf())
}

/// The file naming the folder the copies were moved to: `location` in the per-user config
/// folder (not in the data folder, which it points away from).
pub fn location_file() -> Option<PathBuf> {
    project_dirs().map(|d| d.config_dir().join("location"))
}

/// The folder a location file names; `None` when there is no file, or it is empty.
pub fn read_location(file: &Path) -> Result<Option<PathBuf>, String> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "P2PDS can't read {} ({e}), the file that says where your copies are kept.",
                file.display()
            ))
        }
    };
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.trim().is_empty() {
        return Ok(None);
    }
    let dir = PathBuf::from(line);
    if !dir.is_absolute() {
        return Err(format!(
            "{} should name a folder by its full path, but says \u{201c}{line}\u{201d}. Delete that file to use the usual folder.",
            file.display()
        ));
    }
    Ok(Some(dir))
}

/// Records the folder the copies are kept in, atomically: a temporary file, synced, renamed
/// over the old one.
pub fn write_location(file: &Path, dir: &Path) -> Result<(), String> {
    let text = dir
        .to_str()
        .ok_or("the folder's name has characters P2PDS can't record")?;
    let fail = |e: std::io::Error| {
        format!(
            "P2PDS can't record the new folder in {} ({e}).",
            file.display()
        )
    };
    let parent = file
        .parent()
        .ok_or_else(|| fail(std::io::ErrorKind::NotFound.into()))?;
    std::fs::create_dir_all(parent).map_err(fail)?;
    let tmp = file.with_extension("tmp");
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)?;
        #[cfg(unix)]
        std::fs::File::open(parent)?.sync_all()?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(fail)
}

/// Forgets the recorded folder: the usual one is used again.
pub fn clear_location(file: &Path) -> Result<(), String> {
    match std::fs::remove_file(file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("P2PDS can't remove {} ({e}).", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn start_at_login_writes_and_removes_an_autostart_entry() {
        let dir = tempfile::tempdir().unwrap();
        // Only this test reads XDG_CONFIG_HOME in this process.
        std::env::set_var("XDG_CONFIG_HOME", dir.path());
        set_autostart(true).unwrap();
        let file = dir.path().join("autostart/org.p2pds.desktop.desktop");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("--hidden") && text.contains("[Desktop Entry]"));
        set_autostart(false).unwrap();
        assert!(!file.exists());
        set_autostart(false).unwrap();
    }

    #[test]
    fn from_an_appimage_the_login_starts_the_appimage() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("P2PDS-x86_64.AppImage");
        std::fs::write(&image, "x").unwrap();
        let exe = PathBuf::from("/home/a/.cache/p2pds/appimage/0123/usr/bin/p2pds-desktop");
        assert_eq!(
            program_to_start(Some(image.clone().into()), exe.clone()),
            image
        );
        assert_eq!(program_to_start(None, exe.clone()), exe);
        // Not a file, or not a full path: the running program.
        let gone = dir.path().join("gone.AppImage");
        assert_eq!(program_to_start(Some(gone.into()), exe.clone()), exe);
        assert_eq!(
            program_to_start(Some("P2PDS.AppImage".into()), exe.clone()),
            exe
        );
    }

    #[test]
    fn the_location_file_is_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config/location");
        assert_eq!(read_location(&file).unwrap(), None);
        let target = dir.path().join("Backups/p2pds");
        write_location(&file, &target).unwrap();
        assert_eq!(read_location(&file).unwrap(), Some(target.clone()));
        assert!(!file.with_extension("tmp").exists());
        // Rewritten in place.
        let other = dir.path().join("elsewhere");
        write_location(&file, &other).unwrap();
        assert_eq!(read_location(&file).unwrap(), Some(other));
        std::fs::write(&file, "\n").unwrap();
        assert_eq!(read_location(&file).unwrap(), None);
        std::fs::write(&file, "relative/dir\n").unwrap();
        assert!(read_location(&file).unwrap_err().contains("full path"));
        clear_location(&file).unwrap();
        clear_location(&file).unwrap();
        assert_eq!(read_location(&file).unwrap(), None);
    }
}
