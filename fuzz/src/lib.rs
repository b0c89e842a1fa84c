//! The fuzz targets' bodies: one function per target, each fed the raw input.
//!
//! Shared by `fuzz_targets/*.rs` (cargo fuzz, nightly) and `tests/it/fuzz_corpus.rs` (the
//! corpus and the regressions replayed on stable), so what is fuzzed and what is replayed cannot
//! drift. Every parser must answer `Ok` or `Err` on any input: a panic here is a bug in the
//! library. Some targets also assert properties the code documents (a TID or a duration reads
//! back from its own text, a tree walk and a key lookup agree, a diff turns one tree into the
//! other, the order of observations never shows in a report); a failed assertion is a bug too.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use cid::Cid;
use ipld_core::ipld::Ipld;
use p2pds::crypto::{PublicKey, SigningKey};
use p2pds::policy::records::{PeerRecord, StatusRecord};
use p2pds::policy::time::{Duration, Percent, Timestamp};
use p2pds::policy::validate::{is_did, is_nsid};
use p2pds::policy::{
    combine, compliance, defaults, input, obligations, version, Observations, Policy,
};
use p2pds::repo::car::{CarReader, CarWriter};
use p2pds::repo::commit::{self, Commit};
use p2pds::repo::mst::{self, BlockSource, Change, MstError};
use p2pds::repo::{cid_for_cbor, digest_key, proof, record, tid};

/// A target's body: it is given one input and must return.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/corpus/<name>/` and `fuzz/regressions/<name>/` name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("car", car),
    ("dag_cbor", dag_cbor),
    ("commit", commit),
    ("mst", mst),
    ("proof", proof),
    ("policy", policy),
    ("observations", observations),
    ("identifiers", identifiers),
];

/// The account whose proofs the `proof` target checks.
pub const FUZZ_DID: &str = "did:plc:fuzz";
/// The rev of the commits the `proof` target signs.
pub const FUZZ_REV: &str = "3kfuzzfuzz222";
/// Secret of the k256 key that signs the fuzz account's commits (seeds are signed with it).
pub const FUZZ_SECRET: [u8; 32] = [0x42; 32];
/// A P-256 key (from the atproto interop fixtures), so both curves' checks are exercised.
const P256_DID_KEY: &str = "did:key:zDnaeTiq1PdzvZXUaMdezchcMJQpBdH2VN4pgrrEhMCCbmwSb";
/// The policy the observations are evaluated against (the documented example).
const EXAMPLE_POLICY: &str = include_str!("../../docs/policy/policy-mutual-aid.record.json");

/// The fuzz account's signing key.
pub fn fuzz_key() -> Option<&'static SigningKey> {
    static KEY: OnceLock<Option<SigningKey>> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::k256_from_bytes(&FUZZ_SECRET).ok())
        .as_ref()
}

/// The public keys commits are checked against: the fuzz account's (k256) and a P-256 one.
fn public_keys() -> &'static [PublicKey] {
    static KEYS: OnceLock<Vec<PublicKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        fuzz_key()
            .map(SigningKey::public_key)
            .into_iter()
            .chain(PublicKey::from_did_key(P256_DID_KEY).ok())
            .collect()
    })
}

/// The documented example policy, checked (`None` only if the example stopped checking).
pub fn example_policy() -> Option<&'static Policy> {
    static POLICY: OnceLock<Option<Policy>> = OnceLock::new();
    POLICY
        .get_or_init(|| {
            input::check_bytes(EXAMPLE_POLICY.as_bytes())
                .ok()
                .map(|c| c.policy)
        })
        .as_ref()
}

/// Splits an input into blocks, each `[length: u16 big-endian][bytes]` (the last one may be cut
/// short): how the tree targets take several blocks from one input.
pub fn split_blocks(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let [hi, lo, rest @ ..] = data {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
        let (block, tail) = rest.split_at(len);
        out.push(block);
        data = tail;
    }
    out
}

/// The inverse of [`split_blocks`] (for writing seeds); `None` when a block is over 64 KiB.
pub fn join_blocks<'a>(blocks: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for block in blocks {
        out.extend_from_slice(&u16::try_from(block.len()).ok()?.to_be_bytes());
        out.extend_from_slice(block);
    }
    Some(out)
}

/// CAR files: the header, then every block hashed against its CID.
pub fn car(data: &[u8]) {
    let Ok(mut reader) = CarReader::new(data) else {
        return;
    };
    let _ = reader.roots().len();
    while let Ok(Some((cid, bytes))) = reader.next_block() {
        let _ = (digest_key(&cid), bytes.len());
    }
}

/// DAG-CBOR: a block to atproto JSON (records), its blob references, and the CID of JSON
/// encoded back (how a policy version is named). Decoding what was encoded must give the same
/// bytes again: a commit's signature covers a re-encoding of its decoded map.
pub fn dag_cbor(data: &[u8]) {
    if let Ok(json) = record::to_json(data) {
        let mut blobs = Vec::new();
        record::blob_refs(&json, &mut blobs);
        let _ = version::record_cid(&json);
    }
    let Ok(ipld) = serde_ipld_dagcbor::from_slice::<Ipld>(data) else {
        return;
    };
    let Ok(once) = serde_ipld_dagcbor::to_vec(&ipld) else {
        return;
    };
    let twice = serde_ipld_dagcbor::from_slice::<Ipld>(&once)
        .ok()
        .and_then(|i| serde_ipld_dagcbor::to_vec(&i).ok());
    assert_eq!(
        twice.as_deref(),
        Some(once.as_slice()),
        "DAG-CBOR re-encoding is not stable"
    );
}

/// Commits: decoding, and the signature checked against a k256 and a P-256 key.
pub fn commit(data: &[u8]) {
    let Ok(commit) = Commit::decode(data) else {
        return;
    };
    assert!(
        tid::parse(&commit.rev).is_some(),
        "a commit with a bad rev decoded"
    );
    for key in public_keys() {
        let _ = commit.verify_signature(key);
    }
}

/// Where a tree's links lead in the `mst` target: to the block whose CID they name, else to one
/// picked by their digest, so the fuzzer builds trees without computing hashes. One CID always
/// leads to the same block, as in a real store.
struct FuzzSource<'a> {
    blocks: &'a [&'a [u8]],
    by_cid: HashMap<Cid, usize>,
}

impl<'a> FuzzSource<'a> {
    fn new(blocks: &'a [&'a [u8]]) -> Self {
        let by_cid = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| (cid_for_cbor(b), i))
            .collect();
        Self { blocks, by_cid }
    }
}

impl BlockSource for FuzzSource<'_> {
    fn get_block(&mut self, cid: &Cid) -> Result<Option<Vec<u8>>, MstError> {
        if self.blocks.is_empty() {
            return Ok(None);
        }
        let i = match self.by_cid.get(cid) {
            Some(&i) => i,
            None => usize::from(digest_key(cid)[0]) % self.blocks.len(),
        };
        Ok(self.blocks.get(i).map(|b| b.to_vec()))
    }
}

/// Every key of a valid tree, or `None` when `walk` refuses it.
fn walk_keys(src: &mut impl BlockSource, root: Cid) -> Option<BTreeMap<Vec<u8>, Cid>> {
    let mut keys = BTreeMap::new();
    mst::walk(src, root, |key, cid| {
        keys.insert(key.to_vec(), *cid);
        Ok::<(), MstError>(())
    })
    .ok()?;
    Some(keys)
}

/// Tree nodes: decoding, validation by `walk`, the path to a key (`find_key`, what proofs
/// use) and `diff`. The input is blocks ([`split_blocks`]): the first is the root of one tree,
/// the second the root of another. Checked: a key the walk found is found on its path, a key it
/// did not is proven absent, and the diff from a valid tree is accepted exactly when the walk
/// accepts the other tree, and turns the first tree's keys into the second's.
pub fn mst(data: &[u8]) {
    let blocks = split_blocks(data);
    for block in &blocks {
        let _ = mst::decode_node(&cid_for_cbor(block), block);
    }
    let mut src = FuzzSource::new(&blocks);
    let roots: Vec<Cid> = blocks.iter().take(2).map(|b| cid_for_cbor(b)).collect();
    let walked: Vec<Option<BTreeMap<Vec<u8>, Cid>>> =
        roots.iter().map(|r| walk_keys(&mut src, *r)).collect();
    for (root, keys) in roots.iter().zip(&walked) {
        let Some(keys) = keys else {
            let _ = proof::find_key(&mut src, *root, b"app.bsky.feed.post/3kfuzzfuzz222");
            continue;
        };
        for (key, value) in keys.iter().take(16) {
            let found = proof::find_key(&mut src, *root, key).map(|p| p.value);
            assert_eq!(found, Ok(Some(*value)), "a walked key was not found");
            // A key just after this one is absent unless the walk saw it.
            let mut next = key.clone();
            next.push(b'0');
            let found = proof::find_key(&mut src, *root, &next).map(|p| p.value);
            assert_eq!(
                found,
                Ok(keys.get(&next).copied()),
                "wrong answer for an absent key"
            );
        }
    }
    let (Some(Some(old)), Some(&new_root)) = (walked.first(), roots.get(1)) else {
        return;
    };
    let mut applied = old.clone();
    let diffed = mst::diff(&mut src, roots.first().copied(), new_root, |change| {
        match change {
            Change::Create { key, cid } => {
                assert!(
                    applied.insert(key, cid).is_none(),
                    "created a key that existed"
                );
            }
            Change::Update { key, prev, cid } => {
                assert_eq!(
                    applied.insert(key, cid),
                    Some(prev),
                    "updated a key wrongly"
                );
            }
            Change::Delete { key, prev } => {
                assert_eq!(applied.remove(&key), Some(prev), "deleted a key wrongly");
            }
        }
        Ok::<(), MstError>(())
    });
    match (diffed, walked.get(1)) {
        (Ok(_), Some(Some(new))) => {
            assert_eq!(&applied, new, "the diff does not give the new tree")
        }
        (Ok(_), _) => panic!("the diff accepted a tree the walk refuses"),
        (Err(e), Some(Some(_))) => panic!("the diff refused a tree the walk accepts: {e}"),
        (Err(_), _) => {}
    }
}

/// Links of `ipld` pointed elsewhere by `to`; whether any changed.
fn relink(ipld: Ipld, to: &impl Fn(&Cid) -> Cid, changed: &mut bool) -> Ipld {
    match ipld {
        Ipld::Link(c) => {
            let n = to(&c);
            *changed |= n != c;
            Ipld::Link(n)
        }
        Ipld::List(items) => {
            Ipld::List(items.into_iter().map(|i| relink(i, to, changed)).collect())
        }
        Ipld::Map(map) => Ipld::Map(
            map.into_iter()
                .map(|(k, v)| (k, relink(v, to, changed)))
                .collect(),
        ),
        other => other,
    }
}

/// A real proof CAR from fuzzer-made blocks: each link of block i is pointed at a later block
/// (the one whose CID it names, else one picked by its digest), every block is hashed, last
/// first, and a commit over the first block is signed with the fuzz key. So the fuzzer reaches
/// the tree and the record past the hashes and the signature.
fn signed_car(blocks: &[&[u8]]) -> Option<Vec<u8>> {
    let original: HashMap<Cid, usize> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| (cid_for_cbor(b), i))
        .collect();
    let n = blocks.len();
    let mut cids: Vec<Option<Cid>> = vec![None; n];
    let mut linked: Vec<Vec<u8>> = vec![Vec::new(); n];
    for i in (0..n).rev() {
        let block = *blocks.get(i)?;
        let to = |c: &Cid| match original.get(c) {
            Some(&j) if j > i => cids.get(j).copied().flatten().unwrap_or(*c),
            _ if i + 1 < n => {
                let j = i + 1 + usize::from(digest_key(c)[0]) % (n - i - 1);
                cids.get(j).copied().flatten().unwrap_or(*c)
            }
            _ => *c,
        };
        let mut changed = false;
        let bytes = match serde_ipld_dagcbor::from_slice::<Ipld>(block) {
            Ok(ipld) => {
                let ipld = relink(ipld, &to, &mut changed);
                match serde_ipld_dagcbor::to_vec(&ipld) {
                    Ok(b) if changed => b,
                    _ => block.to_vec(),
                }
            }
            Err(_) => block.to_vec(),
        };
        *cids.get_mut(i)? = Some(cid_for_cbor(&bytes));
        *linked.get_mut(i)? = bytes;
    }
    let cids: Vec<Cid> = cids.into_iter().collect::<Option<_>>()?;
    let data = *cids.first()?;
    let (commit_cid, commit_bytes) = commit::sign(FUZZ_DID, data, FUZZ_REV, fuzz_key()?);
    let mut car = CarWriter::new(Vec::new(), vec![commit_cid]).ok()?;
    car.write_block(&commit_cid, &commit_bytes).ok()?;
    for (cid, bytes) in cids.iter().zip(&linked) {
        car.write_block(cid, bytes).ok()?;
    }
    car.finish().ok()
}

/// `getRecord` proofs of the fuzz account, checked with its key. The input is
/// `[mode][key length][collection/rkey][rest]`; with an even mode `rest` is the proof CAR as a
/// server sends it, with an odd one it is blocks ([`split_blocks`], the tree's root first) made
/// into a signed CAR ([`signed_car`]).
pub fn proof(data: &[u8]) {
    let [mode, len, rest @ ..] = data else {
        return;
    };
    let (key, rest) = rest.split_at(usize::from(*len).min(rest.len()));
    let key = String::from_utf8_lossy(key);
    let (collection, rkey) = key.split_once('/').unwrap_or((key.as_ref(), ""));
    let car = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        match signed_car(&split_blocks(rest)) {
            Some(car) => car,
            None => return,
        }
    };
    let Some(key) = fuzz_key().map(SigningKey::public_key) else {
        return;
    };
    if let Ok(found) = proof::verify_record(&car, FUZZ_DID, &key, collection, rkey) {
        assert_eq!(
            found.cid.is_some(),
            found.value.is_some(),
            "a record without its value"
        );
    }
}

/// Policy files: reading and checking (`input::check_bytes`, which every policy file goes
/// through, then `check_value`), then what the engine does with a checked policy: the effective
/// policy shown to people, obligations, combining, and an evaluation with nothing observed. A
/// checked record written back out must check again to the same policy.
pub fn policy(data: &[u8]) {
    if let Ok(value) = input::policy_value(data) {
        let _ = defaults::defaulted(&value);
    }
    let checked = match input::check_bytes(data) {
        Ok(checked) => checked,
        Err(problems) => {
            let _ = problems.to_string();
            return;
        }
    };
    let _ = defaults::effective(&checked);
    let policy = &checked.policy;
    let nothing = Observations::default();
    let mut nows = vec![policy.created_at, policy.effective_at];
    nows.push(policy.effective_at.plus(policy.window()));
    nows.extend(policy.expires_at);
    for now in nows {
        let report = compliance::evaluate(policy, &nothing, now);
        let _ = serde_json::to_string(&report);
    }
    let _ = obligations::holders_of_all(policy);
    let _ = combine::requirements(&[policy]);
    for member in policy.members.iter().take(4) {
        let _ = combine::obligations(&[policy], &member.did, &BTreeMap::new());
    }
    let Ok(value) = serde_json::to_value(&policy.record) else {
        return;
    };
    let mut envelope = serde_json::Map::new();
    if let Some(uri) = &policy.reference.uri {
        envelope.insert("uri".into(), uri.clone().into());
        envelope.insert("cid".into(), policy.reference.cid.clone().into());
    }
    let again = if envelope.is_empty() {
        p2pds::policy::validate::check_value(&value)
    } else {
        envelope.insert("value".into(), value);
        p2pds::policy::validate::check_value(&serde_json::Value::Object(envelope))
    };
    match again {
        Ok(again) => {
            let mut again = again.policy;
            again.reference.cid.clone_from(&policy.reference.cid);
            assert_eq!(&again, policy, "a checked record reads back differently");
        }
        Err(problems) => panic!("a checked record no longer checks: {problems}"),
    }
}

/// Observations: the file (`input::observations`, as `p2pds policy evaluate` reads it), and
/// the status and peer records they are also made from, evaluated against the example policy.
/// Written out and read back they are the same; reversed and with every entry twice they give
/// the same report.
pub fn observations(data: &[u8]) {
    let mut all = Vec::new();
    match input::observations(data) {
        Ok(obs) => {
            let written = serde_json::to_vec(&obs).ok();
            let read = written.and_then(|w| input::observations(&w).ok());
            assert_eq!(read.as_ref(), Some(&obs), "observations do not read back");
            all.push(obs);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(status) = serde_json::from_slice::<StatusRecord>(data) {
        let mut obs = Observations::default();
        if obs.add_status("did:plc:bob", &status).is_ok() {
            all.push(obs);
        }
    }
    if let Ok(peer) = serde_json::from_slice::<PeerRecord>(data) {
        let mut obs = Observations::default();
        if obs.add_peer("did:plc:carol", &peer).is_ok() {
            all.push(obs);
        }
    }
    let Some(policy) = example_policy() else {
        return;
    };
    for obs in all {
        let mut nows = vec![policy.effective_at.plus(Duration::from_secs(6 * 3600))];
        nows.extend(obs.heartbeats.iter().map(|h| h.at).max());
        let mut shuffled = obs.clone();
        shuffled.merge(obs.clone());
        shuffled.acks.reverse();
        shuffled.heartbeats.reverse();
        shuffled.heads.reverse();
        shuffled.holdings.reverse();
        shuffled.verifications.reverse();
        for now in nows {
            let report = compliance::evaluate(policy, &obs, now);
            let _ = serde_json::to_string(&report);
            let other = compliance::evaluate(policy, &shuffled, now);
            assert_eq!(
                report, other,
                "the order or repetition of observations shows"
            );
        }
    }
}

/// Identifiers: CIDs (the server's strict text form and the store's binary form), DIDs (the
/// syntax check, `did:key`, DID documents), handles, AT-URIs, TIDs, NSIDs, record keys, and
/// the policy's date-times, durations and percentages, each read back from its own text.
pub fn identifiers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let s: &str = &text;

    if let Some(cid) = p2pds::serve::parse_cid(s) {
        assert_eq!(p2pds::serve::parse_cid(&cid.to_string()), Some(cid));
    }
    if let Ok(cid) = Cid::try_from(data) {
        let _ = (digest_key(&cid), p2pds::repo::verify_block(&cid, data));
    }

    let _ = is_did(s);
    let _ = PublicKey::from_did_key(s);
    for kind in [
        "Multikey",
        "EcdsaSecp256k1VerificationKey2019",
        "EcdsaSecp256r1VerificationKey2019",
    ] {
        let _ = PublicKey::from_verification_method(kind, s);
    }
    if let Ok(doc) = serde_json::from_str::<serde_json::Value>(s) {
        let did = doc.get("id").and_then(|v| v.as_str()).unwrap_or(FUZZ_DID);
        let _ = p2pds::identity::DidDoc::parse(did, &doc);
    }

    let _ = p2pds::identity::valid_handle(s);

    if let Some((did, collection, rkey)) = p2pds::group::plan::split_uri(s) {
        let want = (!rkey.contains('/')).then_some(rkey);
        assert_eq!(p2pds::group::plan::rkey_in(s, &did, &collection), want);
    }

    if let Some(value) = tid::parse(s) {
        assert_eq!(tid::timestamp_micros(s), Some(value >> 10));
        // The syntax lets the first character set the integer's top bit ("c" to "j"), which a
        // TID never has: those read as microseconds past 2^53 (after the year 2255), a rev
        // from the future. The others are exactly what `format` writes.
        if value >> 63 == 0 {
            let clock = u16::try_from(value & 0x3ff).unwrap_or(0);
            assert_eq!(
                tid::format(value >> 10, clock),
                s,
                "a TID does not read back"
            );
        } else {
            assert!(value >> 10 >= 1 << 53);
        }
    }

    let _ = is_nsid(s);
    let _ = mst::valid_key(data);

    if let Ok(t) = Timestamp::parse(s) {
        assert_eq!(
            Timestamp::parse(&t.to_string()),
            Ok(t),
            "a date-time does not read back"
        );
    }
    if let Ok(d) = Duration::parse(s) {
        assert_eq!(
            Duration::parse(&d.to_string()),
            Ok(d),
            "a duration does not read back"
        );
    }
    if let Ok(p) = Percent::parse(s) {
        assert_eq!(
            Percent::parse(&p.to_string()),
            Ok(p),
            "a percentage does not read back"
        );
    }
}
