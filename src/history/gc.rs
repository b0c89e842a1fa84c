//! Garbage collection of history: states older than the retention window go, and with them
//! every block and blob that no retained state needs. Nothing a retained state needs is ever
//! removed: the blocks kept are exactly those reached by walking every retained state (its
//! commit, every tree node, every record) and the blobs kept are those its records name.
//!
//! One account at a time, each in one transaction on the store's writer, so a sync never
//! sees a half-collected account. Blob files go last, and only when no account's row names
//! them any more. [`plan`] computes the same figures without changing anything (the
//! reclaimable size shown before a collection runs).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use cid::Cid;
use rusqlite::{params, Connection};
use serde::Serialize;

use crate::export::get_block;
use crate::repo::mst;
use crate::store::StoreError;

/// What to collect.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// The user's retention window.
    pub retention: std::time::Duration,
    pub now: DateTime<Utc>,
}

/// Figures of one account.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcAccount {
    pub did: String,
    pub handle: Option<String>,
    /// The oldest instant whose state is kept for this account (its window may be longer
    /// than the user's when a circle covers it).
    pub keep_since: String,
    pub states_kept: u64,
    pub states_removed: u64,
    pub blocks_removed: u64,
    pub bytes_removed: u64,
    pub blobs_removed: u64,
    pub blob_bytes_removed: u64,
    /// Blocks a retained state needs that are not in the store (see `p2pds verify`).
    pub blocks_missing: u64,
}

/// Figures of a collection (or of its plan).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub retention_days: f64,
    pub accounts: Vec<GcAccount>,
    pub states_removed: u64,
    pub blocks_removed: u64,
    pub bytes_removed: u64,
    pub blob_files_removed: u64,
    pub blob_bytes_removed: u64,
    /// Everything this collection frees (or would free): block bytes plus blob files.
    pub reclaimable_bytes: u64,
}

/// What stays of one account.
struct Marks {
    keep_commits: HashSet<String>,
    keep_blocks: HashSet<Cid>,
    keep_blobs: HashSet<String>,
    keep_since: String,
    missing: u64,
}

fn text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Decides which states of one account are retained and marks what they need.
fn mark(conn: &Connection, repo_id: i64, did: &str, opts: &GcOptions) -> Result<Marks, StoreError> {
    let in_circle: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM circle_subjects WHERE did = ?1 AND active = 1)",
        [did],
        |r| r.get(0),
    )?;
    let peers_window = std::time::Duration::from_secs(crate::verify::RETENTION.secs());
    let mut window = opts.retention;
    if in_circle {
        window = window.max(peers_window);
    }
    let cutoff = text(
        opts.now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(36500)),
    );
    let claims_since = text(
        opts.now - chrono::Duration::from_std(peers_window).unwrap_or(chrono::Duration::days(30)),
    );
    let head: Option<String> =
        conn.query_row("SELECT rev FROM repos WHERE id = ?1", [repo_id], |r| {
            r.get(0)
        })?;
    let pinned: HashSet<String> = {
        let mut stmt = conn.prepare_cached(
            "SELECT good_rev FROM upstream_flags
             WHERE repo_id = ?1 AND cleared_at IS NULL AND good_rev IS NOT NULL",
        )?;
        let rows = stmt.query_map([repo_id], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let claimed: HashSet<String> = {
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT data FROM holding_claims WHERE subject = ?1 AND first_seen_at >= ?2",
        )?;
        let rows = stmt.query_map(params![did, claims_since], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let commits: Vec<(String, Vec<u8>, Vec<u8>, String)> = {
        let mut stmt = conn.prepare_cached(
            "SELECT rev, cid, data, synced_at FROM commits WHERE repo_id = ?1 ORDER BY rev",
        )?;
        let rows = stmt.query_map([repo_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut marks = Marks {
        keep_commits: HashSet::new(),
        keep_blocks: HashSet::new(),
        keep_blobs: HashSet::new(),
        keep_since: cutoff.clone(),
        missing: 0,
    };
    let mut roots: Vec<Cid> = Vec::new();
    for (i, (rev, commit, data, synced_at)) in commits.iter().enumerate() {
        // A state was the newest from its sync until the next one's.
        let newest_until = commits.get(i + 1).map(|n| n.3.as_str());
        let data_cid = Cid::try_from(data.as_slice()).ok();
        let keep = head.as_deref() == Some(rev.as_str())
            || newest_until.is_none_or(|until| until >= cutoff.as_str())
            || synced_at.as_str() >= cutoff.as_str()
            || pinned.contains(rev)
            || data_cid.is_some_and(|d| claimed.contains(&d.to_string()));
        if !keep {
            continue;
        }
        marks.keep_commits.insert(rev.clone());
        if let Ok(c) = Cid::try_from(commit.as_slice()) {
            marks.keep_blocks.insert(c);
        }
        if let Some(d) = data_cid {
            roots.push(d);
        }
    }
    // Every distinct node once: a node already marked brings its whole subtree with it.
    let mut stack = roots;
    let mut refs = Vec::new();
    while let Some(cid) = stack.pop() {
        if !marks.keep_blocks.insert(cid) {
            continue;
        }
        let Some(bytes) = get_block(conn, repo_id, &cid)? else {
            marks.missing += 1;
            continue;
        };
        let Ok(node) = mst::decode_node(&cid, &bytes) else {
            continue;
        };
        stack.extend(node.left);
        for e in node.entries {
            stack.extend(e.right);
            if marks.keep_blocks.insert(e.value) {
                match get_block(conn, repo_id, &e.value)? {
                    Some(record) => {
                        if let Ok(value) = crate::repo::record::to_json(&record) {
                            refs.clear();
                            crate::repo::record::blob_refs(&value, &mut refs);
                            marks.keep_blobs.extend(refs.drain(..));
                        }
                    }
                    None => marks.missing += 1,
                }
            }
        }
    }
    Ok(marks)
}

/// The blocks, states and blob rows of one account that are not marked.
struct Sweep {
    block_ids: Vec<i64>,
    bytes: u64,
    commits: Vec<String>,
    blobs: Vec<(String, Option<i64>)>,
}

fn sweep_of(conn: &Connection, repo_id: i64, marks: &Marks) -> Result<Sweep, StoreError> {
    let mut sweep = Sweep {
        block_ids: Vec::new(),
        bytes: 0,
        commits: Vec::new(),
        blobs: Vec::new(),
    };
    {
        let mut stmt =
            conn.prepare_cached("SELECT id, cid, length(data) FROM blocks WHERE repo_id = ?1")?;
        let mut rows = stmt.query([repo_id])?;
        while let Some(r) = rows.next()? {
            let cid: Vec<u8> = r.get(1)?;
            let keep = Cid::try_from(cid.as_slice()).is_ok_and(|c| marks.keep_blocks.contains(&c));
            if !keep {
                sweep.block_ids.push(r.get(0)?);
                sweep.bytes += r.get::<_, i64>(2)?.max(0) as u64;
            }
        }
    }
    {
        let mut stmt = conn.prepare_cached("SELECT rev FROM commits WHERE repo_id = ?1")?;
        let rows = stmt.query_map([repo_id], |r| r.get::<_, String>(0))?;
        for rev in rows {
            let rev = rev?;
            if !marks.keep_commits.contains(&rev) {
                sweep.commits.push(rev);
            }
        }
    }
    {
        let mut stmt = conn.prepare_cached("SELECT cid, size FROM blobs WHERE repo_id = ?1")?;
        let rows = stmt.query_map([repo_id], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
        for row in rows {
            let (cid, size) = row?;
            if !marks.keep_blobs.contains(&cid) {
                sweep.blobs.push((cid, size));
            }
        }
    }
    Ok(sweep)
}

fn accounts(conn: &Connection) -> Result<Vec<(i64, String, Option<String>)>, StoreError> {
    let mut stmt = conn.prepare("SELECT id, did, handle FROM repos ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn retention_days(opts: &GcOptions) -> f64 {
    (opts.retention.as_secs_f64() / 86_400.0 * 1000.0).round() / 1000.0
}

/// Blob CIDs no longer named by any account after `removed` rows go.
fn orphan_files(
    conn: &Connection,
    removed: &HashMap<String, HashSet<i64>>,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT repo_id FROM blobs WHERE cid = ?1")?;
    let mut out = Vec::new();
    for (cid, repos) in removed {
        let holders = stmt
            .query_map([cid], |r| r.get::<_, i64>(0))?
            .collect::<Result<HashSet<i64>, _>>()?;
        if holders.is_subset(repos) {
            out.push(cid.clone());
        }
    }
    out.sort();
    Ok(out)
}

fn file_size(blob_dir: &Path, cid: &str) -> u64 {
    std::fs::metadata(crate::store::blob_path(blob_dir, cid))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// The figures a collection would have now, changing nothing.
pub fn plan(conn: &Connection, blob_dir: &Path, opts: &GcOptions) -> Result<GcReport, StoreError> {
    let mut report = GcReport {
        dry_run: true,
        retention_days: retention_days(opts),
        ..Default::default()
    };
    let mut removed: HashMap<String, HashSet<i64>> = HashMap::new();
    for (repo_id, did, handle) in accounts(conn)? {
        let marks = mark(conn, repo_id, &did, opts)?;
        let sweep = sweep_of(conn, repo_id, &marks)?;
        for (cid, _) in &sweep.blobs {
            removed.entry(cid.clone()).or_default().insert(repo_id);
        }
        report
            .accounts
            .push(account_figures(did, handle, &marks, &sweep));
    }
    finish_figures(&mut report);
    for cid in orphan_files(conn, &removed)? {
        report.blob_files_removed += 1;
        report.blob_bytes_removed += file_size(blob_dir, &cid);
    }
    for (_, bytes) in crate::store::blobfiles::unreferenced(conn, blob_dir)? {
        report.blob_files_removed += 1;
        report.blob_bytes_removed += bytes;
    }
    report.reclaimable_bytes = report.bytes_removed + report.blob_bytes_removed;
    Ok(report)
}

fn account_figures(did: String, handle: Option<String>, marks: &Marks, sweep: &Sweep) -> GcAccount {
    GcAccount {
        did,
        handle,
        keep_since: marks.keep_since.clone(),
        states_kept: marks.keep_commits.len() as u64,
        states_removed: sweep.commits.len() as u64,
        blocks_removed: sweep.block_ids.len() as u64,
        bytes_removed: sweep.bytes,
        blobs_removed: sweep.blobs.len() as u64,
        blob_bytes_removed: sweep
            .blobs
            .iter()
            .map(|(_, s)| s.unwrap_or(0).max(0) as u64)
            .sum(),
        blocks_missing: marks.missing,
    }
}

fn finish_figures(report: &mut GcReport) {
    for a in &report.accounts {
        report.states_removed += a.states_removed;
        report.blocks_removed += a.blocks_removed;
        report.bytes_removed += a.bytes_removed;
    }
}

/// Collects: each account in its own transaction, then the blob files nobody names.
pub fn run(
    conn: &mut Connection,
    blob_dir: &Path,
    opts: &GcOptions,
) -> Result<GcReport, StoreError> {
    let mut report = GcReport {
        dry_run: false,
        retention_days: retention_days(opts),
        ..Default::default()
    };
    for (repo_id, did, handle) in accounts(conn)? {
        let tx = conn.transaction()?;
        let marks = mark(&tx, repo_id, &did, opts)?;
        let sweep = sweep_of(&tx, repo_id, &marks)?;
        {
            let mut del = tx.prepare_cached("DELETE FROM blocks WHERE id = ?1")?;
            for id in &sweep.block_ids {
                del.execute([id])?;
            }
            let mut del =
                tx.prepare_cached("DELETE FROM commits WHERE repo_id = ?1 AND rev = ?2")?;
            for rev in &sweep.commits {
                del.execute(params![repo_id, rev])?;
            }
            let mut del = tx.prepare_cached("DELETE FROM blobs WHERE repo_id = ?1 AND cid = ?2")?;
            for (cid, _) in &sweep.blobs {
                del.execute(params![repo_id, cid])?;
            }
        }
        tx.execute(
            "UPDATE repos SET blocks = max(0, blocks - ?2), bytes = max(0, bytes - ?3) WHERE id = ?1",
            params![repo_id, sweep.block_ids.len() as i64, sweep.bytes as i64],
        )?;
        tx.commit()?;
        if !sweep.block_ids.is_empty() || !sweep.commits.is_empty() {
            tracing::info!(%did, states = sweep.commits.len(), blocks = sweep.block_ids.len(), "history collected");
        }
        report
            .accounts
            .push(account_figures(did, handle, &marks, &sweep));
    }
    finish_figures(&mut report);
    // The files no account names any more: those whose last rows went above, an account
    // removed mid-download, a crash's leftovers.
    let (files, bytes) = crate::store::blobfiles::remove_unreferenced(conn, blob_dir)?;
    report.blob_files_removed += files;
    report.blob_bytes_removed += bytes;
    report.reclaimable_bytes = report.bytes_removed + report.blob_bytes_removed;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::mst::MstError;
    use ipld_core::ipld::Ipld;
    use std::collections::BTreeMap;

    const DAY: i64 = 86_400;

    fn ago(now: DateTime<Utc>, days: i64) -> String {
        text(now - chrono::Duration::seconds(days * DAY))
    }

    fn put(c: &Connection, cid: &Cid, bytes: &[u8]) {
        c.execute(
            "INSERT OR IGNORE INTO blocks (repo_id, cid, data) VALUES (1, ?1, ?2)",
            params![cid.to_bytes(), bytes],
        )
        .unwrap();
    }

    fn record(text: &str, blob: Option<Cid>) -> (Cid, Vec<u8>) {
        let mut map = BTreeMap::new();
        map.insert("text".to_string(), Ipld::String(text.into()));
        if let Some(b) = blob {
            let mut r = BTreeMap::new();
            r.insert("$type".to_string(), Ipld::String("blob".into()));
            r.insert("ref".to_string(), Ipld::Link(b));
            map.insert("image".to_string(), Ipld::Map(r));
        }
        let bytes = serde_ipld_dagcbor::to_vec(&Ipld::Map(map)).unwrap();
        (crate::repo::cid_for_cbor(&bytes), bytes)
    }

    /// One account with three states synced 40, 25 and 1 days ago:
    /// s1 = {a: r1, b: r2 (with a picture)}, s2 = {a: r1, b: r3}, s3 = {a: r1} (the head).
    fn store(now: DateTime<Utc>) -> (Connection, [String; 3], String) {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut c, Path::new(":memory:")).unwrap();
        let picture = crate::repo::cid_for(0x55, b"picture");
        let r1 = record("one", None);
        let r2 = record("two", Some(picture));
        let r3 = record("three", None);
        for (cid, bytes) in [&r1, &r2, &r3] {
            put(&c, cid, bytes);
        }
        let trees: [Vec<(Vec<u8>, Cid)>; 3] = [
            vec![(b"app.x/a".to_vec(), r1.0), (b"app.x/b".to_vec(), r2.0)],
            vec![(b"app.x/a".to_vec(), r1.0), (b"app.x/b".to_vec(), r3.0)],
            vec![(b"app.x/a".to_vec(), r1.0)],
        ];
        let revs = [
            crate::repo::tid::format(1, 0),
            crate::repo::tid::format(2, 0),
            crate::repo::tid::format(3, 0),
        ];
        let mut roots = Vec::new();
        for (i, tree) in trees.iter().enumerate() {
            let root = mst::build(tree, &mut |cid, bytes| put(&c, &cid, &bytes));
            let commit = crate::repo::cid_for_cbor(format!("commit {i}").as_bytes());
            put(&c, &commit, format!("commit {i}").as_bytes());
            c.execute(
                "INSERT INTO commits (repo_id, rev, cid, data, synced_at, creates, updates, deletes)
                 VALUES (1, ?1, ?2, ?3, ?4, 0, 0, 0)",
                params![revs[i], commit.to_bytes(), root.to_bytes(), ago(now, [40, 25, 1][i])],
            )
            .unwrap();
            roots.push(root.to_string());
        }
        c.execute(
            "INSERT INTO repos (id, did, added_at, rev) VALUES (1, 'did:plc:a', 'x', ?1)",
            [&revs[2]],
        )
        .unwrap();
        c.execute(
            "INSERT INTO blobs (repo_id, cid, state, size, error, updated_at)
             VALUES (1, ?1, 'stored', 7, NULL, 'x')",
            [picture.to_string()],
        )
        .unwrap();
        (c, revs, roots[0].clone())
    }

    fn opts(now: DateTime<Utc>, days: u64) -> GcOptions {
        GcOptions {
            retention: std::time::Duration::from_secs(days * DAY as u64),
            now,
        }
    }

    fn kept(c: &Connection) -> Vec<String> {
        super::super::states(c, 1)
            .unwrap()
            .into_iter()
            .map(|s| s.rev)
            .collect()
    }

    #[test]
    fn states_newest_within_the_window_stay_and_only_unneeded_blocks_go() {
        let now = Utc::now();
        let dir = tempfile::tempdir().unwrap();
        let (mut c, revs, _) = store(now);
        let plan = plan(&c, dir.path(), &opts(now, 7)).unwrap();
        let done = run(&mut c, dir.path(), &opts(now, 7)).unwrap();
        // s1 was newest until 25 days ago: out of a 7-day window. s2 was newest until a day ago.
        assert_eq!(kept(&c), revs[1..].to_vec());
        assert_eq!(done.states_removed, 1);
        // s1's root node, its commit and r2 go; r1 (shared) stays; the picture row goes.
        assert_eq!(done.blocks_removed, 3);
        assert_eq!(done.accounts[0].blobs_removed, 1);
        assert_eq!(plan.reclaimable_bytes, done.reclaimable_bytes);
        assert!(done.bytes_removed > 0);
        // Every kept tree is still whole.
        let mut src = crate::export::StoreSource {
            conn: &c,
            repo_id: 1,
        };
        for s in super::super::states(&c, 1).unwrap() {
            let root: Cid = s.data.parse().unwrap();
            let mut leaves = 0;
            mst::walk(&mut src, root, |_, cid| {
                assert!(get_block(&c, 1, cid).unwrap().is_some());
                leaves += 1;
                Ok::<(), MstError>(())
            })
            .unwrap();
            assert!(leaves >= 1);
        }
        let again = run(&mut c, dir.path(), &opts(now, 7)).unwrap();
        assert_eq!(again.reclaimable_bytes, 0);
        assert_eq!(again.states_removed, 0);
    }

    #[test]
    fn pinned_claimed_and_circle_states_stay() {
        let now = Utc::now();
        let dir = tempfile::tempdir().unwrap();
        // A flag pins s1 as the last good state.
        let (mut c, revs, _) = store(now);
        super::super::raise(
            &c,
            1,
            super::super::kind::MASS_DELETION,
            "all gone",
            Some(&revs[0]),
        )
        .unwrap();
        run(&mut c, dir.path(), &opts(now, 7)).unwrap();
        assert_eq!(kept(&c), revs.to_vec());
        // A peer said it held s1's tree 10 days ago: this node must still be able to check it.
        let (mut c, revs, root1) = store(now);
        c.execute(
            "INSERT INTO holding_claims VALUES ('did:plc:peer', 'did:plc:a', ?1, ?2, ?3)",
            params![revs[0], root1, ago(now, 10)],
        )
        .unwrap();
        run(&mut c, dir.path(), &opts(now, 7)).unwrap();
        assert_eq!(kept(&c), revs.to_vec());
        // A circle covers the account: its window is at least 30 days, and s1 was newest
        // until 25 days ago.
        let (mut c, revs, _) = store(now);
        c.execute(
            "INSERT INTO circle_subjects VALUES ('at://x', 'did:plc:a', 1, 1)",
            [],
        )
        .unwrap();
        run(&mut c, dir.path(), &opts(now, 7)).unwrap();
        assert_eq!(kept(&c), revs.to_vec());
        // Without any of these, a 7-day window drops it.
        let (mut c, revs, _) = store(now);
        run(&mut c, dir.path(), &opts(now, 7)).unwrap();
        assert_eq!(kept(&c), revs[1..].to_vec());
    }
}
