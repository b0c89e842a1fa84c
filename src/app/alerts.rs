//! Which notifications to raise (pure): the reminder ladder. Each thing that needs the person
//! (an invitation not answered, a friend not backed up, a member's copies failing checks, a
//! member silent, an account gone, an upstream flag) climbs its kind's [`Schedule`]: a warning,
//! then an alert, then a reminder every week, and stops as soon as it is resolved. A thing
//! that comes back starts its ladder anew.
//!
//! [`raise`] is a function of `now`, the things as they are now (each with since when it has
//! been so, when the facts know) and the [`Ledger`] (what was raised about each thing, and
//! when): it returns the notifications due now and the ledger to keep. The ledger holds an
//! entry only for things present now (resolved ones are forgotten), so it stays as small as
//! the list of problems. Facts about circles are only known once this node has read them
//! (after a restart they come with the first pass): until then their entries are kept as they
//! are, so a restart neither resolves nor repeats them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::Timestamp;

use super::words::{flag_title, span};

const DAY: u64 = 86_400;

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The thing's key and how many notifications about it this makes (`backup:<did>#2`).
    pub key: String,
    pub stage: Stage,
    pub title: String,
    pub body: String,
}

/// How far up its ladder a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// News, told at once (an invitation came, an account is gone, a flag was raised).
    Notice,
    /// The first sign that something lasts.
    Warning,
    /// It has lasted too long: the person should act.
    Alert,
    /// Still so, a week after the last notification.
    Reminder,
}

/// A kind's ladder: the steps from the moment the thing began, then a reminder every `every`
/// after the last notification (none: each step once, then silence until resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// (seconds since the thing began, stage), in order.
    pub steps: &'static [(u64, Stage)],
    pub every: Option<u64>,
}

/// An invitation not answered: told when it comes; a warning after a day without an answer,
/// an alert after 3 days, then a reminder every week until it is accepted or declined (or
/// withdrawn).
pub const INVITATION: Schedule = Schedule {
    steps: &[
        (0, Stage::Notice),
        (DAY, Stage::Warning),
        (3 * DAY, Stage::Alert),
    ],
    every: Some(7 * DAY),
};

/// A friend not backed up, counted from the last time the copy was brought up to date (by
/// their server or a friend's node; never: from when the friend was added, see
/// [`last_good`]), while backups fail: a warning at 3 days (a server down
/// for a weekend is common and the copy is kept), an alert at 4 days, then every week.
pub const NOT_BACKED_UP: Schedule = Schedule {
    steps: &[(3 * DAY, Stage::Warning), (4 * DAY, Stage::Alert)],
    every: Some(7 * DAY),
};

/// A circle member whose copies fail checks ("at-risk" in the circle's health), counted from
/// when this node first saw it so: a warning at 5 days, an alert at 7 days, then every week.
pub const COPY_FAILING: Schedule = Schedule {
    steps: &[(5 * DAY, Stage::Warning), (7 * DAY, Stage::Alert)],
    every: Some(7 * DAY),
};

/// A circle member not heard from ("failed" or "abandoned" in the circle's health: already
/// past the circle's offline grace period), counted from when this node first saw it so: a
/// warning at 7 days, an alert at 10 days, then every week.
pub const MEMBER_SILENT: Schedule = Schedule {
    steps: &[(7 * DAY, Stage::Warning), (10 * DAY, Stage::Alert)],
    every: Some(7 * DAY),
};

/// News that needs no repeating (an account gone upstream, a flag): told once, at once.
pub const ONCE: Schedule = Schedule {
    steps: &[(0, Stage::Notice)],
    every: None,
};

/// What a thing is about, with the names its words need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum About {
    Invitation {
        from: String,
        circle: String,
    },
    NotBackedUp {
        name: String,
    },
    CopyFailing {
        name: String,
        circle: String,
    },
    MemberSilent {
        name: String,
        circle: String,
    },
    /// The account is gone or deactivated upstream (`status`).
    Gone {
        name: String,
        status: String,
    },
    /// An open upstream flag; `text` says what happened (see `words::flag_text`).
    Flag {
        name: String,
        kind: String,
        text: String,
    },
}

impl About {
    pub fn schedule(&self) -> Schedule {
        match self {
            About::Invitation { .. } => INVITATION,
            About::NotBackedUp { .. } => NOT_BACKED_UP,
            About::CopyFailing { .. } => COPY_FAILING,
            About::MemberSilent { .. } => MEMBER_SILENT,
            About::Gone { .. } | About::Flag { .. } => ONCE,
        }
    }
}

/// One thing that needs the person, as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thing {
    /// Names the thing (not the stage): `backup:<did>`, `copy:<circle>:<did>`, …
    pub key: String,
    /// Since when it has been so, when the facts know (else: since this node first saw it).
    /// A different `since` than the ledger's is a new occurrence: its ladder starts anew.
    pub since: Option<Timestamp>,
    pub about: About,
}

/// What was raised about one thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Raised {
    /// When the thing began (ms since the epoch).
    pub since: i64,
    /// Notifications raised so far (steps, then reminders).
    pub count: u32,
    /// When the last one was raised (ms since the epoch).
    pub at: Option<i64>,
}

/// What was raised about each thing present, and when (kept in `group_meta` as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub raised: BTreeMap<String, Raised>,
}

impl Ledger {
    /// The stored ledger. The keys an older version delivered (a JSON array of keys) count
    /// as told once, now: news already told is not told again.
    pub fn read(text: Option<&str>, now: Timestamp) -> Ledger {
        let Some(text) = text else {
            return Ledger::default();
        };
        if let Ok(l) = serde_json::from_str::<Ledger>(text) {
            return l;
        }
        let keys: Vec<String> = serde_json::from_str(text).unwrap_or_default();
        let told = Raised {
            since: now.millis(),
            count: 1,
            at: Some(now.millis()),
        };
        Ledger {
            raised: keys.into_iter().map(|k| (k, told)).collect(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// Things about circles (invitations, members), known only once the circles were read.
fn about_circles(key: &str) -> bool {
    ["invitation:", "copy:", "silent:"]
        .iter()
        .any(|p| key.starts_with(p))
}

/// The next notification of a thing `elapsed` seconds old, raised `count` times so far (the
/// last `since_last` seconds ago): its stage and the count after it. Steps missed while the
/// computer was off are not made up: only the highest step due is raised.
pub fn next_step(
    schedule: Schedule,
    elapsed: u64,
    count: u32,
    since_last: Option<u64>,
) -> Option<(Stage, u32)> {
    let steps = schedule.steps;
    let due = steps.iter().filter(|(after, _)| *after <= elapsed).count();
    let told = usize::try_from(count).unwrap_or(usize::MAX);
    if due > told {
        let (_, stage) = steps.get(due - 1)?;
        return Some((*stage, u32::try_from(due).ok()?));
    }
    match (schedule.every, since_last) {
        (Some(every), Some(last)) if !steps.is_empty() && told >= steps.len() && last >= every => {
            Some((Stage::Reminder, count.saturating_add(1)))
        }
        _ => None,
    }
}

/// The notifications due at `now` and the ledger to keep. `circles_known`: the facts about
/// circles were read (else their entries are kept untouched and nothing is raised from them).
pub fn raise(
    now: Timestamp,
    things: &[Thing],
    ledger: &Ledger,
    circles_known: bool,
) -> (Vec<Alert>, Ledger) {
    let mut out = Vec::new();
    let mut kept = Ledger::default();
    for t in things {
        if about_circles(&t.key) && !circles_known {
            continue;
        }
        let old = ledger
            .raised
            .get(&t.key)
            .filter(|r| t.since.is_none_or(|s| s.millis() == r.since));
        let since = t
            .since
            .map(Timestamp::millis)
            .or(old.map(|r| r.since))
            .unwrap_or(now.millis());
        let mut entry = old.copied().unwrap_or(Raised {
            since,
            count: 0,
            at: None,
        });
        let elapsed = now.since(Timestamp::from_millis(since)).secs();
        let since_last = entry
            .at
            .map(|at| now.since(Timestamp::from_millis(at)).secs());
        if let Some((stage, count)) =
            next_step(t.about.schedule(), elapsed, entry.count, since_last)
        {
            let (title, body) = words(&t.about, stage, elapsed);
            out.push(Alert {
                key: format!("{}#{count}", t.key),
                stage,
                title,
                body,
            });
            entry.count = count;
            entry.at = Some(now.millis());
        }
        kept.raised.insert(t.key.clone(), entry);
    }
    if !circles_known {
        for (k, r) in &ledger.raised {
            if about_circles(k) {
                kept.raised.insert(k.clone(), *r);
            }
        }
    }
    (out, kept)
}

/// A notification's title and body.
fn words(about: &About, stage: Stage, elapsed: u64) -> (String, String) {
    let long = span(elapsed);
    let reminder = |t: String| match stage {
        Stage::Reminder => format!("Reminder: {t}"),
        _ => t,
    };
    match about {
        About::Invitation { from, circle } => {
            let title = match stage {
                Stage::Notice => format!("{from} invites you to “{circle}”"),
                Stage::Warning => format!("{from} is waiting for your answer to “{circle}”"),
                Stage::Alert => format!("{from}'s invitation to “{circle}” has waited {long}"),
                Stage::Reminder => {
                    format!("Reminder: {from}'s invitation to “{circle}” is not answered yet")
                }
            };
            let body = match stage {
                Stage::Notice => "Open P2PDS to read what it asks and answer.",
                _ => "Open P2PDS to accept or decline it: either answer is fine.",
            };
            (title, body.into())
        }
        About::NotBackedUp { name } => {
            let title = match stage {
                Stage::Alert => format!("{name} still not backed up after {long}"),
                _ => reminder(format!("{name} not backed up for {long}")),
            };
            let body = match stage {
                Stage::Notice | Stage::Warning => "Their server is not answering or refuses the copy. Your last good copy is kept; P2PDS keeps trying.",
                _ => "Your last good copy is kept, but it is getting old. Ask them whether their server is down or their account moved.",
            };
            (title, body.into())
        }
        About::CopyFailing { name, circle } => {
            let title = match stage {
                Stage::Alert => {
                    format!("{name}'s copies in “{circle}” have failed checks for {long}")
                }
                _ => reminder(format!("{name}'s copies in “{circle}” are failing checks")),
            };
            let body = format!(
                "Checks of the copies {name} keeps have failed for {long}. Open P2PDS to see the circle's health, and ask them to open P2PDS."
            );
            (title, body)
        }
        About::MemberSilent { name, circle } => {
            let title = match stage {
                Stage::Alert => format!("{name} in “{circle}” is still silent after {long}"),
                _ => reminder(format!("{name} in “{circle}” has not been heard from")),
            };
            let body = format!(
                "Nothing from {name}'s computer for {long} at least: it may be off or offline. The circle counts on the copies it keeps; ask them to open P2PDS."
            );
            (title, body)
        }
        About::Gone { name, status } => (
            format!("{name}'s account is {status}"),
            "Your copy is safe. You can give it back to them when they are ready.".into(),
        ),
        About::Flag { name, kind, text } => (
            flag_title(kind, name),
            format!("{text} Open P2PDS to give the account back, or dismiss it if it was meant."),
        ),
    }
}

/// A backed-up account, as the alerts see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FriendFacts {
    pub did: String,
    pub name: String,
    /// The last backup failed.
    pub failing: bool,
    /// Since when the copy has not been brought up to date ([`last_good`]).
    pub last_good: Option<Timestamp>,
    /// The account is gone or deactivated upstream.
    pub gone: Option<String>,
}

/// The time a friend's copy was last good, from which "not backed up for …" counts, in the
/// notifications and the tray alike: the later of its last backup (`synced`) and its last
/// catch-up from a friend's node (`caught_up`); a copy never brought up to date (a first
/// backup that keeps failing) counts from when the friend was `added`, so it climbs the same
/// ladder instead of waiting for a first success.
pub fn last_good(
    synced: Option<Timestamp>,
    caught_up: Option<Timestamp>,
    added: Option<Timestamp>,
) -> Option<Timestamp> {
    synced.max(caught_up).or(added)
}

/// A circle member whose node is not well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFacts {
    pub circle_uri: String,
    pub circle: String,
    pub did: String,
    pub name: String,
    /// "at-risk" (copies failing checks), "failed" or "abandoned" (silent); other states
    /// raise nothing.
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

/// Everything the facts call for a ladder about. Flags of the account's status upstream are
/// left out: the "gone" notice already tells those; a gone account's failing backups too.
pub fn things(
    friends: &[FriendFacts],
    members: &[MemberFacts],
    invitations: &[InvitationFacts],
    flags: &[FlagFacts],
) -> Vec<Thing> {
    let mut out = Vec::new();
    for f in friends {
        if let Some(status) = &f.gone {
            out.push(Thing {
                key: format!("gone:{}:{status}", f.did),
                since: None,
                about: About::Gone {
                    name: f.name.clone(),
                    status: status.clone(),
                },
            });
        } else if f.failing {
            out.push(Thing {
                key: format!("backup:{}", f.did),
                since: f.last_good,
                about: About::NotBackedUp {
                    name: f.name.clone(),
                },
            });
        }
    }
    for m in members {
        let (prefix, about) = match m.state.as_str() {
            "at-risk" => (
                "copy",
                About::CopyFailing {
                    name: m.name.clone(),
                    circle: m.circle.clone(),
                },
            ),
            "failed" | "abandoned" => (
                "silent",
                About::MemberSilent {
                    name: m.name.clone(),
                    circle: m.circle.clone(),
                },
            ),
            _ => continue,
        };
        out.push(Thing {
            key: format!("{prefix}:{}:{}", m.circle_uri, m.did),
            since: None,
            about,
        });
    }
    for i in invitations {
        out.push(Thing {
            key: format!("invitation:{}:{}", i.uri, i.cid),
            since: None,
            about: About::Invitation {
                from: i.from.clone(),
                circle: i.circle.clone(),
            },
        });
    }
    for f in flags.iter().filter(|f| !f.kind.starts_with("account-")) {
        out.push(Thing {
            key: format!("flag:{}", f.id),
            since: None,
            about: About::Flag {
                name: f.name.clone(),
                kind: f.kind.clone(),
                text: f.text.clone(),
            },
        });
    }
    out
}

#[cfg(test)]
mod tests;
