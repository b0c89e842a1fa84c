//! `p2pds policy …`: check and evaluate replication policies (see `p2pds::policy`).

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {}

/// Runs a policy subcommand and returns the process exit code.
pub fn run(cmd: PolicyCommand) -> anyhow::Result<i32> {
    match cmd {}
}
