//! `p2pds verify`, `p2pds compliance` and `p2pds endpoint`: the terminal edge of
//! `p2pds::verify`. Rounds, schedules and reports live in the library; this file reads the
//! options, prints, and runs the loop of `verify` without `--once`.
//!
//! `P2PDS_CHALLENGE_TTL` (a duration, e.g. `10m`) sets how long a challenged node has to
//! answer; by default it is the circle's verification interval.

use std::time::Duration as StdDuration;

use anyhow::{bail, Context};
use p2pds::policy::{Duration, Timestamp};
use p2pds::sync::Syncer;
use p2pds::verify::{self, RoundOptions, RoundReport, Verifier};

use crate::circle_cmd::{circles, session};

/// Self-check every copy this often when running continuously.
const SELF_CHECK_EVERY: StdDuration = StdDuration::from_secs(6 * 3600);

fn verifier(syncer: &Syncer) -> anyhow::Result<Verifier> {
    let mut v = Verifier::new(circles(syncer));
    if let Ok(text) = std::env::var("P2PDS_CHALLENGE_TTL") {
        let d = Duration::parse(&text).with_context(|| format!("P2PDS_CHALLENGE_TTL={text}"))?;
        v.challenge_ttl = Some(d);
    }
    Ok(v)
}

async fn peer_did(syncer: &Syncer, peer: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(p) = peer else { return Ok(None) };
    if p.starts_with("did:") {
        return Ok(Some(p.to_string()));
    }
    let doc = syncer
        .resolver
        .resolve_account(p)
        .await
        .with_context(|| format!("looking up {p}"))?;
    Ok(Some(doc.did))
}

pub async fn verify(
    syncer: &Syncer,
    once: bool,
    peer: Option<&str>,
    json: bool,
    tick: u64,
) -> anyhow::Result<i32> {
    let v = verifier(syncer)?;
    let s = session(syncer).await?;
    let peer = peer_did(syncer, peer).await?;
    if once {
        let opts = RoundOptions {
            peer,
            only_due: false,
            self_check: true,
        };
        let report = v.round(&s, &opts).await?;
        print_round(&report, json)?;
        return Ok(0);
    }
    eprintln!("Verifying on schedule (checking every {tick}s what is due; Ctrl-C stops).");
    let mut last_self_check: Option<std::time::Instant> = None;
    let mut paused = false;
    loop {
        if v.online(&s).await {
            if paused {
                eprintln!("Back online: verifying again.");
                paused = false;
            }
            let self_check = last_self_check.is_none_or(|t| t.elapsed() >= SELF_CHECK_EVERY);
            let opts = RoundOptions {
                peer: peer.clone(),
                only_due: true,
                self_check,
            };
            match v.round(&s, &opts).await {
                Ok(report) => {
                    if self_check {
                        last_self_check = Some(std::time::Instant::now());
                    }
                    let quiet = report.results.is_empty()
                        && report.challenges_issued.is_empty()
                        && report.challenges_answered.is_empty()
                        && report
                            .self_checks
                            .iter()
                            .all(|c| c.outcome.as_str() == "ok")
                        && report.warnings.is_empty();
                    if !quiet {
                        print_round(&report, json)?;
                    }
                }
                Err(e) => eprintln!("error: {e}"),
            }
        } else if !paused {
            eprintln!("Your PDS cannot be reached: verification is paused until it can.");
            paused = true;
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(0),
            _ = tokio::time::sleep(StdDuration::from_secs(tick.max(1))) => {}
        }
    }
}

fn print_round(report: &RoundReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if report.results.is_empty() && report.challenges_issued.is_empty() {
        println!("Nothing to verify now.");
    }
    for r in &report.results {
        let outcome = verify::db::outcome_str(r.outcome);
        let via = match r.via {
            verify::db::Via::Endpoint => "",
            verify::db::Via::Challenge => " (record challenge)",
        };
        println!(
            "{}'s copy of {}: layer {} {outcome}{via}{}",
            r.target,
            r.subject,
            r.layer,
            r.reason
                .as_deref()
                .map(|x| format!(": {x}"))
                .unwrap_or_default()
        );
    }
    for c in &report.challenges_issued {
        println!(
            "Asked {} to prove it holds {} ({} blocks) by {}.",
            c.target, c.subject, c.blocks, c.expires_at
        );
    }
    for a in &report.challenges_answered {
        match (&a.response, &a.error) {
            (Some(_), _) => println!("Answered {}'s challenge about {}.", a.verifier, a.subject),
            (None, Some(e)) => println!("Could not answer {}'s challenge: {e}", a.verifier),
            (None, None) => {}
        }
    }
    for c in &report.self_checks {
        println!(
            "Self-check of {}: {} ({} blocks re-hashed, {} bad, {} missing{})",
            c.did,
            c.outcome.as_str(),
            c.blocks_checked,
            c.bad_blocks,
            c.missing_blocks,
            if c.repaired { ", repaired" } else { "" }
        );
    }
    Ok(())
}

pub async fn compliance(
    syncer: &Syncer,
    uri: Option<&str>,
    at: Option<&str>,
    json: bool,
) -> anyhow::Result<i32> {
    let c = circles(syncer);
    let at = match at {
        Some(t) => Timestamp::parse(t).with_context(|| format!("--at {t}"))?,
        None => Timestamp::from_millis(chrono::Utc::now().timestamp_millis()),
    };
    if let Err(e) = c.refresh(false).await {
        eprintln!("warning: could not bring the circles up to date: {e}");
    }
    let uris = match uri {
        Some(u) => vec![u.to_string()],
        None => c.known_circles().await?,
    };
    if uris.is_empty() {
        bail!("you are in no circle: see `p2pds invitations` or `p2pds circle create`");
    }
    let mut reports = Vec::new();
    for u in &uris {
        let (report, warnings) = verify::report::compliance(&c, u, at).await?;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        reports.push(report);
    }
    if json {
        let text = match (uri, reports.as_slice()) {
            (Some(_), [one]) => serde_json::to_string_pretty(one)?,
            _ => serde_json::to_string_pretty(&serde_json::json!({ "reports": reports }))?,
        };
        println!("{text}");
    } else {
        for r in &reports {
            println!("{}", crate::policy_cmd::human(r));
        }
    }
    Ok(0)
}

pub async fn endpoint(syncer: &Syncer, url: Option<&str>, clear: bool) -> anyhow::Result<i32> {
    let c = circles(syncer);
    if clear {
        c.set_endpoint(None).await?;
        println!("This node no longer advertises an endpoint; peers will check it through record challenges.");
    } else if let Some(url) = url {
        c.set_endpoint(Some(url)).await?;
        println!("Advertising {url} to your circles (in your next heartbeat).");
    } else {
        match c.endpoint().await? {
            Some(e) => println!("{e}"),
            None => println!("No endpoint advertised (set one with `p2pds endpoint URL`)."),
        }
        return Ok(0);
    }
    // The next heartbeat carries it; write it now when signed in.
    if let Ok(s) = session(syncer).await {
        if let Err(e) = c.publish(&s).await {
            eprintln!("warning: could not publish the heartbeat now: {e}");
        }
    }
    Ok(0)
}
