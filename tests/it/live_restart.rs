//! Real-time capture across a restart of the server: the reference PDS stops (its event
//! stream closes) and starts again while the account goes on writing; the follower
//! reconnects, resumes from its cursor, and every commit made is a verified kept version.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p2pds::engine::Node;
use p2pds::follow::{Capture, Captured, FollowConfig, HostState, Notify};
use p2pds::repo::tid;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::live::{
    held_records, hourly_node, kept_versions, post, server_records, until, wait_live,
};
use crate::pds::{self, Account};

/// Posts written before the restart, and again after it.
const N: usize = 5;

/// What the follower's capture reported.
#[derive(Default)]
struct Seen {
    /// Each kept commit's rev, and when.
    kept: Vec<(String, Instant)>,
    /// Accounts the stream could not give verified, each with the count of commits kept
    /// before it.
    needs_sync: Vec<(usize, String)>,
}

/// Follows `host` with the node's capture (reconnecting quickly) until `cancel`.
fn follow(
    node: &Node,
    host: &str,
    cancel: CancellationToken,
    seen: Arc<Mutex<Seen>>,
) -> tokio::task::JoinHandle<()> {
    let notify: Notify = Arc::new(move |news| {
        let mut seen = seen.lock().unwrap();
        match news {
            Captured::Kept(a) => seen.kept.push((a.rev, Instant::now())),
            Captured::NeedsSync { did, why } => {
                let line = (seen.kept.len(), format!("{did}: {why}"));
                seen.needs_sync.push(line);
            }
            _ => {}
        }
    });
    let capture = Capture::new(node.store().clone(), notify);
    let config = FollowConfig {
        backoff_floor: Duration::from_millis(200),
        backoff_cap: Duration::from_secs(2),
        ping_every: Duration::from_secs(5),
        ..FollowConfig::default()
    };
    let (store, host) = (node.store().clone(), host.to_string());
    tokio::spawn(
        async move { p2pds::follow::follow_host(store, host, &capture, config, cancel).await },
    )
}

async fn host_state(node: &Node, host: &str) -> HostState {
    let host = host.to_string();
    node.store()
        .read(move |c| p2pds::follow::host_state(c, &host))
        .await
        .unwrap()
        .expect("the host is followed")
}

/// Writes post number `n` under a record key of its own (a TID made from `n`), trying again
/// until it is on the server: a write cut off by the restart may or may not have been
/// committed, and a record already under that key means it was. → the failed tries.
async fn write_post(acct: &Account, client: &reqwest::Client, n: usize) -> usize {
    let rkey = tid::format(1_700_000_000_000_000 + n as u64, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failed = 0;
    loop {
        let res = client
            .post(format!("{}/xrpc/com.atproto.repo.createRecord", acct.pds))
            .bearer_auth(&acct.access_jwt)
            .json(
                &json!({"repo": acct.did, "collection": "app.bsky.feed.post", "rkey": rkey,
                          "record": post(&format!("restart {n}"))}),
            )
            .send()
            .await;
        let why = match res {
            Ok(r) if r.status().is_success() => return failed,
            Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => format!("{:#}", anyhow::Error::from(e)),
        };
        failed += 1;
        eprintln!("post {n}: a try failed: {why}");
        assert!(
            Instant::now() < deadline,
            "post {n} not written in 60 s: {why}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        if record_exists(acct, client, &rkey).await {
            eprintln!("post {n}: committed all the same");
            return failed;
        }
    }
}

async fn record_exists(acct: &Account, client: &reqwest::Client, rkey: &str) -> bool {
    let res = client
        .get(format!("{}/xrpc/com.atproto.repo.getRecord", acct.pds))
        .query(&[
            ("repo", acct.did.as_str()),
            ("collection", "app.bsky.feed.post"),
            ("rkey", rkey),
        ])
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => r
            .json::<Value>()
            .await
            .is_ok_and(|v| v.get("cid").is_some()),
        _ => false,
    }
}

/// The PDS restarts while the account writes: the follower reconnects and resumes from its
/// cursor, and the count of kept versions is exactly the count of commits made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pds_restarted_mid_stream_loses_no_commit() {
    // A PDS of this test's own (restarting the shared one would break the others), on the
    // shared PLC directory, which the node resolves accounts with.
    let shared = pds::shared().await;
    let bed = shared.start_extra_pds().await.unwrap();
    assert_eq!(bed.plc, shared.plc);
    let acct = bed.create_account("restart").await.unwrap();
    acct.create_record("app.bsky.feed.post", post("first"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // It polls once an hour and does not run its passes: only the stream keeps versions.
    let node = hourly_node(dir.path(), &[&acct]).await;
    assert_eq!(kept_versions(&node, &acct.did).await, 1);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let cancel = CancellationToken::new();
    let task = follow(&node, &bed.pds, cancel.clone(), seen.clone());
    wait_live(&node, &bed.pds).await;
    let client = reqwest::Client::new();
    let mut next = 0;
    let mut failed = 0;
    for _ in 0..N {
        failed += write_post(&acct, &client, next).await;
        next += 1;
    }
    let s = seen.clone();
    until(30, "the first posts kept", || {
        let n = s.lock().unwrap().kept.len();
        async move { n == N }
    })
    .await;
    let before = host_state(&node, &bed.pds).await;
    assert_eq!(before.state, "live");

    // A writer that goes on through the restart; it counts the writes it saw answered while
    // the follower was away (they reach it from its cursor, once it is back).
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let (acct, client, node, host) =
            (acct.clone(), client.clone(), node.clone(), bed.pds.clone());
        let (stop, written) = (stop.clone(), written.clone());
        async move {
            let (mut failed, mut away) = (0, 0);
            let mut n = N;
            while !stop.load(Ordering::SeqCst) {
                failed += write_post(&acct, &client, n).await;
                n += 1;
                written.fetch_add(1, Ordering::SeqCst);
                if host_state(&node, &host).await.state != "live" {
                    away += 1;
                }
            }
            (n, failed, away)
        }
    });
    let w = written.clone();
    until(30, "the writer under way", || {
        let n = w.load(Ordering::SeqCst);
        async move { n >= 2 }
    })
    .await;
    let restarted = bed.restart_pds().await.unwrap();
    let back_at = Instant::now();
    let at_restart = written.load(Ordering::SeqCst);
    let w = written.clone();
    until(30, "the writer goes on after the restart", || {
        let n = w.load(Ordering::SeqCst);
        async move { n >= at_restart + 3 }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let (after_writer, writer_failed, away) = writer.await.unwrap();
    next = after_writer;
    failed += writer_failed;
    // The session issued before the restart still writes (the secrets were kept).
    for _ in 0..N {
        failed += write_post(&acct, &client, next).await;
        next += 1;
    }
    let made = next;

    // Every commit made is kept, verified, from the stream.
    let s = seen.clone();
    until(60, "every commit kept", || {
        let n = s.lock().unwrap().kept.len();
        async move { n >= made }
    })
    .await;
    let after = host_state(&node, &bed.pds).await;
    cancel.cancel();
    task.await.unwrap();
    let kept = kept_versions(&node, &acct.did).await;
    let (stream_kept, kept_after_restart, needs_sync) = {
        let seen = seen.lock().unwrap();
        let after = seen.kept.iter().filter(|(_, at)| *at > back_at).count();
        (seen.kept.len(), after, seen.needs_sync.clone())
    };
    eprintln!(
        "PDS restarted mid-stream: {made} commits made ({N} before the writer, {} by it of \
         which {at_restart} before the PDS was back and {away} while the follower was away, {N} \
         after; {failed} writes tried again), \
         {kept} versions kept (1 first copy + {stream_kept} from the stream, \
         {kept_after_restart} after the restart), down {} ms",
        after_writer - N,
        restarted.down.as_millis()
    );
    // The PDS's sequencer broadcasts what it wrote when it next polls its database (up to a
    // second later when idle): the account's creation (`#account`, `#sync`) may reach a
    // follower that connected after it, and it then asks for a backup. From the first kept
    // commit on, the stream is past those: nothing after it may fail to verify.
    assert!(
        needs_sync.iter().all(|(kept_before, _)| *kept_before == 0),
        "{needs_sync:?}"
    );
    assert_eq!(stream_kept, made);
    assert_eq!(kept, 1 + made as i64);
    assert_eq!(
        held_records(&node, &acct.did).await,
        server_records(&acct).await
    );
    assert_eq!(server_records(&acct).await.len(), 1 + made);
    // Only the stream could keep what came after the restart, and it had to reconnect: the
    // host went live again after having been live before.
    assert!(kept_after_restart >= N, "{kept_after_restart} kept after");
    assert_eq!(after.state, "live");
    assert!(
        after.since > before.since,
        "no reconnection: live since {} before the restart, {} after",
        before.since,
        after.since
    );
    assert!(after.cursor > before.cursor, "{after:?} after {before:?}");
}
