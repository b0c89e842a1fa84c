//! The main screens: [`Engine::overview`] (the friends' cards, the circles, the invitations,
//! the storage section, the headline and the tray's state) and the words on those cards.
//! Local data and the node's last results only: fast, and works offline.

use std::collections::BTreeMap;

use crate::engine::NodeState;
use crate::group::plan::{human_every, CircleState};
use crate::group::{db as gdb, CircleView};
use crate::history;
use crate::policy::lifecycle::AckState;
use crate::policy::Timestamp;
use crate::session;
use crate::store;
use crate::sync::FailureKind;

use super::{
    flag_words, humanize, now, parse_time, progress_dto, short_did, AppError, Engine, WELCOMED_KEY,
};
use crate::app::alerts;
use crate::app::conditions::health_sentence;
use crate::app::dto::*;
use crate::app::tray::{self, TrayFacts};
use crate::app::words;

/// One account as the overview reads it: its row, its images (count, bytes), its posts, how
/// it is followed (`crate::follow::how_followed`), when a backup was last tried and when the
/// account was added.
type AccountRow = (
    store::RepoRow,
    i64,
    i64,
    i64,
    &'static str,
    Option<String>,
    Option<String>,
);

/// What the overview reads from the store, in one read.
struct Local {
    me: Option<session::Account>,
    welcomed: bool,
    rows: Vec<AccountRow>,
    open_flags: Vec<(String, Option<String>, history::Flag)>,
}

/// The friends' cards and the storage they take.
struct FriendCards {
    /// By name.
    friends: Vec<Friend>,
    /// Largest first.
    per_friend: Vec<StorageItem>,
    /// Bytes held for every account, this node's own included.
    used: u64,
    /// The kind of a backup that did not fit, if one did not.
    no_room: Option<FailureKind>,
    /// When each friend's copy was last good, by DID (`alerts::last_good`: the tray counts
    /// as the notifications do).
    last_good: BTreeMap<String, Timestamp>,
}

impl Engine {
    /// Everything the main screens show. Local data only: fast, and works offline.
    pub async fn overview(&self) -> Result<Overview, AppError> {
        let now = now();
        let settings = self.settings().await?;
        let Local {
            me,
            welcomed,
            rows,
            open_flags,
        } = self.read_local().await?;
        let st = self.inner.node.state();
        let notifications = self.live().notifications.clone();
        let cards = friend_cards(
            rows,
            me.as_ref().map(|m| m.did.as_str()),
            friend_flags(open_flags, now),
            &st,
            settings.check_every_minutes,
            now,
        );
        let my_did = me.as_ref().map(|m| m.did.clone()).unwrap_or_default();
        let circles: Vec<CircleCard> = st
            .circles
            .iter()
            .map(|v| circle_card(v, &my_did, st.health.get(&v.uri), &st.backoff))
            .collect();
        let invitations: Vec<InvitationCard> = st.invitations.iter().map(invitation_card).collect();
        let active = circles
            .iter()
            .find(|c| c.state == "active" && c.health.is_some());
        let headline = words::headline(
            &cards.friends,
            active.map(|c| {
                (
                    c.health.as_deref().unwrap_or("unknown"),
                    c.min_copies,
                    // "Checked" only once every copy has passed a check.
                    st.health.get(&c.uri).and_then(|h| h.checked_at),
                )
            }),
            st.paused_until,
            now,
        );
        let members: BTreeMap<String, Vec<(String, String)>> = st
            .health
            .iter()
            .map(|(uri, h)| (uri.clone(), h.members.clone()))
            .collect();
        let tray = tray::tray(&TrayFacts {
            friends: &cards.friends,
            circles: &circles,
            invitations: &invitations,
            members: &members,
            last_good: &cards.last_good,
            syncing: !st.progress.is_empty(),
            now,
        });
        Ok(Overview {
            me: me.map(|m| Me {
                did: m.did,
                handle: m.handle,
            }),
            welcomed,
            friends: cards.friends,
            circles,
            invitations,
            tray: tray.state,
            tray_reason: tray.reason,
            headline,
            paused_until: st.paused_until.filter(|u| *u > now).map(|u| u.to_string()),
            notifications: notifications.unwrap_or(NotificationStatus {
                available: true,
                reason: None,
            }),
            storage: Storage {
                limit_text: storage_limit_text(
                    cards.used,
                    settings.storage_limit_bytes,
                    cards.no_room,
                ),
                used_bytes: cards.used,
                limit_bytes: settings.storage_limit_bytes,
                per_friend: cards.per_friend,
                retention_days: settings.retention_days,
            },
        })
    }

    /// Who is signed in, whether the welcome was finished, every account with its counts,
    /// and the open upstream flags.
    async fn read_local(&self) -> Result<Local, AppError> {
        Ok(self
            .store()
            .read(|c| {
                let open_flags = history::open_flags(c)?;
                let me = session::signed_in(c)?;
                let welcomed = gdb::meta(c, WELCOMED_KEY)?.is_some() || me.is_some();
                let mut rows = Vec::new();
                for r in store::list_repos(c)? {
                    let (images, image_bytes, _, _) = store::blob_counts(c, r.id)?;
                    let posts: i64 = c.query_row(
                        "SELECT count(*) FROM records WHERE repo_id = ?1
                         AND collection = 'app.bsky.feed.post'",
                        [r.id],
                        |x| x.get(0),
                    )?;
                    let followed = crate::follow::how_followed(c, r.pds.as_deref())?;
                    let (tried, added): (Option<String>, Option<String>) = c.query_row(
                        "SELECT last_attempt_at, added_at FROM repos WHERE id = ?1",
                        [r.id],
                        |x| Ok((x.get(0)?, x.get(1)?)),
                    )?;
                    rows.push((r, images, image_bytes, posts, followed, tried, added));
                }
                Ok(Local {
                    me,
                    welcomed,
                    rows,
                    open_flags,
                })
            })
            .await?)
    }
}

/// The open flags in words, per account. The account's own status upstream is the card's
/// state already ("gone", "deactivated"), so those flags are left out.
fn friend_flags(
    open_flags: Vec<(String, Option<String>, history::Flag)>,
    now: Timestamp,
) -> BTreeMap<String, Vec<FriendFlag>> {
    let mut flags_of: BTreeMap<String, Vec<FriendFlag>> = BTreeMap::new();
    for (did, handle, f) in open_flags
        .into_iter()
        .filter(|(_, _, f)| !f.kind.starts_with(history::kind::ACCOUNT_PREFIX))
    {
        let name = handle.unwrap_or_else(|| short_did(&did));
        flags_of.entry(did).or_default().push(FriendFlag {
            text: flag_words(&f, &name, now),
            id: f.id,
            kind: f.kind,
            detail: f.detail,
            detected_at: f.detected_at,
        });
    }
    flags_of
}

/// A card for every account backed up here but `me`'s own (whose copy still counts in the
/// storage used).
fn friend_cards(
    rows: Vec<AccountRow>,
    me: Option<&str>,
    mut flags_of: BTreeMap<String, Vec<FriendFlag>>,
    st: &NodeState,
    check_every_minutes: u32,
    now: Timestamp,
) -> FriendCards {
    let names: BTreeMap<String, String> = rows
        .iter()
        .filter_map(|(r, ..)| r.handle.clone().map(|h| (r.did.clone(), h)))
        .collect();
    let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in &st.circles {
        for d in &v.holding {
            holders.entry(d.clone()).or_default().push(v.name.clone());
        }
    }
    let mut no_room: Option<FailureKind> = None;
    let mut friends = Vec::new();
    let mut per_friend = Vec::new();
    let mut used = 0u64;
    let offset = *chrono::Local::now().offset();
    let mut last_good = BTreeMap::new();
    for (r, images, image_bytes, posts, followed, tried, added) in rows {
        let size = u64::try_from(r.bytes.max(0) + image_bytes.max(0)).unwrap_or(0);
        used += size;
        if me == Some(r.did.as_str()) {
            // This node's copy of its own account (to check friends' copies against).
            continue;
        }
        let name = r.handle.clone().unwrap_or_else(|| short_did(&r.did));
        let progress = st.progress.get(&r.did).map(progress_dto);
        let state = friend_state(&r, progress.is_some());
        let last = parse_time(r.last_sync_at.as_deref());
        let good = alerts::last_good(
            last,
            parse_time(r.caught_up_at.as_deref()),
            parse_time(added.as_deref()),
        );
        if let Some(t) = good {
            last_good.insert(r.did.clone(), t);
        }
        let kind = r.error_code.as_deref().and_then(FailureKind::parse);
        let problem = (state == FriendState::Failing)
            .then(|| r.error.clone())
            .flatten()
            .map(|e| {
                let tried = parse_time(tried.as_deref()).map(|t| checked_at(t, now, offset));
                plain_error(kind, &name, tried.as_deref(), &humanize(&e, &names))
            });
        if let Some(k) = kind.filter(|k| state == FriendState::Failing && k.is_no_room()) {
            no_room.get_or_insert(k);
        }
        per_friend.push(StorageItem {
            name: name.clone(),
            bytes: size,
        });
        friends.push(Friend {
            did: r.did.clone(),
            handle: r.handle.clone(),
            status_text: match (&r.caught_up_from, parse_time(r.caught_up_at.as_deref())) {
                // Its server can't serve it, but a friend's computer brought the copy up to date.
                (Some(node), Some(at)) if state != FriendState::Ok => words::caught_up_status(
                    names.get(node).map(String::as_str).unwrap_or("a friend"),
                    at,
                    now,
                ),
                _ => {
                    words::friend_status(state, last, st.backoff.get(&r.did).map(|b| b.since), now)
                }
            },
            name,
            state,
            last_backup_at: r.last_sync_at.clone(),
            size_bytes: size,
            posts: u64::try_from(posts).unwrap_or(0),
            images: u64::try_from(images).unwrap_or(0),
            progress,
            problem,
            circles: holders.get(&r.did).cloned().unwrap_or_default(),
            flags: flags_of.remove(&r.did).unwrap_or_default(),
            can_restore: r.head.is_some(),
            followed: followed.to_string(),
            follow_text: words::follow_text(followed, check_every_minutes),
        });
    }
    friends.sort_by_key(|f| f.name.to_lowercase());
    per_friend.sort_by_key(|f| std::cmp::Reverse(f.bytes));
    FriendCards {
        friends,
        per_friend,
        used,
        no_room,
        last_good,
    }
}

/// A friend's state: a backup under way (`syncing`) first, then the account upstream, then
/// the last backup.
fn friend_state(r: &store::RepoRow, syncing: bool) -> FriendState {
    let upstream = r.upstream_status.as_deref().unwrap_or("active");
    if syncing {
        if r.head.is_none() {
            FriendState::FirstBackup
        } else {
            FriendState::Syncing
        }
    } else if upstream == "deactivated" {
        FriendState::Deactivated
    } else if upstream != "active" {
        FriendState::Gone
    } else if r.state == "error" {
        FriendState::Failing
    } else if r.head.is_none() {
        FriendState::FirstBackup
    } else {
        FriendState::Ok
    }
}

/// What the storage section says about the limit: nothing while there is room. `no_room` is
/// the kind of a backup that did not fit, if one did not.
fn storage_limit_text(
    used: u64,
    limit: Option<u64>,
    no_room: Option<FailureKind>,
) -> Option<String> {
    match (limit, no_room) {
        (_, Some(FailureKind::DiskFull)) => Some(
            "The disk is full: some backups are waiting for room. Free some space on it, or move the copies to a larger disk in Settings."
                .into(),
        ),
        (Some(l), Some(_)) => Some(format!(
            "Your storage limit of {} is reached: some backups are waiting for room. Raise the limit in Settings, or stop backing up someone.",
            words::size(l)
        )),
        (Some(l), None) if used >= l => Some(format!(
            "Your storage limit of {} is reached: new posts will wait for room. Raise the limit in Settings, or stop backing up someone.",
            words::size(l)
        )),
        (None, Some(_)) => Some(
            "Some backups did not fit and are waiting for room: see the friends' cards.".into(),
        ),
        _ => None,
    }
}

/// A failed backup in words for `name`'s card, chosen by the kind of failure (a row written
/// before kinds were kept has none: its message is shown, without addresses). `tried`: when
/// the backup was last tried ("3:29 pm").
fn plain_error(kind: Option<FailureKind>, name: &str, tried: Option<&str>, e: &str) -> String {
    let when = tried.map(|t| format!(" (checked {t})")).unwrap_or_default();
    let kept = "the copy you have is kept";
    match kind {
        Some(FailureKind::Unreachable) => format!("{name}'s server isn't answering{when}; {kept}"),
        Some(FailureKind::Refused) => {
            format!("{name}'s server refused to send the account{when}; {kept}")
        }
        Some(FailureKind::BadData) => {
            format!("{name}'s server sent data that failed verification{when}; {kept}")
        }
        Some(FailureKind::Identity) => format!(
            "{name}'s account doesn't say where its server is{when}; {kept}. They may be moving it"
        ),
        Some(FailureKind::Gone) => format!("{name}'s account is no longer on its server; {kept}"),
        // The storage messages say what to do with sizes: kept whole.
        Some(FailureKind::DiskFull | FailureKind::StorageLimit) => e.chars().take(300).collect(),
        _ => without_addresses(e).chars().take(300).collect(),
    }
}

/// When a backup was last tried, as a clock: "3:29 pm" today, "3:29 pm yesterday" before.
fn checked_at(t: Timestamp, now: Timestamp, offset: chrono::FixedOffset) -> String {
    let moment = words::moment(t, now, offset);
    moment
        .strip_suffix(" today")
        .map(str::to_string)
        .unwrap_or(moment)
}

/// A message with every web address in it replaced by "their server" (people act on the
/// words, never on a request's address).
fn without_addresses(e: &str) -> String {
    e.split(' ')
        .map(|word| {
            if word.starts_with("http://") || word.starts_with("https://") {
                let tail = word.len() - word.trim_end_matches([':', ',', ';', '.', ')']).len();
                format!("their server{}", &word[word.len() - tail..])
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A circle's card. `failing`: the accounts whose last backup failed (by DID), named when the
/// circle can't be checked because of them.
fn circle_card<T>(
    v: &CircleView,
    me: &str,
    h: Option<&crate::engine::CircleHealth>,
    failing: &BTreeMap<String, T>,
) -> CircleCard {
    let health = h.map(|h| h.state.clone());
    let checked = h.is_some_and(|h| h.checked_at.is_some());
    let name_of = |did: &str, handle: &Option<String>| {
        if did == me {
            "you".to_string()
        } else {
            handle.clone().unwrap_or_else(|| short_did(did))
        }
    };
    let members: Vec<MemberCard> = v
        .members
        .iter()
        .map(|m| MemberCard {
            did: m.did.clone(),
            name: name_of(&m.did, &m.handle),
            accepted: m.ack == AckState::Accepted,
            is_you: m.did == me,
        })
        .collect();
    let state = match v.state {
        CircleState::Pending if v.in_force.is_some() => "changing",
        CircleState::Pending | CircleState::Scheduled => "waiting",
        CircleState::Active => "active",
        CircleState::Rejected => "declined",
        CircleState::Expired => "expired",
        CircleState::Revoked => "revoked",
        CircleState::Deleted => "gone",
        CircleState::Left => "left",
    }
    .to_string();
    let waiting: Vec<&str> = members
        .iter()
        .filter(|m| !m.accepted)
        .map(|m| m.name.as_str())
        .collect();
    let sentence = match (state.as_str(), health.as_deref()) {
        ("waiting" | "changing", _) if !waiting.is_empty() => {
            format!("Waiting for {} to accept", waiting.join(", "))
        }
        ("active", Some("unknown"))
            if checked || members.iter().any(|m| failing.contains_key(&m.did)) =>
        {
            unchecked_sentence(&members, failing)
        }
        ("active", Some(h)) => health_sentence(h, members.len(), v.min_copies, checked),
        ("active", None) => "Active: the first checks are coming".into(),
        ("left", _) => "You left this circle".into(),
        ("revoked", _) => "Its author ended this circle".into(),
        ("declined", _) => "A member declined this circle".into(),
        _ => format!("This circle is {state}"),
    };
    CircleCard {
        uri: v.uri.clone(),
        name: v.name.clone(),
        state,
        author_name: name_of(&v.author, &v.author_handle),
        you_wrote_it: v.author == me,
        members,
        min_copies: v.min_copies,
        health,
        sentence,
        checked,
    }
}

/// An active circle whose health can't be told now: it was checked before, or a member can't
/// be backed up. Not "just started": who can't be reached, and that the copies stay.
fn unchecked_sentence<T>(members: &[MemberCard], failing: &BTreeMap<String, T>) -> String {
    let names: Vec<&str> = members
        .iter()
        .filter(|m| !m.is_you && failing.contains_key(&m.did))
        .map(|m| m.name.as_str())
        .collect();
    let kept = "the copies you have are kept";
    match names.as_slice() {
        [] => format!("Can't be checked right now; {kept}"),
        [one] => format!("Can't be checked right now: {one}'s server isn't answering; {kept}"),
        [rest @ .., last] => format!(
            "Can't be checked right now: the servers of {} and {last} aren't answering; {kept}",
            rest.join(", ")
        ),
    }
}

fn invitation_card(i: &crate::group::Invitation) -> InvitationCard {
    InvitationCard {
        uri: i.uri.clone(),
        from_name: i.facts.author.clone(),
        circle_name: i.name.clone(),
        text: i.text.clone(),
        member_names: i.facts.others.clone(),
        estimated_bytes: i.facts.estimated_bytes,
        check_every: human_every(i.facts.check_interval),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The kind decides, not the words: a message that mentions a network is not one, and no
    // request address reaches the card.
    #[rstest::rstest]
    #[case::down(
        Some(FailureKind::Unreachable),
        "could not reach https://pds.bob.test/xrpc/com.atproto.sync.getLatestCommit?did=did:plc:bob: connection refused",
        "bob.test's server isn't answering (checked 3:29 pm); the copy you have is kept"
    )]
    #[case::refused(
        Some(FailureKind::Refused),
        "the network said no",
        "bob.test's server refused to send the account (checked 3:29 pm); the copy you have is kept"
    )]
    #[case::bad_data(
        Some(FailureKind::BadData),
        "https://pds.bob.test/xrpc/x sent a bad block",
        "bob.test's server sent data that failed verification (checked 3:29 pm); the copy you have is kept"
    )]
    #[case::old_row_without_a_kind(
        None,
        "could not reach https://pds.bob.test/xrpc/com.atproto.sync.getRepo: refused",
        "could not reach their server: refused"
    )]
    fn a_failed_backup_in_words_without_addresses(
        #[case] kind: Option<FailureKind>,
        #[case] message: &str,
        #[case] want: &str,
    ) {
        let now = Timestamp::parse("2026-12-03T18:00:00Z").unwrap();
        let tried = Timestamp::parse("2026-12-03T15:29:35Z").unwrap();
        let utc = chrono::FixedOffset::east_opt(0).unwrap();
        let when = checked_at(tried, now, utc);
        let got = plain_error(kind, "bob.test", Some(&when), message);
        assert_eq!(got, want);
        assert!(!got.contains("http"), "{got}");
    }

    #[test]
    fn a_circle_that_cannot_be_checked_names_who_and_keeps_the_copies() {
        let card = |name: &str, did: &str, is_you: bool| MemberCard {
            did: did.into(),
            name: name.into(),
            accepted: true,
            is_you,
        };
        let members = [
            card("you", "did:plc:me", true),
            card("bob.test", "did:plc:bob", false),
            card("carol.test", "did:plc:carol", false),
        ];
        let failing = |dids: &[&str]| -> BTreeMap<String, ()> {
            dids.iter().map(|d| (d.to_string(), ())).collect()
        };
        assert_eq!(
            unchecked_sentence(&members, &failing(&["did:plc:bob"])),
            "Can't be checked right now: bob.test's server isn't answering; the copies you have are kept"
        );
        assert_eq!(
            unchecked_sentence(&members, &failing(&["did:plc:bob", "did:plc:carol"])),
            "Can't be checked right now: the servers of bob.test and carol.test aren't answering; the copies you have are kept"
        );
        assert_eq!(
            unchecked_sentence(&members, &failing(&[])),
            "Can't be checked right now; the copies you have are kept"
        );
    }

    #[test]
    fn the_storage_section_says_when_the_limit_is_reached() {
        assert_eq!(storage_limit_text(10, Some(100), None), None);
        assert!(storage_limit_text(100, Some(100), None)
            .unwrap()
            .contains("limit of 100 bytes is reached"));
        let full = storage_limit_text(1, None, Some(FailureKind::DiskFull)).unwrap();
        assert!(full.starts_with("The disk is full"), "{full}");
        let limit = storage_limit_text(1, Some(10), Some(FailureKind::StorageLimit)).unwrap();
        assert!(limit.contains("limit of 10 bytes is reached"), "{limit}");
        let msg = "bob.test's backup does not fit within your storage limit: it needs about 3 MB more, and 9 MB of 10 MB is used. Nothing was changed: raise the limit in Settings, or stop backing up someone";
        assert_eq!(
            plain_error(Some(FailureKind::StorageLimit), "bob.test", None, msg),
            msg,
            "kept whole"
        );
        assert_eq!(
            humanize(
                "did:plc:bob's backup",
                &BTreeMap::from([("did:plc:bob".to_string(), "bob.test".to_string())])
            ),
            "bob.test's backup"
        );
    }
}
