//! A circle's compliance report in words a person reads once (pure: `now` and the computer's
//! time zone are inputs).
//!
//! The policy engine's conditions are facts for programs: one problem shows at several levels
//! (a copy not made yet is also an account with too few copies, and a circle with too few
//! copies), names are DIDs and times are ISO. Here each problem becomes at most one sentence
//! per person, grouped by person, with the names the app knows (never a DID or a CID) and times
//! in words; a problem a member's line already explains is not said again for the account or
//! the circle. The heading of the page follows the worst problem said ([`verdict`]); the raw
//! conditions stay one click away (the page's "Details").

use std::collections::{BTreeMap, BTreeSet};

use chrono::FixedOffset;

use crate::policy::report::{Condition, CopyReport, NodeReport, Report, State, Status};
use crate::policy::{Duration, Timestamp};

use super::dto::Attention;
use super::words::{count_of, moment, span};

/// How much a problem matters, least first; the worst decides the page's heading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tone {
    /// Said for completeness (a record could not be read just now): no bearing on the heading.
    Note,
    /// Something still to come: an answer, a first copy, a first sign of life.
    Waiting,
    /// Worth a look: a failed check, checks of others running late, a missed target.
    Warn,
    /// An account is at risk or not safe.
    Danger,
}

impl Tone {
    pub fn as_str(self) -> &'static str {
        match self {
            Tone::Note => "note",
            Tone::Waiting => "waiting",
            Tone::Warn => "warn",
            Tone::Danger => "danger",
        }
    }

    fn parse(tone: &str) -> Tone {
        match tone {
            "danger" => Tone::Danger,
            "warn" => Tone::Warn,
            "waiting" => Tone::Waiting,
            _ => Tone::Note,
        }
    }

    fn of(state: State) -> Tone {
        match state {
            State::Ok | State::Recovering | State::Unknown => Tone::Waiting,
            State::Degraded => Tone::Warn,
            State::AtRisk | State::Failed | State::Abandoned => Tone::Danger,
        }
    }
}

/// What the sentences are made from.
pub struct Inputs<'a> {
    pub report: &'a Report,
    /// What could not be read for the report (the engine's words, naming DIDs).
    pub warnings: &'a [String],
    /// DID → what to call them; the signed-in account is "you".
    pub names: &'a BTreeMap<String, String>,
    /// How long a new copy may take (the policy's `recoveryGracePeriod`), for "due by …".
    pub recovery: Option<Duration>,
    pub now: Timestamp,
    /// The computer's time zone, for times of day.
    pub offset: FixedOffset,
}

/// Someone a sentence is about, with the grammar their name takes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Person {
    name: String,
    you: bool,
}

impl Person {
    fn of(did: &str, names: &BTreeMap<String, String>) -> Person {
        let name = names.get(did).cloned().unwrap_or_else(|| {
            let tail = did.rsplit(':').next().unwrap_or(did);
            format!("account {}…", tail.chars().take(6).collect::<String>())
        });
        Person {
            you: name == "you",
            name,
        }
    }

    /// At the start of a sentence: "You", "bob.test".
    fn subject(&self) -> &str {
        if self.you {
            "You"
        } else {
            &self.name
        }
    }

    fn has(&self) -> &'static str {
        if self.you {
            "have"
        } else {
            "has"
        }
    }

    fn is(&self) -> &'static str {
        if self.you {
            "are"
        } else {
            "is"
        }
    }

    /// "your", "bob.test's".
    fn possessive(&self) -> String {
        if self.you {
            "your".into()
        } else {
            format!("{}'s", self.name)
        }
    }

    /// Their own: "your", "their".
    fn own(&self) -> &'static str {
        if self.you {
            "your"
        } else {
            "their"
        }
    }
}

/// "your account", "bob.test's account", "your and bob.test's accounts".
fn accounts(of: &[Person]) -> String {
    let owners: Vec<String> = of.iter().map(Person::possessive).collect();
    match owners.as_slice() {
        [] => "no account".into(),
        [one] => format!("{one} account"),
        [init @ .., last] => format!("{} and {last} accounts", init.join(", ")),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// One sentence, whom it is about (`None`: the circle itself) and how much it matters.
struct Line {
    who: Option<String>,
    tone: Tone,
    text: String,
}

/// The circle's problems, at most one sentence per problem per person, grouped: the circle
/// first, then you, then the others by name. Each group's tone is its worst line's.
pub fn attention(i: &Inputs) -> Vec<Attention> {
    let r = i.report;
    let mut lines = Vec::new();
    let active = is_active(r);
    if let Some(c) = find(&r.conditions, "Active").filter(|c| c.status != Status::True) {
        let said = match c.reason {
            "NotYetEffective" => Some((Tone::Waiting, "Everyone accepted; the circle starts soon")),
            "Expired" => Some((
                Tone::Danger,
                "The circle has ended: its end date has passed",
            )),
            "Revoked" => Some((Tone::Danger, "Its author ended the circle")),
            // Said for each member who has not accepted.
            _ => None,
        };
        if let Some((tone, text)) = said {
            lines.push(Line {
                who: None,
                tone,
                text: text.into(),
            });
        }
    }
    let mut explained: BTreeSet<&str> = BTreeSet::new();
    for n in &r.nodes {
        let p = Person::of(&n.member, i.names);
        let mut say = |(tone, text): (Tone, String)| {
            lines.push(Line {
                who: Some(n.member.clone()),
                tone,
                text,
            })
        };
        if let Some(l) = acknowledged(n, &p) {
            say(l);
        }
        if !active {
            continue;
        }
        if let Some(l) = online(n, &p, i.now) {
            say(l);
            // Their copies don't count while they are away: that is the problem to say.
            explained.extend(n.copies.iter().map(|c| c.subject.as_str()));
            continue;
        }
        for (tone, text, subjects) in copies(n, &p, i) {
            say((tone, text));
            explained.extend(subjects);
        }
        if let Some(l) = duties(n, &p, i.names) {
            say(l);
        }
        if let Some(l) = targets(n, &p) {
            say(l);
        }
    }
    if active {
        lines.extend(short_accounts(i, &explained));
    }
    lines.extend(unread(i));
    group(lines, i.names)
}

fn find<'c>(conditions: &'c [Condition], kind: &str) -> Option<&'c Condition> {
    conditions.iter().find(|c| c.kind == kind)
}

/// Every member accepted the version the report is about (and it is in force).
fn is_active(r: &Report) -> bool {
    find(&r.conditions, "Active").is_none_or(|c| c.status == Status::True)
}

/// A member who has not accepted this version (or declined it).
fn acknowledged(n: &NodeReport, p: &Person) -> Option<(Tone, String)> {
    let c = find(&n.conditions, "Acknowledged").filter(|c| c.status == Status::False)?;
    let (s, has) = (p.subject(), p.has());
    Some(match c.reason {
        "Declined" => (Tone::Danger, format!("{s} declined the circle")),
        "AckedOlderVersion" => (
            Tone::Waiting,
            format!("{s} {has} not accepted the circle's new version yet"),
        ),
        _ => (
            Tone::Waiting,
            format!("{s} {has} not accepted the circle yet"),
        ),
    })
}

/// A member not heard from: away too long, gone, or not heard from at all yet.
fn online(n: &NodeReport, p: &Person, now: Timestamp) -> Option<(Tone, String)> {
    let c = find(&n.conditions, "Online")?;
    let silent = n.last_seen.map(|t| span(now.since(t).secs()));
    let (s, has, is) = (p.subject(), p.has(), p.is());
    let said = match (c.status, c.reason) {
        (Status::True, _) => return None,
        (Status::Unknown, _) if p.you => (
            Tone::Waiting,
            "This computer has not told the circle it is running yet".to_string(),
        ),
        (Status::Unknown, _) => (Tone::Waiting, format!("{s} {has} not been heard from yet")),
        (_, "Abandoned") => (
            Tone::Danger,
            format!(
                "{s} {has} been silent for {}; {} copies no longer count",
                silent.unwrap_or_else(|| "a long time".into()),
                p.own()
            ),
        ),
        (_, _) => (
            Tone::Danger,
            match silent {
                Some(t) => format!("{s} {has} been silent for {t} and {is} marked as missing"),
                None => format!("{s} {has} not been heard from since the circle started"),
            },
        ),
    };
    Some(said)
}

/// The condition `kind` of a copy: its status, reason and since when.
fn status(c: &CopyReport, kind: &str) -> Option<(Status, &'static str, Option<Timestamp>)> {
    find(&c.conditions, kind).map(|k| (k.status, k.reason, k.since))
}

fn owners(cs: &[&CopyReport], names: &BTreeMap<String, String>) -> String {
    let people: Vec<Person> = cs.iter().map(|c| Person::of(&c.subject, names)).collect();
    accounts(&people)
}

fn worst_of(cs: &[&CopyReport], at_least: Tone) -> Tone {
    cs.iter()
        .map(|c| Tone::of(c.state))
        .fold(at_least, Tone::max)
}

fn copy_word(cs: &[&CopyReport]) -> &'static str {
    if cs.len() == 1 {
        "copy"
    } else {
        "copies"
    }
}

/// The member's copies the circle asks for that are not made, behind, or failing checks: one
/// sentence for each kind of problem, naming every account it touches, with those accounts.
fn copies<'r>(n: &'r NodeReport, p: &Person, i: &Inputs) -> Vec<(Tone, String, Vec<&'r str>)> {
    let mut making: Vec<&CopyReport> = Vec::new();
    let mut missing = Vec::new();
    let mut behind = Vec::new();
    let mut failing = Vec::new();
    for c in n.copies.iter().filter(|c| c.obligated) {
        match status(c, "Held") {
            Some((Status::False, "InitialSync", _)) => making.push(c),
            Some((Status::False, _, _)) => missing.push(c),
            _ => {}
        }
        if matches!(status(c, "InSync"), Some((Status::False, _, _))) {
            behind.push(c);
        }
        if matches!(status(c, "Verified"), Some((Status::False, _, _))) {
            failing.push(c);
        }
    }
    let subjects =
        |cs: &[&'r CopyReport]| cs.iter().map(|c| c.subject.as_str()).collect::<Vec<_>>();
    let (s, has, is) = (p.subject(), p.has(), p.is());
    // A handle keeps its own case, even first in a sentence.
    let mine = if p.you {
        "Your".to_string()
    } else {
        p.possessive()
    };
    let mut out = Vec::new();
    if !making.is_empty() {
        let due = i
            .recovery
            .and_then(|rec| {
                making
                    .iter()
                    .filter_map(|c| status(c, "Held").and_then(|(_, _, since)| since))
                    .max()
                    .map(|start| start.plus(rec))
            })
            .filter(|d| *d > i.now)
            .map(|d| format!(" (due by {})", moment(d, i.now, i.offset)))
            .unwrap_or_default();
        let text = format!(
            "{s} {is} still making {} {} of {}{due}",
            p.own(),
            copy_word(&making),
            owners(&making, i.names)
        );
        out.push((worst_of(&making, Tone::Waiting), text, subjects(&making)));
    }
    if !missing.is_empty() {
        let text = format!(
            "{s} {has} no copy of {}, though the circle asks for it",
            owners(&missing, i.names)
        );
        out.push((Tone::Danger, text, subjects(&missing)));
    }
    if !behind.is_empty() {
        let lag = behind.iter().filter_map(|c| c.lag_seconds).max();
        let by = lag.map(span).unwrap_or_else(|| "some time".into());
        let whose = owners(&behind, i.names);
        let text = if behind.len() == 1 {
            format!("{mine} copy of {whose} is {by} behind")
        } else {
            format!("{mine} copies of {whose} are up to {by} behind")
        };
        out.push((worst_of(&behind, Tone::Warn), text, subjects(&behind)));
    }
    if !failing.is_empty() {
        let streak = failing
            .iter()
            .map(|c| c.consecutive_failures)
            .max()
            .unwrap_or(1);
        let what = format!(
            "{} {} of {}",
            p.possessive(),
            copy_word(&failing),
            owners(&failing, i.names)
        );
        let text = match (failing.len(), streak) {
            (1, 0 | 1) => format!("The last check of {what} failed"),
            (1, k) => format!("The last {k} checks of {what} failed"),
            _ => format!("The last checks of {what} failed"),
        };
        out.push((worst_of(&failing, Tone::Warn), text, subjects(&failing)));
    }
    out
}

/// Checks of others' copies this member runs late.
fn duties(n: &NodeReport, p: &Person, names: &BTreeMap<String, String>) -> Option<(Tone, String)> {
    find(&n.conditions, "VerifyingPeers").filter(|c| c.status == Status::False)?;
    let late: Vec<_> = n.duties.iter().filter(|d| d.overdue).collect();
    let what = match late.as_slice() {
        [] => return None,
        [d] if d.subject == n.member => format!(
            "{} copy of {} account",
            Person::of(&d.target, names).possessive(),
            p.own()
        ),
        [d] => format!(
            "{} copy of {}",
            Person::of(&d.target, names).possessive(),
            accounts(&[Person::of(&d.subject, names)])
        ),
        more => format!(
            "{} of other members' accounts",
            count_of(more.len(), "copy", "copies")
        ),
    };
    Some((
        Tone::Warn,
        format!("{} {} late checking {what}", p.subject(), p.is()),
    ))
}

/// The circle's service targets this member misses.
fn targets(n: &NodeReport, p: &Person) -> Option<(Tone, String)> {
    let c = find(&n.conditions, "SLAMet").filter(|c| c.status == Status::False)?;
    let missed: Vec<String> = n
        .figures
        .sla
        .iter()
        .flat_map(|s| s.missed.iter())
        .map(|m| target_words(m))
        .collect();
    let what = if missed.is_empty() {
        c.message.clone()
    } else {
        missed.join("; ")
    };
    Some((
        Tone::Warn,
        format!(
            "{} {} below the circle's targets: {what}",
            p.subject(),
            p.is()
        ),
    ))
}

/// An SLA target missed, `"uptime 99.5% < 99.9%"`, in words.
fn target_words(missed: &str) -> String {
    let Some((name, rest)) = missed.split_once(' ') else {
        return missed.to_string();
    };
    let Some((got, want)) = rest.split_once(" < ") else {
        return missed.to_string();
    };
    let asks = format!("the circle asks for {want}");
    match name {
        "uptime" => format!("online {got} of the time ({asks})"),
        "verificationPassRate" => format!("{got} of checks passed ({asks})"),
        "syncWithinMaxLag" => format!("{got} of changes copied in time ({asks})"),
        other => format!("{other} {got} ({asks})"),
    }
}

/// Accounts short of copies (or of healthy ones) that no member's line explains.
fn short_accounts(i: &Inputs, explained: &BTreeSet<&str>) -> Vec<Line> {
    let mut out = Vec::new();
    for s in i
        .report
        .subjects
        .iter()
        .filter(|s| !explained.contains(s.did.as_str()))
    {
        let whose = accounts(&[Person::of(&s.did, i.names)]);
        let min = s.min_copies as usize;
        let asks = count_of(min, "copy", "copies");
        let text = if s.copies < min {
            match s.copies {
                0 => format!("Nobody keeps a copy of {whose} yet; the circle asks for {asks}"),
                1 => format!("Only 1 friend keeps a copy of {whose}; the circle asks for {asks}"),
                n => format!("Only {n} friends keep a copy of {whose}; the circle asks for {asks}"),
            }
        } else if s.healthy_copies < min {
            format!(
                "Only {} of {whose} {} in good order; the circle asks for {asks}",
                count_of(s.healthy_copies, "copy", "copies"),
                if s.healthy_copies == 1 { "is" } else { "are" }
            )
        } else {
            continue;
        };
        out.push(Line {
            who: Some(s.did.clone()),
            tone: Tone::of(s.state),
            text,
        });
    }
    out
}

/// What could not be read for the report, one sentence per person (the engine's warnings
/// name the member's node or account).
fn unread(i: &Inputs) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::new();
    for w in i.warnings {
        let r = i.report;
        let who = r
            .nodes
            .iter()
            .find(|n| w.contains(n.node.as_str()) || w.contains(n.member.as_str()))
            .map(|n| n.member.clone())
            .or_else(|| {
                r.subjects
                    .iter()
                    .find(|s| w.contains(s.did.as_str()))
                    .map(|s| s.did.clone())
            });
        let text = match &who {
            Some(did) => format!(
                "Couldn't read {} latest records just now: what is shown may be out of date",
                Person::of(did, i.names).possessive()
            ),
            None => "Some of the circle's records couldn't be read just now".into(),
        };
        if !out.iter().any(|l| l.who == who) {
            out.push(Line {
                who,
                tone: Tone::Note,
                text,
            });
        }
    }
    out
}

/// Lines into groups: the circle first, then you, then the others by name.
fn group(lines: Vec<Line>, names: &BTreeMap<String, String>) -> Vec<Attention> {
    let mut groups: BTreeMap<(u8, String), Attention> = BTreeMap::new();
    for l in lines {
        let (key, name) = match &l.who {
            None => ((0, String::new()), "The circle".to_string()),
            Some(did) => {
                let p = Person::of(did, names);
                (
                    (if p.you { 1 } else { 2 }, p.name.clone()),
                    p.subject().to_string(),
                )
            }
        };
        let g = groups.entry(key).or_insert_with(|| Attention {
            did: l.who.clone(),
            name,
            tone: Tone::Note.as_str().into(),
            lines: Vec::new(),
        });
        if !g.lines.contains(&l.text) {
            g.lines.push(l.text);
        }
        if Tone::parse(&g.tone) < l.tone {
            g.tone = l.tone.as_str().into();
        }
    }
    groups.into_values().collect()
}

/// The worst tone said on the page (notes aside: they say nothing about the circle).
pub fn worst(groups: &[Attention]) -> Option<Tone> {
    groups
        .iter()
        .map(|g| Tone::parse(&g.tone))
        .filter(|t| *t > Tone::Note)
        .max()
}

/// The page's heading: a word for it, its colour (`ok`, `busy`, `warn`, `danger`, `muted`, as
/// the window colours them) and one sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub label: &'static str,
    pub tone: &'static str,
    pub sentence: String,
}

/// The heading, consistent with the worst problem said (`worst`): never "Healthy" above a
/// problem, never "the checks passed" before every copy has passed one (`checked`).
pub fn verdict(report: &Report, worst: Option<Tone>, checked: bool) -> Verdict {
    let v = |label, tone, sentence: &str| Verdict {
        label,
        tone,
        sentence: sentence.to_string(),
    };
    match worst {
        Some(Tone::Danger) if matches!(report.state, State::Failed | State::Abandoned) => v(
            "Not safe",
            "danger",
            "Some accounts are not safe: a member's copies can't be counted on",
        ),
        Some(Tone::Danger) => v(
            "At risk",
            "danger",
            "Some accounts are at risk: copies are missing, behind or failing checks",
        ),
        Some(Tone::Warn) => v(
            "Needs a look",
            "warn",
            "Every account is kept, but something needs a look",
        ),
        Some(_) if !is_active(report) => v(
            "Waiting for answers",
            "muted",
            "The circle starts once everyone has accepted",
        ),
        Some(_) => v(
            "Getting ready",
            "busy",
            "Copies are being made; checks start once they are",
        ),
        None => {
            let state = report.state.as_str();
            let sentence = health_sentence(
                state,
                report.subjects.len(),
                report.policy.min_copies,
                checked,
            );
            let (label, tone) = match (state, checked) {
                ("ok", true) => ("Healthy", "ok"),
                ("ok", false) => ("Not checked yet", "busy"),
                ("recovering", _) => ("Getting ready", "busy"),
                ("degraded", _) => ("Needs a look", "warn"),
                ("at-risk", _) => ("At risk", "danger"),
                ("failed" | "abandoned", _) => ("Not safe", "danger"),
                _ => ("Not checked yet", "muted"),
            };
            Verdict {
                label,
                tone,
                sentence,
            }
        }
    }
}

/// The circle's state in one sentence (the circle's card; the page when nothing needs
/// attention). `checked`: every copy has passed a check; until then the circle is "not checked
/// yet", whatever its state.
pub fn health_sentence(state: &str, accounts: usize, copies: u32, checked: bool) -> String {
    let kept = format!(
        "{}, each kept by {}",
        count_of(accounts, "account", "accounts"),
        count_of(copies as usize, "friend", "friends")
    );
    match state {
        "ok" if checked => format!("Everyone is safe: {kept}, and the last checks passed"),
        "ok" => format!("{}; not checked yet", capitalize(&kept)),
        "recovering" => "Copies are being made; checks start once they are".into(),
        "degraded" => "Every account is kept, but something needs a look".into(),
        "at-risk" => {
            "Some accounts are at risk: copies are missing, behind or failing checks".into()
        }
        "failed" | "abandoned" => {
            "Some accounts are not safe: a member's copies can't be counted on".into()
        }
        _ => "Not checked yet: the circle has just started".into(),
    }
}

#[cfg(test)]
#[path = "conditions_tests.rs"]
pub(crate) mod tests;
