//! What to ask a peer for: unpredictable samples of a repo this node holds itself.
//!
//! Every choice is one a peer cannot know in advance, so it cannot keep only the blocks it will
//! be asked for: either drawn from the operating system's random source (`OsRng`), or placed by
//! a secret seed of this verifier (itself drawn from `OsRng`, never published).
//!
//! - [`tree_blocks`]: blocks of the current tree (MST nodes and record blocks), each found by a
//!   random walk down from the root.
//! - [`uniform`]: `k` distinct blocks of a list, each equally likely: the sampling the detection
//!   targets of a policy assume (`policy::detect`).
//! - [`Rotation`]: every block of a copy in turn, `k` a round, in an order set by the secret
//!   seed: a copy of `N` blocks is checked whole within `⌈N / k⌉` rounds, and a peer still
//!   cannot tell which blocks come next. [`tree_cids`] lists the blocks to rotate through.
//! - [`history_blocks`]: record blocks that an older version the peer said it held had, and the
//!   current version no longer has. A node that only relays the account's PDS cannot serve
//!   them: the PDS drops a block when the last record using it goes.
//! - [`records`]: random record paths (`collection/rkey`) of the current tree.

use std::collections::BTreeSet;

use cid::Cid;
use rand::rngs::OsRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use rusqlite::Connection;
use sha2::{Digest, Sha256};

use crate::export::StoreSource;
use crate::repo::mst::{self, BlockSource, Change, MstError};
use crate::store::StoreError;

/// Walks stop here: deeper than any canonical tree.
const MAX_DEPTH: usize = 64;

/// Up to `k` distinct blocks of the tree under `root`. Each is the end of a random walk from
/// the root: at every node the walk stops on the node itself, on one of its record blocks, or
/// goes down one of its subtrees, each with equal chance.
pub fn tree_blocks(
    conn: &Connection,
    repo_id: i64,
    root: Cid,
    k: usize,
) -> Result<Vec<Cid>, MstError> {
    let mut src = StoreSource { conn, repo_id };
    let mut rng = OsRng;
    let mut out = BTreeSet::new();
    // Small trees have fewer than k blocks: stop after a bounded number of walks.
    for _ in 0..k.saturating_mul(4) {
        if out.len() >= k {
            break;
        }
        out.insert(walk_once(&mut src, root, &mut rng)?);
    }
    let mut v: Vec<Cid> = out.into_iter().collect();
    v.shuffle(&mut rng);
    Ok(v)
}

fn walk_once(src: &mut impl BlockSource, root: Cid, rng: &mut OsRng) -> Result<Cid, MstError> {
    let mut cid = root;
    for _ in 0..MAX_DEPTH {
        let bytes = src
            .get_block(&cid)?
            .ok_or_else(|| MstError::MissingBlock(cid.to_string()))?;
        let node = mst::decode_node(&cid, &bytes)?;
        // Choices: this node, each record, each subtree.
        let mut leaves = Vec::with_capacity(node.entries.len());
        let mut subtrees: Vec<Cid> = node.left.into_iter().collect();
        for e in &node.entries {
            leaves.push(e.value);
            subtrees.extend(e.right);
        }
        let choice = rng.gen_range(0..1 + leaves.len() + subtrees.len());
        if choice == 0 {
            return Ok(cid);
        }
        if let Some(leaf) = leaves.get(choice - 1) {
            return Ok(*leaf);
        }
        match subtrees.get(choice - 1 - leaves.len()) {
            Some(next) => cid = *next,
            None => return Ok(cid),
        }
    }
    Err(MstError::TooDeep)
}

/// Every block of the tree under `root`: its nodes and the record blocks they name, each once,
/// in no particular order (what a [`Rotation`] goes through). Only the nodes are read.
pub fn tree_cids(conn: &Connection, repo_id: i64, root: Cid) -> Result<Vec<Cid>, MstError> {
    let mut src = StoreSource { conn, repo_id };
    let mut seen = BTreeSet::new();
    let mut todo = vec![(root, 0usize)];
    while let Some((cid, depth)) = todo.pop() {
        if depth > MAX_DEPTH {
            return Err(MstError::TooDeep);
        }
        if !seen.insert(cid) {
            continue;
        }
        let bytes = src
            .get_block(&cid)?
            .ok_or_else(|| MstError::MissingBlock(cid.to_string()))?;
        let node = mst::decode_node(&cid, &bytes)?;
        todo.extend(node.left.map(|l| (l, depth + 1)));
        for e in &node.entries {
            seen.insert(e.value);
            todo.extend(e.right.map(|r| (r, depth + 1)));
        }
    }
    Ok(seen.into_iter().collect())
}

/// `k` distinct items of `items` (all of them when there are no more), each equally likely,
/// in random order. With `OsRng` in a round; with a seeded generator in simulations.
pub fn uniform<T: Clone, R: Rng + ?Sized>(items: &[T], k: usize, rng: &mut R) -> Vec<T> {
    rand::seq::index::sample(rng, items.len(), k.min(items.len()))
        .into_iter()
        .filter_map(|i| items.get(i).cloned())
        .collect()
}

/// Bytes of a rotation seed.
pub const SEED_BYTES: usize = 32;

/// A new secret seed for [`Rotation`], from the operating system's random source. The verifier
/// keeps it and never publishes it: a peer that knew it could predict the blocks to come.
pub fn new_seed() -> [u8; SEED_BYTES] {
    let mut seed = [0u8; SEED_BYTES];
    OsRng.fill_bytes(&mut seed);
    seed
}

/// Where a block stands in a [`Rotation`]: a keyed hash of its CID. A round's cursor is the
/// position of the last block it took (what the verifier keeps per copy between rounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub [u8; 32]);

/// The order in which this verifier goes through the blocks of one copy (a target's copy of a
/// subject): each block's [`Position`] is SHA-256 of a key and its CID, the key SHA-256 of the
/// secret seed and the copy. Each round takes the next `k` blocks after the cursor, wrapping
/// around, so a copy that does not change is checked whole within `⌈N / k⌉` rounds; blocks
/// added meanwhile wait at most for the blocks ahead of them (`⌈N / k⌉` counting them).
/// Without the seed the order is unpredictable, so every round still looks like `k` blocks
/// drawn at random to the peer, and the detection targets hold (`policy::detect`).
#[derive(Clone)]
pub struct Rotation {
    key: [u8; 32],
}

impl std::fmt::Debug for Rotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is as secret as the seed: never in logs.
        f.write_str("Rotation { .. }")
    }
}

impl Rotation {
    /// The rotation of `target`'s copy of `subject` (node and account DIDs) under `seed`: each
    /// copy has its own order, so one copy's rounds say nothing about another's.
    pub fn new(seed: &[u8; SEED_BYTES], target: &str, subject: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"p2pds rotation v1\0");
        h.update(seed);
        for part in [target, subject] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        Rotation {
            key: h.finalize().into(),
        }
    }

    /// Where `cid` stands in this rotation.
    pub fn position(&self, cid: &Cid) -> Position {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(cid.to_bytes());
        Position(h.finalize().into())
    }

    /// The blocks of the copy (as [`tree_cids`] lists them) in this rotation's order, each once.
    pub fn order(&self, blocks: &[Cid]) -> Order {
        let mut entries: Vec<(Position, Cid)> =
            blocks.iter().map(|c| (self.position(c), *c)).collect();
        entries.sort_unstable();
        entries.dedup();
        Order { entries }
    }
}

/// One copy's blocks in the order of a [`Rotation`].
#[derive(Debug, Clone)]
pub struct Order {
    entries: Vec<(Position, Cid)>,
}

/// What one round of a rotation checks, and the cursor to keep for the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub cids: Vec<Cid>,
    /// The position of the last block taken; the cursor given when nothing was taken.
    pub cursor: Option<Position>,
}

impl Order {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `k` blocks after `cursor` (from the start of the order without one), wrapping
    /// around; every block at most once, so fewer when the copy has fewer than `k`.
    pub fn next(&self, cursor: Option<Position>, k: usize) -> Turn {
        let n = self.entries.len();
        let start = match cursor {
            None => 0,
            Some(c) => self.entries.partition_point(|(p, _)| *p <= c),
        };
        let taken: Vec<&(Position, Cid)> = (0..k.min(n))
            .filter_map(|i| self.entries.get((start + i) % n))
            .collect();
        Turn {
            cids: taken.iter().map(|(_, c)| *c).collect(),
            cursor: taken.last().map(|(p, _)| *p).or(cursor),
        }
    }
}

/// Up to `k` record blocks that the tree `old` has and the tree `new` does not (records
/// deleted or changed since), chosen at random. Empty when nothing changed.
pub fn history_blocks(
    conn: &Connection,
    repo_id: i64,
    old: Cid,
    new: Cid,
    k: usize,
) -> Result<Vec<Cid>, MstError> {
    let mut src = StoreSource { conn, repo_id };
    let mut gone = BTreeSet::new();
    let mut kept = BTreeSet::new();
    mst::diff::<MstError>(&mut src, Some(old), new, |change| {
        match change {
            Change::Delete { prev, .. } => {
                gone.insert(prev);
            }
            Change::Update { prev, cid, .. } => {
                gone.insert(prev);
                kept.insert(cid);
            }
            Change::Create { cid, .. } => {
                kept.insert(cid);
            }
        }
        Ok(())
    })?;
    // A block that a new record uses again is still on the PDS.
    let mut v: Vec<Cid> = gone.difference(&kept).copied().collect();
    v.shuffle(&mut OsRng);
    v.truncate(k);
    Ok(v)
}

/// Up to `k` distinct random record paths (`collection`, `rkey`) of a held repo.
pub fn records(
    conn: &Connection,
    repo_id: i64,
    k: usize,
) -> Result<Vec<(String, String)>, StoreError> {
    let count: i64 = conn.query_row(
        "SELECT count(*) FROM records WHERE repo_id = ?1",
        [repo_id],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare_cached(
        "SELECT collection, rkey FROM records WHERE repo_id = ?1 ORDER BY collection, rkey
         LIMIT 1 OFFSET ?2",
    )?;
    if usize::try_from(count).is_ok_and(|c| c <= k) {
        let mut all = conn.prepare_cached(
            "SELECT collection, rkey FROM records WHERE repo_id = ?1 ORDER BY collection, rkey",
        )?;
        let rows = all.query_map([repo_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        return Ok(rows.collect::<Result<_, _>>()?);
    }
    let mut rng = OsRng;
    let mut picked = BTreeSet::new();
    let mut out = Vec::new();
    for _ in 0..k.saturating_mul(4) {
        if out.len() >= k || count == 0 || picked.len() as i64 >= count {
            break;
        }
        let offset = rng.gen_range(0..count);
        if !picked.insert(offset) {
            continue;
        }
        let row: (String, String) = stmt.query_row(rusqlite::params![repo_id, offset], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        out.push(row);
    }
    Ok(out)
}

/// Up to `k` distinct random record blocks of a held repo, outside the `org.p2pds.*`
/// collections (status records and challenges change every round; posts and likes stay): what
/// a challenge can name for a node whose exact commit is unknown (it catches up first).
pub fn lasting_records(conn: &Connection, repo_id: i64, k: usize) -> Result<Vec<Cid>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT cid FROM records WHERE repo_id = ?1 AND collection NOT LIKE 'org.p2pds.%'",
    )?;
    let rows = stmt.query_map([repo_id], |r| r.get::<_, Vec<u8>>(0))?;
    let mut all = BTreeSet::new();
    for bytes in rows {
        if let Ok(cid) = Cid::try_from(bytes?.as_slice()) {
            all.insert(cid);
        }
    }
    let mut v: Vec<Cid> = all.into_iter().collect();
    v.shuffle(&mut OsRng);
    v.truncate(k);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::cid_for_cbor;
    use rand::SeedableRng;

    /// A store with one repo whose tree holds `n` records; returns (conn, root).
    fn held(n: usize) -> (Connection, Cid, Vec<(Vec<u8>, Cid)>) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE blocks (id INTEGER PRIMARY KEY, repo_id INTEGER, cid BLOB, data BLOB);
             CREATE TABLE records (repo_id INTEGER, collection TEXT, rkey TEXT, cid BLOB);",
        )
        .unwrap();
        let mut entries = Vec::new();
        for i in 0..n {
            let bytes = serde_ipld_dagcbor::to_vec(&format!("record {i}")).unwrap();
            let cid = cid_for_cbor(&bytes);
            conn.execute(
                "INSERT INTO blocks (repo_id, cid, data) VALUES (1, ?1, ?2)",
                rusqlite::params![cid.to_bytes(), bytes],
            )
            .unwrap();
            let rkey = format!("{i:06}");
            conn.execute(
                "INSERT INTO records (repo_id, collection, rkey, cid) VALUES (1, 'app.test', ?1, ?2)",
                rusqlite::params![rkey, cid.to_bytes()],
            )
            .unwrap();
            entries.push((format!("app.test/{rkey}").into_bytes(), cid));
        }
        let root = store_tree(&conn, &entries);
        (conn, root, entries)
    }

    fn store_tree(conn: &Connection, entries: &[(Vec<u8>, Cid)]) -> Cid {
        let mut blocks = Vec::new();
        let root = mst::build(entries, &mut |cid, bytes| blocks.push((cid, bytes)));
        for (cid, bytes) in blocks {
            conn.execute(
                "INSERT INTO blocks (repo_id, cid, data) VALUES (1, ?1, ?2)",
                rusqlite::params![cid.to_bytes(), bytes],
            )
            .unwrap();
        }
        root
    }

    #[test]
    fn tree_samples_are_blocks_of_the_tree_and_vary() {
        let (conn, root, entries) = held(300);
        let records: BTreeSet<Cid> = entries.iter().map(|(_, c)| *c).collect();
        let a = tree_blocks(&conn, 1, root, 20).unwrap();
        assert_eq!(a.len(), 20);
        let mut src = StoreSource {
            conn: &conn,
            repo_id: 1,
        };
        for cid in &a {
            let bytes = src.get_block(cid).unwrap().unwrap();
            // Either a record or a tree node.
            assert!(records.contains(cid) || mst::decode_node(cid, &bytes).is_ok());
        }
        let b = tree_blocks(&conn, 1, root, 20).unwrap();
        assert_ne!(a, b, "two samples of 20 out of 300+ blocks should differ");
    }

    #[test]
    fn a_tiny_tree_gives_what_it_has() {
        let (conn, root, _) = held(1);
        let s = tree_blocks(&conn, 1, root, 20).unwrap();
        assert!(!s.is_empty() && s.len() <= 2, "{s:?}");
    }

    #[test]
    fn history_is_what_the_old_version_had_and_the_new_lacks() {
        let (conn, old_root, entries) = held(50);
        let kept: Vec<(Vec<u8>, Cid)> = entries.iter().take(40).cloned().collect();
        let new_root = store_tree(&conn, &kept);
        let gone: BTreeSet<Cid> = entries.iter().skip(40).map(|(_, c)| *c).collect();
        let h = history_blocks(&conn, 1, old_root, new_root, 100).unwrap();
        assert_eq!(h.iter().copied().collect::<BTreeSet<_>>(), gone);
        assert_eq!(
            history_blocks(&conn, 1, old_root, new_root, 3)
                .unwrap()
                .len(),
            3
        );
        assert!(history_blocks(&conn, 1, new_root, new_root, 3)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn record_samples_are_distinct_held_paths() {
        let (conn, _, _) = held(30);
        let r = records(&conn, 1, 10).unwrap();
        assert_eq!(r.len(), 10);
        assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 10);
        assert!(r.iter().all(|(c, _)| c == "app.test"));
        assert_eq!(records(&conn, 1, 100).unwrap().len(), 30);
        assert!(records(&conn, 2, 5).unwrap().is_empty());
    }

    #[test]
    fn tree_cids_are_every_node_and_record_once() {
        let (conn, root, entries) = held(300);
        let all = tree_cids(&conn, 1, root).unwrap();
        let set: BTreeSet<Cid> = all.iter().copied().collect();
        assert_eq!(set.len(), all.len());
        assert!(set.contains(&root));
        for (_, cid) in &entries {
            assert!(set.contains(cid));
        }
        let mut src = StoreSource {
            conn: &conn,
            repo_id: 1,
        };
        let nodes = all
            .iter()
            .filter(|c| {
                let bytes = src.get_block(c).unwrap().unwrap();
                mst::decode_node(c, &bytes).is_ok()
            })
            .count();
        assert_eq!(nodes + entries.len(), all.len());
        // Random walks only ever land on blocks of the tree.
        assert!(tree_blocks(&conn, 1, root, 50)
            .unwrap()
            .iter()
            .all(|c| set.contains(c)));
    }

    /// `n` distinct made-up block CIDs.
    fn blocks(n: usize) -> Vec<Cid> {
        (0..n)
            .map(|i| cid_for_cbor(&serde_ipld_dagcbor::to_vec(&i).unwrap()))
            .collect()
    }

    #[test]
    fn a_rotation_checks_every_block_within_n_over_k_rounds() {
        let all = blocks(1000);
        let order = Rotation::new(&[7; SEED_BYTES], "did:plc:bob", "did:plc:alice").order(&all);
        assert_eq!(order.len(), 1000);
        let k = 115;
        let rounds = 1000usize.div_ceil(k);
        let mut cursor = None;
        let mut seen = Vec::new();
        for _ in 0..rounds {
            let turn = order.next(cursor, k);
            assert_eq!(turn.cids.len(), k);
            seen.extend(turn.cids);
            cursor = turn.cursor;
        }
        // 9 rounds of 115 = 1035: the first 1000 are every block once, then it starts over.
        let first: BTreeSet<Cid> = seen.iter().take(1000).copied().collect();
        assert_eq!(first, all.iter().copied().collect());
        assert_eq!(&seen[1000..], &seen[..35]);
    }

    #[test]
    fn rotations_differ_by_seed_and_by_copy_and_repeat_with_both() {
        let all = blocks(500);
        let first = |seed: u8, target: &str, subject: &str| {
            Rotation::new(&[seed; SEED_BYTES], target, subject)
                .order(&all)
                .next(None, 20)
                .cids
        };
        let a = first(1, "did:plc:bob", "did:plc:alice");
        assert_eq!(a, first(1, "did:plc:bob", "did:plc:alice"));
        assert_ne!(a, first(2, "did:plc:bob", "did:plc:alice"));
        assert_ne!(a, first(1, "did:plc:carol", "did:plc:alice"));
        assert_ne!(a, first(1, "did:plc:bob", "did:plc:carol"));
        // Not simply the blocks in the order given.
        assert_ne!(a, all[..20].to_vec());
        assert_ne!(new_seed(), new_seed());
        assert_eq!(
            format!("{:?}", Rotation::new(&[1; SEED_BYTES], "a", "b")),
            "Rotation { .. }"
        );
    }

    #[test]
    fn a_small_copy_gives_each_block_once_and_an_empty_one_nothing() {
        let all = blocks(5);
        let order =
            Rotation::new(&[3; SEED_BYTES], "t", "s").order(&[all.clone(), all.clone()].concat());
        assert_eq!(order.len(), 5);
        let turn = order.next(None, 20);
        assert_eq!(
            turn.cids.iter().copied().collect::<BTreeSet<_>>(),
            all.iter().copied().collect()
        );
        let empty = Rotation::new(&[3; SEED_BYTES], "t", "s").order(&[]);
        assert!(empty.is_empty());
        let cursor = Some(Position([9; 32]));
        assert_eq!(
            empty.next(cursor, 3),
            Turn {
                cids: Vec::new(),
                cursor
            }
        );
    }

    #[test]
    fn blocks_that_stay_are_checked_while_the_copy_changes() {
        // 1000 blocks; after every round 20 new ones arrive and 10 old ones go. Each block that
        // stays all along is checked within ⌈(1000 + the blocks added meanwhile) / k⌉ rounds.
        let k = 100usize;
        let pool = blocks(3000);
        let rotation = Rotation::new(&[5; SEED_BYTES], "t", "s");
        let mut live: Vec<Cid> = pool[..1000].to_vec();
        let stay: BTreeSet<Cid> = pool[500..1000].iter().copied().collect();
        let mut unchecked = stay.clone();
        let (mut cursor, mut next_new, mut rounds) = (None, 1000, 0usize);
        while !unchecked.is_empty() {
            rounds += 1;
            assert!(rounds <= (1000 + 20 * rounds).div_ceil(k), "round {rounds}");
            let turn = rotation.order(&live).next(cursor, k);
            for c in &turn.cids {
                unchecked.remove(c);
            }
            cursor = turn.cursor;
            live.extend_from_slice(&pool[next_new..next_new + 20]);
            next_new += 20;
            let mut gone = 0;
            live.retain(|c| {
                let go = gone < 10 && !stay.contains(c);
                gone += usize::from(go);
                !go
            });
        }
        eprintln!("changing copy: the 500 blocks that stayed were all checked in {rounds} rounds");
    }

    #[test]
    fn uniform_samples_are_distinct_and_cover_everything_in_time() {
        let items: Vec<u32> = (0..50).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let s = uniform(&items, 10, &mut rng);
        assert_eq!(s.len(), 10);
        assert_eq!(s.iter().collect::<BTreeSet<_>>().len(), 10);
        assert_eq!(uniform(&items, 80, &mut rng).len(), 50);
        let mut hits = [0u32; 50];
        for _ in 0..2000 {
            for i in uniform(&items, 5, &mut rng) {
                hits[i as usize] += 1;
            }
        }
        // Each item is expected 200 times (2000 × 5 / 50): none far off.
        assert!(hits.iter().all(|h| (140..=260).contains(h)), "{hits:?}");
    }

    /// Blocks in a copy of the simulation.
    const N: usize = 10_000;

    /// The peer of a simulation: it dropped `lost` of its `N` blocks, chosen at random.
    fn dropped(rng: &mut rand::rngs::StdRng, lost: usize) -> Vec<bool> {
        let mut gone = vec![false; N];
        for i in rand::seq::index::sample(rng, N, lost) {
            gone[i] = true;
        }
        gone
    }

    /// `1 − (chance that R rounds of k distinct blocks of N all miss d lost blocks)`.
    fn exact_detection(n: usize, d: usize, k: usize, rounds: u64) -> f64 {
        let miss_one_round: f64 = (0..k)
            .map(|i| (n - d - i) as f64 / (n - i) as f64)
            .product();
        1.0 - miss_one_round.powi(i32::try_from(rounds).unwrap())
    }

    /// Issue 16: a policy asking to find a 1% loss with 99% confidence within a day, checked
    /// every 6 hours, derives 115 blocks a round; a peer that dropped 1% of its 10,000 blocks is
    /// caught (a sampled block missing) within the 4 rounds of that day, and a rotation catches
    /// it always within ⌈10,000 / 115⌉ = 87 rounds.
    #[test]
    fn a_peer_that_dropped_one_percent_is_caught_as_the_policy_derives() {
        use crate::policy::detect::{self, Target};
        use crate::policy::time::{Duration, Percent};
        let target = Target {
            loss: Percent::parse("1%").unwrap(),
            confidence: Percent::parse("99%").unwrap(),
            within: Duration::parse("1d").unwrap(),
        };
        let d = detect::derive(target, Duration::parse("6h").unwrap(), 1000).unwrap();
        assert_eq!((d.total, d.rounds, d.per_round), (459, 4, 115));
        let (k, rounds, lost) = (d.per_round as usize, d.rounds, N / 100);
        let exact = exact_detection(N, lost, k, rounds);
        assert!(exact >= 0.99, "{exact}");

        // Uniform random samples, as the derivation assumes.
        let indices: Vec<usize> = (0..N).collect();
        let trials = 10_000u32;
        let mut caught = 0u32;
        for trial in 0..trials {
            let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(trial));
            let gone = dropped(&mut rng, lost);
            if (0..rounds).any(|_| uniform(&indices, k, &mut rng).iter().any(|&i| gone[i])) {
                caught += 1;
            }
        }
        let rate = f64::from(caught) / f64::from(trials);
        // The derivation is tight (460 samples for the 459 needed): the true rate is `exact`,
        // just above 99%, so a run of 10,000 trials lands within a few standard deviations of it;
        // a sampler that drew fewer blocks, or not uniformly, would fall well below.
        let sd = (0.01f64 * 0.99 / f64::from(trials)).sqrt();
        eprintln!(
            "random sampler: {k} blocks a round, {lost} of {N} blocks lost: caught within {rounds} rounds in {caught} of {trials} trials ({:.2}%; exact {:.3}%)",
            rate * 100.0,
            exact * 100.0
        );
        assert!(rate >= 0.99 - 3.0 * sd, "{rate}");

        // The rotation: 1,000 trials, 10 secret seeds each against 100 peers that dropped
        // different blocks (hashing every block for every seed is what takes time).
        let all = blocks(N);
        let cover = detect::rounds_to_cover(N as u64, d.per_round);
        assert_eq!(cover, 87);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1_000_000);
        let orders: Vec<Order> = (0..10)
            .map(|_| {
                let mut seed = [0u8; SEED_BYTES];
                rng.fill_bytes(&mut seed);
                Rotation::new(&seed, "did:plc:bob", "did:plc:alice").order(&all)
            })
            .collect();
        let trials = 1000u32;
        let (mut within_day, mut worst, mut sum) = (0u32, 0u64, 0u64);
        for trial in 0..trials {
            let order = &orders[trial as usize / 100];
            let gone = dropped(&mut rng, lost);
            let lost_cids: BTreeSet<Cid> = all
                .iter()
                .zip(&gone)
                .filter(|(_, g)| **g)
                .map(|(c, _)| *c)
                .collect();
            let mut cursor = None;
            let mut round = 0u64;
            loop {
                round += 1;
                let turn = order.next(cursor, k);
                cursor = turn.cursor;
                if turn.cids.iter().any(|c| lost_cids.contains(c)) {
                    break;
                }
                assert!(round < cover, "trial {trial}: not caught in {cover} rounds");
            }
            within_day += u32::from(round <= rounds);
            worst = worst.max(round);
            sum += round;
        }
        // Distinct blocks across rounds: 460 in 4 rounds, drawn without replacement.
        let exact = exact_detection(N, lost, k * rounds as usize, 1);
        eprintln!(
            "rotation: caught within {rounds} rounds in {within_day} of {trials} trials ({:.1}%; exact {:.3}%); always within {worst} rounds (at most {cover}: every block by then); {:.2} rounds on average",
            f64::from(within_day) * 100.0 / f64::from(trials),
            exact * 100.0,
            sum as f64 / f64::from(trials)
        );
        assert!(worst <= cover);
        let rate = f64::from(within_day) / f64::from(trials);
        let sd = (0.01f64 * 0.99 / f64::from(trials)).sqrt();
        assert!(rate >= 0.99 - 3.0 * sd, "{rate}");
    }

    #[test]
    fn lasting_records_leave_out_the_circle_records() {
        let (conn, _, entries) = held(10);
        conn.execute(
            "INSERT INTO records (repo_id, collection, rkey, cid) VALUES (1, 'org.p2pds.policy.status', 'x', ?1)",
            [cid_for_cbor(b"\x01").to_bytes()],
        )
        .unwrap();
        let picked = lasting_records(&conn, 1, 100).unwrap();
        let posts: BTreeSet<Cid> = entries.iter().map(|(_, c)| *c).collect();
        assert_eq!(picked.iter().copied().collect::<BTreeSet<_>>(), posts);
        assert_eq!(lasting_records(&conn, 1, 4).unwrap().len(), 4);
    }
}
