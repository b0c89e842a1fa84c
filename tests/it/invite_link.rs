//! Invitation links against the reference PDS: people whose fresh nodes know nobody (no
//! follows, no backups, no contacts) get a circle's invitation from the link its creator sent,
//! accept it, and the circle becomes active on every node; a damaged link, a link for someone
//! else, a link to a changed version and a link to a revoked circle are refused in words, each
//! with its own kind, and a refused link writes nothing: its author does not become a contact
//! (an account the node then reads on every pass). And the same through the app's engine.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::circles::{circle, create, invitations, login, p2pds_env, post, run, run_json};
use crate::pds::{self, TestBed};

/// `p2pds circle link URI`: the one line it prints.
async fn link_of(bed: &TestBed, data: &Path, uri: &str) -> String {
    let out = run(bed, data, &["circle", "link", uri]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text.lines().count(), 1, "{text}");
    text.trim().to_string()
}

/// The node's contacts (DIDs), read from its store opened read-only.
fn contacts(data: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open_with_flags(
        data.join("p2pds.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = db.prepare("SELECT did FROM contacts ORDER BY did").unwrap();
    let dids = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    dids
}

/// `p2pds invitations --link LINK --json` refused: exit 1, the kind on stdout, the words on
/// stderr.
async fn refused(bed: &TestBed, data: &Path, link: &str) -> (String, String) {
    let out: Output = p2pds_env(bed, data, &["invitations", "--link", link, "--json"], &[]).await;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["error"]["message"].as_str().map(|m| err.contains(m)),
        Some(true),
        "{v} {err}"
    );
    (v["error"]["kind"].as_str().unwrap().to_string(), err)
}

#[tokio::test]
async fn a_link_brings_the_invitation_to_nodes_that_know_nobody() {
    let bed = pds::shared().await;
    let alice = bed.create_account("alice").await.unwrap();
    let bob = bed.create_account("bob").await.unwrap();
    let carol = bed.create_account("carol").await.unwrap();
    // Dan gets only refused links: his node must stay knowing nobody.
    let dan = bed.create_account("dan").await.unwrap();
    for acct in [&alice, &bob, &carol] {
        post(acct, 2).await;
    }
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b, c, d) = (
        dirs[0].path(),
        dirs[1].path(),
        dirs[2].path(),
        dirs[3].path(),
    );
    for (data, acct) in [(a, &alice), (b, &bob), (c, &carol), (d, &dan)] {
        login(bed, data, acct).await;
    }
    assert_eq!(contacts(d), Vec::<String>::new());
    let uri = create(bed, a, "Kitchen table", &[&bob.handle, &carol.handle]).await;
    let cid = circle(bed, a, &uri).await["cid"]
        .as_str()
        .unwrap()
        .to_string();

    // Bob's and Carol's nodes know nobody: no invitation.
    for data in [b, c] {
        let inv = run_json(bed, data, &["invitations", "--json"]).await;
        assert!(invitations(&inv).is_empty(), "{inv}");
    }

    // Alice's link: one line, the circle and its version, nothing secret.
    let link = link_of(bed, a, &uri).await;
    assert!(link.starts_with("p2pds://invite?uri=at%3A%2F%2F"), "{link}");
    assert!(link.ends_with(&format!("&cid={cid}")), "{link}");
    assert!(!link.contains(&alice.app_password) && !link.contains(&alice.password));
    let json = run_json(bed, a, &["circle", "link", &uri, "--json"]).await;
    assert_eq!(
        (json["link"].as_str(), json["uri"].as_str()),
        (Some(link.as_str()), Some(uri.as_str()))
    );
    assert_eq!(json["cid"], cid.as_str());

    // With the link, each gets the invitation in words.
    for (data, other) in [(b, &carol), (c, &bob)] {
        let opened = run_json(bed, data, &["invitations", "--link", &link, "--json"]).await;
        let list = invitations(&opened);
        assert_eq!(list.len(), 1, "{opened}");
        assert_eq!(
            (list[0]["uri"].as_str(), list[0]["cid"].as_str()),
            (Some(uri.as_str()), Some(cid.as_str()))
        );
        let text = list[0]["text"].as_str().unwrap();
        assert!(
            text.starts_with(&format!(
                "{} invites you to the circle “Kitchen table” with {}.",
                alice.handle, other.handle
            )),
            "{text}"
        );
        // Known to the node from now on: the plain listing shows it too.
        let inv = run_json(bed, data, &["invitations", "--json"]).await;
        assert_eq!(invitations(&inv).len(), 1, "{inv}");
    }
    let out = run(bed, b, &["invitations", "--link", &format!("  {link}\n")]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("invites you to the circle “Kitchen table”"),
        "{text}"
    );
    assert!(
        text.contains(&format!("p2pds circle accept {uri}")),
        "{text}"
    );

    // Both accept, as for any invitation: active on all three nodes.
    let out = run(bed, b, &["circle", "accept", &uri]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(&format!("Still waiting for: {}", carol.handle)),
        "{text}"
    );
    let accepted = run_json(bed, c, &["circle", "accept", &uri, "--json"]).await;
    assert_eq!(accepted["state"], "active", "{accepted}");
    for data in [a, b, c] {
        let view = circle(bed, data, &uri).await;
        assert_eq!(view["state"], "active", "{view}");
        assert_eq!(view["inForce"]["cid"], cid.as_str(), "{view}");
        assert_eq!(view["holding"].as_array().unwrap().len(), 2, "{view}");
    }
    // Opening the link again: already answered, nothing to accept.
    let again = run_json(bed, b, &["invitations", "--link", &link, "--json"]).await;
    assert!(invitations(&again).is_empty(), "{again}");
    assert_eq!(again["circle"]["state"], "active", "{again}");

    // A damaged link: cut off, altered, or another kind of link.
    for bad in [
        link[..link.len() - 12].to_string(),
        link.replace("cid=bafy", "cid=bafx"),
        format!("{link}&from=alice"),
        format!("https://bsky.app/profile/{}", alice.handle),
    ] {
        let (kind, words) = refused(bed, b, &bad).await;
        assert!(kind == "damaged" || kind == "not-a-link", "{kind}: {words}");
        assert!(words.contains("invitation link"), "{words}");
        assert!(
            words
                .to_lowercase()
                .contains("ask the person who invited you"),
            "{words}"
        );
    }

    // A well-formed link to an account nobody has: said in words about that account, never
    // the raw error (a URL, a status, a DID).
    let nobody = link.replace(
        alice.did.trim_start_matches("did:plc:"),
        "aaaaaaaaaaaaaaaaaaaaaaaa",
    );
    let (kind, _) = refused(bed, b, &nobody).await;
    let out = p2pds_env(bed, b, &["invitations", "--link", &nobody, "--json"], &[]).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let words = v["error"]["message"].as_str().unwrap();
    // (The directory's "not found" is not told apart from a directory out of reach.)
    assert_eq!(kind, "network", "{words}");
    assert!(words.starts_with("Couldn't read the circle"), "{words}");
    for raw in ["http", "did:plc", "404", "Not Found"] {
        assert!(!words.contains(raw), "{raw}: {words}");
    }

    // A link for someone else: a circle that does not name Bob.
    let other = create(bed, a, "Book club", &[&carol.handle]).await;
    let (kind, words) = refused(bed, b, &link_of(bed, a, &other).await).await;
    assert_eq!(kind, "not-for-you", "{words}");
    assert!(
        words.contains("for someone else") && words.contains("“Book club”"),
        "{words}"
    );
    assert!(
        words.contains(&alice.handle) && words.contains(&bob.handle),
        "{words}"
    );
    let list = run_json(bed, b, &["circle", "list", "--json"]).await;
    assert!(!list.to_string().contains(&other), "remembered: {list}");
    // Refused on a node that knows nobody: Alice's name is looked up (verified: her handle
    // resolves to her account) but not saved; she is not made a contact.
    let (kind, words) = refused(bed, d, &link_of(bed, a, &other).await).await;
    assert_eq!(kind, "not-for-you", "{words}");
    assert!(
        words.contains(&alice.handle) && words.contains(&dan.handle),
        "{words}"
    );
    assert!(!words.contains("did:"), "{words}");
    assert_eq!(contacts(d), Vec::<String>::new(), "{words}");

    // A link to a version Alice changed since, then to a circle she revoked.
    let old = create(bed, a, "Old friends", &[&bob.handle, &dan.handle]).await;
    let old_link = link_of(bed, a, &old).await;
    run(bed, a, &["circle", "edit", &old, "--name", "Older friends"]).await;
    for data in [b, d] {
        let (kind, words) = refused(bed, data, &old_link).await;
        assert_eq!(kind, "changed", "{words}");
        assert!(
            words.contains(&format!("ask {} for a new link", alice.handle)),
            "{words}"
        );
    }
    assert_eq!(contacts(d), Vec::<String>::new());
    let new_link = link_of(bed, a, &old).await;
    assert_ne!(new_link, old_link);
    run(bed, a, &["circle", "revoke", &old, "--keep-copies"]).await;
    for (data, l) in [
        (b, &old_link),
        (b, &new_link),
        (d, &old_link),
        (d, &new_link),
    ] {
        let (kind, words) = refused(bed, data, l).await;
        assert_eq!(kind, "revoked", "{words}");
        assert!(
            words.contains(&format!(
                "{} ended the circle “Older friends”",
                alice.handle
            )),
            "{words}"
        );
    }
    // After every kind of refusal, Dan's node still knows nobody.
    assert!(!contacts(d).contains(&alice.did), "{:?}", contacts(d));
    assert_eq!(contacts(d), Vec::<String>::new());
    // A revoked circle has no link.
    let out = p2pds_env(bed, a, &["circle", "link", &old], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ended the circle"));
    // None of the refused circles became an invitation.
    let inv = run_json(bed, b, &["invitations", "--json"]).await;
    assert!(invitations(&inv).is_empty(), "{inv}");
    for data in [a, b, c, d] {
        run(bed, data, &["logout"]).await;
    }
}

#[tokio::test]
async fn the_app_opens_an_invitation_link() {
    use p2pds::app::dto::ErrorCode;

    let bed = pds::shared().await;
    let alice = bed.create_account("alice").await.unwrap();
    let erin = bed.create_account("erin").await.unwrap();
    let (da, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = crate::app::engine(bed, da.path());
    let e = crate::app::engine(bed, de.path());
    a.sign_in(&alice.handle, &alice.app_password).await.unwrap();
    let o = a
        .create_circle("Two of us", std::slice::from_ref(&erin.did), Some(1))
        .await
        .unwrap();
    let uri = o
        .circles
        .iter()
        .find(|c| c.name == "Two of us")
        .unwrap()
        .uri
        .clone();
    let link = a.invitation_link(&uri).await.unwrap();
    assert!(link.starts_with("p2pds://invite?"), "{link}");
    let svg = a.invitation_qr(&link).unwrap();
    assert!(svg.starts_with("<svg") && !svg.contains("style"), "{svg}");

    // Erin's fresh app knows nobody: no invitation until the link is opened.
    let o = e.sign_in(&erin.handle, &erin.app_password).await.unwrap();
    assert!(o.invitations.is_empty(), "{:?}", o.invitations);
    let damaged = e
        .open_invitation_link(&link[..link.len() - 3])
        .await
        .unwrap_err();
    assert_eq!(damaged.answer().code, ErrorCode::LinkDamaged);
    let o = e.open_invitation_link(&link).await.unwrap();
    let card = o
        .invitations
        .iter()
        .find(|i| i.uri == uri)
        .unwrap_or_else(|| panic!("{:?}", o.invitations));
    assert_eq!(card.circle_name, "Two of us");
    let o = e.accept(&uri).await.unwrap();
    assert!(o.invitations.is_empty(), "{:?}", o.invitations);
    let c = o.circles.iter().find(|c| c.uri == uri).unwrap();
    assert_eq!(c.state, "active", "{c:?}");
    // A link for someone else, in the app: its own code.
    let theirs = a.invitation_link(&uri).await.unwrap();
    let frank = bed.create_account("frank").await.unwrap();
    let df = tempfile::tempdir().unwrap();
    let f = crate::app::engine(bed, df.path());
    f.sign_in(&frank.handle, &frank.app_password).await.unwrap();
    let not_yours = f.open_invitation_link(&theirs).await.unwrap_err().answer();
    assert_eq!(
        not_yours.code,
        ErrorCode::LinkNotForYou,
        "{}",
        not_yours.message
    );
    assert!(
        not_yours.message.contains("for someone else"),
        "{}",
        not_yours.message
    );
    // Refused: Alice is not made one of Frank's contacts.
    assert!(
        !contacts(df.path()).contains(&alice.did),
        "{:?}",
        contacts(df.path())
    );
    for x in [&a, &e, &f] {
        x.sign_out().await.unwrap();
    }
}
