//! The unpacked copies of images in the user's cache folder: one folder per image contents,
//! made whole or not at all, and removed once no program runs from it.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::image;

/// `$XDG_CACHE_HOME/p2pds/appimage` (else `~/.cache/…`), made if missing.
pub fn folder() -> Result<PathBuf, String> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or("there is no home folder to unpack the app into (HOME is not set)")?;
    let base = cache.join("p2pds").join("appimage");
    std::fs::create_dir_all(&base).map_err(|e| format!("can't make {} ({e})", base.display()))?;
    Ok(base)
}

/// The folder holding the image `key` unpacked, unpacking it first if it is not there. The
/// unpacking goes to a folder of this process's own, renamed into place when whole, so a
/// folder named by a key is always complete (a crash leaves only a partial folder, removed
/// later by [`sweep`]); when two starts race, the first rename wins and the other's copy goes.
pub fn unpacked(base: &Path, key: &str, file: File, offset: u64) -> Result<PathBuf, String> {
    let dir = base.join(key);
    if dir.is_dir() {
        return Ok(dir);
    }
    let partial = base.join(format!(".{key}.{}.partial", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    if let Err(e) = image::unpack(file, offset, &partial) {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(if e.kind() == std::io::ErrorKind::InvalidData {
            format!("the AppImage is damaged: {e}. Download it again.")
        } else {
            format!(
                "can't unpack the app into {} ({e}); is the disk full?",
                base.display()
            )
        });
    }
    if let Err(e) = std::fs::rename(&partial, &dir) {
        let _ = std::fs::remove_dir_all(&partial);
        if !dir.is_dir() {
            return Err(format!("can't unpack the app into {} ({e})", dir.display()));
        }
    }
    Ok(dir)
}

/// Removes what other images left in `base`: copies no running program was started from, and
/// partial unpackings whose process has ended. Best effort: what can't be removed stays.
pub fn sweep(base: &Path, keep: &str) {
    sweep_given(base, keep, &running_programs());
}

/// [`sweep`], with the program files of the running processes given.
fn sweep_given(base: &Path, keep: &str, running: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == keep {
            continue;
        }
        let path = entry.path();
        let remove = match partial_pid(name) {
            Some(pid) => !Path::new("/proc").join(pid.to_string()).exists(),
            None => !running.iter().any(|p| p.starts_with(&path)),
        };
        if remove {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The process that is unpacking into a partial folder (`.KEY.PID.partial`).
fn partial_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".partial")?;
    rest.rsplit('.').next()?.parse().ok()
}

/// The program files of the processes this user can see (`/proc/PID/exe`).
fn running_programs() -> Vec<PathBuf> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_link(e.path().join("exe")).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_other_images_go_unless_a_program_runs_from_them() {
        let base = tempfile::tempdir().unwrap();
        let b = base.path();
        let live = format!(".eeee.{}.partial", std::process::id());
        for d in [
            "aaaa",
            "bbbb",
            "dddd",
            ".cccc.999999999.partial",
            live.as_str(),
        ] {
            std::fs::create_dir(b.join(d)).unwrap();
            std::fs::write(b.join(d).join("AppRun"), "x").unwrap();
        }
        let running = [
            PathBuf::from("/usr/bin/bash"),
            b.join("dddd").join("AppRun"),
        ];
        sweep_given(b, "aaaa", &running);
        assert!(b.join("aaaa").is_dir(), "the current copy stays");
        assert!(
            !b.join("bbbb").exists(),
            "an older copy nothing runs from goes"
        );
        assert!(
            b.join("dddd").is_dir(),
            "an older copy a program runs from stays"
        );
        assert!(
            !b.join(".cccc.999999999.partial").exists(),
            "an ended unpacking goes"
        );
        assert!(b.join(&live).is_dir(), "an unpacking under way stays");
    }

    #[test]
    fn the_running_programs_are_read_from_proc() {
        let me = std::env::current_exe().unwrap();
        assert!(running_programs().contains(&me));
    }

    #[test]
    fn partial_folders_name_their_process() {
        assert_eq!(partial_pid(".0123abcd.4242.partial"), Some(4242));
        assert_eq!(partial_pid("0123abcd"), None);
        assert_eq!(partial_pid(".x.partial"), None);
    }
}
