//! A circle's dashboard: [`Engine::health`], from its members' public records (the policy
//! engine's report) and this node's own history of the circle's accounts.

use std::collections::{BTreeMap, BTreeSet};

use crate::app::conditions;
use crate::app::dto::*;
use crate::group::plan;
use crate::policy::observations::Outcome;
use crate::policy::report::{NodeReport, Status};
use crate::policy::{Observations, Policy, Report, Timestamp};
use crate::store;
use crate::verify;

use super::{humanize, now, short_did, AppError, Engine};

/// The checks a member's card shows: this many days back.
const CHECKS_SHOWN_DAYS: u64 = 7;

impl Engine {
    /// A circle's dashboard, computed now from its members' public records.
    pub async fn health(&self, uri: &str) -> Result<Health, AppError> {
        let now = now();
        let (report, obs, warnings) =
            verify::report::compliance_inputs(self.circles(), uri, now).await?;
        // The rules of the version the report was computed for (a failure here only leaves the
        // rules and the "due by" times out).
        let policy = self
            .circles()
            .report_basis(uri)
            .await
            .ok()
            .flatten()
            .map(|(p, _)| p)
            .filter(|p| p.reference.cid == report.policy.cid);
        let names = self.names().await;
        let offset = *chrono::Local::now().offset();
        let health = dashboard(
            &report,
            &obs,
            &warnings,
            policy.as_ref(),
            &names,
            now,
            offset,
        );
        let subjects: BTreeSet<String> = report.subjects.iter().map(|s| s.did.clone()).collect();
        let (storage, timeline) = self.local_history(&subjects, &names).await?;
        Ok(Health {
            uri: uri.to_string(),
            storage,
            timeline,
            ..health
        })
    }

    /// Storage held per account and the recent events about them, from the store.
    async fn local_history(
        &self,
        subjects: &BTreeSet<String>,
        names: &BTreeMap<String, String>,
    ) -> Result<(Vec<StorageItem>, Vec<TimelineEvent>), AppError> {
        let subjects = subjects.clone();
        let names = names.clone();
        Ok(self
            .store()
            .read(move |c| {
                let name_of = |did: &str| names.get(did).cloned().unwrap_or_else(|| short_did(did));
                let mut storage = Vec::new();
                let mut timeline = Vec::new();
                for r in store::list_repos(c)? {
                    if !subjects.contains(&r.did) {
                        continue;
                    }
                    let (_, image_bytes, _, _) = store::blob_counts(c, r.id)?;
                    storage.push(StorageItem {
                        name: name_of(&r.did),
                        bytes: u64::try_from(r.bytes.max(0) + image_bytes.max(0)).unwrap_or(0),
                    });
                    let mut stmt = c.prepare(
                        "SELECT synced_at, creates, updates, deletes FROM commits
                         WHERE repo_id = ?1 ORDER BY synced_at DESC LIMIT 10",
                    )?;
                    let rows = stmt.query_map([r.id], |x| {
                        Ok((
                            x.get::<_, String>(0)?,
                            x.get::<_, i64>(1)?,
                            x.get::<_, i64>(2)?,
                            x.get::<_, i64>(3)?,
                        ))
                    })?;
                    for row in rows {
                        let (at, cr, up, de) = row?;
                        timeline.push(TimelineEvent {
                            at,
                            kind: "sync".into(),
                            text: format!(
                                "Backed up {} ({})",
                                name_of(&r.did),
                                changes_words(cr, up, de)
                            ),
                        });
                    }
                }
                for v in verify::db::results_since(c, "")?.into_iter().rev().take(40) {
                    if !subjects.contains(&v.subject) {
                        continue;
                    }
                    let outcome = match v.outcome {
                        Outcome::Pass => "passed",
                        Outcome::Fail => "failed",
                        Outcome::Unreachable => "got no answer",
                    };
                    timeline.push(TimelineEvent {
                        at: v.at.clone(),
                        kind: "check".into(),
                        text: format!(
                            "Checked {}'s copy of {}'s account: {outcome}",
                            name_of(&v.target),
                            name_of(&v.subject)
                        ),
                    });
                }
                timeline.sort_by(|a, b| b.at.cmp(&a.at));
                timeline.truncate(50);
                storage.sort_by_key(|s| std::cmp::Reverse(s.bytes));
                Ok((storage, timeline))
            })
            .await?)
    }
}

/// Everything on a circle's page that comes from its report (the page's storage and timeline
/// are this computer's own, added by [`Engine::health`]).
fn dashboard(
    report: &Report,
    obs: &Observations,
    warnings: &[String],
    policy: Option<&Policy>,
    names: &BTreeMap<String, String>,
    now: Timestamp,
    offset: chrono::FixedOffset,
) -> Health {
    let since = now.minus(crate::policy::Duration::from_secs(
        CHECKS_SHOWN_DAYS * 86_400,
    ));
    let members: Vec<MemberHealth> = report
        .nodes
        .iter()
        .map(|n| {
            let name = names
                .get(&n.member)
                .cloned()
                .unwrap_or_else(|| short_did(&n.member));
            member_health(n, obs, since, name, names)
        })
        .collect();
    let attention = conditions::attention(&conditions::Inputs {
        report,
        warnings,
        names,
        recovery: policy.map(|p| p.compliance.recovery_grace_period),
        now,
        offset,
    });
    let checked_at = report.checked_at();
    let verdict = conditions::verdict(report, conditions::worst(&attention), checked_at.is_some());
    Health {
        uri: report.policy.uri.clone().unwrap_or_default(),
        name: report.policy.name.clone(),
        state: report.state.as_str().to_string(),
        sentence: verdict.sentence,
        reasons: attention.iter().flat_map(|a| a.lines.clone()).collect(),
        label: verdict.label.to_string(),
        tone: verdict.tone.to_string(),
        attention,
        details: details(report, warnings, names),
        rules: policy
            .map(|p| plan::rules_sentences(&plan::CircleRules::of(p)))
            .unwrap_or_default(),
        checked_at: checked_at.map(|t| t.to_string()),
        members,
        storage: Vec::new(),
        timeline: Vec::new(),
        evaluated_at: report.evaluated_at.to_string(),
    }
}

/// The policy engine's own words for what is not fine (the page's "Details"): the circle's
/// conditions that are not true, then the accounts' and the members' that are false, then
/// what could not be read; DIDs replaced by names, nothing else changed.
fn details(report: &Report, warnings: &[String], names: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for c in report
        .conditions
        .iter()
        .filter(|c| c.status != Status::True)
    {
        out.push(humanize(&c.message, names));
    }
    for s in &report.subjects {
        for c in s.conditions.iter().filter(|c| c.status == Status::False) {
            out.push(humanize(&c.message, names));
        }
    }
    for n in &report.nodes {
        for c in n.conditions.iter().filter(|c| c.status == Status::False) {
            out.push(humanize(&c.message, names));
        }
    }
    out.extend(warnings.iter().map(|w| humanize(w, names)));
    out.dedup();
    out
}

/// A member's card: its state in words and the checks of its copies since `since`.
fn member_health(
    n: &NodeReport,
    obs: &Observations,
    since: Timestamp,
    name: String,
    names: &BTreeMap<String, String>,
) -> MemberHealth {
    let mut checks: Vec<CheckPoint> = obs
        .verifications
        .iter()
        .filter(|v| v.node == n.node && v.at >= since)
        .map(|v| CheckPoint {
            at: v.at.to_string(),
            outcome: verify::db::outcome_str(v.outcome).to_string(),
        })
        .collect();
    checks.sort_by(|a, b| a.at.cmp(&b.at));
    checks.dedup();
    let passed = checks.iter().filter(|c| c.outcome == "pass").count();
    let words = match n.state.as_str() {
        "ok" if passed == 0 => "keeps its copies; not checked yet".to_string(),
        "ok" => format!(
            "keeps its copies; {passed} of {} checks passed",
            checks.len()
        ),
        "recovering" => "catching up".to_string(),
        "degraded" => "some checks of its copies failed".to_string(),
        "at-risk" => "checks of its copies keep failing".to_string(),
        "failed" => "has not been heard from for too long".to_string(),
        "abandoned" => "has been silent for weeks".to_string(),
        other => other.replace('-', " "),
    };
    MemberHealth {
        did: n.member.clone(),
        name,
        state: n.state.as_str().to_string(),
        words,
        last_seen: n.last_seen.map(|t| t.to_string()),
        checks,
        needs: n
            .copies
            .iter()
            .filter_map(|c| {
                let needs = c.needs?;
                let whose = names
                    .get(&c.subject)
                    .cloned()
                    .unwrap_or_else(|| short_did(&c.subject));
                Some(needs_sentence(&whose, needs))
            })
            .collect(),
    }
}

/// A copy found lacking, as a sync tool says what is out of sync.
fn needs_sentence(whose: &str, n: crate::policy::observations::Needs) -> String {
    let size = crate::app::words::size(n.bytes);
    if n.records == 0 && n.bytes == 0 {
        return format!("Its copy of {whose}'s account is incomplete: part of it is missing");
    }
    match n.records {
        0 => format!("Its copy of {whose}'s account is incomplete: about {size} missing"),
        1 => format!("Its copy of {whose}'s account is incomplete: 1 post or other item missing (about {size})"),
        r => format!("Its copy of {whose}'s account is incomplete: {r} posts or other items missing (about {size})"),
    }
}

/// What a backup changed, in words ("3 new, 1 deleted"; "no change").
fn changes_words(creates: i64, updates: i64, deletes: i64) -> String {
    let mut parts = Vec::new();
    if creates > 0 {
        parts.push(format!("{creates} new"));
    }
    if updates > 0 {
        parts.push(format!("{updates} changed"));
    }
    if deletes > 0 {
        parts.push(format!("{deletes} deleted"));
    }
    if parts.is_empty() {
        "no change".to_string()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::observations::Needs;

    /// A new two-person circle, both accepted five minutes ago, no copy made yet: the page a
    /// person sees first. The engine's raw conditions (the old list) stay in `details`.
    #[test]
    fn a_new_two_person_circle_reads_in_a_few_sentences() {
        use crate::app::conditions::tests::{at, both_accepted, circle, names, observe, BOB};
        let p = circle(&[BOB], None);
        let obs = observe(&p, &both_accepted());
        let report = crate::policy::evaluate(&p, &obs, at(5));
        let utc = chrono::FixedOffset::east_opt(0).unwrap();
        let h = dashboard(&report, &obs, &[], Some(&p), &names(), at(5), utc);
        println!("before ({} lines):", h.details.len());
        for d in &h.details {
            println!("  {d}");
        }
        println!("after: {} / {}", h.label, h.sentence);
        for a in &h.attention {
            for l in &a.lines {
                println!("  {}: {l}", a.name);
            }
        }
        assert_eq!(
            h.reasons,
            [
                "You are still making your copy of bob.test's account (due by 3:29 pm today)",
                "bob.test is still making their copy of your account (due by 3:29 pm today)",
            ]
        );
        assert_eq!(
            h.attention
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>(),
            ["You", "bob.test"]
        );
        assert_eq!(
            (h.label.as_str(), h.tone.as_str()),
            ("Getting ready", "busy")
        );
        assert_eq!(
            h.sentence,
            "Copies are being made; checks start once they are"
        );
        assert!(h.details.len() > h.reasons.len(), "{:?}", h.details);
        assert!(
            h.details.iter().any(|d| d.contains("you has")),
            "the raw words, kept"
        );
        assert_eq!(h.checked_at, None);
        assert_eq!(h.rules.len(), 4);
        for m in &h.members {
            assert!(!m.words.contains("checks passed"), "{}", m.words);
        }
    }

    #[rstest::rstest]
    #[case(
        5,
        12_000,
        "Its copy of Alice's account is incomplete: 5 posts or other items missing (about 12 kB)"
    )]
    #[case(
        1,
        300,
        "Its copy of Alice's account is incomplete: 1 post or other item missing (about 300 bytes)"
    )]
    #[case(
        0,
        2_000_000,
        "Its copy of Alice's account is incomplete: about 2 MB missing"
    )]
    #[case(
        0,
        0,
        "Its copy of Alice's account is incomplete: part of it is missing"
    )]
    fn a_lacking_copy_is_said_like_a_sync_tool_would(
        #[case] records: u64,
        #[case] bytes: u64,
        #[case] want: &str,
    ) {
        assert_eq!(needs_sentence("Alice", Needs { records, bytes }), want);
    }
}
