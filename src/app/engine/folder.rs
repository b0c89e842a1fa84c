//! Moving the data folder (Settings, "Where copies are kept"): [`Engine::move_storage`] pauses
//! the work, copies the store and the images and checks the copy (the steps are in
//! `app::relocate`); [`Engine::delete_old_copy`] removes the copy left behind. See
//! ARCHITECTURE.md, "Moving the data folder".

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use crate::group::db as gdb;

use super::{AppError, Engine, PREVIOUS_DIR_KEY, PROGRESS_EVERY};
use crate::app::dto::*;
use crate::app::relocate;

impl Engine {
    /// Copies the store and the image files to `to` (a full path; `~` is the home folder),
    /// checks the copy, and returns; the folder the copies were in is left as it was (the copy
    /// records it, so the settings can offer to delete it once the app runs from `to`).
    ///
    /// The engine's work pauses first (the loop finishes its current step, the window's actions
    /// finish), and after a successful move stays paused: the app is meant to restart at `to`
    /// now. A failed move removes what it wrote and resumes.
    pub async fn move_storage(&self, to: &str) -> Result<MoveReport, AppError> {
        if self.inner.location_fixed.load(Ordering::Relaxed) {
            return Err(AppError::Other(
                "The folder is set when P2PDS is started (--data-dir or P2PDS_DATA_DIR), so it can't be changed here.".into(),
            ));
        }
        let home = directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf());
        let target = relocate::target_path(to, home.as_deref()).map_err(AppError::Other)?;
        relocate::check_target(self.data_dir(), &target).map_err(AppError::Other)?;
        if !self.inner.node.start_move() {
            return Err(AppError::Other(
                "P2PDS is already moving your copies. Wait until it is done.".into(),
            ));
        }
        let result = self.copy_storage(target).await;
        if result.is_err() {
            self.inner.node.end_move();
        }
        self.changed();
        result
    }

    /// Resumes the work a successful [`Engine::move_storage`] paused, when the app will not
    /// restart at the new place after all.
    pub fn cancel_move(&self) {
        self.inner.node.end_move();
    }

    fn emit_move(&self, phase: &str, done_bytes: u64, total_bytes: u64) {
        self.emit(Event::Moving {
            progress: MoveProgress {
                phase: phase.into(),
                done_bytes,
                total_bytes,
            },
        });
    }

    async fn copy_storage(&self, target: PathBuf) -> Result<MoveReport, AppError> {
        self.emit_move("waiting", 0, 0);
        // Alone: the loop's pass and the window's actions have finished, and wait.
        let _work = self.inner.node.exclusive().await;
        let stopped =
            || AppError::Other("The move stopped unexpectedly. Nothing was moved.".into());
        let from = self.data_dir().to_path_buf();
        let plan = {
            let (f, t) = (from.clone(), target.clone());
            tokio::task::spawn_blocking(move || relocate::prepare(&f, &t, &relocate::free_space))
                .await
                .map_err(|_| stopped())?
                .map_err(AppError::Other)?
        };
        let total = plan.total_bytes();
        self.emit_move("copying", 0, total);
        let copied = async {
            let p = plan.clone();
            let counts = self
                .store()
                .write(move |c| relocate::snapshot(c, &p))
                .await?
                .map_err(AppError::Other)?;
            self.emit_move("copying", plan.db_bytes, total);
            let (engine, p) = (self.clone(), plan.clone());
            tokio::task::spawn_blocking(move || {
                let mut last = std::time::Instant::now();
                relocate::copy_blobs(&p, &mut |done| {
                    if last.elapsed() >= PROGRESS_EVERY {
                        last = std::time::Instant::now();
                        engine.emit_move("copying", done, total);
                    }
                })?;
                engine.emit_move("checking", total, total);
                relocate::finish(&p, &counts, PREVIOUS_DIR_KEY)
            })
            .await
            .map_err(|_| stopped())?
            .map_err(AppError::Other)
        }
        .await;
        match copied {
            Ok((bytes, files)) => Ok(MoveReport {
                from: from.display().to_string(),
                to: target.display().to_string(),
                bytes,
                files,
            }),
            Err(e) => {
                let p = plan.clone();
                let _ = tokio::task::spawn_blocking(move || relocate::cleanup(&p)).await;
                Err(e)
            }
        }
    }

    /// Deletes the copy a move left in the old folder (only P2PDS's own files there, only while
    /// it still holds a store and is not the folder in use).
    pub async fn delete_old_copy(&self) -> Result<Settings, AppError> {
        let _work = self.guard().await?;
        let previous = self
            .store()
            .read(|c| gdb::meta(c, PREVIOUS_DIR_KEY))
            .await?
            .ok_or_else(|| AppError::Other("There is no old copy to delete.".into()))?;
        let (old, current) = (PathBuf::from(previous), self.data_dir().to_path_buf());
        tokio::task::spawn_blocking(move || relocate::delete_copy(&old, &current))
            .await
            .map_err(|_| AppError::Other("Deleting the old copy stopped unexpectedly.".into()))?
            .map_err(AppError::Other)?;
        self.store()
            .write(|c| gdb::delete_meta(c, PREVIOUS_DIR_KEY))
            .await??;
        self.changed();
        self.settings().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration as StdDuration;

    use crate::app::engine::tests::open;
    use crate::app::engine::SETTINGS_KEY;
    use crate::store;

    /// A store with two accounts, a setting and three image files.
    async fn some_data(e: &Engine) {
        e.store()
            .write(|c| {
                store::add_repo(c, "did:plc:bob", Some("bob.test"), None)?;
                store::add_repo(c, "did:plc:carol", Some("carol.test"), None)?;
                gdb::set_meta(c, SETTINGS_KEY, r#"{"retentionDays":7}"#)
            })
            .await
            .unwrap()
            .unwrap();
        let blobs = e.data_dir().join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        for (name, len) in [("bafya", 10), ("bafyb", 20_000), ("bafyc", 1)] {
            std::fs::write(blobs.join(name), vec![7u8; len]).unwrap();
        }
    }

    fn files(dir: &Path) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn moving_the_storage_copies_everything_and_keeps_the_old_copy() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("new/b"));
        let e = open(&a);
        some_data(&e).await;

        let report = e.move_storage(&b.display().to_string()).await.unwrap();
        assert_eq!(report.files, 3);
        assert!(report.bytes >= 20_011);
        assert_eq!(PathBuf::from(&report.from), a);
        assert_eq!(PathBuf::from(&report.to), b);
        // The old copy is untouched, nothing temporary is left.
        assert!(a.join("p2pds.sqlite").is_file());
        assert_eq!(files(&a.join("blobs")), files(&b.join("blobs")));
        let names: Vec<String> = files(&b).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["blobs", "p2pds.sqlite"],
            "nothing temporary is left"
        );
        // The engine stays paused for the restart: actions are refused in words.
        let err = e
            .remove_friend("did:plc:bob")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("moving your copies"), "{err}");

        // The app at the new place: the same accounts and settings, and the old copy on offer.
        let moved = open(&b);
        let o = moved.overview().await.unwrap();
        let names: Vec<&str> = o.friends.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["bob.test", "carol.test"]);
        let s = moved.settings().await.unwrap();
        assert_eq!(s.retention_days, 7);
        assert_eq!(
            s.old_data_dir.as_deref().map(PathBuf::from),
            Some(a.clone())
        );
        let check: String = rusqlite::Connection::open(b.join("p2pds.sqlite"))
            .unwrap()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");

        // Deleting the old copy removes it, and only it.
        let s = moved.delete_old_copy().await.unwrap();
        assert!(s.old_data_dir.is_none());
        assert!(!a.exists());
        assert!(b.join("p2pds.sqlite").is_file());
        assert!(moved.delete_old_copy().await.is_err());

        // The moved engine can move again, back to where it was.
        let back = moved.move_storage(&a.display().to_string()).await.unwrap();
        assert_eq!(back.files, 3);
        assert_eq!(files(&a.join("blobs")), files(&b.join("blobs")));
    }

    #[tokio::test]
    async fn a_move_waits_for_work_in_progress_and_then_refuses_new_work() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        let e = open(&a);
        some_data(&e).await;
        let mut events = e.subscribe();
        // Work in progress (a backup pass, or a window action).
        let work = e.guard().await.unwrap();
        let mover = {
            let (e, to) = (e.clone(), b.display().to_string());
            tokio::spawn(async move { e.move_storage(&to).await })
        };
        tokio::time::sleep(StdDuration::from_millis(200)).await;
        assert!(!mover.is_finished(), "the move waits");
        assert!(!b.join("p2pds.sqlite").exists(), "nothing copied yet");
        drop(work);
        let report = mover.await.unwrap().unwrap();
        assert_eq!(report.files, 3);
        let mut phases = Vec::new();
        while let Ok(ev) = events.try_recv() {
            if let Event::Moving { progress } = ev {
                phases.push(progress.phase);
            }
        }
        phases.dedup();
        assert_eq!(phases, ["waiting", "copying", "checking"]);
        assert!(e.guard().await.is_err());
        // Moving again before the restart is refused; cancelling resumes the work.
        let again = e
            .move_storage(&root.path().join("c").display().to_string())
            .await;
        assert!(again.unwrap_err().to_string().contains("already moving"));
        e.cancel_move();
        assert!(e.guard().await.is_ok());
    }

    #[tokio::test]
    async fn moves_that_are_refused_change_nothing() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("a");
        let e = open(&a);
        some_data(&e).await;
        let busy = root.path().join("busy");
        std::fs::create_dir(&busy).unwrap();
        std::fs::write(busy.join("photo.jpg"), b"x").unwrap();
        let cases = [
            (a.join("inside").display().to_string(), "inside"),
            (a.display().to_string(), "already kept"),
            (busy.display().to_string(), "other files"),
            ("relative/path".to_string(), "not a full path"),
            (String::new(), "full path"),
        ];
        for (to, why) in cases {
            let err = e.move_storage(&to).await.unwrap_err().to_string();
            assert!(err.contains(why), "{to}: {err}");
        }
        assert!(!a.join("inside").exists());
        assert_eq!(files(&busy).len(), 1);
        // Not paused: the engine still works.
        e.remove_friend("did:plc:carol").await.unwrap();
        // Fixed by the command line: refused.
        e.set_location_fixed(true);
        let err = e
            .move_storage(&root.path().join("c").display().to_string())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("--data-dir"), "{err}");
        assert!(!root.path().join("c").exists());
    }
}
