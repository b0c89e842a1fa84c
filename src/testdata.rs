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
