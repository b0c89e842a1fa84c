//! `p2pds history`, `p2pds gc`, `p2pds restore` and `p2pds storage`: the kept versions of
//! each account, their collection, giving an account back, and the room backups may take.

use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use p2pds::history::{self, check, gc};
use p2pds::recovery::{self, RecoveryKey};
use p2pds::restore::{self, RestoreProgress, RestoreRequest};
use p2pds::session;
use p2pds::store::{self, space};
use p2pds::sync::Syncer;

/// A DID, or the handle of an account backed up here.
pub async fn did_of(syncer: &Syncer, account: &str) -> anyhow::Result<String> {
    if account.starts_with("did:") {
        return Ok(account.to_string());
    }
    let name = account.trim_start_matches('@').to_lowercase();
    let repos = syncer.store.read(store::list_repos).await?;
    if let Some(r) = repos
        .iter()
        .find(|r| r.handle.as_deref().map(str::to_lowercase).as_deref() == Some(name.as_str()))
    {
        return Ok(r.did.clone());
    }
    let doc = syncer
        .resolver
        .resolve_account(account)
        .await
        .with_context(|| format!("looking up {account}"))?;
    Ok(doc.did)
}

/// `--at`: RFC 3339, or a date (midnight UTC).
pub fn parse_at(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    bail!("{text:?} is not a time: write it like 2026-11-20T18:00:00Z or 2026-11-20")
}

/// `--retention`: days (`30`) or a duration (`12h`, `90s`, `7d`).
pub fn parse_retention(text: &str) -> anyhow::Result<Duration> {
    if let Ok(days) = text.parse::<u32>() {
        return Ok(Duration::from_secs(u64::from(days) * 86_400));
    }
    let d = p2pds::policy::time::Duration::parse(text).map_err(|_| {
        anyhow::anyhow!("{text:?} is not a retention: write days (30) or a duration (12h, 7d)")
    })?;
    Ok(Duration::from_secs(d.secs()))
}

pub async fn history(
    syncer: &Syncer,
    account: &str,
    verify: bool,
    dismiss: bool,
    json: bool,
) -> anyhow::Result<i32> {
    let did = did_of(syncer, account).await?;
    let d = did.clone();
    let (states, flags, dismissed) = syncer
        .store
        .write(move |c| {
            let id = history::repo_id(c, &d)?;
            let dismissed = if dismiss { history::dismiss(c, id)? } else { 0 };
            let states = history::states(c, id)?;
            Ok::<_, history::HistoryError>((states, history::flags(c, id)?, dismissed))
        })
        .await??;
    let checked = if verify {
        let d = did.clone();
        Some(syncer.store.read(move |c| check::check(c, &d)).await?)
    } else {
        None
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "did": did, "states": states, "flags": flags, "dismissed": dismissed,
                "check": checked,
            }))?
        );
    } else {
        println!("{} kept version(s) of {account}:", states.len());
        for s in &states {
            println!(
                "  {}  {} records  (rev {}, synced {}; +{} ~{} -{})",
                s.time,
                s.records
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "?".into()),
                s.rev,
                s.synced_at,
                s.creates,
                s.updates,
                s.deletes
            );
        }
        for f in &flags {
            let state = match &f.cleared_at {
                None => "OPEN".to_string(),
                Some(t) => format!("cleared {t}"),
            };
            println!(
                "  flag [{state}] {} since {}: {}{}",
                f.kind,
                f.detected_at,
                f.detail,
                f.good_rev
                    .as_ref()
                    .map(|r| format!(" (last good version kept: {r})"))
                    .unwrap_or_default()
            );
        }
        if dismissed > 0 {
            println!("Dismissed {dismissed} flag(s): their versions are now kept for the retention window only.");
        }
        if let Some(c) = &checked {
            if c.ok() {
                println!(
                    "History verifies: {} versions, {} trees, {} records, {} blocks hashed.",
                    c.states_checked, c.trees_walked, c.records_checked, c.blocks_hashed
                );
            } else {
                println!("History has {} problem(s):", c.problems.len());
                for p in &c.problems {
                    println!("  {p}");
                }
            }
        }
    }
    Ok(match &checked {
        Some(c) if !c.ok() => 1,
        _ => 0,
    })
}

pub async fn gc(
    syncer: &Syncer,
    retention: Option<&str>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<i32> {
    let retention = match retention {
        Some(r) => parse_retention(r)?,
        None => {
            let limits = syncer.store.read(history::limits).await?;
            Duration::from_secs(u64::from(limits.retention_days) * 86_400)
        }
    };
    let opts = gc::GcOptions {
        retention,
        now: Utc::now(),
    };
    let blob_dir = syncer.blob_dir();
    let report = if dry_run {
        syncer
            .store
            .read(move |c| gc::plan(c, &blob_dir, &opts))
            .await?
    } else {
        syncer
            .store
            .write(move |c| gc::run(c, &blob_dir, &opts))
            .await??
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let verb = if dry_run { "Would free" } else { "Freed" };
        println!(
            "{verb} {} ({} old version(s), {} blocks, {} image/file(s)), keeping {} days of history.",
            space::size_words(report.reclaimable_bytes),
            report.states_removed,
            report.blocks_removed,
            report.blob_files_removed,
            report.retention_days
        );
        for a in &report.accounts {
            println!(
                "  {}: {} version(s) kept since {}, {} removed, {}",
                a.handle.as_deref().unwrap_or(&a.did),
                a.states_kept,
                a.keep_since,
                a.states_removed,
                space::size_words(a.bytes_removed + a.blob_bytes_removed)
            );
        }
    }
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
pub async fn restore(
    syncer: &Syncer,
    account: &str,
    at: Option<&str>,
    to_pds: &str,
    handle: &str,
    password_env: &str,
    old_password_env: Option<&str>,
    email: Option<&str>,
    invite_code: Option<&str>,
    plc_token: Option<String>,
    recovery_key_env: Option<&str>,
    json: bool,
) -> anyhow::Result<i32> {
    let did = did_of(syncer, account).await?;
    let recovery_key = match recovery_key_env {
        Some(var) => Some(RecoveryKey::from_code(&std::env::var(var).with_context(
            || format!("the environment variable {var} (the recovery key) is not set"),
        )?)?),
        // The owner's own computer keeps it in the keyring; elsewhere there is none (the old
        // server may still do).
        None => recovery::held_key(&syncer.http, &syncer.resolver, &did).await,
    };
    let password = std::env::var(password_env).with_context(|| {
        format!("the environment variable {password_env} (the new account's password) is not set")
    })?;
    let old_password = match old_password_env {
        Some(var) => Some(std::env::var(var).with_context(|| {
            format!("the environment variable {var} (the password on the old server) is not set")
        })?),
        None => None,
    };
    let req = RestoreRequest {
        did,
        at: at.map(parse_at).transpose()?,
        to_pds: to_pds.to_string(),
        handle: handle.to_string(),
        password,
        old_password,
        email: email.map(str::to_string),
        invite_code: invite_code.map(str::to_string),
        plc_token,
        recovery_key,
    };
    let show = |p: RestoreProgress| {
        if !json {
            match p {
                RestoreProgress::Preparing => eprintln!("Preparing the kept copy…"),
                RestoreProgress::Account => eprintln!("Setting up the account on {to_pds}…"),
                RestoreProgress::Importing { bytes } => {
                    eprintln!("Sending the records ({})…", space::size_words(bytes))
                }
                RestoreProgress::Blobs { done, total } if done == total => {
                    eprintln!("Images and files: {done}/{total}")
                }
                RestoreProgress::Blobs { .. } => {}
            }
        }
    };
    let report = restore::restore(syncer, &req, &show).await?;
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["complete"] = serde_json::json!(report.complete());
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!(
            "Restored {} ({}) into the {} account on {}: {} records, {} of {} images and files sent.",
            account,
            report.why,
            report.account,
            report.to_pds,
            report.records,
            report.blobs_uploaded,
            report.blobs_referenced
        );
        for n in &report.not_restored {
            println!("  not restored: {}: {}", n.what, n.reason);
        }
        for step in &report.next_steps {
            println!("Next: {step}");
        }
        if report.code_sent {
            println!("(On the command line: the same restore with --plc-token CODE.)");
        }
    }
    Ok(if report.complete() { 0 } else { 3 })
}

pub async fn storage(
    syncer: &Syncer,
    limit: Option<&str>,
    no_limit: bool,
    json: bool,
) -> anyhow::Result<i32> {
    if no_limit || limit.is_some() {
        let bytes = match limit {
            Some(l) => Some(parse_size(l)?),
            None => None,
        };
        syncer
            .store
            .write(move |c| history::set_storage_limit(c, bytes))
            .await??;
    }
    let (dir, free) = (syncer.data_dir.clone(), syncer.free_space);
    let (limits, used, room) = syncer
        .store
        .read(move |c| {
            Ok((
                history::limits(c)?,
                space::used_bytes(c)?,
                space::Room::measure(c, &dir, free)?,
            ))
        })
        .await?;
    let free = syncer
        .free_space
        .or_else(|| space::free_space(&syncer.data_dir));
    if json {
        println!(
            "{}",
            serde_json::json!({
                "usedBytes": used, "limitBytes": limits.storage_limit_bytes,
                "freeBytes": free, "reserveBytes": space::RESERVE_BYTES,
                "retentionDays": limits.retention_days,
                "roomBytes": room.limit.map(|l| l.0),
            })
        );
    } else {
        println!(
            "Backups use {}{}; {} free on the disk; history kept for {} days.",
            space::size_words(used),
            limits
                .storage_limit_bytes
                .map(|l| format!(" of a {} limit", space::size_words(l)))
                .unwrap_or_default(),
            free.map(space::size_words)
                .unwrap_or_else(|| "unknown".into()),
            limits.retention_days
        );
    }
    Ok(0)
}

/// `500MB`, `2GB`, `1.5G`, `1000000`.
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let t = text.trim().to_uppercase();
    let (num, mult) = [
        ("TB", 1e12),
        ("GB", 1e9),
        ("MB", 1e6),
        ("KB", 1e3),
        ("T", 1e12),
        ("G", 1e9),
        ("M", 1e6),
        ("K", 1e3),
        ("B", 1.0),
    ]
    .iter()
    .find_map(|(s, m)| t.strip_suffix(s).map(|n| (n.trim().to_string(), *m)))
    .unwrap_or((t.clone(), 1.0));
    match num.parse::<f64>() {
        Ok(n) if n > 0.0 && n.is_finite() => Ok((n * mult) as u64),
        _ => bail!("{text:?} is not a size: write it like 500MB or 2GB"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_times_and_retentions_parse() {
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("1.5g").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(
            parse_retention("30").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(parse_retention("90s").unwrap(), Duration::from_secs(90));
        assert!(parse_retention("soon").is_err());
        assert_eq!(
            parse_at("2026-11-20").unwrap().to_rfc3339(),
            "2026-11-20T00:00:00+00:00"
        );
        assert!(parse_at("yesterday").is_err());
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum RecoveryKeyCommand {
    /// Register a recovery key: a first run has the account's server email a confirmation
    /// code; the same command with `--code` then adds the key to the account's identity.
    Add {
        /// The account (default: the one signed in here).
        #[arg(long)]
        account: Option<String>,
        /// The environment variable holding the account's main password (an app password is
        /// not enough for identity changes); otherwise a prompt, or stdin.
        #[arg(long)]
        password_env: Option<String>,
        /// The confirmation code the server emailed.
        #[arg(long)]
        code: Option<String>,
        /// Allow it in the browser instead of giving the main password: your server's page
        /// asks you to let P2PDS change your account's identity (this once); then the code it
        /// emails is asked for here (a prompt, or stdin).
        #[arg(long, conflicts_with_all = ["password_env", "code"])]
        oauth: bool,
        /// With --oauth: print the address instead of opening a browser.
        #[arg(long, requires = "oauth")]
        no_browser: bool,
        /// With --oauth: the OAuth client metadata URL to ask as.
        #[arg(long, env = "P2PDS_OAUTH_CLIENT_ID")]
        oauth_client_id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Whether this computer holds a recovery key for the account, and whether its identity
    /// lists it.
    Status {
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

async fn own_account(syncer: &Syncer, account: Option<&str>) -> anyhow::Result<String> {
    if let Some(a) = account {
        return Ok(syncer.resolver.resolve_account(a).await?.did);
    }
    syncer
        .store
        .read(session::signed_in)
        .await?
        .map(|a| a.did)
        .context("nobody is signed in here: give --account HANDLE (or run `p2pds login` first)")
}

/// A recovery key registered with the identity permission given in the browser: the consent,
/// the server's emailed code (asked for here), the change; the permission is given back after.
async fn register_in_browser(
    syncer: &Syncer,
    did: &str,
    client: &p2pds::session::oauth::ClientId,
    no_browser: bool,
) -> anyhow::Result<recovery::Registration> {
    let pending =
        session::Session::start_identity_consent(&syncer.http, &syncer.resolver, did, client)
            .await?;
    eprintln!("Adding a recovery key changes your account's identity, so your server asks you once to allow it.");
    eprintln!(
        "Allow it on your server's page in the browser. If no browser opened, open this address:"
    );
    eprintln!("  {}", pending.url);
    eprintln!("Waiting for the answer (up to 10 minutes; Ctrl-C cancels)…");
    if !no_browser {
        crate::circle_cmd::open_browser(&pending.url);
    }
    let grant = tokio::select! {
        g = pending.finish_identity(&syncer.http, std::time::Duration::from_secs(600)) => g?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("cancelled: nothing was changed"),
    };
    let auth = recovery::IdentityAuth::Granted(&grant);
    let result = async {
        let first =
            recovery::register_with(&syncer.http, &syncer.resolver, did, auth, None).await?;
        if first.state != "code-sent" {
            return Ok(first);
        }
        let code = crate::circle_cmd::read_password(
            None,
            "Your server emailed a confirmation code to the account's address. Code: ",
        )?;
        let auth = recovery::IdentityAuth::Granted(&grant);
        Ok::<_, anyhow::Error>(
            recovery::register_with(&syncer.http, &syncer.resolver, did, auth, Some(&code)).await?,
        )
    }
    .await;
    grant.revoke(&syncer.http).await;
    result
}

pub async fn recovery_key(syncer: &Syncer, command: &RecoveryKeyCommand) -> anyhow::Result<i32> {
    match command {
        RecoveryKeyCommand::Add {
            account,
            password_env,
            code,
            oauth,
            no_browser,
            oauth_client_id,
            json,
        } => {
            let did = own_account(syncer, account.as_deref()).await?;
            let done = if *oauth {
                let client = oauth_client_id
                    .as_deref()
                    .map_or_else(p2pds::session::oauth::ClientId::of_build, |c| {
                        p2pds::session::oauth::ClientId::from_setting(Some(c))
                    });
                register_in_browser(syncer, &did, &client, *no_browser).await?
            } else {
                let password = crate::circle_cmd::read_password(
                    password_env.as_deref(),
                    "Main password of the account (not an app password): ",
                )?;
                recovery::register(
                    &syncer.http,
                    &syncer.resolver,
                    &did,
                    &password,
                    code.as_deref(),
                )
                .await?
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&done)?);
                return Ok(0);
            }
            match done.state.as_str() {
                "code-sent" => println!(
                    "The account's server has emailed a confirmation code to the account's \
                     address. Run the same command again with --code CODE."
                ),
                "already" => {
                    println!("The account's identity already lists the recovery key kept here.")
                }
                _ => {
                    println!(
                        "Your recovery key is registered and kept in this computer's keyring."
                    );
                    if let Some(code) = &done.code {
                        println!(
                            "Write it down and keep it somewhere safe, away from this computer:\n\n    {code}\n"
                        );
                    }
                    println!(
                        "With it, `p2pds restore --recovery-key-env VAR` can move your account \
                         to a new server even if the current one is gone."
                    );
                }
            }
            Ok(0)
        }
        RecoveryKeyCommand::Status { account, json } => {
            let did = own_account(syncer, account.as_deref()).await?;
            let key = recovery::kept_key(&did).await?;
            let listed = match &key {
                Some(k) => recovery::is_registered(&syncer.http, &syncer.resolver, &did, k).await?,
                None => false,
            };
            if *json {
                println!(
                    "{}",
                    serde_json::json!({
                        "did": did,
                        "held": key.is_some(),
                        "registered": listed,
                        "didKey": key.as_ref().map(RecoveryKey::did_key),
                    })
                );
            } else {
                match (&key, listed) {
                    (None, _) => println!("No recovery key is kept here for {did}."),
                    (Some(_), true) => {
                        println!("A recovery key is kept here, and {did}'s identity lists it.")
                    }
                    (Some(_), false) => println!(
                        "A recovery key is kept here, but {did}'s identity does not list it: run \
                         `p2pds recovery-key add` to register it."
                    ),
                }
            }
            Ok(0)
        }
    }
}
