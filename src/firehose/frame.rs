//! One frame of `com.atproto.sync.subscribeRepos`: a binary WebSocket message holding two
//! DAG-CBOR values back to back, a header `{op, t}` then a body.
//!
//! `op` 1 is a message whose type `t` names the body (`#commit`, `#sync`, `#identity`,
//! `#account`, `#info`); `op` -1 is an error frame `{error, message}` after which the server
//! closes the stream. A type this build does not know decodes to [`Event::Unknown`] and is
//! ignored by the caller, as the event-stream rules ask. Everything else that does not read
//! (a cut frame, garbage, a field of the wrong type) is a [`FrameError`] in words.
//!
//! Sizes are capped before anything is believed: the whole frame ([`MAX_FRAME_BYTES`]), the
//! blocks of a commit ([`MAX_BLOCKS_BYTES`], the lexicon's limit) and its operations
//! ([`MAX_OPS`]). Nothing here checks a signature or a hash: that is [`super::verify`].

use cid::Cid;
use serde::{Deserialize, Serialize};

use crate::repo::cbor_words;

/// The largest frame read: a commit's blocks (2 MiB) and 200 operations fit well inside.
pub const MAX_FRAME_BYTES: usize = 5 * 1024 * 1024;
/// The largest `blocks` of a `#commit` (the lexicon caps it at 2,000,000 bytes; a little
/// slack is left for servers that count in MiB).
pub const MAX_BLOCKS_BYTES: usize = 2 * 1024 * 1024;
/// The largest `blocks` of a `#sync` event: it carries one commit block (the lexicon's
/// limit is 10,000 bytes).
pub const MAX_SYNC_BLOCKS_BYTES: usize = 10_000;
/// The most operations one `#commit` may list (the lexicon's limit).
pub const MAX_OPS: usize = 200;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("the event is {0} bytes long, over the limit of {MAX_FRAME_BYTES} bytes")]
    TooLarge(usize),
    #[error("the event is empty")]
    Empty,
    #[error("the event's header could not be read: {0}")]
    Header(String),
    #[error("the event's header has op {0}, which is neither a message (1) nor an error (-1)")]
    UnknownOp(i64),
    #[error("the event's header has op 1 (a message) but no type")]
    NoType,
    #[error("the {kind} event could not be read: {words}")]
    Body { kind: String, words: String },
    #[error("the {kind} event carries {size} bytes of blocks, over the limit of {limit} bytes")]
    BlocksTooLarge {
        kind: String,
        size: usize,
        limit: usize,
    },
    #[error("the commit event lists {0} operations, over the limit of {MAX_OPS}")]
    TooManyOps(usize),
}

/// What a record operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// One record operation of a commit: `cid` is the new record (none for a delete), `prev` the
/// record it replaces (sync 1.1: present for updates and deletes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoOp {
    pub action: Action,
    pub path: String,
    pub cid: Option<Cid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<Cid>,
}

/// `#commit`: a new signed commit of one repo, with the blocks that changed. The deprecated
/// `tooBig` and `rebase` fields are not read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitEvent {
    pub seq: i64,
    pub repo: String,
    pub commit: Cid,
    pub rev: String,
    /// The rev of the repo's previous commit, if any.
    pub since: Option<String>,
    /// A CAR of the changed blocks, rooted at the commit.
    #[serde(with = "serde_bytes")]
    pub blocks: Vec<u8>,
    pub ops: Vec<RepoOp>,
    /// Deprecated by sync 1.1 (the records name their blobs); read when present.
    #[serde(default)]
    pub blobs: Vec<Cid>,
    /// The tree root (data CID) of the previous commit: how the event chains (sync 1.1).
    #[serde(rename = "prevData", default, skip_serializing_if = "Option::is_none")]
    pub prev_data: Option<Cid>,
    pub time: String,
}

/// `#sync`: the repo's current commit, to reset to (after a break in the chain).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncEvent {
    pub seq: i64,
    pub did: String,
    /// A CAR holding the commit block.
    #[serde(with = "serde_bytes")]
    pub blocks: Vec<u8>,
    pub rev: String,
    pub time: String,
}

/// `#identity`: the account's DID document or handle may have changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityEvent {
    pub seq: i64,
    pub did: String,
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
}

/// `#account`: the account's hosting status changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEvent {
    pub seq: i64,
    pub did: String,
    pub time: String,
    pub active: bool,
    /// Why it is not active (`takendown`, `suspended`, `deleted`, `deactivated`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// `#info`: a word from the server about the stream (`OutdatedCursor`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoEvent {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An error frame (op -1): the server ends the stream with this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One decoded frame. (A commit is larger than the other kinds; events are handled one at a
/// time, not kept in bulk, so it is not boxed.)
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    Commit(CommitEvent),
    Sync(SyncEvent),
    Identity(IdentityEvent),
    Account(AccountEvent),
    Info(InfoEvent),
    Error(ErrorFrame),
    /// A message type this build does not know: to be ignored, not an error.
    Unknown(String),
}

impl Event {
    /// The stream position of a repo event (commit, sync, identity, account).
    pub fn seq(&self) -> Option<i64> {
        match self {
            Self::Commit(e) => Some(e.seq),
            Self::Sync(e) => Some(e.seq),
            Self::Identity(e) => Some(e.seq),
            Self::Account(e) => Some(e.seq),
            Self::Info(_) | Self::Error(_) | Self::Unknown(_) => None,
        }
    }

    /// The account a repo event is about.
    pub fn did(&self) -> Option<&str> {
        match self {
            Self::Commit(e) => Some(&e.repo),
            Self::Sync(e) => Some(&e.did),
            Self::Identity(e) => Some(&e.did),
            Self::Account(e) => Some(&e.did),
            Self::Info(_) | Self::Error(_) | Self::Unknown(_) => None,
        }
    }
}

#[derive(Deserialize, Serialize)]
struct Header {
    op: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<String>,
}

/// Decodes one frame.
pub fn decode(frame: &[u8]) -> Result<Event, FrameError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(frame.len()));
    }
    if frame.is_empty() {
        return Err(FrameError::Empty);
    }
    let mut cursor = std::io::Cursor::new(frame);
    let header: Header = serde_ipld_dagcbor::de::from_reader_once(&mut cursor)
        .map_err(|e| FrameError::Header(cbor_words(&e)))?;
    let body = frame.get(cursor.position() as usize..).unwrap_or_default();
    match header.op {
        1 => {}
        -1 => return body_of::<ErrorFrame>("error", body).map(Event::Error),
        op => return Err(FrameError::UnknownOp(op)),
    }
    let t = header.t.ok_or(FrameError::NoType)?;
    let event = match t.as_str() {
        "#commit" => {
            let event: CommitEvent = body_of(&t, body)?;
            check_blocks(&t, event.blocks.len(), MAX_BLOCKS_BYTES)?;
            if event.ops.len() > MAX_OPS {
                return Err(FrameError::TooManyOps(event.ops.len()));
            }
            Event::Commit(event)
        }
        "#sync" => {
            let event: SyncEvent = body_of(&t, body)?;
            check_blocks(&t, event.blocks.len(), MAX_SYNC_BLOCKS_BYTES)?;
            Event::Sync(event)
        }
        "#identity" => Event::Identity(body_of(&t, body)?),
        "#account" => Event::Account(body_of(&t, body)?),
        "#info" => Event::Info(body_of(&t, body)?),
        _ => Event::Unknown(t),
    };
    Ok(event)
}

fn body_of<T: serde::de::DeserializeOwned>(kind: &str, body: &[u8]) -> Result<T, FrameError> {
    serde_ipld_dagcbor::from_slice(body).map_err(|e| FrameError::Body {
        kind: kind.trim_start_matches('#').to_string(),
        words: cbor_words(&e),
    })
}

fn check_blocks(kind: &str, size: usize, limit: usize) -> Result<(), FrameError> {
    if size > limit {
        return Err(FrameError::BlocksTooLarge {
            kind: kind.trim_start_matches('#').to_string(),
            size,
            limit,
        });
    }
    Ok(())
}

/// Encodes an event as a server sends it: for the tests' and the benchmark's streams (a
/// node never sends events). An unknown type gets an empty body.
pub fn encode(event: &Event) -> Vec<u8> {
    fn message<T: Serialize>(t: &str, body: &T) -> Vec<u8> {
        let header = Header {
            op: 1,
            t: Some(t.to_string()),
        };
        let mut out = serde_ipld_dagcbor::to_vec(&header).unwrap_or_default();
        out.extend(serde_ipld_dagcbor::to_vec(body).unwrap_or_default());
        out
    }
    match event {
        Event::Commit(e) => message("#commit", e),
        Event::Sync(e) => message("#sync", e),
        Event::Identity(e) => message("#identity", e),
        Event::Account(e) => message("#account", e),
        Event::Info(e) => message("#info", e),
        Event::Unknown(t) => message(t, &std::collections::BTreeMap::<String, i64>::new()),
        Event::Error(e) => {
            let mut out =
                serde_ipld_dagcbor::to_vec(&Header { op: -1, t: None }).unwrap_or_default();
            out.extend(serde_ipld_dagcbor::to_vec(e).unwrap_or_default());
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::cid_for_cbor;

    fn commit() -> CommitEvent {
        let cid = cid_for_cbor(b"\xa0");
        CommitEvent {
            seq: 7,
            repo: "did:plc:abc".into(),
            commit: cid,
            rev: "3l3qo2vuowo2b".into(),
            since: None,
            blocks: vec![1, 2, 3],
            ops: vec![
                RepoOp {
                    action: Action::Create,
                    path: "app.bsky.feed.post/1".into(),
                    cid: Some(cid),
                    prev: None,
                },
                RepoOp {
                    action: Action::Delete,
                    path: "app.bsky.feed.post/2".into(),
                    cid: None,
                    prev: Some(cid),
                },
            ],
            blobs: vec![],
            prev_data: Some(cid),
            time: "2024-05-01T12:00:00.000Z".into(),
        }
    }

    #[test]
    fn every_kind_of_event_round_trips() {
        let events = [
            Event::Commit(commit()),
            Event::Sync(SyncEvent {
                seq: 8,
                did: "did:plc:abc".into(),
                blocks: vec![9; 40],
                rev: "3l3qo2vuowo2b".into(),
                time: "2024-05-01T12:00:00.000Z".into(),
            }),
            Event::Identity(IdentityEvent {
                seq: 9,
                did: "did:plc:abc".into(),
                time: "2024-05-01T12:00:00.000Z".into(),
                handle: Some("alice.test".into()),
            }),
            Event::Account(AccountEvent {
                seq: 10,
                did: "did:plc:abc".into(),
                time: "2024-05-01T12:00:00.000Z".into(),
                active: false,
                status: Some("takendown".into()),
            }),
            Event::Info(InfoEvent {
                name: "OutdatedCursor".into(),
                message: None,
            }),
            Event::Error(ErrorFrame {
                error: "FutureCursor".into(),
                message: Some("cursor in the future".into()),
            }),
        ];
        for event in events {
            assert_eq!(decode(&encode(&event)).unwrap(), event);
        }
        assert_eq!(Event::Commit(commit()).seq(), Some(7));
        assert_eq!(Event::Commit(commit()).did(), Some("did:plc:abc"));
    }

    #[test]
    fn the_wire_names_are_the_lexicons() {
        // `prevData` in camel case, a delete's `cid` present as null, `prev` left out of a create.
        let bytes = serde_ipld_dagcbor::to_vec(&commit()).unwrap();
        let value: ipld_core::ipld::Ipld = serde_ipld_dagcbor::from_slice(&bytes).unwrap();
        let ipld_core::ipld::Ipld::Map(map) = value else {
            panic!("not a map")
        };
        assert!(map.contains_key("prevData"));
        let Some(ipld_core::ipld::Ipld::List(ops)) = map.get("ops") else {
            panic!("no ops")
        };
        let ipld_core::ipld::Ipld::Map(create) = &ops[0] else {
            panic!()
        };
        assert!(!create.contains_key("prev"));
        let ipld_core::ipld::Ipld::Map(delete) = &ops[1] else {
            panic!()
        };
        assert_eq!(delete.get("cid"), Some(&ipld_core::ipld::Ipld::Null));
    }

    #[test]
    fn an_unknown_type_is_ignored_not_refused() {
        let frame = encode(&Event::Unknown("#labels".into()));
        assert_eq!(decode(&frame).unwrap(), Event::Unknown("#labels".into()));
    }

    #[test]
    fn deprecated_fields_are_not_read() {
        let mut value: std::collections::BTreeMap<String, ipld_core::ipld::Ipld> =
            serde_ipld_dagcbor::from_slice(&serde_ipld_dagcbor::to_vec(&commit()).unwrap())
                .unwrap();
        value.insert("tooBig".into(), ipld_core::ipld::Ipld::Bool(false));
        value.insert("rebase".into(), ipld_core::ipld::Ipld::Bool(false));
        let mut frame = serde_ipld_dagcbor::to_vec(&Header {
            op: 1,
            t: Some("#commit".into()),
        })
        .unwrap();
        frame.extend(serde_ipld_dagcbor::to_vec(&value).unwrap());
        assert_eq!(decode(&frame).unwrap(), Event::Commit(commit()));
    }

    #[test]
    fn every_truncation_is_an_error_in_words() {
        let frame = encode(&Event::Commit(commit()));
        for cut in 0..frame.len() {
            let err = decode(&frame[..cut]).unwrap_err();
            let words = err.to_string();
            assert!(
                !words.contains('{') && !words.contains("Eof"),
                "cut {cut}: {words}"
            );
        }
    }

    #[test]
    fn garbage_and_bad_headers_are_refused() {
        assert!(matches!(
            decode(b"\xff\xfe\x00garbage"),
            Err(FrameError::Header(_))
        ));
        let op2 = serde_ipld_dagcbor::to_vec(&Header { op: 2, t: None }).unwrap();
        assert_eq!(decode(&op2), Err(FrameError::UnknownOp(2)));
        let untyped = serde_ipld_dagcbor::to_vec(&Header { op: 1, t: None }).unwrap();
        assert_eq!(decode(&untyped), Err(FrameError::NoType));
        // A body with a field of the wrong type names the kind of event.
        let mut frame = serde_ipld_dagcbor::to_vec(&Header {
            op: 1,
            t: Some("#account".into()),
        })
        .unwrap();
        frame.extend(
            serde_ipld_dagcbor::to_vec(&serde_json::json!({
                "seq": 1, "did": "did:plc:abc", "time": "t", "active": "yes"
            }))
            .unwrap(),
        );
        let err = decode(&frame).unwrap_err();
        assert!(
            matches!(&err, FrameError::Body { kind, .. } if kind == "account"),
            "{err}"
        );
        // Extra bytes after the body are not a valid frame either.
        let mut long = encode(&Event::Commit(commit()));
        long.push(0);
        assert!(matches!(decode(&long), Err(FrameError::Body { .. })));
    }

    #[test]
    fn oversized_frames_blocks_and_op_lists_are_refused() {
        let huge = vec![0u8; MAX_FRAME_BYTES + 1];
        assert_eq!(
            decode(&huge),
            Err(FrameError::TooLarge(MAX_FRAME_BYTES + 1))
        );
        let mut big = commit();
        big.blocks = vec![0; MAX_BLOCKS_BYTES + 1];
        assert!(matches!(
            decode(&encode(&Event::Commit(big))),
            Err(FrameError::BlocksTooLarge { size, .. }) if size == MAX_BLOCKS_BYTES + 1
        ));
        let mut many = commit();
        many.ops = vec![many.ops[0].clone(); MAX_OPS + 1];
        assert_eq!(
            decode(&encode(&Event::Commit(many))),
            Err(FrameError::TooManyOps(MAX_OPS + 1))
        );
        let big_sync = SyncEvent {
            seq: 1,
            did: "did:plc:abc".into(),
            blocks: vec![0; MAX_SYNC_BLOCKS_BYTES + 1],
            rev: "3l3qo2vuowo2b".into(),
            time: "t".into(),
        };
        assert!(matches!(
            decode(&encode(&Event::Sync(big_sync))),
            Err(FrameError::BlocksTooLarge { .. })
        ));
    }
}
