//! A quick reader for the one encoding nearly every tree node has: canonical DAG-CBOR
//! `{"e": [{"k", "p", "t", "v"}, …], "l"}`, every length in its shortest form, every link a
//! CIDv1 of SHA-256 (DAG-CBOR or raw). Anything else (another field order, an extra field, a
//! longer form of a length, another kind of CID, bytes left over) gives `None`, and the
//! general decoder reads the node and gives its answer or its error. So this reader never
//! accepts what the general one refuses and never reads a node differently: it only reads
//! the common case without the general decoder's cost (it is most of the work of checking a
//! commit from an event stream).

use cid::Cid;
use multihash::Multihash;

use super::{EntryData, NodeData};

/// Multihash code of SHA-256.
const SHA2_256: u64 = 0x12;
/// The CID codecs tree links use: DAG-CBOR (nodes) and raw.
const DAG_CBOR: u8 = 0x71;
const RAW: u8 = 0x55;
/// CBOR major types.
const UINT: u8 = 0;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
/// `null`.
const NULL: u8 = 0xf6;
/// Tag 42 (a CID), as its two header bytes.
const CID_TAG: [u8; 2] = [0xd8, 0x2a];

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// A head of `major` type, and its argument in the shortest form.
    fn head(&mut self, major: u8) -> Option<u64> {
        let first = *self.take(1)?.first()?;
        if first >> 5 != major {
            return None;
        }
        let (value, least) = match first & 0x1f {
            small @ 0..=23 => return Some(u64::from(small)),
            24 => (u64::from(self.take(1)?[0]), 24),
            25 => (
                u64::from(u16::from_be_bytes(self.take(2)?.try_into().ok()?)),
                0x100,
            ),
            26 => (
                u64::from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)),
                0x1_0000,
            ),
            27 => (
                u64::from_be_bytes(self.take(8)?.try_into().ok()?),
                0x1_0000_0000,
            ),
            _ => return None,
        };
        (value >= least).then_some(value)
    }

    fn len(&mut self, major: u8) -> Option<usize> {
        usize::try_from(self.head(major)?).ok()
    }

    /// The text key `name`, exactly.
    fn key(&mut self, name: &[u8]) -> Option<()> {
        let n = self.len(TEXT)?;
        (self.take(n)? == name).then_some(())
    }

    fn cid(&mut self) -> Option<Cid> {
        if self.take(2)? != CID_TAG {
            return None;
        }
        let n = self.len(BYTES)?;
        match self.take(n)? {
            [0x00, 0x01, codec @ (DAG_CBOR | RAW), 0x12, 0x20, digest @ ..]
                if digest.len() == 32 =>
            {
                let hash = Multihash::<64>::wrap(SHA2_256, digest).ok()?;
                Some(Cid::new_v1(u64::from(*codec), hash))
            }
            _ => None,
        }
    }

    fn cid_or_null(&mut self) -> Option<Option<Cid>> {
        if self.peek()? == NULL {
            self.at += 1;
            return Some(None);
        }
        self.cid().map(Some)
    }

    fn entry(&mut self) -> Option<EntryData> {
        if self.len(MAP)? != 4 {
            return None;
        }
        self.key(b"k")?;
        let n = self.len(BYTES)?;
        let k = self.take(n)?.to_vec();
        self.key(b"p")?;
        let p = self.head(UINT)?;
        self.key(b"t")?;
        let t = self.cid_or_null()?;
        self.key(b"v")?;
        let v = self.cid()?;
        Some(EntryData { k, p, t, v })
    }
}

/// The node in `bytes` when it has the common encoding; `None` lets the general decoder
/// decide.
pub(super) fn read(bytes: &[u8]) -> Option<NodeData> {
    let mut r = Reader { bytes, at: 0 };
    if r.len(MAP)? != 2 {
        return None;
    }
    r.key(b"e")?;
    let n = r.len(ARRAY)?;
    // Each entry takes more than 40 bytes: a count past that is refused by the general
    // decoder, not allocated here.
    let mut e = Vec::with_capacity(n.min(bytes.len() / 40));
    for _ in 0..n {
        e.push(r.entry()?);
    }
    r.key(b"l")?;
    let l = r.cid_or_null()?;
    (r.at == bytes.len()).then_some(NodeData { e, l })
}

#[cfg(test)]
mod tests {
    use super::super::{build, NodeData};
    use super::*;
    use rand::{Rng, SeedableRng};

    fn general(bytes: &[u8]) -> Option<NodeData> {
        serde_ipld_dagcbor::from_slice(bytes).ok()
    }

    fn nodes() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for n in [0usize, 1, 7, 1000] {
            let entries: Vec<(Vec<u8>, Cid)> = (0..n)
                .map(|i| {
                    let key = format!("app.bsky.feed.post/3k{i:011}").into_bytes();
                    (
                        key,
                        crate::repo::cid_for_cbor(&[0xa1, 0x61, 0x61, i as u8 % 24]),
                    )
                })
                .collect();
            build(&entries, &mut |_, bytes| out.push(bytes));
        }
        out
    }

    #[test]
    fn reads_every_node_the_builder_writes_as_the_general_decoder_does() {
        let nodes = nodes();
        assert!(nodes.len() > 100);
        for bytes in &nodes {
            let quick = read(bytes).expect("a canonical node has the common encoding");
            assert_eq!(Some(quick), general(bytes));
        }
    }

    #[test]
    fn never_accepts_what_the_general_decoder_refuses_nor_reads_it_otherwise() {
        let nodes = nodes();
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let (mut quick_read, mut both_refused) = (0, 0);
        for round in 0..40_000 {
            let mut bytes = nodes[rng.gen_range(0..nodes.len())].clone();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..bytes.len().max(1));
                match round % 4 {
                    0 | 1 if !bytes.is_empty() => bytes[at] = rng.gen(),
                    2 => bytes.insert(at.min(bytes.len()), rng.gen()),
                    _ => bytes.truncate(at),
                }
            }
            match read(&bytes) {
                Some(quick) => {
                    assert_eq!(Some(quick), general(&bytes), "round {round}: {bytes:02x?}");
                    quick_read += 1;
                }
                None => both_refused += u32::from(general(&bytes).is_none()),
            }
        }
        // The mutations reach both sides: some still read quickly, many are refused.
        assert!(
            quick_read > 1_000 && both_refused > 1_000,
            "{quick_read} {both_refused}"
        );
    }

    #[test]
    fn leaves_other_encodings_to_the_general_decoder() {
        let cid = crate::repo::cid_for_cbor(b"\xa0");
        // A longer form of a length, an extra field, and another hash: all valid DAG-CBOR or
        // not, none is the common encoding.
        let long_len = [0xa2, 0x61, b'e', 0x98, 0x00, 0x61, b'l', 0xf6];
        assert!(read(&long_len).is_none());
        let extra =
            serde_ipld_dagcbor::to_vec(&serde_json::json!({"e": [], "l": null, "x": 1})).unwrap();
        assert!(read(&extra).is_none());
        let v0 = Cid::new_v0(*cid.hash()).unwrap();
        let with_v0 = serde_ipld_dagcbor::to_vec(&NodeData {
            e: vec![],
            l: Some(v0),
        })
        .unwrap();
        assert!(read(&with_v0).is_none());
        assert_eq!(general(&with_v0).map(|n| n.l), Some(Some(v0)));
    }
}
