//! Layer 2 against a friend's endpoint: is their copy whole, and if not, exactly what does it
//! lack? Both sides digest subtrees of the same tree with a fresh nonce
//! (`crate::reconcile`); the walk starts at the root and goes down only into the subtrees
//! whose digests differ, level by level (each level a few requests), ending at the records and
//! tree nodes the friend's copy lacks or holds wrong. Requests grow with the difference times
//! the tree's depth, not with the size of the repository.

use std::time::Instant;

use cid::Cid;
use serde::{Deserialize, Serialize};

use super::layers::{get, rasl, Check, Fetch};
use crate::policy::observations::{Needs, Outcome};
use crate::reconcile::{self, Digest32};
use crate::store::{Store, StoreError};

/// Levels walked, at most (the tree's layers and the records below them).
const MAX_LEVELS: usize = crate::repo::mst::MAX_LAYER as usize + 2;
/// Requests one check makes, at most: a difference larger than this stops the walk (a tree
/// signed by the account can still be far larger than what two copies should differ by).
const MAX_REQUESTS: u64 = 10_000;
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
    /// One more request, within [`MAX_REQUESTS`].
    fn count_request(&mut self) -> Result<(), WalkError> {
        if self.requests >= MAX_REQUESTS {
            // Not the friend's fault as such: not judged this round.
            return Err(WalkError::Unreachable(format!(
                "a difference needing more than {MAX_REQUESTS} requests; compared again next round"
            )));
        }
        self.requests += 1;
        Ok(())
    }

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
        report.count_request()?;
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

/// A block of the friend's tree that this node does not hold, fetched from the friend
/// (hashed against its CID): `Ok(None)` when the friend does not serve it (or serves other
/// bytes), so its copy lacks it.
async fn fetch(
    http: &reqwest::Client,
    base: &str,
    cid: &Cid,
    report: &mut WholeCopy,
) -> Result<Option<Vec<u8>>, WalkError> {
    report.count_request()?;
    match rasl(http, base, cid).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(Fetch::Unreachable(r)) => Err(WalkError::Unreachable(r)),
        Err(Fetch::NotFound(_) | Fetch::Bad(_)) => Ok(None),
    }
}

/// One level of the walk: subtrees to compare, and single blocks.
#[derive(Default)]
struct Level {
    trees: Vec<Cid>,
    blocks: Vec<Block>,
}

impl Level {
    fn add_children(&mut self, kids: reconcile::Children) {
        self.blocks.push(Block::Node(kids.node));
        self.trees.extend(kids.trees);
        self.blocks
            .extend(kids.records.into_iter().map(|(k, c)| Block::Record(k, c)));
    }
}

/// Walks the friend at `base`'s copy of the tree `root` (the one its latest commit names).
/// Where this node holds the same subtree, digests are compared and only differing ones are
/// walked down (this node's copy says what is below); where it does not (the friend is at
/// another revision), the friend's blocks are fetched and hashed instead: the walk costs the
/// difference between the two copies, times the depth.
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
    let mut level = Level {
        trees: vec![root],
        blocks: Vec::new(),
    };
    for _ in 0..MAX_LEVELS {
        if level.trees.is_empty() && level.blocks.is_empty() {
            break;
        }
        let block_cids: Vec<Cid> = level.blocks.iter().map(Block::cid).collect();
        let (theirs_t, theirs_b) = ask(
            http,
            base,
            subject,
            &nonce,
            &level.trees,
            &block_cids,
            &mut report,
        )
        .await?;
        let (t, b, n) = (level.trees.clone(), block_cids.clone(), nonce.clone());
        let (mine_t, mine_b) = store
            .read(move |c| reconcile::digests(c, repo_id, n.as_bytes(), &t, &b))
            .await?;
        report.compared += (level.trees.len() + level.blocks.len()) as u64;
        let (mut differing, mut not_held) = (Vec::new(), Vec::new());
        for (i, cid) in level.trees.iter().enumerate() {
            match mine_t[i] {
                Some(mine) if Some(mine) == theirs_t[i] => {}
                Some(_) => differing.push(*cid),
                None => not_held.push(*cid),
            }
        }
        let (mut lacking, mut unheld_blocks) = (Vec::new(), Vec::new());
        for (i, block) in level.blocks.iter().enumerate() {
            match mine_b[i] {
                Some(mine) if Some(mine) == theirs_b[i] => {}
                Some(_) => lacking.push(block.clone()),
                None => unheld_blocks.push(block.clone()),
            }
        }
        // Blocks this node does not hold: the friend must serve them.
        for block in unheld_blocks {
            if fetch(http, base, &block.cid(), &mut report)
                .await?
                .is_none()
            {
                lacking.push(block);
            }
        }
        let mut next = Level::default();
        for cid in not_held {
            let Some(bytes) = fetch(http, base, &cid, &mut report).await? else {
                report.nodes += 1;
                continue;
            };
            let node = crate::repo::mst::decode_node(&cid, &bytes)
                .map_err(|e| WalkError::Bad(format!("a tree node that does not read: {e}")))?;
            next.trees.extend(node.left);
            for e in node.entries {
                let key = String::from_utf8_lossy(&e.key).into_owned();
                next.blocks.push(Block::Record(key, e.value));
                next.trees.extend(e.right);
            }
        }
        for block in &lacking {
            match block {
                Block::Record(key, _) => report.records.push(key.clone()),
                Block::Node(_) => report.nodes += 1,
            }
        }
        let lacking_cids: Vec<Cid> = lacking.iter().map(Block::cid).collect();
        let (bytes, kids) = store
            .read(move |c| {
                let mut bytes = 0;
                for cid in &lacking_cids {
                    bytes += reconcile::block_size(c, repo_id, cid)?;
                }
                let mut kids = Vec::new();
                for cid in &differing {
                    if let Some(k) = reconcile::children(c, repo_id, cid)? {
                        kids.push(k);
                    }
                }
                Ok::<_, StoreError>((bytes, kids))
            })
            .await?;
        report.bytes += bytes;
        for k in kids {
            next.add_children(k);
        }
        level = next;
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
            let mut check = Check::new(2, Outcome::Fail, started, Some(reason));
            check.needs = Some(Needs {
                records: u64::try_from(found.records.len()).unwrap_or(u64::MAX),
                bytes: found.bytes,
            });
            (check, Some(found))
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
