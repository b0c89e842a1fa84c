//! Signing in with Bluesky in the browser (OAuth, see `session::oauth`): the window starts it
//! ([`Engine::start_browser_sign_in`]: the server's page to open), waits for it
//! ([`Engine::finish_browser_sign_in`]) while it shows a message and a cancel button, and may
//! cancel it ([`Engine::cancel_browser_sign_in`]). One sign-in at a time: a new start replaces
//! (cancels) the one before.

use std::time::Duration;

use crate::session::oauth::ClientId;
use crate::session::Session;

use super::{AppError, Engine, WELCOMED_KEY};
use crate::app::dto::*;

/// How long the window waits for the browser's answer.
const WAIT: Duration = Duration::from_secs(600);

/// A browser sign-in in progress.
#[derive(Default)]
pub(super) struct BrowserSignIn {
    pending: Option<crate::session::oauth::Pending>,
    cancel: Option<tokio_util::sync::CancellationToken>,
}

impl Engine {
    /// Starts signing in with Bluesky: returns the page of the account's server to open in the
    /// browser (the shell opens it; the window shows it too, for when no browser opens).
    pub async fn start_browser_sign_in(
        &self,
        handle: &str,
    ) -> Result<BrowserSignInStarted, AppError> {
        let handle = handle.trim().trim_start_matches('@');
        if handle.is_empty() {
            return Err(AppError::Invalid(
                "type your handle, e.g. alice.bsky.social".into(),
            ));
        }
        let syncer = self.syncer();
        let pending = Session::start_oauth(
            &syncer.http,
            &syncer.resolver,
            &syncer.store,
            handle,
            &ClientId::of_build(),
        )
        .await?;
        let url = pending.url.clone();
        let mut slot = self.browser_sign_in();
        if let Some(old) = slot.cancel.take() {
            old.cancel();
        }
        slot.pending = Some(pending);
        Ok(BrowserSignInStarted { url })
    }

    /// Waits for the browser's answer to the sign-in started last, then signs in as
    /// [`Engine::sign_in`] does. Cancelled by [`Engine::cancel_browser_sign_in`].
    pub async fn finish_browser_sign_in(&self) -> Result<Overview, AppError> {
        let cancel = tokio_util::sync::CancellationToken::new();
        let pending = {
            let mut slot = self.browser_sign_in();
            slot.cancel = Some(cancel.clone());
            slot.pending.take()
        }
        .ok_or_else(|| AppError::Invalid("no sign-in is waiting: start it again".into()))?;
        let syncer = self.syncer();
        let session = tokio::select! {
            s = Session::finish_oauth(syncer.http.clone(), &syncer.store, pending, WAIT) => s?,
            _ = cancel.cancelled() => {
                return Err(AppError::Invalid("the sign-in was cancelled; nothing was stored".into()))
            }
        };
        let _work = self.guard().await?;
        self.inner.node.set_session(Some(session));
        self.set_meta(WELCOMED_KEY, "1").await?;
        self.inner.node.refresh_circles(true).await;
        self.wake();
        self.overview().await
    }

    /// Cancels the sign-in waiting for the browser, if any (nothing is stored).
    pub fn cancel_browser_sign_in(&self) {
        let mut slot = self.browser_sign_in();
        slot.pending = None;
        if let Some(c) = slot.cancel.take() {
            c.cancel();
        }
    }

    fn browser_sign_in(&self) -> std::sync::MutexGuard<'_, BrowserSignIn> {
        self.inner
            .browser_sign_in
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
