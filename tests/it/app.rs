//! The desktop app's engine (what every window command calls), against the reference PDS:
//! first run, adding a friend and watching the backup, a circle from invitation to a healthy
//! dashboard between two app engines, pausing, settings, and alerts raised once.

use std::time::Duration;

use p2pds::app::dto::{ErrorCode, Event, FriendState, Settings, TrayState};
use p2pds::app::{Engine, EngineConfig};
use serde_json::json;

use crate::circles::now;
use crate::pds::{self, Account, TestBed};

pub(crate) fn engine(bed: &TestBed, dir: &std::path::Path) -> Engine {
    Engine::open(EngineConfig {
        data_dir: dir.to_path_buf(),
        plc_url: bed.plc.clone(),
        resolver_url: Some(bed.pds.clone()),
        backlink_index: None,
    })
    .unwrap()
}

/// Runs one pass of each engine (in order, each to its end) until `done` holds for the
/// overview of `watch`. No loop runs in the background: what the test sees is what the passes
/// did, so the same steps give the same result every time.
async fn until<F>(engines: &[&Engine], watch: &Engine, what: &str, mut done: F)
where
    F: FnMut(&p2pds::app::dto::Overview) -> bool,
{
    for _ in 0..30 {
        let o = watch.overview().await.unwrap();
        if done(&o) {
            return;
        }
        for e in engines {
            e.pass().await;
        }
    }
    panic!("{what}: {:#?}", watch.overview().await.unwrap());
}

async fn posts(acct: &Account, n: usize) {
    for i in 0..n {
        acct.create_record(
            "app.bsky.feed.post",
            json!({"$type": "app.bsky.feed.post", "text": format!("hello {i}"), "createdAt": now()}),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn the_engine_behind_the_window() {
    let bed = pds::shared().await;
    let alice = bed.create_account("alice").await.unwrap();
    let bob = bed.create_account("bob").await.unwrap();
    posts(&bob, 3).await;
    // Friends follow each other: that is where Bob's app looks for invitations.
    bob.create_record(
        "app.bsky.graph.follow",
        json!({"$type": "app.bsky.graph.follow", "subject": alice.did, "createdAt": now()}),
    )
    .await
    .unwrap();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = engine(bed, da.path());
    let b = engine(bed, db.path());
    let mut events = a.subscribe();

    // First run: nothing yet, the welcome shows.
    let o = a.overview().await.unwrap();
    assert!(!o.welcomed && o.me.is_none() && o.friends.is_empty());
    assert!(
        o.headline.starts_with("Nobody backed up yet"),
        "{}",
        o.headline
    );
    let o = a.sign_in(&alice.handle, &alice.app_password).await.unwrap();
    assert!(o.welcomed);
    assert_eq!(
        o.me.as_ref().map(|m| m.did.as_str()),
        Some(alice.did.as_str())
    );
    let wrong = b.sign_in(&bob.handle, "not-the-password").await;
    assert_eq!(
        wrong.unwrap_err().code(),
        ErrorCode::SignInRefused,
        "the password"
    );
    // An account nobody has: said in words, with the code that marks the handle.
    let nobody = b.sign_in("nobody.test", "xxxx-xxxx-xxxx-xxxx").await;
    let nobody = nobody.unwrap_err().answer();
    assert_eq!(
        (nobody.code, nobody.message.as_str()),
        (
            ErrorCode::Invalid,
            "There is no Bluesky account called nobody.test. Check the spelling (it looks like name.bsky.social)."
        )
    );
    b.sign_in(&bob.handle, &bob.app_password).await.unwrap();

    // Alice adds Bob: the first backup runs, with progress, then "backed up".
    let o = a.add_friend(&format!("@{}", bob.handle)).await.unwrap();
    assert_eq!(o.friends.len(), 1);
    assert!(a.add_friend("   ").await.is_err());
    until(&[&a], &a, "Bob backed up", |o| {
        o.friends
            .first()
            .is_some_and(|f| f.state == FriendState::Ok && f.posts == 3)
    })
    .await;
    let o = a.overview().await.unwrap();
    let f = &o.friends[0];
    assert_eq!(f.name, bob.handle);
    assert!(f.status_text.starts_with("backed up"), "{}", f.status_text);
    assert!(f.size_bytes > 0);
    assert_eq!(o.tray, TrayState::Ok);
    assert!(o.storage.used_bytes >= f.size_bytes);
    // The window hears about it (progress events may be too quick to see on loopback).
    let mut changed = 0;
    while let Ok(e) = events.try_recv() {
        changed += usize::from(e == Event::Changed);
    }
    assert!(changed > 0);

    // A circle: Alice invites Bob; Bob's app shows the invitation in words; he accepts.
    let o = a
        .create_circle("Kitchen table", std::slice::from_ref(&bob.did), Some(1))
        .await
        .unwrap();
    let card = &o.circles[0];
    assert_eq!(card.name, "Kitchen table");
    assert_eq!(card.state, "waiting");
    assert!(card.you_wrote_it);
    assert_eq!(
        card.sentence,
        format!("Waiting for {} to accept", bob.handle)
    );
    assert!(a.create_circle("", &[], None).await.is_err());
    until(&[&b], &b, "the invitation", |o| !o.invitations.is_empty()).await;
    let o = b.overview().await.unwrap();
    let inv = &o.invitations[0];
    assert_eq!(inv.from_name, alice.handle);
    assert!(inv.text.contains("Kitchen table"), "{}", inv.text);
    assert!(!inv.text.contains("did:"), "{}", inv.text);
    assert_eq!(o.tray, TrayState::NeedsAttention);
    let o = b.accept(&inv.uri).await.unwrap();
    assert!(o.invitations.is_empty());
    assert_eq!(o.circles[0].state, "active");

    // Both apps back up each other's account, and the circle turns healthy on both.
    for (e, who) in [(&a, "alice"), (&b, "bob")] {
        until(&[&a, &b], e, &format!("{who}'s circle healthy"), |o| {
            o.circles
                .first()
                .is_some_and(|c| c.state == "active" && c.health.as_deref() == Some("ok"))
        })
        .await;
    }
    let o = b.overview().await.unwrap();
    assert_eq!(
        o.friends.len(),
        1,
        "Bob's app backs up Alice: {:?}",
        o.friends
    );
    assert_eq!(o.friends[0].circles, ["Kitchen table"]);
    // "Safe" only once a check has passed; until then, "not checked yet".
    assert!(
        o.headline
            .starts_with("Your friend's account is safe: each held by 1 friend, checked")
            || o.headline == "Your friend's account is held by 1 friend; not checked yet",
        "{}",
        o.headline
    );
    let h = a.health(&o.circles[0].uri).await.unwrap();
    assert_eq!(h.state, "ok");
    if h.checked_at.is_none() {
        assert_ne!(h.label, "Healthy", "{h:?}");
        assert!(!h.sentence.contains("checks passed"), "{}", h.sentence);
    }
    assert_eq!(
        h.reasons.len(),
        h.attention.iter().map(|g| g.lines.len()).sum::<usize>()
    );
    assert!(
        h.reasons.iter().all(|r| !r.contains("did:")),
        "{:?}",
        h.reasons
    );
    assert!(!h.rules.is_empty());
    assert_eq!(h.members.len(), 2);
    assert!(h.members.iter().all(|m| !m.name.starts_with("did:")));
    assert!(!h.storage.is_empty());
    assert!(h.timeline.iter().any(|t| t.kind == "sync"));

    // Pause and resume; settings survive a reopen.
    let o = a.pause(60).await.unwrap();
    assert!(o.paused_until.is_some());
    assert!(o.headline.starts_with("Paused for"), "{}", o.headline);
    let o = a.resume().await.unwrap();
    assert!(o.paused_until.is_none());
    let s = a.settings().await.unwrap();
    assert_eq!(s.check_every_minutes, 30);
    let bad = a
        .save_settings(Settings {
            check_every_minutes: 0,
            ..s.clone()
        })
        .await;
    assert!(bad.is_err());
    let saved = a
        .save_settings(Settings {
            check_every_minutes: 45,
            storage_limit_bytes: Some(5_000_000_000),
            endpoint: Some("https://backup.example.net".into()),
            ..s
        })
        .await
        .unwrap();
    assert_eq!(saved.check_every_minutes, 45);
    assert_eq!(
        saved.endpoint.as_deref(),
        Some("https://backup.example.net")
    );

    // An account gone upstream: flagged, the copy kept, one alert.
    let mut alerts = b.subscribe();
    alice.deactivate().await.unwrap();
    until(&[&b], &b, "Alice deactivated", |o| {
        o.friends
            .first()
            .is_some_and(|f| f.state == FriendState::Deactivated)
    })
    .await;
    let o = b.overview().await.unwrap();
    assert!(o.friends[0].status_text.contains("your copy is safe"));
    assert_eq!(o.tray, TrayState::NeedsAttention);
    let mut titles = Vec::new();
    while let Ok(e) = alerts.try_recv() {
        if let Event::Alert { title, .. } = e {
            titles.push(title);
        }
    }
    let gone: Vec<&String> = titles
        .iter()
        .filter(|t| t.contains("deactivated"))
        .collect();
    assert_eq!(gone.len(), 1, "{titles:?}");
    // Not repeated by the next pass.
    b.pass().await;
    while let Ok(e) = alerts.try_recv() {
        if let Event::Alert { title, .. } = e {
            assert!(!title.contains("deactivated"), "repeated: {title}");
        }
    }
    alice.activate().await.unwrap();

    // The loop: it runs passes on its own, hears "Sync now", and stops when asked.
    let mut heard = a.subscribe();
    let ra = a.clone();
    let running = tokio::spawn(async move { ra.run().await });
    tokio::time::timeout(Duration::from_secs(60), async {
        while heard.recv().await.is_ok_and(|e| e != Event::Changed) {}
    })
    .await
    .expect("the loop ran a pass");
    a.stop();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the loop stops")
        .unwrap();
}

#[tokio::test]
async fn protecting_your_account_with_a_recovery_key() {
    let bed = pds::shared().await;
    let frank = bed.create_account("frank").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = engine(bed, dir.path());
    assert_eq!(e.recovery_key_status().await.unwrap().state, "unavailable");
    e.sign_in(&frank.handle, &frank.app_password).await.unwrap();
    let none = e.recovery_key_status().await.unwrap();
    assert_eq!(none.state, "none");
    assert!(none.text.starts_with("Not set up"), "{}", none.text);

    // A wrong password is said in words; nothing is asked of the server.
    let err = e.add_recovery_key("wrong", None).await.unwrap_err();
    assert!(err.to_string().contains("main password"), "{err}");
    let sent = e.add_recovery_key(&frank.password, None).await.unwrap();
    assert_eq!(sent.state, "code-sent");
    assert!(sent.code.is_none());
    let err = e
        .add_recovery_key(&frank.password, Some("nope-nope"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("confirmation code"), "{err}");
    // Ask again (a new code replaces the old one), then add the key with it.
    e.add_recovery_key(&frank.password, None).await.unwrap();
    let code = bed.emailed_code(&frank.did, "plc_operation").unwrap();
    let done = e
        .add_recovery_key(&frank.password, Some(&code))
        .await
        .unwrap();
    assert_eq!(done.state, "registered");
    let key = p2pds::recovery::RecoveryKey::from_code(done.code.as_deref().unwrap()).unwrap();
    let data: serde_json::Value = reqwest::get(format!("{}/{}/data", bed.plc, frank.did))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(data["rotationKeys"][0], key.did_key().as_str(), "{data}");
    let later = e.recovery_key_status().await.unwrap();
    assert_eq!(later.state, "registered");
    assert!(later.code.is_none(), "the key is shown once only");
}
