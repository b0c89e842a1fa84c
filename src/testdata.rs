//! Where the tests find the atproto interop fixtures (CC0 conformance files).
//!
//! `ATPROTO_INTEROP_TESTS` names the folder; otherwise `../shared/atproto-interop-tests`
//! beside the repository is used. When neither exists the tests fail with a message
//! saying so, unless `P2PDS_SKIP_INTEROP=1`, in which case they say they were skipped.

use std::path::PathBuf;

/// The fixtures folder, or `None` (after saying so) when skipping was asked for.
pub fn interop_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("ATPROTO_INTEROP_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/atproto-interop-tests")
        });
    if dir.join("README.md").exists() {
        return Some(dir);
    }
    let msg = format!(
        "atproto interop fixtures are absent (looked in {}): set ATPROTO_INTEROP_TESTS to their folder",
        dir.display()
    );
    if std::env::var("P2PDS_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("SKIPPED: {msg}");
        return None;
    }
    panic!("{msg}, or set P2PDS_SKIP_INTEROP=1 to skip these checks");
}

/// A store holding one generated repo of `n` posts (signed, ingested as a sync would): the
/// folder, a connection, the repo's id, its tree root, and its records (key → CID).
#[cfg(test)]
#[allow(clippy::type_complexity)]
pub(crate) fn held_repo(
    n: usize,
) -> (
    tempfile::TempDir,
    rusqlite::Connection,
    i64,
    cid::Cid,
    Vec<(String, cid::Cid)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p2pds.sqlite");
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    crate::store::schema::migrate(&mut conn, &path).unwrap();
    let key = crate::crypto::SigningKey::generate_k256();
    let did = "did:plc:testdatatestdatatestdata";
    let mut repo = crate::repo::build::RepoBuilder::new(did, key.clone());
    for i in 0..n {
        repo.put_json(
            "app.bsky.feed.post",
            &format!("3k{i:011}"),
            &serde_json::json!({"$type": "app.bsky.feed.post", "text": format!("post {i}"),
                "createdAt": "2024-01-01T00:00:00Z"}),
        );
    }
    let built = repo.build("3kaaaaaaaaaaa");
    crate::store::add_repo(&conn, did, None, None).unwrap();
    crate::sync::ingest::ingest_car(
        &mut conn,
        did,
        &key.public_key(),
        &built.car_bytes()[..],
        &mut |_| {},
    )
    .unwrap();
    let id = conn
        .query_row("SELECT id FROM repos", [], |r| r.get(0))
        .unwrap();
    let records = repo
        .records
        .iter()
        .map(|(k, v)| (k.clone(), crate::repo::cid_for_cbor(v)))
        .collect();
    (dir, conn, id, built.data, records)
}
