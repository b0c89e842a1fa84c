//! Layer 2 against a friend's endpoint: is their copy whole, and if not, exactly what does it
//! lack? Both sides digest subtrees of the same tree with a fresh nonce
//! (`crate::reconcile`); the walk starts at the root and goes down only into the subtrees
//! whose digests differ, level by level (each level a few requests), ending at the records and
//! tree nodes the friend's copy lacks or holds wrong. Requests grow with the difference times
//! the tree's depth, not with the size of the repository.

use std::time::Instant;

use cid::Cid;
use serde::{Deserialize, Serialize};

use super::layers::{get, Check, Fetch};
use crate::policy::observations::Outcome;
use crate::reconcile::{self, Digest32};
use crate::store::{Store, StoreError};

/// Levels walked, at most (the tree's layers and the records below them).
const MAX_LEVELS: usize = crate::repo::mst::MAX_LAYER as usize + 2;
/// Records named in the check's reason, at most (the count says the rest).
const NAMED: usize = 5;

/// What a whole-copy check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WholeCopy {
    /// The records (`collection/rkey`) the copy lacks or holds wrong, in key order.
    pub records: Vec<String>,
    /// Tree nodes it lacks or holds wrong.
    pub nodes: u64,
    /// The bytes it would need to be whole (as this node holds them).
    pub bytes: u64,
    /// Requests made, and subtrees and blocks compared.
    pub requests: u64,
    pub compared: u64,
}

impl WholeCopy {
    pub fn is_whole(&self) -> bool {
        self.records.is_empty() && self.nodes == 0
    }

    /// "lacks 3 records and 2 tree nodes (1.2 kB): app.bsky.feed.post/…, …".
    pub fn words(&self) -> String {
        let mut named: Vec<&str> = self
            .records
            .iter()
            .take(NAMED)
            .map(String::as_str)
            .collect();
        if self.records.len() > NAMED {
            named.push("…");
        }
        format!(
            "lacks {} record{} and {} tree node{} ({} bytes){}{}",
            self.records.len(),
            if self.records.len() == 1 { "" } else { "s" },
            self.nodes,
            if self.nodes == 1 { "" } else { "s" },
            self.bytes,
            if named.is_empty() { "" } else { ": " },
            named.join(", ")
        )
    }
}

#[derive(Deserialize)]
struct Answer {
    trees: Vec<Option<String>>,
    blocks: Vec<Option<String>>,
}

/// A single block compared: a tree node's own block, or a record.
#[derive(Clone)]
enum Block {
    Node(Cid),
    Record(String, Cid),
}

impl Block {
    fn cid(&self) -> Cid {
        match self {
            Block::Node(c) | Block::Record(_, c) => *c,
        }
    }
}

/// Why a walk stopped short.
#[derive(Debug)]
pub enum WalkError {
    Unreachable(String),
    Bad(String),
    Store(StoreError),
}

impl From<StoreError> for WalkError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

fn parse_digest(text: &Option<String>) -> Result<Digest32, WalkError> {
    let Some(text) = text else {
        return Ok(None);
    };
    let bad = || WalkError::Bad(format!("a digest that is not 32 bytes of hex: {text:.80}"));
    if text.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(Some(out))
}

/// The friend's digests of `trees` and `blocks`, asked in requests of at most
/// `serve`'s limit.
async fn ask(
    http: &reqwest::Client,
    base: &str,
    subject: &str,
    nonce: &str,
    trees: &[Cid],
    blocks: &[Cid],
    report: &mut WholeCopy,
) -> Result<(Vec<Digest32>, Vec<Digest32>), WalkError> {
    let url = format!("{base}/xrpc/org.p2pds.sync.getDigests");
    let max = crate::serve::MAX_DIGESTS_ASKED;
    let items: Vec<(bool, Cid)> = trees
        .iter()
        .map(|c| (true, *c))
        .chain(blocks.iter().map(|c| (false, *c)))
        .collect();
    let (mut out_trees, mut out_blocks) = (Vec::new(), Vec::new());
    for batch in items.chunks(max) {
        let texts: Vec<(bool, String)> = batch.iter().map(|(t, c)| (*t, c.to_string())).collect();
        let mut query: Vec<(&str, &str)> = vec![("did", subject), ("nonce", nonce)];
        query.extend(
            texts
                .iter()
                .map(|(t, c)| (if *t { "trees" } else { "blocks" }, c.as_str())),
        );
        report.requests += 1;
        let body = get(http, &url, &query).await.map_err(|e| match e {
            Fetch::Unreachable(r) => WalkError::Unreachable(r),
            Fetch::NotFound(r) => {
                WalkError::Bad(format!("does not serve digests of the account ({r})"))
            }
            Fetch::Bad(r) => WalkError::Bad(r),
        })?;
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| WalkError::Bad(format!("digests that do not read: {e}")))?;
        let want = texts.iter().filter(|(t, _)| *t).count();
        if answer.trees.len() != want || answer.blocks.len() != texts.len() - want {
            return Err(WalkError::Bad(
                "not a digest for each subtree and block asked".into(),
            ));
        }
        for d in &answer.trees {
            out_trees.push(parse_digest(d)?);
        }
        for d in &answer.blocks {
            out_blocks.push(parse_digest(d)?);
        }
    }
    Ok((out_trees, out_blocks))
}

/// Walks the tree `root` of repo `repo_id` (held here) against the friend at `base`.
pub async fn walk(
    http: &reqwest::Client,
    base: &str,
    subject: &str,
    store: &Store,
    repo_id: i64,
    root: Cid,
) -> Result<WholeCopy, WalkError> {
    let nonce: String = (0..16)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let mut report = WholeCopy::default();
    let mut trees = vec![root];
    let mut blocks: Vec<Block> = Vec::new();
    for _ in 0..MAX_LEVELS {
        if trees.is_empty() && blocks.is_empty() {
            break;
        }
        let block_cids: Vec<Cid> = blocks.iter().map(Block::cid).collect();
        let (theirs_t, theirs_b) = ask(
            http,
            base,
            subject,
            &nonce,
            &trees,
            &block_cids,
            &mut report,
        )
        .await?;
        let (t, b, n) = (trees.clone(), block_cids.clone(), nonce.clone());
        let (mine_t, mine_b) = store
            .read(move |c| reconcile::digests(c, repo_id, n.as_bytes(), &t, &b))
            .await?;
        report.compared += (trees.len() + blocks.len()) as u64;
        let mut differing = Vec::new();
        for (i, cid) in trees.iter().enumerate() {
            // A subtree this node cannot digest itself is not judged.
            if mine_t[i].is_some() && mine_t[i] != theirs_t[i] {
                differing.push(*cid);
            }
        }
        let mut lacking_nodes = Vec::new();
        for (i, block) in blocks.iter().enumerate() {
            if mine_b[i].is_none() || mine_b[i] == theirs_b[i] {
                continue;
            }
            match block {
                Block::Record(key, _) => report.records.push(key.clone()),
                Block::Node(_) => report.nodes += 1,
            }
            lacking_nodes.push(block.cid());
        }
        let (lacking, diff) = (lacking_nodes.clone(), differing.clone());
        let (bytes, next) = store
            .read(move |c| {
                let mut bytes = 0;
                for cid in &lacking {
                    bytes += reconcile::block_size(c, repo_id, cid)?;
                }
                let mut next = Vec::new();
                for cid in &diff {
                    if let Some(kids) = reconcile::children(c, repo_id, cid)? {
                        next.push(kids);
                    }
                }
                Ok::<_, StoreError>((bytes, next))
            })
            .await?;
        report.bytes += bytes;
        trees = Vec::new();
        blocks = Vec::new();
        for kids in next {
            blocks.push(Block::Node(kids.node));
            trees.extend(kids.trees);
            blocks.extend(kids.records.into_iter().map(|(k, c)| Block::Record(k, c)));
        }
    }
    report.records.sort();
    Ok(report)
}

/// The layer 2 check of the friend at `base`'s copy of `subject`, against the tree `root`
/// held here (repo `repo_id`).
pub async fn check(
    http: &reqwest::Client,
    base: &str,
    subject: &str,
    store: &Store,
    repo_id: i64,
    root: Cid,
) -> (Check, Option<WholeCopy>) {
    let started = Instant::now();
    match walk(http, base, subject, store, repo_id, root).await {
        Ok(found) if found.is_whole() => (Check::new(2, Outcome::Pass, started, None), Some(found)),
        Ok(found) => {
            let reason = format!("the copy {} ({} requests)", found.words(), found.requests);
            (
                Check::new(2, Outcome::Fail, started, Some(reason)),
                Some(found),
            )
        }
        Err(WalkError::Unreachable(r)) => {
            (Check::new(2, Outcome::Unreachable, started, Some(r)), None)
        }
        Err(WalkError::Bad(r)) => (Check::new(2, Outcome::Fail, started, Some(r)), None),
        Err(WalkError::Store(e)) => (
            Check::new(
                2,
                Outcome::Unreachable,
                started,
                Some(format!("this node could not read its own copy: {e}")),
            ),
            None,
        ),
    }
}
