//! Real-time capture (issue 15): what a friend's event stream (`subscribeRepos`) says, checked
//! and kept. No network here: the WebSocket, cursors and reconnection are the transport's
//! (`crate::follow`); this module is fed one frame at a time.
//!
//! - [`frame`]: one frame decoded into a typed [`Event`] (sizes capped, unknown types passed
//!   over, anything unreadable refused in words).
//! - [`verify`]: a `#commit` verified by the sync 1.1 rules, in two stages: the event on its
//!   own (blocks hashed, commit decoded, signature) and against the copy held (rev newer,
//!   `prevData` chaining onto the held tree, the operations exactly the tree's changes).
//! - [`apply`]: verified commits written to the store as kept versions, many per transaction.
//! - [`bench`](mod@bench): `p2pds bench firehose`, a generated stream replayed from a file.
//!
//! Invariant: nothing unverified is stored. A refused commit leaves the copy held as it was;
//! its [`RefusalKind`] says whether the account must be fetched again.

pub mod apply;
pub mod bench;
pub mod frame;
pub mod verify;

#[cfg(test)]
mod tests;

pub use apply::{apply_checked, apply_commit, check, Applied, ApplyError, Checked, Outcome};
pub use frame::{decode, CommitEvent, Event, FrameError};
pub use verify::{Held, HeldKey, Refusal, RefusalKind, Verdict, Verified};
