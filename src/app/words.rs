//! The app's sentences: times, sizes, states and the headline, in plain words (pure: `now` is
//! an input). The front end formats only what changes while a screen is open (relative times);
//! everything else comes from here.

use crate::policy::Timestamp;

use super::dto::{Friend, FriendState};

/// "just now", "3 minutes ago", "2 hours ago", "yesterday", "5 days ago".
pub fn ago(then: Timestamp, now: Timestamp) -> String {
    let s = now.since(then).secs();
    match s {
        0..=59 => "just now".into(),
        60..=119 => "a minute ago".into(),
        120..=3599 => format!("{} minutes ago", s / 60),
        3600..=7199 => "an hour ago".into(),
        7200..=86_399 => format!("{} hours ago", s / 3600),
        86_400..=172_799 => "yesterday".into(),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// "3 minutes", "2 hours", "4 days": a span, for "failing for …".
pub fn span(secs: u64) -> String {
    let plural = |n: u64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    match secs {
        0..=3599 => plural((secs / 60).max(1), "minute"),
        3600..=86_399 => plural(secs / 3600, "hour"),
        _ => plural(secs / 86_400, "day"),
    }
}

/// A friend's state in words.
pub fn friend_status(
    state: FriendState,
    last_backup: Option<Timestamp>,
    failing_since: Option<Timestamp>,
    now: Timestamp,
) -> String {
    match state {
        FriendState::FirstBackup => "making the first copy…".into(),
        FriendState::Syncing => "backing up…".into(),
        FriendState::Ok => match last_backup {
            Some(t) => format!("backed up {}", ago(t, now)),
            None => "waiting for the first backup".into(),
        },
        FriendState::Failing => {
            let since = failing_since
                .map(|t| format!(" for {}", span(now.since(t).secs())))
                .unwrap_or_default();
            match last_backup {
                Some(t) => format!(
                    "can't be backed up{since}; your copy from {} is safe",
                    ago(t, now)
                ),
                None => format!("can't be backed up{since}"),
            }
        }
        FriendState::Deactivated => "the account is deactivated; your copy is safe".into(),
        FriendState::Gone => "the account is gone; your copy is safe and can be given back".into(),
    }
}

/// A copy its server can't serve, brought up to date from `friend`'s computer at `at`.
pub fn caught_up_status(friend: &str, at: Timestamp, now: Timestamp) -> String {
    format!(
        "their server can't serve it; your copy was brought up to date from {friend}'s computer {}, verified",
        ago(at, now)
    )
}

/// How a friend's copy is kept up to date (`followed` as `crate::follow::how_followed` says
/// it), in words for the card.
pub fn follow_text(followed: &str, check_every_minutes: u32) -> String {
    match followed {
        "live" => "every change is copied as it happens".into(),
        "catching-up" => {
            "reconnecting to their server; changes made meanwhile are copied when it answers".into()
        }
        _ => {
            let every = span(u64::from(check_every_minutes.max(1)) * 60);
            // "every hour", not "every 1 hour".
            let every = every.strip_prefix("1 ").unwrap_or(&every);
            format!("checked for changes every {every}")
        }
    }
}

/// The one sentence at the top of the main window. `circle`: the active circle's state, the
/// copies it asks for, and when every copy last passed its check (`None`: not checked yet).
pub fn headline(
    friends: &[Friend],
    circle: Option<(&str, u32, Option<Timestamp>)>,
    paused_until: Option<Timestamp>,
    now: Timestamp,
) -> String {
    if let Some(until) = paused_until.filter(|u| *u > now) {
        let mins = until.since(now).secs().div_ceil(60);
        return format!("Paused for {} more", span(mins * 60));
    }
    if friends.is_empty() {
        return "Nobody backed up yet: add a friend to keep a copy of their account".into();
    }
    let trouble: Vec<&Friend> = friends
        .iter()
        .filter(|f| matches!(f.state, FriendState::Failing | FriendState::Gone))
        .collect();
    let flagged: Vec<&Friend> = friends.iter().filter(|f| !f.flags.is_empty()).collect();
    if trouble.is_empty() {
        if let Some(f) = flagged.first() {
            let more = match flagged.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            return format!(
                "Something happened to {}'s account: your copy from before is kept{more}",
                f.name
            );
        }
    }
    if let Some(f) = trouble.first() {
        let more = match trouble.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        return match f.state {
            FriendState::Gone => format!("{}'s account is gone: your copy is safe{more}", f.name),
            _ => format!("{}'s backup needs attention{more}", f.name),
        };
    }
    if friends
        .iter()
        .any(|f| matches!(f.state, FriendState::FirstBackup | FriendState::Syncing))
    {
        return format!("Backing up {} …", count(friends.len(), "account"));
    }
    let n = friends.len();
    match circle {
        Some(("ok", copies, Some(checked))) => {
            let all = if n == 1 {
                "Your friend's account is safe".to_string()
            } else {
                format!("All {n} accounts are safe")
            };
            format!(
                "{all}: each held by {}, checked {}",
                count(copies as usize, "friend"),
                ago(checked, now)
            )
        }
        // Kept, but no check has passed yet: not "safe" until one has.
        Some(("ok", copies, None)) => {
            let all = if n == 1 {
                "Your friend's account is".to_string()
            } else {
                format!("All {n} accounts are")
            };
            format!(
                "{all} held by {}; not checked yet",
                count(copies as usize, "friend")
            )
        }
        Some((state, _, _)) => format!(
            "{} backed up; your circle is {}",
            count(n, "account"),
            state.replace('-', " ")
        ),
        None => {
            let last = friends
                .iter()
                .filter_map(|f| f.last_backup_at.as_deref())
                .filter_map(|t| Timestamp::parse(t).ok())
                .max();
            match last {
                Some(t) => format!(
                    "{} backed up, the last {}",
                    count(n, "account"),
                    ago(t, now)
                ),
                None => format!("{} backed up", count(n, "account")),
            }
        }
    }
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// "3 Nov" (this year), "3 Nov 2025" (another year).
pub fn day(t: Timestamp, now: Timestamp) -> String {
    let date = |m: i64| chrono::DateTime::<chrono::Utc>::from_timestamp_millis(m);
    match (date(t.millis()), date(now.millis())) {
        (Some(d), Some(n)) if chrono::Datelike::year(&d) == chrono::Datelike::year(&n) => {
            d.format("%-d %b").to_string()
        }
        (Some(d), _) => d.format("%-d %b %Y").to_string(),
        _ => "recently".into(),
    }
}

/// A moment as a person reads it, in the zone `offset` (the computer's own): "3:29 pm today",
/// "9 am tomorrow", "11:05 pm yesterday", "3:29 pm on 3 Nov" (another day), "… on 3 Nov 2025"
/// (another year).
pub fn moment(t: Timestamp, now: Timestamp, offset: chrono::FixedOffset) -> String {
    use chrono::{Datelike, Timelike};
    let local = |m: i64| {
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(m).map(|d| d.with_timezone(&offset))
    };
    let (Some(d), Some(n)) = (local(t.millis()), local(now.millis())) else {
        return "soon".into();
    };
    let (h, pm) = (d.hour12(), if d.hour12().0 { "pm" } else { "am" });
    let clock = match d.minute() {
        0 => format!("{} {pm}", h.1),
        m => format!("{}:{m:02} {pm}", h.1),
    };
    match (d.date_naive() - n.date_naive()).num_days() {
        0 => format!("{clock} today"),
        1 => format!("{clock} tomorrow"),
        -1 => format!("{clock} yesterday"),
        _ if d.year() == n.year() => format!("{clock} on {}", d.format("%-d %b")),
        _ => format!("{clock} on {}", d.format("%-d %b %Y")),
    }
}

/// `n` and the noun, singular or plural: "1 copy", "2 copies", "1 friend", "3 friends".
pub fn count_of(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// An open upstream flag of `name`'s account, in words that say what it means and that the
/// copy from before is kept (`detail` is the engine's sentence, `detected` when it was seen).
pub fn flag_text(
    kind: &str,
    name: &str,
    detail: &str,
    detected: Option<Timestamp>,
    now: Timestamp,
) -> String {
    let on = detected
        .map(|t| format!(" on {}", day(t, now)))
        .unwrap_or_default();
    let kept = "Your copy from before is kept.";
    match kind {
        "mass-deletion" => {
            let what = detail.trim_end_matches(" at once");
            format!("{}{on}. {kept}", capitalize(what))
        }
        "new-pds" => format!(
            "{name}'s account now names another server{on}: if they didn't move it, someone may have taken it over. {kept}"
        ),
        "new-key" => format!(
            "{name}'s account got a new signing key{on}: if they didn't change it, someone may have taken it over. {kept}"
        ),
        "pds-gone" => format!(
            "{name}'s server has stopped answering{}. Your copy is kept and can be given back on another server.",
            detected
                .map(|t| format!(" (noticed {})", day(t, now)))
                .unwrap_or_default()
        ),
        k => match k.strip_prefix("account-") {
            Some(status) => format!("{name}'s account is {status} on its server. Your copy is kept."),
            None => format!("{}. {kept}", capitalize(detail)),
        },
    }
}

/// The title of a flag's notification.
pub fn flag_title(kind: &str, name: &str) -> String {
    match kind {
        "mass-deletion" => format!("Many of {name}'s posts were deleted"),
        "new-pds" => format!("{name}'s account moved to another server"),
        "new-key" => format!("{name}'s account has a new key"),
        "pds-gone" => format!("{name}'s server is not answering"),
        _ => format!("Something happened to {name}'s account"),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// "about 120 MB".
pub fn about_size(bytes: u64) -> String {
    format!("about {}", size(bytes))
}

/// A size in words ("1.5 kB", "120 MB"): the one spelling of sizes, also in the command
/// line's and the engine's sentences (see [`crate::store::space::size_words`]).
pub use crate::store::space::size_words as size;

/// The recovery key's state in words (see [`RecoveryKeyStatus`](super::dto::RecoveryKeyStatus)).
pub fn recovery_key_status(state: &str) -> super::dto::RecoveryKeyStatus {
    let text = match state {
        "registered" => "Your account is protected: a recovery key kept on this computer can move it to a new server, even if your current one is gone.",
        "code-sent" => "Your server has emailed you a confirmation code. Type it here to add the recovery key.",
        "held" => "A recovery key is kept on this computer, but your account does not list it yet. Set it up again to add it.",
        "unknown" => "Your recovery key is kept on this computer; whether your account lists it can't be checked right now.",
        "unavailable" => "Sign in to protect your own account with a recovery key.",
        _ => "Not set up. A recovery key lets your account move to a new server even if your current one disappears. It takes a minute, while your server still works.",
    };
    super::dto::RecoveryKeyStatus {
        state: state.to_string(),
        text: text.to_string(),
        code: None,
    }
}

/// A failed recovery-key step, with what to do (by the kind of refusal, not its words).
pub fn recovery_key_error(e: &crate::recovery::RecoveryError) -> String {
    if e.is_wrong_password() {
        return "Your server did not accept that password. Use your main password (not an app password).".into();
    }
    if e.is_bad_code() {
        return "That confirmation code was not accepted: check it, or ask for a new one.".into();
    }
    format!("The recovery key could not be set up: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn friend(name: &str, state: FriendState) -> Friend {
        Friend {
            did: format!("did:plc:{name}"),
            handle: Some(format!("{name}.test")),
            name: name.into(),
            state,
            status_text: String::new(),
            last_backup_at: Some("2026-01-01T11:50:00Z".into()),
            size_bytes: 0,
            posts: 0,
            images: 0,
            progress: None,
            problem: None,
            circles: vec![],
            flags: vec![],
            can_restore: true,
            followed: "polling".into(),
            follow_text: String::new(),
        }
    }

    #[test]
    fn a_copy_brought_up_to_date_by_a_friend_says_so() {
        assert_eq!(
            caught_up_status(
                "bob.test",
                t("2026-01-01T11:55:00Z"),
                t("2026-01-01T12:00:00Z")
            ),
            "their server can't serve it; your copy was brought up to date from bob.test's \
             computer 5 minutes ago, verified"
        );
    }

    #[test]
    fn how_a_copy_is_kept_up_to_date_in_words() {
        assert_eq!(
            follow_text("live", 30),
            "every change is copied as it happens"
        );
        assert!(follow_text("catching-up", 30).starts_with("reconnecting to their server"));
        assert_eq!(
            follow_text("polling", 30),
            "checked for changes every 30 minutes"
        );
        assert_eq!(follow_text("polling", 60), "checked for changes every hour");
    }

    #[test]
    fn times_read_like_people_say_them() {
        let now = t("2026-01-01T12:00:00Z");
        assert_eq!(ago(t("2026-01-01T11:59:30Z"), now), "just now");
        assert_eq!(ago(t("2026-01-01T11:57:00Z"), now), "3 minutes ago");
        assert_eq!(ago(t("2026-01-01T09:00:00Z"), now), "3 hours ago");
        assert_eq!(ago(t("2025-12-31T11:00:00Z"), now), "yesterday");
        assert_eq!(ago(t("2025-12-27T12:00:00Z"), now), "5 days ago");
        assert_eq!(span(3 * 86_400), "3 days");
        assert_eq!(span(3600 * 5), "5 hours");
        assert_eq!(span(30), "1 minute");
    }

    #[rstest::rstest]
    #[case("2026-12-03T15:29:35Z", 0, "3:29 pm today")]
    #[case("2026-12-03T09:00:00Z", 0, "9 am today")]
    #[case("2026-12-03T15:29:35Z", 60, "4:29 pm today")]
    #[case("2026-12-04T00:05:00Z", 0, "12:05 am tomorrow")]
    #[case("2026-12-03T23:30:00Z", 60, "12:30 am tomorrow")]
    #[case("2026-12-02T12:00:00Z", 0, "12 pm yesterday")]
    #[case("2026-12-09T08:15:00Z", 0, "8:15 am on 9 Dec")]
    #[case("2027-01-09T08:15:00Z", 0, "8:15 am on 9 Jan 2027")]
    fn moments_read_like_a_clock_and_a_day(
        #[case] at: &str,
        #[case] offset_minutes: i32,
        #[case] want: &str,
    ) {
        let offset = chrono::FixedOffset::east_opt(offset_minutes * 60).unwrap();
        assert_eq!(moment(t(at), t("2026-12-03T12:00:00Z"), offset), want);
    }

    #[rstest::rstest]
    #[case(0, "0 bytes")]
    #[case(1, "1 byte")]
    #[case(512, "512 bytes")]
    #[case(1000, "1 kB")]
    #[case(1500, "1.5 kB")]
    #[case(12_345, "12 kB")]
    #[case(3_400_000, "3.4 MB")]
    #[case(9_960_000, "10 MB")]
    #[case(120_000_000, "120 MB")]
    #[case(999_600_000, "1 GB")]
    #[case(1_200_000_000, "1.2 GB")]
    fn sizes_have_one_spelling(#[case] bytes: u64, #[case] want: &str) {
        assert_eq!(size(bytes), want);
    }

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(count_of(1, "copy", "copies"), "1 copy");
        assert_eq!(count_of(0, "copy", "copies"), "0 copies");
        assert_eq!(count_of(2, "friend", "friends"), "2 friends");
    }

    #[test]
    fn the_headline_answers_is_everyone_safe() {
        let now = t("2026-01-01T12:00:00Z");
        let ok = vec![
            friend("alice", FriendState::Ok),
            friend("bob", FriendState::Ok),
            friend("carol", FriendState::Ok),
        ];
        assert_eq!(
            headline(
                &ok,
                Some(("ok", 2, Some(t("2026-01-01T11:50:00Z")))),
                None,
                now
            ),
            "All 3 accounts are safe: each held by 2 friends, checked 10 minutes ago"
        );
        assert_eq!(
            headline(&ok, Some(("ok", 2, None)), None, now),
            "All 3 accounts are held by 2 friends; not checked yet"
        );
        assert_eq!(
            headline(&ok[..1], Some(("ok", 1, None)), None, now),
            "Your friend's account is held by 1 friend; not checked yet"
        );
        assert_eq!(
            headline(&ok, None, None, now),
            "3 accounts backed up, the last 10 minutes ago"
        );
        let mut bad = ok.clone();
        bad[1].state = FriendState::Failing;
        assert_eq!(
            headline(&bad, None, None, now),
            "bob's backup needs attention"
        );
        bad[2].state = FriendState::Gone;
        assert_eq!(
            headline(&bad, None, None, now),
            "bob's backup needs attention (and 1 more)"
        );
        assert_eq!(
            headline(&ok, None, Some(t("2026-01-01T12:59:00Z")), now),
            "Paused for 59 minutes more"
        );
        assert!(headline(&[], None, None, now).starts_with("Nobody backed up yet"));
    }

    #[test]
    fn flags_say_what_happened_and_that_the_copy_is_kept() {
        let now = t("2026-11-10T12:00:00Z");
        let on = Some(t("2026-11-03T08:00:00Z"));
        assert_eq!(
            flag_text(
                "mass-deletion",
                "alice",
                "all 40 records were deleted at once",
                on,
                now
            ),
            "All 40 records were deleted on 3 Nov. Your copy from before is kept."
        );
        assert_eq!(
            flag_text("new-pds", "Alice", "the account now names another server (x, was y)", None, now),
            "Alice's account now names another server: if they didn't move it, someone may have taken it over. Your copy from before is kept."
        );
        let gone = flag_text("pds-gone", "bob", "…", Some(t("2025-12-30T00:00:00Z")), now);
        assert!(gone.contains("(noticed 30 Dec 2025)"), "{gone}");
        assert!(flag_text("account-deleted", "bob", "", None, now)
            .starts_with("bob's account is deleted"));
        for kind in [
            "mass-deletion",
            "new-pds",
            "new-key",
            "pds-gone",
            "account-x",
        ] {
            let text = flag_text(kind, "bob", "did:plc:zz something", None, now);
            assert!(text.contains("kept"), "{kind}: {text}");
            assert!(!flag_title(kind, "bob").contains("did:"), "{kind}");
        }
    }

    #[test]
    fn a_flag_leads_the_headline_when_nothing_else_is_wrong() {
        let now = t("2026-01-01T12:00:00Z");
        let mut friends = vec![
            friend("alice", FriendState::Ok),
            friend("bob", FriendState::Ok),
        ];
        friends[1].flags.push(crate::app::dto::FriendFlag {
            id: 1,
            kind: "mass-deletion".into(),
            text: "x".into(),
            detail: "y".into(),
            detected_at: "2026-01-01T00:00:00Z".into(),
        });
        assert_eq!(
            headline(&friends, None, None, now),
            "Something happened to bob's account: your copy from before is kept"
        );
        friends[0].state = FriendState::Failing;
        assert_eq!(
            headline(&friends, None, None, now),
            "alice's backup needs attention"
        );
    }

    #[test]
    fn a_failing_friend_is_told_with_the_safe_copy() {
        let now = t("2026-01-04T12:00:00Z");
        let s = friend_status(
            FriendState::Failing,
            Some(t("2026-01-01T12:00:00Z")),
            Some(t("2026-01-01T12:30:00Z")),
            now,
        );
        assert_eq!(
            s,
            "can't be backed up for 2 days; your copy from 3 days ago is safe"
        );
    }

    #[test]
    fn recovery_key_failures_say_what_to_do() {
        use crate::recovery::RecoveryError;
        let refused = |error: &str, reason: &str| RecoveryError::Refused {
            what: "the account's server".into(),
            reason: reason.into(),
            error: error.into(),
        };
        assert!(
            recovery_key_error(&refused("AuthenticationRequired", "401")).contains("main password")
        );
        assert!(recovery_key_error(&refused("ExpiredToken", "400")).contains("confirmation code"));
        // The kind decides, not the words.
        let other = refused("InvalidRequest", "the token said something else");
        assert!(!recovery_key_error(&other).contains("confirmation code"));
        let net = RecoveryError::Network {
            what: "x".into(),
            reason: "down".into(),
        };
        assert!(recovery_key_error(&net).contains("could not reach x"));
        for state in [
            "none",
            "code-sent",
            "registered",
            "held",
            "unknown",
            "unavailable",
        ] {
            let s = recovery_key_status(state);
            assert_eq!(s.state, state);
            assert!(!s.text.is_empty() && s.code.is_none());
        }
    }
}
