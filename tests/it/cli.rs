//! Running the `p2pds` binary the way other tools drive it.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::pds::TestBed;

/// Runs `p2pds` against the test bed with `data` as its data directory.
pub async fn p2pds(bed: &TestBed, data: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_p2pds"))
        .arg("--data-dir")
        .arg(data)
        .args(["--plc-url", &bed.plc, "--resolver-url", &bed.pds])
        .args(args)
        .output()
        .await
        .expect("running p2pds")
}

/// Runs `p2pds`, asserts success, and parses its stdout as JSON.
pub async fn p2pds_json(bed: &TestBed, data: &Path, args: &[&str]) -> Value {
    let out = p2pds(bed, data, args).await;
    assert_ok(&out, args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "p2pds {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

pub fn assert_ok(out: &Output, args: &[&str]) {
    assert!(
        out.status.success(),
        "p2pds {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
