//! Discovery through a backlink index, against the reference PDS and the test bed's stand-in
//! index (a Constellation-compatible `links` API over the PDS's real records): a fresh node
//! that knows nobody finds a circle's invitation only when an index is configured
//! (`--backlink-index`, `P2PDS_BACKLINK_INDEX`), and what a lying index adds (a policy for
//! someone else, a record that is not in the repo it names, an account that does not exist,
//! a record of another collection) is checked against the authors' repos and ignored without
//! stopping discovery, at most 50 new answers per discovery, and not read again for a day.

use std::path::Path;

use serde_json::{json, Value};

use crate::circles::{create, invitations, login, p2pds_env, post, run, run_json};
use crate::pds::{self, TestBed};

/// Makes the stand-in index put `records` first in every answer for `target`.
async fn forge(bed: &TestBed, target: &str, records: Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/forge", bed.backlinks))
        .json(&json!({"target": target, "linking_records": records}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
}

/// The circles the node in `data` remembers (every policy it has verified a version of).
fn tracked(data: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open(data.join("p2pds.sqlite")).unwrap();
    let mut q = db.prepare("SELECT uri FROM policies ORDER BY uri").unwrap();
    let uris = q.query_map([], |r| r.get::<_, String>(0)).unwrap();
    uris.map(Result::unwrap).collect()
}

/// The index's answers the node in `data` passes over (`group_meta`): URI → until when.
fn rejected(data: &Path) -> serde_json::Map<String, Value> {
    let db = rusqlite::Connection::open(data.join("p2pds.sqlite")).unwrap();
    let text: Option<String> = db
        .query_row(
            "SELECT value FROM group_meta WHERE key = 'backlinks.rejected'",
            [],
            |r| r.get(0),
        )
        .ok();
    let v: Value = text.map_or(json!({}), |t| serde_json::from_str(&t).unwrap());
    v["until"].as_object().cloned().unwrap_or_default()
}

/// `p2pds invitations --json` by the node in `data`, asking the stand-in index: its answer.
async fn discover(bed: &TestBed, data: &Path) -> Value {
    let out = p2pds_env(
        bed,
        data,
        &["invitations", "--json", "--backlink-index", &bed.backlinks],
        &[],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{err}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The rkey of an AT-URI.
fn rkey(uri: &str) -> &str {
    uri.rsplit('/').next().unwrap()
}

#[tokio::test]
async fn a_backlink_index_finds_invitations_and_its_lies_are_ignored() {
    let bed = pds::shared().await;
    let alice = bed.create_account("alice").await.unwrap();
    let bob = bed.create_account("bob").await.unwrap();
    let carol = bed.create_account("carol").await.unwrap();
    let dave = bed.create_account("dave").await.unwrap();
    for acct in [&alice, &bob, &carol, &dave] {
        post(acct, 1).await;
    }
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b, c) = (dirs[0].path(), dirs[1].path(), dirs[2].path());
    for (data, acct) in [(a, &alice), (b, &bob), (c, &carol)] {
        login(bed, data, acct).await;
    }
    let uri = create(bed, a, "Kitchen table", &[&bob.handle, &carol.handle]).await;
    // A real circle of Alice's that names neither Bob nor Carol.
    let other = create(bed, a, "Book club", &[&dave.handle]).await;

    // Bob's fresh node follows nobody and backs up nobody: no invitation.
    let inv = run_json(bed, b, &["invitations", "--json"]).await;
    assert!(invitations(&inv).is_empty(), "{inv}");

    // The index lies first: a policy that doesn't name Bob, a key that isn't in Alice's repo,
    // Alice's circle's key in Carol's repo, an account that does not exist, another
    // collection's record. Then the truth (the real circle), on a later page.
    // A hundred made-up keys push the truth past the first page (100 entries).
    let mut lies = vec![
        json!({"did": alice.did, "collection": "org.p2pds.policy", "rkey": rkey(&other)}),
        json!({"did": carol.did, "collection": "org.p2pds.policy", "rkey": rkey(&uri)}),
        json!({"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "collection": "org.p2pds.policy", "rkey": "3kaaaaaaaaaaa"}),
        json!({"did": alice.did, "collection": "app.bsky.feed.post", "rkey": rkey(&uri)}),
    ];
    for i in 0..100 {
        lies.push(json!({"did": alice.did, "collection": "org.p2pds.policy", "rkey": format!("3zzzzzzzzz{i:03}")}));
    }
    forge(bed, &bob.did, Value::Array(lies)).await;

    // At most 50 answers not seen before are read per discovery, and those that did not check
    // out are not read again for a day: the 103 lies take two discoveries, the truth is found
    // at the third.
    let mut before = Value::Null;
    for (pass, remembered) in [50usize, 100].into_iter().enumerate() {
        let inv = discover(bed, b).await;
        assert!(invitations(&inv).is_empty(), "pass {pass}: {inv}");
        let now = rejected(b);
        assert_eq!(now.len(), remembered, "pass {pass}: {now:?}");
        // What the first pass rejected is still remembered as it was: not read again.
        if let Some(old) = before.as_object() {
            for (k, until) in old {
                assert_eq!(now.get(k), Some(until), "{k} was read again");
            }
        }
        before = Value::Object(now);
        assert!(tracked(b).is_empty());
    }
    let inv = discover(bed, b).await;
    let after = rejected(b);
    assert_eq!(after.len(), 103, "{after:?}");
    assert!(!after.contains_key(&uri), "the truth is not rejected");
    let list = invitations(&inv);
    assert_eq!(list.len(), 1, "{inv}");
    assert_eq!(list[0]["uri"], uri.as_str(), "{inv}");
    let text = list[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "{} invites you to the circle “Kitchen table” with {}.",
            alice.handle, carol.handle
        )),
        "{text}"
    );
    assert!(
        text.contains("Someone silent for 3 days is marked as missing."),
        "{text}"
    );
    // Nothing the lies named was remembered: the store tracks the one true circle.
    assert_eq!(tracked(b), vec![uri.clone()]);
    // Another discovery reads none of them again (each would be remembered anew).
    let inv = discover(bed, b).await;
    assert_eq!(invitations(&inv).len(), 1, "{inv}");
    assert_eq!(rejected(b), after);

    // Known from now on: the plain listing shows it, and Bob accepts as for any invitation.
    let inv = run_json(bed, b, &["invitations", "--json"]).await;
    assert_eq!(invitations(&inv).len(), 1, "{inv}");
    run(bed, b, &["circle", "accept", &uri]).await;

    // The node controller asks the index too (`P2PDS_BACKLINK_INDEX`): Carol's fresh node
    // finds the invitation in one pass of `p2pds sync --once`.
    let out = p2pds_env(
        bed,
        c,
        &["sync", "--once"],
        &[("P2PDS_BACKLINK_INDEX", &bed.backlinks)],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inv = run_json(bed, c, &["invitations", "--json"]).await;
    let list = invitations(&inv);
    assert_eq!(list.len(), 1, "{inv}");
    assert_eq!(list[0]["uri"], uri.as_str(), "{inv}");

    // An index that can't be reached is a warning; discovery goes on.
    let out = p2pds_env(
        bed,
        b,
        &[
            "invitations",
            "--json",
            "--backlink-index",
            "http://127.0.0.1:9",
        ],
        &[],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("backlink index"), "{err}");

    // Not an address: refused at the command line.
    let out = p2pds_env(
        bed,
        b,
        &["invitations", "--backlink-index", "constellation"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    forge(bed, &bob.did, json!([])).await;
}
