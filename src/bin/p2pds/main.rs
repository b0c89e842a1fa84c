//! `p2pds`: the headless P2PDS engine, for terminals and home servers.

mod bench_cmd;
mod circle_cmd;
mod history_cmd;
mod policy_cmd;
mod run_cmd;
mod verify_cmd;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use p2pds::engine::OpKinds;
use p2pds::group::backlinks::BacklinkIndex;
use p2pds::identity::{Resolver, DEFAULT_PLC_URL};
use p2pds::session::oauth::ClientId;
use p2pds::store::{self, Store};
use p2pds::sync::Syncer;

#[derive(Debug, Parser)]
#[command(
    name = "p2pds",
    version,
    about = "Keep verified copies of your friends' AT Protocol accounts"
)]
struct Cli {
    /// Where the store and blobs live (default: the per-user data directory).
    #[arg(long, global = true, env = "P2PDS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PLC directory used to resolve did:plc identities.
    #[arg(long, global = true, env = "P2PDS_PLC_URL", default_value = DEFAULT_PLC_URL)]
    plc_url: String,
    /// An XRPC service answering com.atproto.identity.resolveHandle (tried first).
    #[arg(long, global = true, env = "P2PDS_RESOLVER_URL")]
    resolver_url: Option<String>,
    /// A backlink index (a Constellation-compatible `links` API) asked, by `run`, `sync` and
    /// `invitations`, for circles naming you in repos this node doesn't know; every answer is
    /// checked against its author's repo. Not asked unless given.
    #[arg(long, global = true, env = "P2PDS_BACKLINK_INDEX", value_name = "URL", value_parser = backlink_index)]
    backlink_index: Option<BacklinkIndex>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Choose whose accounts to back up.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Run the whole node until stopped (SIGINT or SIGTERM): backups, circles, verification
    /// and challenges, serving (when --listen is given or an endpoint is advertised), health,
    /// and the daily collection of old versions. One process per data folder.
    Run {
        /// Serve replicated accounts here (default 127.0.0.1:2585 when an endpoint is set).
        #[arg(long)]
        listen: Option<String>,
        /// Seconds between looks at what is due.
        #[arg(long, default_value_t = 20)]
        tick: u64,
        /// Minutes between two backups of an account.
        #[arg(long, default_value_t = 30)]
        every: u64,
        /// Only poll each account's server; do not follow their event streams (by default
        /// every commit is captured as it happens and polling is the safety net).
        #[arg(long)]
        poll_only: bool,
        /// Follow this relay's event stream (an http(s) or ws(s) address) instead of each
        /// server's: one connection for every account, for a relay that crawls their servers.
        #[arg(long, env = "P2PDS_RELAY", conflicts_with = "poll_only")]
        relay: Option<String>,
    },
    /// Bring every backed-up account up to date.
    Sync {
        /// One pass, then exit (otherwise keep syncing until interrupted).
        #[arg(long)]
        once: bool,
        /// Seconds between passes when running continuously.
        #[arg(long, default_value_t = 60)]
        interval: u64,
    },
    /// Show what is backed up.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List the records held for an account.
    Records {
        did: String,
        #[arg(long)]
        collection: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Write the latest verified copy of an account as a CAR file (and its blobs).
    Export {
        did: String,
        #[arg(long)]
        car: PathBuf,
        #[arg(long)]
        blobs: Option<PathBuf>,
        /// The version kept from this time (RFC 3339 or a date) instead of the newest.
        #[arg(long)]
        at: Option<String>,
    },
    /// The kept versions of an account and the upstream events flagged for it.
    History {
        /// A DID, or the handle of an account backed up here.
        account: String,
        /// Check every kept version: hashes, signatures and whole record trees.
        #[arg(long)]
        verify: bool,
        /// Accept the account's current state: clear its flags (their versions then age out).
        #[arg(long)]
        dismiss: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove versions older than the retention window, and what only they needed.
    Gc {
        /// Keep this much history: days (30) or a duration (12h); default: the setting.
        #[arg(long)]
        retention: Option<String>,
        /// Show what would be freed, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Give an account back: restore the copy held here into an account on a new PDS.
    Restore {
        /// A DID, or the handle of an account backed up here.
        did: String,
        /// The version kept from this time (RFC 3339 or a date); default: the last good one.
        #[arg(long)]
        at: Option<String>,
        /// The new PDS, e.g. https://pds.example.net.
        #[arg(long)]
        to_pds: String,
        /// The handle on the new PDS.
        #[arg(long)]
        handle: String,
        /// The environment variable holding the new account's password.
        #[arg(long)]
        password_env: String,
        /// The environment variable holding the owner's password on the current PDS (default:
        /// the same as --password-env).
        #[arg(long)]
        old_password_env: Option<String>,
        /// The account's email on the new PDS (default: the one the current PDS has).
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        invite_code: Option<String>,
        /// The confirmation code the old server emailed (a first run asks for it): the
        /// restore then also moves the account's identity to the new server and activates it.
        #[arg(long)]
        plc_token: Option<String>,
        /// The environment variable holding the owner's recovery key (the code shown when it
        /// was registered). Default: the key kept in this computer's keyring for the account,
        /// if any. With it the old server is not needed.
        #[arg(long)]
        recovery_key_env: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A recovery key of your own, so your account can move even if its server is gone.
    RecoveryKey {
        #[command(subcommand)]
        command: history_cmd::RecoveryKeyCommand,
    },
    /// Space used by backups, the storage limit and the free disk space.
    Storage {
        /// Set the storage limit, e.g. 500MB or 2GB.
        #[arg(long)]
        limit: Option<String>,
        /// Remove the storage limit.
        #[arg(long, conflicts_with = "limit")]
        no_limit: bool,
        #[arg(long)]
        json: bool,
    },
    /// Serve replicated accounts to peers and their owners (RASL and sync reads).
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:2585 or 0.0.0.0:2585.
        #[arg(long, default_value = "127.0.0.1:2585")]
        listen: String,
        /// Advertise this URL to your circles as where peers reach this server.
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Check that your circles' members hold the copies they promised (and answer their checks).
    Verify {
        /// One round now, then exit (otherwise keep verifying on the circles' schedule).
        #[arg(long)]
        once: bool,
        /// Only the copies this member holds (a DID or handle).
        #[arg(long)]
        peer: Option<String>,
        #[arg(long)]
        json: bool,
        /// Seconds between looks at what is due, when running continuously.
        #[arg(long, default_value_t = 30)]
        tick: u64,
    },
    /// A circle's health, computed from its members' public records.
    Compliance {
        /// The circle (its policy's AT-URI); all your circles when left out.
        uri: Option<String>,
        /// Evaluate at this instant (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The address where peers reach this node's server (advertised in its heartbeat).
    Endpoint {
        /// e.g. https://backup.example.net; shows the current one when left out.
        url: Option<String>,
        /// Stop advertising an endpoint.
        #[arg(long, conflicts_with = "url")]
        clear: bool,
    },
    /// Sign in to your account (handle + app password); secrets go to the system keyring (or,
    /// once chosen with --secrets-file, to a file only you can read).
    /// Sign in: in the browser on your server's own page (OAuth; P2PDS may then write only its
    /// own records), or with an app password.
    Login {
        handle: String,
        /// Sign in with an app password read from this environment variable.
        #[arg(long)]
        password_env: Option<String>,
        /// Sign in with an app password typed at a prompt (or given on stdin). Without a
        /// terminal, and without --oauth, this is the way.
        #[arg(long)]
        app_password: bool,
        /// Sign in in the browser even without a terminal (the address is printed).
        #[arg(long, conflicts_with_all = ["password_env", "app_password"])]
        oauth: bool,
        /// Print the sign-in address instead of opening a browser.
        #[arg(long)]
        no_browser: bool,
        /// The OAuth client metadata URL to sign in as (default: this build's, else the
        /// development loopback client).
        #[arg(long, env = "P2PDS_OAUTH_CLIENT_ID")]
        oauth_client_id: Option<String>,
        /// Keep the app password and session in `secrets.json` in the data folder (mode 0600,
        /// readable only by you) instead of the system keyring: for a server without a Secret
        /// Service. Remembered for later sign-ins of this data folder.
        #[arg(long)]
        secrets_file: bool,
    },
    /// Sign out and remove the secrets from where they are kept.
    Logout,
    /// Circles: friends who back each other up under one policy.
    Circle {
        #[command(subcommand)]
        command: circle_cmd::CircleCommand,
    },
    /// Circles that ask you to join (or to accept a changed version).
    Invitations {
        #[arg(long)]
        json: bool,
        /// Also look in this account's repo (a handle or DID); repeatable.
        #[arg(long)]
        from: Vec<String>,
        /// Open an invitation link (from `p2pds circle link`): the circle is read from its
        /// author's repo with a proof and shown; then `p2pds circle accept` works.
        #[arg(long, value_name = "LINK", conflicts_with = "from")]
        link: Option<String>,
    },
    /// Check and evaluate replication policies.
    Policy {
        #[command(subcommand)]
        command: policy_cmd::PolicyCommand,
    },
    /// Measure the engine.
    Bench {
        #[command(subcommand)]
        command: bench_cmd::BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Start backing up an account (a handle like alice.bsky.social, or a DID).
    Add { account: String },
    /// Stop backing up an account and delete its copy.
    Remove { did: String },
    /// List the accounts backed up.
    List {
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("P2PDS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn data_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &cli.data_dir {
        return Ok(dir.clone());
    }
    directories::ProjectDirs::from("org", "p2pds", "p2pds")
        .map(|d| d.data_dir().to_path_buf())
        .context("no per-user data directory on this system: pass --data-dir")
}

/// `--backlink-index`: refused at the edge when it is no http(s) address.
fn backlink_index(url: &str) -> Result<BacklinkIndex, String> {
    BacklinkIndex::new(url).map_err(|e| e.to_string())
}

struct Ctx {
    data_dir: PathBuf,
    store: Store,
    syncer: Syncer,
}

fn open(cli: &Cli) -> anyhow::Result<Ctx> {
    let data_dir = data_dir(cli)?;
    let store = Store::open(&data_dir.join("p2pds.sqlite"))
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    let http = reqwest::Client::builder()
        .user_agent(concat!("p2pds/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(120))
        .build()?;
    let resolver = Arc::new(Resolver::new(
        http.clone(),
        &cli.plc_url,
        cli.resolver_url.as_deref(),
    ));
    let mut syncer = Syncer::new(store.clone(), http, resolver, &data_dir);
    if let Some(grace) = pds_grace_from_env() {
        syncer.pds_grace = grace;
    }
    syncer.free_space = free_space_from_env();
    Ok(Ctx {
        data_dir,
        store,
        syncer,
    })
}

/// `P2PDS_FREE_SPACE` (bytes) stands in for the disk's measured free space: a full disk
/// cannot be produced on demand without privileges, and the tests use it to show what a full
/// disk does.
fn free_space_from_env() -> Option<u64> {
    std::env::var("P2PDS_FREE_SPACE").ok()?.parse().ok()
}

/// `P2PDS_PDS_GRACE` (e.g. `90s`, `2h`): how long a PDS may stay unreachable before it counts
/// as gone, outside circles (default a day).
fn pds_grace_from_env() -> Option<Duration> {
    let text = std::env::var("P2PDS_PDS_GRACE").ok()?;
    match p2pds::policy::Duration::parse(&text) {
        Ok(d) => Some(Duration::from_secs(d.secs())),
        Err(e) => {
            eprintln!("warning: P2PDS_PDS_GRACE: {e}; using a day");
            None
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match &cli.command {
        Command::Policy { .. } => {
            let Command::Policy { command } = cli.command else {
                return Ok(2);
            };
            return policy_cmd::run(command);
        }
        Command::Bench { command } => return bench_cmd::run(command),
        _ => {}
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run_async(cli))
}

async fn run_async(cli: Cli) -> anyhow::Result<i32> {
    // The commands that run the node controller open the store through it (one writer).
    let node = |ops, tick, every| {
        run_cmd::open(
            data_dir(&cli)?,
            &cli.plc_url,
            cli.resolver_url.as_deref(),
            cli.backlink_index.as_ref().map(BacklinkIndex::url),
            run_cmd::schedule(ops, tick, every),
        )
    };
    match &cli.command {
        Command::Run {
            listen,
            tick,
            every,
            poll_only,
            relay,
        } => {
            let n = node(OpKinds::ALL, Some(*tick), Some(every.saturating_mul(60)))?;
            let follow = (!poll_only).then(|| p2pds::follow::FollowConfig {
                relay: relay.clone(),
                ..Default::default()
            });
            return run_cmd::run(n, listen.as_deref(), follow).await;
        }
        Command::Sync { once, interval } => {
            let n = node(OpKinds::SYNC, Some(*interval), Some(*interval))?;
            return run_cmd::sync(n, *once).await;
        }
        Command::Verify {
            once,
            peer,
            json,
            tick,
        } => {
            let n = node(OpKinds::VERIFY, Some(*tick), None)?;
            return run_cmd::verify(n, *once, peer.as_deref(), *json).await;
        }
        _ => {}
    }
    let ctx = open(&cli)?;
    match &cli.command {
        Command::Backup { command } => backup(&ctx, command).await,
        Command::Status { json } => status(&ctx, *json).await,
        Command::Records {
            did,
            collection,
            json,
        } => records(&ctx, did, collection.clone(), *json).await,
        Command::Export {
            did,
            car,
            blobs,
            at,
        } => export(&ctx, did, car, blobs.as_deref(), at.as_deref()).await,
        Command::History {
            account,
            verify,
            dismiss,
            json,
        } => history_cmd::history(&ctx.syncer, account, *verify, *dismiss, *json).await,
        Command::Gc {
            retention,
            dry_run,
            json,
        } => history_cmd::gc(&ctx.syncer, retention.as_deref(), *dry_run, *json).await,
        Command::Restore {
            did,
            at,
            to_pds,
            handle,
            password_env,
            old_password_env,
            email,
            invite_code,
            plc_token,
            recovery_key_env,
            json,
        } => {
            history_cmd::restore(
                &ctx.syncer,
                did,
                at.as_deref(),
                to_pds,
                handle,
                password_env,
                old_password_env.as_deref(),
                email.as_deref(),
                invite_code.as_deref(),
                plc_token.clone(),
                recovery_key_env.as_deref(),
                *json,
            )
            .await
        }
        Command::RecoveryKey { command } => history_cmd::recovery_key(&ctx.syncer, command).await,
        Command::Storage {
            limit,
            no_limit,
            json,
        } => history_cmd::storage(&ctx.syncer, limit.as_deref(), *no_limit, *json).await,
        Command::Serve { listen, endpoint } => {
            if let Some(url) = endpoint {
                verify_cmd::endpoint(&ctx.syncer, Some(url), false).await?;
            }
            serve(&ctx, listen).await
        }
        Command::Compliance { uri, at, json } => {
            verify_cmd::compliance(&ctx.syncer, uri.as_deref(), at.as_deref(), *json).await
        }
        Command::Endpoint { url, clear } => {
            verify_cmd::endpoint(&ctx.syncer, url.as_deref(), *clear).await
        }
        Command::Login {
            handle,
            password_env,
            app_password,
            oauth,
            no_browser,
            oauth_client_id,
            secrets_file,
        } => {
            let how = circle_cmd::LoginHow {
                password_env: password_env.clone(),
                app_password: *app_password,
                oauth: *oauth,
                no_browser: *no_browser,
                client: oauth_client_id
                    .as_deref()
                    .map_or_else(ClientId::of_build, |c| ClientId::from_setting(Some(c))),
                secrets_file: *secrets_file,
            };
            circle_cmd::login(&ctx.syncer, handle, &how).await
        }
        Command::Logout => circle_cmd::logout(&ctx.syncer).await,
        Command::Circle { command } => circle_cmd::run(&ctx.syncer, command).await,
        Command::Invitations {
            json,
            link: Some(link),
            ..
        } => circle_cmd::open_link(&ctx.syncer, link, *json).await,
        Command::Invitations { json, from, .. } => {
            circle_cmd::invitations(&ctx.syncer, cli.backlink_index.clone(), *json, from).await
        }
        Command::Policy { .. }
        | Command::Bench { .. }
        | Command::Run { .. }
        | Command::Sync { .. }
        | Command::Verify { .. } => Ok(2),
    }
}

async fn backup(ctx: &Ctx, command: &BackupCommand) -> anyhow::Result<i32> {
    match command {
        BackupCommand::Add { account } => {
            let (doc, handle) = ctx
                .syncer
                .resolver
                .resolve_account_named(account)
                .await
                .with_context(|| format!("looking up {account}"))?;
            let (did, h, pds) = (doc.did.clone(), handle.clone(), doc.pds.clone());
            let added = ctx
                .store
                .write(move |c| store::add_repo(c, &did, h.as_deref(), pds.as_deref()))
                .await??;
            let name = handle.as_deref().unwrap_or(&doc.did);
            if added {
                println!(
                    "Now backing up {name} ({}). Run `p2pds sync` to copy it.",
                    doc.did
                );
            } else {
                println!("{name} ({}) was already backed up.", doc.did);
            }
            Ok(0)
        }
        BackupCommand::Remove { did } => {
            let (d, blobs) = (did.clone(), ctx.syncer.blob_dir());
            if ctx
                .store
                .write(move |c| store::remove_repo_and_files(c, &d, &blobs))
                .await??
            {
                println!("Stopped backing up {did} and deleted its copy (images and files no other account names went too).");
                Ok(0)
            } else {
                eprintln!("{did} is not backed up.");
                Ok(1)
            }
        }
        BackupCommand::List { json } => {
            let repos = ctx.store.read(store::list_repos).await?;
            if *json {
                let list: Vec<_> = repos
                    .iter()
                    .map(|r| serde_json::json!({"did": r.did, "handle": r.handle, "pds": r.pds}))
                    .collect();
                println!("{}", serde_json::json!({ "repos": list }));
            } else if repos.is_empty() {
                println!("No accounts backed up yet. Add one with `p2pds backup add HANDLE`.");
            } else {
                for r in repos {
                    println!("{}\t{}", r.did, r.handle.as_deref().unwrap_or("-"));
                }
            }
            Ok(0)
        }
    }
}

fn progress_bar(did: &str) -> Option<ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(did.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

async fn status(ctx: &Ctx, json: bool) -> anyhow::Result<i32> {
    let rows = ctx
        .store
        .read(|c| {
            let repos = store::list_repos(c)?;
            let mut out = Vec::new();
            for r in repos {
                let blobs = store::blob_counts(c, r.id)?;
                let followed = p2pds::follow::how_followed(c, r.pds.as_deref())?;
                let lag = p2pds::follow::lag_seconds(c, r.id)?;
                out.push((r, (blobs, followed, lag)));
            }
            Ok((out, p2pds::history::open_flags(c)?))
        })
        .await?;
    let (rows, flags) = rows;
    let flags_of = |did: &str| -> Vec<&p2pds::history::Flag> {
        flags
            .iter()
            .filter(|(d, _, _)| d == did)
            .map(|(_, _, f)| f)
            .collect()
    };
    if json {
        let repos: Vec<_> = rows
            .iter()
            .map(|(r, ((blobs, blob_bytes, _, _), followed, lag))| {
                serde_json::json!({
                    "did": r.did, "handle": r.handle, "rev": r.rev, "commit": r.head,
                    "records": r.records, "blocks": r.blocks, "bytes": r.bytes,
                    "blobs": blobs, "blobBytes": blob_bytes, "lastSyncAt": r.last_sync_at,
                    "state": r.state, "error": r.error, "errorCode": r.error_code,
                    "upstreamStatus": r.upstream_status,
                    "flags": flags_of(&r.did),
                    "followed": followed, "lagSeconds": lag,
                    "caughtUpFrom": r.caught_up_from, "caughtUpAt": r.caught_up_at,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "repos": repos }))?
        );
    } else if rows.is_empty() {
        println!("No accounts backed up yet. Add one with `p2pds backup add HANDLE`.");
    } else {
        for (r, ((blobs, blob_bytes, missing, bad), followed, lag)) in &rows {
            let (blobs, blob_bytes, missing, bad) = (*blobs, *blob_bytes, *missing, *bad);
            let followed = match (*followed, lag) {
                ("live", Some(lag)) => format!("; followed live ({lag:.1} s behind)"),
                ("live", None) => "; followed live".to_string(),
                ("catching-up", _) => "; catching up with its server's stream".to_string(),
                _ => String::new(),
            };
            let friend = match (&r.caught_up_from, &r.caught_up_at) {
                (Some(node), Some(at)) => {
                    let node = rows
                        .iter()
                        .find(|(o, _)| &o.did == node)
                        .and_then(|(o, _)| o.handle.as_deref())
                        .unwrap_or(node);
                    format!("\n  its server could not serve it: brought up to date from {node}'s node at {at}, verified")
                }
                _ => String::new(),
            };
            let r = r.clone();
            let name = r.handle.as_deref().unwrap_or(&r.did);
            let when = r.last_sync_at.as_deref().unwrap_or("never");
            println!(
                "{name}: {} records, {:.1} MB, {blobs} blobs ({:.1} MB, {missing} to fetch, {bad} bad); {}; last synced {when}{followed}{}{friend}",
                r.records,
                r.bytes as f64 / 1e6,
                blob_bytes as f64 / 1e6,
                r.state,
                r.error.map(|e| format!("\n  problem: {e}")).unwrap_or_default()
            );
            for f in flags_of(&r.did) {
                println!(
                    "  warning: {} (see `p2pds history {name}`; `p2pds restore` gives the account back)",
                    f.detail
                );
            }
        }
    }
    Ok(0)
}

async fn records(
    ctx: &Ctx,
    did: &str,
    collection: Option<String>,
    json: bool,
) -> anyhow::Result<i32> {
    let d = did.to_string();
    let rows = ctx
        .store
        .read(move |c| {
            let repo = store::get_repo(c, &d)?;
            match repo {
                Some(r) => Ok(Some(store::list_records(c, r.id, collection.as_deref())?)),
                None => Ok(None),
            }
        })
        .await?;
    let Some(rows) = rows else {
        bail!("{did} is not backed up");
    };
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "uri": format!("at://{did}/{}/{}", r.collection, r.rkey),
                    "collection": r.collection, "rkey": r.rkey, "cid": r.cid, "value": r.value,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "did": did, "records": list }));
    } else {
        for r in rows {
            println!("{}/{}\t{}", r.collection, r.rkey, r.value);
        }
    }
    Ok(0)
}

async fn export(
    ctx: &Ctx,
    did: &str,
    car: &Path,
    blobs: Option<&Path>,
    at: Option<&str>,
) -> anyhow::Result<i32> {
    let did = &history_cmd::did_of(&ctx.syncer, did).await?;
    let at = at.map(history_cmd::parse_at).transpose()?;
    let (d, car_path, blob_out) = (
        did.to_string(),
        car.to_path_buf(),
        blobs.map(Path::to_path_buf),
    );
    let blob_dir = ctx.syncer.blob_dir();
    let report = ctx
        .store
        .read(move |c| {
            // Written beside the target, then renamed: never a half-written export.
            let tmp = car_path.with_extension("car.part");
            let file = std::fs::File::create(&tmp)?;
            let out = std::io::BufWriter::new(file);
            let written = match at {
                None => p2pds::export::write_car(c, &d, out),
                Some(at) => p2pds::history::pick(c, &d, Some(at))
                    .map_err(|e| p2pds::export::ExportError::Unknown(e.to_string()))
                    .and_then(|p| p2pds::export::write_state_car(c, &d, &p.state.rev, out)),
            };
            let mut report =
                written.map_err(|e| store::StoreError::Io(std::io::Error::other(e.to_string())))?;
            std::fs::rename(&tmp, &car_path)?;
            if let Some(dir) = blob_out {
                p2pds::export::copy_blobs(&blob_dir, &dir, &mut report)
                    .map_err(|e| store::StoreError::Io(std::io::Error::other(e.to_string())))?;
            }
            Ok(report)
        })
        .await?;
    eprintln!(
        "Exported {did} at rev {}: {} records, {} blocks, {:.1} MB{}",
        report.rev,
        report.records,
        report.blocks,
        report.bytes as f64 / 1e6,
        if blobs.is_some() {
            format!(
                "; {} images and files written, {} not held here",
                report.blobs, report.blobs_missing
            )
        } else {
            String::new()
        }
    );
    if !report.missing_blobs.is_empty() {
        eprintln!(
            "Named by this version but not held here: {}",
            report.missing_blobs.join(", ")
        );
    }
    let _ = &ctx.data_dir;
    Ok(0)
}

async fn serve(ctx: &Ctx, listen: &str) -> anyhow::Result<i32> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("could not listen on {listen}: is another program using it?"))?;
    eprintln!(
        "Serving replicated accounts on http://{} (read-only; Ctrl-C stops)",
        listener.local_addr()?
    );
    p2pds::serve::serve(
        listener,
        ctx.store.clone(),
        ctx.syncer.blob_dir(),
        p2pds::serve::ServeConfig::default(),
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await?;
    Ok(0)
}
