//! Invitation links over real records: making the link of a circle (`p2pds circle link`) and
//! opening one (`p2pds invitations --link`, the app's "I have an invitation link").
//!
//! Opening a link reads the policy from its author's repo with a proof against the author's
//! signed commit (`Syncer::verified_record`, the key from the author's DID document), exactly
//! as discovery does, and only then checks what the link claims: the policy names the reader,
//! it is not revoked, and its current version is the one the link names. A link that passes is
//! remembered the way discovery remembers a version it found (`db::record_version`, with the
//! members' acks), so the invitation is listed and `circle accept` works as for any other; one
//! that does not changes nothing in the store (its author is not even made a contact: the
//! names in its words are looked up without being saved, `Circles::name_of`).

use serde::Serialize;
use serde_json::{json, Value};

use super::link::{InvitationLink, LinkError};
use super::{db, plan, policy_of, CircleView, Circles, GroupError, Invitation};
use crate::identity;
use crate::policy::model::Policy;
use crate::policy::records::nsid;
use crate::policy::validate::{check_value, Problems};

/// What opening an invitation link found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenedLink {
    pub link: InvitationLink,
    /// The invitation, when this version waits for this node's answer.
    pub invitation: Option<Invitation>,
    /// The circle, when this node already answered this version (or wrote it).
    pub circle: Option<CircleView>,
}

/// The current version of a policy record, read with a proof and not yet remembered.
struct Current {
    cid: String,
    value: Value,
    policy: Result<Policy, Problems>,
}

impl Circles {
    /// Reads the current version of the policy `author/rkey` with a proof, without writing
    /// anything. `Ok(None)`: the signed tree proves the record absent.
    async fn current_version(
        &self,
        author: &str,
        rkey: &str,
    ) -> Result<Option<Current>, GroupError> {
        let vr = self
            .syncer
            .verified_record(author, nsid::POLICY, rkey)
            .await?;
        let (Some(cid), Some(value)) = (vr.cid, vr.value) else {
            return Ok(None);
        };
        let uri = format!("at://{author}/{}/{rkey}", nsid::POLICY);
        let cid = cid.to_string();
        let policy =
            check_value(&json!({"uri": uri, "cid": cid, "value": value})).map(|c| c.policy);
        Ok(Some(Current { cid, value, policy }))
    }

    /// The name to show for an account in a link's words: its handle (a contact's, or a
    /// verified one), else a short name ("account abcdef…"). Writes nothing: the account
    /// comes from a pasted link, and a refused link must leave the store as it was.
    pub(crate) async fn name_of(&self, did: &str) -> String {
        self.shown_handle(did)
            .await
            .unwrap_or_else(|| identity::short_name(did))
    }

    /// The handle of `did` as far as this node already knows it, without asking the network
    /// and writing nothing: its contact's, else a handle the resolver has already verified.
    /// For words about a failure to reach that account.
    pub(crate) async fn known_handle(&self, did: &str) -> Option<String> {
        match self.contact_handle(did).await {
            Some(h) => Some(h),
            None => self.syncer.resolver.checked_handle(did).flatten(),
        }
    }

    /// The invitation link of a circle: its policy record and the newest version of it (read
    /// from the author's repo now; when that repo can't be reached, the newest this node has
    /// seen). A revoked or deleted circle has no link.
    pub async fn invitation_link(&self, uri: &str) -> Result<InvitationLink, GroupError> {
        let uri = uri.trim();
        let (author, collection, rkey) =
            plan::split_uri(uri).ok_or_else(|| GroupError::BadUri(uri.to_string()))?;
        if collection != nsid::POLICY {
            return Err(GroupError::BadUri(uri.to_string()));
        }
        let policy = match self.current_version(&author, &rkey).await {
            Ok(None) => {
                return Err(LinkError::Gone {
                    author: self.name_of(&author).await,
                }
                .into())
            }
            Ok(Some(current)) => current.policy.map_err(GroupError::InvalidPolicy)?,
            Err(e @ (GroupError::Sync(_) | GroupError::Identity(_))) => {
                match self.newest_seen(uri).await? {
                    Some(p) => {
                        tracing::warn!(error = %e, "the circle's author can't be reached: the link names the newest version seen");
                        p
                    }
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        if policy.revoked {
            return Err(LinkError::Revoked {
                name: policy.name,
                author: self.name_of(&author).await,
            }
            .into());
        }
        InvitationLink::new(uri, &policy.reference.cid)
            .map_err(|_| GroupError::BadUri(uri.to_string()))
    }

    /// The newest version of `uri` this node has seen, if it is a valid policy.
    async fn newest_seen(&self, uri: &str) -> Result<Option<Policy>, GroupError> {
        let u = uri.to_string();
        let (row, versions) = self
            .syncer
            .store
            .read(move |c| Ok((db::policy(c, &u)?, db::versions(c, &u)?)))
            .await?;
        let Some(latest) = row.and_then(|r| r.latest_cid) else {
            return Ok(None);
        };
        Ok(versions
            .iter()
            .find(|v| v.cid == latest)
            .and_then(policy_of))
    }

    /// Opens an invitation link: the policy read from its author's repo with a proof, then
    /// refused unless it names this node's account, is not revoked and is still the version
    /// the link names; else remembered like a discovered version (with the members' acks), so
    /// that it is listed among the invitations and can be accepted.
    pub async fn open_link(&self, text: &str) -> Result<OpenedLink, GroupError> {
        let link = InvitationLink::parse(text)?;
        let me = self.me().await?;
        let (author, rkey) = (link.author().to_string(), link.rkey().to_string());
        let Some(current) = self.current_version(&author, &rkey).await? else {
            return Err(LinkError::Gone {
                author: self.name_of(&author).await,
            }
            .into());
        };
        let policy = current.policy.map_err(GroupError::InvalidPolicy)?;
        if policy.revoked {
            return Err(LinkError::Revoked {
                name: policy.name,
                author: self.name_of(&author).await,
            }
            .into());
        }
        if !plan::names(&policy, &me.did) {
            return Err(LinkError::NotForYou {
                name: policy.name,
                author: self.name_of(&author).await,
                me: me
                    .handle
                    .clone()
                    .unwrap_or_else(|| identity::short_name(&me.did)),
            }
            .into());
        }
        if current.cid != link.cid {
            return Err(LinkError::Changed {
                name: policy.name,
                author: self.name_of(&author).await,
            }
            .into());
        }
        // Verified and for this node: remembered as discovery remembers a version it found,
        // and its author as a contact (with a handle only if verified).
        let handle = self.shown_handle(&author).await;
        let (u, c, a, v) = (
            link.uri.clone(),
            current.cid.clone(),
            author.clone(),
            current.value,
        );
        self.syncer
            .store
            .write(move |conn| {
                db::record_version(conn, &u, &c, &a, &v)?;
                db::add_contact(conn, &a, handle.as_deref(), "invitation-link")
            })
            .await??;
        for w in self.read_acks(std::slice::from_ref(&policy)).await? {
            tracing::warn!("{w}");
        }
        let invitation = self
            .invitations()
            .await?
            .into_iter()
            .find(|i| i.uri == link.uri);
        let circle = match invitation {
            Some(_) => None,
            None => self.view(&link.uri).await?,
        };
        Ok(OpenedLink {
            link,
            invitation,
            circle,
        })
    }
}
