//! Rolling-window figures for SLA policies: uptime from heartbeats, verification pass rate,
//! sync lag (seed §5, "For SaaS / SLA").
//!
//! Uptime: the window is cut into whole slots of `heartbeatInterval`, counted from its start;
//! a slot is up when it holds at least one heartbeat; the last, unfinished slot is not counted.
//! Pass rate: passed / (passed + failed) verification rounds; unreachable rounds count against
//! uptime instead. Sync: each commit of a held account made in the window is copied within
//! `maxLag`, late, or pending (not copied, still younger than `maxLag`).
//!
//! Invariants: integer arithmetic only; inputs are sorted by the caller or here, never trusted
//! to arrive in order.

use super::report::{Ratio, SyncFigures};
use super::time::Duration;

/// Share of whole heartbeat slots in `[from, to)` that saw a heartbeat. `beats` are
/// milliseconds, sorted ascending. `None` when the window holds no whole slot.
pub fn uptime(beats: &[i64], from: i64, to: i64, slot: Duration) -> Option<Ratio> {
    let slot_ms = slot.millis();
    if slot_ms <= 0 || to <= from {
        return None;
    }
    let slots = (to - from) / slot_ms;
    if slots <= 0 {
        return None;
    }
    let end = from + slots * slot_ms;
    let first = beats.partition_point(|t| *t < from);
    let mut up = 0u64;
    let mut last_slot = -1i64;
    for t in beats.get(first..).unwrap_or(&[]) {
        if *t >= end {
            break;
        }
        let s = (t - from) / slot_ms;
        if s != last_slot {
            up += 1;
            last_slot = s;
        }
    }
    Ratio::new(up, u64::try_from(slots).unwrap_or(0))
}

/// How one commit of a held account was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Copied {
    /// Copied after this many seconds.
    After(u64),
    /// Not copied yet; this many seconds old.
    NotYet(u64),
}

/// Sync figures from the copy delays of the commits in the window.
pub fn sync(delays: &mut [Copied], max_lag: Duration) -> SyncFigures {
    let max = max_lag.secs();
    let mut within = 0u64;
    let mut late = 0u64;
    let mut pending = 0u64;
    let mut judged: Vec<u64> = Vec::with_capacity(delays.len());
    for d in delays.iter() {
        match *d {
            Copied::After(s) if s <= max => {
                within += 1;
                judged.push(s);
            }
            Copied::After(s) => {
                late += 1;
                judged.push(s);
            }
            Copied::NotYet(s) if s > max => {
                late += 1;
                judged.push(s);
            }
            Copied::NotYet(_) => pending += 1,
        }
    }
    judged.sort_unstable();
    SyncFigures {
        commits: u64::try_from(delays.len()).unwrap_or(u64::MAX),
        within_max_lag: within,
        late,
        pending,
        within_max_lag_rate: Ratio::new(within, within + late),
        p50_seconds: nearest_rank(&judged, 50),
        p95_seconds: nearest_rank(&judged, 95),
        max_seconds: judged.last().copied(),
    }
}

/// The `p`th percentile of sorted values, nearest-rank method.
pub fn nearest_rank(sorted: &[u64], p: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = u64::try_from(sorted.len()).unwrap_or(u64::MAX);
    let rank = (p * n).div_ceil(100).max(1);
    sorted.get(usize::try_from(rank - 1).unwrap_or(0)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const H: i64 = 3_600_000;

    #[rstest]
    // 24 hourly slots, one heartbeat each.
    #[case((0..24).map(|h| h * H + 5).collect(), 0, 24 * H, 24, 24)]
    // Two heartbeats in one slot count once; the missing hours are down.
    #[case(vec![5, 10, 2 * H], 0, 4 * H, 2, 4)]
    // The unfinished last slot is not counted; beats before the window are not either.
    #[case(vec![-5, H + 1, 3 * H + 1], 0, 3 * H + 30 * 60_000, 1, 3)]
    fn uptime_counts_slots_with_a_heartbeat(
        #[case] beats: Vec<i64>,
        #[case] from: i64,
        #[case] to: i64,
        #[case] up: u64,
        #[case] slots: u64,
    ) {
        let r = uptime(&beats, from, to, Duration::from_secs(3600));
        assert_eq!(r.map(|r| (r.part, r.whole)), Some((up, slots)));
    }

    #[test]
    fn uptime_needs_a_whole_slot() {
        assert_eq!(uptime(&[1], 0, H - 1, Duration::from_secs(3600)), None);
    }

    #[test]
    fn sync_figures_split_within_late_and_pending() {
        let mut d = vec![
            Copied::After(10),
            Copied::After(400),
            Copied::NotYet(30),
            Copied::NotYet(1000),
            Copied::After(20),
        ];
        let f = sync(&mut d, Duration::from_secs(300));
        assert_eq!(
            (f.commits, f.within_max_lag, f.late, f.pending),
            (5, 2, 2, 1)
        );
        assert_eq!(f.max_seconds, Some(1000));
        assert_eq!(f.p50_seconds, Some(20));
        assert_eq!(f.within_max_lag_rate.map(|r| r.percent), Some(50.0));
    }

    #[rstest]
    #[case(&[1, 2, 3, 4], 50, Some(2))]
    #[case(&[1, 2, 3, 4], 95, Some(4))]
    #[case(&[7], 95, Some(7))]
    #[case(&[], 50, None)]
    fn percentiles(#[case] v: &[u64], #[case] p: u64, #[case] out: Option<u64>) {
        assert_eq!(nearest_rank(v, p), out);
    }
}
