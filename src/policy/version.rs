//! Versioning by content: a policy version is its record's CID (CIDv1, dag-cbor, sha-256 of the
//! record's DAG-CBOR encoding), exactly what its author's repo stores and an ack pins.
//!
//! Invariant: the CID depends only on the record's data, not on JSON key order or whitespace
//! (DAG-CBOR sorts map keys canonically).

use cid::multihash::Multihash;
use cid::Cid;
use sha2::{Digest, Sha256};

/// Multicodec code of DAG-CBOR.
const DAG_CBOR: u64 = 0x71;
/// Multihash code of SHA-256.
const SHA2_256: u64 = 0x12;

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("the record cannot be encoded as DAG-CBOR: {0}")]
    Encode(String),
    #[error("the digest does not fit a multihash: {0}")]
    Multihash(String),
}

/// The CID (base32 text, `bafyrei…`) of a record given in its JSON form. Records in this
/// lexicon have no bytes or links, so their JSON and DAG-CBOR forms map one to one.
pub fn record_cid(record: &serde_json::Value) -> Result<String, VersionError> {
    let bytes =
        serde_ipld_dagcbor::to_vec(record).map_err(|e| VersionError::Encode(e.to_string()))?;
    let digest = Sha256::digest(&bytes);
    let hash = Multihash::<64>::wrap(SHA2_256, &digest)
        .map_err(|e| VersionError::Multihash(e.to_string()))?;
    Ok(Cid::new_v1(DAG_CBOR, hash).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cid_ignores_key_order_and_changes_with_content() {
        let a = record_cid(&json!({"a": 1, "bb": "x"}));
        let b = record_cid(
            &serde_json::from_str::<serde_json::Value>(r#"{ "bb": "x",  "a": 1 }"#)
                .unwrap_or_default(),
        );
        let c = record_cid(&json!({"a": 2, "bb": "x"}));
        let (a, b, c) = (
            a.map_err(|e| e.to_string()),
            b.map_err(|e| e.to_string()),
            c.map_err(|e| e.to_string()),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.unwrap_or_default().starts_with("bafyrei"));
    }

    #[test]
    fn cid_matches_the_atproto_data_model_fixture() {
        // From the atproto interop tests (data-model/data-model-fixtures.json, CC0): a record
        // with every plain JSON kind and the CID the reference implementation gives it.
        let record = json!({
            "string": "abc",
            "unicode": "a~\u{f6}\u{f1}\u{a9}\u{2f58}\u{260e}\u{132d3}\u{1f600}\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}\u{200d}\u{1f467}",
            "integer": 123,
            "bool": true,
            "null": null,
            "array": ["abc", "def", "ghi"],
            "object": {"string": "abc", "number": 123, "bool": true, "arr": ["abc", "def", "ghi"]}
        });
        let cid = record_cid(&record).map_err(|e| e.to_string());
        assert_eq!(
            cid.as_deref(),
            Ok("bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq")
        );
    }
}
