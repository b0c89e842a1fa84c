//! The transport against a stream host of the test's own (frames it chooses, connections it
//! drops): resuming after the cursor, the frame cap, silence, backoff.

use std::sync::Mutex;

use futures_util::SinkExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// Counts frames; a frame is its own sequence number as 8 big-endian bytes.
#[derive(Default)]
struct Counting {
    seen: Mutex<Vec<i64>>,
}

impl Handler for Counting {
    async fn handle(&self, _host: &str, frame: Vec<u8>) -> Handled {
        let Ok(bytes) = <[u8; 8]>::try_from(frame.as_slice()) else {
            return Handled::NoSeq;
        };
        let seq = i64::from_be_bytes(bytes);
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(seq);
        }
        Handled::Seq(seq)
    }
}

fn quick() -> FollowConfig {
    FollowConfig {
        ping_every: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(2),
        backoff_floor: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(100),
        save_every: Duration::from_millis(0),
        ..FollowConfig::default()
    }
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("p2pds.sqlite")).unwrap();
    (dir, store)
}

/// A host that, on each connection, records the cursor asked for, sends the frames
/// `next(cursor)` gives, then drops the connection (or keeps it open and silent, if `hang`).
/// (The handshake callback's error type is the library's, large.)
#[allow(clippy::result_large_err)]
async fn host(
    next: impl Fn(Option<i64>) -> Vec<Vec<u8>> + Send + Sync + 'static,
    hang: bool,
) -> (String, std::sync::Arc<Mutex<Vec<Option<i64>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let asked = std::sync::Arc::new(Mutex::new(Vec::new()));
    let asked2 = asked.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let cursor = std::sync::Arc::new(Mutex::new(None));
            let c2 = cursor.clone();
            let callback =
                move |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                    let q = req.uri().query().unwrap_or("");
                    *c2.lock().unwrap() = q
                        .strip_prefix("cursor=")
                        .and_then(|c| c.parse::<i64>().ok());
                    Ok(resp)
                };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                continue;
            };
            let asked_cursor = *cursor.lock().unwrap();
            asked2.lock().unwrap().push(asked_cursor);
            for frame in next(asked_cursor) {
                if ws.send(Message::Binary(frame.into())).await.is_err() {
                    break;
                }
            }
            if hang {
                // Silent: no frames, no answers to pings (the socket is not read).
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            drop(ws);
        }
    });
    (url, asked)
}

fn frames(from: i64, to: i64) -> Vec<Vec<u8>> {
    (from..=to).map(|s| s.to_be_bytes().to_vec()).collect()
}

#[tokio::test]
async fn a_reconnection_resumes_after_the_last_frame_handled() {
    let (_dir, store) = store().await;
    // Each connection delivers the next 5 frames after the cursor, then drops.
    let (url, asked) = host(
        |cursor| {
            let from = cursor.unwrap_or(0) + 1;
            if from > 20 {
                Vec::new()
            } else {
                frames(from, from + 4)
            }
        },
        false,
    )
    .await;
    let handler = Counting::default();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let waiter = async {
        for _ in 0..200 {
            if handler.seen.lock().unwrap().len() >= 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
    };
    tokio::join!(
        follow_host(store.clone(), url.clone(), &handler, quick(), cancel),
        waiter
    );
    // Every frame once, in order, across four connections.
    assert_eq!(*handler.seen.lock().unwrap(), (1..=20).collect::<Vec<_>>());
    let asked = asked.lock().unwrap().clone();
    assert_eq!(&asked[..4], [None, Some(5), Some(10), Some(15)]);
    let state = store
        .read(move |c| host_state(c, &url))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.cursor, Some(20));
    assert_eq!(state.state, "stopped");
}

#[tokio::test]
async fn an_oversized_frame_ends_the_connection_and_a_silent_host_is_dropped() {
    let (_dir, store) = store().await;
    let (url, asked) = host(|_| vec![vec![0u8; 4096]], false).await;
    let handler = Counting::default();
    let config = FollowConfig {
        max_frame: 1024,
        ..quick()
    };
    let outcome = follow_once(
        &store,
        &url,
        &handler,
        &config,
        &CancellationToken::new(),
        &mut false,
    )
    .await;
    assert!(
        matches!(outcome, Err(FollowError::TooLarge { max: 1024, .. })),
        "{outcome:?}"
    );
    assert!(handler.seen.lock().unwrap().is_empty());
    assert_eq!(asked.lock().unwrap().len(), 1);

    let (url, _) = host(|_| frames(1, 1), true).await;
    let started = std::time::Instant::now();
    let outcome = follow_once(
        &store,
        &url,
        &handler,
        &quick(),
        &CancellationToken::new(),
        &mut false,
    )
    .await;
    assert!(
        matches!(outcome, Err(FollowError::Silent(_))),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(*handler.seen.lock().unwrap(), [1]);
}

#[tokio::test]
async fn nothing_listening_is_tried_again_less_and_less_often() {
    let (_dir, store) = store().await;
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let handler = Counting::default();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let u = url.clone();
    let s = store.clone();
    let watcher = async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let state = s.read(move |c| host_state(c, &u)).await.unwrap().unwrap();
        stop.cancel();
        state
    };
    let (_, state) = tokio::join!(follow_host(store, url, &handler, quick(), cancel), watcher);
    assert_eq!(state.state, "reconnecting");
    assert!(state.error.unwrap().contains("could not connect"));
}

#[test]
fn stream_addresses() {
    assert_eq!(
        stream_url("https://pds.example.com", Some(42)).unwrap(),
        "wss://pds.example.com/xrpc/com.atproto.sync.subscribeRepos?cursor=42"
    );
    assert_eq!(
        stream_url("http://127.0.0.1:2583/", None).unwrap(),
        "ws://127.0.0.1:2583/xrpc/com.atproto.sync.subscribeRepos"
    );
    assert!(stream_url("ftp://x", None).is_err());
    assert!(stream_url("not a url", None).is_err());
}

#[tokio::test]
async fn an_account_is_followed_through_its_server_or_a_relay() {
    let (_dir, store) = store().await;
    let state = |host: &'static str, state: &'static str| {
        let s = store.clone();
        async move { cursor::set_state(&s, host, state, None).await.unwrap() }
    };
    let how = |pds: Option<&'static str>| {
        let s = store.clone();
        async move { s.read(move |c| how_followed(c, pds)).await.unwrap() }
    };
    store
        .write(|c| crate::store::add_repo(c, "did:plc:alice", None, Some("https://a.example")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(how(Some("https://a.example")).await, "polling");
    state("https://a.example", "live").await;
    assert_eq!(how(Some("https://a.example")).await, "live");
    state("https://a.example", "reconnecting").await;
    assert_eq!(how(Some("https://a.example")).await, "catching-up");
    // Its server no longer followed, a relay instead (a host that is no account's server).
    state("https://a.example", "stopped").await;
    state("https://relay.example", "reconnecting").await;
    assert_eq!(how(Some("https://a.example")).await, "catching-up");
    state("https://relay.example", "live").await;
    assert_eq!(how(Some("https://a.example")).await, "live");
    state("https://relay.example", "stopped").await;
    assert_eq!(how(Some("https://a.example")).await, "polling");
}

/// A connection that delivered events and then ended starts the wait from the floor again:
/// a host that drops every connection after one event is not waited on longer and longer.
#[tokio::test]
async fn after_a_connection_that_delivered_the_wait_starts_from_the_floor() {
    let (_dir, store) = store().await;
    let (url, asked) = host(
        |cursor| {
            let next = cursor.unwrap_or(0) + 1;
            if next > 12 {
                Vec::new()
            } else {
                frames(next, next)
            }
        },
        false,
    )
    .await;
    let handler = Counting::default();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    // Doubling from 10 ms, twelve connections would take 40 s; from the floor each time,
    // well under a second. The bound lies between.
    let config = FollowConfig {
        backoff_floor: Duration::from_millis(10),
        backoff_cap: Duration::from_secs(60),
        ..quick()
    };
    let waiter = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while handler.seen.lock().unwrap().len() < 12 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
    };
    tokio::join!(follow_host(store, url, &handler, config, cancel), waiter);
    assert_eq!(*handler.seen.lock().unwrap(), (1..=12).collect::<Vec<_>>());
    assert!(asked.lock().unwrap().len() >= 12);
}
