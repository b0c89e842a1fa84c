//! `p2pds compliance` and `p2pds endpoint`, and how a verification round is printed: the
//! terminal edge of `p2pds::verify`. `p2pds verify` itself runs the node controller
//! (`run_cmd`); `P2PDS_CHALLENGE_TTL` (a duration, e.g. `10m`) sets how long a challenged node
//! has to answer (by default the circle's verification interval).

use anyhow::{bail, Context};
use p2pds::policy::Timestamp;
use p2pds::sync::Syncer;
use p2pds::verify::{self, RoundReport};

use crate::circle_cmd::{circles, session};

pub(crate) async fn peer_did(
    syncer: &Syncer,
    peer: Option<&str>,
) -> anyhow::Result<Option<String>> {
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

pub(crate) fn print_round(report: &RoundReport, json: bool) -> anyhow::Result<()> {
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
        let published = match verify::published_results(&syncer.store).await {
            Ok(results) => c.publish(&s, &results).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = published {
            eprintln!("warning: could not publish the heartbeat now: {e}");
        }
    }
    Ok(0)
}
