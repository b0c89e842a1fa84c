//! The settings screen: the settings ([`Engine::settings`], [`Engine::save_settings`]) and how
//! they are stored, serving peers, and the old versions kept (what collecting them would free,
//! and "Free it now").

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::group::db as gdb;
use crate::history;

use super::{AppError, Engine, PREVIOUS_DIR_KEY, SETTINGS_KEY};
use crate::app::dto::*;
use crate::app::{platform, relocate};

/// History kept per account, in days: the default and the bounds.
const RETENTION_DEFAULT_DAYS: u32 = 30;
const RETENTION_MAX_DAYS: u32 = 3650;
/// The longest wait between two backups of an account, in minutes (a week).
const CHECK_EVERY_MAX_MINUTES: u32 = 10_080;

impl Engine {
    pub async fn settings(&self) -> Result<Settings, AppError> {
        let (stored, endpoint, previous) = self
            .store()
            .read(|c| {
                Ok((
                    gdb::meta(c, SETTINGS_KEY)?,
                    gdb::meta(c, "endpoint")?,
                    gdb::meta(c, PREVIOUS_DIR_KEY)?,
                ))
            })
            .await?;
        let data_dir = self.data_dir();
        let mut s = StoredSettings::parse(stored.as_deref()).into_settings(data_dir);
        s.endpoint = endpoint;
        s.data_dir_fixed = self.inner.location_fixed.load(Ordering::Relaxed);
        s.old_data_dir = previous
            .map(PathBuf::from)
            .filter(|p| relocate::has_store(p) && !relocate::same_dir(p, data_dir))
            .map(|p| p.display().to_string());
        Ok(s)
    }

    pub async fn save_settings(&self, s: Settings) -> Result<Settings, AppError> {
        let _work = self.guard().await?;
        if !(1..=CHECK_EVERY_MAX_MINUTES).contains(&s.check_every_minutes) {
            return Err(AppError::Invalid(
                "check for new posts at least once a week (1 to 10080 minutes)".into(),
            ));
        }
        if !(1..=RETENTION_MAX_DAYS).contains(&s.retention_days) {
            return Err(AppError::Invalid(format!(
                "keep older versions for 1 to {RETENTION_MAX_DAYS} days (10 years at most); {} days is not possible",
                s.retention_days
            )));
        }
        if s.serve {
            s.listen.parse::<std::net::SocketAddr>().map_err(|_| {
                AppError::Other(format!(
                    "{:?} is not an address to listen on: write it like 0.0.0.0:2585",
                    s.listen
                ))
            })?;
        }
        let endpoint = s
            .endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty());
        self.circles().set_endpoint(endpoint).await?;
        // Keys this version does not know (written by a newer one) are kept.
        let before = self.store().read(|c| gdb::meta(c, SETTINGS_KEY)).await?;
        let mut stored = StoredSettings::from(&s);
        stored.other = StoredSettings::parse(before.as_deref()).other;
        let text = serde_json::to_string(&stored)
            .map_err(|e| AppError::Other(format!("saving the settings: {e}")))?;
        self.set_meta(SETTINGS_KEY, &text).await?;
        platform::set_autostart(s.start_at_login).map_err(AppError::Other)?;
        self.apply_serving(&s).await?;
        self.changed();
        self.settings().await
    }

    /// Starts or stops the server for peers to match the settings.
    pub(super) async fn apply_serving(&self, s: &Settings) -> Result<(), AppError> {
        let old = match self.inner.serving.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(t) = old {
            t.cancel();
        }
        if !s.serve {
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(&s.listen)
            .await
            .map_err(|e| {
                AppError::Other(format!(
                    "can't serve on {}: {e} (is another program using it?)",
                    s.listen
                ))
            })?;
        let token = CancellationToken::new();
        let t = token.clone();
        let store = self.store().clone();
        let blobs = self.syncer().blob_dir();
        tokio::spawn(async move {
            let _ = crate::serve::serve(
                listener,
                store,
                blobs,
                crate::serve::ServeConfig::default(),
                async move { t.cancelled().await },
            )
            .await;
        });
        if let Ok(mut g) = self.inner.serving.lock() {
            *g = Some(token);
        }
        Ok(())
    }

    fn gc_options(settings: &Settings) -> history::gc::GcOptions {
        history::gc::GcOptions {
            retention: StdDuration::from_secs(u64::from(settings.retention_days) * 86_400),
            now: chrono::Utc::now(),
        }
    }

    /// What collecting old versions would free now (nothing is changed).
    pub async fn reclaimable(&self) -> Result<Collection, AppError> {
        let opts = Self::gc_options(&self.settings().await?);
        let blobs = self.syncer().blob_dir();
        let report = self
            .store()
            .read(move |c| history::gc::plan(c, &blobs, &opts))
            .await?;
        Ok(collection(&report))
    }

    /// Removes the versions older than the retention window (never the newest, never one kept
    /// because of an open flag) and what only they needed; then gives the space back.
    pub async fn collect_garbage(&self) -> Result<Collection, AppError> {
        let _work = self.guard().await?;
        let report = self
            .inner
            .node
            .collect_garbage_now()
            .await
            .map_err(AppError::Other)?;
        self.changed();
        Ok(collection(&report))
    }
}

/// The settings as stored: JSON in `group_meta` under [`SETTINGS_KEY`] (the endpoint lives with
/// the circles' data). Library code outside the app reads `retentionDays` and
/// `storageLimitBytes` from it: keep those names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct StoredSettings {
    storage_limit_bytes: Option<u64>,
    start_at_login: bool,
    check_every_minutes: u32,
    pause_on_battery: bool,
    serve: bool,
    listen: String,
    retention_days: u32,
    /// Keys this version does not know, kept as they were.
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

impl Default for StoredSettings {
    fn default() -> Self {
        StoredSettings {
            storage_limit_bytes: None,
            start_at_login: false,
            check_every_minutes: 30,
            pause_on_battery: false,
            serve: false,
            listen: "0.0.0.0:2585".into(),
            retention_days: RETENTION_DEFAULT_DAYS,
            other: serde_json::Map::new(),
        }
    }
}

impl StoredSettings {
    /// The stored JSON; the defaults when there is none or it can't be read.
    fn parse(text: Option<&str>) -> StoredSettings {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    fn into_settings(self, data_dir: &std::path::Path) -> Settings {
        Settings {
            data_dir: data_dir.display().to_string(),
            data_dir_fixed: false,
            old_data_dir: None,
            storage_limit_bytes: self.storage_limit_bytes,
            retention_days: self.retention_days.clamp(1, RETENTION_MAX_DAYS),
            start_at_login: self.start_at_login,
            check_every_minutes: self.check_every_minutes.clamp(1, CHECK_EVERY_MAX_MINUTES),
            pause_on_battery: self.pause_on_battery,
            serve: self.serve,
            listen: self.listen,
            endpoint: None,
        }
    }
}

impl From<&Settings> for StoredSettings {
    fn from(s: &Settings) -> Self {
        StoredSettings {
            storage_limit_bytes: s.storage_limit_bytes,
            start_at_login: s.start_at_login,
            check_every_minutes: s.check_every_minutes.clamp(1, CHECK_EVERY_MAX_MINUTES),
            pause_on_battery: s.pause_on_battery,
            serve: s.serve,
            listen: s.listen.clone(),
            retention_days: s.retention_days.clamp(1, RETENTION_MAX_DAYS),
            other: serde_json::Map::new(),
        }
    }
}

/// A collection's figures in words.
fn collection(r: &history::gc::GcReport) -> Collection {
    let bytes = r.reclaimable_bytes;
    let text = match (r.dry_run, bytes) {
        (true, 0) => {
            "Nothing to free: every version kept is still within the time you chose.".to_string()
        }
        (true, b) => format!(
            "About {} can be freed: versions older than {} days that are no longer needed.",
            crate::app::words::size(b),
            r.retention_days.round()
        ),
        (false, 0) => "Nothing needed freeing.".to_string(),
        (false, b) => format!(
            "Freed {}: {} older {} removed.",
            crate::app::words::size(b),
            r.states_removed,
            if r.states_removed == 1 {
                "version"
            } else {
                "versions"
            }
        ),
    };
    Collection {
        dry_run: r.dry_run,
        bytes,
        versions: r.states_removed,
        images: r.blob_files_removed,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::app::engine::tests::{open, two_versions};

    #[test]
    fn stored_settings_keep_their_names_defaults_and_unknown_keys() {
        let s = StoredSettings::parse(None);
        assert_eq!(s.retention_days, 30);
        let text = serde_json::to_string(&StoredSettings::default()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["retentionDays"], 30);
        assert!(v.get("storageLimitBytes").is_some());
        // Older settings without the field get the default; out of range is clamped.
        let old = StoredSettings::parse(Some(r#"{"checkEveryMinutes":45,"futureKey":[1]}"#));
        assert_eq!(old.retention_days, 30);
        assert_eq!(old.check_every_minutes, 45);
        let wild = StoredSettings::parse(Some(r#"{"retentionDays":999999}"#));
        assert_eq!(wild.into_settings(Path::new("/d")).retention_days, 3650);
        // A key this version doesn't know survives a save.
        let mut saved = StoredSettings::from(&old.clone().into_settings(Path::new("/d")));
        saved.other = old.other;
        let v: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();
        assert_eq!(v["futureKey"], serde_json::json!([1]));
        assert_eq!(v["retentionDays"], 30);
    }

    #[tokio::test]
    async fn retention_is_read_from_the_stored_json_and_checked_on_save() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path());
        let s = e.settings().await.unwrap();
        assert_eq!(s.retention_days, 30);
        assert!(!s.data_dir_fixed && s.old_data_dir.is_none());
        e.set_meta(
            SETTINGS_KEY,
            r#"{"retentionDays":90,"storageLimitBytes":5}"#,
        )
        .await
        .unwrap();
        let s = e.settings().await.unwrap();
        assert_eq!((s.retention_days, s.storage_limit_bytes), (90, Some(5)));
        for days in [0, 3651] {
            let err = e
                .save_settings(Settings {
                    retention_days: days,
                    ..s.clone()
                })
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("1 to 3650 days"), "{err}");
        }
        e.set_location_fixed(true);
        assert!(e.settings().await.unwrap().data_dir_fixed);
    }

    #[tokio::test]
    async fn old_versions_are_collected_unless_a_flag_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path());
        let (old_rev, new_rev) = two_versions(&e).await;

        // A flag pins the version from before: nothing to free, and the card tells it.
        e.store()
            .write(move |c| {
                history::raise(
                    c,
                    1,
                    history::kind::MASS_DELETION,
                    "1 of 3 records were deleted at once",
                    Some(&old_rev),
                )
            })
            .await
            .unwrap()
            .unwrap();
        // One notification per flag, delivered once.
        let mut events = e.subscribe();
        e.raise_alerts().await;
        e.raise_alerts().await;
        let mut alerts = Vec::new();
        while let Ok(ev) = events.try_recv() {
            if let Event::Alert { key, title, .. } = ev {
                alerts.push((key, title));
            }
        }
        assert_eq!(
            alerts,
            [(
                "flag:1#1".to_string(),
                "Many of bob.test's posts were deleted".to_string()
            )]
        );
        let o = e.overview().await.unwrap();
        let bob = &o.friends[0];
        assert_eq!(bob.flags.len(), 1);
        assert!(bob.flags[0].text.contains("Your copy from before is kept"));
        assert!(bob.can_restore);
        // A flag of loss is the worst: red, with the reason.
        assert_eq!(o.tray, TrayState::Problem);
        assert_eq!(
            o.tray_reason.as_deref(),
            Some("Many of bob.test's posts were deleted")
        );
        assert!(o.headline.contains("bob.test"), "{}", o.headline);
        let choice = e.restore_choice("did:plc:bob").await.unwrap();
        assert_eq!(choice.versions.len(), 2);
        assert_eq!(choice.versions[0].rev, new_rev, "newest first");
        assert_eq!(choice.suggested.records, Some(3));
        assert!(choice.why.contains("from before"), "{}", choice.why);
        assert_eq!(e.reclaimable().await.unwrap().bytes, 0);

        // Dismissed: the old version is outside the window and goes.
        let o = e.dismiss_flags("did:plc:bob").await.unwrap();
        assert!(o.friends[0].flags.is_empty());
        let plan = e.reclaimable().await.unwrap();
        assert!(plan.dry_run && plan.bytes > 0, "{plan:?}");
        assert!(plan.text.contains("can be freed"), "{}", plan.text);
        let done = e.collect_garbage().await.unwrap();
        assert_eq!(
            (done.dry_run, done.versions, done.bytes),
            (false, 1, plan.bytes)
        );
        assert!(done.text.starts_with("Freed"), "{}", done.text);
        let choice = e.restore_choice("did:plc:bob").await.unwrap();
        assert_eq!(choice.versions.len(), 1);
        assert_eq!(choice.suggested.rev, new_rev);
        assert_eq!(e.reclaimable().await.unwrap().bytes, 0);
        assert!(e
            .store()
            .read(|c| gdb::meta(c, crate::engine::LAST_GC_KEY))
            .await
            .unwrap()
            .is_some());
    }
}
