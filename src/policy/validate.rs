//! Reading and checking a policy: JSON in, a [`Policy`] or a list of problems out.
//!
//! Owns the rules that make a policy meaningful beyond its lexicon (enough members for
//! `minCopies`, durations that fit together, known layers…), and the wording of the problems:
//! each names the field by its JSON path and says what to write instead.
//!
//! Invariants: every problem found is reported, not just the first; unknown fields are warnings
//! (newer versions may add fields), never silently dropped; a [`Checked`] policy has no problem.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use super::detect::{self, Detection, Target};
use super::model::{
    ComplianceRule, Member, Placement, Policy, PolicyRef, PolicyType, Replication, SlaRule,
    Strategy, VerificationRule, DEFAULT_ABANDON_AFTER, DEFAULT_HEARTBEAT_INTERVAL, KNOWN_LAYERS,
};
use super::records::{
    nsid, ComplianceRecord, DetectRecord, MemberRecord, PolicyRecord, ReplicationRecord,
    RulesRecord, SlaRecord, StorageRecord, SyncRecord, VerificationRecord,
};
use super::time::{Duration, Percent, Timestamp};
use super::version::record_cid;
use super::{defaults, input};

/// Most members a policy may list (the lexicon's `maxLength`).
pub const MAX_MEMBERS: usize = 1000;
/// Most subjects a policy may list.
pub const MAX_SUBJECTS: usize = 10_000;
/// Largest `sampleSize`.
pub const MAX_SAMPLE_SIZE: i64 = 1000;
/// Shortest verification interval: more often than this is a burden on the peers.
pub const MIN_VERIFICATION_INTERVAL: Duration = Duration::from_secs(60);
/// With `placement: all`, more members than this means large per-node burdens: warn.
pub const ALL_PLACEMENT_WARN_MEMBERS: usize = 25;

/// One thing wrong (or worth a second look) in a policy, at a JSON path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Problem {
    /// JSON path of the field, e.g. `rules.replication.minCopies`; empty for the whole document.
    pub path: String,
    /// A sentence for a person: what is wrong and what to write instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Everything wrong with a policy document, and the warnings found on the way (an unknown
/// field next to a missing one is often the fix: a typo).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Problems {
    fn new(mut problems: Vec<Problem>, mut warnings: Vec<Problem>) -> Self {
        problems.sort();
        warnings.sort();
        Problems { problems, warnings }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{n} problem{}", if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n- {p}")?;
        }
        for w in &self.warnings {
            write!(f, "\nwarning: {w}")?;
        }
        Ok(())
    }
}

/// A policy that passed every check, with the warnings found on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub policy: Policy,
    pub warnings: Vec<Problem>,
    /// JSON paths of the optional fields the record left out, which take their documented
    /// defaults ([`defaults::OPTIONAL`]).
    pub defaulted: Vec<String>,
    /// The record's `version`: the author's own count of revisions, used in no decision (the
    /// version members ack is the CID).
    pub version_label: Option<u64>,
}

/// Reads a policy from JSON text: either a bare `org.p2pds.policy` record, or the
/// `{uri, cid?, value}` shape that `com.atproto.repo.getRecord` returns. Without a `cid`, the
/// record's CID is computed from its content. The text is refused whole when it is larger than
/// [`MAX_POLICY_BYTES`](super::input::MAX_POLICY_BYTES) or names a key twice in one object
/// ([`input::check_bytes`]).
pub fn check_json(text: &str) -> Result<Checked, Problems> {
    input::check_bytes(text.as_bytes())
}

/// [`check_json`] on parsed JSON.
pub fn check_value(value: &Value) -> Result<Checked, Problems> {
    let mut r = Reader::default();
    let (record_value, uri, given_cid) = match value.as_object() {
        Some(obj) if obj.contains_key("value") && obj.contains_key("uri") => {
            let uri = r.string(obj.get("uri"), "uri");
            let cid = match obj.get("cid") {
                None | Some(Value::Null) => None,
                some => r.string(some, "cid"),
            };
            r.unknown_keys(obj, "", &["uri", "cid", "value"]);
            let Some(v) = obj.get("value") else {
                return Err(Problems::new(r.problems, r.warnings));
            };
            (v.clone(), uri, cid)
        }
        _ => (value.clone(), None, None),
    };
    if let Some(p) = not_a_policy(&record_value) {
        r.problem(&p.path, p.message);
        return Err(Problems::new(r.problems, r.warnings));
    }
    let mut record_value = record_value;
    if let Some(obj) = record_value.as_object_mut() {
        if !obj.contains_key("$type") {
            r.warn("$type", format!("$type is missing: the record is read (and its CID computed) as if it were \"{}\"", nsid::POLICY));
            obj.insert("$type".into(), Value::String(nsid::POLICY.into()));
        }
    }
    let author = uri.as_deref().and_then(|u| {
        let rest = u.strip_prefix("at://")?;
        let authority = rest.split('/').next()?;
        authority.starts_with("did:").then(|| authority.to_string())
    });
    if let Some(u) = &uri {
        if author.is_none() {
            r.problem("uri", format!("uri {u:?} is not an AT-URI of a record in a DID's repo (at://did:…/org.p2pds.policy/…)"));
        } else if !u.contains(&format!("/{}/", nsid::POLICY)) {
            r.problem(
                "uri",
                format!("uri {u:?} is not in the {} collection", nsid::POLICY),
            );
        }
    }
    let computed = match record_cid(&record_value) {
        Ok(c) => Some(c),
        Err(e) => {
            r.problem(
                "",
                format!("the record cannot be encoded to compute its CID: {e}"),
            );
            None
        }
    };
    let cid = match (given_cid, computed) {
        (Some(given), Some(computed)) => {
            if given != computed {
                r.warn(
                    "cid",
                    format!("cid is {given} but the record's content hashes to {computed}: was the file edited after it was fetched? Acks must pin the CID the author's repo holds."),
                );
            }
            given
        }
        (Some(given), None) => given,
        (None, Some(computed)) => computed,
        (None, None) => String::new(),
    };
    // Defaults are filled in after the CID is computed: the CID is the record's as written.
    let filled = defaults::fill(&record_value);
    for p in filled.problems {
        r.problem(&p.path, p.message);
    }
    let record = r.policy_record(&filled.record);
    match record {
        Some(record) if r.problems.is_empty() => {
            let reference = PolicyRef { uri, cid };
            match check_record(record, reference, author) {
                Ok(mut checked) => {
                    let mut warnings = r.warnings;
                    warnings.append(&mut checked.warnings);
                    warnings.sort();
                    checked.warnings = warnings;
                    checked.defaulted = filled.defaulted;
                    checked.version_label = filled.version;
                    Ok(checked)
                }
                Err(mut problems) => {
                    let mut warnings = r.warnings;
                    warnings.append(&mut problems.warnings);
                    Err(Problems::new(problems.problems, warnings))
                }
            }
        }
        _ => Err(Problems::new(r.problems, r.warnings)),
    }
}

/// What a record is when it is plainly not a policy: one of another `$type` (an ack, a post…),
/// or one with no `$type` and none of a policy's fields. Said instead of listing what a policy
/// would need.
fn not_a_policy(record: &Value) -> Option<Problem> {
    let obj = record.as_object()?;
    match obj.get("$type") {
        Some(Value::String(t)) if t != nsid::POLICY => {
            let article = match t.chars().next() {
                Some(c) if "aeiouAEIOU".contains(c) => "an",
                _ => "a",
            };
            Some(Problem {
                path: "$type".into(),
                message: format!(
                    "this is {article} {t} record, not a policy ({}): give the policy record itself",
                    nsid::POLICY
                ),
            })
        }
        None if !["name", "type", "members", "rules"]
            .iter()
            .any(|k| obj.contains_key(*k)) =>
        {
            Some(Problem {
                path: String::new(),
                message: format!(
                    "this record has no $type and none of a policy's fields (name, type, members, rules): it is not a policy ({})",
                    nsid::POLICY
                ),
            })
        }
        _ => None,
    }
}

/// Checks a record already read into its wire type.
pub fn check_record(
    record: PolicyRecord,
    reference: PolicyRef,
    author: Option<String>,
) -> Result<Checked, Problems> {
    let mut r = Reader::default();
    let defaulted = serde_json::to_value(&record)
        .map(|v| defaults::defaulted(&v))
        .unwrap_or_default();
    let policy = semantic(&mut r, record, reference, author);
    match policy {
        Some(policy) if r.problems.is_empty() => {
            let mut warnings = r.warnings;
            warnings.sort();
            Ok(Checked {
                policy,
                warnings,
                defaulted,
                version_label: None,
            })
        }
        _ => Err(Problems::new(r.problems, r.warnings)),
    }
}

/// Whether `s` is a syntactically valid DID (`did:method:identifier`).
pub fn is_did(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("did:") else {
        return false;
    };
    let Some((method, id)) = rest.split_once(':') else {
        return false;
    };
    s.len() <= 2048
        && !method.is_empty()
        && method.chars().all(|c| c.is_ascii_lowercase())
        && !id.is_empty()
        && !id.ends_with(':')
        && !id.ends_with('%')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '%' | '-'))
}

/// Whether `s` is a syntactically valid NSID (a collection name like `app.bsky.feed.post`).
pub fn is_nsid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    let Some((name, authority)) = parts.split_last() else {
        return false;
    };
    s.len() <= 317
        && parts.len() >= 3
        && authority.iter().all(|seg| {
            !seg.is_empty()
                && seg.len() <= 63
                && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !seg.starts_with('-')
                && !seg.ends_with('-')
        })
        && authority
            .first()
            .is_some_and(|seg| seg.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
        && !name.is_empty()
        && name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Collects problems and warnings while reading.
#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "a whole number",
        Value::Number(_) => "a fractional number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Length of the longest common prefix, for "did you mean" hints.
fn similarity(a: &str, b: &str) -> usize {
    let a = a.to_ascii_lowercase();
    let b = b.to_ascii_lowercase();
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

impl Reader {
    fn problem(&mut self, path: &str, message: String) {
        self.problems.push(Problem {
            path: path.to_string(),
            message,
        });
    }

    fn warn(&mut self, path: &str, message: String) {
        self.warnings.push(Problem {
            path: path.to_string(),
            message,
        });
    }

    fn object<'v>(&mut self, v: Option<&'v Value>, path: &str) -> Option<&'v Map<String, Value>> {
        match v {
            None => {
                self.problem(path, format!("{path} is missing"));
                None
            }
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                let what = if path.is_empty() {
                    "the policy".to_string()
                } else {
                    path.to_string()
                };
                self.problem(
                    path,
                    format!("{what} must be an object, not {}", kind(other)),
                );
                None
            }
        }
    }

    fn string(&mut self, v: Option<&Value>, path: &str) -> Option<String> {
        match v {
            None => {
                self.problem(path, format!("{path} is missing"));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.problem(path, format!("{path} must be text, not {}", kind(other)));
                None
            }
        }
    }

    fn int(&mut self, v: Option<&Value>, path: &str) -> Option<i64> {
        match v {
            None => {
                self.problem(path, format!("{path} is missing"));
                None
            }
            Some(Value::Number(n)) if n.is_i64() => n.as_i64(),
            Some(other) => {
                self.problem(
                    path,
                    format!("{path} must be a whole number, not {}", kind(other)),
                );
                None
            }
        }
    }

    fn array<'v>(&mut self, v: Option<&'v Value>, path: &str) -> Option<&'v Vec<Value>> {
        match v {
            None => {
                self.problem(path, format!("{path} is missing"));
                None
            }
            Some(Value::Array(a)) => Some(a),
            Some(other) => {
                self.problem(path, format!("{path} must be a list, not {}", kind(other)));
                None
            }
        }
    }

    fn strings(&mut self, v: Option<&Value>, path: &str) -> Option<Vec<String>> {
        let items = self.array(v, path)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.string(Some(item), &format!("{path}[{i}]")) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// An optional field: absent or null is `None` without a problem.
    fn opt<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
        obj.get(key).filter(|v| !v.is_null())
    }

    fn unknown_keys(&mut self, obj: &Map<String, Value>, path: &str, known: &[&str]) {
        for key in obj.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            let best = known
                .iter()
                .filter(|k| !k.starts_with('$'))
                .max_by_key(|k| (similarity(key, k), std::cmp::Reverse(**k)))
                .filter(|k| similarity(key, k) >= 3);
            let hint = match best {
                Some(k) => format!(" (did you mean {}?)", join(path, k)),
                None => String::new(),
            };
            self.warn(
                &join(path, key),
                format!(
                    "{} is not a known field and is ignored{hint}",
                    join(path, key)
                ),
            );
        }
    }

    fn policy_record(&mut self, v: &Value) -> Option<PolicyRecord> {
        let obj = self.object(Some(v), "")?;
        self.unknown_keys(
            obj,
            "",
            &[
                "$type",
                "name",
                "description",
                "type",
                "members",
                "rules",
                "effectiveAt",
                "expiresAt",
                "status",
                "createdAt",
            ],
        );
        let lex_type = self.string(obj.get("$type"), "$type");
        let name = self.string(obj.get("name"), "name");
        let description =
            Self::opt(obj, "description").and_then(|v| self.string(Some(v), "description"));
        let policy_type = self.string(obj.get("type"), "type");
        let members = self.members(obj.get("members"));
        let rules = self.rules(obj.get("rules"));
        let effective_at = self.string(obj.get("effectiveAt"), "effectiveAt");
        let expires_at = Self::opt(obj, "expiresAt").map(|v| self.string(Some(v), "expiresAt"));
        let status = Self::opt(obj, "status").map(|v| self.string(Some(v), "status"));
        let created_at = self.string(obj.get("createdAt"), "createdAt");
        Some(PolicyRecord {
            lex_type: lex_type?,
            name: name?,
            description,
            policy_type: policy_type?,
            members: members?,
            rules: rules?,
            effective_at: effective_at?,
            expires_at: present(expires_at)?,
            status: present(status)?,
            created_at: created_at?,
        })
    }

    fn members(&mut self, v: Option<&Value>) -> Option<Vec<MemberRecord>> {
        let items = self.array(v, "members")?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = format!("members[{i}]");
            let Some(obj) = self.object(Some(item), &path) else {
                ok = false;
                continue;
            };
            self.unknown_keys(obj, &path, &["did", "node"]);
            let did = self.string(obj.get("did"), &join(&path, "did"));
            let node = Self::opt(obj, "node").map(|v| self.string(Some(v), &join(&path, "node")));
            match (did, present(node)) {
                (Some(did), Some(node)) => out.push(MemberRecord { did, node }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn rules(&mut self, v: Option<&Value>) -> Option<RulesRecord> {
        let obj = self.object(v, "rules")?;
        self.unknown_keys(
            obj,
            "rules",
            &[
                "replication",
                "verification",
                "sync",
                "compliance",
                "storage",
                "sla",
            ],
        );
        let replication = self.replication(obj.get("replication"));
        let verification = self.verification(obj.get("verification"));
        let sync = self.object(obj.get("sync"), "rules.sync").and_then(|o| {
            self.unknown_keys(o, "rules.sync", &["maxLag"]);
            self.string(o.get("maxLag"), "rules.sync.maxLag")
                .map(|max_lag| SyncRecord { max_lag })
        });
        let compliance = self.compliance(obj.get("compliance"));
        let storage = Self::opt(obj, "storage").map(|v| {
            let o = self.object(Some(v), "rules.storage")?;
            self.unknown_keys(o, "rules.storage", &["maxBytes"]);
            let max_bytes =
                Self::opt(o, "maxBytes").map(|v| self.int(Some(v), "rules.storage.maxBytes"));
            Some(StorageRecord {
                max_bytes: present(max_bytes)?,
            })
        });
        let sla = Self::opt(obj, "sla").map(|v| self.sla(v));
        Some(RulesRecord {
            replication: replication?,
            verification: verification?,
            sync: sync?,
            compliance: compliance?,
            storage: present(storage)?,
            sla: present(sla)?,
        })
    }

    fn replication(&mut self, v: Option<&Value>) -> Option<ReplicationRecord> {
        let p = "rules.replication";
        let obj = self.object(v, p)?;
        self.unknown_keys(
            obj,
            p,
            &[
                "strategy",
                "minCopies",
                "placement",
                "subjects",
                "collections",
            ],
        );
        let strategy = self.string(obj.get("strategy"), &join(p, "strategy"));
        let min_copies = self.int(obj.get("minCopies"), &join(p, "minCopies"));
        let placement =
            Self::opt(obj, "placement").map(|v| self.string(Some(v), &join(p, "placement")));
        let subjects =
            Self::opt(obj, "subjects").map(|v| self.strings(Some(v), &join(p, "subjects")));
        let collections =
            Self::opt(obj, "collections").map(|v| self.strings(Some(v), &join(p, "collections")));
        Some(ReplicationRecord {
            strategy: strategy?,
            min_copies: min_copies?,
            placement: present(placement)?,
            subjects: present(subjects)?,
            collections: present(collections)?,
        })
    }

    fn verification(&mut self, v: Option<&Value>) -> Option<VerificationRecord> {
        let p = "rules.verification";
        let obj = self.object(v, p)?;
        self.unknown_keys(obj, p, &["interval", "layers", "sampleSize", "detect"]);
        let interval = self.string(obj.get("interval"), &join(p, "interval"));
        let layers = self
            .array(obj.get("layers"), &join(p, "layers"))
            .and_then(|items| {
                let mut out = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.int(Some(item), &format!("{p}.layers[{i}]")) {
                        Some(n) => out.push(n),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            });
        let sample_size = self.int(obj.get("sampleSize"), &join(p, "sampleSize"));
        let detect = Self::opt(obj, "detect").map(|v| self.detect(v));
        Some(VerificationRecord {
            interval: interval?,
            layers: layers?,
            sample_size: sample_size?,
            detect: present(detect)?,
        })
    }

    fn detect(&mut self, v: &Value) -> Option<DetectRecord> {
        let p = "rules.verification.detect";
        let obj = self.object(Some(v), p)?;
        self.unknown_keys(obj, p, &["loss", "confidence", "within"]);
        let loss = self.string(obj.get("loss"), &join(p, "loss"));
        let confidence = self.string(obj.get("confidence"), &join(p, "confidence"));
        let within = self.string(obj.get("within"), &join(p, "within"));
        Some(DetectRecord {
            loss: loss?,
            confidence: confidence?,
            within: within?,
        })
    }

    fn compliance(&mut self, v: Option<&Value>) -> Option<ComplianceRecord> {
        let p = "rules.compliance";
        let obj = self.object(v, p)?;
        self.unknown_keys(
            obj,
            p,
            &[
                "offlineGracePeriod",
                "recoveryGracePeriod",
                "maxConsecutiveFailures",
                "heartbeatInterval",
                "abandonAfter",
            ],
        );
        let offline = self.string(
            obj.get("offlineGracePeriod"),
            &join(p, "offlineGracePeriod"),
        );
        let recovery = self.string(
            obj.get("recoveryGracePeriod"),
            &join(p, "recoveryGracePeriod"),
        );
        let failures = self.int(
            obj.get("maxConsecutiveFailures"),
            &join(p, "maxConsecutiveFailures"),
        );
        let heartbeat = Self::opt(obj, "heartbeatInterval")
            .map(|v| self.string(Some(v), &join(p, "heartbeatInterval")));
        let abandon =
            Self::opt(obj, "abandonAfter").map(|v| self.string(Some(v), &join(p, "abandonAfter")));
        Some(ComplianceRecord {
            offline_grace_period: offline?,
            recovery_grace_period: recovery?,
            max_consecutive_failures: failures?,
            heartbeat_interval: present(heartbeat)?,
            abandon_after: present(abandon)?,
        })
    }

    fn sla(&mut self, v: &Value) -> Option<SlaRecord> {
        let p = "rules.sla";
        let obj = self.object(Some(v), p)?;
        self.unknown_keys(
            obj,
            p,
            &[
                "window",
                "uptime",
                "verificationPassRate",
                "syncWithinMaxLag",
            ],
        );
        let window = self.string(obj.get("window"), &join(p, "window"));
        let uptime = Self::opt(obj, "uptime").map(|v| self.string(Some(v), &join(p, "uptime")));
        let pass = Self::opt(obj, "verificationPassRate")
            .map(|v| self.string(Some(v), &join(p, "verificationPassRate")));
        let lag = Self::opt(obj, "syncWithinMaxLag")
            .map(|v| self.string(Some(v), &join(p, "syncWithinMaxLag")));
        Some(SlaRecord {
            window: window?,
            uptime: present(uptime)?,
            verification_pass_rate: present(pass)?,
            sync_within_max_lag: present(lag)?,
        })
    }

    fn duration(&mut self, text: &str, path: &str) -> Option<Duration> {
        match Duration::parse(text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(path, format!("{path}: {e}"));
                None
            }
        }
    }

    /// A duration that must be longer than zero.
    fn positive_duration(&mut self, text: &str, path: &str) -> Option<Duration> {
        let d = self.duration(text, path)?;
        if d == Duration::ZERO {
            self.problem(path, format!("{path} must be longer than 0s"));
            return None;
        }
        Some(d)
    }

    fn timestamp(&mut self, text: &str, path: &str) -> Option<Timestamp> {
        match Timestamp::parse(text) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(path, format!("{path}: {e}"));
                None
            }
        }
    }

    fn percent(&mut self, text: &Option<String>, path: &str) -> Option<Option<Percent>> {
        match text {
            None => Some(None),
            Some(t) => match Percent::parse(t) {
                Ok(p) => Some(Some(p)),
                Err(e) => {
                    self.problem(path, format!("{path}: {e}"));
                    None
                }
            },
        }
    }

    /// A share strictly between 0% and 100%: `what` says of what, `example` what to write and
    /// `note` why.
    fn open_share(
        &mut self,
        text: &str,
        path: &str,
        (what, example, note): (&str, &str, &str),
    ) -> Option<Percent> {
        let p = self.percent(&Some(text.to_string()), path)??;
        if p == Percent::from_ppm(0) || p == Percent::ONE_HUNDRED {
            self.problem(
                path,
                format!(
                    "{path} is {p}: use {what} above 0% and below 100%, e.g. {example:?}{note}"
                ),
            );
            return None;
        }
        Some(p)
    }

    fn did_list(&mut self, items: &[String], path: &str, what: &str) -> Vec<String> {
        let mut seen = BTreeSet::new();
        for (i, did) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            if !is_did(did) {
                self.problem(&p, format!("{p} is {did:?}, which is not a DID (did:method:identifier, e.g. did:plc:…)"));
            } else if !seen.insert(did.clone()) {
                self.problem(&p, format!("{p}: {did} is listed twice in {what}"));
            }
        }
        seen.into_iter().collect()
    }
}

/// An optional field read with problems collected: absent is `Some(None)`, present and read is
/// `Some(Some(value))`, present but unreadable is `None` (a problem was recorded).
fn present<T>(read: Option<Option<T>>) -> Option<Option<T>> {
    match read {
        None => Some(None),
        Some(None) => None,
        Some(Some(v)) => Some(Some(v)),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `rules.verification.detect` read and derived: the loss and the confidence above 0% and below
/// 100%, `within` at least one interval, layer 1 asked for (it is what samples blocks), and the
/// blocks per round it derives no more than [`MAX_SAMPLE_SIZE`]. `None` after a problem.
fn detection(
    r: &mut Reader,
    d: &DetectRecord,
    interval: Option<Duration>,
    layers: &BTreeSet<u8>,
) -> Option<Detection> {
    let p = "rules.verification.detect";
    let loss = r.open_share(
        &d.loss,
        &format!("{p}.loss"),
        ("a share of a copy's blocks", "1%", ""),
    );
    let confidence = r.open_share(
        &d.confidence,
        &format!("{p}.confidence"),
        (
            "a confidence",
            "99%",
            ": sampling is never certain (layer 2 checks the whole copy)",
        ),
    );
    let within = r.positive_duration(&d.within, &format!("{p}.within"));
    if !layers.contains(&1) {
        r.problem(
            p,
            format!("{p} needs layer 1 (block sampling) in rules.verification.layers: add 1, or remove {p}"),
        );
    }
    let (loss, confidence, within, interval) = (loss?, confidence?, within?, interval?);
    if within < interval {
        r.problem(
            &format!("{p}.within"),
            format!("{p}.within is {within}, shorter than rules.verification.interval {interval}: a loss is found in a round, so make within at least {interval}"),
        );
        return None;
    }
    let target = Target {
        loss,
        confidence,
        within,
    };
    let cap = u32::try_from(MAX_SAMPLE_SIZE).unwrap_or(u32::MAX);
    let derived = detect::derive(target, interval, cap)?;
    if !derived.reachable() {
        // The shortest `within` that would do at this interval, when a policy can state it.
        let shortest = interval.secs().saturating_mul(derived.rounds_at(cap));
        let longer = if shortest <= super::time::MAX_DURATION_SECS {
            format!("make within at least {}, ", Duration::from_secs(shortest))
        } else {
            String::new()
        };
        r.problem(
            p,
            format!(
                "{p} asks to find a loss of {loss} within {within} with {confidence} confidence: that takes {} blocks in {} of {interval}, {} a round, more than the {} a round a policy may ask for: {longer}verify more often, or look for a larger loss or with less confidence",
                detect::thousands(derived.total),
                if derived.rounds == 1 { "1 round".to_string() } else { format!("{} rounds", detect::thousands(derived.rounds)) },
                detect::thousands(derived.needed_per_round),
                detect::thousands(u64::from(cap)),
            ),
        );
        return None;
    }
    Some(Detection { target, derived })
}

/// The checks that need more than one field, or more than the lexicon can say.
fn semantic(
    r: &mut Reader,
    record: PolicyRecord,
    reference: PolicyRef,
    author: Option<String>,
) -> Option<Policy> {
    if record.lex_type != nsid::POLICY {
        r.problem(
            "$type",
            format!(
                "$type is {:?}; a policy record's $type is \"{}\"",
                record.lex_type,
                nsid::POLICY
            ),
        );
    }
    let name = record.name.trim().to_string();
    if name.is_empty() {
        r.problem(
            "name",
            "name is empty: give the group a name people recognise".into(),
        );
    } else if record.name.chars().count() > 64 {
        r.problem(
            "name",
            format!(
                "name has {} characters: at most 64",
                record.name.chars().count()
            ),
        );
    }
    // `type`, `strategy`, `placement` and `status` are open sets (the lexicon's knownValues):
    // a value a newer writer uses is read as the documented fallback, with a warning.
    let policy_type = PolicyType::parse(&record.policy_type).or_else(|| {
        r.warn(
            "type",
            format!(
                "type is {:?}, which this version does not know ({}): read as custom, so no rule of a particular type applies",
                record.policy_type,
                PolicyType::KNOWN.join(", ")
            ),
        );
        Some(PolicyType::Custom)
    });

    // Members.
    let mut members: Vec<Member> = Vec::new();
    let mut dids = BTreeSet::new();
    let mut nodes: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    if record.members.len() < 2 {
        r.problem(
            "members",
            format!(
                "members has {}: a group needs at least 2 members to hold each other's accounts",
                plural(record.members.len(), "member", "members")
            ),
        );
    }
    if record.members.len() > MAX_MEMBERS {
        r.problem(
            "members",
            format!(
                "members has {} entries: at most {MAX_MEMBERS}",
                record.members.len()
            ),
        );
    }
    for (i, m) in record.members.iter().enumerate() {
        let p = format!("members[{i}].did");
        if !is_did(&m.did) {
            r.problem(
                &p,
                format!(
                    "{p} is {:?}, which is not a DID (did:method:identifier, e.g. did:plc:…)",
                    m.did
                ),
            );
            continue;
        }
        if !dids.insert(m.did.clone()) {
            r.problem(&p, format!("{p}: {} is listed twice in members", m.did));
            continue;
        }
        let node = m.node.clone().unwrap_or_else(|| m.did.clone());
        if m.node.is_some() && !is_did(&node) {
            let p = format!("members[{i}].node");
            r.problem(&p, format!("{p} is {node:?}, which is not a DID"));
            continue;
        }
        if let Some(other) = nodes.get(&node) {
            let p = format!("members[{i}]");
            r.problem(
                &p,
                format!("{p} ({}) uses node {node}, which already acts for {other}: each member needs its own node, or two members would count as two copies on one machine", m.did),
            );
            continue;
        }
        nodes.insert(node.clone(), m.did.clone());
        members.push(Member {
            did: m.did.clone(),
            node,
        });
    }
    members.sort_by(|a, b| a.did.cmp(&b.did));

    // Replication.
    let rep = &record.rules.replication;
    let known_strategy = Strategy::parse(&rep.strategy);
    if known_strategy.is_none() {
        r.warn(
            "rules.replication.strategy",
            format!("rules.replication.strategy is {:?}, which this version does not know (\"full\" or \"partial\"): read as full, so whole repos are copied, at least what any strategy asks; rules.replication.collections is not used", rep.strategy),
        );
    }
    let strategy = Some(known_strategy.unwrap_or(Strategy::Full));
    let mut collections: Vec<String> = Vec::new();
    match (&known_strategy, &rep.collections) {
        (Some(Strategy::Partial), None) => r.problem(
            "rules.replication.collections",
            "rules.replication.strategy is partial but rules.replication.collections is missing: list the collections to copy, e.g. [\"app.bsky.feed.post\"]".into(),
        ),
        (Some(Strategy::Partial), Some(list)) if list.is_empty() => r.problem(
            "rules.replication.collections",
            "rules.replication.collections is empty: a partial copy needs at least one collection".into(),
        ),
        (Some(Strategy::Full), Some(_)) => r.problem(
            "rules.replication.collections",
            "rules.replication.collections is only for strategy partial: remove it, or set strategy to \"partial\"".into(),
        ),
        _ => {}
    }
    if let Some(list) = &rep.collections {
        let mut seen = BTreeSet::new();
        for (i, c) in list.iter().enumerate() {
            let p = format!("rules.replication.collections[{i}]");
            if !is_nsid(c) {
                r.problem(&p, format!("{p} is {c:?}, which is not a collection name (an NSID such as app.bsky.feed.post)"));
            } else if !seen.insert(c.clone()) {
                r.problem(&p, format!("{p}: {c} is listed twice"));
            }
        }
        if known_strategy == Some(Strategy::Partial) {
            collections = seen.into_iter().collect();
        }
    }
    let placement = match &rep.placement {
        None => Some(Placement::All),
        Some(text) => Placement::parse(text).or_else(|| {
            r.warn(
                "rules.replication.placement",
                format!("rules.replication.placement is {text:?}, which this version does not know (\"all\" or \"ring\"): read as all, the default, so every member holds every account"),
            );
            Some(Placement::All)
        }),
    };
    let subjects = match &rep.subjects {
        Some(list) if list.is_empty() => {
            r.problem("rules.replication.subjects", "rules.replication.subjects is empty: remove it to replicate every member's account, or list accounts".into());
            Vec::new()
        }
        Some(list) => {
            if list.len() > MAX_SUBJECTS {
                r.problem(
                    "rules.replication.subjects",
                    format!(
                        "rules.replication.subjects has {} entries: at most {MAX_SUBJECTS}",
                        list.len()
                    ),
                );
            }
            r.did_list(
                list,
                "rules.replication.subjects",
                "rules.replication.subjects",
            )
        }
        None => members.iter().map(|m| m.did.clone()).collect(),
    };
    let min_copies = match u32::try_from(rep.min_copies) {
        Ok(n) if n >= 1 => Some(n),
        _ => {
            r.problem(
                "rules.replication.minCopies",
                format!("rules.replication.minCopies is {}: it must be at least 1 (how many members hold each account)", rep.min_copies),
            );
            None
        }
    };
    if let Some(min) = min_copies {
        let n = members.len();
        let member_subject = subjects.iter().any(|s| dids.contains(s));
        let cap = if member_subject {
            n.saturating_sub(1)
        } else {
            n
        };
        if n >= 2 && usize::try_from(min).unwrap_or(usize::MAX) > cap {
            let message = if member_subject {
                format!(
                    "rules.replication.minCopies is {min} but the circle has {}: at most {} can hold each account",
                    plural(n, "member", "members"),
                    plural(cap, "other member", "other members"),
                )
            } else {
                format!(
                    "rules.replication.minCopies is {min} but the circle has {}: at most {} can hold each account",
                    plural(n, "member", "members"),
                    plural(cap, "member", "members"),
                )
            };
            r.problem("rules.replication.minCopies", message);
        }
    }
    if placement == Some(Placement::All) && members.len() > ALL_PLACEMENT_WARN_MEMBERS {
        r.warn(
            "rules.replication.placement",
            format!(
                "placement \"all\" with {} members means every node holds {} accounts: consider \"ring\", where each account is held by minCopies members",
                members.len(),
                members.len().saturating_sub(1)
            ),
        );
    }

    // Verification.
    let ver = &record.rules.verification;
    let interval = r.positive_duration(&ver.interval, "rules.verification.interval");
    if let Some(i) = interval {
        if i < MIN_VERIFICATION_INTERVAL {
            r.problem(
                "rules.verification.interval",
                format!("rules.verification.interval is {i}: verify at most once a minute (\"1m\" or longer), peers have other work too"),
            );
        }
    }
    let mut layers = BTreeSet::new();
    if ver.layers.is_empty() {
        r.problem(
            "rules.verification.layers",
            "rules.verification.layers is empty: list at least one layer, e.g. [0, 1]".into(),
        );
    }
    for (i, l) in ver.layers.iter().enumerate() {
        let p = format!("rules.verification.layers[{i}]");
        match u8::try_from(*l).ok().filter(|l| KNOWN_LAYERS.contains(l)) {
            Some(l) => {
                if !layers.insert(l) {
                    r.problem(&p, format!("{p}: layer {l} is listed twice"));
                }
            }
            None => r.problem(&p, format!("{p} is {l}: use 0 (commit root), 1 (block sampling), 2 (whole copy) or 3 (MST path proof)")),
        }
    }
    let sample_size = if (1..=MAX_SAMPLE_SIZE).contains(&ver.sample_size) {
        u32::try_from(ver.sample_size).ok()
    } else {
        r.problem(
            "rules.verification.sampleSize",
            format!("rules.verification.sampleSize is {}: use 1 to {MAX_SAMPLE_SIZE} (blocks or records checked per verification)", ver.sample_size),
        );
        None
    };

    let detect = match &ver.detect {
        None => Some(None),
        Some(d) => detection(r, d, interval, &layers).map(Some),
    };
    let sample_size = match (sample_size, detect) {
        // The larger wins: sampleSize stays the least a round checks.
        (Some(stated), Some(Some(d))) => Some(stated.max(d.derived.per_round)),
        (stated, _) => stated,
    };

    // Sync and compliance.
    let max_lag = r.positive_duration(&record.rules.sync.max_lag, "rules.sync.maxLag");
    let comp = &record.rules.compliance;
    let offline = r.positive_duration(
        &comp.offline_grace_period,
        "rules.compliance.offlineGracePeriod",
    );
    let recovery = r.duration(
        &comp.recovery_grace_period,
        "rules.compliance.recoveryGracePeriod",
    );
    let max_failures = match u32::try_from(comp.max_consecutive_failures) {
        Ok(n) if (1..=1000).contains(&n) => Some(n),
        _ => {
            r.problem(
                "rules.compliance.maxConsecutiveFailures",
                format!("rules.compliance.maxConsecutiveFailures is {}: use 1 to 1000 (failed verifications in a row before a copy is at risk)", comp.max_consecutive_failures),
            );
            None
        }
    };
    let heartbeat = match &comp.heartbeat_interval {
        None => Some(DEFAULT_HEARTBEAT_INTERVAL),
        Some(t) => r.positive_duration(t, "rules.compliance.heartbeatInterval"),
    };
    let abandon = match &comp.abandon_after {
        None => Some(DEFAULT_ABANDON_AFTER),
        Some(t) => r.positive_duration(t, "rules.compliance.abandonAfter"),
    };
    if let (Some(h), Some(o)) = (heartbeat, offline) {
        if h > o {
            r.problem(
                "rules.compliance.heartbeatInterval",
                format!("rules.compliance.heartbeatInterval is {h}, longer than offlineGracePeriod {o}: every node would count as offline between two heartbeats; make offlineGracePeriod at least {h}"),
            );
        }
    }
    if let (Some(a), Some(o)) = (abandon, offline) {
        if a <= o {
            r.problem(
                "rules.compliance.abandonAfter",
                format!("rules.compliance.abandonAfter is {a}, not longer than offlineGracePeriod {o}: a member must be failed (offline) before it is abandoned"),
            );
        }
    }

    // Storage and SLA.
    let max_bytes = match record.rules.storage.as_ref().and_then(|s| s.max_bytes) {
        None => None,
        Some(b) if b > 0 => u64::try_from(b).ok(),
        Some(b) => {
            r.problem("rules.storage.maxBytes", format!("rules.storage.maxBytes is {b}: it must be more than 0 (or left out for no limit)"));
            None
        }
    };
    let sla = record.rules.sla.as_ref().and_then(|s| {
        let window = r.positive_duration(&s.window, "rules.sla.window");
        let uptime = r.percent(&s.uptime, "rules.sla.uptime");
        let pass = r.percent(&s.verification_pass_rate, "rules.sla.verificationPassRate");
        let lag = r.percent(&s.sync_within_max_lag, "rules.sla.syncWithinMaxLag");
        if let (Some(w), Some(h)) = (window, heartbeat) {
            if w < h {
                r.problem("rules.sla.window", format!("rules.sla.window is {w}, shorter than one heartbeat interval ({h}): uptime cannot be measured"));
            }
        }
        if s.uptime.is_none() && s.verification_pass_rate.is_none() && s.sync_within_max_lag.is_none() {
            r.warn("rules.sla", "rules.sla sets no target (uptime, verificationPassRate, syncWithinMaxLag): figures are reported but nothing is checked".into());
        }
        Some(SlaRule {
            window: window?,
            uptime: uptime?,
            verification_pass_rate: pass?,
            sync_within_max_lag: lag?,
        })
    });
    if policy_type == Some(PolicyType::Sla) && record.rules.sla.is_none() {
        r.problem(
            "rules.sla",
            "type is sla but rules.sla is missing: add rules.sla with a window and targets, e.g. {\"window\": \"30d\", \"uptime\": \"99.9%\"}".into(),
        );
    }

    // Lifetime.
    let effective_at = r.timestamp(&record.effective_at, "effectiveAt");
    let created_at = r.timestamp(&record.created_at, "createdAt");
    let expires_at = match &record.expires_at {
        None => Some(None),
        Some(t) => r.timestamp(t, "expiresAt").map(Some),
    };
    if let (Some(e), Some(Some(x))) = (effective_at, expires_at) {
        if x <= e {
            r.problem("expiresAt", format!("expiresAt ({x}) is not after effectiveAt ({e}): the policy would never be in force"));
        }
    }
    let revoked = match record.status.as_deref() {
        None | Some("active") => false,
        Some("revoked") => true,
        Some(other) => {
            r.warn(
                "status",
                format!("status is {other:?}, which this version does not know (\"active\" or \"revoked\"): read as active, the default"),
            );
            false
        }
    };

    let replication = Replication {
        strategy: strategy?,
        collections,
        min_copies: min_copies?,
        placement: placement?,
        subjects,
    };
    Some(Policy {
        reference,
        author,
        name,
        description: record.description.clone(),
        policy_type: policy_type?,
        members,
        replication,
        verification: VerificationRule {
            interval: interval?,
            layers: layers.into_iter().collect(),
            sample_size: sample_size?,
            detect: detect?,
        },
        max_lag: max_lag?,
        compliance: ComplianceRule {
            offline_grace_period: offline?,
            recovery_grace_period: recovery?,
            max_consecutive_failures: max_failures?,
            heartbeat_interval: heartbeat?,
            abandon_after: abandon?,
        },
        max_bytes,
        sla,
        effective_at: effective_at?,
        expires_at: expires_at?,
        revoked,
        created_at: created_at?,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "$type": "org.p2pds.policy",
            "name": "circle",
            "type": "mutual-aid",
            "members": [{"did": "did:plc:alice"}, {"did": "did:plc:bob"}, {"did": "did:plc:carol"}],
            "rules": {
                "replication": {"strategy": "full", "minCopies": 2},
                "verification": {"interval": "30m", "layers": [0, 1], "sampleSize": 50},
                "sync": {"maxLag": "5m"},
                "compliance": {"offlineGracePeriod": "24h", "recoveryGracePeriod": "30m", "maxConsecutiveFailures": 3}
            },
            "effectiveAt": "2026-01-01T00:00:00Z",
            "createdAt": "2026-01-01T00:00:00Z"
        })
    }

    fn with(path: &[&str], value: Value) -> Value {
        let mut v = base();
        let mut cur = &mut v;
        for (i, key) in path.iter().enumerate() {
            let Some(obj) = cur.as_object_mut() else {
                break;
            };
            if i + 1 == path.len() {
                if value.is_null() {
                    obj.remove(*key);
                } else {
                    obj.insert((*key).to_string(), value.clone());
                }
                break;
            }
            cur = obj.entry((*key).to_string()).or_insert(json!({}));
        }
        v
    }

    fn problems(v: &Value) -> Vec<String> {
        match check_value(v) {
            Ok(_) => Vec::new(),
            Err(p) => p.problems.into_iter().map(|p| p.message).collect(),
        }
    }

    #[test]
    fn base_policy_is_valid_with_defaults() {
        let checked = check_value(&base()).map_err(|p| p.to_string());
        let Ok(checked) = checked else {
            panic!("{checked:?}")
        };
        assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
        let p = checked.policy;
        assert_eq!(
            p.replication.subjects,
            vec!["did:plc:alice", "did:plc:bob", "did:plc:carol"]
        );
        assert_eq!(p.replication.placement, Placement::All);
        assert_eq!(p.compliance.heartbeat_interval, DEFAULT_HEARTBEAT_INTERVAL);
        assert_eq!(p.compliance.abandon_after, DEFAULT_ABANDON_AFTER);
        assert!(p.reference.cid.starts_with("bafyrei"));
        assert_eq!(p.reference.uri, None);
    }

    #[test]
    fn the_example_problem_reads_as_promised() {
        let v = with(&["rules", "replication", "minCopies"], json!(5));
        assert_eq!(
            problems(&v),
            vec!["rules.replication.minCopies is 5 but the circle has 3 members: at most 2 other members can hold each account"]
        );
    }

    #[rstest]
    #[case(&["rules", "replication", "minCopies"], json!(0), "rules.replication.minCopies is 0: it must be at least 1")]
    #[case(&["rules", "replication", "minCopies"], json!("2"), "rules.replication.minCopies must be a whole number, not text")]
    #[case(&["rules", "replication", "minCopies"], json!(2.5), "rules.replication.minCopies must be a whole number, not a fractional number")]
    #[case(&["rules", "replication", "strategy"], json!("partial"), "rules.replication.collections is missing")]
    #[case(&["rules", "replication", "collections"], json!(["app.bsky.feed.post"]), "collections is only for strategy partial")]
    #[case(&["rules", "replication", "subjects"], json!(["did:plc:x", "nope"]), "rules.replication.subjects[1] is \"nope\", which is not a DID")]
    #[case(&["rules", "replication", "subjects"], json!(["did:plc:x", "did:plc:x"]), "did:plc:x is listed twice")]
    #[case(&["rules", "verification", "interval"], json!("30"), "rules.verification.interval: \"30\" is not a duration")]
    #[case(&["rules", "verification", "interval"], json!("10s"), "verify at most once a minute")]
    #[case(&["rules", "verification", "layers"], json!([0, 4]), "is 4: use 0 (commit root)")]
    #[case(&["rules", "verification", "layers"], json!([]), "rules.verification.layers is empty")]
    #[case(&["rules", "verification", "layers"], json!([1, 1]), "layer 1 is listed twice")]
    #[case(&["rules", "verification", "sampleSize"], json!(0), "rules.verification.sampleSize is 0")]
    #[case(&["rules", "verification", "detect"], json!("1%"), "rules.verification.detect must be an object, not text")]
    #[case(&["rules", "verification", "detect"], json!({"loss": "1%", "confidence": "99%"}), "rules.verification.detect.within is missing")]
    #[case(&["rules", "verification", "detect"], json!({"loss": "1", "confidence": "99%", "within": "1d"}), "rules.verification.detect.loss: \"1\" is not a percentage")]
    #[case(&["rules", "verification", "detect"], json!({"loss": "0%", "confidence": "99%", "within": "1d"}), "rules.verification.detect.loss is 0%: use a share of a copy's blocks above 0% and below 100%, e.g. \"1%\"")]
    #[case(&["rules", "verification", "detect"], json!({"loss": "100%", "confidence": "99%", "within": "1d"}), "rules.verification.detect.loss is 100%: use a share of a copy's blocks above 0% and below 100%")]
    #[case(&["rules", "verification", "detect"], json!({"loss": "1%", "confidence": "100%", "within": "1d"}), "rules.verification.detect.confidence is 100%: use a confidence above 0% and below 100%, e.g. \"99%\": sampling is never certain (layer 2 checks the whole copy)")]
    #[case(&["rules", "verification", "detect"], json!({"loss": "1%", "confidence": "0%", "within": "1d"}), "rules.verification.detect.confidence is 0%: use a confidence above 0% and below 100%")]
    #[case(&["rules", "verification", "detect"], json!({"loss": "1%", "confidence": "99%", "within": "soon"}), "rules.verification.detect.within: \"soon\" is not a duration")]
    #[case(&["rules", "verification", "detect"], json!({"loss": "1%", "confidence": "99%", "within": "10m"}), "rules.verification.detect.within is 10m, shorter than rules.verification.interval 30m: a loss is found in a round, so make within at least 30m")]
    #[case(&["rules", "verification", "detect"], json!({"loss": "0.01%", "confidence": "99.9%", "within": "30m"}), "rules.verification.detect asks to find a loss of 0.01% within 30m with 99.9% confidence: that takes 69,075 blocks in 1 round of 30m, 69,075 a round, more than the 1,000 a round a policy may ask for: make within at least 1d11h, verify more often, or look for a larger loss or with less confidence")]
    #[case(&["rules", "sync", "maxLag"], json!("0s"), "rules.sync.maxLag must be longer than 0s")]
    #[case(&["rules", "sync"], Value::Null, "rules.sync is missing")]
    #[case(&["rules", "compliance", "maxConsecutiveFailures"], json!(0), "maxConsecutiveFailures is 0")]
    #[case(&["rules", "compliance", "heartbeatInterval"], json!("2d"), "heartbeatInterval is 2d, longer than offlineGracePeriod 1d")]
    #[case(&["rules", "compliance", "abandonAfter"], json!("1h"), "abandonAfter is 1h, not longer than offlineGracePeriod 1d")]
    #[case(&["rules", "storage"], json!({"maxBytes": -1}), "rules.storage.maxBytes is -1")]
    #[case(&["rules", "sla"], json!({"window": "30d", "uptime": "99.9"}), "rules.sla.uptime: \"99.9\" is not a percentage")]
    #[case(&["type"], json!("sla"), "type is sla but rules.sla is missing")]
    #[case(&["members"], json!([{"did": "did:plc:alice"}]), "members has 1 member: a group needs at least 2")]
    #[case(&["members"], json!([{"did": "did:plc:a"}, {"did": "did:plc:a"}]), "did:plc:a is listed twice in members")]
    #[case(&["members"], json!([{"did": "did:plc:a"}, {"did": "did:plc:b", "node": "did:plc:a"}, {"did": "did:plc:c"}]), "uses node did:plc:a, which already acts for did:plc:a")]
    #[case(&["members"], json!([{"did": "alice"}, {"did": "did:plc:b"}, {"did": "did:plc:c"}]), "members[0].did is \"alice\", which is not a DID")]
    #[case(&["effectiveAt"], json!("tomorrow"), "effectiveAt: \"tomorrow\" is not a date-time")]
    #[case(&["expiresAt"], json!("2025-01-01T00:00:00Z"), "expiresAt (2025-01-01T00:00:00.000Z) is not after effectiveAt")]
    #[case(&["name"], json!(""), "name is empty")]
    #[case(&["$type"], json!("org.p2pds.peer"), "this is an org.p2pds.peer record, not a policy (org.p2pds.policy)")]
    #[case(&["rules"], json!([]), "rules must be an object, not a list")]
    fn problems_name_the_field_and_the_fix(
        #[case] path: &[&str],
        #[case] value: Value,
        #[case] expected: &str,
    ) {
        let found = problems(&with(path, value));
        assert!(
            found.iter().any(|m| m.contains(expected)),
            "expected {expected:?} in {found:?}"
        );
    }

    fn detecting(target: Value, interval: &str, sample_size: i64) -> Result<Checked, Problems> {
        let mut v = with(&["rules", "verification", "detect"], target);
        v["rules"]["verification"]["interval"] = json!(interval);
        v["rules"]["verification"]["sampleSize"] = json!(sample_size);
        check_value(&v)
    }

    #[rstest]
    // K 459 over 1d / 6h = 4 rounds: 115 a round, more than the 50 stated: the larger wins.
    #[case("6h", 50, 4, 115, 115)]
    // Every 30 minutes: 48 rounds, ⌈459 / 48⌉ = 10, fewer than the 50 stated: 50 stays.
    #[case("30m", 50, 48, 10, 50)]
    // Every day: one round, 459 a round.
    #[case("1d", 1, 1, 459, 459)]
    fn detect_derives_the_sample_and_the_larger_wins(
        #[case] interval: &str,
        #[case] stated: i64,
        #[case] rounds: u64,
        #[case] derived: u32,
        #[case] in_force: u32,
    ) {
        let target = json!({"loss": "1%", "confidence": "99%", "within": "1d"});
        let checked = detecting(target.clone(), interval, stated).map_err(|p| p.to_string());
        let Ok(checked) = checked else {
            panic!("{checked:?}")
        };
        assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
        let ver = &checked.policy.verification;
        let d = ver.detect.unwrap_or_else(|| panic!("no detection"));
        assert_eq!(
            (d.derived.total, d.derived.rounds, d.derived.per_round),
            (459, rounds, derived)
        );
        assert_eq!(ver.sample_size, in_force);
        // The record keeps what the author wrote.
        assert_eq!(checked.policy.record.rules.verification.sample_size, stated);
        let record = serde_json::to_value(&checked.policy.record).unwrap_or_default();
        assert_eq!(record["rules"]["verification"]["detect"], target);
    }

    #[test]
    fn a_target_no_stated_time_reaches_suggests_no_time() {
        // 13,815,504 blocks at most 1,000 a day: 13,816 days, longer than any duration a policy
        // may state (3650d).
        let target = json!({"loss": "0.0001%", "confidence": "99.9999%", "within": "1d"});
        let found: Vec<String> = match detecting(target, "1d", 50) {
            Ok(_) => Vec::new(),
            Err(p) => p.problems.into_iter().map(|p| p.message).collect(),
        };
        assert_eq!(found, vec!["rules.verification.detect asks to find a loss of 0.0001% within 1d with 99.9999% confidence: that takes 13,815,504 blocks in 1 round of 1d, 13,815,504 a round, more than the 1,000 a round a policy may ask for: verify more often, or look for a larger loss or with less confidence"]);
    }

    #[test]
    fn without_detect_the_policy_reads_as_before() {
        let checked = check_value(&base()).map_err(|p| p.to_string());
        let Ok(checked) = checked else {
            panic!("{checked:?}")
        };
        assert_eq!(checked.policy.verification.sample_size, 50);
        assert_eq!(checked.policy.verification.detect, None);
        let record = serde_json::to_value(&checked.policy.record).unwrap_or_default();
        assert_eq!(record["rules"]["verification"].get("detect"), None);
    }

    #[test]
    fn detect_needs_block_sampling() {
        let mut v = with(
            &["rules", "verification", "detect"],
            json!({"loss": "1%", "confidence": "99%", "within": "1d"}),
        );
        v["rules"]["verification"]["layers"] = json!([0, 3]);
        assert_eq!(
            problems(&v),
            vec!["rules.verification.detect needs layer 1 (block sampling) in rules.verification.layers: add 1, or remove rules.verification.detect"]
        );
    }

    #[test]
    fn an_unknown_field_in_detect_is_a_warning_with_a_hint() {
        let target = json!({"loss": "1%", "confidence": "99%", "within": "1d", "confidense": "9%"});
        let checked = detecting(target, "6h", 50).map_err(|p| p.to_string());
        let warnings: Vec<String> = checked
            .map(|c| c.warnings.into_iter().map(|w| w.message).collect())
            .unwrap_or_default();
        assert_eq!(
            warnings,
            vec!["rules.verification.detect.confidense is not a known field and is ignored (did you mean rules.verification.detect.confidence?)"]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut v = with(&["rules", "replication", "minCopies"], json!(0));
        if let Some(rules) = v.get_mut("rules").and_then(Value::as_object_mut) {
            rules.insert("sync".into(), json!({"maxLag": "soon"}));
        }
        if let Some(obj) = v.as_object_mut() {
            obj.insert("name".into(), json!(" "));
        }
        assert_eq!(problems(&v).len(), 3, "{:?}", problems(&v));
    }

    #[rstest]
    #[case(&["type"], json!("co-op"), "type is \"co-op\", which this version does not know (mutual-aid, sla, custom): read as custom")]
    #[case(&["rules", "replication", "strategy"], json!("mirror"), "rules.replication.strategy is \"mirror\", which this version does not know (\"full\" or \"partial\"): read as full")]
    #[case(&["rules", "replication", "placement"], json!("random"), "rules.replication.placement is \"random\", which this version does not know (\"all\" or \"ring\"): read as all")]
    #[case(&["status"], json!("paused"), "status is \"paused\", which this version does not know (\"active\" or \"revoked\"): read as active")]
    fn an_unknown_value_of_an_open_set_is_read_as_its_fallback_with_a_warning(
        #[case] path: &[&str],
        #[case] value: Value,
        #[case] expected: &str,
    ) {
        let checked = check_value(&with(path, value.clone())).map_err(|p| p.to_string());
        let Ok(checked) = checked else {
            panic!("{checked:?}")
        };
        let warnings: Vec<String> = checked.warnings.iter().map(|w| w.message.clone()).collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings.iter().any(|w| w.starts_with(expected)),
            "{warnings:?}"
        );
        let p = checked.policy;
        let expected_type = if path == ["type"] {
            PolicyType::Custom
        } else {
            PolicyType::MutualAid
        };
        assert_eq!(p.policy_type, expected_type);
        assert_eq!(p.replication.strategy, Strategy::Full);
        assert_eq!(p.replication.placement, Placement::All);
        assert!(!p.revoked);
        // The record keeps what the author wrote.
        let record = serde_json::to_value(&p.record).unwrap_or_default();
        let written = path.iter().try_fold(&record, |v, k| v.get(*k));
        assert_eq!(written, Some(&value));
    }

    #[test]
    fn an_unknown_strategy_ignores_the_collections() {
        let mut v = with(&["rules", "replication", "strategy"], json!("mirror"));
        v["rules"]["replication"]["collections"] = json!(["app.bsky.feed.post"]);
        let checked = check_value(&v).map_err(|p| p.to_string());
        let Ok(checked) = checked else {
            panic!("{checked:?}")
        };
        assert_eq!(checked.policy.replication.strategy, Strategy::Full);
        assert!(checked.policy.replication.collections.is_empty());
    }

    #[rstest]
    #[case(json!({"$type": "org.p2pds.policy.ack", "policy": {"uri": "at://did:plc:a/org.p2pds.policy/3k", "cid": "bafy"}, "accepted": true, "createdAt": "2026-01-01T00:00:00Z"}), "this is an org.p2pds.policy.ack record, not a policy (org.p2pds.policy)")]
    #[case(json!({"$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2026-01-01T00:00:00Z"}), "this is an app.bsky.feed.post record, not a policy (org.p2pds.policy)")]
    #[case(json!({"uri": "at://did:plc:a/app.bsky.feed.post/3k", "value": {"$type": "app.bsky.feed.post", "text": "hi"}}), "this is an app.bsky.feed.post record, not a policy")]
    #[case(json!({"text": "hi", "createdAt": "2026-01-01T00:00:00Z"}), "this record has no $type and none of a policy's fields (name, type, members, rules): it is not a policy (org.p2pds.policy)")]
    fn a_record_of_another_kind_is_named_not_picked_apart(
        #[case] v: Value,
        #[case] expected: &str,
    ) {
        let found = problems(&v);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found.iter().all(|m| m.starts_with(expected)), "{found:?}");
    }

    #[test]
    fn unknown_fields_are_warnings_with_a_hint() {
        let v = with(&["rules", "replication", "minCopy"], json!(2));
        let checked = check_value(&v).map_err(|p| p.to_string());
        let warnings: Vec<String> = checked
            .map(|c| c.warnings.into_iter().map(|w| w.message).collect())
            .unwrap_or_default();
        assert_eq!(
            warnings,
            vec!["rules.replication.minCopy is not a known field and is ignored (did you mean rules.replication.minCopies?)"]
        );
    }

    #[test]
    fn envelope_gives_uri_cid_and_author() {
        let v = json!({"uri": "at://did:plc:alice/org.p2pds.policy/3kabc", "cid": "bafyreigiven", "value": base()});
        let checked = check_value(&v).map_err(|p| p.to_string());
        let Ok(checked) = checked else {
            panic!("{checked:?}")
        };
        assert_eq!(
            checked.policy.reference.uri.as_deref(),
            Some("at://did:plc:alice/org.p2pds.policy/3kabc")
        );
        assert_eq!(checked.policy.reference.cid, "bafyreigiven");
        assert_eq!(checked.policy.author.as_deref(), Some("did:plc:alice"));
        // The given CID does not match the content: warned, not fatal.
        assert!(checked.warnings.iter().any(|w| w.path == "cid"));
    }

    #[test]
    fn envelope_without_cid_computes_the_same_cid_as_the_bare_record() {
        let bare = check_value(&base()).map(|c| c.policy.reference.cid);
        let env = check_value(
            &json!({"uri": "at://did:plc:alice/org.p2pds.policy/3kabc", "value": base()}),
        )
        .map(|c| c.policy.reference.cid);
        assert_eq!(bare, env);
    }

    #[rstest]
    #[case("did:plc:abc123", true)]
    #[case("did:web:example.com", true)]
    #[case("did:web:localhost%3A2583", true)]
    #[case("did:PLC:abc", false)]
    #[case("did:plc:", false)]
    #[case("did:plc:abc:", false)]
    #[case("plc:abc", false)]
    #[case("did:plc:a b", false)]
    fn did_syntax(#[case] s: &str, #[case] ok: bool) {
        assert_eq!(is_did(s), ok);
    }

    #[rstest]
    #[case("app.bsky.feed.post", true)]
    #[case("org.p2pds.policy", true)]
    #[case("app.bsky", false)]
    #[case("app.bsky.feed.", false)]
    #[case("app.bsky.feed.po-st", false)]
    #[case("1app.bsky.feed", false)]
    fn nsid_syntax(#[case] s: &str, #[case] ok: bool) {
        assert_eq!(is_nsid(s), ok);
    }
}
