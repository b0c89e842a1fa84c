//! The Merkle Search Tree that maps `collection/rkey` keys to record CIDs.
//!
//! A key's height is the number of leading zero bits of SHA-256(key), halved.
//! A node at layer L holds only keys of height L; its subtrees sit at layer L-1.
//! The structure is therefore fully determined by the key set, and this module
//! accepts only that canonical form: keys in strict order, every key at its
//! height's layer, children exactly one layer down, no node without entries
//! except an intermediate one that links down (and the root of an empty repo).
//!
//! [`diff`] walks two trees side by side and skips every subtree they share, so
//! an incremental sync reads only what changed; the new tree is validated on the
//! way. A full walk is a diff against the empty tree.

use cid::Cid;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// More entries than any honest node carries (fanout is about 4).
pub const MAX_ENTRIES: usize = 4096;
/// Keys at layer 48 would need 96 leading zero bits: unreachable honestly.
pub const MAX_LAYER: u32 = 48;
/// The longest key (`collection/rkey`) accepted.
pub const MAX_KEY_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MstError {
    #[error("block {0} of the record tree is missing")]
    MissingBlock(String),
    #[error("tree node {cid} is malformed: {reason}")]
    Decode { cid: String, reason: String },
    #[error("record tree keys are out of order: '{key}' comes after '{prev}'")]
    KeyOrder { key: String, prev: String },
    #[error("key '{key}' has height {height} but sits in a node at layer {layer}")]
    WrongHeight {
        key: String,
        height: u32,
        layer: u32,
    },
    #[error("tree node {0} at layer 0 links to a subtree")]
    SubtreeBelowZero(String),
    #[error("tree node {0} has no entries and no subtree")]
    EmptyNode(String),
    #[error(
        "the tree's root {0} has no entries but links down: the tree is not in canonical form"
    )]
    UntrimmedRoot(String),
    #[error("tree node {0} has too many entries")]
    TooManyEntries(String),
    #[error("the record tree is deeper than {MAX_LAYER} layers")]
    TooDeep,
    #[error("invalid record key '{0}'")]
    BadKey(String),
    #[error("reading tree blocks failed: {0}")]
    Source(String),
}

/// Where tree nodes are read from (memory, the store, or both).
pub trait BlockSource {
    fn get_block(&mut self, cid: &Cid) -> Result<Option<Vec<u8>>, MstError>;
}

impl BlockSource for std::collections::HashMap<Cid, Vec<u8>> {
    fn get_block(&mut self, cid: &Cid) -> Result<Option<Vec<u8>>, MstError> {
        Ok(self.get(cid).cloned())
    }
}

/// The height of a key: leading zero bits of its SHA-256, divided by two.
pub fn key_height(key: &[u8]) -> u32 {
    let digest = Sha256::digest(key);
    let mut zeros = 0;
    for byte in digest {
        if byte == 0 {
            zeros += 8;
        } else {
            zeros += byte.leading_zeros();
            break;
        }
    }
    zeros / 2
}

/// Length of the common prefix of two keys, in bytes.
pub fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Checks the `collection/rkey` shape of a key.
pub fn valid_key(key: &[u8]) -> bool {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return false;
    }
    let mut parts = key.split(|&b| b == b'/');
    let (Some(coll), Some(rkey), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let coll_ok = !coll.is_empty()
        && coll
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    let rkey_ok = !rkey.is_empty()
        && rkey != b"."
        && rkey != b".."
        && rkey
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'~'));
    coll_ok && rkey_ok
}

mod fast;

#[derive(Debug, PartialEq, Eq, Deserialize, Serialize)]
struct NodeData {
    e: Vec<EntryData>,
    l: Option<Cid>,
}

#[derive(Debug, PartialEq, Eq, Deserialize, Serialize)]
struct EntryData {
    #[serde(with = "serde_bytes")]
    k: Vec<u8>,
    p: u64,
    t: Option<Cid>,
    v: Cid,
}

/// A tree node with its keys expanded (prefix compression undone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub left: Option<Cid>,
    pub entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Cid,
    pub right: Option<Cid>,
}

pub fn decode_node(cid: &Cid, bytes: &[u8]) -> Result<Node, MstError> {
    let bad = |reason: String| MstError::Decode {
        cid: cid.to_string(),
        reason,
    };
    let data: NodeData = match fast::read(bytes) {
        Some(data) => data,
        None => serde_ipld_dagcbor::from_slice(bytes).map_err(|e| bad(super::cbor_words(&e)))?,
    };
    if data.e.len() > MAX_ENTRIES {
        return Err(MstError::TooManyEntries(cid.to_string()));
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(data.e.len());
    let mut prev: &[u8] = &[];
    let mut keys: Vec<Vec<u8>> = Vec::with_capacity(data.e.len());
    for (i, e) in data.e.iter().enumerate() {
        let p = e.p as usize;
        if p > prev.len() {
            return Err(bad(format!("entry {i} reuses {p} bytes of a shorter key")));
        }
        if i == 0 && p != 0 {
            return Err(bad("the first entry has a prefix".into()));
        }
        let mut key = Vec::with_capacity(p + e.k.len());
        key.extend_from_slice(&prev[..p]);
        key.extend_from_slice(&e.k);
        keys.push(key);
        prev = keys.last().map(Vec::as_slice).unwrap_or(&[]);
    }
    for (e, key) in data.e.into_iter().zip(keys) {
        entries.push(Entry {
            key,
            value: e.v,
            right: e.t,
        });
    }
    Ok(Node {
        left: data.l,
        entries,
    })
}

/// Encodes a node with prefix compression; returns its CID and bytes.
pub fn encode_node(node: &Node) -> (Cid, Vec<u8>) {
    let mut prev: &[u8] = &[];
    let mut e = Vec::with_capacity(node.entries.len());
    for entry in &node.entries {
        let p = common_prefix_len(prev, &entry.key);
        e.push(EntryData {
            k: entry.key[p..].to_vec(),
            p: p as u64,
            t: entry.right,
            v: entry.value,
        });
        prev = &entry.key;
    }
    let bytes = serde_ipld_dagcbor::to_vec(&NodeData { e, l: node.left }).unwrap_or_default();
    (super::cid_for_cbor(&bytes), bytes)
}

/// A change between two trees, in key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create { key: Vec<u8>, cid: Cid },
    Update { key: Vec<u8>, prev: Cid, cid: Cid },
    Delete { key: Vec<u8>, prev: Cid },
}

enum Item {
    Leaf {
        key: Vec<u8>,
        value: Cid,
    },
    /// `layer` is `None` for a tree's root, whose layer its keys decide.
    Tree {
        cid: Cid,
        layer: Option<u32>,
    },
}

/// An in-order cursor over one tree; subtrees are expanded only on demand.
struct Cursor {
    stack: Vec<Item>,
    /// Validate nodes and key order (the new, untrusted tree).
    validate: bool,
    last_key: Vec<u8>,
    /// A shared subtree just skipped, whose largest key the next new key must follow: found
    /// only when it matters (see [`diff`]).
    bound: Option<Cid>,
    nodes_read: u64,
}

impl Cursor {
    fn new(root: Option<Cid>, validate: bool) -> Self {
        let stack = root
            .map(|cid| vec![Item::Tree { cid, layer: None }])
            .unwrap_or_default();
        Self {
            stack,
            validate,
            last_key: Vec::new(),
            bound: None,
            nodes_read: 0,
        }
    }

    fn load(src: &mut impl BlockSource, cid: &Cid) -> Result<Node, MstError> {
        let bytes = src
            .get_block(cid)?
            .ok_or_else(|| MstError::MissingBlock(cid.to_string()))?;
        decode_node(cid, &bytes)
    }

    /// Replaces the tree on top of the stack with its children.
    fn expand(&mut self, src: &mut impl BlockSource) -> Result<(), MstError> {
        let Some(Item::Tree { cid, layer }) = self.stack.pop() else {
            return Ok(());
        };
        let node = Self::load(src, &cid)?;
        self.nodes_read += 1;
        let is_root = layer.is_none();
        let layer = match (layer, node.entries.first()) {
            (Some(l), _) => l,
            (None, Some(first)) => key_height(&first.key),
            (None, None) => {
                if node.left.is_some() && self.validate {
                    return Err(MstError::UntrimmedRoot(cid.to_string()));
                }
                0
            }
        };
        if self.validate {
            if layer > MAX_LAYER {
                return Err(MstError::TooDeep);
            }
            if node.entries.is_empty() && node.left.is_none() && !is_root {
                return Err(MstError::EmptyNode(cid.to_string()));
            }
            if layer == 0 && (node.left.is_some() || node.entries.iter().any(|e| e.right.is_some()))
            {
                return Err(MstError::SubtreeBelowZero(cid.to_string()));
            }
            for e in &node.entries {
                let height = key_height(&e.key);
                if height != layer {
                    return Err(MstError::WrongHeight {
                        key: String::from_utf8_lossy(&e.key).into_owned(),
                        height,
                        layer,
                    });
                }
            }
        }
        let child = layer.checked_sub(1);
        for e in node.entries.into_iter().rev() {
            if let Some(right) = e.right {
                self.stack.push(Item::Tree {
                    cid: right,
                    layer: child,
                });
            }
            self.stack.push(Item::Leaf {
                key: e.key,
                value: e.value,
            });
        }
        if let Some(left) = node.left {
            // `child` is None only at layer 0, which validation refuses to link from.
            self.stack.push(Item::Tree {
                cid: left,
                layer: Some(child.unwrap_or(0)),
            });
        }
        Ok(())
    }

    /// The next leaf must follow the shared subtree skipped last: its largest key, now.
    fn settle_bound(&mut self, src: &mut impl BlockSource) -> Result<(), MstError> {
        if let Some(cid) = self.bound.take() {
            self.last_key = max_key(src, &cid)?;
        }
        Ok(())
    }

    fn pop_leaf(&mut self) -> Result<Option<(Vec<u8>, Cid)>, MstError> {
        match self.stack.pop() {
            Some(Item::Leaf { key, value }) => {
                if self.validate {
                    if !valid_key(&key) {
                        return Err(MstError::BadKey(String::from_utf8_lossy(&key).into_owned()));
                    }
                    if !self.last_key.is_empty() && key <= self.last_key {
                        return Err(MstError::KeyOrder {
                            key: String::from_utf8_lossy(&key).into_owned(),
                            prev: String::from_utf8_lossy(&self.last_key).into_owned(),
                        });
                    }
                    self.last_key.clone_from(&key);
                }
                Ok(Some((key, value)))
            }
            other => {
                if let Some(item) = other {
                    self.stack.push(item);
                }
                Ok(None)
            }
        }
    }
}

/// The largest key under a (trusted) subtree: follow the rightmost links down.
fn max_key(src: &mut impl BlockSource, root: &Cid) -> Result<Vec<u8>, MstError> {
    let mut cid = *root;
    for _ in 0..=MAX_LAYER + 1 {
        let node = Cursor::load(src, &cid)?;
        match (node.entries.last(), node.left) {
            (Some(last), _) => match last.right {
                Some(right) => cid = right,
                None => return Ok(last.key.clone()),
            },
            (None, Some(left)) => cid = left,
            (None, None) => return Err(MstError::EmptyNode(cid.to_string())),
        }
    }
    Err(MstError::TooDeep)
}

/// Counts of work done by a diff.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiffStats {
    pub old_nodes_read: u64,
    pub new_nodes_read: u64,
    pub shared_subtrees_skipped: u64,
}

/// Compares the trusted tree `old` with the untrusted tree `new`, validating
/// every part of `new` that differs, and reports each change in key order.
pub fn diff<E: From<MstError>>(
    src: &mut impl BlockSource,
    old: Option<Cid>,
    new: Cid,
    mut visit: impl FnMut(Change) -> Result<(), E>,
) -> Result<DiffStats, E> {
    let mut a = Cursor::new(old, false);
    let mut b = Cursor::new(Some(new), true);
    let mut stats = DiffStats::default();
    loop {
        match (a.stack.last(), b.stack.last()) {
            (None, None) => break,
            (Some(Item::Tree { cid: ca, layer: la }), Some(Item::Tree { cid: cb, layer: lb }))
                if ca == cb && la == lb =>
            {
                let cid = *cb;
                a.stack.pop();
                b.stack.pop();
                stats.shared_subtrees_skipped += 1;
                // Keys after the skipped subtree must still follow its largest key. When
                // nothing follows (the roots are the same: maybe the empty tree, which has no
                // largest key), there is nothing to check. The key is looked up only for a
                // new key the old tree lacks: a key both trees have follows the subtree in the
                // old tree, which is trusted, so it follows it in the new one too.
                if !b.stack.is_empty() {
                    b.bound = Some(cid);
                }
            }
            (Some(Item::Tree { layer: la, .. }), Some(Item::Tree { layer: lb, .. })) => {
                // Expand the higher one (a root counts as highest); equal: both.
                let la = la.unwrap_or(u32::MAX);
                let lb = lb.unwrap_or(u32::MAX);
                if la >= lb {
                    a.expand(src)?;
                }
                if lb >= la {
                    b.expand(src)?;
                }
            }
            (Some(Item::Tree { .. }), _) => a.expand(src)?,
            (_, Some(Item::Tree { .. })) => b.expand(src)?,
            (Some(Item::Leaf { key: ka, .. }), Some(Item::Leaf { key: kb, .. })) => {
                match ka.cmp(kb) {
                    std::cmp::Ordering::Less => {
                        if let Some((key, prev)) = a.pop_leaf()? {
                            visit(Change::Delete { key, prev })?;
                        }
                    }
                    std::cmp::Ordering::Greater => {
                        b.settle_bound(src)?;
                        if let Some((key, cid)) = b.pop_leaf()? {
                            visit(Change::Create { key, cid })?;
                        }
                    }
                    std::cmp::Ordering::Equal => {
                        b.bound = None;
                        let old_leaf = a.pop_leaf()?;
                        let new_leaf = b.pop_leaf()?;
                        if let (Some((_, prev)), Some((key, cid))) = (old_leaf, new_leaf) {
                            if prev != cid {
                                visit(Change::Update { key, prev, cid })?;
                            }
                        }
                    }
                }
            }
            (Some(Item::Leaf { .. }), None) => {
                if let Some((key, prev)) = a.pop_leaf()? {
                    visit(Change::Delete { key, prev })?;
                }
            }
            (None, Some(Item::Leaf { .. })) => {
                b.settle_bound(src)?;
                if let Some((key, cid)) = b.pop_leaf()? {
                    visit(Change::Create { key, cid })?;
                }
            }
        }
    }
    stats.old_nodes_read = a.nodes_read;
    stats.new_nodes_read = b.nodes_read;
    Ok(stats)
}

/// Validates the whole tree under `root` and visits every leaf in key order.
pub fn walk<E: From<MstError>>(
    src: &mut impl BlockSource,
    root: Cid,
    mut visit: impl FnMut(&[u8], &Cid) -> Result<(), E>,
) -> Result<DiffStats, E> {
    diff(src, None, root, |change| match change {
        Change::Create { key, cid } => visit(&key, &cid),
        // Nothing else can come out of a diff against the empty tree.
        Change::Update { .. } | Change::Delete { .. } => Ok(()),
    })
}

/// Builds the canonical tree for sorted, unique `(key, value)` pairs; every node
/// block is handed to `emit`. Returns the root CID (an empty node for no keys).
pub fn build(entries: &[(Vec<u8>, Cid)], emit: &mut impl FnMut(Cid, Vec<u8>)) -> Cid {
    let with_heights: Vec<(&[u8], Cid, u32)> = entries
        .iter()
        .map(|(k, v)| (k.as_slice(), *v, key_height(k)))
        .collect();
    let top = with_heights.iter().map(|e| e.2).max().unwrap_or(0);
    match build_layer(&with_heights, top, emit) {
        Some(root) => root,
        None => {
            let (cid, bytes) = encode_node(&Node {
                left: None,
                entries: vec![],
            });
            emit(cid, bytes);
            cid
        }
    }
}

fn build_layer(
    items: &[(&[u8], Cid, u32)],
    layer: u32,
    emit: &mut impl FnMut(Cid, Vec<u8>),
) -> Option<Cid> {
    if items.is_empty() {
        return None;
    }
    let mut node = Node {
        left: None,
        entries: Vec::new(),
    };
    let mut start = 0;
    let mut pending_left = true;
    for (i, item) in items.iter().enumerate() {
        if item.2 == layer {
            let sub = if layer > 0 {
                build_layer(&items[start..i], layer - 1, emit)
            } else {
                None
            };
            if pending_left {
                node.left = sub;
                pending_left = false;
            } else if let Some(last) = node.entries.last_mut() {
                last.right = sub;
            }
            node.entries.push(Entry {
                key: item.0.to_vec(),
                value: item.1,
                right: None,
            });
            start = i + 1;
        }
    }
    let tail = if layer > 0 {
        build_layer(&items[start..], layer - 1, emit)
    } else {
        None
    };
    if pending_left {
        node.left = tail;
    } else if let Some(last) = node.entries.last_mut() {
        last.right = tail;
    }
    let (cid, bytes) = encode_node(&node);
    emit(cid, bytes);
    Some(cid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn leaf() -> Cid {
        crate::repo::cid_for_cbor(b"\xa1atb")
    }

    fn tree(keys: &[&str]) -> (Cid, HashMap<Cid, Vec<u8>>) {
        let mut sorted: Vec<(Vec<u8>, Cid)> = keys
            .iter()
            .map(|k| (k.as_bytes().to_vec(), leaf()))
            .collect();
        sorted.sort();
        let mut blocks = HashMap::new();
        let root = build(&sorted, &mut |cid, bytes| {
            blocks.insert(cid, bytes);
        });
        (root, blocks)
    }

    fn changes(old: Option<Cid>, new: Cid, blocks: &mut HashMap<Cid, Vec<u8>>) -> Vec<Change> {
        let mut out = Vec::new();
        diff(blocks, old, new, |c| {
            out.push(c);
            Ok::<(), MstError>(())
        })
        .unwrap();
        out
    }

    fn fixtures() -> Option<std::path::PathBuf> {
        crate::testdata::interop_dir()
    }

    #[test]
    fn key_heights_match_interop_fixtures() {
        let Some(dir) = fixtures() else { return };
        let text = std::fs::read_to_string(dir.join("mst/key_heights.json")).unwrap();
        let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert!(cases.len() > 5);
        for c in cases {
            let key = c["key"].as_str().unwrap();
            assert_eq!(
                u64::from(key_height(key.as_bytes())),
                c["height"].as_u64().unwrap(),
                "key {key}"
            );
        }
    }

    #[test]
    fn common_prefix_matches_interop_fixtures() {
        let Some(dir) = fixtures() else { return };
        let text = std::fs::read_to_string(dir.join("mst/common_prefix.json")).unwrap();
        let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert!(cases.len() > 5);
        for c in cases {
            let (l, r) = (c["left"].as_str().unwrap(), c["right"].as_str().unwrap());
            assert_eq!(
                common_prefix_len(l.as_bytes(), r.as_bytes()) as u64,
                c["len"].as_u64().unwrap()
            );
        }
    }

    #[test]
    fn commit_proof_fixtures_build_the_same_roots_and_diffs() {
        let Some(dir) = fixtures() else { return };
        let text =
            std::fs::read_to_string(dir.join("firehose/commit-proof-fixtures.json")).unwrap();
        let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert!(!cases.is_empty());
        for c in cases {
            let name = c["comment"].as_str().unwrap();
            let value: Cid = c["leafValue"].as_str().unwrap().parse().unwrap();
            let strs = |f: &str| -> Vec<String> {
                c[f].as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            };
            let before_keys = strs("keys");
            let (adds, dels) = (strs("adds"), strs("dels"));
            let mut after_keys: Vec<String> = before_keys
                .iter()
                .filter(|k| !dels.contains(k))
                .cloned()
                .chain(adds.iter().cloned())
                .collect();
            after_keys.sort();
            let mut blocks = HashMap::new();
            let mut emit = |cid, bytes| {
                blocks.insert(cid, bytes);
            };
            let to_entries = |keys: &[String]| {
                let mut v: Vec<(Vec<u8>, Cid)> = keys
                    .iter()
                    .map(|k| (k.as_bytes().to_vec(), value))
                    .collect();
                v.sort();
                v
            };
            let before = build(&to_entries(&before_keys), &mut emit);
            let after = build(&to_entries(&after_keys), &mut emit);
            assert_eq!(
                before.to_string(),
                c["rootBeforeCommit"].as_str().unwrap(),
                "{name}"
            );
            assert_eq!(
                after.to_string(),
                c["rootAfterCommit"].as_str().unwrap(),
                "{name}"
            );
            // Every block the fixture names as the proof is a node of the new tree.
            for cid in strs("blocksInProof") {
                let cid: Cid = cid.parse().unwrap();
                assert!(blocks.contains_key(&cid), "{name}: proof block {cid}");
            }
            let found = changes(Some(before), after, &mut blocks);
            let mut created: Vec<String> = Vec::new();
            let mut deleted: Vec<String> = Vec::new();
            for ch in found {
                match ch {
                    Change::Create { key, .. } => created.push(String::from_utf8(key).unwrap()),
                    Change::Delete { key, .. } => deleted.push(String::from_utf8(key).unwrap()),
                    Change::Update { .. } => panic!("{name}: unexpected update"),
                }
            }
            let (mut adds, mut dels) = (adds, dels);
            adds.sort();
            dels.sort();
            assert_eq!(created, adds, "{name}");
            assert_eq!(deleted, dels, "{name}");
        }
    }

    #[test]
    fn walk_visits_all_keys_in_order() {
        let keys: Vec<String> = (0..500)
            .map(|i| format!("app.bsky.feed.post/{i:06}"))
            .collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (root, mut blocks) = tree(&refs);
        let mut seen = Vec::new();
        walk(&mut blocks, root, |k, _| {
            seen.push(String::from_utf8(k.to_vec()).unwrap());
            Ok::<(), MstError>(())
        })
        .unwrap();
        assert_eq!(seen, keys);
    }

    #[test]
    fn diff_skips_shared_subtrees_and_finds_every_change() {
        let keys: Vec<String> = (0..2000)
            .map(|i| format!("app.bsky.feed.post/{i:06}"))
            .collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (old, mut blocks) = tree(&refs);
        let mut next: Vec<&str> = refs.clone();
        next.retain(|k| *k != "app.bsky.feed.post/000700");
        next.push("app.bsky.feed.post/zzz");
        let (new, more) = tree(&next);
        blocks.extend(more);
        let mut stats = DiffStats::default();
        let mut found = Vec::new();
        diff(&mut blocks, Some(old), new, |c| {
            found.push(c);
            Ok::<(), MstError>(())
        })
        .map(|s| stats = s)
        .unwrap();
        assert_eq!(found.len(), 2);
        assert!(
            matches!(&found[0], Change::Delete { key, .. } if key == b"app.bsky.feed.post/000700")
        );
        assert!(
            matches!(&found[1], Change::Create { key, .. } if key == b"app.bsky.feed.post/zzz")
        );
        assert!(stats.shared_subtrees_skipped > 0);
        assert!(
            stats.new_nodes_read < 60,
            "read {} new nodes for two changes",
            stats.new_nodes_read
        );
    }

    #[test]
    fn a_tree_diffed_against_itself_has_no_changes_even_when_empty() {
        for keys in [vec![], vec!["app.bsky.feed.post/a", "app.bsky.feed.post/b"]] {
            let (root, mut blocks) = tree(&keys);
            assert_eq!(changes(Some(root), root, &mut blocks), vec![]);
        }
    }

    /// A new key placed before the end of a subtree both trees share is out of order: the
    /// largest key of the skipped subtree is still looked up for it.
    #[test]
    fn a_new_key_before_the_end_of_a_shared_subtree_is_refused() {
        let names: Vec<String> = (0..400).map(|i| format!("app.x/{i:04}")).collect();
        let keys: Vec<&str> = names.iter().map(String::as_str).collect();
        let (root, mut blocks) = tree(&keys);
        let node = decode_node(&root, &blocks[&root]).unwrap();
        let left = node.left.expect("a tree of 400 keys has a left subtree");
        let layer = key_height(&node.entries[0].key);
        let last_of_left = max_key(&mut blocks, &left).unwrap();
        // A key of the root's layer, not in the tree, that sorts before the left subtree's
        // last key.
        let x = (0..100_000)
            .map(|i| format!("app.x/0000{i}").into_bytes())
            .find(|k| key_height(k) == layer && *k < last_of_left)
            .unwrap();
        let mut entries = vec![Entry {
            key: x,
            value: leaf(),
            right: None,
        }];
        entries.extend(node.entries);
        let (bad_root, bytes) = encode_node(&Node {
            left: Some(left),
            entries,
        });
        blocks.insert(bad_root, bytes);
        let err = diff(
            &mut blocks,
            Some(root),
            bad_root,
            |_| Ok::<(), MstError>(()),
        )
        .unwrap_err();
        assert!(matches!(err, MstError::KeyOrder { .. }), "{err}");
    }

    #[test]
    fn out_of_order_keys_are_refused() {
        let node = Node {
            left: None,
            entries: vec![
                Entry {
                    key: b"app.x/b".to_vec(),
                    value: leaf(),
                    right: None,
                },
                Entry {
                    key: b"app.x/a".to_vec(),
                    value: leaf(),
                    right: None,
                },
            ],
        };
        // Both keys must share the node's layer for the order check to be reached.
        let layer_ok = key_height(b"app.x/b") == key_height(b"app.x/a");
        let (root, bytes) = encode_node(&node);
        let mut blocks = HashMap::from([(root, bytes)]);
        let err = walk(&mut blocks, root, |_, _| Ok::<(), MstError>(())).unwrap_err();
        if layer_ok {
            assert!(matches!(err, MstError::KeyOrder { .. }), "{err}");
        } else {
            assert!(matches!(err, MstError::WrongHeight { .. }), "{err}");
        }
    }

    #[test]
    fn key_at_the_wrong_height_is_refused() {
        // Find a key of height 0 and one of height >= 1, and put both in one node.
        let mut low = None;
        let mut high = None;
        for i in 0..1000 {
            let k = format!("app.x/k{i:04}");
            match key_height(k.as_bytes()) {
                0 if low.is_none() => low = Some(k),
                h if h >= 1 && high.is_none() => high = Some(k),
                _ => {}
            }
        }
        let (low, high) = (low.unwrap(), high.unwrap());
        let mut entries = vec![
            Entry {
                key: low.into_bytes(),
                value: leaf(),
                right: None,
            },
            Entry {
                key: high.into_bytes(),
                value: leaf(),
                right: None,
            },
        ];
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        let (root, bytes) = encode_node(&Node {
            left: None,
            entries,
        });
        let mut blocks = HashMap::from([(root, bytes)]);
        let err = walk(&mut blocks, root, |_, _| Ok::<(), MstError>(())).unwrap_err();
        assert!(matches!(err, MstError::WrongHeight { .. }), "{err}");
    }

    #[test]
    fn untrimmed_root_and_empty_nodes_are_refused() {
        let (empty, empty_bytes) = encode_node(&Node {
            left: None,
            entries: vec![],
        });
        let (root, bytes) = encode_node(&Node {
            left: Some(empty),
            entries: vec![],
        });
        let mut blocks = HashMap::from([(root, bytes), (empty, empty_bytes)]);
        let err = walk(&mut blocks, root, |_, _| Ok::<(), MstError>(())).unwrap_err();
        assert!(matches!(err, MstError::UntrimmedRoot(_)), "{err}");
        // The empty tree itself is fine.
        walk(&mut blocks, empty, |_, _| Ok::<(), MstError>(())).unwrap();
    }

    #[test]
    fn missing_block_is_reported() {
        let keys: Vec<String> = (0..100)
            .map(|i| format!("app.bsky.feed.post/{i:04}"))
            .collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (root, mut blocks) = tree(&refs);
        let victim = *blocks.keys().find(|c| **c != root).unwrap();
        blocks.remove(&victim);
        let err = walk(&mut blocks, root, |_, _| Ok::<(), MstError>(())).unwrap_err();
        assert_eq!(err, MstError::MissingBlock(victim.to_string()));
    }
}
