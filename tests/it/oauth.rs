//! Signing in with Bluesky (OAuth) against the reference PDS's own authorization server: its
//! sign-in and consent pages answered as the browser would (`oauth_pages`), the answer brought
//! to the node's loopback address as the browser would bring it.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use p2pds::identity::Resolver;
use p2pds::session::{self, oauth, Session, SessionError};
use p2pds::store::Store;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::circles::{circle, run, run_json};
use crate::oauth_pages;
use crate::pds::{self, Account, TestBed};

const KEYRING: session::SecretStore = session::SecretStore::Keyring;

/// Starts `p2pds ARGS` (stdout and stderr piped, stdin `stdin`) and reads its stderr up to the
/// address it prints for the browser: the child, the rest of its stderr, the address, and
/// what it said before.
async fn until_address(
    bed: &TestBed,
    data: &Path,
    args: &[&str],
    stdin: std::process::Stdio,
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    String,
    Vec<String>,
) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_p2pds"))
        .arg("--data-dir")
        .arg(data)
        .args(["--plc-url", &bed.plc, "--resolver-url", &bed.pds])
        .args(args)
        .stdin(stdin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the address in time")
            .unwrap()
            .unwrap_or_else(|| panic!("no address printed: {said:?}"));
        if line.trim_start().starts_with("http") {
            break line.trim().to_string();
        }
        said.push(line);
    };
    (child, lines, url, said)
}

/// `p2pds login HANDLE --oauth --no-browser`, the printed page answered as `acct` (signing in
/// with its main password, on the server's page), the answer brought to the node.
async fn login_in_browser(bed: &TestBed, data: &Path, acct: &Account, extra: &[&str]) -> Output {
    let mut args = vec!["login", acct.handle.as_str(), "--oauth", "--no-browser"];
    args.extend(extra);
    let (child, lines, url, _) = until_address(bed, data, &args, std::process::Stdio::null()).await;
    assert!(url.contains("request_uri="), "{url}");
    let callback = oauth_pages::approve(&url, &acct.handle, &acct.password)
        .await
        .unwrap();
    assert!(callback.starts_with("http://127.0.0.1:"), "{callback}");
    let page = reqwest::get(&callback).await.unwrap().text().await.unwrap();
    assert!(page.contains("You are signed in"), "{page}");
    ended(child, lines).await
}

/// What a child started by [`until_address`] printed and how it ended.
async fn ended(
    mut child: tokio::process::Child,
    mut lines: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
) -> Output {
    let mut stdout = Vec::new();
    let mut out = child.stdout.take().unwrap();
    let (read, rest) = tokio::join!(out.read_to_end(&mut stdout), async {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest
    });
    read.unwrap();
    let status = child.wait().await.unwrap();
    Output {
        status,
        stdout,
        stderr: rest.join("\n").into_bytes(),
    }
}

fn resolver(bed: &TestBed) -> Resolver {
    Resolver::new(reqwest::Client::new(), &bed.plc, Some(&bed.pds))
}

fn open(dir: &Path) -> Store {
    Store::open(&dir.join("p2pds.sqlite")).unwrap()
}

#[tokio::test]
async fn nodes_signed_in_with_bluesky_run_a_circle_and_may_write_nothing_else() {
    let bed = pds::shared().await;
    let alice = bed.create_account("oauth-alice").await.unwrap();
    let bob = bed.create_account("oauth-bob").await.unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b) = (dirs[0].path(), dirs[1].path());
    // Bob's node is a home server without a keyring: the secrets file holds the session.
    for (dir, acct, extra) in [(a, &alice, &[][..]), (b, &bob, &["--secrets-file"][..])] {
        let out = login_in_browser(bed, dir, acct, extra).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout} {:?}", out.stderr);
        assert!(stdout.contains("in the browser"), "{stdout}");
        assert!(stdout.contains("only its own records"), "{stdout}");
        // The DPoP-bound tokens and their key are where secrets are kept; no password anywhere.
        let at = if extra.is_empty() {
            KEYRING
        } else {
            assert!(matches!(
                session::load_secrets(&KEYRING, &acct.did).await,
                Err(SessionError::NoSecret { .. })
            ));
            session::SecretStore::File(dir.join(session::SECRETS_FILE))
        };
        let kept = session::load_secrets(&at, &acct.did).await.unwrap();
        let grant = kept.oauth.as_ref().expect("an OAuth grant");
        assert!(kept.app_password.is_empty());
        assert_eq!(grant.scope.split_whitespace().count(), 7, "{}", grant.scope);
        let db = std::fs::read(dir.join("p2pds.sqlite")).unwrap();
        for secret in [&kept.access_jwt, &kept.refresh_jwt, &grant.dpop_key] {
            let needle = secret.as_bytes();
            assert!(!db.windows(needle.len()).any(|w| w == needle));
        }
    }

    // A circle made and accepted by nodes signed in this way.
    let created = run_json(
        bed,
        a,
        &[
            "circle",
            "create",
            "--name",
            "Browser",
            "--member",
            &bob.handle,
            "--json",
        ],
    )
    .await;
    let uri = created["uri"].as_str().unwrap().to_string();
    run(bed, b, &["invitations", "--from", &alice.handle]).await;
    run(bed, b, &["circle", "accept", &uri]).await;
    for dir in [a, b] {
        run(bed, dir, &["sync", "--once"]).await;
    }
    assert_eq!(circle(bed, a, &uri).await["state"], "active");
    assert_eq!(
        alice.list_records("org.p2pds.policy").await.unwrap().len(),
        1
    );
    assert_eq!(
        bob.list_records("org.p2pds.policy.ack")
            .await
            .unwrap()
            .len(),
        1
    );

    // The least access: the same session may not post on Alice's behalf.
    let store = open(a);
    let s = Session::resume(reqwest::Client::new(), &store)
        .await
        .unwrap();
    assert!(s.is_oauth().await);
    let post =
        json!({"$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2026-01-01T00:00:00Z"});
    let refused = s.create_record("app.bsky.feed.post", &post).await;
    assert!(
        matches!(&refused, Err(SessionError::Xrpc { status: 403, error, .. }) if error == "ScopeMissingError"),
        "{refused:?}"
    );
    assert!(alice
        .list_records("app.bsky.feed.post")
        .await
        .unwrap()
        .is_empty());
    // Nor change its identity: that permission is asked for on its own, when needed.
    let identity = s
        .procedure(
            "com.atproto.identity.requestPlcOperationSignature",
            &json!({}),
        )
        .await;
    assert!(
        matches!(&identity, Err(SessionError::Xrpc { status: 403, .. })),
        "{identity:?}"
    );
    // Its own records it may write.
    s.put_record(
        "org.p2pds.peer",
        "self",
        &json!({"$type": "org.p2pds.peer", "heartbeatAt": "2026-01-01T00:00:00Z"}),
        None,
    )
    .await
    .unwrap();
    for dir in [a, b] {
        run(bed, dir, &["logout"]).await;
    }
}

/// Starts a sign-in of `acct` through the library; returns the page and the pending sign-in.
async fn start(bed: &TestBed, store: &Store, acct: &Account) -> oauth::Pending {
    Session::start_oauth(
        &reqwest::Client::new(),
        &resolver(bed),
        store,
        &acct.handle,
        &oauth::ClientId::Loopback,
    )
    .await
    .unwrap()
}

/// Finishes `pending` while the browser brings `callback` to it.
async fn finish_with(
    store: &Store,
    pending: oauth::Pending,
    callback: String,
) -> Result<std::sync::Arc<Session>, SessionError> {
    let bring = async {
        // The answer page, whatever it says.
        let _ = reqwest::get(&callback).await;
    };
    let (done, ()) = tokio::join!(
        Session::finish_oauth(
            reqwest::Client::new(),
            store,
            pending,
            Duration::from_secs(60)
        ),
        bring
    );
    done
}

async fn nothing_stored(store: &Store, did: &str) {
    assert!(store.read(session::signed_in).await.unwrap().is_none());
    assert!(matches!(
        session::load_secrets(&KEYRING, did).await,
        Err(SessionError::NoSecret { .. })
    ));
}

#[tokio::test]
async fn an_expired_token_is_renewed_and_signing_out_revokes_it() {
    let bed = pds::shared().await;
    // Access tokens that live 2 s.
    let short = bed
        .start_extra_pds_with(&[("P2PDS_TEST_OAUTH_TOKEN_MAX_AGE_MS", "2000")])
        .await
        .unwrap();
    let carol = short.create_account("oauth-carol").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let pending = start(&short, &store, &carol).await;
    let callback = oauth_pages::approve(&pending.url, &carol.handle, &carol.password)
        .await
        .unwrap();
    let s = finish_with(&store, pending, callback).await.unwrap();
    let first = session::load_secrets(&KEYRING, &carol.did).await.unwrap();
    let peer = |n: u32| json!({"$type": "org.p2pds.peer", "heartbeatAt": format!("2026-01-01T00:00:0{n}Z")});
    s.put_record("org.p2pds.peer", "self", &peer(1), None)
        .await
        .unwrap();

    // Past its expiry: renewed before use, with the refresh token, and kept.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.put_record("org.p2pds.peer", "self", &peer(2), None)
        .await
        .unwrap();
    let second = session::load_secrets(&KEYRING, &carol.did).await.unwrap();
    assert_ne!(second.access_jwt, first.access_jwt);
    assert_ne!(second.refresh_jwt, first.refresh_jwt);

    // A token the server refuses (its expiry not known here): renewed on the refusal.
    let mut stale = second.clone();
    if let Some(g) = stale.oauth.as_mut() {
        g.expires_at = chrono::Utc::now().timestamp_millis() + 86_400_000;
    }
    session::save_secrets(&KEYRING, &carol.did, &stale)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let resumed = Session::resume(reqwest::Client::new(), &store)
        .await
        .unwrap();
    resumed
        .put_record("org.p2pds.peer", "self", &peer(3), None)
        .await
        .unwrap();
    let third = session::load_secrets(&KEYRING, &carol.did).await.unwrap();
    assert_ne!(third.access_jwt, second.access_jwt);

    // Signing out revokes the tokens: the session still in memory is refused by the server.
    Session::logout(reqwest::Client::new(), &store)
        .await
        .unwrap();
    nothing_stored(&store, &carol.did).await;
    let after = resumed
        .put_record("org.p2pds.peer", "self", &peer(4), None)
        .await;
    assert!(
        matches!(&after, Err(SessionError::SessionEnded { .. })),
        "{after:?}"
    );
    let (_, _, kept) = carol
        .list_records("org.p2pds.peer")
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(kept, peer(3));
}

#[tokio::test]
async fn a_sign_in_that_goes_wrong_says_why_and_stores_nothing() {
    let bed = pds::shared().await;
    let dave = bed.create_account("oauth-dave").await.unwrap();
    let erin = bed.create_account("oauth-erin").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());

    // The person cancels on the server's page.
    let pending = start(bed, &store, &dave).await;
    let callback = oauth_pages::reject(&pending.url, &dave.handle, &dave.password)
        .await
        .unwrap();
    assert!(callback.contains("error=access_denied"), "{callback}");
    let e = finish_with(&store, pending, callback).await.unwrap_err();
    assert!(matches!(e, SessionError::SignInCancelled), "{e:?}");
    assert!(e.to_string().contains("cancelled"), "{e}");
    nothing_stored(&store, &dave.did).await;

    // Another account signs in on the page.
    let pending = start(bed, &store, &dave).await;
    let callback = oauth_pages::approve(&pending.url, &erin.handle, &erin.password)
        .await
        .unwrap();
    let e = finish_with(&store, pending, callback).await.unwrap_err();
    assert!(matches!(e, SessionError::WrongAccount { .. }), "{e:?}");
    assert!(e.to_string().contains(&erin.did), "{e}");
    nothing_stored(&store, &dave.did).await;
    nothing_stored(&store, &erin.did).await;

    // An answer with a state this sign-in did not make.
    let pending = start(bed, &store, &dave).await;
    let forged = format!("{}?state=forged&code=cod-1&iss=x", pending.redirect_uri());
    let e = finish_with(&store, pending, forged).await.unwrap_err();
    assert!(matches!(e, SessionError::WrongState), "{e:?}");
    nothing_stored(&store, &dave.did).await;

    // The server is down.
    let gone = bed.start_extra_pds().await.unwrap();
    let frank = gone.create_account("oauth-frank").await.unwrap();
    let gone_resolver = resolver(&gone);
    drop(gone);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = Session::start_oauth(
        &reqwest::Client::new(),
        &gone_resolver,
        &store,
        &frank.did,
        &oauth::ClientId::Loopback,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("could not reach"), "{e}");
    nothing_stored(&store, &frank.did).await;
}

#[tokio::test]
async fn the_main_password_is_refused_where_an_app_password_belongs() {
    let bed = pds::shared().await;
    let gina = bed.create_account("mainpw-gina").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = crate::circles::p2pds_env(
        bed,
        dir.path(),
        &["login", &gina.handle, "--password-env", "PW"],
        &[("PW", gina.password.as_str())],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("main password"), "{stderr}");
    assert!(stderr.contains("App passwords"), "{stderr}");
    let store = open(dir.path());
    nothing_stored(&store, &gina.did).await;
    // The app password is taken.
    let out = crate::circles::p2pds_env(
        bed,
        dir.path(),
        &["login", &gina.handle, "--password-env", "PW"],
        &[("PW", gina.app_password.as_str())],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run(bed, dir.path(), &["logout"]).await;
}

#[tokio::test]
async fn protecting_the_account_asks_for_the_identity_in_a_second_consent() {
    let bed = pds::shared().await;
    let hana = bed.create_account("oauth-hana").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, lines, url, said) = until_address(
        bed,
        dir.path(),
        &[
            "recovery-key",
            "add",
            "--account",
            &hana.handle,
            "--oauth",
            "--no-browser",
            "--json",
        ],
        std::process::Stdio::piped(),
    )
    .await;
    // It says why before asking.
    assert!(
        said.join(" ").contains("changes your account's identity"),
        "{said:?}"
    );
    let callback = oauth_pages::approve(&url, &hana.handle, &hana.password)
        .await
        .unwrap();
    reqwest::get(&callback).await.unwrap();
    // The server emails a code; the person types it in.
    let mut code = None;
    for _ in 0..100 {
        if let Ok(c) = bed.emailed_code(&hana.did, "plc_operation") {
            code = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let code = code.expect("a confirmation code emailed");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{code}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = ended(child, lines).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["state"], "registered", "{done}");
    let key = done["didKey"].as_str().unwrap();
    let doc: serde_json::Value = reqwest::get(format!("{}/{}/data", bed.plc, hana.did))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = doc["rotationKeys"].as_array().cloned().unwrap_or_default();
    assert!(listed.iter().any(|k| k == key), "{doc}");
}

/// Brings `callback` to the app while `finish` waits for it.
async fn answered<T>(finish: impl std::future::Future<Output = T>, callback: String) -> T {
    let (done, _) = tokio::join!(finish, reqwest::get(callback));
    done
}

#[tokio::test]
async fn the_app_signs_in_with_bluesky_and_protects_the_account_with_a_second_consent() {
    let bed = pds::shared().await;
    let ivy = bed.create_account("oauth-ivy").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = crate::app::engine(bed, dir.path());

    // "Sign in with Bluesky": the page to open, then the window waits for the answer.
    let started = e.start_browser_sign_in(&ivy.handle).await.unwrap();
    let callback = oauth_pages::approve(&started.url, &ivy.handle, &ivy.password)
        .await
        .unwrap();
    let o = answered(e.finish_browser_sign_in(), callback)
        .await
        .unwrap();
    assert_eq!(
        o.me.as_ref().map(|m| m.did.as_str()),
        Some(ivy.did.as_str())
    );

    // A cancelled wait says so, and signs nothing in.
    let other = tempfile::tempdir().unwrap();
    let f = crate::app::engine(bed, other.path());
    f.start_browser_sign_in(&ivy.handle).await.unwrap();
    let waiting = {
        let f = f.clone();
        tokio::spawn(async move { f.finish_browser_sign_in().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    f.cancel_browser_sign_in();
    let err = waiting.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert!(f.overview().await.unwrap().me.is_none());

    // "Protect your account": the identity permission, asked for now, in its own consent.
    let started = e.start_recovery_consent().await.unwrap();
    let callback = oauth_pages::approve(&started.url, &ivy.handle, &ivy.password)
        .await
        .unwrap();
    let sent = answered(e.finish_recovery_consent(), callback)
        .await
        .unwrap();
    assert_eq!(sent.state, "code-sent");
    let code = bed.emailed_code(&ivy.did, "plc_operation").unwrap();
    let done = e.add_recovery_key("", Some(&code)).await.unwrap();
    assert_eq!(done.state, "registered");
    let key = p2pds::recovery::RecoveryKey::from_code(done.code.as_deref().unwrap()).unwrap();
    assert!(p2pds::recovery::is_registered(
        &reqwest::Client::new(),
        &resolver(bed),
        &ivy.did,
        &key
    )
    .await
    .unwrap());
    // The permission was given back: a second code needs a new consent (or the password).
    let again = e.add_recovery_key("", Some(&code)).await.unwrap_err();
    assert!(
        again
            .to_string()
            .contains("Allow P2PDS in your browser first"),
        "{again}"
    );
    e.sign_out().await.unwrap();
}
