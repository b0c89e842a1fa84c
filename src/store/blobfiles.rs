//! Blob files that no account names any more: what removing an account frees, and what a
//! collection sweeps. A blob file is shared by every account whose records name its CID (the
//! files are content-addressed), so a file goes only when no `blobs` row names it.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rusqlite::Connection;

use super::StoreError;

/// A temporary download (`CID.PID-RANDOM.part`) older than this was left by a crash.
const STALE_PART: Duration = Duration::from_secs(3600);

/// Files in the blob folder that no account names (name, bytes): complete blob files whose CID
/// no `blobs` row holds, and temporary downloads left by a crash. Files that are neither (not
/// named like a blob) are never touched.
pub fn unreferenced(conn: &Connection, blob_dir: &Path) -> Result<Vec<(String, u64)>, StoreError> {
    let named: HashSet<String> = {
        let mut stmt = conn.prepare_cached("SELECT DISTINCT cid FROM blobs")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let entries = match std::fs::read_dir(blob_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let now = SystemTime::now();
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let orphan = if name.ends_with(".part") {
            meta.modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > STALE_PART)
        } else {
            name.parse::<cid::Cid>().is_ok() && !named.contains(&name)
        };
        if orphan {
            out.push((name, meta.len()));
        }
    }
    out.sort();
    Ok(out)
}

/// Deletes the files [`unreferenced`] lists; returns how many and their bytes.
pub fn remove_unreferenced(conn: &Connection, blob_dir: &Path) -> Result<(u64, u64), StoreError> {
    let (mut files, mut bytes) = (0, 0);
    for (name, size) in unreferenced(conn, blob_dir)? {
        match std::fs::remove_file(blob_dir.join(&name)) {
            Ok(()) => {
                files += 1;
                bytes += size;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((files, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";
    const B: &str = "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy";

    #[test]
    fn only_files_no_account_names_go() {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c, Path::new(":memory:")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [(A, 3), (B, 5), ("notes.txt", 7)] {
            std::fs::write(dir.path().join(name), vec![0u8; bytes]).unwrap();
        }
        // A fresh temporary download is someone's work in progress: kept.
        std::fs::write(dir.path().join(format!("{A}.1-00.part")), b"x").unwrap();
        c.execute(
            "INSERT INTO blobs (repo_id, cid, state, updated_at) VALUES (1, ?1, 'stored', 'x')",
            [A],
        )
        .unwrap();
        assert_eq!(unreferenced(&c, dir.path()).unwrap(), [(B.to_string(), 5)]);
        assert_eq!(remove_unreferenced(&c, dir.path()).unwrap(), (1, 5));
        assert!(dir.path().join(A).exists() && dir.path().join("notes.txt").exists());
        assert!(!dir.path().join(B).exists());
        // No blob folder yet: nothing to do.
        assert!(unreferenced(&c, &dir.path().join("none"))
            .unwrap()
            .is_empty());
    }
}
