//! The engine's input files, from bytes to values: a policy file and an observations file,
//! refused in words when they are not what `docs/policy.md` describes.
//!
//! Owns what must hold before any field is read: a policy file is at most [`MAX_POLICY_BYTES`]
//! (checked before parsing); the text is UTF-8 and one JSON value; no object names a key twice
//! (JSON leaves a repeated key's meaning open and serde_json keeps the last one silently, so two
//! readers of one file could see two policies); the observations file is the documented object.
//! Each refusal says what is wrong in words, naming the key or the field by its JSON path, and
//! never shows a Rust type or serde's wording.
//!
//! Invariants: no IO (callers pass the bytes they read); a refusal is one sentence, said once.
//! Observations are read by serde (fast: a week of a thousand members is 50 MB), after one
//! streaming pass that looks for repeated keys; only when serde refuses the file is it walked
//! again, against the documented shape (`shape`), to say where and why.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;
use serde_json::Value;

use super::observations::Observations;
use super::validate::{check_value, Checked, Problem, Problems};

mod shape;

use shape::explain;

/// Largest policy file: 1 MiB. The longest lists a policy may have (1000 members, 10,000
/// subjects) fit in well under half of it with DIDs of usual length; a larger file is not a
/// policy anyone wrote, and it is refused before it is parsed.
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;

/// Why an input file was refused: a sentence for a person, and the JSON path it is about
/// (empty for the whole file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InputError {
    pub path: String,
    pub message: String,
}

impl InputError {
    fn new(path: &str, message: String) -> Self {
        InputError {
            path: path.to_string(),
            message,
        }
    }
}

impl From<InputError> for Problems {
    fn from(e: InputError) -> Self {
        Problems {
            problems: vec![Problem {
                path: e.path,
                message: e.message,
            }],
            warnings: Vec::new(),
        }
    }
}

/// Reads and checks a policy file: at most [`MAX_POLICY_BYTES`], UTF-8, JSON, no key twice in
/// an object, then [`check_value`].
pub fn check_bytes(bytes: &[u8]) -> Result<Checked, Problems> {
    check_value(&policy_value(bytes)?)
}

/// A policy file as JSON, refused whole when it is too large, not UTF-8, not JSON, or names a
/// key twice in one object.
pub fn policy_value(bytes: &[u8]) -> Result<Value, InputError> {
    if bytes.len() > MAX_POLICY_BYTES {
        return Err(InputError::new(
            "",
            format!(
                "the file is larger than 1 MiB ({MAX_POLICY_BYTES} bytes), the most a policy may be: a policy with the longest lists allowed fits in less than half of that"
            ),
        ));
    }
    let text = utf8(bytes)?;
    check_duplicates(text)?;
    serde_json::from_str(text).map_err(|e| syntax(text, &e))
}

/// Reads an observations file (format in `docs/policy.md`).
pub fn observations(bytes: &[u8]) -> Result<Observations, InputError> {
    let text = utf8(bytes)?;
    check_duplicates(text)?;
    // serde also reads a list as an object (its fields in order): only `{` starts the format.
    let object = text.trim_start().starts_with('{');
    let refused = match serde_json::from_str::<Observations>(text) {
        Ok(obs) if object => return Ok(obs),
        Ok(_) => None,
        Err(e) => Some(e),
    };
    let value: Value = serde_json::from_str(text).map_err(|e| syntax(text, &e))?;
    Err(explain(&value).unwrap_or_else(|| {
        let at = refused
            .map(|e| format!(" near line {}, column {}", e.line(), e.column()))
            .unwrap_or_default();
        InputError::new(
            "",
            format!("the observations file does not have the documented shape{at}"),
        )
    }))
}

/// The text of a file, without a leading byte order mark.
fn utf8(bytes: &[u8]) -> Result<&str, InputError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.strip_prefix('\u{feff}').unwrap_or(text)),
        Err(e) => {
            let at = e.valid_up_to();
            let line = bytes
                .get(..at)
                .map_or(0, |b| b.iter().filter(|c| **c == b'\n').count())
                + 1;
            Err(InputError::new(
                "",
                format!("the file is not UTF-8 text: byte {} (line {line}) is not part of a UTF-8 character; save the file as UTF-8", at + 1),
            ))
        }
    }
}

/// A JSON syntax error in words, with its line and column.
fn syntax(text: &str, e: &serde_json::Error) -> InputError {
    let at = format!("line {}, column {}", e.line(), e.column());
    let message = match e.classify() {
        Category::Eof if text.trim().is_empty() => {
            "the file is empty: it should hold one JSON object".to_string()
        }
        Category::Eof => {
            format!(
                "the file ends at {at} before the JSON does: a text, list or object is not closed"
            )
        }
        _ => {
            let full = e.to_string();
            let what = full
                .rsplit_once(" at line ")
                .map_or(full.as_str(), |(w, _)| w);
            let what = match what {
                "trailing characters" => "there is more after the JSON value".to_string(),
                "recursion limit exceeded" => {
                    "lists and objects are nested more than 128 deep".to_string()
                }
                "expected ident" => "expected true, false or null".to_string(),
                "key must be a string" => {
                    "an object's keys must be text in double quotes".to_string()
                }
                "trailing comma" => "a comma comes before a closing bracket".to_string(),
                "number out of range" => "a number is too large".to_string(),
                other => other.replace('`', "'"),
            };
            format!("the file is not valid JSON at {at}: {what}")
        }
    };
    InputError::new("", message)
}

/// One step of the path to a repeated key.
enum Segment {
    Key(String),
    Index(usize),
}

/// A repeated key, and the path to its object (innermost step first: it is collected while
/// the error travels back up).
struct Repeated {
    key: String,
    trail: Vec<Segment>,
}

fn path_of(trail: &[Segment]) -> String {
    let mut path = String::new();
    for step in trail.iter().rev() {
        match step {
            Segment::Key(k) if path.is_empty() => path.push_str(k),
            Segment::Key(k) => {
                path.push('.');
                path.push_str(k);
            }
            Segment::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    path
}

/// Refuses JSON text in which an object names a key twice, in one streaming pass that keeps
/// only the keys of the objects it is inside. Syntax errors are refused too, in words.
pub fn check_duplicates(text: &str) -> Result<(), InputError> {
    let mut repeated = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let result = Walk {
        repeated: &mut repeated,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (result, repeated) {
        (Ok(()), _) => Ok(()),
        (Err(e), Some(r)) => {
            let path = path_of(&r.trail);
            let place = if path.is_empty() {
                "the top-level object".to_string()
            } else {
                path.clone()
            };
            let full = if path.is_empty() {
                r.key.clone()
            } else {
                format!("{path}.{}", r.key)
            };
            Err(InputError::new(
                &full,
                format!(
                    "the key {:?} appears twice in {place} (line {}, column {}): JSON readers disagree on which one counts, so write it once",
                    r.key,
                    e.line(),
                    e.column()
                ),
            ))
        }
        (Err(e), None) => Err(syntax(text, &e)),
    }
}

/// The keys of one object so far: a short list, a set once the object is large.
#[derive(Default)]
struct Keys<'de> {
    few: Vec<Cow<'de, str>>,
    many: HashSet<Cow<'de, str>>,
}

impl<'de> Keys<'de> {
    const FEW: usize = 16;

    fn contains(&self, key: &str) -> bool {
        self.few.iter().any(|k| k == key) || self.many.contains(key)
    }

    fn insert(&mut self, key: Cow<'de, str>) {
        if self.many.is_empty() && self.few.len() < Self::FEW {
            self.few.push(key);
        } else {
            self.many.extend(self.few.drain(..));
            self.many.insert(key);
        }
    }
}

/// Visits any JSON value, recording the first repeated key.
struct Walk<'a> {
    repeated: &'a mut Option<Repeated>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            match seq.next_element_seed(Walk {
                repeated: &mut *self.repeated,
            }) {
                Ok(Some(())) => index += 1,
                Ok(None) => return Ok(()),
                Err(e) => {
                    if let Some(r) = self.repeated.as_mut() {
                        r.trail.push(Segment::Index(index));
                    }
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = Keys::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if keys.contains(&key) {
                *self.repeated = Some(Repeated {
                    key: key.into_owned(),
                    trail: Vec::new(),
                });
                return Err(de::Error::custom("a key appears twice"));
            }
            if let Err(e) = map.next_value_seed(Walk {
                repeated: &mut *self.repeated,
            }) {
                if let Some(r) = self.repeated.as_mut() {
                    r.trail.push(Segment::Key(key.into_owned()));
                }
                return Err(e);
            }
            keys.insert(key);
        }
        Ok(())
    }
}

/// An object's key, borrowed from the text when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn refusal(text: &str) -> String {
        match observations(text.as_bytes()) {
            Ok(_) => String::new(),
            Err(e) => e.message,
        }
    }

    fn policy_refusal(text: &str) -> String {
        match policy_value(text.as_bytes()) {
            Ok(_) => String::new(),
            Err(e) => e.message,
        }
    }

    #[rstest]
    #[case(
        r#"{"a": 1, "a": 2}"#,
        "the key \"a\" appears twice in the top-level object"
    )]
    #[case(
        r#"{"rules": {"replication": {"minCopies": 2, "strategy": "full", "minCopies": 9}}}"#,
        "the key \"minCopies\" appears twice in rules.replication"
    )]
    #[case(
        r#"{"members": [{"did": "x"}, {"did": "y", "did": "z"}]}"#,
        "the key \"did\" appears twice in members[1]"
    )]
    #[case(
        r#"[[{"k": [{}, {"a\u0062": 1, "ab": 2}]}]]"#,
        "appears twice in [0][0].k[1]"
    )]
    fn a_repeated_key_is_refused_at_any_depth(#[case] text: &str, #[case] expected: &str) {
        let message = policy_refusal(text);
        assert!(message.contains(expected), "{message}");
        assert!(message.contains("line 1, column"), "{message}");
    }

    #[test]
    fn the_same_key_in_two_objects_is_not_a_repetition() {
        let text = r#"{"a": {"k": 1}, "b": {"k": 2}, "c": [{"k": 1}, {"k": 2}]}"#;
        assert_eq!(check_duplicates(text), Ok(()));
    }

    #[test]
    fn a_large_object_is_checked_with_a_set() {
        let mut keys: Vec<String> = (0..100).map(|i| format!("\"k{i}\": {i}")).collect();
        assert_eq!(check_duplicates(&format!("{{{}}}", keys.join(","))), Ok(()));
        keys.push("\"k7\": 0".into());
        let e = check_duplicates(&format!("{{{}}}", keys.join(",")));
        assert_eq!(e.map_err(|e| e.path), Err("k7".to_string()));
    }

    #[rstest]
    #[case("", "the file is empty")]
    #[case(
        "{\"a\": [1, 2",
        "the file ends at line 1, column 11 before the JSON does"
    )]
    #[case(
        "{\"a\": 1,}",
        "the file is not valid JSON at line 1, column 9: a comma comes before a closing bracket"
    )]
    #[case("{\"a\": tru}", "expected true, false or null")]
    #[case("{} {}", "there is more after the JSON value")]
    #[case("{\"a\" 1}", "expected ':'")]
    fn syntax_errors_are_said_in_words(#[case] text: &str, #[case] expected: &str) {
        let message = policy_refusal(text);
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains('`'), "{message}");
    }

    #[test]
    fn a_policy_over_the_cap_is_refused_before_parsing() {
        // Not JSON at all: only the size is looked at.
        let big = vec![b'x'; MAX_POLICY_BYTES + 1];
        let e = policy_value(&big).map_err(|e| e.message);
        assert_eq!(
            e.err().as_deref(),
            Some("the file is larger than 1 MiB (1048576 bytes), the most a policy may be: a policy with the longest lists allowed fits in less than half of that")
        );
        let at_cap = format!("{{}}{}", " ".repeat(MAX_POLICY_BYTES - 2));
        assert!(policy_value(at_cap.as_bytes()).is_ok());
    }

    #[test]
    fn the_longest_lists_allowed_fit_under_the_cap() {
        let did = |i: usize| format!("did:plc:{i:0>24}");
        let members: Vec<Value> = (0..super::super::validate::MAX_MEMBERS)
            .map(|i| serde_json::json!({ "did": did(i) }))
            .collect();
        let subjects: Vec<String> = (0..super::super::validate::MAX_SUBJECTS).map(did).collect();
        let policy = serde_json::json!({
            "$type": "org.p2pds.policy", "name": "big", "type": "mutual-aid", "members": members,
            "rules": { "replication": { "strategy": "full", "minCopies": 2, "subjects": subjects },
                       "verification": { "interval": "1h", "sampleSize": 10 },
                       "sync": { "maxLag": "1h" } }
        });
        let text = serde_json::to_string_pretty(&policy).unwrap_or_default();
        assert!(text.len() < MAX_POLICY_BYTES / 2, "{}", text.len());
    }

    #[test]
    fn text_that_is_not_utf8_is_refused_in_words() {
        let e = policy_value(b"{\"name\":\n \"\xff\"}").map_err(|e| e.message);
        assert_eq!(
            e.err().as_deref(),
            Some("the file is not UTF-8 text: byte 12 (line 2) is not part of a UTF-8 character; save the file as UTF-8")
        );
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        assert_eq!(
            policy_value("\u{feff}{}".as_bytes()),
            Ok(serde_json::json!({}))
        );
    }

    #[rstest]
    #[case("[1, 2]", "the observations file must be an object with the lists acks, heartbeats, heads, holdings and verifications (each may be left out), not a list")]
    #[case("[[], [], [], [], []]", "must be an object with the lists")]
    #[case("5", "not a whole number")]
    #[case("\"x\"", "not text")]
    #[case("null", "not null")]
    #[case(r#"{"heartbeat": []}"#, "heartbeat is not a field of the observations file (did you mean heartbeats?): its fields are acks, heartbeats, heads, holdings and verifications")]
    #[case(r#"{"heartbeats": null}"#, "heartbeats must be a list, not null")]
    #[case(r#"{"heartbeats": {}}"#, "heartbeats must be a list, not an object")]
    #[case(
        r#"{"heartbeats": [{"node": "did:plc:a"}]}"#,
        "heartbeats[0].at is missing: a heartbeat needs node and at"
    )]
    #[case(
        r#"{"heartbeats": ["did:plc:a"]}"#,
        "heartbeats[0] must be an object (a heartbeat), not text"
    )]
    #[case(
        r#"{"heartbeats": [{"node": 5, "at": "2026-01-01T00:00:00Z"}]}"#,
        "heartbeats[0].node must be text, not a whole number"
    )]
    #[case(
        r#"{"heartbeats": [{"node": "a", "at": "yesterday"}]}"#,
        "heartbeats[0].at: \"yesterday\" is not a date-time"
    )]
    #[case(
        r#"{"heartbeats": [{"node": "a", "at": "2026-01-01T00:00:00Z", "seen": 1}]}"#,
        "heartbeats[0].seen is not a field of a heartbeat: its fields are node and at"
    )]
    #[case(
        r#"{"heads": [{"subject": "a", "rev": 3, "at": "2026-01-01T00:00:00Z"}]}"#,
        "heads[0].rev must be text, not a whole number"
    )]
    #[case(r#"{"holdings": [{"node": "a", "subject": "b", "rev": "r", "syncedAt": "2026-01-01T00:00:00Z", "bytes": -1}]}"#, "holdings[0].bytes is -1: it must be 0 or more")]
    #[case(r#"{"holdings": [{"node": "a", "subject": "b", "rev": "r", "syncedAt": "2026-01-01T00:00:00Z", "bytes": 1.5}]}"#, "holdings[0].bytes must be a whole number, 0 or more, not a fractional number")]
    #[case(r#"{"verifications": [{"verifier": "a", "node": "b", "subject": "c", "layer": 1, "outcome": "maybe", "at": "2026-01-01T00:00:00Z"}]}"#, "verifications[0].outcome is \"maybe\": use \"pass\", \"fail\" or \"unreachable\"")]
    #[case(r#"{"verifications": [{"verifier": "a", "node": "b", "subject": "c", "layer": 300, "outcome": "pass", "at": "2026-01-01T00:00:00Z"}]}"#, "verifications[0].layer is 300: a layer is 0, 1 or 3")]
    #[case(r#"{"acks": [{"uri": "at://did:plc:a/x/y", "value": {"policy": {"uri": "u"}, "accepted": true, "createdAt": "t"}}]}"#, "acks[0].value.policy.cid is missing: a strongRef needs uri and cid")]
    #[case(r#"{"acks": [{"uri": "at://did:plc:a/x/y", "value": {"policy": {"uri": "u", "cid": "c"}, "accepted": "yes", "createdAt": "t"}}]}"#, "acks[0].value.accepted must be true or false, not text")]
    #[case(r#"{"acks": [{"uri": "u", "value": {"$type": null, "policy": {"uri": "u", "cid": "c"}, "accepted": true, "createdAt": "t"}}]}"#, "acks[0].value.$type must be text, not null")]
    #[case(r#"{"acks": [{"uri": "u", "value": {"policy": {"uri": "u", "cid": "c"}, "accepted": true, "createdAt": "t", "createdAt": "t"}}]}"#, "the key \"createdAt\" appears twice in acks[0].value")]
    fn an_observations_file_that_is_not_the_documented_object_is_refused_in_words(
        #[case] text: &str,
        #[case] expected: &str,
    ) {
        let message = refusal(text);
        assert!(message.contains(expected), "{message}");
        for internal in [
            "`",
            "struct",
            "invalid type",
            "expected a",
            "Observations",
            "u64",
            "u8",
        ] {
            assert!(!message.contains(internal), "{internal} in {message}");
        }
    }
}
