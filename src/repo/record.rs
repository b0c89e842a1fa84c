//! Records: DAG-CBOR blocks shown as atproto JSON.
//!
//! The JSON form follows the atproto data model: CID links become
//! `{"$link": "…"}` and byte strings `{"$bytes": "<base64, no padding>"}`.

use base64::Engine;
use ipld_core::ipld::Ipld;
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
#[error("record is not valid DAG-CBOR: {0}")]
pub struct RecordError(String);

/// Decodes a record block to its JSON form.
pub fn to_json(bytes: &[u8]) -> Result<Value, RecordError> {
    let ipld: Ipld =
        serde_ipld_dagcbor::from_slice(bytes).map_err(|e| RecordError(super::cbor_words(&e)))?;
    Ok(ipld_to_json(ipld))
}

pub fn ipld_to_json(ipld: Ipld) -> Value {
    match ipld {
        Ipld::Null => Value::Null,
        Ipld::Bool(b) => Value::Bool(b),
        Ipld::Integer(i) => i64::try_from(i)
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(i.to_string())),
        Ipld::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Ipld::String(s) => Value::String(s),
        Ipld::Bytes(b) => {
            let mut m = Map::new();
            m.insert(
                "$bytes".into(),
                Value::String(base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)),
            );
            Value::Object(m)
        }
        Ipld::List(items) => Value::Array(items.into_iter().map(ipld_to_json).collect()),
        Ipld::Map(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, ipld_to_json(v))).collect())
        }
        Ipld::Link(cid) => {
            let mut m = Map::new();
            m.insert("$link".into(), Value::String(cid.to_string()));
            Value::Object(m)
        }
    }
}

/// Collects every blob CID a record references (`{"$type":"blob","ref":{"$link":…}}`).
pub fn blob_refs(value: &Value, out: &mut Vec<String>) {
    let mut typed = Vec::new();
    typed_blob_refs(value, &mut typed);
    out.extend(typed.into_iter().map(|(cid, _)| cid));
}

/// `"$type"` (text of 5) followed by `"blob"` (text of 4), as DAG-CBOR writes a blob's type.
const BLOB_MARKER: &[u8] = b"\x65$type\x64blob";

/// The blobs a record's DAG-CBOR bytes name, with their declared types. Only records whose
/// bytes hold a blob's `"$type"` are decoded: most records (a post without an image, a like, a
/// follow) are passed over by one byte search.
pub fn blobs_named_in(bytes: &[u8]) -> Vec<(String, Option<String>)> {
    if !bytes.windows(BLOB_MARKER.len()).any(|w| w == BLOB_MARKER) {
        return Vec::new();
    }
    let Ok(value) = to_json(bytes) else {
        return Vec::new();
    };
    let mut refs = Vec::new();
    typed_blob_refs(&value, &mut refs);
    refs
}

/// Collects every blob a record references, with the type (`mimeType`) the reference declares.
pub fn typed_blob_refs(value: &Value, out: &mut Vec<(String, Option<String>)>) {
    match value {
        Value::Object(map) => {
            if map.get("$type").and_then(Value::as_str) == Some("blob") {
                if let Some(link) = map
                    .get("ref")
                    .and_then(|r| r.get("$link"))
                    .and_then(Value::as_str)
                {
                    let mime = map.get("mimeType").and_then(Value::as_str);
                    out.push((link.to_string(), mime.map(str::to_string)));
                }
            }
            for v in map.values() {
                typed_blob_refs(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| typed_blob_refs(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_model_fixtures_convert_to_their_json() {
        let Some(dir) = crate::testdata::interop_dir() else {
            return;
        };
        let text =
            std::fs::read_to_string(dir.join("data-model/data-model-fixtures.json")).unwrap();
        let fixtures: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert!(!fixtures.is_empty());
        for f in fixtures {
            let cbor = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(f["cbor_base64"].as_str().unwrap().trim_end_matches('='))
                .unwrap();
            assert_eq!(
                crate::repo::cid_for_cbor(&cbor).to_string(),
                f["cid"].as_str().unwrap()
            );
            assert_eq!(to_json(&cbor).unwrap(), f["json"], "fixture {}", f["cid"]);
        }
    }
}
