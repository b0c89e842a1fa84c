//! Signing in with Bluesky in the browser (OAuth, see `session::oauth`): the window starts it
//! ([`Engine::start_browser_sign_in`]: the server's page to open), waits for it
//! ([`Engine::finish_browser_sign_in`]) while it shows a message and a cancel button, and may
//! cancel it ([`Engine::cancel_browser_sign_in`]). One sign-in at a time: a new start replaces
//! (cancels) the one before.
//!
//! "Protect your account" asks for the identity permission the same way, in a second consent
//! of its own ([`Engine::start_recovery_consent`], [`Engine::finish_recovery_consent`]): the
//! permission is held in memory until the emailed code is typed
//! ([`Engine::add_recovery_key`] without a password), used for the key's change, and given
//! back.

use std::time::Duration;

use crate::session::oauth::{ClientId, IdentityGrant};
use crate::session::Session;

use super::{AppError, Engine, WELCOMED_KEY};
use crate::app::dto::*;

/// How long the window waits for the browser's answer.
const WAIT: Duration = Duration::from_secs(600);

/// A browser sign-in (or consent) in progress.
#[derive(Default)]
pub(super) struct BrowserSignIn {
    pending: Option<crate::session::oauth::Pending>,
    cancel: Option<tokio_util::sync::CancellationToken>,
}

impl BrowserSignIn {
    /// Keeps a started one until it is waited for; one started before is cancelled.
    fn park(&mut self, pending: crate::session::oauth::Pending) -> BrowserSignInStarted {
        self.stop();
        let url = pending.url.clone();
        self.pending = Some(pending);
        BrowserSignInStarted { url }
    }

    /// The one to wait for now, and what cancels the wait.
    fn wait(
        &mut self,
    ) -> Option<(
        crate::session::oauth::Pending,
        tokio_util::sync::CancellationToken,
    )> {
        let cancel = tokio_util::sync::CancellationToken::new();
        let pending = self.pending.take()?;
        self.cancel = Some(cancel.clone());
        Some((pending, cancel))
    }

    /// Cancels whatever is started or waited for.
    fn stop(&mut self) {
        self.pending = None;
        if let Some(c) = self.cancel.take() {
            c.cancel();
        }
    }
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
        Ok(self.browser_sign_in().park(pending))
    }

    /// Waits for the browser's answer to the sign-in started last, then signs in as
    /// [`Engine::sign_in`] does. Cancelled by [`Engine::cancel_browser_sign_in`].
    pub async fn finish_browser_sign_in(&self) -> Result<Overview, AppError> {
        let (pending, cancel) = self
            .browser_sign_in()
            .wait()
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
        self.browser_sign_in().stop();
    }

    fn browser_sign_in(&self) -> std::sync::MutexGuard<'_, BrowserSignIn> {
        self.inner
            .browser_sign_in
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn recovery_consent(&self) -> std::sync::MutexGuard<'_, BrowserSignIn> {
        self.inner
            .recovery_consent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the consent "Protect your account" needs: the signed-in account's server asks
    /// whether P2PDS may change the account's identity (this once). Returns the page to open.
    pub async fn start_recovery_consent(&self) -> Result<BrowserSignInStarted, AppError> {
        let me = self.me_for_recovery().await?;
        let syncer = self.syncer();
        let pending = Session::start_identity_consent(
            &syncer.http,
            &syncer.resolver,
            &me.did,
            &ClientId::of_build(),
        )
        .await?;
        Ok(self.recovery_consent().park(pending))
    }

    /// Waits for the consent, then has the server email its confirmation code (with the
    /// permission, held here until the code is typed).
    pub async fn finish_recovery_consent(&self) -> Result<RecoveryKeyStatus, AppError> {
        let (pending, cancel) = self.recovery_consent().wait().ok_or_else(|| {
            AppError::Invalid("nothing is waiting for your browser: start again".into())
        })?;
        let syncer = self.syncer();
        let grant = tokio::select! {
            g = pending.finish_identity(&syncer.http, WAIT) => g?,
            _ = cancel.cancelled() => {
                return Err(AppError::Invalid("cancelled; nothing was changed".into()))
            }
        };
        let did = grant.did.clone();
        let asked = crate::recovery::register_with(
            &syncer.http,
            &syncer.resolver,
            &did,
            crate::recovery::IdentityAuth::Granted(&grant),
            None,
        )
        .await;
        let done = match asked {
            Ok(d) => d,
            Err(e) => {
                grant.revoke(&syncer.http).await;
                return Err(AppError::Other(crate::app::words::recovery_key_error(&e)));
            }
        };
        if done.state == "code-sent" {
            if let Some(old) = self.inner.identity_grant.lock().await.replace(grant) {
                old.revoke(&syncer.http).await;
            }
        } else {
            grant.revoke(&syncer.http).await;
        }
        Ok(crate::app::words::recovery_key_status(&done.state))
    }

    /// Signing out: nothing waits for the browser any more, and an identity permission still
    /// held is given back.
    pub(super) async fn forget_browser_consents(&self) {
        self.browser_sign_in().stop();
        self.recovery_consent().stop();
        if let Some(g) = self.inner.identity_grant.lock().await.take() {
            g.revoke(&self.syncer().http).await;
        }
    }

    /// Cancels the consent waiting for the browser, if any.
    pub fn cancel_recovery_consent(&self) {
        self.recovery_consent().stop();
    }

    /// Adds the recovery key with the permission given in the browser and the emailed code;
    /// the permission is given back once the key is added.
    pub(super) async fn add_recovery_key_allowed(
        &self,
        did: &str,
        code: &str,
    ) -> Result<crate::recovery::Registration, AppError> {
        let mut held = self.inner.identity_grant.lock().await;
        let grant: &IdentityGrant = held.as_ref().ok_or_else(|| {
            AppError::Invalid(
                "Allow P2PDS in your browser first (or type your main password).".into(),
            )
        })?;
        let syncer = self.syncer();
        let done = crate::recovery::register_with(
            &syncer.http,
            &syncer.resolver,
            did,
            crate::recovery::IdentityAuth::Granted(grant),
            Some(code),
        )
        .await
        .map_err(|e| AppError::Other(crate::app::words::recovery_key_error(&e)))?;
        if let Some(g) = held.take() {
            g.revoke(&syncer.http).await;
        }
        Ok(done)
    }
}
