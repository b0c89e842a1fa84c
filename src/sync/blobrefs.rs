//! The blobs verified records name (`blob_refs`): what each reference declares its type to be,
//! and the newest revision that wrote one. `serve` answers `getBlob` with that type and
//! `listBlobs?since=` from those revisions.
//!
//! Only records whose bytes hold DAG-CBOR's `"$type": "blob"` are decoded (a post without an
//! image, a like, a follow is passed over by one byte search), so a full ingest pays little.
//! A store made before `blob_refs` existed is filled from its records once, when it is
//! upgraded (`store::schema`).

use rusqlite::Transaction;

/// The longest type kept: a longer declared type is not kept (served as bytes).
const MAX_MIME: usize = 127;

/// The blobs a record's bytes name, with their declared types (none for most records).
pub(crate) fn named_in(record_bytes: &[u8]) -> Vec<(String, Option<String>)> {
    crate::repo::record::blobs_named_in(record_bytes)
}

/// A type fit to be sent as `Content-Type`: `type/subtype`, of token characters, short.
pub fn sane_mime(mime: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    mime.len() <= MAX_MIME
        && mime
            .split_once('/')
            .is_some_and(|(t, s)| token(t) && token(s))
}

/// Notes that a record written at `rev` names `refs`.
pub(crate) fn note(
    tx: &Transaction<'_>,
    repo_id: i64,
    rev: &str,
    refs: &[(String, Option<String>)],
) -> rusqlite::Result<()> {
    let mut put = tx.prepare_cached(
        "INSERT INTO blob_refs (repo_id, cid, mime, rev) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (repo_id, cid) DO UPDATE SET
           mime = coalesce(excluded.mime, blob_refs.mime),
           rev = max(blob_refs.rev, excluded.rev)",
    )?;
    for (cid, mime) in refs {
        let mime = mime.as_deref().filter(|m| sane_mime(m));
        put.execute(rusqlite::params![repo_id, cid, mime, rev])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_records_that_name_blobs_are_read() {
        let cid = crate::repo::cid_for(crate::repo::RAW, b"image").to_string();
        let with = serde_json::json!({
            "$type": "app.bsky.feed.post",
            "embed": {"images": [{"image": {"$type": "blob", "ref": {"$link": cid},
                "mimeType": "image/png", "size": 5}}]}
        });
        let bytes = serde_ipld_dagcbor::to_vec(&with).unwrap();
        assert_eq!(named_in(&bytes), vec![(cid, Some("image/png".to_string()))]);
        let without = serde_ipld_dagcbor::to_vec(&serde_json::json!({"text": "blob"})).unwrap();
        assert!(named_in(&without).is_empty());
        for good in ["image/png", "application/vnd.ipld.car", "text/plain"] {
            assert!(sane_mime(good), "{good}");
        }
        for bad in [
            "",
            "image",
            "image/",
            "text/html; charset=utf-8",
            "a/b\r\nX: y",
        ] {
            assert!(!sane_mime(bad), "{bad}");
        }
    }
}
