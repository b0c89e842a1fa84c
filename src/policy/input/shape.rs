//! The observations file's shape, to say where and why serde refused one.
//!
//! [`SHAPE`] mirrors the serde types of [`crate::policy::observations`] field for field (a test
//! checks that the walkthrough's file and optional nulls pass both); [`explain`] walks parsed
//! JSON against it and returns the first thing that is not the documented object, with its
//! JSON path. It runs only after serde refused a file (or took a list for the object), so a
//! large file that is fine is never built into a JSON tree.

use serde_json::{Map, Value};

use super::InputError;
use crate::policy::observations::Outcome;
use crate::policy::time::Timestamp;

/// What a field of the observations file holds.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Time,
    /// A whole number, 0 or more.
    Count,
    /// A verification layer: a whole number from 0 to 255 (the policy says which count).
    Layer,
    Outcome,
    Bool,
    Object(&'static Shape),
    List(&'static Shape),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Presence {
    Required,
    /// May be left out or null.
    Optional,
    /// May be left out, not null.
    Defaulted,
}

struct Field {
    name: &'static str,
    kind: Kind,
    presence: Presence,
}

/// An object of the observations file: what it is called in a message, its fields, and
/// whether other fields are refused (`closed`) or ignored.
struct Shape {
    what: &'static str,
    fields: &'static [Field],
    closed: bool,
}

const fn field(name: &'static str, kind: Kind, presence: Presence) -> Field {
    Field {
        name,
        kind,
        presence,
    }
}

use Kind::{Bool, Count, Layer, List, Object, Text, Time};
use Presence::{Defaulted, Optional, Required};

const STRONG_REF: Shape = Shape {
    what: "a strongRef",
    fields: &[field("uri", Text, Required), field("cid", Text, Required)],
    closed: false,
};
const ACK_RECORD: Shape = Shape {
    what: "an ack record",
    fields: &[
        field("$type", Text, Defaulted),
        field("policy", Object(&STRONG_REF), Required),
        field("accepted", Bool, Required),
        field("reason", Text, Optional),
        field("createdAt", Text, Required),
    ],
    closed: false,
};
const ACK: Shape = Shape {
    what: "an ack",
    fields: &[
        field("uri", Text, Required),
        field("cid", Text, Optional),
        field("value", Object(&ACK_RECORD), Required),
    ],
    closed: true,
};
const HEARTBEAT: Shape = Shape {
    what: "a heartbeat",
    fields: &[field("node", Text, Required), field("at", Time, Required)],
    closed: true,
};
const HEAD: Shape = Shape {
    what: "a head",
    fields: &[
        field("subject", Text, Required),
        field("rev", Text, Required),
        field("at", Time, Required),
    ],
    closed: true,
};
const HOLDING: Shape = Shape {
    what: "a holding",
    fields: &[
        field("node", Text, Required),
        field("subject", Text, Required),
        field("rev", Text, Required),
        field("data", Text, Optional),
        field("syncedAt", Time, Required),
        field("bytes", Count, Optional),
    ],
    closed: true,
};
const VERIFICATION: Shape = Shape {
    what: "a verification result",
    fields: &[
        field("verifier", Text, Required),
        field("node", Text, Required),
        field("subject", Text, Required),
        field("layer", Layer, Required),
        field("outcome", Kind::Outcome, Required),
        field("at", Time, Required),
    ],
    closed: true,
};
/// The observations file (docs/policy.md, "The observations file"); mirrors the serde types of
/// [`super::observations`] (a test checks that both refuse the same files).
const SHAPE: Shape = Shape {
    what: "the observations file",
    fields: &[
        field("acks", List(&ACK), Defaulted),
        field("heartbeats", List(&HEARTBEAT), Defaulted),
        field("heads", List(&HEAD), Defaulted),
        field("holdings", List(&HOLDING), Defaulted),
        field("verifications", List(&VERIFICATION), Defaulted),
    ],
    closed: true,
};

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(n) if n.is_i64() || n.is_u64() => "a whole number",
        Value::Number(_) => "a fractional number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Text => "text",
        Time => "a date-time (RFC 3339 text with a time zone)",
        Count => "a whole number, 0 or more",
        Layer => "a layer number (0, 1 or 3)",
        Kind::Outcome => "text: \"pass\", \"fail\" or \"unreachable\"",
        Bool => "true or false",
        Object(_) => "an object",
        List(_) => "a list",
    }
}

fn names(fields: &[&str]) -> String {
    match fields {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The first thing in `v` that is not the documented observations file, in words.
pub(super) fn explain(v: &Value) -> Option<InputError> {
    match v {
        Value::Object(map) => object(map, &SHAPE, ""),
        other => {
            let lists: Vec<&str> = SHAPE.fields.iter().map(|f| f.name).collect();
            Some(InputError::new(
                "",
                format!(
                    "the observations file must be an object with the lists {} (each may be left out), not {}",
                    names(&lists),
                    kind_of(other)
                ),
            ))
        }
    }
}

fn object(map: &Map<String, Value>, shape: &Shape, path: &str) -> Option<InputError> {
    let known: Vec<&str> = shape.fields.iter().map(|f| f.name).collect();
    if shape.closed {
        if let Some(key) = map.keys().find(|k| !known.contains(&k.as_str())) {
            let p = join(path, key);
            let hint = known
                .iter()
                .map(|k| (common_prefix(key, k), *k))
                .filter(|(n, _)| *n >= 3)
                .max()
                .map(|(_, k)| format!(" (did you mean {}?)", join(path, k)))
                .unwrap_or_default();
            return Some(InputError::new(
                &p,
                format!(
                    "{p} is not a field of {}{hint}: its fields are {}",
                    shape.what,
                    names(&known)
                ),
            ));
        }
    }
    for f in shape.fields {
        let p = join(path, f.name);
        match (map.get(f.name), f.presence) {
            (None, Presence::Required) => {
                let required: Vec<&str> = shape
                    .fields
                    .iter()
                    .filter(|f| f.presence == Presence::Required)
                    .map(|f| f.name)
                    .collect();
                return Some(InputError::new(
                    &p,
                    format!("{p} is missing: {} needs {}", shape.what, names(&required)),
                ));
            }
            (None, _) | (Some(Value::Null), Presence::Optional) => {}
            (Some(v), _) => {
                if let Some(e) = value(v, f.kind, &p) {
                    return Some(e);
                }
            }
        }
    }
    None
}

fn value(v: &Value, kind: Kind, path: &str) -> Option<InputError> {
    let problem = |message: String| Some(InputError::new(path, message));
    match (kind, v) {
        (Text, Value::String(_)) | (Bool, Value::Bool(_)) => None,
        (Time, Value::String(s)) => match Timestamp::parse(s) {
            Ok(_) => None,
            Err(e) => problem(format!("{path}: {e}")),
        },
        (Count, Value::Number(n)) if n.is_u64() => None,
        (Count, Value::Number(n)) if n.is_i64() => {
            problem(format!("{path} is {n}: it must be 0 or more"))
        }
        (Layer, Value::Number(n)) if n.as_u64().is_some_and(|l| l <= 255) => None,
        (Layer, Value::Number(n)) if n.is_u64() || n.is_i64() => {
            problem(format!("{path} is {n}: a layer is 0, 1 or 3"))
        }
        (Kind::Outcome, Value::String(s)) => match Outcome::parse(s) {
            Some(_) => None,
            None => problem(format!(
                "{path} is {s:?}: use \"pass\", \"fail\" or \"unreachable\""
            )),
        },
        (Object(shape), Value::Object(map)) => object(map, shape, path),
        (List(shape), Value::Array(items)) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| value(item, Object(shape), &format!("{path}[{i}]"))),
        (Object(shape), other) => problem(format!(
            "{path} must be an object ({}), not {}",
            shape.what,
            kind_of(other)
        )),
        (kind, other) => problem(format!(
            "{path} must be {}, not {}",
            expected(kind),
            kind_of(other)
        )),
    }
}

/// Length of the common prefix, ignoring case, for "did you mean" hints.
fn common_prefix(a: &str, b: &str) -> usize {
    a.chars()
        .zip(b.chars())
        .take_while(|(x, y)| x.eq_ignore_ascii_case(y))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::observations::Observations;

    #[test]
    fn the_shape_accepts_what_serde_accepts() {
        // A shape stricter than serde would refuse good files with a wrong message; the
        // refusals (tested in `input`) are serde's too, or a list read as an object.
        let good = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/policy/observations-mutual-aid.json"
        ))
        .unwrap_or_default();
        let value: Value = serde_json::from_str(&good).unwrap_or_default();
        assert!(explain(&value).is_none());
        assert!(super::super::observations(good.as_bytes()).is_ok());
        let optional_nulls = r#"{"acks": [{"uri": "u", "cid": null, "value": {"policy": {"uri": "u", "cid": "c", "extra": 1}, "accepted": true, "reason": null, "createdAt": "t", "extra": 2}}],
            "holdings": [{"node": "a", "subject": "b", "rev": "r", "syncedAt": "2026-01-01T00:00:00Z", "data": null, "bytes": null}]}"#;
        let value: Value = serde_json::from_str(optional_nulls).unwrap_or_default();
        assert!(explain(&value).is_none());
        assert!(serde_json::from_str::<Observations>(optional_nulls).is_ok());
    }
}
