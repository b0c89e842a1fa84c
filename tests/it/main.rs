//! One integration-test binary; each area is a submodule.

// A panic is how a test reports failure: the shared helpers in these modules
// (not only `#[test]` functions, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod app;
mod backlinks;
mod catchup;
mod circles;
mod cli;
mod conformance;
mod crash;
mod fuzz_corpus;
mod hostile;
mod invite_link;
mod layers;
mod lexicons;
mod live;
mod live_restart;
mod mirror;
mod node;
mod oauth;
mod oauth_pages;
mod pds;
mod peers;
mod policy;
mod replication;
mod restore;
mod selfcheck;
mod serve;
mod verify;
mod whole;
