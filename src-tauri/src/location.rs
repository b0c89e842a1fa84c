//! Where the copies are kept: `--data-dir` / `P2PDS_DATA_DIR` (fixed: the app can't move it),
//! else the folder named by the `location` file in the per-user config folder (written after a
//! move, see `p2pds::app::platform`), else the per-user data folder.

use std::path::{Path, PathBuf};

use p2pds::app::{platform, relocate};

/// The data folder, and whether it was fixed by the command line or the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    pub path: PathBuf,
    pub fixed: bool,
}

/// The choice, from what was found: the option, the location file (its path and what it
/// names), the default folder.
pub fn resolve(
    option: Option<String>,
    pointer: Option<(&Path, Result<Option<PathBuf>, String>)>,
    default: Option<PathBuf>,
) -> Result<DataDir, String> {
    if let Some(d) = option {
        return Ok(DataDir {
            path: d.into(),
            fixed: true,
        });
    }
    if let Some((file, named)) = pointer {
        if let Some(dir) = named? {
            // Written only after a whole, checked copy: a folder without one is a disk that is
            // not connected (or a copy deleted by hand), not a place to start an empty store.
            if !relocate::has_store(&dir) {
                return Err(format!(
                    "Your copies are kept in {}, but P2PDS can't find them there. If that folder is on an external disk, connect it and start P2PDS again. To use the usual folder instead, delete the file {}.",
                    dir.display(),
                    file.display()
                ));
            }
            return Ok(DataDir {
                path: dir,
                fixed: false,
            });
        }
    }
    default
        .map(|path| DataDir { path, fixed: false })
        .ok_or_else(|| "no per-user data folder on this system: set P2PDS_DATA_DIR".into())
}

/// The data folder for this start.
pub fn data_dir(option: Option<String>) -> Result<DataDir, String> {
    let file = platform::location_file();
    let pointer = file.as_deref().map(|f| (f, platform::read_location(f)));
    resolve(option, pointer, platform::default_data_dir())
}

/// After a move to `dir`: the next start uses it (the default folder needs no file).
pub fn record(file: Option<&Path>, default: Option<&Path>, dir: &Path) -> Result<(), String> {
    let file =
        file.ok_or("this system has no per-user settings folder to record the new place in")?;
    if default.is_some_and(|d| relocate::same_dir(d, dir)) {
        platform::clear_location(file)
    } else {
        platform::write_location(file, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder under the system's temporary folder.
    fn scratch(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "p2pds-location-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_option_then_the_location_file_then_the_default() {
        let root = scratch("resolve");
        let file = root.join("config/location");
        let default = root.join("default");
        let moved = root.join("moved");
        std::fs::create_dir_all(&moved).unwrap();
        std::fs::write(moved.join("p2pds.sqlite"), b"").unwrap();

        // The option wins, and is fixed.
        let d = resolve(
            Some("/x".into()),
            Some((&file, Ok(Some(moved.clone())))),
            Some(default.clone()),
        )
        .unwrap();
        assert_eq!(
            d,
            DataDir {
                path: "/x".into(),
                fixed: true
            }
        );
        // No file: the default.
        let d = resolve(None, Some((&file, Ok(None))), Some(default.clone())).unwrap();
        assert_eq!(
            d,
            DataDir {
                path: default.clone(),
                fixed: false
            }
        );
        // The file, written after a move, wins over the default.
        record(Some(&file), Some(&default), &moved).unwrap();
        let d = resolve(
            None,
            Some((&file, platform::read_location(&file))),
            Some(default.clone()),
        )
        .unwrap();
        assert_eq!(
            d,
            DataDir {
                path: moved.clone(),
                fixed: false
            }
        );
        // Naming a folder without a copy (a disk not connected): refused, in words.
        let gone = root.join("unplugged");
        let e = resolve(None, Some((&file, Ok(Some(gone)))), Some(default.clone())).unwrap_err();
        assert!(e.contains("connect it") && e.contains("location"), "{e}");
        // An unreadable file is an error too, not a silent fallback.
        assert!(resolve(
            None,
            Some((&file, Err("bad".into()))),
            Some(default.clone())
        )
        .is_err());
        // Moving back to the default folder removes the file.
        record(Some(&file), Some(&default), &default).unwrap();
        assert!(!file.exists());
        assert!(resolve(None, None, None).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
