//! Signed commits (repo format v3).
//!
//! A commit is `{did, version: 3, data, rev, prev, sig}`. The signature covers the
//! DAG-CBOR encoding of the same map without `sig`; it is re-encoded here from the
//! decoded fields, so unknown extra fields are kept and signed over too.

use std::collections::BTreeMap;

use cid::Cid;
use ipld_core::ipld::Ipld;

use super::tid;
use crate::crypto::{PublicKey, SignatureError, SigningKey};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommitError {
    #[error("the commit block is not valid DAG-CBOR: {0}")]
    Decode(String),
    #[error("the commit is missing the field '{0}' or it has the wrong type")]
    Field(&'static str),
    #[error("the commit has repo format version {0}; only version 3 is supported")]
    Version(i128),
    #[error("the commit's rev '{0}' is not a valid TID")]
    BadRev(String),
}

/// A decoded commit, with the bytes its signature covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub did: String,
    pub version: u64,
    /// Root of the record tree (MST).
    pub data: Cid,
    pub rev: String,
    pub prev: Option<Cid>,
    pub sig: Vec<u8>,
    unsigned: Vec<u8>,
}

impl Commit {
    pub fn decode(bytes: &[u8]) -> Result<Self, CommitError> {
        let ipld: Ipld = serde_ipld_dagcbor::from_slice(bytes)
            .map_err(|e| CommitError::Decode(super::cbor_words(&e)))?;
        let Ipld::Map(mut map) = ipld else {
            return Err(CommitError::Decode("not a map".into()));
        };
        let sig = match map.remove("sig") {
            Some(Ipld::Bytes(b)) => b,
            _ => return Err(CommitError::Field("sig")),
        };
        let did = match map.get("did") {
            Some(Ipld::String(s)) => s.clone(),
            _ => return Err(CommitError::Field("did")),
        };
        let version = match map.get("version") {
            Some(Ipld::Integer(3)) => 3,
            Some(Ipld::Integer(v)) => return Err(CommitError::Version(*v)),
            _ => return Err(CommitError::Field("version")),
        };
        let data = match map.get("data") {
            Some(Ipld::Link(c)) => *c,
            _ => return Err(CommitError::Field("data")),
        };
        let rev = match map.get("rev") {
            Some(Ipld::String(s)) => s.clone(),
            _ => return Err(CommitError::Field("rev")),
        };
        if tid::parse(&rev).is_none() {
            return Err(CommitError::BadRev(rev));
        }
        // v3 commits carry `prev` (usually null); it must be present.
        let prev = match map.get("prev") {
            Some(Ipld::Link(c)) => Some(*c),
            Some(Ipld::Null) => None,
            _ => return Err(CommitError::Field("prev")),
        };
        let unsigned = serde_ipld_dagcbor::to_vec(&Ipld::Map(map))
            .map_err(|_| CommitError::Decode("it could not be encoded again to check".into()))?;
        Ok(Self {
            did,
            version,
            data,
            rev,
            prev,
            sig,
            unsigned,
        })
    }

    /// The bytes the signature covers.
    pub fn unsigned_bytes(&self) -> &[u8] {
        &self.unsigned
    }

    pub fn verify_signature(&self, key: &PublicKey) -> Result<(), SignatureError> {
        key.verify(&self.unsigned, &self.sig)
    }
}

/// Builds and signs a v3 commit; returns its CID and block bytes.
pub fn sign(did: &str, data: Cid, rev: &str, key: &SigningKey) -> (Cid, Vec<u8>) {
    let mut map = BTreeMap::new();
    map.insert("did".to_string(), Ipld::String(did.to_string()));
    map.insert("version".to_string(), Ipld::Integer(3));
    map.insert("data".to_string(), Ipld::Link(data));
    map.insert("rev".to_string(), Ipld::String(rev.to_string()));
    map.insert("prev".to_string(), Ipld::Null);
    let unsigned = serde_ipld_dagcbor::to_vec(&Ipld::Map(map.clone())).unwrap_or_default();
    let sig = key.sign(&unsigned);
    map.insert("sig".to_string(), Ipld::Bytes(sig.to_vec()));
    let bytes = serde_ipld_dagcbor::to_vec(&Ipld::Map(map)).unwrap_or_default();
    (super::cid_for_cbor(&bytes), bytes)
}

/// Re-encodes a commit with another signature: for building hostile test
/// inputs (a forged or malleated signature), never for real data.
pub fn with_signature(bytes: &[u8], sig: &[u8]) -> Result<(Cid, Vec<u8>), CommitError> {
    let ipld: Ipld = serde_ipld_dagcbor::from_slice(bytes)
        .map_err(|e| CommitError::Decode(super::cbor_words(&e)))?;
    let Ipld::Map(mut map) = ipld else {
        return Err(CommitError::Decode("not a map".into()));
    };
    map.insert("sig".to_string(), Ipld::Bytes(sig.to_vec()));
    let bytes = serde_ipld_dagcbor::to_vec(&Ipld::Map(map))
        .map_err(|e| CommitError::Decode(e.to_string()))?;
    Ok((super::cid_for_cbor(&bytes), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_decode_verify() {
        let key = SigningKey::generate_k256();
        let data = crate::repo::cid_for_cbor(b"\xa0");
        let rev = tid::now(0);
        let (_, bytes) = sign("did:plc:abc", data, &rev, &key);
        let commit = Commit::decode(&bytes).unwrap();
        assert_eq!(commit.did, "did:plc:abc");
        assert_eq!(commit.data, data);
        assert_eq!(commit.rev, rev);
        commit.verify_signature(&key.public_key()).unwrap();
        let other = SigningKey::generate_k256();
        assert_eq!(
            commit.verify_signature(&other.public_key()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn encoding_is_canonical_dag_cbor() {
        // DAG-CBOR orders map keys by length, then bytes: did, rev, sig, data, prev, version.
        let key = SigningKey::generate_k256();
        let (_, bytes) = sign(
            "did:plc:abc",
            crate::repo::cid_for_cbor(b"\xa0"),
            &tid::now(0),
            &key,
        );
        let text = String::from_utf8_lossy(&bytes);
        let order: Vec<usize> = ["did", "rev", "sig", "data", "prev", "version"]
            .iter()
            .map(|k| text.find(k).unwrap())
            .collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted);
    }
}
