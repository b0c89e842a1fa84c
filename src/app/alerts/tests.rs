//! The ladder over simulated days: every kind, every stage, the weekly reminder, resolution
//! and a problem that comes back.

use rstest::rstest;

use super::Stage::{Alert as A, Notice as N, Reminder as R, Warning as W};
use super::*;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// `d` days after 1 January 2026.
fn day(d: f64) -> Timestamp {
    Timestamp::from_millis(T0 + (d * 86_400_000.0) as i64)
}

fn thing(kind: &str, since: Option<f64>) -> Thing {
    let name = "bob.test".to_string();
    let circle = "Kitchen".to_string();
    let about = match kind {
        "invitation" => About::Invitation {
            from: "alice.test".into(),
            circle,
        },
        "backup" => About::NotBackedUp { name },
        "copy" => About::CopyFailing { name, circle },
        "silent" => About::MemberSilent { name, circle },
        "gone" => About::Gone {
            name,
            status: "deleted".into(),
        },
        _ => About::Flag {
            name,
            kind: "mass-deletion".into(),
            text: "All 40 records were deleted.".into(),
        },
    };
    Thing {
        key: format!("{kind}:did:plc:bob"),
        since: since.map(day),
        about,
    }
}

/// Runs the ladder at each day with the thing present (`Some`) or resolved (`None`); returns
/// the days and stages raised, and the ledger left.
fn story(checks: &[(f64, Option<&Thing>)]) -> (Vec<(f64, Stage)>, Ledger) {
    let mut ledger = Ledger::default();
    let mut raised = Vec::new();
    for (d, t) in checks {
        let things: Vec<Thing> = t.iter().map(|t| (*t).clone()).collect();
        let (alerts, kept) = raise(day(*d), &things, &ledger, true);
        raised.extend(alerts.into_iter().map(|a| (*d, a.stage)));
        ledger = kept;
    }
    (raised, ledger)
}

fn present<'a>(t: &'a Thing, days: &[f64]) -> Vec<(f64, Option<&'a Thing>)> {
    days.iter().map(|d| (*d, Some(t))).collect()
}

#[rstest]
#[case::invitation("invitation", None,
    &[0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 9.9, 10.0, 16.0, 17.0, 24.0],
    &[(0.0, N), (1.0, W), (3.0, A), (10.0, R), (17.0, R), (24.0, R)])]
#[case::not_backed_up("backup", Some(0.0),
    &[0.0, 1.0, 2.9, 3.0, 3.5, 4.0, 10.0, 11.0, 17.9, 18.0],
    &[(3.0, W), (4.0, A), (11.0, R), (18.0, R)])]
#[case::not_backed_up_since_before_it_was_seen("backup", Some(-2.0),
    &[0.0, 1.0, 2.0, 9.0],
    &[(1.0, W), (2.0, A), (9.0, R)])]
#[case::copy_failing("copy", None,
    &[0.0, 4.9, 5.0, 6.0, 7.0, 13.0, 14.0, 21.0],
    &[(5.0, W), (7.0, A), (14.0, R), (21.0, R)])]
#[case::member_silent("silent", None,
    &[0.0, 6.0, 7.0, 9.0, 10.0, 16.0, 17.0, 24.0],
    &[(7.0, W), (10.0, A), (17.0, R), (24.0, R)])]
#[case::gone_once("gone", None, &[0.0, 1.0, 7.0, 30.0], &[(0.0, N)])]
#[case::flag_once("flag", None, &[0.0, 7.0, 100.0], &[(0.0, N)])]
// The computer was off: only the highest step due is raised, the reminder a week after it.
#[case::missed_steps_are_not_made_up("backup", Some(0.0),
    &[5.0, 6.0, 11.0, 12.0],
    &[(5.0, A), (12.0, R)])]
#[case::invitation_seen_late("invitation", None, &[40.0, 41.0, 43.0, 50.0],
    &[(40.0, N), (41.0, W), (43.0, A), (50.0, R)])]
fn each_kind_climbs_its_ladder(
    #[case] kind: &str,
    #[case] since: Option<f64>,
    #[case] days: &[f64],
    #[case] want: &[(f64, Stage)],
) {
    let t = thing(kind, since);
    let (raised, ledger) = story(&present(&t, days));
    assert_eq!(raised, want);
    assert_eq!(ledger.raised.len(), 1);
}

#[rstest]
#[case::not_backed_up("backup")]
#[case::copy_failing("copy")]
#[case::member_silent("silent")]
#[case::invitation("invitation")]
fn it_stops_when_resolved_and_starts_anew_when_it_returns(#[case] kind: &str) {
    let first = thing(kind, (kind == "backup").then_some(0.0));
    let again = thing(kind, (kind == "backup").then_some(30.0));
    let schedule = first.about.schedule();
    let warn = schedule
        .steps
        .iter()
        .find(|(_, s)| *s != Stage::Notice)
        .map(|(after, _)| *after as f64 / 86_400.0)
        .unwrap();
    let mut checks = present(&first, &[0.0, warn, 20.0]);
    // Resolved for a while: nothing raised, nothing kept.
    checks.extend([(21.0, None), (25.0, None)]);
    // Back on day 30: its ladder starts from there.
    checks.extend(present(&again, &[30.0, 30.0 + warn - 0.1, 30.0 + warn]));
    let (raised, _) = story(&checks);
    let after_resolution: Vec<&(f64, Stage)> = raised.iter().filter(|(d, _)| *d > 20.5).collect();
    let mut want = vec![(30.0 + warn, W)];
    if kind == "invitation" {
        want.insert(0, (30.0, N));
    }
    assert_eq!(
        after_resolution.into_iter().copied().collect::<Vec<_>>(),
        want
    );
    let (_, ledger) = story(&[(0.0, Some(&first)), (1.0, None)]);
    assert!(ledger.raised.is_empty(), "resolved things are forgotten");
}

#[test]
fn a_new_last_backup_is_a_new_occurrence_even_unseen() {
    // Failing since day 0, a backup on day 5 and failing again before the next look.
    let first = thing("backup", Some(0.0));
    let again = thing("backup", Some(5.0));
    let (raised, _) = story(&[
        (3.0, Some(&first)),
        (4.0, Some(&first)),
        (6.0, Some(&again)),
        (8.0, Some(&again)),
        (9.0, Some(&again)),
    ]);
    assert_eq!(raised, [(3.0, W), (4.0, A), (8.0, W), (9.0, A)]);
}

#[test]
fn circles_not_read_yet_neither_resolve_nor_raise() {
    let silent = thing("silent", None);
    let backup = thing("backup", Some(0.0));
    let (_, ledger) = story(&present(&silent, &[0.0, 7.0]));
    assert_eq!(ledger.raised["silent:did:plc:bob"].count, 1);
    // After a restart the circles are not read yet: the member's entry stays as it was.
    let (alerts, kept) = raise(day(12.0), std::slice::from_ref(&backup), &ledger, false);
    assert_eq!(alerts.len(), 1, "the backup's ladder is known: {alerts:?}");
    assert_eq!(
        kept.raised["silent:did:plc:bob"],
        ledger.raised["silent:did:plc:bob"]
    );
    // Once read, it goes on from where it was (the alert at day 10 is due), without repeating.
    let (alerts, _) = raise(day(12.0), &[silent, backup], &kept, true);
    let stages: Vec<Stage> = alerts.iter().map(|a| a.stage).collect();
    assert_eq!(stages, [A]);
}

#[test]
fn the_ledger_round_trips_and_old_keys_count_as_told() {
    let inv = thing("invitation", None);
    let (_, ledger) = story(&present(&inv, &[0.0, 1.0]));
    let back = Ledger::read(Some(&ledger.to_json()), day(2.0));
    assert_eq!(back, ledger);
    // An older version's list of delivered keys: that news is not told again.
    let old = Ledger::read(Some(r#"["flag:did:plc:bob","failing:x:1:1h"]"#), day(0.0));
    let flag = thing("flag", None);
    let (alerts, kept) = raise(day(0.0), std::slice::from_ref(&flag), &old, true);
    assert!(alerts.is_empty(), "{alerts:?}");
    assert_eq!(kept.raised.len(), 1, "keys no longer present are dropped");
    assert_eq!(Ledger::read(None, day(0.0)), Ledger::default());
    assert_eq!(Ledger::read(Some("damaged"), day(0.0)), Ledger::default());
}

#[rstest]
#[case::backup_warning("backup", 3.0, W, "bob.test not backed up for 3 days")]
#[case::backup_alert("backup", 4.0, A, "bob.test still not backed up after 4 days")]
#[case::backup_reminder("backup", 11.0, R, "Reminder: bob.test not backed up for 11 days")]
#[case::copy_warning("copy", 5.0, W, "bob.test's copies in “Kitchen” are failing checks")]
#[case::copy_alert(
    "copy",
    7.0,
    A,
    "bob.test's copies in “Kitchen” have failed checks for 7 days"
)]
#[case::copy_reminder(
    "copy",
    14.0,
    R,
    "Reminder: bob.test's copies in “Kitchen” are failing checks"
)]
#[case::silent_warning("silent", 7.0, W, "bob.test in “Kitchen” has not been heard from")]
#[case::silent_alert(
    "silent",
    10.0,
    A,
    "bob.test in “Kitchen” is still silent after 10 days"
)]
#[case::invitation_notice("invitation", 0.0, N, "alice.test invites you to “Kitchen”")]
#[case::invitation_warning(
    "invitation",
    1.0,
    W,
    "alice.test is waiting for your answer to “Kitchen”"
)]
#[case::invitation_alert(
    "invitation",
    3.0,
    A,
    "alice.test's invitation to “Kitchen” has waited 3 days"
)]
#[case::invitation_reminder(
    "invitation",
    10.0,
    R,
    "Reminder: alice.test's invitation to “Kitchen” is not answered yet"
)]
#[case::gone("gone", 0.0, N, "bob.test's account is deleted")]
#[case::flag("flag", 0.0, N, "Many of bob.test's posts were deleted")]
fn each_stage_says_what_it_is(
    #[case] kind: &str,
    #[case] elapsed_days: f64,
    #[case] stage: Stage,
    #[case] title: &str,
) {
    let t = thing(kind, None);
    let (got, body) = words(&t.about, stage, (elapsed_days * 86_400.0) as u64);
    assert_eq!(got, title);
    assert!(!body.is_empty() && !body.contains("did:"), "{body}");
}

#[test]
fn the_facts_become_things() {
    let friend = |did: &str, failing: bool, gone: Option<&str>| FriendFacts {
        did: did.into(),
        name: did.into(),
        failing,
        last_good: Some(day(1.0)),
        gone: gone.map(String::from),
    };
    let member = |did: &str, state: &str| MemberFacts {
        circle_uri: "at://c".into(),
        circle: "Kitchen".into(),
        did: did.into(),
        name: did.into(),
        state: state.into(),
    };
    let flag = |id: i64, kind: &str| FlagFacts {
        id,
        did: "did:plc:bob".into(),
        name: "bob.test".into(),
        kind: kind.into(),
        text: "What happened.".into(),
    };
    let things = things(
        &[
            friend("ok", false, None),
            friend("failing", true, None),
            friend("gone", true, Some("deactivated")),
        ],
        &[
            member("m1", "ok"),
            member("m2", "degraded"),
            member("m3", "at-risk"),
            member("m4", "failed"),
            member("m5", "abandoned"),
        ],
        &[InvitationFacts {
            uri: "at://i".into(),
            cid: "bafy".into(),
            from: "alice.test".into(),
            circle: "Kitchen".into(),
        }],
        &[flag(1, "mass-deletion"), flag(2, "account-deleted")],
    );
    let keys: Vec<(&str, Option<Timestamp>)> =
        things.iter().map(|t| (t.key.as_str(), t.since)).collect();
    assert_eq!(
        keys,
        [
            ("backup:failing", Some(day(1.0))),
            ("gone:gone:deactivated", None),
            ("copy:at://c:m3", None),
            ("silent:at://c:m4", None),
            ("silent:at://c:m5", None),
            ("invitation:at://i:bafy", None),
            ("flag:1", None),
        ]
    );
}

#[rstest]
#[case::backed_up(Some(3.0), None, Some(0.0), Some(3.0))]
#[case::caught_up_later(Some(3.0), Some(5.0), Some(0.0), Some(5.0))]
#[case::caught_up_earlier(Some(5.0), Some(3.0), Some(0.0), Some(5.0))]
#[case::never_good_counts_from_added(None, None, Some(2.0), Some(2.0))]
#[case::only_caught_up(None, Some(4.0), Some(2.0), Some(4.0))]
#[case::nothing_known(None, None, None, None)]
fn the_last_good_time(
    #[case] synced: Option<f64>,
    #[case] caught_up: Option<f64>,
    #[case] added: Option<f64>,
    #[case] want: Option<f64>,
) {
    assert_eq!(
        last_good(synced.map(day), caught_up.map(day), added.map(day)),
        want.map(day)
    );
}

#[test]
fn a_first_backup_that_keeps_failing_climbs_the_ladder_from_when_the_friend_was_added() {
    let friend = FriendFacts {
        did: "did:plc:bob".into(),
        name: "bob.test".into(),
        failing: true,
        last_good: last_good(None, None, Some(day(0.0))),
        gone: None,
    };
    let t = things(&[friend], &[], &[], &[]);
    let checks: Vec<(f64, Option<&Thing>)> =
        [1.0, 3.0, 4.0].iter().map(|d| (*d, t.first())).collect();
    let (raised, _) = story(&checks);
    assert_eq!(raised, [(3.0, W), (4.0, A)]);
}

#[test]
fn once_the_circles_are_read_a_declined_invitation_is_forgotten_and_a_new_one_starts_anew() {
    let inv = thing("invitation", None);
    let (raised, ledger) = story(&present(&inv, &[0.0, 1.0]));
    assert_eq!(raised, [(0.0, N), (1.0, W)]);
    // Declined: no circles and no invitations left, but the circles were read.
    let (none, kept) = raise(day(2.0), &[], &ledger, true);
    assert!(none.is_empty());
    assert_eq!(kept, Ledger::default());
    // Invited again: told as news, not as the old ladder's next step.
    let (again, _) = raise(day(5.0), std::slice::from_ref(&inv), &kept, true);
    let stages: Vec<Stage> = again.iter().map(|a| a.stage).collect();
    assert_eq!(stages, [N]);
    // Not read yet (just started): the entry is kept as it was.
    let (none, kept) = raise(day(2.0), &[], &ledger, false);
    assert!(none.is_empty());
    assert_eq!(kept, ledger);
}
