//! Record proofs: the answer to `com.atproto.sync.getRecord` is a CAR with the
//! signed commit, the tree nodes on the path to one key, and the record (or no
//! record: then the path proves it is absent). Verifying it turns a record read
//! from the network into a record the account's key vouches for.

use std::collections::HashMap;

use cid::Cid;

use super::car::{CarError, CarReader};
use super::commit::{Commit, CommitError};
use super::mst::{self, BlockSource, MstError};
use crate::crypto::{PublicKey, SignatureError};

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error(transparent)]
    Car(#[from] CarError),
    #[error("the proof names no commit")]
    NoRoot,
    #[error("the proof lacks block {0}")]
    MissingBlock(String),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("the proof's commit is for {found}, not {expected}")]
    WrongDid { expected: String, found: String },
    #[error("the proof's signature is invalid: {0}")]
    Signature(#[from] SignatureError),
    #[error("the proof's tree is invalid: {0}")]
    Mst(#[from] MstError),
    #[error("the record is not valid DAG-CBOR: {0}")]
    Record(String),
}

/// A record (or its absence) proven by the account's signed commit.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedRecord {
    pub did: String,
    pub collection: String,
    pub rkey: String,
    pub commit: Cid,
    pub rev: String,
    /// `None`: the signed tree proves there is no such record.
    pub cid: Option<Cid>,
    pub value: Option<serde_json::Value>,
}

/// Verifies a `getRecord` CAR for `collection/rkey` of `did`, signed by `key`.
pub fn verify_record(
    car: &[u8],
    did: &str,
    key: &PublicKey,
    collection: &str,
    rkey: &str,
) -> Result<VerifiedRecord, ProofError> {
    let mut reader = CarReader::new(car)?;
    let root = *reader.roots().first().ok_or(ProofError::NoRoot)?;
    let mut blocks: HashMap<Cid, Vec<u8>> = HashMap::new();
    while let Some((cid, data)) = reader.next_block()? {
        blocks.insert(cid, data.to_vec());
    }
    let get = |cid: &Cid| {
        blocks
            .get(cid)
            .ok_or_else(|| ProofError::MissingBlock(cid.to_string()))
    };
    let commit = Commit::decode(get(&root)?)?;
    if commit.did != did {
        return Err(ProofError::WrongDid {
            expected: did.to_string(),
            found: commit.did,
        });
    }
    commit.verify_signature(key)?;
    let key_bytes = format!("{collection}/{rkey}").into_bytes();
    let mut src = blocks.clone();
    let cid = find_key(&mut src, commit.data, &key_bytes)
        .map_err(|e| match e {
            MstError::MissingBlock(c) => ProofError::MissingBlock(c),
            other => ProofError::Mst(other),
        })?
        .value;
    let value = match &cid {
        Some(c) => {
            Some(super::record::to_json(get(c)?).map_err(|e| ProofError::Record(e.to_string()))?)
        }
        None => None,
    };
    Ok(VerifiedRecord {
        did: did.to_string(),
        collection: collection.to_string(),
        rkey: rkey.to_string(),
        commit: root,
        rev: commit.rev,
        cid,
        value,
    })
}

/// The way to one key: the tree nodes visited from the root, and the key's
/// value (`None` when the path proves there is no such key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPath {
    pub nodes: Vec<Cid>,
    pub value: Option<Cid>,
}

/// Follows the path to `key` from `root`, checking each node on the way. An absent key's path
/// stops at the key's own layer: a key of that height cannot be lower in the tree, so that is
/// all a verifier needs.
pub fn find_key(src: &mut impl BlockSource, root: Cid, key: &[u8]) -> Result<KeyPath, MstError> {
    walk_to_key(src, root, key, false)
}

/// The path a proof carries for `key`, as the reference implementation builds and checks it:
/// like [`find_key`], but for an absent key the walk goes on down through the subtree in the
/// gap where the key would be, to the bottom of the tree (its reader looks the key up layer by
/// layer and needs those nodes).
pub fn covering_path(
    src: &mut impl BlockSource,
    root: Cid,
    key: &[u8],
) -> Result<KeyPath, MstError> {
    walk_to_key(src, root, key, true)
}

fn walk_to_key(
    src: &mut impl BlockSource,
    root: Cid,
    key: &[u8],
    covering: bool,
) -> Result<KeyPath, MstError> {
    let height = mst::key_height(key);
    let mut path = KeyPath {
        nodes: Vec::new(),
        value: None,
    };
    let mut cid = root;
    let mut layer: Option<u32> = None;
    for _ in 0..=mst::MAX_LAYER + 1 {
        let bytes = src
            .get_block(&cid)?
            .ok_or_else(|| MstError::MissingBlock(cid.to_string()))?;
        path.nodes.push(cid);
        let node = mst::decode_node(&cid, &bytes)?;
        let this = match (layer, node.entries.first()) {
            (Some(l), _) => l,
            (None, Some(first)) => mst::key_height(&first.key),
            (None, None) => return Ok(path), // the empty tree
        };
        let mut prev: Option<&[u8]> = None;
        for e in &node.entries {
            let h = mst::key_height(&e.key);
            if h != this {
                return Err(MstError::WrongHeight {
                    key: String::from_utf8_lossy(&e.key).into_owned(),
                    height: h,
                    layer: this,
                });
            }
            if let Some(p) = prev.filter(|p| *p >= e.key.as_slice()) {
                return Err(MstError::KeyOrder {
                    key: String::from_utf8_lossy(&e.key).into_owned(),
                    prev: String::from_utf8_lossy(p).into_owned(),
                });
            }
            prev = Some(&e.key);
        }
        if height == this {
            path.value = node.entries.iter().find(|e| e.key == key).map(|e| e.value);
            if path.value.is_some() || !covering {
                return Ok(path);
            }
        } else if height > this && !covering {
            // A key of that height would sit at or above this layer: it is not here.
            return Ok(path);
        }
        // Descend into the gap where the key would be.
        let idx = node.entries.partition_point(|e| e.key.as_slice() < key);
        let next = if idx == 0 {
            node.left
        } else {
            node.entries[idx - 1].right
        };
        match next {
            Some(n) if this > 0 => {
                cid = n;
                layer = Some(this - 1);
            }
            _ => return Ok(path),
        }
    }
    Err(MstError::TooDeep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SigningKey;
    use crate::repo::build::RepoBuilder;
    use crate::repo::car::CarWriter;
    use crate::repo::tid;

    /// The proof CAR a PDS would send: commit + path nodes + record.
    fn proof_car(built: &crate::repo::build::BuiltRepo, key: &str) -> Vec<u8> {
        let mut blocks: HashMap<Cid, Vec<u8>> = built.blocks.iter().cloned().collect();
        let path = find_key(&mut blocks, built.data, key.as_bytes()).unwrap();
        let mut w = CarWriter::new(Vec::new(), vec![built.commit_cid]).unwrap();
        w.write_block(&built.commit_cid, &built.commit_bytes)
            .unwrap();
        for c in path.nodes.iter().chain(path.value.iter()) {
            w.write_block(c, &blocks[c]).unwrap();
        }
        w.finish().unwrap()
    }

    fn repo() -> (RepoBuilder, crate::repo::build::BuiltRepo) {
        let mut b = RepoBuilder::new("did:plc:proof", SigningKey::generate_k256());
        for i in 0..300 {
            b.put_json(
                "app.bsky.feed.post",
                &format!("p{i:04}"),
                &serde_json::json!({"text": i}),
            );
        }
        let built = b.build(&tid::now(0));
        (b, built)
    }

    #[test]
    fn proves_presence_and_absence() {
        let (b, built) = repo();
        let key = b.key.public_key();
        let car = proof_car(&built, "app.bsky.feed.post/p0123");
        let found =
            verify_record(&car, "did:plc:proof", &key, "app.bsky.feed.post", "p0123").unwrap();
        assert_eq!(found.value.unwrap()["text"], 123);
        let car = proof_car(&built, "app.bsky.feed.post/zzzz");
        let absent =
            verify_record(&car, "did:plc:proof", &key, "app.bsky.feed.post", "zzzz").unwrap();
        assert_eq!(absent.cid, None);
    }

    #[test]
    fn refuses_other_signers_and_incomplete_paths() {
        let (_, built) = repo();
        let car = proof_car(&built, "app.bsky.feed.post/p0007");
        let other = SigningKey::generate_k256().public_key();
        assert!(matches!(
            verify_record(&car, "did:plc:proof", &other, "app.bsky.feed.post", "p0007"),
            Err(ProofError::Signature(_))
        ));
        // A proof for one key does not carry the path to a distant one.
        let (b, built) = repo();
        let car = proof_car(&built, "app.bsky.feed.post/p0007");
        let key = b.key.public_key();
        let r = verify_record(&car, "did:plc:proof", &key, "app.bsky.feed.post", "p0290");
        assert!(matches!(r, Err(ProofError::MissingBlock(_))), "{r:?}");
    }

    #[test]
    fn covering_paths_of_absent_keys_reach_the_bottom_of_the_gap() {
        let (b, built) = repo();
        let key = b.key.public_key();
        let mut blocks: HashMap<Cid, Vec<u8>> = built.blocks.iter().cloned().collect();
        let mut heights = [0usize; 3];
        for i in 0..2000 {
            let rkey = format!("q{i:05}");
            let k = format!("app.bsky.feed.post/{rkey}");
            let h = mst::key_height(k.as_bytes()) as usize;
            if h == 0 || h >= heights.len() || heights[h] >= 3 {
                continue;
            }
            let short = find_key(&mut blocks, built.data, k.as_bytes()).unwrap();
            let long = covering_path(&mut blocks, built.data, k.as_bytes()).unwrap();
            assert_eq!(long.value, None);
            assert!(long.nodes.starts_with(&short.nodes));
            // The last node of the covering path has no subtree where the key would go.
            let last = long.nodes.last().unwrap();
            let node = mst::decode_node(last, &blocks[last]).unwrap();
            let idx = node
                .entries
                .partition_point(|e| e.key.as_slice() < k.as_bytes());
            let gap = if idx == 0 {
                node.left
            } else {
                node.entries[idx - 1].right
            };
            assert_eq!(gap, None, "{k}");
            // Our verifier accepts the longer proof too.
            let mut w = CarWriter::new(Vec::new(), vec![built.commit_cid]).unwrap();
            w.write_block(&built.commit_cid, &built.commit_bytes)
                .unwrap();
            for c in &long.nodes {
                w.write_block(c, &blocks[c]).unwrap();
            }
            let car = w.finish().unwrap();
            let absent =
                verify_record(&car, "did:plc:proof", &key, "app.bsky.feed.post", &rkey).unwrap();
            assert_eq!(absent.cid, None);
            heights[h] += 1;
        }
        assert_eq!(heights[1], 3, "absent keys of height 1 checked");
    }
}
