//! Repository data: CAR files, signed commits, the Merkle Search Tree.
//!
//! Everything here is synchronous and does no network IO: it is fed bytes and
//! either proves them or refuses them. Invariant: no block is handed on before its
//! bytes were hashed against its CID.

pub mod build;
pub mod car;
pub mod commit;
pub mod mst;
pub mod proof;
pub mod record;
pub mod tid;

use cid::Cid;
use sha2::{Digest, Sha256};

/// Multicodec code of DAG-CBOR blocks (records, MST nodes, commits).
pub const DAG_CBOR: u64 = 0x71;
/// Multicodec code of raw blocks (blobs).
pub const RAW: u64 = 0x55;
/// Multihash code of SHA-256.
pub const SHA2_256: u64 = 0x12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockError {
    #[error("block {cid} uses hash function 0x{code:x}; only SHA-256 is accepted")]
    UnsupportedHash { cid: String, code: u64 },
    #[error("block {cid} uses codec 0x{codec:x}; only DAG-CBOR and raw are accepted")]
    UnsupportedCodec { cid: String, codec: u64 },
    #[error("block bytes do not match their CID {cid}: the data was altered or corrupted")]
    HashMismatch { cid: String },
}

/// The CIDv1 of `bytes` under `codec`, hashed with SHA-256.
/// A DAG-CBOR decoding error in words (the decoder's own text is its Rust debug output).
pub fn cbor_words<E>(e: &serde_ipld_dagcbor::DecodeError<E>) -> String {
    use serde_ipld_dagcbor::DecodeError as D;
    let kind = |byte: u8| match byte >> 5 {
        0 | 1 => "a number",
        2 => "bytes",
        3 => "text",
        4 => "a list",
        5 => "a map",
        6 => "a tag",
        _ => "a simple value",
    };
    let expected = |major: u8| kind(major << 5);
    match e {
        D::Msg(m) => serde_words(m),
        D::Read(_) | D::Eof => "it ends too early".into(),
        D::Mismatch { expect_major, byte } => {
            format!(
                "expected {} but found {}",
                expected(*expect_major),
                kind(*byte)
            )
        }
        D::TypeMismatch { name, byte } => format!("expected {name} but found {}", kind(*byte)),
        D::CastOverflow(_) | D::Overflow { .. } => "a number is too large".into(),
        D::RequireBorrowed { name } => format!("a {name} value could not be read"),
        D::RequireLength {
            name,
            expect,
            value,
        } => format!("a {name} has length {value} where {expect} was expected"),
        D::InvalidUtf8(_) => "a text string is not valid UTF-8".into(),
        D::Unsupported { byte } => {
            format!("it uses a CBOR feature DAG-CBOR does not allow (byte 0x{byte:02x})")
        }
        D::DepthLimit => "it is nested too deeply".into(),
        D::TrailingData => "there are extra bytes after the value".into(),
        D::IndefiniteSize => "it uses an indefinite length, which DAG-CBOR does not allow".into(),
    }
}

/// A serde message without the Rust type names it may carry ("expected struct NodeData").
fn serde_words(m: &str) -> String {
    match m.split_once(", expected ") {
        Some((what, rest)) if rest.starts_with("struct ") || rest.starts_with("enum ") => {
            format!("{what}, not the shape expected")
        }
        _ => m.to_string(),
    }
}

pub fn cid_for(codec: u64, bytes: &[u8]) -> Cid {
    let digest = Sha256::digest(bytes);
    // A 32-byte digest always fits the 64-byte multihash.
    let hash = multihash::Multihash::<64>::wrap(SHA2_256, &digest)
        .unwrap_or_else(|_| unreachable_multihash());
    Cid::new_v1(codec, hash)
}

#[cold]
fn unreachable_multihash() -> multihash::Multihash<64> {
    multihash::Multihash::<64>::default()
}

/// The CID of a DAG-CBOR block.
pub fn cid_for_cbor(bytes: &[u8]) -> Cid {
    cid_for(DAG_CBOR, bytes)
}

/// Checks that `bytes` hash to `cid`.
pub fn verify_block(cid: &Cid, bytes: &[u8]) -> Result<(), BlockError> {
    let hash = cid.hash();
    if hash.code() != SHA2_256 || hash.size() != 32 {
        return Err(BlockError::UnsupportedHash {
            cid: cid.to_string(),
            code: hash.code(),
        });
    }
    if cid.codec() != DAG_CBOR && cid.codec() != RAW {
        return Err(BlockError::UnsupportedCodec {
            cid: cid.to_string(),
            codec: cid.codec(),
        });
    }
    if Sha256::digest(bytes)[..] != *hash.digest() {
        return Err(BlockError::HashMismatch {
            cid: cid.to_string(),
        });
    }
    Ok(())
}

/// The 32-byte SHA-256 digest inside a CID (all CIDs accepted here carry one).
pub fn digest_key(cid: &Cid) -> [u8; 32] {
    let mut out = [0u8; 32];
    let digest = cid.hash().digest();
    let n = digest.len().min(32);
    out[..n].copy_from_slice(&digest[..n]);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn decoding_errors_are_said_in_words() {
        for bytes in [
            &[0x60, 0xff][..],
            &[0xa1, 0x61][..],
            &[0x62, 0xff, 0xfe][..],
            &[0x9f][..],
        ] {
            let e = serde_ipld_dagcbor::from_slice::<std::collections::BTreeMap<String, u8>>(bytes)
                .unwrap_err();
            let words = super::cbor_words(&e);
            assert!(
                !words.contains('{') && !words.contains("Utf8Error") && !words.contains("struct "),
                "{words}"
            );
        }
        let e = serde_ipld_dagcbor::from_slice::<Vec<u8>>(&[0xa0]).unwrap_err();
        assert_eq!(super::cbor_words(&e), "expected a list but found a map");
    }

    use super::*;

    #[test]
    fn verify_block_accepts_match_and_refuses_tampering() {
        let cid = cid_for_cbor(b"\xa1atb");
        assert_eq!(verify_block(&cid, b"\xa1atb"), Ok(()));
        assert!(matches!(
            verify_block(&cid, b"\xa1atc"),
            Err(BlockError::HashMismatch { .. })
        ));
    }
}
