//! P2PDS engine: keeps verified copies of AT Protocol accounts.
//!
//! The engine never depends on tauri: the desktop shell (`src-tauri/`) and the
//! headless CLI (`src/bin/p2pds/`) are both thin adapters over this library.

pub mod app;
pub mod bench;
pub mod crypto;
pub mod engine;
pub mod export;
pub mod firehose;
pub mod follow;
pub mod group;
pub mod history;
pub mod identity;
pub mod policy;
pub mod reconcile;
pub mod recovery;
pub mod repo;
pub mod restore;
pub mod serve;
pub mod session;
pub mod store;
pub mod sync;
#[doc(hidden)]
pub mod testdata;
pub mod verify;
pub mod xrpc;
