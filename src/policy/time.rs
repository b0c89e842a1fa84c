//! Time as the policy engine sees it: instants ([`Timestamp`]), lengths of time ([`Duration`])
//! and target fractions ([`Percent`]).
//!
//! Invariants: all three are integers inside (milliseconds, seconds, parts per million), so
//! arithmetic and comparisons are exact and identical on every machine; each has one canonical
//! text form, and parsing that form gives back the same value.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest duration a policy may state: ten years. Keeps every sum of durations and timestamps
/// far from integer overflow.
pub const MAX_DURATION_SECS: u64 = 3650 * 86_400;

/// Why a duration, timestamp or percentage could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("{0:?} is not a duration: write a number and a unit (s, m, h, d or w), e.g. \"30m\", \"24h\", \"7d\" or \"1h30m\"")]
    Duration(String),
    #[error("{0:?} is longer than the longest duration allowed (3650d)")]
    DurationTooLong(String),
    #[error(
        "{0:?} is not a date-time: write RFC 3339 with a time zone, e.g. \"2026-01-01T00:00:00Z\""
    )]
    Timestamp(String),
    #[error("{0:?} is not a percentage: write a number from 0 to 100 with at most 4 decimals and a % sign, e.g. \"99.9%\"")]
    Percent(String),
}

/// An instant, as milliseconds since the Unix epoch (UTC). Sub-millisecond digits in the input
/// are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Reads an RFC 3339 date-time with a time zone (the atproto `datetime` format).
    pub fn parse(text: &str) -> Result<Self, TimeError> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
            // The canonical form is UTC with a four-digit year: an instant whose year has four
            // digits only in its own time zone (0000-01-01T00:00:00+01:00) has no such form.
            .filter(|t| (0..=9999).contains(&t.year()))
            .map(|t| Timestamp(t.timestamp_millis()))
            .ok_or_else(|| TimeError::Timestamp(text.to_string()))
    }

    /// This instant plus a duration (saturating at the far future).
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(d.millis()))
    }

    /// This instant minus a duration (saturating at the far past).
    pub fn minus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(d.millis()))
    }

    /// Time from `earlier` to `self`, or zero when `earlier` is not earlier.
    pub fn since(self, earlier: Timestamp) -> Duration {
        let ms = self.0.saturating_sub(earlier.0).max(0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }
}

impl fmt::Display for Timestamp {
    /// Canonical form: UTC, millisecond precision, `Z` suffix (`2026-01-01T00:00:00.000Z`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match DateTime::<Utc>::from_timestamp_millis(self.0) {
            Some(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            None => write!(f, "@{}ms", self.0),
        }
    }
}

impl FromStr for Timestamp {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A length of time, in whole seconds. Text form: numbers with units, largest first
/// (`"90s"`, `"30m"`, `"1h30m"`, `"7d"`; `w` = 7 days is accepted on input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(u64);

impl Duration {
    pub const ZERO: Duration = Duration(0);

    pub const fn from_secs(secs: u64) -> Self {
        Duration(secs)
    }

    /// Whole seconds in `millis` (rounded down).
    pub const fn from_millis(millis: u64) -> Self {
        Duration(millis / 1000)
    }

    pub const fn secs(self) -> u64 {
        self.0
    }

    /// Milliseconds, as a signed number for timestamp arithmetic.
    pub fn millis(self) -> i64 {
        i64::try_from(self.0.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// Reads a duration such as `"30m"`, `"24h"`, `"7d"` or `"1h30m"`.
    pub fn parse(text: &str) -> Result<Self, TimeError> {
        let bad = || TimeError::Duration(text.to_string());
        if text.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        let mut number: Option<u64> = None;
        // Units must appear largest first and at most once: "1h30m", not "30m1h" or "1h1h".
        let mut last_unit = u64::MAX;
        for c in text.chars() {
            if let Some(digit) = c.to_digit(10) {
                let n = number.unwrap_or(0);
                let n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(digit)))
                    .ok_or_else(|| TimeError::DurationTooLong(text.to_string()))?;
                number = Some(n);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                _ => return Err(bad()),
            };
            let n = number.take().ok_or_else(bad)?;
            if unit >= last_unit {
                return Err(bad());
            }
            last_unit = unit;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| TimeError::DurationTooLong(text.to_string()))?;
        }
        if number.is_some() {
            // Trailing digits without a unit: "30" is ambiguous (seconds? minutes?).
            return Err(bad());
        }
        if total > MAX_DURATION_SECS {
            return Err(TimeError::DurationTooLong(text.to_string()));
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    /// Canonical form: days, hours, minutes, seconds, largest first, zero parts left out
    /// (`"1d2h"`, `"90s"` is written `"1m30s"`); zero is `"0s"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for (unit, name) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
            if rest >= unit {
                write!(f, "{}{}", rest / unit, name)?;
                rest %= unit;
            }
        }
        Ok(())
    }
}

impl FromStr for Duration {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Duration::parse(s)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A fraction from 0 to 100 %, in parts per million (`"99.9%"` = 999 000 ppm). Lexicons have
/// no floating-point numbers, so targets travel as text; inside they are exact integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u32);

impl Percent {
    pub const ONE_HUNDRED: Percent = Percent(1_000_000);

    pub const fn from_ppm(ppm: u32) -> Self {
        Percent(ppm)
    }

    pub const fn ppm(self) -> u32 {
        self.0
    }

    /// `part / whole` rounded down to a whole ppm, or `None` when `whole` is zero.
    pub fn ratio(part: u64, whole: u64) -> Option<Self> {
        if whole == 0 {
            return None;
        }
        let ppm = u128::from(part.min(whole)) * 1_000_000 / u128::from(whole);
        Some(Percent(u32::try_from(ppm).unwrap_or(1_000_000)))
    }

    /// The value in percent as a JSON-friendly number with at most 4 decimals (exact: it is the
    /// ppm divided by 10 000).
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }

    /// Reads `"99.9%"`, `"100%"` or `"95%"`.
    pub fn parse(text: &str) -> Result<Self, TimeError> {
        let bad = || TimeError::Percent(text.to_string());
        let number = text.strip_suffix('%').ok_or_else(bad)?;
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) if !f.is_empty() => (w, f),
            Some(_) => return Err(bad()),
            None => (number, ""),
        };
        let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
        if whole.is_empty()
            || whole.len() > 3
            || frac.len() > 4
            || !all_digits(whole)
            || !all_digits(frac)
        {
            return Err(bad());
        }
        let whole: u32 = whole.parse().map_err(|_| bad())?;
        let mut frac_ppm: u32 = 0;
        for (i, c) in frac.chars().enumerate() {
            let digit = c.to_digit(10).ok_or_else(bad)?;
            frac_ppm += digit * 10u32.pow(3 - u32::try_from(i).map_err(|_| bad())?);
        }
        let ppm = whole * 10_000 + frac_ppm;
        if ppm > 1_000_000 {
            return Err(bad());
        }
        Ok(Percent(ppm))
    }
}

impl fmt::Display for Percent {
    /// Canonical form: up to 4 decimals, no trailing zeros (`"99.9%"`, `"100%"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 10_000;
        let frac = self.0 % 10_000;
        if frac == 0 {
            return write!(f, "{whole}%");
        }
        let digits = format!("{frac:04}");
        write!(f, "{whole}.{}%", digits.trim_end_matches('0'))
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    #[rstest]
    #[case("30m", 1800)]
    #[case("24h", 86_400)]
    #[case("7d", 604_800)]
    #[case("1w", 604_800)]
    #[case("90s", 90)]
    #[case("1h30m", 5400)]
    #[case("1d2h3m4s", 93_784)]
    #[case("0s", 0)]
    #[case("3650d", MAX_DURATION_SECS)]
    fn durations_parse(#[case] text: &str, #[case] secs: u64) {
        assert_eq!(Duration::parse(text), Ok(Duration::from_secs(secs)));
    }

    #[rstest]
    #[case("")]
    #[case("30")]
    #[case("m")]
    #[case("30x")]
    #[case("30M")]
    #[case("1m1h")]
    #[case("1h1h")]
    #[case(" 30m")]
    #[case("-5m")]
    #[case("1.5h")]
    #[case("3651d")]
    #[case("99999999999999999999999s")]
    fn durations_reject(#[case] text: &str) {
        assert!(Duration::parse(text).is_err(), "{text:?} should not parse");
    }

    #[rstest]
    #[case(90, "1m30s")]
    #[case(0, "0s")]
    #[case(86_400, "1d")]
    #[case(604_800, "7d")]
    #[case(93_784, "1d2h3m4s")]
    fn durations_display(#[case] secs: u64, #[case] text: &str) {
        assert_eq!(Duration::from_secs(secs).to_string(), text);
    }

    proptest! {
        #[test]
        fn duration_display_round_trips(secs in 0..=MAX_DURATION_SECS) {
            let d = Duration::from_secs(secs);
            prop_assert_eq!(Duration::parse(&d.to_string()), Ok(d));
        }

        #[test]
        fn timestamp_display_round_trips(ms in -62_135_596_800_000i64..253_402_300_799_999i64) {
            let t = Timestamp::from_millis(ms);
            prop_assert_eq!(Timestamp::parse(&t.to_string()), Ok(t));
        }

        #[test]
        fn percent_display_round_trips(ppm in 0u32..=1_000_000) {
            // 1 ppm is 0.0001 %: four decimals express every value exactly.
            let p = Percent::from_ppm(ppm);
            prop_assert_eq!(Percent::parse(&p.to_string()), Ok(p));
        }
    }

    #[rstest]
    #[case("2026-01-01T00:00:00Z", 1_767_225_600_000)]
    #[case("2026-01-01T01:00:00+01:00", 1_767_225_600_000)]
    #[case("2026-01-01T00:00:00.123456Z", 1_767_225_600_123)]
    fn timestamps_parse(#[case] text: &str, #[case] ms: i64) {
        assert_eq!(Timestamp::parse(text), Ok(Timestamp::from_millis(ms)));
    }

    #[rstest]
    #[case("2026-01-01")]
    #[case("2026-01-01T00:00:00")]
    #[case("yesterday")]
    #[case("0000-01-01T00:00:00+01:00")]
    #[case("9999-12-31T23:59:59-01:00")]
    fn timestamps_reject(#[case] text: &str) {
        assert!(Timestamp::parse(text).is_err());
    }

    #[test]
    fn timestamp_display_is_canonical() {
        let t = Timestamp::parse("2026-01-01T01:00:00+01:00");
        assert_eq!(
            t.map(|t| t.to_string()),
            Ok("2026-01-01T00:00:00.000Z".to_string())
        );
    }

    #[rstest]
    #[case("99.9%", 999_000)]
    #[case("100%", 1_000_000)]
    #[case("0%", 0)]
    #[case("95%", 950_000)]
    #[case("99.99%", 999_900)]
    #[case("99.0001%", 990_001)]
    fn percents_parse(#[case] text: &str, #[case] ppm: u32) {
        assert_eq!(Percent::parse(text), Ok(Percent::from_ppm(ppm)));
    }

    #[rstest]
    #[case("99.9")]
    #[case("101%")]
    #[case("100.5%")]
    #[case("99.%")]
    #[case(".5%")]
    #[case("99.00001%")]
    #[case("-1%")]
    #[case("1e2%")]
    fn percents_reject(#[case] text: &str) {
        assert!(Percent::parse(text).is_err(), "{text:?} should not parse");
    }

    #[test]
    fn ratio_rounds_down_and_handles_zero() {
        assert_eq!(Percent::ratio(2, 3), Some(Percent::from_ppm(666_666)));
        assert_eq!(Percent::ratio(0, 0), None);
        assert_eq!(Percent::ratio(5, 3), Some(Percent::ONE_HUNDRED));
    }
}
