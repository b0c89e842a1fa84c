//! `p2pds login`, `logout`, `invitations` and `circle …`: the terminal edge of
//! `p2pds::session` and `p2pds::group`. Reads the password (environment variable, terminal
//! prompt or stdin), asks about copies on a terminal, prints; every rule lives in the library.
//!
//! `p2pds sync` and `p2pds run` (the node controller) refresh the circles before the accounts
//! are copied and publish this node's status and heartbeat records after, rate-limited
//! (`P2PDS_PUBLISH_INTERVAL`, default 20m: at most three writes an hour per record).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context};
use clap::Subcommand;
use p2pds::app::engine::link::failure_in_words;
use p2pds::group::link::InvitationLink;
use p2pds::group::plan::{CircleEdit, CircleState, PublishRate};
use p2pds::group::{
    CircleView, Circles, Copies, CopiesOutcome, GroupError, Invitation, RefreshReport,
};
use p2pds::policy::lifecycle::AckState;
use p2pds::policy::Duration;
use p2pds::session::oauth::ClientId;
use p2pds::session::Session;
use p2pds::sync::Syncer;

#[derive(Debug, Subcommand)]
pub enum CircleCommand {
    /// Create a circle: publish its policy in your repo and accept it yourself.
    Create {
        /// The circle's name, shown to its members.
        #[arg(long)]
        name: String,
        /// The other members (handles or DIDs); repeat or list several.
        #[arg(long = "member", required = true, num_args = 1..)]
        members: Vec<String>,
        /// Copies of each account other members must hold (default 2, fewer in a small circle).
        #[arg(long)]
        min_copies: Option<u32>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        rules: RulesArgs,
        #[arg(long)]
        json: bool,
    },
    /// List your circles with their state and each member's answer.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Accept a circle's current version; duties start when every member has accepted.
    Accept {
        uri: String,
        #[arg(long)]
        json: bool,
    },
    /// Decline a circle's current version (you will not be asked again for it).
    Decline {
        uri: String,
        /// Why, for the others to read.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Leave a circle: withdraw your acks; your duties end.
    Leave {
        uri: String,
        #[command(flatten)]
        copies: CopiesArgs,
    },
    /// Revoke a circle you wrote: everyone's duties end.
    Revoke {
        uri: String,
        #[command(flatten)]
        copies: CopiesArgs,
    },
    /// Print the circle's invitation link: one line to send the members by any channel (chat,
    /// email); they open it with `p2pds invitations --link LINK`. It names the circle and its
    /// newest version, nothing secret.
    Link {
        uri: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a circle you wrote; the members must accept the new version (the old one stays
    /// in force meanwhile).
    Edit {
        uri: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        min_copies: Option<u32>,
        /// A new description ("" removes it).
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// Rules other than the defaults (checked every hour, layers 0 and 1, members may be offline
/// three days, new copies have six hours to catch up).
#[derive(Debug, clap::Args)]
pub struct RulesArgs {
    /// How often each copy is verified, e.g. 30m or 2h.
    #[arg(long, value_name = "DURATION")]
    check_every: Option<String>,
    /// Verification layers: 0 commit root, 1 block sampling, 2 whole copy, 3 record proofs
    /// (e.g. 0,1,2,3).
    #[arg(long, value_delimiter = ',', value_name = "LAYERS")]
    layers: Option<Vec<i64>>,
    /// How long a member may be silent before it counts as failed, e.g. 3d.
    #[arg(long, value_name = "DURATION")]
    offline_grace: Option<String>,
    /// How long a new or returning copy has to catch up, e.g. 6h (0s for none).
    #[arg(long, value_name = "DURATION")]
    recovery_grace: Option<String>,
}

impl RulesArgs {
    fn overrides(&self) -> p2pds::group::plan::RuleOverrides {
        p2pds::group::plan::RuleOverrides {
            check_every: self.check_every.clone(),
            layers: self.layers.clone(),
            offline_grace: self.offline_grace.clone(),
            recovery_grace: self.recovery_grace.clone(),
        }
    }
}

/// What to do with the copies the circle made you keep.
#[derive(Debug, clap::Args)]
pub struct CopiesArgs {
    /// Keep the copies (they stay backed up; `p2pds backup remove` deletes them later).
    #[arg(long, conflicts_with = "delete_copies")]
    keep_copies: bool,
    /// Delete the copies this circle added (not those you back up yourself or for another
    /// circle).
    #[arg(long)]
    delete_copies: bool,
}

pub(crate) fn circles(syncer: &Syncer) -> Circles {
    let mut c = Circles::new(syncer.clone());
    if let Ok(text) = std::env::var("P2PDS_PUBLISH_INTERVAL") {
        match Duration::parse(&text) {
            Ok(d) => c.rate = PublishRate::every(d),
            Err(e) => eprintln!("warning: P2PDS_PUBLISH_INTERVAL: {e}; using 20m"),
        }
    }
    c
}

pub(crate) async fn session(syncer: &Syncer) -> anyhow::Result<std::sync::Arc<Session>> {
    Ok(Session::resume(syncer.http.clone(), &syncer.store).await?)
}

fn read_app_password(var: Option<&str>) -> anyhow::Result<String> {
    read_password(
        var,
        "App password (Settings → Privacy and security → App passwords): ",
    )
}

/// A password from the environment variable `var`, else the terminal (asking with `prompt`),
/// else stdin.
pub(crate) fn read_password(var: Option<&str>, prompt: &str) -> anyhow::Result<String> {
    if let Some(var) = var {
        let pw = std::env::var(var)
            .with_context(|| format!("the environment variable {var} is not set"))?;
        if pw.is_empty() {
            bail!("the environment variable {var} is empty");
        }
        return Ok(pw);
    }
    if std::io::stdin().is_terminal() {
        eprint!("{prompt}");
        std::io::stderr().flush()?;
        let pw = read_hidden_line()?;
        if pw.is_empty() {
            bail!("no password given");
        }
        return Ok(pw);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let pw = line.trim_end_matches(['\n', '\r']).to_string();
    if pw.is_empty() {
        bail!("no password: give it on stdin, or name an environment variable with --password-env VAR");
    }
    Ok(pw)
}

/// A line from the terminal without echo (`stty -echo` around the read).
fn read_hidden_line() -> anyhow::Result<String> {
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let hidden = stty("-echo");
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if hidden {
        stty("echo");
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// How `p2pds login` signs in.
pub struct LoginHow {
    pub password_env: Option<String>,
    pub app_password: bool,
    pub oauth: bool,
    pub no_browser: bool,
    pub client: ClientId,
    pub secrets_file: bool,
}

/// How long `p2pds login` waits for the browser's answer.
const OAUTH_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

pub async fn login(syncer: &Syncer, who: &str, how: &LoginHow) -> anyhow::Result<i32> {
    // At a terminal the browser is the way in; piped input (scripts) stays the app password.
    let browser = how.oauth
        || (how.password_env.is_none() && !how.app_password && std::io::stdin().is_terminal());
    let password = if browser {
        None
    } else {
        Some(read_app_password(how.password_env.as_deref())?)
    };
    if how.secrets_file {
        p2pds::session::use_secrets_file(&syncer.store).await?;
    }
    let place = || p2pds::session::secret_store_words(&syncer.store);
    let Some(password) = password else {
        let pending = Session::start_oauth(
            &syncer.http,
            &syncer.resolver,
            &syncer.store,
            who,
            &how.client,
        )
        .await?;
        eprintln!("Sign in on your server's page in the browser. If no browser opened, open this address:");
        eprintln!("  {}", pending.url);
        eprintln!("Waiting for the answer (up to 10 minutes; Ctrl-C cancels)…");
        if !how.no_browser {
            open_browser(&pending.url);
        }
        let s = tokio::select! {
            s = Session::finish_oauth(syncer.http.clone(), &syncer.store, pending, OAUTH_WAIT) => s?,
            _ = tokio::signal::ctrl_c() => bail!("sign-in cancelled: nothing was stored"),
        };
        println!(
            "Signed in as {} ({}) in the browser: P2PDS may write only its own records. The session is kept in {}.",
            s.account.handle.as_deref().unwrap_or(who),
            s.account.did,
            place().await
        );
        return Ok(0);
    };
    let s = Session::login(
        syncer.http.clone(),
        &syncer.resolver,
        &syncer.store,
        who,
        &password,
    )
    .await?;
    println!(
        "Signed in as {} ({}). The password and session are kept in {}.",
        s.account.handle.as_deref().unwrap_or(who),
        s.account.did,
        place().await
    );
    Ok(0)
}

/// Opens `url` in the desktop's browser, when there is a desktop (best effort: the address is
/// printed either way).
pub(crate) fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        "xdg-open"
    } else {
        return;
    };
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

pub async fn logout(syncer: &Syncer) -> anyhow::Result<i32> {
    let place = p2pds::session::secret_store_words(&syncer.store).await;
    match Session::logout(syncer.http.clone(), &syncer.store).await? {
        Some(a) => println!(
            "Signed out {} and removed its secrets from {place}. Your copies are kept.",
            a.handle.as_deref().unwrap_or(&a.did)
        ),
        None => println!("Not signed in."),
    }
    Ok(0)
}

fn warn_report(report: &RefreshReport) {
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for (uri, did) in &report.started {
        eprintln!("circle {uri}: now backing up {did}");
    }
    for (uri, dids) in &report.ended {
        eprintln!(
            "circle {uri}: no longer asks you to hold {}; the copies are kept (`p2pds backup remove DID` deletes one)",
            dids.join(", ")
        );
    }
}

pub async fn invitations(
    syncer: &Syncer,
    backlink_index: Option<p2pds::group::backlinks::BacklinkIndex>,
    json: bool,
    from: &[String],
) -> anyhow::Result<i32> {
    let mut c = circles(syncer);
    c.backlinks = backlink_index;
    for who in from {
        c.add_contact(who)
            .await
            .with_context(|| format!("looking up {who}"))?;
    }
    let report = c.refresh(true).await?;
    warn_report(&report);
    let list = c.invitations().await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "invitations": list }))?
        );
    } else if list.is_empty() {
        println!("No invitations. (Looked in the repos of your contacts, the accounts you back up and follow, and your circles' members; add someone with --from HANDLE, or open an invitation link you were sent with --link LINK.)");
    } else {
        for inv in &list {
            print_invitation(inv);
        }
    }
    Ok(0)
}

/// `p2pds invitations --link LINK`: the invitation a link names, read with a proof and checked
/// (for this account, not revoked, the version the link names), then remembered so that
/// `p2pds circle accept` works. A refusal is printed in words (with `--json`, also its kind
/// as `{"error": {"kind", "message"}}` on stdout) and exits 1; so is a circle that could not be
/// read, in the words the app's window uses (kind `network`, `storage`, `link-damaged`, …).
pub async fn open_link(syncer: &Syncer, link: &str, json: bool) -> anyhow::Result<i32> {
    let c = circles(syncer);
    let opened = match c.open_link(link).await {
        Ok(o) => o,
        Err(e) => {
            let (kind, message) = match (e, InvitationLink::parse(link)) {
                (GroupError::Link(e), _) => (e.kind().to_string(), e.to_string()),
                (e, Ok(parsed)) => {
                    let said = failure_in_words(&c, &parsed, e).await;
                    let kind = serde_json::to_value(said.code())?;
                    (
                        kind.as_str().unwrap_or("other").to_string(),
                        said.to_string(),
                    )
                }
                (e, Err(_)) => ("other".to_string(), e.to_string()),
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "error": { "kind": kind, "message": message }
                    }))?
                );
            }
            eprintln!("error: {message}");
            return Ok(1);
        }
    };
    if json {
        let list: Vec<&Invitation> = opened.invitation.iter().collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "invitations": list,
                "circle": opened.circle,
            }))?
        );
    } else if let Some(inv) = &opened.invitation {
        print_invitation(inv);
    } else if let Some(view) = &opened.circle {
        println!(
            "You already answered this version of \u{201c}{}\u{201d}: see `p2pds circle list`.",
            view.name
        );
        print_circle(view);
    } else {
        println!("You already answered this invitation: see `p2pds circle list`.");
    }
    Ok(0)
}

fn print_invitation(inv: &Invitation) {
    println!("{}", inv.text);
    println!("  p2pds circle accept {}", inv.uri);
    println!("  p2pds circle decline {}", inv.uri);
}

fn ack_word(a: AckState) -> &'static str {
    match a {
        AckState::Accepted => "accepted",
        AckState::Declined => "declined",
        AckState::Stale => "accepted an older version",
        AckState::Missing => "has not answered",
    }
}

fn state_word(c: &CircleView) -> String {
    match c.state {
        CircleState::Active => "active".to_string(),
        CircleState::Pending if c.in_force.is_some() => {
            "changed: waiting for answers (the previous version stays in force)".to_string()
        }
        CircleState::Pending => "waiting for answers".to_string(),
        CircleState::Scheduled => "accepted, starts later".to_string(),
        CircleState::Rejected => "declined by a member".to_string(),
        CircleState::Expired => "expired".to_string(),
        CircleState::Revoked => "revoked by its author".to_string(),
        CircleState::Deleted => "deleted by its author".to_string(),
        CircleState::Left => "you left".to_string(),
    }
}

fn print_circle(c: &CircleView) {
    let author = c.author_handle.as_deref().unwrap_or(&c.author);
    println!("\u{201c}{}\u{201d} by {author}: {}", c.name, state_word(c));
    println!("  {}", c.uri);
    for m in &c.members {
        println!(
            "  - {}: {}",
            m.handle.as_deref().unwrap_or(&m.did),
            ack_word(m.ack)
        );
    }
    if !c.holding.is_empty() {
        println!("  you back up: {}", c.holding.join(", "));
    }
}

pub async fn run(syncer: &Syncer, command: &CircleCommand) -> anyhow::Result<i32> {
    let c = circles(syncer);
    match command {
        CircleCommand::Create {
            name,
            members,
            min_copies,
            description,
            rules,
            json,
        } => {
            let s = session(syncer).await?;
            let view = c
                .create(
                    &s,
                    name,
                    description.clone(),
                    members,
                    *min_copies,
                    rules.overrides(),
                )
                .await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                println!(
                    "Created the circle \u{201c}{}\u{201d}: {}\nThe members see it with `p2pds invitations` and answer with `p2pds circle accept {}`.\nA member whose node does not know you yet opens the link `p2pds circle link {}` prints.",
                    view.name, view.uri, view.uri, view.uri
                );
            }
            Ok(0)
        }
        CircleCommand::List { json } => {
            let report = c.refresh(false).await?;
            warn_report(&report);
            let list = c.list().await?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "circles": list }))?
                );
            } else if list.is_empty() {
                println!("You are in no circle yet. See `p2pds invitations`, or create one with `p2pds circle create`.");
            } else {
                for v in &list {
                    print_circle(v);
                }
            }
            Ok(0)
        }
        CircleCommand::Accept { uri, json } => {
            let s = session(syncer).await?;
            let view = c.accept(&s, uri).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                let waiting: Vec<&str> = view
                    .members
                    .iter()
                    .filter(|m| m.ack != AckState::Accepted)
                    .map(|m| m.handle.as_deref().unwrap_or(&m.did))
                    .collect();
                if waiting.is_empty() {
                    println!(
                        "You accepted \u{201c}{}\u{201d}; the circle is active. Backing up: {}. `p2pds sync` copies them.",
                        view.name,
                        view.holding.join(", ")
                    );
                } else {
                    println!(
                        "You accepted \u{201c}{}\u{201d}. Still waiting for: {}. Backups start when everyone has accepted.",
                        view.name,
                        waiting.join(", ")
                    );
                }
            }
            Ok(0)
        }
        CircleCommand::Decline { uri, reason } => {
            let s = session(syncer).await?;
            let name = c.decline(&s, uri, reason.clone()).await?;
            println!("You declined \u{201c}{name}\u{201d}; you will not be asked again for this version.");
            Ok(0)
        }
        CircleCommand::Leave { uri, copies } => {
            let choice = copies_choice(copies)?;
            let s = session(syncer).await?;
            let outcome = c.leave(&s, uri, choice).await?;
            println!("You left the circle {uri}; your acks are withdrawn.");
            print_copies(&outcome);
            Ok(0)
        }
        CircleCommand::Revoke { uri, copies } => {
            let choice = copies_choice(copies)?;
            let s = session(syncer).await?;
            let outcome = c.revoke(&s, uri, choice).await?;
            println!("You revoked the circle {uri}; every member's duties end.");
            print_copies(&outcome);
            Ok(0)
        }
        CircleCommand::Link { uri, json } => {
            let link = c.invitation_link(uri).await?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "link": link.to_string(),
                        "uri": link.uri,
                        "cid": link.cid,
                    }))?
                );
            } else {
                println!("{link}");
            }
            Ok(0)
        }
        CircleCommand::Edit {
            uri,
            name,
            min_copies,
            description,
            json,
        } => {
            let s = session(syncer).await?;
            let edit = CircleEdit {
                name: name.clone(),
                min_copies: *min_copies,
                description: description.clone(),
            };
            let view = c.edit(&s, uri, &edit).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                println!(
                    "Published a new version of \u{201c}{}\u{201d}; it needs every member's acceptance (the previous version stays in force meanwhile).",
                    view.name
                );
            }
            Ok(0)
        }
    }
}

fn copies_choice(args: &CopiesArgs) -> anyhow::Result<Copies> {
    if args.keep_copies {
        return Ok(Copies::Keep);
    }
    if args.delete_copies {
        return Ok(Copies::Delete);
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        eprint!(
            "Keep the copies of the accounts you backed up for this circle? [K]eep / [d]elete: "
        );
        std::io::stderr().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(match line.trim().to_ascii_lowercase().as_str() {
            "d" | "delete" => Copies::Delete,
            _ => Copies::Keep,
        });
    }
    eprintln!("Keeping the copies (no --keep-copies or --delete-copies, and no terminal to ask).");
    Ok(Copies::Keep)
}

fn print_copies(outcome: &CopiesOutcome) {
    let deleted: Vec<&str> = outcome
        .iter()
        .filter(|(_, d)| *d)
        .map(|(did, _)| did.as_str())
        .collect();
    let kept: Vec<&str> = outcome
        .iter()
        .filter(|(_, d)| !*d)
        .map(|(did, _)| did.as_str())
        .collect();
    if !deleted.is_empty() {
        println!("Deleted the copies of {}.", deleted.join(", "));
    }
    if !kept.is_empty() {
        println!(
            "Kept the copies of {} (`p2pds backup remove DID` deletes one).",
            kept.join(", ")
        );
    }
}
