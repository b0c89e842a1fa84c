//! `p2pds bench firehose`: a generated event stream replayed from a file, no network.
//!
//! [`write_stream`] builds accounts of N posts each (synced into a fresh store by a polled,
//! full ingest), then a stream of `#commit` frames, round-robin over the accounts, in one of
//! two [`Mix`]es: `busy`, each commit creating a post and a like, deleting the two oldest
//! records and, one time in four, updating the profile (4.25 operations); or `single`, each
//! commit one operation (a post, a like, or the oldest record deleted, twice), as most
//! commits of the network's event stream are. Each is signed, and its blocks are the
//! commit, the new tree nodes and the new records. The frames go to a file, each after its
//! length (4 bytes, little-endian).
//!
//! [`replay`] runs in a fresh process (so its peak memory is the replay's alone) and reads the
//! file back: one thread decodes each frame and checks it on its own (blocks hashed, commit,
//! signature), the other checks it against the copy held and writes it, many commits per
//! transaction. With `apply` false nothing is written: the copy held moves forward in memory
//! only, which shows what verification costs without the store.
//!
//! The stream's commits are built with the tree builder (`mst::build`) and `commit::sign`
//! directly rather than through `RepoBuilder`, which would hash every record again for each
//! commit: the same trees, built fast enough for tens of thousands of commits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cid::Cid;
use rusqlite::Connection;

use super::apply::{apply_checked, check, CachedSource, Checked, Outcome, ReadCache};
use super::frame::{self, Action, CommitEvent, Event, RepoOp};
use super::verify::{check_chain, Held, HeldKey, Verdict};
use crate::crypto::{PublicKey, SigningKey};
use crate::repo::build::RepoBuilder;
use crate::repo::car::CarWriter;
use crate::repo::mst::{self, BlockSource, MstError};
use crate::repo::{cid_for_cbor, commit, tid};

/// The stream file in the benchmark's folder.
pub const STREAM_FILE: &str = "stream.frames";
/// The store the stream is replayed into.
pub const STORE_FILE: &str = "p2pds.sqlite";
/// Checked commits waiting between the two threads.
const QUEUE: usize = 1024;
/// The most commits written in one transaction.
const BATCH: usize = 1024;
/// How many verified commits the log takes before the replay checkpoints it.
const CHECKPOINT_EVERY: u64 = 5000;
/// How often the verify-only replay drops tree nodes no account's tree uses any more.
const PRUNE_EVERY: u64 = 4096;

/// What each commit of the stream does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// A post and a like created, the two oldest records deleted, the profile updated one
    /// time in four.
    Busy,
    /// One operation: a post created, a like created, then the oldest record deleted twice.
    Single,
}

/// The generated stream.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StreamFigures {
    pub mix: Mix,
    pub accounts: usize,
    pub records_per_account: usize,
    pub commits: u64,
    pub ops: u64,
    pub frame_bytes: u64,
    pub generate_seconds: f64,
}

/// One replay of the stream.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ReplayFigures {
    /// Whether verified commits were written to the store.
    pub applied_to_store: bool,
    pub frames: u64,
    pub verified: u64,
    pub refused: u64,
    /// From the first frame read to the last commit durable in the store.
    pub seconds: f64,
    pub commits_per_second: f64,
    /// Time the reading thread spent decoding frames and checking them on their own.
    pub decode_and_sign_check_seconds: f64,
    /// Time the other thread spent checking the chain (and writing, when applying).
    pub chain_and_write_seconds: f64,
    pub transactions: u64,
    /// Copying the log into the main file afterwards (off the measured path).
    pub checkpoint_seconds: f64,
    pub peak_rss_mb: f64,
}

/// Both replays of one stream.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Figures {
    pub stream: StreamFigures,
    pub verify_only: ReplayFigures,
    pub apply: ReplayFigures,
}

impl Figures {
    /// The figures in words, for the terminal.
    pub fn words(&self) -> String {
        let s = &self.stream;
        let line = |what: &str, r: &ReplayFigures| {
            format!(
                "{what}: {} commits verified ({} refused) in {:.2} s = {:.0} commits/s; \
                 decode + hash + signature {:.2} s on one thread, chain{} {:.2} s on the other; \
                 {} transactions; peak RSS {:.0} MB",
                r.verified,
                r.refused,
                r.seconds,
                r.commits_per_second,
                r.decode_and_sign_check_seconds,
                if r.applied_to_store { " + store" } else { "" },
                r.chain_and_write_seconds,
                r.transactions,
                r.peak_rss_mb
            )
        };
        let mix = match s.mix {
            Mix::Busy => "busy commits",
            Mix::Single => "one-operation commits",
        };
        format!(
            "stream: {} {mix} ({} ops, {:.1} MB of frames) over {} accounts of {} records, \
             generated in {:.1} s\n{}\n{}\nthen the log checkpoint into the main file: {:.2} s",
            s.commits,
            s.ops,
            s.frame_bytes as f64 / 1e6,
            s.accounts,
            s.records_per_account,
            s.generate_seconds,
            line("decode + verify, nothing written", &self.verify_only),
            line("decode + verify + apply to the store", &self.apply),
            self.apply.checkpoint_seconds
        )
    }
}

/// One generated account: its tree as sorted entries, the nodes of its current tree, and its
/// records oldest first (the next to delete).
struct Generated {
    did: String,
    key: SigningKey,
    entries: Vec<(Vec<u8>, Cid)>,
    nodes: HashSet<Cid>,
    data: Cid,
    rev: String,
    oldest: VecDeque<Vec<u8>>,
    commits: u64,
}

const PROFILE: &str = "app.bsky.actor.profile/self";

fn post_bytes(n: u64) -> Vec<u8> {
    let text = format!(
        "Post number {n}: a day out with friends, the weather held and the trains ran on time. \
         Next time: bring the good camera, water, and a map #{}.",
        n % 97
    );
    serde_ipld_dagcbor::to_vec(&serde_json::json!({
        "$type": "app.bsky.feed.post", "text": text, "langs": ["en"],
        "createdAt": "2024-05-01T12:00:00.000Z",
    }))
    .unwrap_or_default()
}

fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    serde_ipld_dagcbor::to_vec(value).unwrap_or_default()
}

impl Generated {
    /// An account of `records` posts and a profile, synced into the store by a full ingest.
    fn new(conn: &mut Connection, n: usize, records: usize, at: u64) -> anyhow::Result<Self> {
        let did = format!("did:plc:bench{n:019}");
        let key = SigningKey::generate_k256();
        let mut repo = RepoBuilder::new(&did, key.clone());
        let mut oldest = VecDeque::with_capacity(records);
        for i in 0..records {
            let rkey = tid::format(at - 1_000_000_000 + i as u64 * 1000, 3);
            repo.records
                .insert(format!("app.bsky.feed.post/{rkey}"), post_bytes(i as u64));
            oldest.push_back(format!("app.bsky.feed.post/{rkey}").into_bytes());
        }
        repo.put_json(
            "app.bsky.actor.profile",
            "self",
            &serde_json::json!({"$type": "app.bsky.actor.profile", "displayName": "Bench"}),
        );
        let built = repo.build(&tid::format(at - 1_000_000, 0));
        crate::store::add_repo(conn, &did, None, None)?;
        crate::sync::ingest::ingest_car(
            conn,
            &did,
            &key.public_key(),
            &built.car_bytes()[..],
            &mut |_| {},
        )?;
        let entries: Vec<(Vec<u8>, Cid)> = repo
            .records
            .iter()
            .map(|(k, v)| (k.clone().into_bytes(), cid_for_cbor(v)))
            .collect();
        let mut nodes = HashSet::new();
        let data = mst::build(&entries, &mut |cid, _| {
            nodes.insert(cid);
        });
        anyhow::ensure!(
            data == built.data,
            "the generator's tree differs from the builder's"
        );
        Ok(Self {
            did,
            key,
            entries,
            nodes,
            data,
            rev: built.rev,
            oldest,
            commits: 0,
        })
    }

    /// Sets (or with `None` removes) one record; returns the record it replaced.
    fn set(&mut self, key: &[u8], value: Option<Cid>) -> Option<Cid> {
        match (
            self.entries.binary_search_by(|e| e.0.as_slice().cmp(key)),
            value,
        ) {
            (Ok(at), Some(cid)) => Some(std::mem::replace(&mut self.entries[at].1, cid)),
            (Ok(at), None) => Some(self.entries.remove(at).1),
            (Err(at), Some(cid)) => {
                self.entries.insert(at, (key.to_vec(), cid));
                None
            }
            (Err(_), None) => None,
        }
    }

    /// The next commit, as the event its PDS would send.
    fn next(&mut self, mix: Mix, seq: i64, micros: u64) -> CommitEvent {
        self.commits += 1;
        let mut ops = Vec::with_capacity(4);
        let mut records: Vec<(Cid, Vec<u8>)> = Vec::with_capacity(3);
        let mut put = |g: &mut Self, path: String, bytes: Vec<u8>| {
            let cid = cid_for_cbor(&bytes);
            let prev = g.set(path.as_bytes(), Some(cid));
            let action = if prev.is_some() {
                Action::Update
            } else {
                Action::Create
            };
            if prev.is_none() {
                g.oldest.push_back(path.clone().into_bytes());
            }
            ops.push(RepoOp {
                action,
                path,
                cid: Some(cid),
                prev,
            });
            records.push((cid, bytes));
        };
        // Which of the busy commit's parts this one does (a single one has one).
        let part = |n: u64| mix == Mix::Busy || self.commits % 4 == n;
        let (post_part, like_part) = (part(0), part(1));
        let profile_part = mix == Mix::Busy && self.commits % 4 == 0;
        let deletes = match mix {
            Mix::Busy => 2,
            Mix::Single => usize::from(self.commits % 4 >= 2),
        };
        let post = format!("app.bsky.feed.post/{}", tid::format(micros, 1));
        let bytes = post_bytes(seq as u64);
        let post_cid = cid_for_cbor(&bytes);
        if post_part {
            put(self, post.clone(), bytes);
        }
        if like_part {
            let like = serde_json::json!({"$type": "app.bsky.feed.like",
                "subject": {"uri": format!("at://{}/{post}", self.did), "cid": post_cid.to_string()},
                "createdAt": "2024-05-01T12:00:00.000Z"});
            put(
                self,
                format!("app.bsky.feed.like/{}", tid::format(micros, 2)),
                json_bytes(&like),
            );
        }
        if profile_part {
            let profile = serde_json::json!({"$type": "app.bsky.actor.profile",
                "displayName": "Bench", "description": format!("edit {}", self.commits)});
            put(self, PROFILE.to_string(), json_bytes(&profile));
        }
        // As many records go as came: the account keeps its size.
        for _ in 0..deletes {
            let Some(gone) = self.oldest.pop_front() else {
                break;
            };
            let prev = self.set(&gone, None);
            ops.push(RepoOp {
                action: Action::Delete,
                path: String::from_utf8_lossy(&gone).into_owned(),
                cid: None,
                prev,
            });
        }
        let mut fresh = Vec::new();
        let mut nodes = HashSet::with_capacity(self.nodes.len() + 8);
        let old = &self.nodes;
        let data = mst::build(&self.entries, &mut |cid, bytes| {
            if !old.contains(&cid) {
                fresh.push((cid, bytes));
            }
            nodes.insert(cid);
        });
        self.nodes = nodes;
        let rev = tid::format(micros, 0);
        let (commit_cid, commit_bytes) = commit::sign(&self.did, data, &rev, &self.key);
        let blocks = car(
            commit_cid,
            &commit_bytes,
            fresh.iter().chain(records.iter()),
        );
        CommitEvent {
            seq,
            repo: self.did.clone(),
            commit: commit_cid,
            rev: rev.clone(),
            since: Some(std::mem::replace(&mut self.rev, rev)),
            blocks,
            ops,
            blobs: vec![],
            prev_data: Some(std::mem::replace(&mut self.data, data)),
            time: "2024-05-01T12:00:00.000Z".into(),
        }
    }
}

fn car<'a>(root: Cid, bytes: &[u8], rest: impl Iterator<Item = &'a (Cid, Vec<u8>)>) -> Vec<u8> {
    let write = || -> std::io::Result<Vec<u8>> {
        let mut car = CarWriter::new(Vec::new(), vec![root])?;
        car.write_block(&root, bytes)?;
        for (cid, data) in rest {
            car.write_block(cid, data)?;
        }
        car.finish()
    };
    write().unwrap_or_default()
}

fn open_store(dir: &Path) -> anyhow::Result<Connection> {
    let path = dir.join(STORE_FILE);
    let mut conn = Connection::open(&path)?;
    crate::store::configure_writer(&conn)?;
    crate::store::schema::migrate(&mut conn, &path)?;
    Ok(conn)
}

/// Builds the accounts into a fresh store in `dir` and writes the stream of `commits` commits.
pub fn write_stream(
    dir: &Path,
    mix: Mix,
    accounts: usize,
    records: usize,
    commits: u64,
) -> anyhow::Result<StreamFigures> {
    anyhow::ensure!(accounts > 0, "the stream needs at least one account");
    let start = Instant::now();
    let _ = std::fs::remove_file(dir.join(STORE_FILE));
    let mut conn = open_store(dir)?;
    // Revisions two hours ago, one microsecond apart: in the past, and each newer.
    let at = (chrono::Utc::now().timestamp_micros().max(0) as u64).saturating_sub(7_200_000_000);
    let mut generated = Vec::with_capacity(accounts);
    for n in 0..accounts {
        generated.push(Generated::new(&mut conn, n, records, at)?);
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    drop(conn);
    let mut out = BufWriter::new(std::fs::File::create(dir.join(STREAM_FILE))?);
    let (mut ops, mut frame_bytes) = (0u64, 0u64);
    // Two threads build the commits (even and odd accounts); they are written in turn.
    let (mut evens, mut odds) = (Vec::new(), Vec::new());
    for (n, g) in generated.into_iter().enumerate() {
        if n % 2 == 0 {
            evens.push(g)
        } else {
            odds.push(g)
        }
    }
    let (tx0, rx0) = mpsc::sync_channel::<(usize, Vec<u8>)>(QUEUE);
    let (tx1, rx1) = mpsc::sync_channel::<(usize, Vec<u8>)>(QUEUE);
    let receivers = (rx0, rx1);
    let written = std::thread::scope(|s| -> anyhow::Result<()> {
        // Owned here: should writing fail, dropping them stops the builders.
        let (rx0, rx1) = receivers;
        for (half, mut mine, tx) in [(0, evens, tx0), (1, odds, tx1)] {
            s.spawn(move || {
                for i in 0..commits {
                    let n = (i % accounts as u64) as usize;
                    let Some(account) = mine.get_mut(n / 2).filter(|_| n % 2 == half) else {
                        continue;
                    };
                    let event = account.next(mix, i as i64 + 1, at + i);
                    let item = (event.ops.len(), frame::encode(&Event::Commit(event)));
                    if tx.send(item).is_err() {
                        break;
                    }
                }
            });
        }
        for i in 0..commits {
            let from = if (i % accounts as u64) % 2 == 0 {
                &rx0
            } else {
                &rx1
            };
            let (n_ops, bytes) = from.recv()?;
            ops += n_ops as u64;
            out.write_all(&(bytes.len() as u32).to_le_bytes())?;
            out.write_all(&bytes)?;
            frame_bytes += bytes.len() as u64;
        }
        Ok(())
    });
    written?;
    out.flush()?;
    Ok(StreamFigures {
        mix,
        accounts,
        records_per_account: records,
        commits,
        ops,
        frame_bytes,
        generate_seconds: start.elapsed().as_secs_f64(),
    })
}

/// The next frame of the stream file into `buf`; false at its end.
fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> anyhow::Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    anyhow::ensure!(
        len <= frame::MAX_FRAME_BYTES,
        "the stream holds a frame of {len} bytes, over the limit"
    );
    buf.resize(len, 0);
    r.read_exact(buf)?;
    Ok(true)
}

/// The reading thread: each frame decoded and checked on its own, handed on in order.
/// Returns the frames read and the time spent on them.
fn read_and_check(
    path: &Path,
    keys: &HashMap<String, HeldKey>,
    out: mpsc::SyncSender<Checked>,
) -> anyhow::Result<(u64, Duration)> {
    let mut file = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let (mut buf, mut frames, mut busy) = (Vec::new(), 0u64, Duration::ZERO);
    while read_frame(&mut file, &mut buf)? {
        let start = Instant::now();
        frames += 1;
        let Event::Commit(event) = frame::decode(&buf)? else {
            continue;
        };
        let Some(key) = keys.get(&event.repo) else {
            continue;
        };
        let checked = check(event, key);
        busy += start.elapsed();
        if out.send(checked).is_err() {
            break;
        }
    }
    Ok((frames, busy))
}

/// The accounts held: their keys, and (for the verify-only replay) their rows.
#[allow(clippy::type_complexity)]
fn accounts(conn: &Connection) -> anyhow::Result<Vec<(i64, String, PublicKey, Held)>> {
    let mut stmt = conn.prepare("SELECT id, did, signing_key, head, rev, data FROM repos")?;
    let cid = |b: Option<Vec<u8>>| b.and_then(|b| Cid::try_from(b.as_slice()).ok());
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            Held {
                head: cid(r.get(3)?),
                rev: r.get(4)?,
                data: cid(r.get(5)?),
            },
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, did, key, held) = row?;
        let key = PublicKey::from_did_key(key.as_deref().unwrap_or_default())?;
        out.push((id, did, key, held));
    }
    Ok(out)
}

/// Replays the stream in `dir` in this process: verified and written to the store when
/// `apply`, verified only otherwise.
pub fn replay(dir: &Path, apply: bool) -> anyhow::Result<ReplayFigures> {
    let mut conn = open_store(dir)?;
    let accounts = accounts(&conn)?;
    let keys: HashMap<String, HeldKey> = accounts
        .iter()
        .map(|(_, did, key, _)| (did.clone(), HeldKey::from(key.clone())))
        .collect();
    let path = dir.join(STREAM_FILE);
    let start = Instant::now();
    let (tx, rx) = mpsc::sync_channel::<Checked>(QUEUE);
    let (figures, read) = std::thread::scope(|s| {
        let reader = s.spawn(|| read_and_check(&path, &keys, tx));
        let figures = if apply {
            apply_all(&mut conn, &rx)
        } else {
            verify_all(&conn, &accounts, &rx)
        };
        // The reader stops once nobody receives (a failed replay drops `rx`).
        drop(rx);
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reading thread failed"));
        (figures, read)
    });
    let mut figures = figures?;
    let (frames, busy) = read??;
    figures.seconds = start.elapsed().as_secs_f64();
    figures.frames = frames;
    figures.decode_and_sign_check_seconds = busy.as_secs_f64();
    figures.commits_per_second = figures.verified as f64 / figures.seconds.max(1e-9);
    if apply {
        let start = Instant::now();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        figures.checkpoint_seconds = start.elapsed().as_secs_f64();
    }
    figures.peak_rss_mb = crate::bench::peak_rss_bytes().unwrap_or(0) as f64 / 1e6;
    Ok(figures)
}

/// Takes what is waiting (at least one, at most [`BATCH`]); empty when the stream ended.
fn next_batch(rx: &mpsc::Receiver<Checked>) -> Vec<Checked> {
    let Ok(first) = rx.recv() else {
        return Vec::new();
    };
    let mut batch = Vec::with_capacity(BATCH);
    batch.push(first);
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    batch
}

fn apply_all(conn: &mut Connection, rx: &mpsc::Receiver<Checked>) -> anyhow::Result<ReplayFigures> {
    let mut figures = ReplayFigures {
        applied_to_store: true,
        ..Default::default()
    };
    let mut busy = Duration::ZERO;
    loop {
        let batch = next_batch(rx);
        if batch.is_empty() {
            break;
        }
        let start = Instant::now();
        let mut applied = 0;
        for outcome in apply_checked(conn, batch)? {
            match outcome {
                Outcome::Applied(_) => applied += 1,
                Outcome::Refused { .. } => figures.refused += 1,
            }
        }
        figures.verified += applied;
        figures.transactions += 1;
        // The store's writer does not checkpoint on its own: a follower must, now and then,
        // or the log grows without end and every read slows down.
        if figures.verified / CHECKPOINT_EVERY != (figures.verified - applied) / CHECKPOINT_EVERY {
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        }
        busy += start.elapsed();
    }
    figures.chain_and_write_seconds = busy.as_secs_f64();
    Ok(figures)
}

/// Tree nodes of verified commits, kept in memory, over the store's blocks.
struct Layered<'a> {
    fresh: &'a HashMap<Cid, Vec<u8>>,
    store: CachedSource<'a>,
}

impl BlockSource for Layered<'_> {
    fn get_block(&mut self, cid: &Cid) -> Result<Option<Vec<u8>>, MstError> {
        match self.fresh.get(cid) {
            Some(bytes) => Ok(Some(bytes.clone())),
            None => self.store.get_block(cid),
        }
    }
}

/// Drops the nodes in `fresh` that no current tree reaches (a node held in the store only
/// reaches nodes held there too, so the walk stays in `fresh`).
fn prune(fresh: &mut HashMap<Cid, Vec<u8>>, roots: impl Iterator<Item = Cid>) {
    let mut keep = HashSet::with_capacity(fresh.len());
    let mut todo: Vec<Cid> = roots.collect();
    while let Some(cid) = todo.pop() {
        let Some(bytes) = fresh.get(&cid) else {
            continue;
        };
        if !keep.insert(cid) {
            continue;
        }
        if let Ok(node) = mst::decode_node(&cid, bytes) {
            todo.extend(node.left);
            todo.extend(node.entries.iter().filter_map(|e| e.right));
        }
    }
    fresh.retain(|cid, _| keep.contains(cid));
}

fn verify_all(
    conn: &Connection,
    accounts: &[(i64, String, PublicKey, Held)],
    rx: &mpsc::Receiver<Checked>,
) -> anyhow::Result<ReplayFigures> {
    let mut figures = ReplayFigures::default();
    let mut held: HashMap<&str, (i64, Held)> = accounts
        .iter()
        .map(|(id, did, _, h)| (did.as_str(), (*id, h.clone())))
        .collect();
    let mut fresh: HashMap<Cid, Vec<u8>> = HashMap::new();
    let mut cache = ReadCache::default();
    let mut busy = Duration::ZERO;
    // One read transaction: the store does not change under this replay.
    let reading = conn.unchecked_transaction()?;
    for checked in rx.iter() {
        let start = Instant::now();
        let (Ok(signed), Some((repo_id, state))) =
            (checked.signed, held.get_mut(checked.did.as_str()))
        else {
            figures.refused += 1;
            continue;
        };
        let mut source = Layered {
            fresh: &fresh,
            store: cache.source(&reading, *repo_id),
        };
        match check_chain(*signed, state, &mut source)? {
            Verdict::Refused(_) => figures.refused += 1,
            Verdict::Verified(v) => {
                figures.verified += 1;
                *state = Held {
                    head: Some(v.commit_cid),
                    rev: Some(v.rev),
                    data: Some(v.data),
                };
                // The first block is the commit: only the tree's nodes are read again.
                fresh.extend(v.nodes.into_iter().skip(1));
                if figures.verified % PRUNE_EVERY == 0 {
                    prune(&mut fresh, held.values().filter_map(|(_, h)| h.data));
                }
            }
        }
        busy += start.elapsed();
    }
    reading.rollback()?;
    figures.chain_and_write_seconds = busy.as_secs_f64();
    Ok(figures)
}

/// `p2pds bench firehose`: generates the stream in a temporary folder, then replays it twice,
/// each time in a fresh `exe` process: verification alone, then verification and the store.
pub fn run(
    exe: &Path,
    mix: Mix,
    accounts: usize,
    records: usize,
    commits: u64,
) -> anyhow::Result<Figures> {
    let dir = std::env::temp_dir().join(format!("p2pds-bench-firehose-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(exe, &dir, mix, accounts, records, commits);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(
    exe: &Path,
    dir: &Path,
    mix: Mix,
    accounts: usize,
    records: usize,
    commits: u64,
) -> anyhow::Result<Figures> {
    let stream = write_stream(dir, mix, accounts, records, commits)?;
    let measured = |verify_only: bool| -> anyhow::Result<ReplayFigures> {
        let mut cmd = std::process::Command::new(exe);
        cmd.args(["bench", "firehose", "--replay"]).arg(dir);
        if verify_only {
            cmd.arg("--verify-only");
        }
        let out = cmd.stderr(std::process::Stdio::inherit()).output()?;
        anyhow::ensure!(
            out.status.success(),
            "the measured replay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let verify_only = measured(true)?;
    let apply = measured(false)?;
    Ok(Figures {
        stream,
        verify_only,
        apply,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_of_one_operation_commits_keeps_each_account_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let stream = write_stream(dir.path(), Mix::Single, 2, 40, 80).unwrap();
        assert_eq!((stream.commits, stream.ops), (80, 80));
        let apply = replay(dir.path(), true).unwrap();
        assert_eq!((apply.verified, apply.refused), (80, 0));
        let conn = Connection::open(dir.path().join(STORE_FILE)).unwrap();
        let records: Vec<i64> = conn
            .prepare("SELECT records FROM repos")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(records, vec![41, 41]);
    }

    #[test]
    fn a_generated_stream_replays_whole_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let stream = write_stream(dir.path(), Mix::Busy, 3, 60, 90).unwrap();
        assert_eq!(stream.commits, 90);
        assert!(stream.ops >= 90 * 3);
        let verify = replay(dir.path(), false).unwrap();
        assert_eq!((verify.verified, verify.refused), (90, 0));
        let apply = replay(dir.path(), true).unwrap();
        assert_eq!((apply.verified, apply.refused, apply.frames), (90, 0, 90));
        let conn = Connection::open(dir.path().join(STORE_FILE)).unwrap();
        let kept: i64 = conn
            .query_row("SELECT count(*) FROM commits", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 3 + 90);
        for (_, did, _, _) in accounts(&conn).unwrap() {
            let check = crate::history::check::check(&conn, &did).unwrap();
            assert!(check.ok(), "{:?}", check.problems);
            assert_eq!(check.states_checked, 31);
        }
        // Replayed again, every commit is already held: refused as not newer, nothing written.
        let again = replay(dir.path(), true).unwrap();
        assert_eq!((again.verified, again.refused), (0, 90));
    }

    #[test]
    fn pruning_keeps_what_the_current_trees_reach() {
        let entries: Vec<(Vec<u8>, Cid)> = (0..300)
            .map(|i| {
                (
                    format!("app.x.y/{i:05}").into_bytes(),
                    cid_for_cbor(b"\xa0"),
                )
            })
            .collect();
        let mut fresh = HashMap::new();
        let old = mst::build(&entries[..200], &mut |c, b| {
            fresh.insert(c, b);
        });
        let new = mst::build(&entries, &mut |c, b| {
            fresh.insert(c, b);
        });
        let before = fresh.len();
        prune(&mut fresh, [new].into_iter());
        assert!(fresh.len() < before && fresh.contains_key(&new) && !fresh.contains_key(&old));
        let mut walked = 0;
        mst::walk(&mut fresh, new, |_, _| {
            walked += 1;
            Ok::<(), MstError>(())
        })
        .unwrap();
        assert_eq!(walked, 300);
    }
}
