//! Room for backups: the free space of the disk the store is on, and the storage limit the
//! user set. Both are checked before anything is written (a sync downloads to a temporary
//! file first, watching both as it goes), so a full disk or a reached limit stops a sync
//! with a clear message and the copy held stays as it was.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Kept free on the disk at all times: SQLite needs room to commit and checkpoint.
pub const RESERVE_BYTES: u64 = 64 * 1024 * 1024;

/// Free bytes for this user on the filesystem holding `dir` (None where unknown).
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

/// Bytes the backups take: every account's blocks plus every stored blob file once.
pub fn used_bytes(conn: &Connection) -> Result<u64, StoreError> {
    let blocks: i64 = conn.query_row("SELECT coalesce(sum(bytes), 0) FROM repos", [], |r| {
        r.get(0)
    })?;
    let blobs: i64 = conn.query_row(
        "SELECT coalesce(sum(size), 0) FROM (
           SELECT cid, max(size) AS size FROM blobs WHERE state = 'stored' GROUP BY cid)",
        [],
        |r| r.get(0),
    )?;
    Ok((blocks.max(0) + blobs.max(0)) as u64)
}

/// A size in words, in decimal units like the operating systems show, with one decimal below
/// 10: "1 byte", "512 bytes", "1.5 kB", "12 kB", "3.4 MB", "120 MB", "1.2 GB". The one spelling
/// of sizes in every sentence: the app's, the command line's, the engine's errors (the
/// window's `humanBytes` in ui/lib/format.js says the same).
pub fn size_words(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return if bytes == 1 {
            "1 byte".into()
        } else {
            format!("{bytes} bytes")
        };
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let mut text = if value < 10.0 {
        format!("{value:.1}")
    } else {
        format!("{}", value.round())
    };
    // 999.6 kB rounds to "1000": that is "1 MB".
    if text == "1000" && unit < UNITS.len() - 1 {
        text = "1.0".into();
        unit += 1;
    }
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

/// What one account's sync may still write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Room {
    /// Free disk space minus the reserve, when known.
    pub disk: Option<u64>,
    /// What the storage limit leaves, with the limit and the bytes used, when one is set.
    pub limit: Option<(u64, u64, u64)>,
}

/// Why there is no room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoRoom {
    Disk { needed: u64, free: u64 },
    Limit { needed: u64, used: u64, limit: u64 },
}

impl Room {
    /// The room left: `free` is the disk's free space when the caller knows it better than a
    /// measurement (a full disk cannot be made on demand, so the command line lets a test say
    /// it); None measures the disk holding `dir`.
    pub fn measure(conn: &Connection, dir: &Path, free: Option<u64>) -> Result<Self, StoreError> {
        let limits = super::settings::limits(conn)?;
        let used = used_bytes(conn)?;
        Ok(Room {
            disk: free
                .or_else(|| free_space(dir))
                .map(|f| f.saturating_sub(RESERVE_BYTES)),
            limit: limits
                .storage_limit_bytes
                .map(|l| (l.saturating_sub(used), l, used)),
        })
    }

    /// Whether `disk_bytes` more on disk and `stored_bytes` more in the backups fit.
    pub fn fits(&self, disk_bytes: u64, stored_bytes: u64) -> Result<(), NoRoom> {
        if let Some(free) = self.disk {
            if disk_bytes > free {
                return Err(NoRoom::Disk {
                    needed: disk_bytes,
                    free,
                });
            }
        }
        if let Some((left, limit, used)) = self.limit {
            if stored_bytes > left {
                return Err(NoRoom::Limit {
                    needed: stored_bytes,
                    used,
                    limit,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_what_is_short() {
        let room = Room {
            disk: Some(1000),
            limit: Some((100, 600, 500)),
        };
        assert_eq!(room.fits(900, 90), Ok(()));
        assert_eq!(
            room.fits(1001, 0),
            Err(NoRoom::Disk {
                needed: 1001,
                free: 1000
            })
        );
        assert_eq!(
            room.fits(10, 101),
            Err(NoRoom::Limit {
                needed: 101,
                used: 500,
                limit: 600
            })
        );
        assert_eq!(Room::default().fits(u64::MAX, u64::MAX), Ok(()));
    }

    #[test]
    fn free_space_of_a_real_directory_is_known_on_unix() {
        let dir = std::env::temp_dir();
        if cfg!(unix) {
            assert!(free_space(&dir).is_some_and(|f| f > 0));
        }
        assert_eq!(size_words(1_500_000_000), "1.5 GB");
        assert_eq!(size_words(320_000_000), "320 MB");
        assert_eq!(size_words(12_000), "12 kB");
    }

    #[test]
    fn used_bytes_counts_blocks_and_each_blob_once() {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c, Path::new(":memory:")).unwrap();
        c.execute_batch(
            "INSERT INTO repos (id, did, added_at, bytes) VALUES (1, 'a', 'x', 100), (2, 'b', 'x', 50);
             INSERT INTO blobs (repo_id, cid, state, size, error, updated_at)
               VALUES (1, 'c1', 'stored', 10, NULL, 'x'), (2, 'c1', 'stored', 10, NULL, 'x'),
                                      (2, 'c2', 'missing', NULL, NULL, 'x');",
        )
        .unwrap();
        assert_eq!(used_bytes(&c).unwrap(), 160);
    }
}
