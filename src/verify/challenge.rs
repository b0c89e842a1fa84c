//! Record challenges (DESIGN §3): proof of possession through the PDSes alone, for a node that
//! cannot be reached directly. The verifier publishes an `org.p2pds.challenge` naming blocks
//! and a fresh nonce; the target answers in its own repo with
//! `sha256(nonce ‖ block bytes…)` before the deadline; the verifier, holding the same blocks,
//! computes the same digest. This file holds the pure parts.

use cid::Cid;
use rand::rngs::OsRng;
use rand::RngCore;
use rusqlite::Connection;
use sha2::{Digest, Sha256};

use crate::export;
use crate::store::StoreError;

/// Bytes of entropy in a nonce (hex-encoded: 48 characters).
const NONCE_BYTES: usize = 24;

/// A fresh nonce from the operating system's random source.
pub fn nonce() -> String {
    let mut bytes = [0u8; NONCE_BYTES];
    OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase hex SHA-256 of the nonce's UTF-8 bytes, then each block's bytes in order.
pub fn digest<'a>(nonce: &str, blocks: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    h.update(nonce.as_bytes());
    for b in blocks {
        h.update(b);
    }
    hex(&h.finalize())
}

/// The digest over blocks of a held repo, or the first block this store lacks.
pub fn digest_from_store(
    conn: &Connection,
    repo_id: i64,
    nonce: &str,
    cids: &[Cid],
) -> Result<Result<String, Cid>, StoreError> {
    let mut blocks = Vec::with_capacity(cids.len());
    for cid in cids {
        match export::get_block(conn, repo_id, cid)? {
            Some(b) => blocks.push(b),
            None => return Ok(Err(*cid)),
        }
    }
    Ok(Ok(digest(nonce, blocks.iter().map(Vec::as_slice))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_sha256_of_nonce_then_blocks() {
        // sha256("abc") split across the nonce and two blocks.
        assert_eq!(
            digest("a", [b"b".as_slice(), b"c".as_slice()]),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(
            digest("a", [b"c".as_slice(), b"b".as_slice()]),
            digest("a", [b"b".as_slice(), b"c".as_slice()])
        );
    }

    #[test]
    fn nonces_are_long_fresh_and_hex() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 48);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
