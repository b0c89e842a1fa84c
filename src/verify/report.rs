//! A circle's compliance report from public records only (`p2pds compliance`): the version in
//! force, the verified acks, every member's status record and heartbeat (read with proofs from
//! their own repos), and the accounts' heads (from their PDSes). Nothing local enters it, so
//! every member, and any outside auditor, computes the same report for the same instant.

use crate::group::{plan, Circles};
use crate::policy::compliance;
use crate::policy::observations::{Head, Observations};
use crate::policy::records::{nsid, PeerRecord, StatusRecord};
use crate::policy::report::Report;
use crate::policy::time::Timestamp;
use crate::repo::tid;
use crate::sync::SyncError;

use super::{db, VerifyError};

#[derive(serde::Deserialize)]
struct Latest {
    rev: String,
}

/// The report of circle `uri` at `at`, and what could not be read (in words; the report is
/// computed without it, as every other member would).
pub async fn compliance(
    circles: &Circles,
    uri: &str,
    at: Timestamp,
) -> Result<(Report, Vec<String>), VerifyError> {
    let (report, _, warnings) = compliance_inputs(circles, uri, at).await?;
    Ok((report, warnings))
}

/// [`compliance`], with the observations it was computed from (for charts of the checks).
pub async fn compliance_inputs(
    circles: &Circles,
    uri: &str,
    at: Timestamp,
) -> Result<(Report, Observations, Vec<String>), VerifyError> {
    let mut warnings = Vec::new();
    let (policy, acks) = circles
        .report_basis(uri)
        .await?
        .ok_or_else(|| VerifyError::UnknownCircle(uri.to_string()))?;
    let rkey = plan::split_uri(uri)
        .map(|(_, _, r)| r)
        .ok_or_else(|| VerifyError::UnknownCircle(uri.to_string()))?;
    let mut obs = Observations {
        acks,
        ..Default::default()
    };
    let seen_at = Timestamp::from_millis(chrono::Utc::now().timestamp_millis()).to_string();
    for m in &policy.members {
        let node = m.node.as_str();
        match circles
            .verified::<StatusRecord>(node, nsid::POLICY_STATUS, &rkey)
            .await
        {
            Ok(Some((_, status))) if status.policy.uri == uri => {
                if let Err(e) = obs.add_status(node, &status) {
                    warnings.push(format!("{node}'s status record is malformed: {e}"));
                }
                let (n, s) = (node.to_string(), status.clone());
                let at = seen_at.clone();
                let remembered = circles
                    .syncer
                    .store
                    .write(move |c| db::remember_status(c, &n, &s, &at))
                    .await;
                if let Ok(Err(e)) | Err(e) = remembered {
                    warnings.push(format!("could not remember {node}'s holdings: {e}"));
                }
            }
            Ok(_) => {}
            Err(e) => warnings.push(format!("could not read {node}'s status: {e}")),
        }
        match circles
            .verified::<PeerRecord>(node, nsid::PEER, "self")
            .await
        {
            Ok(Some((_, peer))) => {
                if let Err(e) = obs.add_peer(node, &peer) {
                    warnings.push(format!("{node}'s peer record is malformed: {e}"));
                }
            }
            Ok(None) => {}
            Err(e) => warnings.push(format!("could not read {node}'s heartbeat: {e}")),
        }
    }
    for subject in &policy.replication.subjects {
        match head(circles, subject).await {
            Ok(Some(h)) => obs.heads.push(h),
            Ok(None) => {}
            Err(e) => warnings.push(format!("could not read {subject}'s latest commit: {e}")),
        }
    }
    let report = compliance::evaluate(&policy, &obs, at);
    Ok((report, obs, warnings))
}

/// The account's latest commit on its PDS, timed by its revision (a TID: the commit's own
/// clock), so every reader sees the same head at the same time.
async fn head(circles: &Circles, subject: &str) -> Result<Option<Head>, SyncError> {
    let doc = circles.syncer.resolver.resolve_did(subject, false).await?;
    let Some(pds) = doc.pds else {
        return Ok(None);
    };
    let latest: Latest = circles
        .syncer
        .get_json(
            &pds,
            "com.atproto.sync.getLatestCommit",
            &[("did", subject)],
        )
        .await?;
    let Some(micros) = tid::timestamp_micros(&latest.rev) else {
        return Ok(None);
    };
    let millis = i64::try_from(micros / 1000).unwrap_or(i64::MAX);
    Ok(Some(Head {
        subject: subject.to_string(),
        rev: latest.rev,
        at: Timestamp::from_millis(millis),
    }))
}
