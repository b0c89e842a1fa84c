//! The frames of a followed stream turned into kept versions: each `#commit` of an account
//! backed up here is verified against the copy held and kept ([`crate::firehose`]); what the
//! stream cannot give verified (a commit that does not chain, a new identity, a status change,
//! a `#sync`, a gap the cursor cannot cover) asks for a verified backup through the usual
//! path instead. Events of accounts not backed up here are passed over after one lookup.

use std::sync::Arc;

use crate::firehose::{self, Event, Outcome};
use crate::store::{Store, StoreError};

use super::{Handled, Handler};

/// What capturing asks of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Captured {
    /// A commit verified and kept as a version.
    Kept(firehose::Applied),
    /// The stream could not give this account verified: back it up through `getRepo`.
    NeedsSync { did: String, why: String },
    /// The account's identity (handle, key, server) may have changed: read its DID document
    /// again, then back it up.
    IdentityChanged { did: String },
}

/// Where [`Captured`] news goes (the node controller: an event, or a backup asked for).
pub type Notify = Arc<dyn Fn(Captured) + Send + Sync>;

/// A [`Handler`] that keeps what it can verify and asks for the rest.
pub struct Capture {
    store: Store,
    notify: Notify,
}

impl Capture {
    pub fn new(store: Store, notify: Notify) -> Self {
        Self { store, notify }
    }

    /// The signing key and revision of a held copy of `did` (`None`: not backed up here, or
    /// not copied yet).
    async fn held(&self, did: &str) -> Result<Option<(String, String)>, StoreError> {
        let did = did.to_string();
        self.store
            .read(move |c| {
                use rusqlite::OptionalExtension;
                let row: Option<(Option<String>, Option<String>)> = c
                    .query_row(
                        "SELECT signing_key, rev FROM repos WHERE did = ?1 AND head IS NOT NULL",
                        [&did],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                Ok(row.and_then(|(key, rev)| Some((key?, rev.unwrap_or_default()))))
            })
            .await
    }

    async fn commit(&self, event: firehose::CommitEvent) {
        let did = event.repo.clone();
        let key = match self.held(&did).await {
            // Already held (a replay after a reconnection, or a poll got there first):
            // nothing to verify, nothing missing.
            Ok(Some((_, rev))) if event.rev.as_str() <= rev.as_str() => return,
            Ok(Some((key, _))) => key,
            Ok(None) => return,
            Err(e) => return self.needs_sync(&did, format!("the store could not be read: {e}")),
        };
        let Ok(key) = firehose::HeldKey::parse(&key) else {
            return self.needs_sync(&did, "the key held for the account does not read".into());
        };
        let outcome = self.store.write(move |conn| keep(conn, event, &key)).await;
        match outcome {
            Ok(Ok((
                Outcome::Applied(applied),
                Kept {
                    new_blobs,
                    mass_deletion,
                },
            ))) => {
                (self.notify)(Captured::Kept(applied));
                if new_blobs || mass_deletion {
                    // The images and files come through the usual path, each hashed; a mass
                    // deletion was flagged, and the pass that follows tells the person.
                    self.needs_sync(&did, "new records name blobs, or a mass deletion".into());
                }
            }
            Ok(Ok((Outcome::Refused { refusal, .. }, _))) => {
                tracing::info!(%did, "event stream commit refused: {refusal}");
                if refusal.kind.needs_resync() {
                    self.needs_sync(&did, refusal.words);
                }
            }
            Ok(Err(e)) => self.needs_sync(&did, format!("keeping the commit failed: {e}")),
            Err(e) => self.needs_sync(&did, format!("keeping the commit failed: {e}")),
        }
    }

    fn needs_sync(&self, did: &str, why: String) {
        (self.notify)(Captured::NeedsSync {
            did: did.to_string(),
            why,
        });
    }

    /// Asks for every account `host` carries (all of them, for a relay): the stream lost what
    /// happened since the cursor.
    async fn catch_up(&self, host: &str) {
        let h = host.to_string();
        let dids = self
            .store
            .read(move |c| {
                // The accounts on that server; a relay (no account's server) carries them all.
                let mut stmt = c.prepare_cached(
                    "SELECT did FROM repos WHERE head IS NOT NULL AND (pds = ?1
                       OR NOT EXISTS (SELECT 1 FROM repos WHERE pds = ?1))",
                )?;
                let dids = stmt
                    .query_map([&h], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(dids)
            })
            .await
            .unwrap_or_default();
        for did in dids {
            self.needs_sync(
                &did,
                format!("{host}'s stream does not reach back far enough"),
            );
        }
    }

    async fn frame(&self, host: &str, frame: Vec<u8>) -> Handled {
        let event = match firehose::decode(&frame) {
            Ok(event) => event,
            Err(e) => {
                // Unreadable: nothing of it counts; the safety-net polling still covers it.
                tracing::warn!(%host, "event stream frame refused: {e}");
                return Handled::NoSeq;
            }
        };
        let seq = event.seq();
        match event {
            Event::Commit(commit) => self.commit(commit).await,
            Event::Sync(_) | Event::Identity(_) | Event::Account(_) => {
                let did = event.did().unwrap_or_default().to_string();
                if matches!(self.held(&did).await, Ok(Some(_))) {
                    match &event {
                        Event::Identity(_) => (self.notify)(Captured::IdentityChanged { did }),
                        Event::Sync(_) => {
                            self.needs_sync(&did, "its server announced a new state".into())
                        }
                        _ => self.needs_sync(&did, "its account status changed".into()),
                    }
                }
            }
            Event::Info(info) if info.name == "OutdatedCursor" => {
                self.catch_up(host).await;
                return Handled::Outdated;
            }
            Event::Info(_) | Event::Unknown(_) => {}
            Event::Error(e) => {
                let message = e.message.unwrap_or_default();
                return Handled::HostError(format!("{} {message}", e.error).trim().to_string());
            }
        }
        seq.map_or(Handled::NoSeq, Handled::Seq)
    }
}

impl Handler for Capture {
    async fn handle(&self, host: &str, frame: Vec<u8>) -> Handled {
        self.frame(host, frame).await
    }
}

/// What keeping a commit calls for besides.
#[derive(Debug, Default)]
struct Kept {
    /// Its records name blobs not held yet (the event's own `blobs` list is deprecated and
    /// empty: the records say).
    new_blobs: bool,
    /// It deleted most records at once, and was flagged.
    mass_deletion: bool,
}

/// Verifies and keeps one commit; a mass deletion in it is flagged as a polled sync would flag
/// it, with the version just before it as the good one.
fn keep(
    conn: &mut rusqlite::Connection,
    event: firehose::CommitEvent,
    key: &firehose::HeldKey,
) -> Result<(Outcome, Kept), firehose::ApplyError> {
    use rusqlite::OptionalExtension;
    let prev_rev: Option<String> = conn
        .query_row("SELECT rev FROM repos WHERE did = ?1", [&event.repo], |r| {
            r.get(0)
        })
        .optional()?
        .flatten();
    let outcome = firehose::apply_commit(conn, event, key)?;
    let mut kept = Kept::default();
    if let Outcome::Applied(a) = &outcome {
        kept.new_blobs = conn
            .query_row(
                "SELECT 1 FROM blob_refs f JOIN repos r ON r.id = f.repo_id
                 WHERE r.did = ?1 AND f.rev = ?2 AND NOT EXISTS (SELECT 1 FROM blobs b
                   WHERE b.repo_id = f.repo_id AND b.cid = f.cid AND b.state = 'stored')
                 LIMIT 1",
                [&a.did, &a.rev],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        let deletes = i64::try_from(a.deletes).unwrap_or(i64::MAX);
        let creates = i64::try_from(a.creates).unwrap_or(i64::MAX);
        let before = a.records.saturating_add(deletes).saturating_sub(creates);
        if crate::sync::loss::is_mass_deletion(before, a.records, deletes) {
            crate::sync::loss::observe_deletions(
                conn,
                &a.did,
                before,
                a.records,
                deletes,
                prev_rev.as_deref(),
            )?;
            kept.mass_deletion = true;
        }
    }
    Ok((outcome, kept))
}
