//! Replication policy: parse, validate, obligations, compliance. Pure: no IO.
//!
//! A group's policy is data (an `org.p2pds.policy` record); this module says what it means.
//! Everything here is a function of its inputs: the policy record, the acks and the observations
//! (heartbeats, holdings, verification results), and `now`, which is always passed in, never
//! read from a clock. So every node, or an outside auditor, that evaluates the same inputs reaches
//! byte-for-byte the same conclusion.
//!
//! Map (DESIGN §3–4, seed §1, §5, §8):
//! - [`records`]: the wire types of the `org.p2pds.*` lexicons.
//! - [`time`]: durations ("30m"), timestamps, percentages; integers inside.
//! - [`input`]: the input files as bytes: size cap, UTF-8, JSON, no key twice, the observations
//!   file's shape; refusals in words.
//! - [`defaults`]: what a policy may leave out, filled in before it is read; the effective policy.
//! - [`validate`] → [`model`]: a record becomes a [`model::Policy`] or a list of problems.
//! - [`detect`]: a detection target ("a 1% loss with 99% confidence within a day") → blocks
//!   per round, and the sampling in words.
//! - [`version`]: a policy version is its record's CID.
//! - [`lifecycle`]: scheduled, pending acks, active, expired, revoked.
//! - [`observations`]: the input format of what nodes saw and published.
//! - [`obligations`]: who holds which account and who verifies whom.
//! - [`compliance`] → [`report`]: the graduated states and conditions.
//! - [`window`]: rolling-window figures (uptime, pass rate, sync lag).
//! - [`combine`]: several policies naming the same account, strictest wins.
//! - [`bench`](mod@bench): synthetic inputs and timing of an evaluation.
//!
//! Invariants (tested): no IO and no clock (the one exception is [`bench`](mod@bench), which reads the
//! monotonic clock to time the pure evaluation and is not used by the engine); outputs use sorted
//! collections, so the order of inputs never shows in them; no floating point in any decision.

pub mod bench;
pub mod combine;
pub mod compliance;
pub mod defaults;
pub mod detect;
pub mod input;
pub mod lifecycle;
pub mod model;
pub mod obligations;
pub mod observations;
pub mod records;
pub mod report;
pub mod time;
pub mod validate;
pub mod version;
pub mod window;

pub use compliance::evaluate;
pub use input::{check_bytes, MAX_POLICY_BYTES};
pub use model::{Policy, PolicyRef};
pub use observations::Observations;
pub use report::{Report, State};
pub use time::{Duration, Percent, Timestamp};
pub use validate::{check_json, Checked, Problem, Problems};
