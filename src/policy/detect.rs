//! Detection targets (`rules.verification.detect`): "find a 1% loss with 99% confidence within
//! a day" turned into the blocks a verifier checks per round, and said in words.
//!
//! A copy that lost a share `x` of its blocks passes one uniformly sampled block with chance
//! `1 − x`, and `K` of them with chance `(1 − x)^K`. To find the loss with confidence `c`,
//! `(1 − x)^K ≤ 1 − c`, so `K ≥ ln(1 − c) / ln(1 − x)`: 459 blocks for 1% at 99%. Those `K`
//! are spread over the rounds in the time asked for, `R = ⌊within / interval⌋`, so each round
//! checks `k = ⌈K / R⌉`, at most the largest sample a policy may ask for
//! ([`MAX_SAMPLE_SIZE`](super::validate::MAX_SAMPLE_SIZE)); a target that would need more is a
//! problem of the policy. Blocks drawn without replacement inside a round only raise the chance.
//!
//! `sampleSize` stays what a round checks at least (older readers only know it): when `detect`
//! derives more, the larger wins ([`crate::policy::model::VerificationRule::sample_size`]).
//!
//! Invariants: integers only. `(1 − x)^K` is computed in fixed point (18 decimals), every
//! product rounded up, so the computed chance of missing a loss is never below the true one:
//! `K` is never too small, and every machine derives the same numbers (a float `ln` could give
//! 3 for 90% at 99%, where 2 is exact).

use serde::Serialize;

use super::model::VerificationRule;
use super::time::{Duration, Percent};

/// 100 % in parts per million, as [`Percent`] counts.
const PPM: u128 = 1_000_000;
/// One in the fixed point of [`pow_up`]: 18 decimals.
const ONE: u128 = 1_000_000_000_000_000_000;

/// What a policy asks to find: a copy that lost `loss` of its blocks, found within `within`
/// with chance `confidence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub loss: Percent,
    pub confidence: Percent,
    pub within: Duration,
}

/// The numbers a [`Target`] asks of the verifier, with the policy's interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Derived {
    /// `K`: blocks to check in all within the time asked for.
    pub total: u64,
    /// `R`: rounds in that time, at least 1.
    pub rounds: u64,
    /// `⌈K / R⌉`: blocks each round must check to reach the target.
    pub needed_per_round: u64,
    /// What a round checks for the target: `needed_per_round`, at most the cap.
    pub per_round: u32,
}

impl Derived {
    /// Whether the cap left the target reachable.
    pub fn reachable(&self) -> bool {
        self.needed_per_round <= u64::from(self.per_round)
    }

    /// Rounds needed to reach the target at the cap: the shortest `within` is this many
    /// intervals.
    pub fn rounds_at(&self, cap: u32) -> u64 {
        self.total.div_ceil(u64::from(cap.max(1)))
    }
}

/// A policy's detection target and what it derives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Detection {
    pub target: Target,
    pub derived: Derived,
}

/// `⌈a · b⌉` in fixed point; `a, b ≤ ONE`, so the product fits and the result is `≤ ONE`.
fn mul_up(a: u128, b: u128) -> u128 {
    (a * b).div_ceil(ONE)
}

/// `base^e` in fixed point, every product rounded up: never below the true power.
fn pow_up(base: u128, mut e: u64) -> u128 {
    let mut result = ONE;
    let mut square = base;
    while e > 0 {
        if e & 1 == 1 {
            result = mul_up(result, square);
        }
        e >>= 1;
        if e > 0 {
            square = mul_up(square, square);
        }
    }
    result
}

/// `K`: the fewest uniformly sampled blocks that find a loss of `loss` of a copy's blocks with
/// chance `confidence`, the smallest `K` with `(1 − loss)^K ≤ 1 − confidence` (rounded against
/// the detection). `None` unless both are above 0% and below 100%.
pub fn samples_needed(loss: Percent, confidence: Percent) -> Option<u64> {
    let (x, c) = (u128::from(loss.ppm()), u128::from(confidence.ppm()));
    if x == 0 || x >= PPM || c == 0 || c >= PPM {
        return None;
    }
    let base = (PPM - x) * (ONE / PPM);
    let target = (PPM - c) * (ONE / PPM);
    let enough = |k: u64| pow_up(base, k) <= target;
    // Double until enough, then halve the gap: `lo` is not enough (or 0), `hi` is. The worst
    // target a percentage can state (0.0001% at 99.9999%) needs about 2^24.
    let mut hi: u64 = 1;
    while !enough(hi) {
        hi = hi.checked_mul(2)?;
    }
    let mut lo = hi / 2;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if enough(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// What `target` asks of a verifier that checks every `interval`, with at most `cap` blocks a
/// round. `None` when the loss or the confidence is not above 0% and below 100%, or the
/// interval is zero.
pub fn derive(target: Target, interval: Duration, cap: u32) -> Option<Derived> {
    if interval == Duration::ZERO {
        return None;
    }
    let total = samples_needed(target.loss, target.confidence)?;
    let rounds = (target.within.secs() / interval.secs()).max(1);
    let needed_per_round = total.div_ceil(rounds);
    let per_round = u32::try_from(needed_per_round.min(u64::from(cap))).unwrap_or(cap);
    Some(Derived {
        total,
        rounds,
        needed_per_round,
        per_round,
    })
}

/// Rounds in which a rotation of `per_round` blocks a round checks every one of `blocks`:
/// `⌈blocks / per_round⌉` (at least 1).
pub fn rounds_to_cover(blocks: u64, per_round: u32) -> u64 {
    blocks.div_ceil(u64::from(per_round.max(1))).max(1)
}

/// `n` with a comma every three digits: `10,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The one unit a duration is a whole number of (`6h` → (6, "hour")), or `None` for a mixed
/// one (`1h30m`).
fn one_unit(d: Duration) -> Option<(u64, &'static str)> {
    let s = d.secs();
    [
        (86_400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ]
    .into_iter()
    .find(|(unit, _)| s >= *unit && s % unit == 0)
    .map(|(unit, name)| (s / unit, name))
}

/// "every hour", "every 6 hours", "every 1h30m".
fn every(d: Duration) -> String {
    match one_unit(d) {
        Some((1, name)) => format!("every {name}"),
        Some((n, name)) => format!("every {} {name}s", thousands(n)),
        None => format!("every {d}"),
    }
}

/// "a day", "an hour", "2 days", "1h30m".
fn span(d: Duration) -> String {
    match one_unit(d) {
        Some((1, "hour")) => "an hour".into(),
        Some((1, name)) => format!("a {name}"),
        Some((n, name)) => format!("{} {name}s", thousands(n)),
        None => d.to_string(),
    }
}

/// `d` rounded up to its largest unit (21.75 days → 22 days), for "at least once every …".
fn rounded_up(d: Duration) -> Duration {
    let s = d.secs();
    let unit = [86_400, 3600, 60]
        .into_iter()
        .find(|u| s >= *u)
        .unwrap_or(1);
    Duration::from_secs(s.div_ceil(unit).saturating_mul(unit))
}

/// Blocks checked a day at `per_round` every `interval`: exact when the interval divides a
/// day, else rounded down and said "about"; `None` when rounds are a day or more apart.
fn per_day(per_round: u32, interval: Duration) -> Option<String> {
    let i = interval.secs();
    if i == 0 || i >= 86_400 {
        return None;
    }
    let n = u64::from(per_round) * 86_400 / i;
    Some(if 86_400 % i == 0 {
        format!("{} a day", thousands(n))
    } else {
        format!("about {} a day", thousands(n))
    })
}

/// The block sampling of `rule` in one sentence, for a copy of `blocks` blocks: how many blocks
/// of each copy a round checks and how often, the loss it finds in time (with `detect`), and how
/// long a rotation takes to check every block. `None` when the policy asks for no block
/// sampling (layer 1).
///
/// "Checks 115 blocks of each copy every 6 hours (460 a day): a loss of 1% is found within a
/// day with 99% confidence; every block of a copy of 10,000 blocks is checked at least once
/// every 22 days."
pub fn summary(rule: &VerificationRule, blocks: u64) -> Option<String> {
    if !rule.layers.contains(&1) {
        return None;
    }
    let k = rule.sample_size;
    let mut out = format!(
        "Checks {} block{} of each copy {}",
        thousands(u64::from(k)),
        if k == 1 { "" } else { "s" },
        every(rule.interval)
    );
    if let Some(day) = per_day(k, rule.interval) {
        out.push_str(&format!(" ({day})"));
    }
    if let Some(d) = &rule.detect {
        let t = d.target;
        out.push_str(&format!(
            ": a loss of {} is found within {} with {}{} confidence",
            t.loss,
            span(t.within),
            // A larger sampleSize than the target needs finds it more surely.
            if k > d.derived.per_round {
                "at least "
            } else {
                ""
            },
            t.confidence
        ));
    }
    let rounds = rounds_to_cover(blocks, k);
    let cover = Duration::from_secs(rule.interval.secs().saturating_mul(rounds));
    out.push_str(&format!(
        "; every block of a copy of {} block{} is checked at least once {}.",
        thousands(blocks),
        if blocks == 1 { "" } else { "s" },
        every(rounded_up(cover))
    ));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn pct(text: &str) -> Percent {
        Percent::parse(text).unwrap()
    }

    fn dur(text: &str) -> Duration {
        Duration::parse(text).unwrap()
    }

    /// Each row's numbers worked out by hand (natural logarithms to 6 places):
    /// K = ⌈ln(1 − c) / ln(1 − x)⌉, R = ⌊within / interval⌋, k = ⌈K / R⌉, capped at 1000.
    #[rstest]
    // ln(0.01) / ln(0.99) = −4.605170 / −0.010050 = 458.21 → K 459; 1d / 6h = 4 rounds;
    // ⌈459 / 4⌉ = 115 (460 a day).
    #[case("1%", "99%", "1d", "6h", 459, 4, 115)]
    // Same target checked every hour: 24 rounds, ⌈459 / 24⌉ = 20 (480 a day).
    #[case("1%", "99%", "1d", "1h", 459, 24, 20)]
    // ln(0.001) / ln(0.99) = −6.907755 / −0.010050 = 687.32 → 688; 7d / 1h = 168;
    // ⌈688 / 168⌉ = 5.
    #[case("1%", "99.9%", "7d", "1h", 688, 168, 5)]
    // ln(0.05) / ln(0.95) = −2.995732 / −0.051293 = 58.40 → 59; 1h / 30m = 2; ⌈59 / 2⌉ = 30.
    #[case("5%", "95%", "1h", "30m", 59, 2, 30)]
    // ln(0.01) / ln(0.999) = −4.605170 / −0.0010005 = 4602.87 → 4603; 1d / 15m = 96;
    // ⌈4603 / 96⌉ = 48.
    #[case("0.1%", "99%", "1d", "15m", 4603, 96, 48)]
    // ln(0.1) / ln(0.98) = −2.302585 / −0.020203 = 113.97 → 114; within 7h, interval 3h:
    // ⌊7 / 3⌋ = 2 rounds (the odd hour is no round); ⌈114 / 2⌉ = 57.
    #[case("2%", "90%", "7h", "3h", 114, 2, 57)]
    // Exactly on a boundary: 0.5² = 0.25 = 1 − 0.75, so K = 2 exactly; within = interval: 1 round.
    #[case("50%", "75%", "1h", "1h", 2, 1, 2)]
    // 0.1² = 0.01 exactly: K = 2 (a float ratio is 1.9999999999999996 or 2.0000000000000004).
    #[case("90%", "99%", "1d", "1d", 2, 1, 2)]
    // ln(0.001) / ln(0.9999) = −6.907755 / −0.000100005 = 69074.10 → 69075; 1 round: capped at
    // 1000, unreachable (it would need ⌈69075 / 1000⌉ = 70 rounds).
    #[case("0.01%", "99.9%", "1h", "1h", 69_075, 1, 1000)]
    fn derivation_table(
        #[case] loss: &str,
        #[case] confidence: &str,
        #[case] within: &str,
        #[case] interval: &str,
        #[case] total: u64,
        #[case] rounds: u64,
        #[case] per_round: u32,
    ) {
        let target = Target {
            loss: pct(loss),
            confidence: pct(confidence),
            within: dur(within),
        };
        let d = derive(target, dur(interval), 1000).unwrap();
        assert_eq!(
            (d.total, d.rounds, d.per_round),
            (total, rounds, per_round),
            "{loss} at {confidence} within {within} every {interval}"
        );
        assert_eq!(d.needed_per_round, total.div_ceil(rounds));
        assert_eq!(d.reachable(), d.needed_per_round <= 1000);
    }

    #[test]
    fn the_unreachable_row_says_how_many_rounds_it_needs() {
        let target = Target {
            loss: pct("0.01%"),
            confidence: pct("99.9%"),
            within: dur("1h"),
        };
        let d = derive(target, dur("1h"), 1000).unwrap();
        assert!(!d.reachable());
        assert_eq!(d.rounds_at(1000), 70);
    }

    #[rstest]
    #[case("0%", "99%")]
    #[case("100%", "99%")]
    #[case("1%", "0%")]
    #[case("1%", "100%")]
    fn a_target_outside_the_open_range_derives_nothing(#[case] loss: &str, #[case] c: &str) {
        assert_eq!(samples_needed(pct(loss), pct(c)), None);
    }

    #[test]
    fn the_smallest_stated_loss_at_the_highest_stated_confidence_is_found() {
        // ln(1e-6) / ln(1 − 1e-6) = 13815503.65 → 13815504 (within a rounding unit or two of
        // the fixed point: never fewer).
        let k = samples_needed(pct("0.0001%"), pct("99.9999%")).unwrap();
        assert!((13_815_504..=13_815_506).contains(&k), "{k}");
    }

    #[test]
    fn k_agrees_with_the_formula_away_from_whole_numbers() {
        // Every target on a grid of losses and confidences: the integer K is the float formula's
        // wherever the ratio is not within a hair of a whole number.
        for x in [1u32, 37, 100, 1000, 5000, 10_000, 123_456, 500_000, 999_999] {
            for c in [1u32, 500_000, 900_000, 990_000, 999_000, 999_999] {
                let ratio = (1.0 - f64::from(c) / 1e6).ln() / (1.0 - f64::from(x) / 1e6).ln();
                if (ratio - ratio.round()).abs() < 1e-3 {
                    continue;
                }
                let k = samples_needed(Percent::from_ppm(x), Percent::from_ppm(c));
                assert_eq!(k, Some(ratio.ceil() as u64), "x {x} ppm, c {c} ppm");
            }
        }
    }

    fn rule(interval: &str, k: u32, detect: Option<(&str, &str, &str)>) -> VerificationRule {
        let interval = dur(interval);
        let detect = detect.map(|(loss, c, within)| {
            let target = Target {
                loss: pct(loss),
                confidence: pct(c),
                within: dur(within),
            };
            Detection {
                target,
                derived: derive(target, interval, 1000).unwrap(),
            }
        });
        VerificationRule {
            interval,
            layers: vec![0, 1],
            sample_size: k,
            detect,
        }
    }

    #[rstest]
    #[case(rule("6h", 115, Some(("1%", "99%", "1d"))), 10_000, "Checks 115 blocks of each copy every 6 hours (460 a day): a loss of 1% is found within a day with 99% confidence; every block of a copy of 10,000 blocks is checked at least once every 22 days.")]
    #[case(rule("6h", 200, Some(("1%", "99%", "1d"))), 10_000, "Checks 200 blocks of each copy every 6 hours (800 a day): a loss of 1% is found within a day with at least 99% confidence; every block of a copy of 10,000 blocks is checked at least once every 13 days.")]
    #[case(rule("1h", 50, None), 10_000, "Checks 50 blocks of each copy every hour (1,200 a day); every block of a copy of 10,000 blocks is checked at least once every 9 days.")]
    #[case(rule("7h", 20, Some(("2%", "90%", "2w"))), 100, "Checks 20 blocks of each copy every 7 hours (about 68 a day): a loss of 2% is found within 14 days with at least 90% confidence; every block of a copy of 100 blocks is checked at least once every 2 days.")]
    #[case(rule("30m", 1, None), 1, "Checks 1 block of each copy every 30 minutes (48 a day); every block of a copy of 1 block is checked at least once every 30 minutes.")]
    #[case(rule("2d", 10, None), 45, "Checks 10 blocks of each copy every 2 days; every block of a copy of 45 blocks is checked at least once every 10 days.")]
    fn the_summary_says_the_numbers_in_words(
        #[case] rule: VerificationRule,
        #[case] blocks: u64,
        #[case] expected: &str,
    ) {
        assert_eq!(summary(&rule, blocks).as_deref(), Some(expected));
    }

    #[test]
    fn a_copy_too_large_to_cover_still_has_words() {
        let words = summary(&rule("3650d", 1, None), u64::MAX).unwrap_or_default();
        assert!(
            words.starts_with("Checks 1 block of each copy every 3,650 days;"),
            "{words}"
        );
    }

    #[test]
    fn no_block_sampling_no_summary() {
        let mut r = rule("1h", 50, None);
        r.layers = vec![0, 3];
        assert_eq!(summary(&r, 10_000), None);
    }

    #[rstest]
    #[case(0, "0")]
    #[case(999, "999")]
    #[case(1000, "1,000")]
    #[case(10_000, "10,000")]
    #[case(1_234_567, "1,234,567")]
    fn thousands_are_separated(#[case] n: u64, #[case] text: &str) {
        assert_eq!(thousands(n), text);
    }
}
