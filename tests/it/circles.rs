//! Circles over real records: three accounts on the reference PDS and three node data
//! directories, driven through the `p2pds` command. Every step checks the records in each
//! repo with `listRecords`. Signing in uses the real OS keyring (`scripts/test` starts an
//! unlocked gnome-keyring in a private D-Bus session when none is reachable).

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};

use crate::cli::assert_ok;
use crate::pds::{self, Account, TestBed};

const KEYRING: p2pds::session::SecretStore = p2pds::session::SecretStore::Keyring;
const POLICY: &str = "org.p2pds.policy";
const ACK: &str = "org.p2pds.policy.ack";
const STATUS: &str = "org.p2pds.policy.status";
const PEER: &str = "org.p2pds.peer";

/// Runs `p2pds` against the test bed with extra environment variables.
pub(crate) async fn p2pds_env(
    bed: &TestBed,
    data: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_p2pds"));
    cmd.arg("--data-dir")
        .arg(data)
        .args(["--plc-url", &bed.plc, "--resolver-url", &bed.pds])
        .args(args)
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("running p2pds")
}

pub(crate) async fn run(bed: &TestBed, data: &Path, args: &[&str]) -> Output {
    let out = p2pds_env(bed, data, args, &[]).await;
    assert_ok(&out, args);
    out
}

pub(crate) async fn run_json(bed: &TestBed, data: &Path, args: &[&str]) -> Value {
    let out = run(bed, data, args).await;
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "p2pds {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

pub(crate) async fn login(bed: &TestBed, data: &Path, acct: &Account) {
    let out = p2pds_env(
        bed,
        data,
        &[
            "login",
            &acct.handle,
            "--password-env",
            "P2PDS_TEST_PASSWORD",
        ],
        &[("P2PDS_TEST_PASSWORD", &acct.app_password)],
    )
    .await;
    assert_ok(&out, &["login", &acct.handle]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&acct.did), "{text}");
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(crate) async fn post(acct: &Account, n: usize) {
    for i in 0..n {
        acct.create_record(
            "app.bsky.feed.post",
            json!({"$type": "app.bsky.feed.post", "text": format!("post {i}"), "createdAt": now()}),
        )
        .await
        .unwrap();
    }
}

/// `p2pds circle create … --json` by the node in `data`: the circle's URI.
pub(crate) async fn create(bed: &TestBed, data: &Path, name: &str, members: &[&str]) -> String {
    let mut args = vec!["circle", "create", "--name", name, "--json"];
    for m in members {
        args.extend(["--member", m]);
    }
    let created = run_json(bed, data, &args).await;
    created["uri"].as_str().unwrap().to_string()
}

/// The invitations of a `p2pds invitations --json` answer.
pub(crate) fn invitations(v: &Value) -> Vec<Value> {
    v["invitations"].as_array().unwrap().clone()
}

/// The circle `uri` in `circle list --json`.
pub(crate) async fn circle(bed: &TestBed, data: &Path, uri: &str) -> Value {
    let list = run_json(bed, data, &["circle", "list", "--json"]).await;
    list["circles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["uri"] == uri)
        .cloned()
        .unwrap_or_else(|| panic!("{uri} not in {list}"))
}

/// did → ack state of a circle view.
fn acks_of(view: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["did"].as_str().unwrap().to_string(),
                m["ack"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The acks in `acct`'s repo for `uri`: (cid pinned, accepted).
async fn acks_in_repo(acct: &Account, uri: &str) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = acct
        .list_records(ACK)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, _, v)| v["policy"]["uri"] == uri)
        .map(|(_, _, v)| {
            (
                v["policy"]["cid"].as_str().unwrap().to_string(),
                v["accepted"].as_bool().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The repos a node holds: did → state.
async fn held(bed: &TestBed, data: &Path) -> Vec<(String, String)> {
    let status = run_json(bed, data, &["status", "--json"]).await;
    let mut v: Vec<(String, String)> = status["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["did"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_circle_from_invitation_to_revocation() {
    let started = std::time::Instant::now();
    let bed = pds::shared().await;
    let alice = bed.create_account("alice").await.unwrap();
    let bob = bed.create_account("bob").await.unwrap();
    let carol = bed.create_account("carol").await.unwrap();
    for (acct, n) in [(&alice, 3), (&bob, 2), (&carol, 4)] {
        post(acct, n).await;
    }
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b, c) = (dirs[0].path(), dirs[1].path(), dirs[2].path());
    login(bed, a, &alice).await;
    login(bed, b, &bob).await;
    login(bed, c, &carol).await;
    // Bob follows Alice: his node looks for invitations in her repo.
    bob.create_record(
        "app.bsky.graph.follow",
        json!({"$type": "app.bsky.graph.follow", "subject": alice.did, "createdAt": now()}),
    )
    .await
    .unwrap();

    // Alice creates the circle: the policy and her own ack in her repo.
    let created = run_json(
        bed,
        a,
        &[
            "circle",
            "create",
            "--name",
            "Kitchen table",
            "--member",
            &bob.handle,
            "--member",
            &carol.handle,
            "--json",
        ],
    )
    .await;
    let uri = created["uri"].as_str().unwrap().to_string();
    let cid1 = created["cid"].as_str().unwrap().to_string();
    assert_eq!(created["state"], "pending");
    let policies = alice.list_records(POLICY).await.unwrap();
    assert_eq!(policies.len(), 1);
    assert_eq!((&policies[0].0, &policies[0].1), (&uri, &cid1));
    let record = &policies[0].2;
    assert_eq!(
        sorted(
            record["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["did"].as_str().unwrap().to_string())
                .collect()
        ),
        sorted(vec![alice.did.clone(), bob.did.clone(), carol.did.clone()])
    );
    assert_eq!(record["rules"]["replication"]["minCopies"], 2);
    // What was published passes `p2pds policy check`, with the CID the repo holds.
    let file = a.join("policy.json");
    std::fs::write(
        &file,
        json!({"uri": uri, "cid": cid1, "value": record}).to_string(),
    )
    .unwrap();
    let check = run(bed, a, &["policy", "check", file.to_str().unwrap()]).await;
    let check = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(
        check.contains("ok") && !check.contains("warning"),
        "{check}"
    );
    assert_eq!(acks_in_repo(&alice, &uri).await, [(cid1.clone(), true)]);
    assert!(bob.list_records(ACK).await.unwrap().is_empty());

    let view = circle(bed, a, &uri).await;
    assert_eq!(view["state"], "pending");
    assert_eq!(view["inForce"], Value::Null);
    let mut want = vec![
        (alice.did.clone(), "accepted".to_string()),
        (bob.did.clone(), "missing".to_string()),
        (carol.did.clone(), "missing".to_string()),
    ];
    want.sort();
    assert_eq!(acks_of(&view), want);

    // Bob finds it through his follows, Carol because she was told where to look.
    let inv_b = run_json(bed, b, &["invitations", "--json"]).await;
    let inv_c = run_json(bed, c, &["invitations", "--json", "--from", &alice.handle]).await;
    for (inv, me, other) in [(&inv_b, &bob, &carol), (&inv_c, &carol, &bob)] {
        let list = inv["invitations"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{inv}");
        let i = &list[0];
        assert_eq!(
            (i["uri"].as_str(), i["cid"].as_str()),
            (Some(uri.as_str()), Some(cid1.as_str()))
        );
        let text = i["text"].as_str().unwrap();
        assert!(
            text.starts_with(&format!(
                "{} invites you to the circle “Kitchen table” with {}.",
                alice.handle, other.handle
            )),
            "{text}"
        );
        assert!(text.contains("keep a copy of 2 accounts (about "), "{text}");
        assert!(text.contains("checked every hour"), "{text}");
        assert_eq!(i["facts"]["hold"], 2);
        assert_eq!(i["facts"]["unknownSizes"], 0);
        assert!(i["facts"]["estimatedBytes"].as_u64().unwrap() > 1000);
        assert!(!text.contains(&me.handle));
    }
    let text = run(bed, b, &["invitations"]).await;
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains(&format!("p2pds circle accept {uri}")),
        "{text}"
    );
    // Nothing is backed up before the circle is active.
    assert!(held(bed, b).await.is_empty());

    // Bob accepts: pending until Carol does.
    let out = run(bed, b, &["circle", "accept", &uri]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(&format!("Still waiting for: {}", carol.handle)),
        "{text}"
    );
    assert_eq!(acks_in_repo(&bob, &uri).await, [(cid1.clone(), true)]);
    assert!(held(bed, b).await.is_empty());
    let inv_b = run_json(bed, b, &["invitations", "--json"]).await;
    assert_eq!(inv_b["invitations"].as_array().unwrap().len(), 0);

    let accepted = run_json(bed, c, &["circle", "accept", &uri, "--json"]).await;
    assert_eq!(accepted["state"], "active");
    assert_eq!(acks_in_repo(&carol, &uri).await, [(cid1.clone(), true)]);

    // Active on all three nodes; each backs up the two others.
    for (data, me) in [(a, &alice), (b, &bob), (c, &carol)] {
        let view = circle(bed, data, &uri).await;
        assert_eq!(view["state"], "active", "{view}");
        assert_eq!(view["inForce"]["cid"], cid1.as_str());
        assert!(
            acks_of(&view).iter().all(|(_, s)| s == "accepted"),
            "{view}"
        );
        let others: Vec<String> = [&alice, &bob, &carol]
            .iter()
            .filter(|x| x.did != me.did)
            .map(|x| x.did.clone())
            .collect();
        assert_eq!(sorted(strs(&view["holding"])), sorted(others));
    }

    let text = run(bed, b, &["circle", "list"]).await;
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains("“Kitchen table” by") && text.contains(": active"),
        "{text}"
    );
    assert!(text.contains("you back up: "), "{text}");
    // Each node's sync copies the others and publishes its status and a heartbeat.
    let rkey = uri.rsplit('/').next().unwrap().to_string();
    for (data, me) in [(a, &alice), (b, &bob), (c, &carol)] {
        let out = run(bed, data, &["sync", "--once"]).await;
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.contains("published 1 status record and a heartbeat"),
            "{err}"
        );
        let holds = held(bed, data).await;
        assert_eq!(holds.len(), 2, "{holds:?}");
        assert!(
            holds.iter().all(|(d, s)| d != &me.did && s == "synced"),
            "{holds:?}"
        );
        let statuses = me.list_records(STATUS).await.unwrap();
        assert_eq!(statuses.len(), 1);
        let (s_uri, _, s) = &statuses[0];
        assert_eq!(s_uri, &format!("at://{}/{STATUS}/{rkey}", me.did));
        assert_eq!(
            (s["policy"]["uri"].as_str(), s["policy"]["cid"].as_str()),
            (Some(uri.as_str()), Some(cid1.as_str()))
        );
        let holding: Vec<String> = s["holdings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["did"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(holding.len(), 2);
        assert!(!holding.contains(&me.did));
        let peers = me.list_records(PEER).await.unwrap();
        assert_eq!(peers.len(), 1);
        assert!(peers[0].0.ends_with("/org.p2pds.peer/self"));
        assert!(peers[0].2["software"]
            .as_str()
            .unwrap()
            .starts_with("p2pds/"));
    }
    // Bob's copy of Alice matches her repo as it was when he synced: her posts are there.
    let records = run_json(
        bed,
        b,
        &[
            "records",
            &alice.did,
            "--collection",
            "app.bsky.feed.post",
            "--json",
        ],
    )
    .await;
    assert_eq!(records["records"].as_array().unwrap().len(), 3);

    // A second pass right away writes nothing: the rate limit holds.
    let before = alice.list_records(STATUS).await.unwrap()[0].1.clone();
    let out = run(bed, a, &["sync", "--once"]).await;
    assert!(!String::from_utf8_lossy(&out.stderr).contains("published"));
    assert_eq!(alice.list_records(STATUS).await.unwrap()[0].1, before);

    // Alice edits: a new version, acked by her; the old one stays in force.
    let edited = run_json(
        bed,
        a,
        &["circle", "edit", &uri, "--min-copies", "1", "--json"],
    )
    .await;
    let cid2 = edited["cid"].as_str().unwrap().to_string();
    assert_ne!(cid2, cid1);
    let policies = alice.list_records(POLICY).await.unwrap();
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].1, cid2);
    assert_eq!(policies[0].2["rules"]["replication"]["minCopies"], 1);
    let mut want = vec![(cid1.clone(), true), (cid2.clone(), true)];
    want.sort();
    assert_eq!(acks_in_repo(&alice, &uri).await, want);
    for data in [a, b] {
        let view = circle(bed, data, &uri).await;
        assert_eq!(view["state"], "pending", "{view}");
        assert_eq!(view["cid"], cid2.as_str());
        assert_eq!(view["inForce"]["cid"], cid1.as_str(), "{view}");
        let states: Vec<String> = acks_of(&view).into_iter().map(|(_, s)| s).collect();
        assert_eq!(states.iter().filter(|s| *s == "stale").count(), 2, "{view}");
        assert_eq!(view["holding"].as_array().unwrap().len(), 2);
    }
    let inv_b = run_json(bed, b, &["invitations", "--json"]).await;
    let list = inv_b["invitations"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["cid"], cid2.as_str());
    assert_eq!(list[0]["facts"]["update"], true);
    assert!(list[0]["text"]
        .as_str()
        .unwrap()
        .contains("changed the circle"));

    // Carol leaves, keeping her copies: her acks are gone; her status record too.
    let out = run(bed, c, &["circle", "leave", &uri, "--keep-copies"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("Kept the copies"));
    assert!(acks_in_repo(&carol, &uri).await.is_empty());
    assert!(carol.list_records(STATUS).await.unwrap().is_empty());
    let view = circle(bed, c, &uri).await;
    assert_eq!(view["state"], "left");
    assert!(view["holding"].as_array().unwrap().is_empty());
    assert_eq!(held(bed, c).await.len(), 2);
    let view = circle(bed, a, &uri).await;
    let carol_ack = acks_of(&view)
        .into_iter()
        .find(|(d, _)| *d == carol.did)
        .unwrap()
        .1;
    assert_eq!(carol_ack, "missing");
    // Without Carol's ack no version is accepted by everyone: nothing is in force.
    assert_eq!(view["inForce"], Value::Null);

    // Alice revokes and deletes the copies the circle made her keep.
    let out = run(bed, a, &["circle", "revoke", &uri, "--delete-copies"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("Deleted the copies"));
    let policies = alice.list_records(POLICY).await.unwrap();
    assert_eq!(policies[0].2["status"], "revoked");
    assert!(alice.list_records(STATUS).await.unwrap().is_empty());
    assert_eq!(circle(bed, a, &uri).await["state"], "revoked");
    assert!(held(bed, a).await.is_empty());
    // Bob's node sees the revocation; his duties end and, not asked, he keeps his copies.
    let view = circle(bed, b, &uri).await;
    assert_eq!(view["state"], "revoked");
    assert!(view["holding"].as_array().unwrap().is_empty());
    assert_eq!(held(bed, b).await.len(), 2);
    let inv_b = run_json(bed, b, &["invitations", "--json"]).await;
    assert!(inv_b["invitations"].as_array().unwrap().is_empty());
    for data in [a, b, c] {
        run(bed, data, &["logout"]).await;
    }
    eprintln!(
        "circle lifecycle test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn a_forged_ack_in_another_members_repo_does_not_count() {
    let bed = pds::shared().await;
    let alice = bed.create_account("alice").await.unwrap();
    let bob = bed.create_account("bob").await.unwrap();
    let carol = bed.create_account("carol").await.unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, c) = (dirs[0].path(), dirs[1].path());
    login(bed, a, &alice).await;
    login(bed, c, &carol).await;
    let created = run_json(
        bed,
        a,
        &[
            "circle",
            "create",
            "--name",
            "Forgery",
            "--member",
            &bob.handle,
            "--member",
            &carol.handle,
            "--json",
        ],
    )
    .await;
    let uri = created["uri"].as_str().unwrap().to_string();
    let cid = created["cid"].as_str().unwrap().to_string();
    run(bed, c, &["invitations", "--from", &alice.handle]).await;
    run(bed, c, &["circle", "accept", &uri]).await;
    // Carol writes acks "for bob" into her own repo: one claiming to be his, one under a key
    // that looks like his DID.
    let forged = json!({
        "$type": ACK, "policy": {"uri": uri, "cid": cid}, "accepted": true,
        "createdAt": now(), "member": bob.did, "on_behalf_of": bob.handle,
    });
    carol.create_record(ACK, forged.clone()).await.unwrap();
    carol
        .put_record(ACK, &bob.did.replace(':', "-"), forged)
        .await
        .unwrap();
    assert_eq!(acks_in_repo(&carol, &uri).await.len(), 3);
    assert!(bob.list_records(ACK).await.unwrap().is_empty());

    for data in [a, c] {
        let view = circle(bed, data, &uri).await;
        assert_eq!(view["state"], "pending", "{view}");
        let bob_ack = acks_of(&view)
            .into_iter()
            .find(|(d, _)| *d == bob.did)
            .unwrap()
            .1;
        assert_eq!(bob_ack, "missing");
        assert_eq!(view["inForce"], Value::Null);
        assert!(view["holding"].as_array().unwrap().is_empty());
    }

    // Bob's real answer comes from his own repo: he declines, and is not asked again.
    let b_dir = tempfile::tempdir().unwrap();
    let b = b_dir.path();
    login(bed, b, &bob).await;
    let inv = run_json(bed, b, &["invitations", "--json", "--from", &alice.handle]).await;
    assert_eq!(inv["invitations"].as_array().unwrap().len(), 1);
    run(bed, b, &["circle", "decline", &uri, "--reason", "no room"]).await;
    let acks = bob.list_records(ACK).await.unwrap();
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].2["accepted"], false);
    assert_eq!(acks[0].2["reason"], "no room");
    assert_eq!(acks[0].2["policy"]["cid"], cid.as_str());
    let inv = run_json(bed, b, &["invitations", "--json"]).await;
    assert!(inv["invitations"].as_array().unwrap().is_empty(), "{inv}");
    let view = circle(bed, a, &uri).await;
    assert_eq!(view["state"], "rejected");
    for data in [a, b, c] {
        run(bed, data, &["logout"]).await;
    }
}

#[tokio::test]
async fn an_expired_session_is_renewed_and_logout_clears_the_keyring() {
    let bed = pds::shared().await;
    let alice = bed.create_account("alice").await.unwrap();
    let bob = bed.create_account("bob").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path();
    login(bed, a, &alice).await;
    let good = p2pds::session::load_secrets(&KEYRING, &alice.did)
        .await
        .unwrap();
    assert_eq!(good.app_password, alice.app_password);
    // Nothing secret in the store.
    let db = std::fs::read(a.join("p2pds.sqlite")).unwrap();
    let needle = alice.app_password.as_bytes();
    assert!(!db.windows(needle.len()).any(|w| w == needle));

    // A refused access token: refreshSession renews it.
    let mut broken = good.clone();
    broken.access_jwt = "not-a-token".into();
    p2pds::session::save_secrets(&KEYRING, &alice.did, &broken)
        .await
        .unwrap();
    run(
        bed,
        a,
        &["circle", "create", "--name", "One", "--member", &bob.handle],
    )
    .await;
    let renewed = p2pds::session::load_secrets(&KEYRING, &alice.did)
        .await
        .unwrap();
    assert_ne!(renewed.access_jwt, "not-a-token");
    assert_ne!(renewed.refresh_jwt, good.refresh_jwt);

    // Both tokens dead: a new session from the app password in the keyring.
    let mut dead = renewed.clone();
    dead.access_jwt = "not-a-token".into();
    dead.refresh_jwt = "not-a-token-either".into();
    p2pds::session::save_secrets(&KEYRING, &alice.did, &dead)
        .await
        .unwrap();
    run(
        bed,
        a,
        &["circle", "create", "--name", "Two", "--member", &bob.handle],
    )
    .await;
    let fresh = p2pds::session::load_secrets(&KEYRING, &alice.did)
        .await
        .unwrap();
    assert_ne!(fresh.refresh_jwt, "not-a-token-either");
    assert_eq!(alice.list_records(POLICY).await.unwrap().len(), 2);

    // One data directory, one account.
    let out = p2pds_env(
        bed,
        a,
        &["login", &bob.handle, "--password-env", "PW"],
        &[("PW", &bob.app_password)],
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("p2pds logout"));

    let out = run(bed, a, &["logout"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("Signed out"));
    let gone = p2pds::session::load_secrets(&KEYRING, &alice.did).await;
    assert!(
        matches!(gone, Err(p2pds::session::SessionError::NoSecret { .. })),
        "{gone:?}"
    );
    let out = p2pds_env(bed, a, &["circle", "list"], &[]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("p2pds login"));
}

#[tokio::test]
async fn without_a_secret_service_login_says_what_to_do() {
    let bed = pds::shared().await;
    let alice = bed.create_account("alice").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = p2pds_env(
        bed,
        dir.path(),
        &["login", &alice.handle, "--password-env", "PW"],
        &[
            ("PW", alice.app_password.as_str()),
            (
                "DBUS_SESSION_BUS_ADDRESS",
                "unix:path=/nonexistent/p2pds-test-bus",
            ),
        ],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no secret service (keyring) is running"),
        "{err}"
    );
    assert!(err.contains("gnome-keyring"), "{err}");
    assert!(err.contains("p2pds login --secrets-file"), "{err}");
    // Nothing was stored: the node is not signed in.
    let out = p2pds_env(bed, dir.path(), &["circle", "list"], &[]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("not signed in"));
}

#[tokio::test]
async fn with_a_secrets_file_login_works_without_a_secret_service() {
    use p2pds::session::{load_secrets, save_secrets, SecretStore};
    let bed = pds::shared().await;
    let alice = bed.create_account("alice").await.unwrap();
    let bob = bed.create_account("bob").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path();
    let no_bus = (
        "DBUS_SESSION_BUS_ADDRESS",
        "unix:path=/nonexistent/p2pds-test-bus",
    );
    let login = |extra: &'static [&'static str]| {
        let mut args = vec!["login", alice.handle.as_str(), "--password-env", "PW"];
        args.extend_from_slice(extra);
        let env = [("PW", alice.app_password.as_str()), no_bus];
        async move { p2pds_env(bed, a, &args, &env).await }
    };
    let out = login(&["--secrets-file"]).await;
    assert_ok(&out, &["login", "--secrets-file"]);
    let file = a.join(p2pds::session::SECRETS_FILE);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&alice.did), "{text}");
    assert!(
        text.contains(&format!("the file {}", file.display())),
        "{text}"
    );
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }
    let at = SecretStore::File(file.clone());
    let good = load_secrets(&at, &alice.did).await.unwrap();
    assert_eq!(good.app_password, alice.app_password);

    // A later process finds the session in the file, still without a secret service; a
    // refused access token is renewed and the new one kept in the file.
    let mut broken = good.clone();
    broken.access_jwt = "not-a-token".into();
    save_secrets(&at, &alice.did, &broken).await.unwrap();
    let args = [
        "circle",
        "create",
        "--name",
        "Filed",
        "--member",
        &bob.handle,
    ];
    assert_ok(&p2pds_env(bed, a, &args, &[no_bus]).await, &args);
    let renewed = load_secrets(&at, &alice.did).await.unwrap();
    assert_ne!(renewed.access_jwt, "not-a-token");
    let out = p2pds_env(bed, a, &["circle", "list", "--json"], &[no_bus]).await;
    assert_ok(&out, &["circle", "list"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["circles"].as_array().unwrap().len(), 1, "{list}");

    // No secret anywhere else in the data directory (the database, its log).
    let needle = alice.app_password.as_bytes();
    for entry in std::fs::read_dir(a).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path != file {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the password is in {}",
                path.display()
            );
        }
    }

    // A sign-in without the flag keeps the choice.
    let out = login(&[]).await;
    assert_ok(&out, &["login (again)"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&file.display().to_string()));

    // Signing out removes the secrets from the file.
    let out = p2pds_env(bed, a, &["logout"], &[no_bus]).await;
    assert_ok(&out, &["logout"]);
    assert!(matches!(
        load_secrets(&at, &alice.did).await,
        Err(p2pds::session::SessionError::NoSecret { .. })
    ));
}

#[tokio::test]
async fn a_password_can_come_on_stdin() {
    let bed = pds::shared().await;
    let alice = bed.create_account("alice").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_p2pds"))
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--plc-url",
            &bed.plc,
            "--resolver-url",
            &bed.pds,
            "login",
            &alice.handle,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{}\n", alice.app_password).as_bytes())
            .await
            .unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert_ok(&out, &["login (stdin)"]);
    run(bed, dir.path(), &["logout"]).await;
}
