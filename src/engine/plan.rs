//! What is due now: a pure function of the time, what the node observed and its schedule.
//!
//! [`plan`] does no IO and reads no clock: the controller gathers [`Facts`] (from the store
//! and its own memory), calls it, and runs the [`Op`]s it returns. Backoff is kept per
//! account as a moment to retry at ([`Backoff`]), drawn with jitter when a sync fails
//! ([`Backoff::after_failure`], which takes the random draw as an argument), so the plan
//! stays a function of its inputs and is table-tested.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::policy::Timestamp;

/// How often each part of the node's work comes due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// How often the loop wakes to look at what is due.
    pub tick: Duration,
    /// Each account is backed up at least this often.
    pub sync_every: Duration,
    /// …and this often (the longer of the two) while its server's event stream is followed
    /// live: polling is then only the safety net.
    pub live_sync_every: Duration,
    /// The circles (new versions, acks, duties) are read again this often.
    pub circles_every: Duration,
    /// Invitations are looked for in every known account's repo this often.
    pub discover_every: Duration,
    /// The circles' health is evaluated from public records this often.
    pub health_every: Duration,
    /// This node re-hashes a sample of its own copies this often.
    pub self_check_every: Duration,
    /// Old versions are collected this often.
    pub gc_every: Duration,
    /// The first retry of a failed backup waits this long; each further failure doubles it.
    pub backoff_base: Duration,
    /// Retries never wait longer than this (nor longer than `sync_every`).
    pub backoff_cap: Duration,
    /// At most this many backups run at once.
    pub concurrency: usize,
    /// Which kinds of work this node does (a one-shot command does some of them).
    pub ops: OpKinds,
    /// "Sync now" also looks for invitations (the app); otherwise only when it is due.
    pub discover_when_forced: bool,
    /// Verify only this member's copies (`p2pds verify --peer`).
    pub peer: Option<String>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            tick: Duration::from_secs(20),
            sync_every: Duration::from_secs(30 * 60),
            live_sync_every: Duration::from_secs(3 * 3600),
            circles_every: Duration::from_secs(5 * 60),
            discover_every: Duration::from_secs(30 * 60),
            health_every: Duration::from_secs(5 * 60),
            self_check_every: Duration::from_secs(6 * 3600),
            gc_every: Duration::from_secs(86_400),
            backoff_base: Duration::from_secs(60),
            backoff_cap: Duration::from_secs(3600),
            concurrency: 4,
            ops: OpKinds::ALL,
            discover_when_forced: true,
            peer: None,
        }
    }
}

/// Which kinds of work a pass may plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpKinds {
    pub circles: bool,
    pub sync: bool,
    pub verify: bool,
    pub publish: bool,
    pub health: bool,
    pub gc: bool,
}

impl OpKinds {
    /// Everything: the desktop app and `p2pds run`.
    pub const ALL: OpKinds = OpKinds {
        circles: true,
        sync: true,
        verify: true,
        publish: true,
        health: true,
        gc: true,
    };
    /// `p2pds sync`: the circles, the backups, this node's status records, old versions.
    pub const SYNC: OpKinds = OpKinds {
        circles: true,
        sync: true,
        verify: false,
        publish: true,
        health: false,
        gc: true,
    };
    /// `p2pds verify`: verification rounds only (a round reads the circles itself).
    pub const VERIFY: OpKinds = OpKinds {
        circles: false,
        sync: false,
        verify: true,
        publish: false,
        health: false,
        gc: false,
    };
}

/// One piece of work the controller runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read the circles again; `discover` also looks for invitations.
    RefreshCircles { discover: bool },
    /// Back up one account.
    Sync { did: String },
    /// A verification round: every check (`all`) or those due; with a self-check or not.
    Verify { all: bool, self_check: bool },
    /// Write this node's status and heartbeat records (rate-limited by the circles).
    Publish,
    /// Evaluate each circle's health from public records.
    Health,
    /// Collect old versions.
    CollectGarbage,
}

/// An account that failed: when it first failed, how often in a row, when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub since: Timestamp,
    pub failures: u32,
    pub retry_at: Timestamp,
}

impl Backoff {
    /// The backoff after one more failure at `now`. `jitter` in `[0, 1)` spreads retries of
    /// accounts that failed together (up to a quarter of the wait is added).
    pub fn after_failure(
        previous: Option<Backoff>,
        now: Timestamp,
        schedule: &Schedule,
        jitter: f64,
    ) -> Backoff {
        let failures = previous.map_or(1, |b| b.failures.saturating_add(1));
        let cap = schedule.backoff_cap.min(schedule.sync_every).as_millis();
        let base = schedule.backoff_base.as_millis();
        let doubled = base.saturating_mul(1u128 << (failures - 1).min(30));
        let wait = doubled.min(cap);
        let extra = (wait as f64 * jitter.clamp(0.0, 1.0) / 4.0) as u128;
        let wait = i64::try_from(wait + extra).unwrap_or(i64::MAX);
        Backoff {
            since: previous.map_or(now, |b| b.since),
            failures,
            retry_at: Timestamp::from_millis(now.millis().saturating_add(wait)),
        }
    }
}

/// One backed-up account as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFacts {
    pub did: String,
    /// A verified copy is held.
    pub copied: bool,
    pub last_sync: Option<Timestamp>,
    /// Something asked for this account's backup now (an event that did not chain, a change
    /// of identity or status seen on the event stream).
    pub wanted: bool,
    /// Its server's event stream is followed live.
    pub live: bool,
}

/// When each kind of work last ran (`None`: never, in this process or in the store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastRuns {
    pub circles: Option<Timestamp>,
    pub discover: Option<Timestamp>,
    pub health: Option<Timestamp>,
    pub self_check: Option<Timestamp>,
    pub gc: Option<Timestamp>,
}

/// What the controller observed before a pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub signed_in: bool,
    /// The person paused the work until later.
    pub paused: bool,
    /// On battery, and the settings say to wait for power.
    pub on_battery: bool,
    /// The storage folder is being moved: nothing may write.
    pub moving: bool,
    /// "Sync now": everything runs, backoff and intervals aside.
    pub forced: bool,
    pub repos: Vec<RepoFacts>,
    pub backoff: BTreeMap<String, Backoff>,
    pub last: LastRuns,
}

fn older_than(last: Option<Timestamp>, every: Duration, now: Timestamp) -> bool {
    let every = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    last.is_none_or(|t| now.millis().saturating_sub(t.millis()) >= every)
}

/// What is due now, in the order to run it: the circles first (they decide duties), then
/// the backups (run concurrently), verification, publishing, health, garbage collection.
pub fn plan(now: Timestamp, facts: &Facts, schedule: &Schedule) -> Vec<Op> {
    if facts.paused || facts.on_battery || facts.moving {
        return Vec::new();
    }
    let kinds = schedule.ops;
    let forced = facts.forced;
    let mut ops = Vec::new();
    if kinds.circles
        && facts.signed_in
        && (forced || older_than(facts.last.circles, schedule.circles_every, now))
    {
        let discover = (forced && schedule.discover_when_forced)
            || older_than(facts.last.discover, schedule.discover_every, now);
        ops.push(Op::RefreshCircles { discover });
    }
    if kinds.sync {
        for r in &facts.repos {
            let due = match facts.backoff.get(&r.did) {
                _ if forced => true,
                Some(b) => now >= b.retry_at,
                None => {
                    let every = match r.live {
                        true => schedule.live_sync_every.max(schedule.sync_every),
                        false => schedule.sync_every,
                    };
                    r.wanted || !r.copied || older_than(r.last_sync, every, now)
                }
            };
            if due {
                ops.push(Op::Sync { did: r.did.clone() });
            }
        }
    }
    if kinds.verify && facts.signed_in {
        ops.push(Op::Verify {
            all: forced,
            self_check: older_than(facts.last.self_check, schedule.self_check_every, now),
        });
    }
    // A verification round publishes its results itself.
    if kinds.publish && facts.signed_in && !kinds.verify {
        ops.push(Op::Publish);
    }
    if kinds.health
        && facts.signed_in
        && (forced || older_than(facts.last.health, schedule.health_every, now))
    {
        ops.push(Op::Health);
    }
    if kinds.gc && older_than(facts.last.gc, schedule.gc_every, now) {
        ops.push(Op::CollectGarbage);
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const MIN: i64 = 60_000;

    fn at(minutes: i64) -> Timestamp {
        Timestamp::from_millis(1_800_000_000_000 + minutes * MIN)
    }

    fn repo(did: &str, last: Option<i64>) -> RepoFacts {
        RepoFacts {
            did: did.into(),
            copied: last.is_some(),
            last_sync: last.map(at),
            wanted: false,
            live: false,
        }
    }

    /// Signed in, two accounts backed up 10 minutes ago, everything else ran 1 minute ago.
    fn fresh() -> Facts {
        let recent = Some(at(-1));
        Facts {
            signed_in: true,
            repos: vec![repo("did:a", Some(-10)), repo("did:b", Some(-10))],
            last: LastRuns {
                circles: recent,
                discover: recent,
                health: recent,
                self_check: recent,
                gc: recent,
            },
            ..Facts::default()
        }
    }

    fn syncs(ops: &[Op]) -> Vec<&str> {
        ops.iter()
            .filter_map(|o| match o {
                Op::Sync { did } => Some(did.as_str()),
                _ => None,
            })
            .collect()
    }

    fn backoff(failures: u32, retry_in: i64) -> Backoff {
        Backoff {
            since: at(-30),
            failures,
            retry_at: at(retry_in),
        }
    }

    #[rstest]
    #[case::nothing_due(fresh(), vec![Op::Verify { all: false, self_check: false }])]
    #[case::first_run(Facts { signed_in: true, repos: vec![repo("did:a", None)], ..Facts::default() },
        vec![Op::RefreshCircles { discover: true }, Op::Sync { did: "did:a".into() },
             Op::Verify { all: false, self_check: true }, Op::Health, Op::CollectGarbage])]
    #[case::paused(Facts { paused: true, forced: true, ..fresh() }, vec![])]
    #[case::on_battery(Facts { on_battery: true, ..fresh() }, vec![])]
    #[case::moving(Facts { moving: true, forced: true, ..fresh() }, vec![])]
    #[case::signed_out(Facts { signed_in: false, forced: true, ..fresh() },
        vec![Op::Sync { did: "did:a".into() }, Op::Sync { did: "did:b".into() }])]
    #[case::forced(Facts { forced: true, backoff: [("did:a".to_string(), backoff(3, 50))].into(), ..fresh() },
        vec![Op::RefreshCircles { discover: true }, Op::Sync { did: "did:a".into() },
             Op::Sync { did: "did:b".into() }, Op::Verify { all: true, self_check: false }, Op::Health])]
    fn what_is_due(#[case] facts: Facts, #[case] want: Vec<Op>) {
        assert_eq!(plan(at(0), &facts, &Schedule::default()), want);
    }

    #[rstest]
    #[case::due_by_interval(Some(-30), None, true)]
    #[case::not_yet(Some(-29), None, false)]
    #[case::never_copied(None, None, true)]
    #[case::backing_off(Some(-1), Some(backoff(2, 1)), false)]
    #[case::backoff_over(Some(-1), Some(backoff(2, 0)), true)]
    #[case::backoff_over_even_if_interval_not(Some(-2), Some(backoff(1, -1)), true)]
    #[case::backoff_holds_even_when_interval_passed(Some(-90), Some(backoff(5, 10)), false)]
    fn when_an_account_is_backed_up(
        #[case] last: Option<i64>,
        #[case] backoff: Option<Backoff>,
        #[case] due: bool,
    ) {
        let mut facts = fresh();
        facts.repos = vec![repo("did:a", last)];
        if let Some(b) = backoff {
            facts.backoff.insert("did:a".into(), b);
        }
        let ops = plan(at(0), &facts, &Schedule::default());
        assert_eq!(syncs(&ops) == ["did:a"], due, "{ops:?}");
    }

    /// An account whose server's stream is followed live is polled less often; one an event
    /// asked for is backed up at once, unless it is backing off.
    #[rstest]
    #[case::live_not_yet(Some(-30), false, true, None, false)]
    #[case::live_due(Some(-180), false, true, None, true)]
    #[case::polled_due(Some(-30), false, false, None, true)]
    #[case::wanted(Some(-1), true, true, None, true)]
    #[case::wanted_but_backing_off(Some(-1), true, false, Some(backoff(2, 5)), false)]
    fn live_and_wanted_accounts(
        #[case] last: Option<i64>,
        #[case] wanted: bool,
        #[case] live: bool,
        #[case] backoff: Option<Backoff>,
        #[case] due: bool,
    ) {
        let mut facts = fresh();
        facts.repos = vec![RepoFacts {
            wanted,
            live,
            ..repo("did:a", last)
        }];
        if let Some(b) = backoff {
            facts.backoff.insert("did:a".into(), b);
        }
        let ops = plan(at(0), &facts, &Schedule::default());
        assert_eq!(syncs(&ops) == ["did:a"], due, "{ops:?}");
    }

    #[rstest]
    #[case::circles_only(Some(-5), Some(-10), vec![Op::RefreshCircles { discover: false }])]
    #[case::and_discovery(Some(-5), Some(-30), vec![Op::RefreshCircles { discover: true }])]
    #[case::neither(Some(-4), Some(-30), vec![])]
    fn circles_and_invitations(
        #[case] circles: Option<i64>,
        #[case] discover: Option<i64>,
        #[case] want: Vec<Op>,
    ) {
        let mut facts = fresh();
        facts.last.circles = circles.map(at);
        facts.last.discover = discover.map(at);
        let ops: Vec<Op> = plan(at(0), &facts, &Schedule::default())
            .into_iter()
            .filter(|o| matches!(o, Op::RefreshCircles { .. }))
            .collect();
        assert_eq!(ops, want);
    }

    #[test]
    fn one_shot_commands_plan_only_their_kind_of_work() {
        let mut facts = fresh();
        facts.forced = true;
        let sync = Schedule {
            ops: OpKinds::SYNC,
            ..Schedule::default()
        };
        assert_eq!(
            plan(at(0), &facts, &sync),
            [
                Op::RefreshCircles { discover: true },
                Op::Sync {
                    did: "did:a".into()
                },
                Op::Sync {
                    did: "did:b".into()
                },
                Op::Publish,
            ]
        );
        let verify = Schedule {
            ops: OpKinds::VERIFY,
            ..Schedule::default()
        };
        assert_eq!(
            plan(at(0), &facts, &verify),
            [Op::Verify {
                all: true,
                self_check: false
            }]
        );
    }

    #[test]
    fn a_forced_pass_looks_for_invitations_only_where_asked() {
        let mut facts = fresh();
        facts.forced = true;
        let cli = Schedule {
            discover_when_forced: false,
            ..Schedule::default()
        };
        assert_eq!(
            plan(at(0), &facts, &cli)[0],
            Op::RefreshCircles { discover: false }
        );
        facts.last.discover = Some(at(-31));
        assert_eq!(
            plan(at(0), &facts, &cli)[0],
            Op::RefreshCircles { discover: true }
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let s = Schedule::default();
        let mut b = None;
        let mut waits = Vec::new();
        for _ in 0..10 {
            let next = Backoff::after_failure(b, at(0), &s, 0.0);
            waits.push((next.retry_at.millis() - at(0).millis()) / MIN);
            b = Some(next);
        }
        // 1, 2, 4, … minutes, capped by the sync interval (30 minutes).
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]);
        let b = b.unwrap_or_else(|| unreachable!());
        assert_eq!(b.failures, 10);
        assert_eq!(b.since, at(0));
        // Jitter adds up to a quarter of the wait, never less than the wait.
        let j = Backoff::after_failure(None, at(0), &s, 0.999);
        let wait = j.retry_at.millis() - at(0).millis();
        assert!((60_000..75_000).contains(&wait), "{wait}");
        let capped = Schedule {
            backoff_cap: Duration::from_secs(300),
            ..s
        };
        let b = (0..20).fold(None, |b, _| {
            Some(Backoff::after_failure(b, at(0), &capped, 0.0))
        });
        assert_eq!(
            b.map(|b| b.retry_at.millis() - at(0).millis()),
            Some(5 * MIN)
        );
    }
}
