//! The fuzz corpus and the fuzz regressions, replayed on stable: every file in
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes through the function the fuzz
//! target calls (`fuzz/src/lib.rs`, compiled into this test as `harness`, so the two cannot
//! drift), which must return, not panic. The fuzzing itself is `scripts/fuzz` (nightly).
//!
//! `write_seeds` (ignored) writes the seeds made from this repo's builders and the atproto
//! interop fixtures into the corpus: `cargo test --test it fuzz_corpus::write_seeds -- --ignored`.

use std::collections::{BTreeSet, HashMap};
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};

use base64::Engine;
use cid::Cid;
use p2pds::crypto::SigningKey;
use p2pds::repo::build::{BuiltRepo, RepoBuilder};
use p2pds::repo::car::CarWriter;
use p2pds::repo::{cid_for_cbor, commit, mst, proof, tid};
use serde_json::{json, Value};

#[path = "../../fuzz/src/lib.rs"]
mod harness;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of a folder (none when it does not exist), sorted; dot files and READMEs skipped.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.starts_with('.') && name != "README.md"
        })
        .collect();
    out.sort();
    out
}

fn subdirs(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_dir())
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn targets_corpora_and_fuzz_targets_match() {
    let names: BTreeSet<String> = harness::TARGETS.iter().map(|t| t.0.to_string()).collect();
    let scripts: BTreeSet<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names, scripts,
        "fuzz/fuzz_targets/*.rs and harness::TARGETS differ"
    );
    assert_eq!(subdirs(&fuzz_dir().join("corpus")), names, "fuzz/corpus/*");
    let regressions = subdirs(&fuzz_dir().join("regressions"));
    assert!(
        regressions.is_subset(&names),
        "unknown fuzz/regressions/*: {regressions:?}"
    );
    assert!(
        harness::example_policy().is_some(),
        "the example policy no longer checks"
    );
}

#[test]
fn every_corpus_and_regression_input_returns() {
    let mut failed = Vec::new();
    for &(name, run) in harness::TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty");
        let regressions = files(&fuzz_dir().join("regressions").join(name));
        for path in corpus.iter().chain(&regressions) {
            let data = std::fs::read(path).unwrap();
            if catch_unwind(|| run(&data)).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "these inputs panicked: {failed:#?}");
}

/// A small repo of the fuzz account, signed with the fuzz key.
fn fuzz_repo(records: usize, micros: u64) -> (RepoBuilder, BuiltRepo) {
    let key = SigningKey::k256_from_bytes(&harness::FUZZ_SECRET).unwrap();
    let mut b = RepoBuilder::new(harness::FUZZ_DID, key);
    for i in 0..records {
        let value = if i % 5 == 0 {
            json!({"$type": "app.bsky.feed.post", "text": format!("post {i}"),
                   "embed": {"$type": "blob", "ref": {"$link": cid_for_cbor(b"blob").to_string()}}})
        } else {
            json!({"$type": "app.bsky.feed.like", "n": i, "bytes": [1, 2, 3]})
        };
        let collection = if i % 5 == 0 {
            "app.bsky.feed.post"
        } else {
            "app.bsky.feed.like"
        };
        b.put_json(collection, &format!("3kf{i:010}"), &value);
    }
    let built = b.build(&tid::format(micros, 0));
    (b, built)
}

/// The tree's nodes of a built repo, the root first.
fn tree_blocks(built: &BuiltRepo) -> Vec<Vec<u8>> {
    let blocks: HashMap<Cid, Vec<u8>> = built.blocks.iter().cloned().collect();
    let mut out = vec![blocks[&built.data].clone()];
    // Every node of the tree: the blocks that decode as nodes (records do not).
    for (cid, bytes) in &built.blocks {
        if *cid != built.data && mst::decode_node(cid, bytes).is_ok() {
            out.push(bytes.clone());
        }
    }
    out
}

fn proof_input(mode: u8, built: &BuiltRepo, key: &str) -> Vec<u8> {
    let mut blocks: HashMap<Cid, Vec<u8>> = built.blocks.iter().cloned().collect();
    let path = proof::find_key(&mut blocks, built.data, key.as_bytes()).unwrap();
    let mut out = vec![mode, u8::try_from(key.len()).unwrap()];
    out.extend_from_slice(key.as_bytes());
    let cids: Vec<&Cid> = path.nodes.iter().chain(path.value.iter()).collect();
    if mode % 2 == 0 {
        let mut w = CarWriter::new(Vec::new(), vec![built.commit_cid]).unwrap();
        w.write_block(&built.commit_cid, &built.commit_bytes)
            .unwrap();
        for c in cids {
            w.write_block(c, &blocks[c]).unwrap();
        }
        out.extend(w.finish().unwrap());
    } else {
        let joined = harness::join_blocks(cids.iter().map(|c| blocks[*c].as_slice())).unwrap();
        out.extend(joined);
    }
    out
}

fn interop(rel: &str) -> Option<String> {
    let dir = p2pds::testdata::interop_dir()?;
    Some(std::fs::read_to_string(dir.join(rel)).unwrap())
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
}

/// The seeds, by target.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let mut add = |target: &'static str, name: String, data: Vec<u8>| {
        out.push((target, name, data));
    };
    let t0 = 1_700_000_000_000_000;
    let repos: Vec<(RepoBuilder, BuiltRepo)> = [0, 1, 12, 60]
        .iter()
        .enumerate()
        .map(|(i, &n)| fuzz_repo(n, t0 + i as u64))
        .collect();

    // CAR files: whole repos, a `since` diff, an empty root list, a cut-short file.
    for (b, built) in &repos {
        add(
            "car",
            format!("repo-{}", b.records.len()),
            built.car_bytes(),
        );
    }
    let diff = repos[3].1.diff_car_bytes(&repos[2].1);
    add("car", "diff".into(), diff);
    let empty = CarWriter::new(Vec::new(), vec![])
        .unwrap()
        .finish()
        .unwrap();
    add("car", "no-roots".into(), empty);
    let whole = repos[2].1.car_bytes();
    add("car", "cut-short".into(), whole[..whole.len() / 2].to_vec());

    // DAG-CBOR: the data-model fixtures, a record, a tree node, a commit.
    if let Some(text) = interop("data-model/data-model-fixtures.json") {
        let fixtures: Vec<Value> = serde_json::from_str(&text).unwrap();
        for (i, f) in fixtures.iter().enumerate() {
            let b64 = f["cbor_base64"].as_str().unwrap().trim_end_matches('=');
            let cbor = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b64)
                .unwrap();
            add("dag_cbor", format!("data-model-{i}"), cbor);
        }
    }
    let built = &repos[2].1;
    let record = built.blocks.last().unwrap().1.clone();
    add("dag_cbor", "record".into(), record);
    add(
        "dag_cbor",
        "tree-node".into(),
        tree_blocks(built)[0].clone(),
    );
    add("dag_cbor", "commit".into(), built.commit_bytes.clone());

    // Commits: signed by the fuzz key (k256), by a P-256 key, and with a non-null prev.
    add("commit", "k256".into(), built.commit_bytes.clone());
    let p256 = SigningKey::generate_p256();
    let (_, p) = commit::sign("did:plc:p256", built.data, &built.rev, &p256);
    add("commit", "p256".into(), p);
    let ipld: ipld_core::ipld::Ipld = serde_ipld_dagcbor::from_slice(&built.commit_bytes).unwrap();
    if let ipld_core::ipld::Ipld::Map(mut map) = ipld {
        map.insert("prev".into(), ipld_core::ipld::Ipld::Link(built.data));
        let bytes = serde_ipld_dagcbor::to_vec(&ipld_core::ipld::Ipld::Map(map)).unwrap();
        add("commit", "prev-link".into(), bytes);
    }

    // Trees: one tree; two trees (for the diff); the interop fixtures' key sets.
    for (b, built) in &repos {
        let blocks = tree_blocks(built);
        let joined = harness::join_blocks(blocks.iter().map(Vec::as_slice)).unwrap();
        add("mst", format!("tree-{}", b.records.len()), joined);
    }
    for (x, y) in [(2, 3), (3, 2), (1, 2), (0, 1)] {
        let (a, b) = (tree_blocks(&repos[x].1), tree_blocks(&repos[y].1));
        let order = [&a[0], &b[0]].into_iter().chain(&a[1..]).chain(&b[1..]);
        let joined = harness::join_blocks(order.map(Vec::as_slice)).unwrap();
        add("mst", format!("diff-{x}-{y}"), joined);
    }
    if let Some(text) = interop("firehose/commit-proof-fixtures.json") {
        let fixtures: Vec<Value> = serde_json::from_str(&text).unwrap();
        for (i, f) in fixtures.iter().enumerate() {
            let leaf: Cid = f["leafValue"].as_str().unwrap().parse().unwrap();
            let tree = |keys: Vec<String>| {
                let mut keys: Vec<(Vec<u8>, Cid)> =
                    keys.into_iter().map(|k| (k.into_bytes(), leaf)).collect();
                keys.sort();
                let mut blocks = Vec::new();
                let root = mst::build(&keys, &mut |c, b| blocks.push((c, b)));
                let mut out: Vec<Vec<u8>> = Vec::new();
                out.extend(blocks.iter().filter(|b| b.0 == root).map(|b| b.1.clone()));
                out.extend(blocks.iter().filter(|b| b.0 != root).map(|b| b.1.clone()));
                out
            };
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect()
            };
            let before = strings(&f["keys"]);
            let dels = strings(&f["dels"]);
            let mut after: Vec<String> = before
                .iter()
                .filter(|k| !dels.contains(k))
                .cloned()
                .collect();
            after.extend(strings(&f["adds"]));
            let (a, b) = (tree(before), tree(after));
            let order = [&a[0], &b[0]].into_iter().chain(&a[1..]).chain(&b[1..]);
            let joined = harness::join_blocks(order.map(Vec::as_slice)).unwrap();
            add("mst", format!("commit-proof-{i}"), joined);
        }
    }

    // Proofs: present and absent keys, as a server's CAR (mode 0) and as blocks (mode 1).
    let (_, built) = &repos[3];
    for (i, key) in [
        "app.bsky.feed.post/3kf0000000005",
        "app.bsky.feed.like/3kf0000000041",
        "app.bsky.feed.like/3kf9999999999",
        "app.bsky.feed.post/nope",
    ]
    .iter()
    .enumerate()
    {
        add("proof", format!("car-{i}"), proof_input(0, built, key));
        add("proof", format!("blocks-{i}"), proof_input(1, built, key));
    }

    // Policies and observations: the documented examples.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let read = |rel: &str| std::fs::read(root.join(rel)).unwrap();
    for rel in [
        "docs/policy/policy-mutual-aid.record.json",
        "lexicons/examples/policy-mutual-aid.json",
        "lexicons/examples/policy-sla.json",
        "lexicons/examples/policy-partial.json",
    ] {
        add("policy", rel.replace('/', "-"), read(rel));
    }
    for rel in [
        "docs/policy/observations-mutual-aid.json",
        "lexicons/examples/status.json",
        "lexicons/examples/peer.json",
    ] {
        add("observations", rel.replace('/', "-"), read(rel));
    }

    // Identifiers: the interop syntax fixtures, valid and invalid, one per file.
    for kind in [
        "atidentifier",
        "aturi",
        "cid",
        "datetime",
        "did",
        "handle",
        "nsid",
        "recordkey",
        "tid",
    ] {
        for validity in ["valid", "invalid"] {
            let Some(text) = interop(&format!("syntax/{kind}_syntax_{validity}.txt")) else {
                continue;
            };
            for (i, line) in lines(&text).enumerate() {
                add(
                    "identifiers",
                    format!("{kind}-{validity}-{i}"),
                    line.as_bytes().to_vec(),
                );
            }
        }
    }
    let fuzz_key = SigningKey::k256_from_bytes(&harness::FUZZ_SECRET)
        .unwrap()
        .public_key();
    for (i, extra) in [
        "did:key:zDnaeTiq1PdzvZXUaMdezchcMJQpBdH2VN4pgrrEhMCCbmwSb".to_string(),
        fuzz_key.to_did_key(),
        "1h30m".into(),
        "3650d".into(),
        "99.9%".into(),
        "2026-03-01T00:00:00.000Z".into(),
        json!({
            "id": "did:plc:fuzz",
            "alsoKnownAs": ["at://fuzz.example.com"],
            "verificationMethod": [{"id": "#atproto", "type": "Multikey",
                "publicKeyMultibase": fuzz_key.to_multikey()}],
            "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://pds.example.com"}],
        })
        .to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        add("identifiers", format!("extra-{i}"), extra.into_bytes());
    }
    out
}

#[test]
fn seeds_return() {
    for (target, name, data) in seeds() {
        let run = harness::TARGETS.iter().find(|t| t.0 == target).unwrap().1;
        if catch_unwind(|| run(&data)).is_err() {
            panic!("seed {target}/{name} panicked");
        }
    }
}

#[test]
#[ignore = "writes the seeds into fuzz/corpus; run by hand"]
fn write_seeds() {
    for (target, name, data) in seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }
}
