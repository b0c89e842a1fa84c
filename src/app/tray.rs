//! The tray icon's state and its reason (pure): the worst of every friend, circle and
//! invitation, not only this computer's work. Red ([`TrayState::Problem`]) when a copy may be
//! lost or stale: a friend not backed up for a day (counted as the notifications count it,
//! from when the copy was last good: [`crate::app::alerts::last_good`]), a member's copies failing checks, a circle
//! short of copies, an upstream flag of loss. Amber ([`TrayState::NeedsAttention`]) when
//! something waits for the person or a friend: a backup failing for less than a day, an
//! account gone upstream (the copy is kept), a member silent or behind, an invitation. Blue
//! while a backup runs and nothing needs the person; green otherwise. The reason is the worst
//! thing in words, for the tray's menu.

use std::collections::BTreeMap;

use crate::policy::Timestamp;

use super::dto::{CircleCard, Friend, FriendState, InvitationCard, TrayState};
use super::words::{flag_title, span};

/// A friend not backed up for this long turns the tray red: no passing outage any more.
pub const STALE_AFTER_SECS: u64 = 86_400;

/// Upstream flags that may mean loss (the others, a new server or key, need a look).
const LOSS_FLAGS: [&str; 2] = ["mass-deletion", "pds-gone"];

/// What the tray is computed from: the overview's cards and the circles' member states.
#[derive(Debug, Clone, Copy)]
pub struct TrayFacts<'a> {
    pub friends: &'a [Friend],
    pub circles: &'a [CircleCard],
    pub invitations: &'a [InvitationCard],
    /// Each active circle's members and their states ("ok", "degraded", "at-risk", "failed",
    /// "abandoned", …), by the circle's URI (the node's last health evaluation).
    pub members: &'a BTreeMap<String, Vec<(String, String)>>,
    /// When each friend's copy was last good, by DID ([`crate::app::alerts::last_good`]: the
    /// same time the notifications count "not backed up for …" from; for a first backup that
    /// keeps failing, when the friend was added).
    pub last_good: &'a BTreeMap<String, Timestamp>,
    /// A backup is under way.
    pub syncing: bool,
    pub now: Timestamp,
}

/// The tray's state and, unless all is well, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tray {
    pub state: TrayState,
    pub reason: Option<String>,
}

/// The worst of everything, with its reason ("(and 2 more)" when there is more).
pub fn tray(f: &TrayFacts<'_>) -> Tray {
    let mut red = Vec::new();
    let mut amber = Vec::new();
    for friend in f.friends {
        let last = f.last_good.get(&friend.did).copied();
        friend_reasons(friend, last, f.now, &mut red, &mut amber);
    }
    for c in f.circles {
        circle_reasons(c, f.members.get(&c.uri), &mut red, &mut amber);
    }
    for i in f.invitations {
        amber.push(format!(
            "{} invites you to “{}”",
            i.from_name, i.circle_name
        ));
    }
    let (state, worst) = if !red.is_empty() {
        (TrayState::Problem, &red)
    } else if !amber.is_empty() {
        (TrayState::NeedsAttention, &amber)
    } else if f.syncing {
        (TrayState::Syncing, &amber)
    } else {
        (TrayState::Ok, &amber)
    };
    let more = red.len() + amber.len();
    let reason = worst.first().map(|first| match more - 1 {
        0 => first.clone(),
        n => format!("{first} (and {n} more)"),
    });
    Tray { state, reason }
}

/// A friend's reasons; `last`: when their copy was last good.
fn friend_reasons(
    f: &Friend,
    last: Option<Timestamp>,
    now: Timestamp,
    red: &mut Vec<String>,
    amber: &mut Vec<String>,
) {
    match f.state {
        FriendState::Failing => match last.map(|l| now.since(l).secs()) {
            Some(secs) if secs >= STALE_AFTER_SECS => {
                red.push(format!("{} not backed up for {}", f.name, span(secs)));
            }
            _ => amber.push(format!("{}'s backup is failing", f.name)),
        },
        FriendState::Gone => amber.push(format!("{}'s account is gone: your copy is safe", f.name)),
        FriendState::Deactivated => amber.push(format!(
            "{}'s account is deactivated: your copy is safe",
            f.name
        )),
        FriendState::FirstBackup | FriendState::Syncing | FriendState::Ok => {}
    }
    for flag in f.flags.iter().filter(|x| !x.kind.starts_with("account-")) {
        let title = flag_title(&flag.kind, &f.name);
        if LOSS_FLAGS.contains(&flag.kind.as_str()) {
            red.push(title);
        } else {
            amber.push(title);
        }
    }
}

/// An active circle's members by their states; the circle's own state when no member
/// explains it (fewer copies than it asks for, say).
fn circle_reasons(
    c: &CircleCard,
    members: Option<&Vec<(String, String)>>,
    red: &mut Vec<String>,
    amber: &mut Vec<String>,
) {
    if c.state != "active" {
        return;
    }
    let name_of = |did: &str| {
        c.members
            .iter()
            .find(|m| m.did == did)
            .map(|m| m.name.clone())
            .unwrap_or_else(|| "a member".into())
    };
    let is_you = |did: &str| c.members.iter().any(|m| m.did == did && m.is_you);
    let before = red.len() + amber.len();
    for (did, state) in members.into_iter().flatten() {
        let (who, copies) = if is_you(did) {
            ("Your computer".to_string(), "Your copies".to_string())
        } else {
            let n = name_of(did);
            (n.clone(), format!("{n}'s copies"))
        };
        match state.as_str() {
            "at-risk" => red.push(format!("{copies} in “{}” are failing checks", c.name)),
            "failed" | "abandoned" => {
                amber.push(format!("{who} in “{}” has not been heard from", c.name));
            }
            "degraded" => amber.push(format!("{who} in “{}” is behind on checks", c.name)),
            _ => {}
        }
    }
    if red.len() + amber.len() > before {
        return;
    }
    match c.health.as_deref() {
        Some("at-risk" | "failed" | "abandoned") => {
            red.push(format!("“{}”: {}", c.name, c.sentence))
        }
        Some("degraded") => amber.push(format!("“{}”: {}", c.name, c.sentence)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::dto::{FriendFlag, MemberCard};
    use rstest::rstest;

    const NOW: &str = "2026-01-10T12:00:00Z";

    fn friend(name: &str, state: FriendState, last: Option<&str>, flag: Option<&str>) -> Friend {
        Friend {
            did: format!("did:plc:{name}"),
            handle: Some(name.into()),
            name: name.into(),
            state,
            status_text: String::new(),
            last_backup_at: last.map(String::from),
            size_bytes: 0,
            posts: 0,
            images: 0,
            progress: None,
            problem: None,
            circles: vec![],
            flags: flag
                .map(|k| FriendFlag {
                    id: 1,
                    kind: k.into(),
                    text: String::new(),
                    detail: String::new(),
                    detected_at: NOW.into(),
                })
                .into_iter()
                .collect(),
            can_restore: true,
            followed: "polling".into(),
            follow_text: String::new(),
        }
    }

    /// The friends' last backups as their last good times (no catch-up, no added time).
    fn last_backups(friends: &[Friend]) -> BTreeMap<String, Timestamp> {
        friends
            .iter()
            .filter_map(|f| {
                let t = Timestamp::parse(f.last_backup_at.as_deref()?).ok()?;
                Some((f.did.clone(), t))
            })
            .collect()
    }

    fn circle(state: &str, health: Option<&str>) -> CircleCard {
        let member = |did: &str, name: &str, is_you: bool| MemberCard {
            did: did.into(),
            name: name.into(),
            accepted: true,
            is_you,
        };
        CircleCard {
            uri: "at://c".into(),
            name: "Kitchen".into(),
            state: state.into(),
            author_name: "you".into(),
            you_wrote_it: true,
            members: vec![
                member("did:plc:me", "you", true),
                member("did:plc:carol", "carol.test", false),
            ],
            min_copies: 1,
            health: health.map(String::from),
            sentence: "Fewer copies than the circle asks for".into(),
            checked: true,
        }
    }

    fn invitation() -> InvitationCard {
        InvitationCard {
            uri: "at://i".into(),
            from_name: "alice.test".into(),
            circle_name: "Garden".into(),
            text: String::new(),
            member_names: vec![],
            estimated_bytes: 0,
            check_every: String::new(),
        }
    }

    use FriendState::{Deactivated, Failing, Gone, Ok as Fine};
    use TrayState::{NeedsAttention as Amber, Ok as Green, Problem as Red, Syncing as Blue};

    #[rstest]
    #[case::all_well(vec![friend("bob.test", Fine, Some(NOW), None)], None, &[], false, Green, None)]
    #[case::syncing(vec![], None, &[], true, Blue, None)]
    #[case::failing_an_hour(
        vec![friend("bob.test", Failing, Some("2026-01-10T11:00:00Z"), None)], None, &[], true,
        Amber, Some("bob.test's backup is failing"))]
    #[case::failing_never_backed_up(vec![friend("bob.test", Failing, None, None)], None, &[], false,
        Amber, Some("bob.test's backup is failing"))]
    #[case::not_backed_up_for_days(
        vec![friend("bob.test", Failing, Some("2026-01-07T12:00:00Z"), None),
             friend("dave.test", Failing, Some("2026-01-10T11:00:00Z"), None)],
        None, &[], true, Red, Some("bob.test not backed up for 3 days (and 1 more)"))]
    #[case::gone(vec![friend("bob.test", Gone, Some(NOW), None)], None, &[], false,
        Amber, Some("bob.test's account is gone: your copy is safe"))]
    #[case::deactivated(vec![friend("bob.test", Deactivated, Some(NOW), None)], None, &[], false,
        Amber, Some("bob.test's account is deactivated: your copy is safe"))]
    #[case::mass_deletion(vec![friend("bob.test", Fine, Some(NOW), Some("mass-deletion"))], None,
        &[], false, Red, Some("Many of bob.test's posts were deleted"))]
    #[case::server_gone(vec![friend("bob.test", Fine, Some(NOW), Some("pds-gone"))], None,
        &[], false, Red, Some("bob.test's server is not answering"))]
    #[case::new_server(vec![friend("bob.test", Fine, Some(NOW), Some("new-pds"))], None,
        &[], false, Amber, Some("bob.test's account moved to another server"))]
    #[case::account_flag_is_the_card_state(vec![friend("bob.test", Fine, Some(NOW), Some("account-deleted"))],
        None, &[], false, Green, None)]
    #[case::member_copies_failing(vec![], Some(circle("active", Some("at-risk"))),
        &[("did:plc:carol", "at-risk")], false,
        Red, Some("carol.test's copies in “Kitchen” are failing checks"))]
    #[case::my_copies_failing(vec![], Some(circle("active", Some("at-risk"))),
        &[("did:plc:me", "at-risk")], false,
        Red, Some("Your copies in “Kitchen” are failing checks"))]
    #[case::member_offline(vec![], Some(circle("active", Some("failed"))),
        &[("did:plc:carol", "failed")], true,
        Amber, Some("carol.test in “Kitchen” has not been heard from"))]
    #[case::member_abandoned(vec![], Some(circle("active", Some("abandoned"))),
        &[("did:plc:carol", "abandoned")], false,
        Amber, Some("carol.test in “Kitchen” has not been heard from"))]
    #[case::member_behind(vec![], Some(circle("active", Some("degraded"))),
        &[("did:plc:me", "ok"), ("did:plc:carol", "degraded")], false,
        Amber, Some("carol.test in “Kitchen” is behind on checks"))]
    #[case::circle_short_of_copies(vec![], Some(circle("active", Some("at-risk"))),
        &[("did:plc:carol", "ok")], false,
        Red, Some("“Kitchen”: Fewer copies than the circle asks for"))]
    #[case::circle_degraded(vec![], Some(circle("active", Some("degraded"))), &[], false,
        Amber, Some("“Kitchen”: Fewer copies than the circle asks for"))]
    #[case::circle_not_active(vec![], Some(circle("left", Some("failed"))),
        &[("did:plc:carol", "at-risk")], false, Green, None)]
    #[case::circle_healthy(vec![], Some(circle("active", Some("ok"))),
        &[("did:plc:carol", "ok"), ("did:plc:me", "recovering")], false, Green, None)]
    #[case::worst_wins(vec![friend("bob.test", Failing, Some("2026-01-10T11:00:00Z"), None)],
        Some(circle("active", Some("at-risk"))), &[("did:plc:carol", "at-risk")], false,
        Red, Some("carol.test's copies in “Kitchen” are failing checks (and 1 more)"))]
    fn the_tray_shows_the_worst(
        #[case] friends: Vec<Friend>,
        #[case] c: Option<CircleCard>,
        #[case] members: &[(&str, &str)],
        #[case] syncing: bool,
        #[case] state: TrayState,
        #[case] reason: Option<&str>,
    ) {
        let circles: Vec<CircleCard> = c.into_iter().collect();
        let last_good = last_backups(&friends);
        let states: BTreeMap<String, Vec<(String, String)>> = [(
            "at://c".to_string(),
            members
                .iter()
                .map(|(d, s)| (d.to_string(), s.to_string()))
                .collect(),
        )]
        .into();
        let t = tray(&TrayFacts {
            friends: &friends,
            circles: &circles,
            invitations: &[],
            members: &states,
            last_good: &last_good,
            syncing,
            now: Timestamp::parse(NOW).unwrap(),
        });
        assert_eq!(t.state, state);
        assert_eq!(t.reason.as_deref(), reason);
    }

    #[test]
    fn an_invitation_waits_for_the_person_even_while_syncing() {
        let states = BTreeMap::new();
        let invitations = [invitation()];
        let t = tray(&TrayFacts {
            friends: &[],
            circles: &[],
            invitations: &invitations,
            members: &states,
            last_good: &BTreeMap::new(),
            syncing: true,
            now: Timestamp::parse(NOW).unwrap(),
        });
        assert_eq!(t.state, Amber);
        assert_eq!(
            t.reason.as_deref(),
            Some("alice.test invites you to “Garden”")
        );
    }

    /// A failing friend's tray, and the notification's "since", from the same facts: the last
    /// backup, the last catch-up from a friend's node and when the friend was added.
    #[rstest]
    #[case::failing_since_a_backup_days_ago(
        Some("2026-01-07T12:00:00Z"),
        None,
        Some("2026-01-01T12:00:00Z"),
        Red,
        "bob.test not backed up for 3 days"
    )]
    #[case::caught_up_by_a_friend_an_hour_ago(
        Some("2026-01-07T12:00:00Z"),
        Some("2026-01-10T11:00:00Z"),
        Some("2026-01-01T12:00:00Z"),
        Amber,
        "bob.test's backup is failing"
    )]
    #[case::an_older_catch_up_does_not_count(
        Some("2026-01-08T12:00:00Z"),
        Some("2026-01-05T12:00:00Z"),
        Some("2026-01-01T12:00:00Z"),
        Red,
        "bob.test not backed up for 2 days"
    )]
    #[case::first_backup_failing_since_added_days_ago(
        None,
        None,
        Some("2026-01-06T12:00:00Z"),
        Red,
        "bob.test not backed up for 4 days"
    )]
    #[case::first_backup_failing_since_added_an_hour_ago(
        None,
        None,
        Some("2026-01-10T11:00:00Z"),
        Amber,
        "bob.test's backup is failing"
    )]
    #[case::nothing_known(None, None, None, Amber, "bob.test's backup is failing")]
    fn the_tray_counts_as_the_notifications_do(
        #[case] synced: Option<&str>,
        #[case] caught_up: Option<&str>,
        #[case] added: Option<&str>,
        #[case] state: TrayState,
        #[case] reason: &str,
    ) {
        use crate::app::alerts::{self, FriendFacts};
        let t = |s: Option<&str>| s.map(|s| Timestamp::parse(s).unwrap());
        let good = alerts::last_good(t(synced), t(caught_up), t(added));
        let friends = [friend("bob.test", Failing, synced, None)];
        let last_good: BTreeMap<String, Timestamp> = good
            .map(|g| ("did:plc:bob.test".to_string(), g))
            .into_iter()
            .collect();
        let states = BTreeMap::new();
        let tray = tray(&TrayFacts {
            friends: &friends,
            circles: &[],
            invitations: &[],
            members: &states,
            last_good: &last_good,
            syncing: false,
            now: Timestamp::parse(NOW).unwrap(),
        });
        assert_eq!((tray.state, tray.reason.as_deref()), (state, Some(reason)));
        // The notifications count from the same time.
        let things = alerts::things(
            &[FriendFacts {
                did: "did:plc:bob.test".into(),
                name: "bob.test".into(),
                failing: true,
                last_good: good,
                gone: None,
            }],
            &[],
            &[],
            &[],
        );
        assert_eq!(things.len(), 1);
        assert_eq!(things[0].since, good);
    }
}
