//! Real-time capture against the reference PDS: while the node follows the server's event
//! stream, every commit of every account backed up becomes a verified kept version as it
//! happens, a mass deletion between two polls is flagged with the version just before it, a
//! handle change is seen from the `#identity` event, and an image a new record names is
//! fetched right after its commit.

use std::collections::BTreeMap;
use std::time::Duration;

use p2pds::engine::{Node, NodeConfig, NodeEvent, OpKinds, PassOptions};
use p2pds::follow::FollowConfig;
use p2pds::store;
use serde_json::{json, Value};

use crate::pds::{self, Account};

pub(crate) fn post(text: &str) -> Value {
    json!({"$type": "app.bsky.feed.post", "text": text, "createdAt": "2024-01-01T00:00:00Z"})
}

async fn xrpc_post(acct: &Account, nsid: &str, body: Value) -> Value {
    let res = reqwest::Client::new()
        .post(format!("{}/xrpc/{nsid}", acct.pds))
        .bearer_auth(&acct.access_jwt)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    assert!(status.is_success(), "{nsid}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Waits (at most `secs`) until `check` holds.
pub(crate) async fn until<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records an account holds here: "collection/rkey" → CID.
pub(crate) async fn held_records(node: &Node, did: &str) -> BTreeMap<String, String> {
    let did = did.to_string();
    node.store()
        .read(move |c| {
            let mut stmt = c.prepare(
                "SELECT r.collection, r.rkey, r.cid FROM records r JOIN repos p ON p.id = r.repo_id
                 WHERE p.did = ?1",
            )?;
            let rows = stmt
                .query_map([&did], |r| {
                    let cid: Vec<u8> = r.get(2)?;
                    Ok((
                        format!("{}/{}", r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                        cid::Cid::try_from(cid.as_slice()).unwrap().to_string(),
                    ))
                })?
                .collect::<Result<BTreeMap<_, _>, _>>()?;
            Ok(rows)
        })
        .await
        .unwrap()
}

pub(crate) async fn server_records(acct: &Account) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for collection in acct.list_collections().await.unwrap() {
        for (uri, cid, _) in acct.list_records(&collection).await.unwrap() {
            let rkey = uri.rsplit('/').next().unwrap().to_string();
            out.insert(format!("{collection}/{rkey}"), cid);
        }
    }
    out
}

pub(crate) async fn kept_versions(node: &Node, did: &str) -> i64 {
    let did = did.to_string();
    node.store()
        .read(move |c| {
            Ok(c.query_row(
                "SELECT count(*) FROM commits m JOIN repos r ON r.id = m.repo_id WHERE r.did = ?1",
                [&did],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_commit_is_kept_as_it_happens() {
    let bed = pds::shared().await;
    let mut accts = Vec::new();
    for name in ["live-a", "live-b", "live-c"] {
        let acct = bed.create_account(name).await.unwrap();
        for i in 0..3 {
            acct.create_record("app.bsky.feed.post", post(&format!("{name} {i}")))
                .await
                .unwrap();
        }
        accts.push(acct);
    }
    // The third has enough posts for their deletion at once to count as a mass deletion.
    accts[2]
        .apply_writes_create_many(
            "app.bsky.feed.post",
            (0..25).map(|i| post(&format!("old {i}"))).collect(),
        )
        .await
        .unwrap();

    // A node that polls only once an hour: what it keeps in between comes from the stream.
    let dir = tempfile::tempdir().unwrap();
    let node = hourly_node(dir.path(), &accts.iter().collect::<Vec<_>>()).await;
    for acct in &accts {
        assert_eq!(kept_versions(&node, &acct.did).await, 1);
    }
    let mut events = node.subscribe();
    let (runner, follower) = (node.clone(), node.clone());
    let running = tokio::spawn(async move { runner.run().await });
    let following = tokio::spawn(async move { follower.follow(FollowConfig::default()).await });
    wait_live(&node, &bed.pds).await;

    // Posts, likes, an edit and deletes on each account: one commit each.
    let mut commits: BTreeMap<String, i64> = BTreeMap::new();
    for (i, acct) in accts.iter().enumerate() {
        let mut made = 0;
        let (first, _) = acct
            .create_record("app.bsky.feed.post", post("to be deleted"))
            .await
            .unwrap();
        made += 1;
        for j in 0..3 {
            acct.create_record("app.bsky.feed.post", post(&format!("live {i} {j}")))
                .await
                .unwrap();
            made += 1;
        }
        let subject = accts[(i + 1) % accts.len()].did.clone();
        acct.create_record(
            "app.bsky.graph.follow",
            json!({"$type": "app.bsky.graph.follow", "subject": subject, "createdAt": "2024-01-01T00:00:00Z"}),
        )
        .await
        .unwrap();
        made += 1;
        acct.put_record(
            "app.bsky.actor.profile",
            "self",
            json!({"$type": "app.bsky.actor.profile", "displayName": format!("Live {i}")}),
        )
        .await
        .unwrap();
        made += 1;
        acct.delete_record("app.bsky.feed.post", first.rsplit('/').next().unwrap())
            .await
            .unwrap();
        made += 1;
        commits.insert(acct.did.clone(), made);
    }
    // A mass deletion in one burst: every post of the third account, in one commit.
    let doomed = &accts[2];
    let deletes: Vec<Value> = doomed
        .list_records("app.bsky.feed.post")
        .await
        .unwrap()
        .iter()
        .map(|(uri, _, _)| {
            json!({"$type": "com.atproto.repo.applyWrites#delete",
                   "collection": "app.bsky.feed.post",
                   "rkey": uri.rsplit('/').next().unwrap()})
        })
        .collect();
    assert!(deletes.len() >= 6);
    let before_burst = doomed.latest_commit().await.unwrap().1;
    xrpc_post(
        doomed,
        "com.atproto.repo.applyWrites",
        json!({"repo": doomed.did, "writes": deletes}),
    )
    .await;
    *commits.get_mut(&doomed.did).unwrap() += 1;
    let made: i64 = commits.values().sum();

    // Every commit arrives, verified and kept.
    let mut captured: BTreeMap<String, i64> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while captured.values().sum::<i64>() < made {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(NodeEvent::CommitCaptured { applied })) => {
                *captured.entry(applied.did).or_default() += 1;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("events: {e}"),
            Err(_) => panic!("captured {captured:?} of {commits:?}"),
        }
    }
    assert_eq!(captured, commits);
    for acct in &accts {
        assert_eq!(
            kept_versions(&node, &acct.did).await,
            1 + commits[&acct.did],
            "{}",
            acct.handle
        );
        assert_eq!(
            held_records(&node, &acct.did).await,
            server_records(acct).await
        );
    }
    // The burst is flagged, with the version from just before it kept as the good one.
    let flags = node.store().read(p2pds::history::open_flags).await.unwrap();
    let burst = flags
        .iter()
        .find(|(did, _, f)| did == &doomed.did && f.kind == "mass-deletion")
        .unwrap_or_else(|| panic!("no mass deletion flag: {flags:?}"));
    assert_eq!(burst.2.good_rev.as_deref(), Some(before_burst.as_str()));

    // A profile picture: kept from the stream, its image fetched right after, hashed.
    let first = &accts[0];
    let png = first
        .upload_blob(b"\x89PNG\r\n\x1a\n live".to_vec(), "image/png")
        .await
        .unwrap();
    let blob = png["ref"]["$link"].as_str().unwrap().to_string();
    first
        .put_record(
            "app.bsky.actor.profile",
            "self",
            json!({"$type": "app.bsky.actor.profile", "displayName": "Live 0", "avatar": png}),
        )
        .await
        .unwrap();
    let n = node.clone();
    let did = first.did.clone();
    until(30, "the new image is fetched", || {
        let (n, did, blob) = (n.clone(), did.clone(), blob.clone());
        async move {
            n.store()
                .read(move |c| {
                    Ok(c.query_row(
                        "SELECT count(*) FROM blobs b JOIN repos r ON r.id = b.repo_id
                         WHERE r.did = ?1 AND b.cid = ?2 AND b.state = 'stored'",
                        [&did, &blob],
                        |r| r.get::<_, i64>(0),
                    )?)
                })
                .await
                .unwrap_or(0)
                == 1
        }
    })
    .await;

    // A new handle, seen from the #identity event (polling would wait an hour).
    let second = &accts[1];
    let handle = format!("{}x.test", second.handle.trim_end_matches(".test"));
    xrpc_post(
        second,
        "com.atproto.identity.updateHandle",
        json!({ "handle": handle }),
    )
    .await;
    let did = second.did.clone();
    let n = node.clone();
    let want = handle.clone();
    until(30, "the new handle is seen", || {
        let (n, did, want) = (n.clone(), did.clone(), want.clone());
        async move {
            n.store()
                .read(store::list_repos)
                .await
                .unwrap_or_default()
                .iter()
                .any(|r| r.did == did && r.handle.as_deref() == Some(want.as_str()))
        }
    })
    .await;

    node.stop();
    let _ = tokio::time::timeout(Duration::from_secs(15), running).await;
    let _ = tokio::time::timeout(Duration::from_secs(15), following).await;
}

/// A node that polls once an hour, holding a first copy of `accts`.
pub(crate) async fn hourly_node(dir: &std::path::Path, accts: &[&Account]) -> Node {
    hourly_node_with(dir, accts, |_| {}).await
}

/// [`hourly_node`], its configuration changed by `tweak` first.
async fn hourly_node_with(
    dir: &std::path::Path,
    accts: &[&Account],
    tweak: impl FnOnce(&mut NodeConfig),
) -> Node {
    let bed = pds::shared().await;
    // Handles resolve through the PDS: a `.test` handle has no DNS, and only a handle that
    // resolves back to its account is stored.
    let mut config = NodeConfig::new(dir.to_path_buf(), &bed.plc, Some(&bed.pds));
    config.schedule.tick = Duration::from_millis(200);
    config.schedule.sync_every = Duration::from_secs(3600);
    config.schedule.live_sync_every = Duration::from_secs(3600);
    config.schedule.ops = OpKinds {
        sync: true,
        ..OpKinds::VERIFY
    };
    config.schedule.ops.verify = false;
    tweak(&mut config);
    let node = Node::open(config).unwrap();
    for acct in accts {
        let did = acct.did.clone();
        node.store()
            .write(move |c| store::add_repo(c, &did, None, None))
            .await
            .unwrap()
            .unwrap();
    }
    node.pass(PassOptions {
        forced: true,
        peer: None,
    })
    .await;
    node
}

/// Follows `host` with the node's capture until `cancel`; counts what it kept.
pub(crate) fn follow_counting(
    node: &Node,
    host: &str,
    cancel: tokio_util::sync::CancellationToken,
    kept: std::sync::Arc<std::sync::Mutex<Vec<(String, std::time::Instant)>>>,
) -> tokio::task::JoinHandle<()> {
    let notify: p2pds::follow::Notify = std::sync::Arc::new(move |news| {
        if let p2pds::follow::Captured::Kept(a) = news {
            kept.lock()
                .unwrap()
                .push((a.rev, std::time::Instant::now()));
        }
    });
    let capture = p2pds::follow::Capture::new(node.store().clone(), notify);
    let (store, host) = (node.store().clone(), host.to_string());
    tokio::spawn(async move {
        p2pds::follow::follow_host(store, host, &capture, FollowConfig::default(), cancel).await
    })
}

pub(crate) async fn wait_live(node: &Node, host: &str) {
    let n = node.clone();
    let host = host.to_string();
    until(20, "the stream is live", || {
        let (n, host) = (n.clone(), host.clone());
        async move {
            n.store()
                .read(move |c| p2pds::follow::host_state(c, &host))
                .await
                .ok()
                .flatten()
                .is_some_and(|s| s.state == "live")
        }
    })
    .await;
}

/// The follower stops (as when the node or the server restarts) while the account goes on
/// writing; started again, it resumes from its cursor and keeps every commit it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnection_resumes_from_the_cursor_and_loses_no_commit() {
    let bed = pds::shared().await;
    let acct = bed.create_account("resume").await.unwrap();
    acct.create_record("app.bsky.feed.post", post("first"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = hourly_node(dir.path(), &[&acct]).await;
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));

    let cancel = tokio_util::sync::CancellationToken::new();
    let task = follow_counting(&node, &bed.pds, cancel.clone(), kept.clone());
    wait_live(&node, &bed.pds).await;
    for i in 0..5 {
        acct.create_record("app.bsky.feed.post", post(&format!("before {i}")))
            .await
            .unwrap();
    }
    let k = kept.clone();
    until(20, "five commits kept", || {
        let n = k.lock().unwrap().len();
        async move { n == 5 }
    })
    .await;
    cancel.cancel();
    task.await.unwrap();

    // Written while nobody follows.
    for i in 0..5 {
        acct.create_record("app.bsky.feed.post", post(&format!("between {i}")))
            .await
            .unwrap();
    }
    let task = follow_counting(
        &node,
        &bed.pds,
        tokio_util::sync::CancellationToken::new(),
        kept.clone(),
    );
    let k = kept.clone();
    until(20, "the missed commits kept", || {
        let n = k.lock().unwrap().len();
        async move { n == 10 }
    })
    .await;
    task.abort();
    assert_eq!(kept_versions(&node, &acct.did).await, 11);
    assert_eq!(
        held_records(&node, &acct.did).await,
        server_records(&acct).await
    );
}

/// From a write's answer to the verified kept version, over `P2PDS_LAG_WRITES` writes (50 in
/// the suite): every write kept, the lag printed (p50, p95). Run with 1000 for the figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_from_a_write_to_its_kept_version() {
    let writes: usize = std::env::var("P2PDS_LAG_WRITES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let bed = pds::shared().await;
    let acct = bed.create_account("lag").await.unwrap();
    acct.create_record("app.bsky.feed.post", post("first"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = hourly_node(dir.path(), &[&acct]).await;
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = follow_counting(&node, &bed.pds, cancel.clone(), kept.clone());
    wait_live(&node, &bed.pds).await;

    let mut answered = Vec::with_capacity(writes);
    for i in 0..writes {
        let answer = xrpc_post(
            &acct,
            "com.atproto.repo.createRecord",
            json!({"repo": acct.did, "collection": "app.bsky.feed.post",
                   "record": post(&format!("lag {i}"))}),
        )
        .await;
        let at = std::time::Instant::now();
        let rev = answer["commit"]["rev"].as_str().unwrap().to_string();
        answered.push((rev, at));
    }
    let k = kept.clone();
    until(60, "every write kept", || {
        let n = k.lock().unwrap().len();
        async move { n >= writes }
    })
    .await;
    cancel.cancel();
    task.await.unwrap();
    let kept: BTreeMap<String, std::time::Instant> = kept.lock().unwrap().iter().cloned().collect();
    let mut lags: Vec<f64> = answered
        .iter()
        .map(|(rev, at)| {
            let kept_at = kept.get(rev).unwrap_or_else(|| panic!("{rev} not kept"));
            // A commit kept before its write's answer was read counts as no lag.
            kept_at.saturating_duration_since(*at).as_secs_f64() * 1000.0
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    let pick = |q: f64| lags[((lags.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "lag from a write's answer to its kept version over {writes} writes: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        pick(0.5),
        pick(0.95),
        pick(1.0)
    );
    assert_eq!(kept_versions(&node, &acct.did).await, 1 + writes as i64);
}

/// A relay stand-in: every connection forwarded to the server at `to`, from another address,
/// so the node sees a host that is no account's server, as a relay is.
async fn forwarder(to: &str) -> String {
    let target = to.trim_start_matches("http://").to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    format!("http://{addr}")
}

/// With a relay named, the node follows that one stream instead of each server's: the
/// account's commits are kept from it, and the account reads as followed live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_is_followed_instead_of_each_server() {
    let bed = pds::shared().await;
    let acct = bed.create_account("relayed").await.unwrap();
    acct.create_record("app.bsky.feed.post", post("first"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = hourly_node(dir.path(), &[&acct]).await;
    let relay = forwarder(&bed.pds).await;
    let config = FollowConfig {
        relay: Some(relay.clone()),
        ..FollowConfig::default()
    };
    let following = tokio::spawn({
        let node = node.clone();
        async move { node.follow(config).await }
    });
    wait_live(&node, &relay).await;
    for i in 0..3 {
        acct.create_record("app.bsky.feed.post", post(&format!("relayed {i}")))
            .await
            .unwrap();
    }
    let (n, did) = (node.clone(), acct.did.clone());
    until(20, "three commits kept from the relay", || {
        let (n, did) = (n.clone(), did.clone());
        async move { kept_versions(&n, &did).await == 4 }
    })
    .await;
    let (hosts, how) = node
        .store()
        .read({
            let pds = bed.pds.clone();
            move |c| {
                let hosts = c
                    .prepare("SELECT host FROM follow_hosts")?
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, store::StoreError>((hosts, p2pds::follow::how_followed(c, Some(&pds))?))
            }
        })
        .await
        .unwrap();
    assert_eq!(hosts, vec![relay]);
    assert_eq!(how, "live");
    assert_eq!(
        held_records(&node, &acct.did).await,
        server_records(&acct).await
    );
    node.stop();
    let _ = tokio::time::timeout(Duration::from_secs(15), following).await;
}

/// `p2pds run --relay` takes a relay's address; anything else is refused before starting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_is_no_address_is_refused_in_words() {
    let bed = pds::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let out = crate::cli::p2pds(bed, dir.path(), &["run", "--relay", "ftp://relay.example"]).await;
    assert_eq!(out.status.code(), Some(2));
    let words = String::from_utf8_lossy(&out.stderr);
    assert!(words.contains("give the relay's address"), "{words}");
}

/// Polls that come while an account's commits stream in wait for the stream, so they never
/// jump over commits the stream is about to bring: every commit is kept as its own version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_while_commits_stream_in_leave_every_commit_its_own_version() {
    let bed = pds::shared().await;
    let acct = bed.create_account("race").await.unwrap();
    acct.create_record("app.bsky.feed.post", post("first"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A generous wait: the stream answers in milliseconds, a loaded machine may take longer.
    let grace: u64 = std::env::var("P2PDS_STREAM_GRACE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let node = hourly_node_with(dir.path(), &[&acct], |c| {
        c.stream_grace = Some(Duration::from_millis(grace))
    })
    .await;
    let following = tokio::spawn({
        let node = node.clone();
        async move { node.follow(FollowConfig::default()).await }
    });
    wait_live(&node, &bed.pds).await;
    let writes = 12;
    let writer = async {
        for i in 0..writes {
            acct.create_record("app.bsky.feed.post", post(&format!("racing {i}")))
                .await
                .unwrap();
        }
    };
    let poller = async {
        for _ in 0..6 {
            node.pass(PassOptions {
                forced: true,
                peer: None,
            })
            .await;
        }
    };
    tokio::join!(writer, poller);
    let (n, did) = (node.clone(), acct.did.clone());
    until(30, "every commit kept", || {
        let (n, did) = (n.clone(), did.clone());
        async move { kept_versions(&n, &did).await > writes }
    })
    .await;
    assert_eq!(kept_versions(&node, &acct.did).await, 1 + writes);
    assert_eq!(
        held_records(&node, &acct.did).await,
        server_records(&acct).await
    );
    node.stop();
    let _ = tokio::time::timeout(Duration::from_secs(15), following).await;
}
