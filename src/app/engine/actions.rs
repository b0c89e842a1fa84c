//! The window's actions on accounts and circles: signing in and out, adding and removing
//! friends, pausing, the recovery key ("Protect your account"), creating, accepting,
//! declining and leaving circles, and dismissing a friend's flags.

use std::sync::Arc;

use crate::group::Copies;
use crate::history;
use crate::identity::IdentityError;
use crate::session::{self, Session, SessionError};
use crate::store;

use super::{now, AppError, Engine, WELCOMED_KEY};
use crate::app::dto::*;
use crate::app::words;

/// Why a friend's account could not be looked up, as one sentence chosen by the kind of
/// failure: the identity's own words (a handle nobody has, no network) keep their code.
fn friend_not_found(who: &str, e: IdentityError) -> AppError {
    match e {
        IdentityError::HandleNotFound { .. }
        | IdentityError::BadHandle(_)
        | IdentityError::UnsupportedDid(_) => AppError::Invalid(e.to_string()),
        IdentityError::Fetch { .. } => AppError::Network(format!(
            "Couldn't reach the directory that says where {who}'s account lives. Check your connection and try again."
        )),
        IdentityError::BadDocument { .. } => AppError::Other(format!(
            "{who}'s account has an identity P2PDS can't read, so it can't be backed up. Ask them whether their account works."
        )),
        e => AppError::Session(SessionError::Identity(e)),
    }
}

impl Engine {
    /// Signs in (the app password goes to the OS keyring).
    pub async fn sign_in(&self, handle: &str, password: &str) -> Result<Overview, AppError> {
        let _work = self.guard().await?;
        let handle = handle.trim().trim_start_matches('@');
        let syncer = self.syncer();
        let session = Session::login(
            syncer.http.clone(),
            &syncer.resolver,
            &syncer.store,
            handle,
            password,
        )
        .await?;
        self.inner.node.set_session(Some(session));
        self.set_meta(WELCOMED_KEY, "1").await?;
        self.inner.node.refresh_circles(true).await;
        self.wake();
        self.overview().await
    }

    /// Goes on without an account: only back up friends.
    pub async fn skip_sign_in(&self) -> Result<Overview, AppError> {
        let _work = self.guard().await?;
        self.set_meta(WELCOMED_KEY, "1").await?;
        self.overview().await
    }

    pub async fn sign_out(&self) -> Result<Overview, AppError> {
        let _work = self.guard().await?;
        let syncer = self.syncer();
        Session::logout(syncer.http.clone(), &syncer.store).await?;
        self.forget_browser_consents().await;
        self.inner.node.set_session(None);
        self.changed();
        self.overview().await
    }

    /// Starts backing up an account (a handle or DID); the first copy starts at once.
    pub async fn add_friend(&self, who: &str) -> Result<Overview, AppError> {
        let who = who.trim().trim_start_matches('@');
        if who.is_empty() {
            return Err(AppError::Invalid(
                "type your friend's handle, e.g. alice.bsky.social".into(),
            ));
        }
        let _work = self.guard().await?;
        let (doc, handle) = self
            .syncer()
            .resolver
            .resolve_account_named(who)
            .await
            .map_err(|e| friend_not_found(who, e))?;
        let (did, pds) = (doc.did.clone(), doc.pds.clone());
        self.store()
            .write(move |c| store::add_repo(c, &did, handle.as_deref(), pds.as_deref()))
            .await??;
        self.changed();
        self.wake();
        self.overview().await
    }

    /// Stops backing up an account and deletes its copy, with the image files no other
    /// account names. Final: a backup of it under way does not put it back.
    pub async fn remove_friend(&self, did: &str) -> Result<Overview, AppError> {
        let _work = self.guard().await?;
        let (d, blobs) = (did.to_string(), self.syncer().blob_dir());
        self.store()
            .write(move |c| store::remove_repo_and_files(c, &d, &blobs))
            .await??;
        self.changed();
        self.overview().await
    }

    pub async fn pause(&self, minutes: u64) -> Result<Overview, AppError> {
        let until = now().plus(crate::policy::Duration::from_secs(
            minutes.saturating_mul(60),
        ));
        self.inner.node.pause_until(Some(until));
        self.changed();
        self.overview().await
    }

    pub async fn resume(&self) -> Result<Overview, AppError> {
        self.inner.node.pause_until(None);
        self.changed();
        self.overview().await
    }

    async fn session(&self) -> Result<Arc<Session>, AppError> {
        if let Some(s) = self.inner.node.session().await {
            return Ok(s);
        }
        // Not signed in (or the keyring refused): the reason, in words.
        let syncer = self.syncer();
        Ok(Session::resume(syncer.http.clone(), &syncer.store).await?)
    }

    /// The signed-in account, whose recovery key is set up.
    pub(super) async fn me_for_recovery(&self) -> Result<session::Account, AppError> {
        self.store().read(session::signed_in).await?.ok_or_else(|| {
            AppError::Other("Sign in first: a recovery key protects your own account.".into())
        })
    }

    /// Whether the signed-in account has a recovery key kept here that its identity lists.
    pub async fn recovery_key_status(&self) -> Result<RecoveryKeyStatus, AppError> {
        let Some(me) = self.store().read(session::signed_in).await? else {
            return Ok(words::recovery_key_status("unavailable"));
        };
        if !me.did.starts_with("did:plc:") {
            return Ok(words::recovery_key_status("unavailable"));
        }
        let Some(key) = crate::recovery::kept_key(&me.did).await? else {
            return Ok(words::recovery_key_status("none"));
        };
        let syncer = self.syncer();
        Ok(
            match crate::recovery::is_registered(&syncer.http, &syncer.resolver, &me.did, &key)
                .await
            {
                Ok(true) => words::recovery_key_status("registered"),
                Ok(false) => words::recovery_key_status("held"),
                Err(_) => words::recovery_key_status("unknown"),
            },
        )
    }

    /// Sets up a recovery key for the signed-in account: without `code`, its server emails a
    /// confirmation code; with it, the key is added to the identity. `password` is the main
    /// password (used for this call only, never kept); empty after the permission was given in
    /// the browser ([`Engine::finish_recovery_consent`]), with the code.
    pub async fn add_recovery_key(
        &self,
        password: &str,
        code: Option<&str>,
    ) -> Result<RecoveryKeyStatus, AppError> {
        let code = code.map(str::trim).filter(|c| !c.is_empty());
        if let (true, Some(code)) = (password.is_empty(), code) {
            let me = self.me_for_recovery().await?;
            let done = self.add_recovery_key_allowed(&me.did, code).await?;
            let mut status = words::recovery_key_status("registered");
            status.code = done.code;
            return Ok(status);
        }
        if password.is_empty() {
            return Err(AppError::Invalid(
                "Type your account's main password (the one you sign in to Bluesky with, not an app password).".into(),
            ));
        }
        let me = self.me_for_recovery().await?;
        let code = code.map(str::trim).filter(|c| !c.is_empty());
        let syncer = self.syncer();
        let done =
            crate::recovery::register(&syncer.http, &syncer.resolver, &me.did, password, code)
                .await
                .map_err(|e| AppError::Other(words::recovery_key_error(&e)))?;
        let mut status = words::recovery_key_status(match done.state.as_str() {
            "code-sent" => "code-sent",
            _ => "registered",
        });
        status.code = done.code;
        Ok(status)
    }

    /// Creates a circle with friends (DIDs), each account kept by `min_copies` of them.
    pub async fn create_circle(
        &self,
        name: &str,
        members: &[String],
        min_copies: Option<u32>,
    ) -> Result<Overview, AppError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(AppError::Other("give the circle a name".into()));
        }
        if members.is_empty() {
            return Err(AppError::Invalid(
                "pick at least one friend for the circle".into(),
            ));
        }
        let _work = self.guard().await?;
        let s = self.session().await?;
        self.circles()
            .create(&s, name, None, members, min_copies, Default::default())
            .await?;
        self.inner.node.refresh_circles(false).await;
        self.wake();
        self.overview().await
    }

    pub async fn accept(&self, uri: &str) -> Result<Overview, AppError> {
        let _work = self.guard().await?;
        let s = self.session().await?;
        self.circles().accept(&s, uri).await?;
        self.inner.node.refresh_circles(false).await;
        self.wake();
        self.overview().await
    }

    pub async fn decline(&self, uri: &str) -> Result<Overview, AppError> {
        let _work = self.guard().await?;
        let s = self.session().await?;
        self.circles().decline(&s, uri, None).await?;
        self.inner.node.refresh_circles(false).await;
        self.overview().await
    }

    pub async fn leave(&self, uri: &str, keep_copies: bool) -> Result<Overview, AppError> {
        let _work = self.guard().await?;
        let s = self.session().await?;
        let copies = if keep_copies {
            Copies::Keep
        } else {
            Copies::Delete
        };
        self.circles().leave(&s, uri, copies).await?;
        self.inner.node.refresh_circles(false).await;
        self.overview().await
    }

    /// The person has seen what happened to an account and accepts it: its open flags are
    /// cleared, and the versions from before become ordinary history (kept for the retention
    /// window only).
    pub async fn dismiss_flags(&self, did: &str) -> Result<Overview, AppError> {
        let _work = self.guard().await?;
        let d = did.to_string();
        self.store()
            .write(move |c| -> Result<usize, AppError> {
                let id = history::repo_id(c, &d).map_err(|e| AppError::Other(e.to_string()))?;
                Ok(history::dismiss(c, id)?)
            })
            .await??;
        self.changed();
        self.overview().await
    }
}
