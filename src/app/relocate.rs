//! Moving the storage folder, with nothing lost and nothing half-written: checks of the new
//! folder, a consistent copy of the database (`VACUUM INTO` on the store's writer thread, so no
//! write lands in the middle), the image files (each copied to a temporary name, synced, then
//! renamed), a check of the copy (`PRAGMA integrity_check`, the same rows in every table, every
//! image file there with its size), and only then the database renamed into place: a folder
//! with a `p2pds.sqlite` in it always holds a whole copy. The old folder is never touched here.
//!
//! Synchronous: the engine runs these on blocking threads, with its own work paused.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

/// The database's file name in a data folder.
pub const DB_FILE: &str = "p2pds.sqlite";
/// The database while it is being copied (renamed to [`DB_FILE`] once checked).
const DB_TMP: &str = "p2pds.sqlite.moving";
/// The image files.
const BLOBS: &str = "blobs";
/// What P2PDS keeps in a data folder (all of it goes when an old copy is deleted).
const OWNED: [&str; 8] = [
    DB_FILE,
    crate::store::lock::LOCK_FILE,
    "p2pds.sqlite-wal",
    "p2pds.sqlite-shm",
    "p2pds.sqlite-journal",
    DB_TMP,
    BLOBS,
    "tmp",
];
/// A folder to show in messages, in this system's style.
const EXAMPLE: &str = if cfg!(windows) {
    "D:\\Backups\\P2PDS"
} else {
    "/home/alice/Backups/P2PDS"
};
/// Room left free on the new disk beyond the copy itself.
const MARGIN_BYTES: u64 = 64 * 1024 * 1024;

/// A move, checked and ready to copy.
#[derive(Debug, Clone)]
pub struct Plan {
    pub from: PathBuf,
    pub to: PathBuf,
    /// The new folder did not exist (it is removed again if the move fails).
    created_dir: bool,
    /// `blobs/` did not exist in the new folder.
    created_blobs: bool,
    /// Image files to copy (path under `blobs/`, size).
    pub files: Vec<(PathBuf, u64)>,
    pub blob_bytes: u64,
    pub db_bytes: u64,
}

impl Plan {
    pub fn total_bytes(&self) -> u64 {
        self.blob_bytes + self.db_bytes
    }
}

/// Rows in every table of the snapshot, to compare the copy with.
pub type RowCounts = BTreeMap<String, i64>;

/// The folder the person typed: a full path, or one starting with `~` (the home folder).
pub fn target_path(input: &str, home: Option<&Path>) -> Result<PathBuf, String> {
    let t = input.trim();
    if t.is_empty() {
        return Err(format!(
            "Type the full path of the new folder, like {EXAMPLE}."
        ));
    }
    let path = if t == "~" || t.starts_with("~/") || t.starts_with("~\\") {
        let home = home.ok_or("This computer has no home folder: type the full path instead.")?;
        let rest = t.get(2..).unwrap_or("");
        if rest.is_empty() {
            home.to_path_buf()
        } else {
            home.join(rest)
        }
    } else {
        PathBuf::from(t)
    };
    if !path.is_absolute() {
        return Err(format!(
            "\u{201c}{t}\u{201d} is not a full path. Type the whole path of the folder, starting from the top, like {EXAMPLE}."
        ));
    }
    Ok(normalize(&path))
}

/// `.` and `..` resolved without asking the disk.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The real path of `path`, resolving links in the part that exists.
fn resolve(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if let Ok(real) = cur.canonicalize() {
            let mut out = real;
            for m in missing.iter().rev() {
                out.push(m);
            }
            return out;
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(name), Some(parent)) => {
                missing.push(name);
                cur = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The same folder (after links), as far as can be told.
pub fn same_dir(a: &Path, b: &Path) -> bool {
    resolve(a) == resolve(b)
}

/// The folder holds a P2PDS store.
pub fn has_store(dir: &Path) -> bool {
    dir.join(DB_FILE).is_file()
}

/// The refusals that only look at the folders: the same folder, one inside the other, a file,
/// or a folder with other things in it.
pub fn check_target(current: &Path, target: &Path) -> Result<(), String> {
    let (cur, tgt) = (resolve(current), resolve(target));
    let shown = target.display();
    if cur == tgt {
        return Err(format!("Your copies are already kept in {shown}."));
    }
    if tgt.starts_with(&cur) {
        return Err(format!(
            "The new folder can't be inside the folder the copies are in now ({}). Pick a folder somewhere else.",
            current.display()
        ));
    }
    if cur.starts_with(&tgt) {
        return Err(format!(
            "The new folder can't contain the folder the copies are in now ({}). Pick an empty folder, or type a new folder name.",
            current.display()
        ));
    }
    match std::fs::metadata(target) {
        Ok(m) if !m.is_dir() => Err(format!(
            "{shown} is a file, not a folder. Type the path of a folder."
        )),
        Ok(_) => {
            let mut entries = std::fs::read_dir(target).map_err(|e| {
                format!("P2PDS can't look into {shown} ({e}). Check that you may use that folder.")
            })?;
            if entries.next().is_some() && !has_store(target) {
                return Err(format!(
                    "{shown} already has other files in it. Pick an empty folder, or type the name of a new folder (P2PDS creates it)."
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!(
            "P2PDS can't use {shown} ({e}). Check that the disk is connected and that you may use that folder."
        )),
    }
}

/// Every file under `dir` (relative path, size), in a stable order.
fn list_files(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let entries = match std::fs::read_dir(dir.join(&rel)) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel.as_os_str().is_empty() => {
                return Ok(out)
            }
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            let ty = e.file_type()?;
            let path = rel.join(e.file_name());
            if ty.is_dir() {
                stack.push(path);
            } else if ty.is_file() {
                out.push((path, e.metadata()?.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Bytes free for this user on the disk holding `dir`; `None` where the system can't say.
pub fn free_space(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let s = rustix::fs::statvfs(dir).ok()?;
        Some(s.f_bavail.saturating_mul(s.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Checks the new folder, creates it, and makes sure there is room and P2PDS may write there.
/// `free` tells the free space of a folder (the system's figure in the app; tests pass their own).
pub fn prepare(
    current: &Path,
    target: &Path,
    free: &dyn Fn(&Path) -> Option<u64>,
) -> Result<Plan, String> {
    check_target(current, target)?;
    let shown = target.display().to_string();
    if target.to_str().is_none() {
        return Err(format!(
            "{shown} has characters in its name that P2PDS can't use. Pick a folder with a plainer name."
        ));
    }
    let files = list_files(&current.join(BLOBS))
        .map_err(|e| format!("P2PDS can't read its image files ({e}). Nothing was moved."))?;
    let blob_bytes = files.iter().map(|(_, n)| n).sum();
    let db_bytes = file_len(&current.join(DB_FILE)) + file_len(&current.join("p2pds.sqlite-wal"));
    let created_dir = !target.exists();
    std::fs::create_dir_all(target).map_err(|e| {
        format!("P2PDS can't create the folder {shown} ({e}). Check the path, and that the disk is connected.")
    })?;
    let plan = Plan {
        from: current.to_path_buf(),
        to: target.to_path_buf(),
        created_dir,
        created_blobs: !target.join(BLOBS).exists(),
        files,
        blob_bytes,
        db_bytes,
    };
    let checked = (|| {
        // P2PDS may write there.
        let probe = target.join(".p2pds-probe");
        let written = File::create(&probe)
            .and_then(|mut f| f.write_all(b"p2pds").and_then(|()| f.sync_all()));
        let _ = std::fs::remove_file(&probe);
        written.map_err(|e| {
            format!("P2PDS can't write in {shown} ({e}). Pick a folder you may write to.")
        })?;
        if let Some(free) = free(target) {
            let need = plan.total_bytes() + MARGIN_BYTES;
            if free < need {
                return Err(format!(
                    "There is not enough room there: the copies need {}, and that disk has {} free. Free some space or pick another disk.",
                    super::words::size(need),
                    super::words::size(free)
                ));
            }
        }
        Ok(())
    })();
    if let Err(e) = checked {
        cleanup(&plan);
        return Err(e);
    }
    Ok(plan)
}

/// A consistent copy of the database at `plan.to/p2pds.sqlite.moving`, and its rows per table.
/// Runs on the store's writer connection, so no write happens while it copies.
pub fn snapshot(conn: &Connection, plan: &Plan) -> Result<RowCounts, String> {
    let tmp = plan.to.join(DB_TMP);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("P2PDS can't replace {} ({e}).", tmp.display())),
    }
    let name = tmp
        .to_str()
        .ok_or("The new folder's name has characters P2PDS can't use.")?;
    conn.execute("VACUUM INTO ?1", [name])
        .map_err(|e| format!("Copying the database failed ({e}). Nothing was moved."))?;
    row_counts(conn).map_err(|e| format!("Reading the database failed ({e}). Nothing was moved."))
}

fn row_counts(conn: &Connection) -> rusqlite::Result<RowCounts> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = RowCounts::new();
    for t in tables {
        let n: i64 = conn.query_row(
            &format!("SELECT count(*) FROM \"{}\"", t.replace('"', "\"\"")),
            [],
            |r| r.get(0),
        )?;
        out.insert(t, n);
    }
    Ok(out)
}

/// Copies `from` to `to` through a temporary name beside it: copied, synced, renamed.
fn copy_file(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(to.file_name().unwrap_or_default());
    tmp_name.push(".moving");
    let tmp = to.with_file_name(tmp_name);
    let result = (|| {
        std::fs::copy(from, &tmp)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, to)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Syncs a folder's entries (the renames in it) to disk, where the system allows it.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Copies the image files; `progress` gets the bytes done so far.
pub fn copy_blobs(plan: &Plan, progress: &mut dyn FnMut(u64)) -> Result<(), String> {
    let (from, to) = (plan.from.join(BLOBS), plan.to.join(BLOBS));
    let mut done = 0u64;
    let mut dirs = std::collections::BTreeSet::new();
    std::fs::create_dir_all(&to).map_err(|e| copy_error(&to, &e))?;
    dirs.insert(to.clone());
    for (rel, len) in &plan.files {
        let dest = to.join(rel);
        if let Some(parent) = dest.parent() {
            if dirs.insert(parent.to_path_buf()) {
                std::fs::create_dir_all(parent).map_err(|e| copy_error(parent, &e))?;
            }
        }
        copy_file(&from.join(rel), &dest).map_err(|e| copy_error(&dest, &e))?;
        done += len;
        progress(plan.db_bytes + done);
    }
    for d in &dirs {
        sync_dir(d).map_err(|e| copy_error(d, &e))?;
    }
    Ok(())
}

fn copy_error(path: &Path, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::StorageFull {
        "The new disk is full. Nothing was moved: free some space or pick another disk.".into()
    } else {
        format!(
            "Copying to {} failed ({e}). Nothing was moved: your copies stay where they were.",
            path.display()
        )
    }
}

/// Checks the copy and puts the database in place: the copied database is whole and has the
/// same rows as the snapshot, every image file is there with its size. `previous_key` names the
/// setting where the copy records the folder it came from (so the app can offer to delete it).
pub fn finish(plan: &Plan, counts: &RowCounts, previous_key: &str) -> Result<(u64, u64), String> {
    let tmp = plan.to.join(DB_TMP);
    let bad = |what: String| {
        format!("The copy did not check out ({what}). Nothing was moved: your copies stay where they were.")
    };
    {
        let conn = Connection::open_with_flags(&tmp, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|e| bad(format!("the copied database can't be opened: {e}")))?;
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| bad(format!("the copied database can't be read: {e}")))?;
        if check != "ok" {
            return Err(bad(format!("the copied database is damaged: {check}")));
        }
        let copied = row_counts(&conn).map_err(|e| bad(e.to_string()))?;
        if &copied != counts {
            return Err(bad("the copied database lacks some rows".into()));
        }
        let from = plan
            .from
            .to_str()
            .ok_or_else(|| bad("the old folder's name can't be recorded".into()))?;
        conn.execute(
            "INSERT INTO group_meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = ?2",
            [previous_key, from],
        )
        .map_err(|e| bad(format!("the copied database can't be written: {e}")))?;
    }
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| copy_error(&tmp, &e))?;
    let blobs = plan.to.join(BLOBS);
    for (rel, len) in &plan.files {
        let have = std::fs::metadata(blobs.join(rel)).map(|m| m.len()).ok();
        if have != Some(*len) {
            return Err(bad(format!("the image file {} differs", rel.display())));
        }
    }
    // A log or index left by an older database there must not be applied to this one.
    for stale in [
        "p2pds.sqlite-wal",
        "p2pds.sqlite-shm",
        "p2pds.sqlite-journal",
    ] {
        match std::fs::remove_file(plan.to.join(stale)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(copy_error(&plan.to.join(stale), &e)),
        }
    }
    let db = plan.to.join(DB_FILE);
    std::fs::rename(&tmp, &db).map_err(|e| copy_error(&db, &e))?;
    sync_dir(&plan.to).map_err(|e| copy_error(&plan.to, &e))?;
    Ok((plan.total_bytes(), plan.files.len() as u64))
}

/// After a failed move: removes what the move wrote (the database being copied; the images and
/// the folder only where the move created them).
pub fn cleanup(plan: &Plan) {
    let _ = std::fs::remove_file(plan.to.join(DB_TMP));
    if plan.created_blobs {
        let _ = std::fs::remove_dir_all(plan.to.join(BLOBS));
    }
    if plan.created_dir {
        // Only when empty: never anything the move did not write.
        let _ = std::fs::remove_dir(&plan.to);
    }
}

/// Deletes the copy left in `old` by a move: only what P2PDS keeps there, and only while it
/// still holds a store and is not `current`; then the folder, if nothing else is in it.
pub fn delete_copy(old: &Path, current: &Path) -> Result<(), String> {
    if same_dir(old, current) || resolve(current).starts_with(resolve(old)) {
        return Err("That folder is where your copies are kept now, so it was not deleted.".into());
    }
    if !has_store(old) {
        return Err(format!(
            "{} no longer holds a P2PDS copy, so there is nothing to delete.",
            old.display()
        ));
    }
    for name in OWNED {
        let p = old.join(name);
        let r = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
            Ok(_) => std::fs::remove_file(&p),
            Err(_) => continue,
        };
        if let Err(e) = r {
            return Err(format!(
                "Part of the old copy could not be deleted ({}: {e}). You can delete the folder {} yourself.",
                p.display(),
                old.display()
            ));
        }
    }
    let _ = std::fs::remove_dir(old);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_paths() {
        let home = Path::new("/home/alice");
        assert_eq!(
            target_path(" ~/Backups/p2pds ", Some(home)).unwrap(),
            PathBuf::from("/home/alice/Backups/p2pds")
        );
        assert_eq!(target_path("~", Some(home)).unwrap(), PathBuf::from(home));
        assert_eq!(
            target_path("/mnt/disk/./x/../p2pds", None).unwrap(),
            PathBuf::from("/mnt/disk/p2pds")
        );
        assert!(target_path("", Some(home))
            .unwrap_err()
            .contains("full path"));
        assert!(target_path("Backups", Some(home))
            .unwrap_err()
            .contains("not a full path"));
        assert!(target_path("~/x", None).is_err());
    }

    #[test]
    fn refusals() {
        let root = tempfile::tempdir().unwrap();
        let cur = root.path().join("cur");
        std::fs::create_dir_all(cur.join("blobs")).unwrap();
        std::fs::write(cur.join(DB_FILE), b"").unwrap();
        let e = check_target(&cur, &cur).unwrap_err();
        assert!(e.contains("already kept"), "{e}");
        let e = check_target(&cur, &cur.join("inner")).unwrap_err();
        assert!(e.contains("inside"), "{e}");
        let e = check_target(&cur, root.path()).unwrap_err();
        assert!(e.contains("contain"), "{e}");
        let busy = root.path().join("busy");
        std::fs::create_dir(&busy).unwrap();
        std::fs::write(busy.join("holiday.jpg"), b"x").unwrap();
        let e = check_target(&cur, &busy).unwrap_err();
        assert!(e.contains("other files"), "{e}");
        let e = check_target(&cur, &busy.join("holiday.jpg")).unwrap_err();
        assert!(e.contains("is a file"), "{e}");
        // Empty, missing, or holding an older P2PDS copy: fine.
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        check_target(&cur, &empty).unwrap();
        check_target(&cur, &root.path().join("new/deeper")).unwrap();
        let older = root.path().join("older");
        std::fs::create_dir(&older).unwrap();
        std::fs::write(older.join(DB_FILE), b"").unwrap();
        check_target(&cur, &older).unwrap();
        // No room: refused, and the folder it created is gone again.
        let target = root.path().join("small");
        let e = prepare(&cur, &target, &|_| Some(1000)).unwrap_err();
        assert!(e.contains("not enough room"), "{e}");
        assert!(!target.exists());
        prepare(&cur, &target, &|_| None).unwrap();
        assert!(target.is_dir());
    }

    #[test]
    fn deleting_an_old_copy_keeps_what_is_not_ours() {
        let root = tempfile::tempdir().unwrap();
        let (old, cur) = (root.path().join("old"), root.path().join("cur"));
        for d in [&old, &cur] {
            std::fs::create_dir_all(d.join("blobs")).unwrap();
            std::fs::write(d.join(DB_FILE), b"").unwrap();
        }
        std::fs::write(old.join("blobs/bafy1"), b"img").unwrap();
        std::fs::write(old.join("notes.txt"), b"mine").unwrap();
        assert!(delete_copy(&cur, &cur).is_err());
        delete_copy(&old, &cur).unwrap();
        assert!(!old.join(DB_FILE).exists() && !old.join("blobs").exists());
        assert!(old.join("notes.txt").exists());
        assert!(delete_copy(&old, &cur).unwrap_err().contains("no longer"));
        std::fs::remove_file(old.join("notes.txt")).unwrap();
        std::fs::write(old.join(DB_FILE), b"").unwrap();
        delete_copy(&old, &cur).unwrap();
        assert!(!old.exists());
    }
}
