//! Crash safety: `p2pds sync` killed with SIGKILL at random points, again and
//! again, while the account keeps changing upstream. After every kill the store
//! must be consistent (integrity check, a held copy that walks and verifies
//! completely, blobs that hash to their names); the final sync must complete.
//!
//! The suite lands 6 kills on a 1,500-record account. The long campaign is the same test
//! with more: `P2PDS_CRASH_KILLS=100 P2PDS_CRASH_RECORDS=20000 bash scripts/test --test it
//! crash::` (it prints the count of kills landed and of whole syncs between them).

use std::time::Duration;

use rand::Rng;
use serde_json::json;

use crate::cli::{assert_ok, p2pds, p2pds_json};
use crate::pds;

fn check_consistent(data: &std::path::Path) {
    let conn = rusqlite::Connection::open(data.join("p2pds.sqlite")).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let mut stmt = conn
        .prepare("SELECT did, head, records FROM repos")
        .unwrap();
    let repos: Vec<(String, Option<Vec<u8>>, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (did, head, records) in repos {
        let rows: i64 = conn
            .query_row(
                "SELECT count(*) FROM records WHERE repo_id = (SELECT id FROM repos WHERE did = ?1)",
                [&did],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, records, "records table and repo row disagree");
        if head.is_some() {
            // The held copy is whole: walking it from the signed commit finds every block.
            let report = p2pds::export::write_car(&conn, &did, std::io::sink()).unwrap();
            assert_eq!(report.records as i64, records);
        } else {
            assert_eq!(records, 0);
        }
    }
    let mut stmt = conn
        .prepare("SELECT cid FROM blobs WHERE state = 'stored'")
        .unwrap();
    for cid in stmt.query_map([], |r| r.get::<_, String>(0)).unwrap() {
        let cid = cid.unwrap();
        let bytes = std::fs::read(data.join("blobs").join(&cid)).unwrap();
        let parsed: cid::Cid = cid.parse().unwrap();
        assert_eq!(p2pds::repo::cid_for(parsed.codec(), &bytes), parsed);
    }
}

#[tokio::test]
async fn sync_killed_at_random_points_leaves_a_consistent_store() {
    let bed = pds::shared().await;
    let acct = bed.create_account("crash").await.unwrap();
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (target_kills, records) = (
        env("P2PDS_CRASH_KILLS", 6),
        env("P2PDS_CRASH_RECORDS", 1500),
    );
    let now = chrono::Utc::now().to_rfc3339();
    let posts: Vec<_> = (0..records)
        .map(|i| json!({"$type": "app.bsky.feed.post", "text": format!("post {i} {}", "words ".repeat(20)), "createdAt": now}))
        .collect();
    acct.apply_writes_create_many("app.bsky.feed.post", posts)
        .await
        .unwrap();
    for i in 0..4u8 {
        let blob = acct
            .upload_blob(vec![i; 200_000], "application/octet-stream")
            .await
            .unwrap();
        acct.create_record(
            "org.example.file",
            json!({"$type": "org.example.file", "file": blob}),
        )
        .await
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    assert_ok(
        &p2pds(bed, data, &["backup", "add", &acct.did]).await,
        &["backup", "add"],
    );

    // How long one whole sync takes here: kills land at random points inside it.
    let scratch = tempfile::tempdir().unwrap();
    assert_ok(
        &p2pds(bed, scratch.path(), &["backup", "add", &acct.did]).await,
        &["backup", "add"],
    );
    let started = std::time::Instant::now();
    assert_ok(
        &p2pds(bed, scratch.path(), &["sync", "--once"]).await,
        &["sync"],
    );
    let whole = started.elapsed().as_millis().max(20) as u64;

    let mut kills = 0;
    let mut round = 0;
    let mut whole_syncs = 0;
    while kills < target_kills {
        round += 1;
        assert!(
            round <= 10 * target_kills,
            "only {kills} of {round} runs could be killed mid-way"
        );
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_p2pds"))
            .arg("--data-dir")
            .arg(data)
            .args(["--plc-url", &bed.plc, "sync", "--once"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = rand::thread_rng().gen_range(whole / 20..whole * 19 / 20);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().await.unwrap(); // SIGKILL
            kills += 1;
        }
        let finished = child.wait().await.unwrap().success();
        check_consistent(data);
        if finished {
            whole_syncs += 1;
            // Start over so the next run again has a whole sync to be killed in.
            assert_ok(
                &p2pds(bed, data, &["backup", "remove", &acct.did]).await,
                &["backup", "remove"],
            );
            check_consistent(data);
            assert_ok(
                &p2pds(bed, data, &["backup", "add", &acct.did]).await,
                &["backup", "add"],
            );
        }
        // Keep the account moving so later rounds have new work.
        if round % 3 == 0 {
            acct.create_record("app.bsky.feed.post", json!({"$type": "app.bsky.feed.post", "text": format!("round {round}"), "createdAt": now}))
                .await
                .unwrap();
        }
    }

    eprintln!(
        "crash campaign: {kills} kills landed in {round} runs ({whole_syncs} finished first), \
         {records} records, the store consistent after each"
    );
    let out = p2pds(bed, data, &["sync", "--once"]).await;
    assert_ok(&out, &["sync", "--once"]);
    check_consistent(data);
    let status = p2pds_json(bed, data, &["status", "--json"]).await;
    let (_, rev) = acct.latest_commit().await.unwrap();
    assert_eq!(status["repos"][0]["rev"], rev.as_str());
    assert_eq!(status["repos"][0]["blobs"], 4);
    let posts = acct.list_records("app.bsky.feed.post").await.unwrap();
    assert_eq!(status["repos"][0]["records"], (posts.len() + 4) as i64);
}
