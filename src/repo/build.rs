//! Builds signed repositories offline: the benchmark's input and the tests'
//! hostile servers. Never used to write a user's data (DESIGN §5 warns about
//! writers that lose keys; this one builds the whole tree from sorted keys).

use std::collections::BTreeMap;
use std::io::Write;

use cid::Cid;

use super::car::CarWriter;
use super::{cid_for_cbor, commit, mst, tid};
use crate::crypto::SigningKey;

/// A repository held in memory: records by key, each as DAG-CBOR bytes.
#[derive(Clone, Debug)]
pub struct RepoBuilder {
    pub did: String,
    pub key: SigningKey,
    pub records: BTreeMap<String, Vec<u8>>,
}

/// One built revision: the commit and every block of the tree and records.
#[derive(Clone, Debug)]
pub struct BuiltRepo {
    pub commit_cid: Cid,
    pub commit_bytes: Vec<u8>,
    pub rev: String,
    pub data: Cid,
    /// MST nodes then records, in key order.
    pub blocks: Vec<(Cid, Vec<u8>)>,
}

impl RepoBuilder {
    pub fn new(did: &str, key: SigningKey) -> Self {
        Self {
            did: did.to_string(),
            key,
            records: BTreeMap::new(),
        }
    }

    /// Adds or replaces a record given as JSON-like data (plain maps, strings, numbers).
    pub fn put_json(&mut self, collection: &str, rkey: &str, value: &serde_json::Value) {
        let bytes = serde_ipld_dagcbor::to_vec(value).unwrap_or_default();
        self.records.insert(format!("{collection}/{rkey}"), bytes);
    }

    pub fn delete(&mut self, collection: &str, rkey: &str) {
        self.records.remove(&format!("{collection}/{rkey}"));
    }

    /// Builds the tree and signs a commit with `rev`.
    pub fn build(&self, rev: &str) -> BuiltRepo {
        let mut blocks = Vec::with_capacity(self.records.len() * 2);
        let mut entries = Vec::with_capacity(self.records.len());
        let mut record_blocks = Vec::with_capacity(self.records.len());
        for (key, bytes) in &self.records {
            let cid = cid_for_cbor(bytes);
            entries.push((key.as_bytes().to_vec(), cid));
            record_blocks.push((cid, bytes.clone()));
        }
        let data = mst::build(&entries, &mut |cid, bytes| blocks.push((cid, bytes)));
        blocks.extend(record_blocks);
        let (commit_cid, commit_bytes) = commit::sign(&self.did, data, rev, &self.key);
        BuiltRepo {
            commit_cid,
            commit_bytes,
            rev: rev.to_string(),
            data,
            blocks,
        }
    }

    /// Builds with a fresh rev for the current time.
    pub fn build_now(&self) -> BuiltRepo {
        self.build(&tid::now(0))
    }
}

impl BuiltRepo {
    /// Writes the whole repo as a CAR whose root is the commit.
    pub fn write_car<W: Write>(&self, out: W) -> std::io::Result<W> {
        let mut car = CarWriter::new(out, vec![self.commit_cid])?;
        car.write_block(&self.commit_cid, &self.commit_bytes)?;
        let mut seen = std::collections::HashSet::new();
        for (cid, bytes) in &self.blocks {
            if seen.insert(*cid) {
                car.write_block(cid, bytes)?;
            }
        }
        car.finish()
    }

    /// The CAR as bytes.
    pub fn car_bytes(&self) -> Vec<u8> {
        self.write_car(Vec::new()).unwrap_or_default()
    }

    /// The blocks of this revision that `older` does not have, as a `since` CAR.
    pub fn diff_car_bytes(&self, older: &BuiltRepo) -> Vec<u8> {
        let old: std::collections::HashSet<Cid> = older.blocks.iter().map(|b| b.0).collect();
        let Ok(mut car) = CarWriter::new(Vec::new(), vec![self.commit_cid]) else {
            return Vec::new();
        };
        let mut ok = car
            .write_block(&self.commit_cid, &self.commit_bytes)
            .is_ok();
        let mut seen = std::collections::HashSet::new();
        for (cid, bytes) in &self.blocks {
            if !old.contains(cid) && seen.insert(*cid) {
                ok &= car.write_block(cid, bytes).is_ok();
            }
        }
        if !ok {
            return Vec::new();
        }
        car.finish().unwrap_or_default()
    }
}
