//! The app's settings as the library reads them: JSON in `group_meta` under
//! [`SETTINGS_KEY`] (camelCase keys, written whole by the desktop app). Library code reads
//! `retentionDays` and `storageLimitBytes` (the history's retention window, the storage limit
//! checked before a sync writes); those key names are part of the store's contract. Fields
//! this module does not know are kept when it writes.

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;

/// Days of history kept when the user has not chosen.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;

/// The settings key (in `group_meta`) of the app's settings; the library reads two fields.
pub const SETTINGS_KEY: &str = "app.settings";

/// The retention window and the storage limit, from the app's settings (shared with the
/// command line through the store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub retention_days: u32,
    pub storage_limit_bytes: Option<u64>,
}

pub fn limits(conn: &Connection) -> Result<Limits, StoreError> {
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Stored {
        retention_days: Option<u32>,
        storage_limit_bytes: Option<u64>,
    }
    let text = settings_text(conn)?;
    let stored: Stored = text
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    Ok(Limits {
        retention_days: stored
            .retention_days
            .unwrap_or(DEFAULT_RETENTION_DAYS)
            .clamp(1, 3650),
        storage_limit_bytes: stored.storage_limit_bytes,
    })
}

/// Stores the storage limit into the app's settings (keeping the other fields).
pub fn set_storage_limit(conn: &Connection, limit: Option<u64>) -> Result<(), StoreError> {
    let text = settings_text(conn)?;
    let mut value: serde_json::Value = text
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    value["storageLimitBytes"] = match limit {
        Some(l) => serde_json::json!(l),
        None => serde_json::Value::Null,
    };
    conn.execute(
        "INSERT INTO group_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![SETTINGS_KEY, value.to_string()],
    )?;
    Ok(())
}

/// The settings JSON as stored (`None` before anything was saved).
fn settings_text(conn: &Connection) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT value FROM group_meta WHERE key = ?1",
            [SETTINGS_KEY],
            |r| r.get(0),
        )
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c, std::path::Path::new(":memory:")).unwrap();
        c
    }

    #[test]
    fn limits_read_the_app_settings_and_keep_other_fields() {
        let c = conn();
        assert_eq!(
            limits(&c).unwrap(),
            Limits {
                retention_days: 30,
                storage_limit_bytes: None
            }
        );
        c.execute(
            "INSERT INTO group_meta (key, value) VALUES (?1, '{\"retentionDays\":7,\"serve\":true}')",
            [SETTINGS_KEY],
        )
        .unwrap();
        set_storage_limit(&c, Some(1000)).unwrap();
        assert_eq!(
            limits(&c).unwrap(),
            Limits {
                retention_days: 7,
                storage_limit_bytes: Some(1000)
            }
        );
        let text: String = c
            .query_row(
                "SELECT value FROM group_meta WHERE key = ?1",
                [SETTINGS_KEY],
                |r| r.get(0),
            )
            .unwrap();
        assert!(text.contains("\"serve\":true"), "{text}");
    }
}
