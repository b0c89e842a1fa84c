//! Which notifications to raise (pure): from what the app knows now, the alerts that deserve
//! one; each has a key, and a key already delivered is never delivered again. Escalation comes
//! from keys that name a stage: a backup failing for an hour, then for a day, then for 3 days
//! and for a week are four alerts, each once.

use crate::policy::Timestamp;

use super::words::{flag_title, span};

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub key: String,
    pub title: String,
    pub body: String,
}

/// A backed-up account, as the alerts see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FriendFacts {
    pub did: String,
    pub name: String,
    /// Failing since (the first failed attempt after the last good backup).
    pub failing_since: Option<Timestamp>,
    /// The account is gone or deactivated upstream.
    pub gone: Option<String>,
}

/// A circle member whose node is not well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFacts {
    pub circle_uri: String,
    pub circle: String,
    pub did: String,
    pub name: String,
    /// "at-risk" or "failed" (other states raise nothing).
    pub state: String,
}

/// An invitation waiting for an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationFacts {
    pub uri: String,
    pub cid: String,
    pub from: String,
    pub circle: String,
}

/// An open upstream flag (a mass deletion, a new server or key, a server gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagFacts {
    pub id: i64,
    pub did: String,
    pub name: String,
    pub kind: String,
    /// What happened, in words (see `words::flag_text`).
    pub text: String,
}

/// One alert per open flag, keyed by the flag's id (so each is delivered once). Flags of the
/// account's status upstream are left out: the "gone" alert already tells those.
pub fn flag_alerts(flags: &[FlagFacts]) -> Vec<Alert> {
    flags
        .iter()
        .filter(|f| !f.kind.starts_with("account-"))
        .map(|f| Alert {
            key: format!("flag:{}", f.id),
            title: flag_title(&f.kind, &f.name),
            body: format!(
                "{} Open P2PDS to give the account back, or dismiss it if it was meant.",
                f.text
            ),
        })
        .collect()
}

/// Failure durations that raise an alert, each once.
const STAGES: [(u64, &str); 4] = [
    (3600, "1h"),
    (86_400, "1d"),
    (3 * 86_400, "3d"),
    (7 * 86_400, "7d"),
];

/// Every alert the facts call for at `now` (delivered or not: see [`fresh`]).
pub fn due(
    friends: &[FriendFacts],
    members: &[MemberFacts],
    invitations: &[InvitationFacts],
    now: Timestamp,
) -> Vec<Alert> {
    let mut out = Vec::new();
    for f in friends {
        if let Some(status) = &f.gone {
            out.push(Alert {
                key: format!("gone:{}:{status}", f.did),
                title: format!("{}'s account is {status}", f.name),
                body: "Your copy is safe. You can give it back to them when they are ready.".into(),
            });
            continue;
        }
        if let Some(since) = f.failing_since {
            let failing = now.since(since).secs();
            if let Some((secs, stage)) = STAGES.iter().rev().find(|(s, _)| failing >= *s) {
                out.push(Alert {
                    key: format!("failing:{}:{}:{stage}", f.did, since.millis()),
                    title: format!("{} not backed up for {}", f.name, span(*secs)),
                    body: "Their server is not answering or refuses the copy. Your last good copy is kept; P2PDS keeps trying.".into(),
                });
            }
        }
    }
    for m in members {
        let words = match m.state.as_str() {
            "at-risk" => "is at risk: checks of the copies it keeps are failing",
            "failed" => "has failed: it has not been heard from for too long",
            _ => continue,
        };
        out.push(Alert {
            key: format!("member:{}:{}:{}", m.circle_uri, m.did, m.state),
            title: format!("{} in “{}” {words}", m.name, m.circle),
            body: "Open P2PDS to see the circle's health.".into(),
        });
    }
    for i in invitations {
        out.push(Alert {
            key: format!("invitation:{}:{}", i.uri, i.cid),
            title: format!("{} invites you to “{}”", i.from, i.circle),
            body: "Open P2PDS to read what it asks and answer.".into(),
        });
    }
    out
}

/// The alerts among `due` whose keys are not in `delivered`.
pub fn fresh(due: Vec<Alert>, delivered: &std::collections::BTreeSet<String>) -> Vec<Alert> {
    due.into_iter()
        .filter(|a| !delivered.contains(&a.key))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn bob(failing_since: Option<&str>) -> FriendFacts {
        FriendFacts {
            did: "did:plc:bob".into(),
            name: "bob.test".into(),
            failing_since: failing_since.map(t),
            gone: None,
        }
    }

    /// Runs the alerts at each instant, delivering what is fresh; returns the titles.
    fn story(friends: &[FriendFacts], times: &[&str]) -> Vec<String> {
        let mut delivered = BTreeSet::new();
        let mut titles = Vec::new();
        for now in times {
            for a in fresh(due(friends, &[], &[], t(now)), &delivered) {
                delivered.insert(a.key.clone());
                titles.push(a.title);
            }
        }
        titles
    }

    #[test]
    fn a_failing_backup_escalates_without_repeating() {
        let f = [bob(Some("2026-01-01T00:00:00Z"))];
        let titles = story(
            &f,
            &[
                "2026-01-01T00:30:00Z",
                "2026-01-01T01:00:00Z",
                "2026-01-01T02:00:00Z",
                "2026-01-01T05:00:00Z",
                "2026-01-02T00:00:00Z",
                "2026-01-02T06:00:00Z",
                "2026-01-04T00:00:00Z",
                "2026-01-04T01:00:00Z",
            ],
        );
        assert_eq!(
            titles,
            [
                "bob.test not backed up for 1 hour",
                "bob.test not backed up for 1 day",
                "bob.test not backed up for 3 days",
            ]
        );
    }

    #[test]
    fn a_new_failure_after_a_recovery_alerts_again() {
        let mut delivered = BTreeSet::new();
        for a in due(
            &[bob(Some("2026-01-01T00:00:00Z"))],
            &[],
            &[],
            t("2026-01-01T02:00:00Z"),
        ) {
            delivered.insert(a.key);
        }
        let again = fresh(
            due(
                &[bob(Some("2026-01-05T00:00:00Z"))],
                &[],
                &[],
                t("2026-01-05T02:00:00Z"),
            ),
            &delivered,
        );
        assert_eq!(again.len(), 1);
        assert!(fresh(
            due(&[bob(None)], &[], &[], t("2026-01-05T02:00:00Z")),
            &delivered
        )
        .is_empty());
    }

    #[test]
    fn each_flag_alerts_once_and_account_flags_are_left_to_the_gone_alert() {
        let flag = |id: i64, kind: &str| FlagFacts {
            id,
            did: "did:plc:bob".into(),
            name: "bob.test".into(),
            kind: kind.into(),
            text: "All 40 records were deleted on 3 Nov. Your copy from before is kept.".into(),
        };
        let flags = [
            flag(1, "mass-deletion"),
            flag(2, "account-deleted"),
            flag(3, "new-pds"),
        ];
        let first = flag_alerts(&flags);
        let keys: Vec<&str> = first.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["flag:1", "flag:3"]);
        assert_eq!(first[0].title, "Many of bob.test's posts were deleted");
        assert!(
            first[0].body.starts_with("All 40 records"),
            "{}",
            first[0].body
        );
        assert_eq!(first[1].title, "bob.test's account moved to another server");
        let delivered: BTreeSet<String> = first.into_iter().map(|a| a.key).collect();
        assert!(fresh(flag_alerts(&flags), &delivered).is_empty());
        // A new flag of the same kind (after a dismissal) is a new alert.
        assert_eq!(
            fresh(flag_alerts(&[flag(4, "mass-deletion")]), &delivered).len(),
            1
        );
    }

    #[test]
    fn gone_accounts_members_and_invitations_alert_once_each() {
        let mut gone = bob(None);
        gone.gone = Some("deleted".into());
        let members = [MemberFacts {
            circle_uri: "at://c".into(),
            circle: "Kitchen".into(),
            did: "did:plc:carol".into(),
            name: "carol.test".into(),
            state: "failed".into(),
        }];
        let inv = [InvitationFacts {
            uri: "at://i".into(),
            cid: "bafy".into(),
            from: "alice.test".into(),
            circle: "Kitchen".into(),
        }];
        let now = t("2026-01-01T00:00:00Z");
        let first = due(&[gone.clone()], &members, &inv, now);
        assert_eq!(first.len(), 3);
        assert_eq!(first[0].title, "bob.test's account is deleted");
        assert_eq!(
            first[1].title,
            "carol.test in “Kitchen” has failed: it has not been heard from for too long"
        );
        assert_eq!(first[2].title, "alice.test invites you to “Kitchen”");
        let delivered: BTreeSet<String> = first.into_iter().map(|a| a.key).collect();
        assert!(fresh(due(&[gone], &members, &inv, now), &delivered).is_empty());
    }
}
