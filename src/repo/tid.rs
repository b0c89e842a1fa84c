//! Timestamp identifiers (TIDs): the `rev` of a commit and most record keys.
//!
//! A TID is 13 characters of base32-sortable text over a 64-bit number whose top
//! bit is zero, then 53 bits of microseconds since the Unix epoch, then a 10-bit
//! clock id. TIDs sort as text in time order.

const ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";

/// Parses a TID into its 64-bit value, or `None` when it is not a valid TID.
pub fn parse(tid: &str) -> Option<u64> {
    let bytes = tid.as_bytes();
    if bytes.len() != 13 {
        return None;
    }
    // The first character carries the top bit, which must be zero.
    if !b"234567abcdefghij".contains(&bytes[0]) {
        return None;
    }
    let mut value: u64 = 0;
    for &b in bytes {
        let digit = ALPHABET.iter().position(|&c| c == b)? as u64;
        value = (value << 5) | digit;
    }
    Some(value)
}

/// Microseconds since the Unix epoch carried by a TID.
pub fn timestamp_micros(tid: &str) -> Option<u64> {
    parse(tid).map(|v| v >> 10)
}

/// Formats a TID from microseconds and a clock id.
pub fn format(micros: u64, clock_id: u16) -> String {
    let value = ((micros & ((1 << 53) - 1)) << 10) | u64::from(clock_id & 0x3ff);
    let mut out = String::with_capacity(13);
    for i in 0..13 {
        let shift = 60 - 5 * i;
        out.push(ALPHABET[((value >> shift) & 31) as usize] as char);
    }
    out
}

/// A TID for the current time.
pub fn now(clock_id: u16) -> String {
    let micros = chrono::Utc::now().timestamp_micros().max(0) as u64;
    format(micros, clock_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_sorts() {
        let a = format(1_700_000_000_000_000, 5);
        let b = format(1_700_000_000_000_001, 0);
        assert_eq!(a.len(), 13);
        assert!(a < b);
        assert_eq!(timestamp_micros(&a), Some(1_700_000_000_000_000));
    }

    #[test]
    fn interop_fixtures() {
        let Some(dir) = crate::testdata::interop_dir() else {
            return;
        };
        let valid = std::fs::read_to_string(dir.join("syntax/tid_syntax_valid.txt")).unwrap();
        for line in valid
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(parse(line).is_some(), "valid TID refused: {line}");
        }
        let invalid = std::fs::read_to_string(dir.join("syntax/tid_syntax_invalid.txt")).unwrap();
        for line in invalid
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(parse(line).is_none(), "invalid TID accepted: {line}");
        }
    }
}
