//! Giving an account back: what the restore dialog offers ([`Engine::restore_choice`]: the
//! version it would use and why, and every kept version) and the restore itself
//! ([`Engine::restore_account`], over `crate::restore`), with their words.

use std::sync::Mutex;

use crate::history;

use super::{humanize, short_did, AppError, Engine, PROGRESS_EVERY};
use crate::app::dto::*;

impl Engine {
    /// What the restore dialog offers for an account: the version it would use and why, and
    /// every kept version.
    pub async fn restore_choice(&self, did: &str) -> Result<RestoreChoice, AppError> {
        let d = did.to_string();
        let (picked, states, handle) = self
            .store()
            .read(move |c| {
                let run = || -> Result<_, history::HistoryError> {
                    let picked = history::pick(c, &d, None)?;
                    let states = history::states(c, picked.repo_id)?;
                    let handle: Option<String> = c.query_row(
                        "SELECT handle FROM repos WHERE id = ?1",
                        [picked.repo_id],
                        |r| r.get(0),
                    )?;
                    Ok((picked, states, handle))
                };
                Ok(run())
            })
            .await?
            .map_err(history_error)?;
        let kept = |s: &history::State| KeptVersion {
            rev: s.rev.clone(),
            time: s.time.clone(),
            records: s.records.and_then(|n| u64::try_from(n).ok()),
        };
        let name = handle.unwrap_or_else(|| short_did(did));
        Ok(RestoreChoice {
            did: did.to_string(),
            suggested: kept(&picked.state),
            why: restore_why(&picked.why, &picked.by, &name),
            versions: states.iter().rev().map(kept).collect(),
            name,
        })
    }

    /// Gives an account back: writes the chosen kept version (default: the last good one) to
    /// a new server, with its images (see `crate::restore`). Progress goes out as
    /// [`Event::Restoring`]. The passwords go to the servers only.
    pub async fn restore_account(&self, input: RestoreInput) -> Result<RestoreOutcome, AppError> {
        let _work = self.guard().await?;
        let to_pds = input.to_pds.trim().to_string();
        if !(to_pds.starts_with("https://") || to_pds.starts_with("http://")) {
            return Err(AppError::Invalid(
                "Write the new server's full address, starting with https://".into(),
            ));
        }
        let handle = input.handle.trim().trim_start_matches('@').to_string();
        if handle.is_empty() || input.password.is_empty() {
            return Err(AppError::Invalid(
                "The handle and the password of the account on the new server are needed.".into(),
            ));
        }
        let at = match input.rev.as_deref().filter(|r| !r.is_empty()) {
            Some(rev) => Some(
                crate::repo::tid::timestamp_micros(rev)
                    .and_then(|m| i64::try_from(m).ok())
                    .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_micros)
                    .ok_or_else(|| AppError::Other("That version is not known.".into()))?,
            ),
            None => None,
        };
        let blank = |s: Option<String>| s.filter(|v| !v.trim().is_empty());
        let recovery_key = match blank(input.recovery_key) {
            Some(code) => Some(
                crate::recovery::RecoveryKey::from_code(&code)
                    .map_err(|e| AppError::Other(format!("{e}.")))?,
            ),
            None => {
                let syncer = self.syncer();
                crate::recovery::held_key(&syncer.http, &syncer.resolver, &input.did).await
            }
        };
        let req = crate::restore::RestoreRequest {
            did: input.did.clone(),
            at,
            to_pds,
            handle,
            password: input.password,
            old_password: blank(input.old_password),
            email: blank(input.email).map(|e| e.trim().to_string()),
            invite_code: blank(input.invite_code).map(|e| e.trim().to_string()),
            plc_token: blank(input.plc_token).map(|t| t.trim().to_string()),
            recovery_key,
        };
        let engine = self.clone();
        let did = input.did.clone();
        let last_emit: Mutex<Option<std::time::Instant>> = Mutex::new(None);
        let progress = move |p: crate::restore::RestoreProgress| {
            use crate::restore::RestoreProgress as P;
            let (phase, bytes, images_done, images_total, always) = match p {
                P::Preparing => ("preparing", 0, 0, 0, true),
                P::Account => ("account", 0, 0, 0, true),
                P::Importing { bytes } => ("records", bytes, 0, 0, false),
                P::Blobs { done, total } => ("images", 0, done, total, done == total),
            };
            let mut last = match last_emit.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if !always && last.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
            engine.emit(Event::Restoring {
                did: did.clone(),
                step: RestoreStep {
                    phase: phase.into(),
                    bytes,
                    images_done,
                    images_total,
                },
            });
        };
        let names = self.names().await;
        let report = crate::restore::restore(self.syncer(), &req, &progress)
            .await
            .map_err(|e| match e {
                crate::restore::RestoreError::NeedsIdentityStep(m) => AppError::Other(m),
                crate::restore::RestoreError::History(h) => history_error(h),
                other => AppError::Other(humanize(&other.to_string(), &names)),
            })?;
        let name = names
            .get(&report.did)
            .cloned()
            .unwrap_or_else(|| short_did(&report.did));
        Ok(RestoreOutcome {
            complete: report.complete(),
            did: report.did,
            why: restore_why(&report.why, &report.picked_by, &name),
            name,
            time: report.time,
            to_pds: report.to_pds,
            records: report.records,
            images: report.blobs_uploaded,
            images_total: report.blobs_referenced,
            not_restored: report
                .not_restored
                .into_iter()
                .map(|n| NotRestoredItem {
                    what: n.what,
                    reason: n.reason,
                })
                .collect(),
            identity_moved: report.identity_moved,
            next_steps: report.next_steps.clone(),
        })
    }
}

/// Why a version is the one a restore uses, in words for the dialog.
fn restore_why(why: &str, by: &history::PickedBy, name: &str) -> String {
    match by {
        history::PickedBy::BeforeLoss { detail } => {
            format!("It is the last version from before this happened: {detail}.")
        }
        history::PickedBy::Newest => format!(
            "It is the newest copy of {name}'s account; nothing suggests anything was lost."
        ),
        history::PickedBy::At => format!("{why}."),
    }
}

/// A history error in words.
fn history_error(e: history::HistoryError) -> AppError {
    match e {
        history::HistoryError::Unknown(_) => {
            AppError::Other("This account is not backed up on this computer.".into())
        }
        history::HistoryError::Empty(_) => AppError::Other(
            "There is no verified copy of this account yet: wait for the first backup.".into(),
        ),
        history::HistoryError::NothingBefore { .. } => AppError::Other(
            "That version is no longer kept: pick another one from the list.".into(),
        ),
        history::HistoryError::Store(s) => AppError::Store(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::engine::tests::{open, two_versions};

    #[tokio::test]
    async fn a_restore_is_refused_in_words_before_any_network() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path());
        two_versions(&e).await;
        let input = |to: &str, password: &str| RestoreInput {
            did: "did:plc:bob".into(),
            rev: None,
            to_pds: to.into(),
            handle: "bob.new.test".into(),
            password: password.into(),
            old_password: None,
            email: None,
            invite_code: None,
            plc_token: None,
            recovery_key: None,
        };
        let err = e
            .restore_account(input("pds.example", "pw"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
        let err = e
            .restore_account(input("https://pds.example", ""))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("password"), "{err}");
        assert!(!format!("{:?}", input("https://x", "secret-pw")).contains("secret-pw"));
        let err = e.restore_choice("did:plc:nobody").await.unwrap_err();
        assert!(err.to_string().contains("not backed up"), "{err}");
    }
}
