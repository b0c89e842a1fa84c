//! What the app asks of the operating system: whether it runs on battery, and starting at
//! login. Linux (freedesktop) is implemented; elsewhere the app says it is not available.

use std::path::PathBuf;

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
    let exe = std::env::current_exe()
        .map_err(|e| format!("could not find the app's program file: {e}"))?;
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
}
