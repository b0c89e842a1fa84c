//! Table tests of `conditions`: reports made by `policy::evaluate` from stories of a
//! circle made by the app's defaults, and the sentences they read as.
use super::*;
use crate::group::plan::{new_policy_record, NewCircle, RuleOverrides};
use crate::policy::observations::{
    AckObservation, Head, Heartbeat, Holding, Observations, Outcome, Verification,
};
use crate::policy::records::{AckRecord, StrongRef};
use crate::policy::{evaluate, Policy};

const URI: &str = "at://did:plc:alice/org.p2pds.policy/3kcircle";
pub(crate) const ALICE: &str = "did:plc:alice";
pub(crate) const BOB: &str = "did:plc:bob";
const CAROL: &str = "did:plc:carol";
/// When the circle was made: 9:29 am, so a new copy is due by 3:29 pm (six hours).
const T0: &str = "2026-12-03T09:29:35Z";
const MIN: i64 = 60_000;

fn t0() -> Timestamp {
    Timestamp::parse(T0).unwrap()
}

pub(crate) fn at(minutes: i64) -> Timestamp {
    Timestamp::from_millis(t0().millis() + minutes * MIN)
}

/// A circle made by alice (you) at [`T0`] with `others`, by the app's defaults.
pub(crate) fn circle(others: &[&str], min_copies: Option<u32>) -> Policy {
    let record = new_policy_record(&NewCircle {
        name: "Kitchen table".into(),
        description: None,
        author: ALICE.into(),
        members: others.iter().map(|s| s.to_string()).collect(),
        min_copies,
        rules: RuleOverrides::default(),
        now: t0(),
    });
    let value = serde_json::json!({"uri": URI, "value": record});
    crate::policy::validate::check_value(&value).unwrap().policy
}

pub(crate) fn names() -> BTreeMap<String, String> {
    BTreeMap::from([
        (ALICE.to_string(), "you".to_string()),
        (BOB.to_string(), "bob.test".to_string()),
        (CAROL.to_string(), "carol.test".to_string()),
    ])
}

/// What each member did, minutes after [`T0`].
#[derive(Default)]
pub(crate) struct Story {
    /// Members who accepted.
    pub(crate) acked: Vec<&'static str>,
    /// (member, minute): a heartbeat.
    pub(crate) beats: Vec<(&'static str, i64)>,
    /// (holder, subject, minute): a published copy of the account's newest commit.
    pub(crate) held: Vec<(&'static str, &'static str, i64)>,
    /// (verifier, holder, subject, minute, outcome): a check of a copy.
    pub(crate) checks: Vec<(&'static str, &'static str, &'static str, i64, Outcome)>,
    /// (subject, minute): a commit the copies don't have.
    pub(crate) commits: Vec<(&'static str, i64)>,
}

pub(crate) fn observe(p: &Policy, s: &Story) -> Observations {
    let mut o = Observations::default();
    for who in &s.acked {
        o.acks.push(AckObservation {
            uri: format!("at://{who}/org.p2pds.policy.ack/1"),
            cid: None,
            value: AckRecord {
                lex_type: "org.p2pds.policy.ack".into(),
                policy: StrongRef {
                    uri: URI.into(),
                    cid: p.reference.cid.clone(),
                },
                accepted: true,
                reason: None,
                created_at: T0.into(),
            },
        });
    }
    for m in &p.members {
        o.heads.push(Head {
            subject: m.did.clone(),
            rev: "2rev0".into(),
            at: at(-60),
        });
    }
    for (subject, minute) in &s.commits {
        o.heads.push(Head {
            subject: subject.to_string(),
            rev: "2rev1".into(),
            at: at(*minute),
        });
    }
    for (who, minute) in &s.beats {
        o.heartbeats.push(Heartbeat {
            node: who.to_string(),
            at: at(*minute),
        });
    }
    for (node, subject, minute) in &s.held {
        o.holdings.push(Holding {
            node: node.to_string(),
            subject: subject.to_string(),
            rev: "2rev0".into(),
            data: None,
            synced_at: at(*minute),
            bytes: None,
        });
    }
    for (verifier, node, subject, minute, outcome) in &s.checks {
        for layer in [0u8, 1] {
            o.verifications.push(Verification {
                verifier: verifier.to_string(),
                node: node.to_string(),
                subject: subject.to_string(),
                layer,
                outcome: *outcome,
                at: at(*minute),
                needs: None,
            });
        }
    }
    o
}

/// The page's heading and its lines ("who: sentence"), `minutes` after [`T0`].
fn page(p: &Policy, s: &Story, minutes: i64) -> (Verdict, Vec<String>) {
    let report = evaluate(p, &observe(p, s), at(minutes));
    let names = names();
    let groups = attention(&Inputs {
        report: &report,
        warnings: &[],
        names: &names,
        recovery: Some(p.compliance.recovery_grace_period),
        now: at(minutes),
        offset: FixedOffset::east_opt(0).unwrap(),
    });
    let lines = groups
        .iter()
        .flat_map(|g| g.lines.iter().map(move |l| format!("{}: {l}", g.name)))
        .collect();
    let v = verdict(&report, worst(&groups), report.checked_at().is_some());
    (v, lines)
}

pub(crate) fn both_accepted() -> Story {
    Story {
        acked: vec![ALICE, BOB],
        beats: vec![(ALICE, 0), (BOB, 0)],
        ..Story::default()
    }
}

fn both_hold() -> Story {
    Story {
        held: vec![(ALICE, BOB, 3), (BOB, ALICE, 4)],
        ..both_accepted()
    }
}

/// Each checks the other's copy every hour, at :20, up to `until`; the checks pass.
fn hourly_checks(until: i64) -> Vec<(&'static str, &'static str, &'static str, i64, Outcome)> {
    (0..)
        .map(|k| 20 + 60 * k)
        .take_while(|m| *m <= until)
        .flat_map(|m| {
            [
                (ALICE, BOB, ALICE, m, Outcome::Pass),
                (BOB, ALICE, BOB, m, Outcome::Pass),
            ]
        })
        .collect()
}

/// Beats every half hour from minute 1 to `until`.
fn beating(who: &'static str, until: i64) -> Vec<(&'static str, i64)> {
    (0..)
        .map(|k| 1 + 30 * k)
        .take_while(|m| *m <= until)
        .map(|m| (who, m))
        .collect()
}

#[rstest::rstest]
#[case::bob_has_not_accepted(
    Story { acked: vec![ALICE], beats: vec![(ALICE, 0)], ..Story::default() },
    5,
    "Waiting for answers",
    &["bob.test: bob.test has not accepted the circle yet"],
)]
#[case::a_new_circle_makes_its_copies(
    both_accepted(),
    5,
    "Getting ready",
    &[
        "You: You are still making your copy of bob.test's account (due by 3:29 pm today)",
        "bob.test: bob.test is still making their copy of your account (due by 3:29 pm today)",
    ],
)]
#[case::bob_not_heard_from_yet(
    Story { beats: vec![(ALICE, 0)], ..both_accepted() },
    5,
    "Getting ready",
    &[
        "You: You are still making your copy of bob.test's account (due by 3:29 pm today)",
        "bob.test: bob.test has not been heard from yet",
    ],
)]
#[case::copies_made_not_checked(both_hold(), 10, "Not checked yet", &[])]
#[case::checked(
    Story { checks: vec![(ALICE, BOB, ALICE, 20, Outcome::Pass), (BOB, ALICE, BOB, 21, Outcome::Pass)], ..both_hold() },
    25,
    "Healthy",
    &[],
)]
#[case::one_check_failed(
    Story { checks: vec![(ALICE, BOB, ALICE, 20, Outcome::Fail), (BOB, ALICE, BOB, 21, Outcome::Pass)], ..both_hold() },
    25,
    "Needs a look",
    &["bob.test: The last check of bob.test's copy of your account failed"],
)]
#[case::bob_never_made_his_copy(
    Story {
        held: vec![(ALICE, BOB, 3)],
        beats: [beating(ALICE, 480), beating(BOB, 480)].concat(),
        checks: hourly_checks(480),
        ..both_accepted()
    },
    480,
    "Not safe",
    &["bob.test: bob.test has no copy of your account, though the circle asks for it"],
)]
#[case::bob_silent_for_four_days(
    Story { beats: [beating(ALICE, 4 * 1440 + 60), beating(BOB, 30)].concat(), ..both_hold() },
    4 * 1440 + 60,
    "Not safe",
    &["bob.test: bob.test has been silent for 4 days and is marked as missing"],
)]
fn a_two_person_circle_in_words(
    #[case] story: Story,
    #[case] minutes: i64,
    #[case] label: &str,
    #[case] want: &[&str],
) {
    let p = circle(&[BOB], None);
    let (v, lines) = page(&p, &story, minutes);
    assert_eq!(lines, want);
    assert_eq!(v.label, label, "{v:?}");
    for l in &lines {
        assert!(
            !l.contains("did:") && !l.contains("bafy") && !l.contains("T0"),
            "{l}"
        );
        assert!(!l.contains("you has") && !l.contains(" 1 copies"), "{l}");
    }
}

#[test]
fn a_member_making_several_copies_says_it_once() {
    let p = circle(&[BOB, CAROL], Some(2));
    let s = Story {
        acked: vec![ALICE, BOB, CAROL],
        beats: vec![(ALICE, 0), (BOB, 0), (CAROL, 0)],
        held: vec![
            (ALICE, BOB, 3),
            (ALICE, CAROL, 3),
            (BOB, ALICE, 3),
            (BOB, CAROL, 3),
        ],
        ..Story::default()
    };
    let (v, lines) = page(&p, &s, 10);
    assert_eq!(
        lines,
        ["carol.test: carol.test is still making their copies of your and bob.test's accounts (due by 3:29 pm today)"]
    );
    assert_eq!(v.label, "Getting ready");
}

#[test]
fn a_copy_behind_says_by_how_much() {
    let p = circle(&[BOB], None);
    let s = Story {
        beats: [beating(ALICE, 600), beating(BOB, 600)].concat(),
        commits: vec![(ALICE, 60)],
        checks: hourly_checks(600),
        ..both_hold()
    };
    let (v, lines) = page(&p, &s, 600);
    assert_eq!(
        lines,
        ["bob.test: bob.test's copy of your account is 9 hours behind"]
    );
    assert_eq!(v.tone, "danger");
}

#[rstest::rstest]
#[case(
    "uptime 99.5% < 99.9%",
    "online 99.5% of the time (the circle asks for 99.9%)"
)]
#[case(
    "verificationPassRate 80% < 95%",
    "80% of checks passed (the circle asks for 95%)"
)]
#[case(
    "syncWithinMaxLag 90% < 99%",
    "90% of changes copied in time (the circle asks for 99%)"
)]
#[case("odd", "odd")]
fn missed_targets_in_words(#[case] missed: &str, #[case] want: &str) {
    assert_eq!(target_words(missed), want);
}

#[rstest::rstest]
#[case(&[], "no account")]
#[case(&["you"], "your account")]
#[case(&["bob.test"], "bob.test's account")]
#[case(&["you", "bob.test"], "your and bob.test's accounts")]
#[case(&["you", "bob.test", "carol.test"], "your, bob.test's and carol.test's accounts")]
fn accounts_are_named_with_their_grammar(#[case] who: &[&str], #[case] want: &str) {
    let people: Vec<Person> = who
        .iter()
        .map(|n| Person {
            name: n.to_string(),
            you: *n == "you",
        })
        .collect();
    assert_eq!(accounts(&people), want);
}

#[rstest::rstest]
#[case(
    "ok",
    2,
    1,
    true,
    "Everyone is safe: 2 accounts, each kept by 1 friend, and the last checks passed"
)]
#[case(
    "ok",
    2,
    1,
    false,
    "2 accounts, each kept by 1 friend; not checked yet"
)]
#[case(
    "ok",
    1,
    2,
    false,
    "1 account, each kept by 2 friends; not checked yet"
)]
#[case(
    "degraded",
    3,
    2,
    true,
    "Every account is kept, but something needs a look"
)]
#[case("unknown", 3, 2, false, "Not checked yet: the circle has just started")]
fn the_circle_in_one_sentence(
    #[case] state: &str,
    #[case] accounts: usize,
    #[case] copies: u32,
    #[case] checked: bool,
    #[case] want: &str,
) {
    assert_eq!(health_sentence(state, accounts, copies, checked), want);
}

#[test]
fn what_could_not_be_read_is_a_note_per_person() {
    let p = circle(&[BOB], None);
    let report = evaluate(&p, &observe(&p, &both_hold()), at(10));
    let names = names();
    let warnings = [
        format!("could not read {BOB}'s status: connection refused"),
        format!("could not read {BOB}'s heartbeat: connection refused"),
        "something else".to_string(),
    ];
    let groups = attention(&Inputs {
        report: &report,
        warnings: &warnings,
        names: &names,
        recovery: None,
        now: at(10),
        offset: FixedOffset::east_opt(0).unwrap(),
    });
    let lines: Vec<(&str, &str, &[String])> = groups
        .iter()
        .map(|g| (g.name.as_str(), g.tone.as_str(), g.lines.as_slice()))
        .collect();
    assert_eq!(
        lines,
        [
            ("The circle", "note", &["Some of the circle's records couldn't be read just now".to_string()][..]),
            ("bob.test", "note", &["Couldn't read bob.test's latest records just now: what is shown may be out of date".to_string()][..]),
        ]
    );
    // Notes don't change the heading.
    assert_eq!(worst(&groups), None);
}
