//! Invitation links: one line a circle's creator sends by any channel (chat, email, a QR code)
//! so that a member whose node knows nobody yet still finds the invitation.
//!
//! The format is `p2pds://invite?uri=<AT-URI, percent-encoded>&cid=<CID>`: one scheme,
//! `p2pds:`, so that an installed app can register it and open such links. A link names one
//! version of one circle exactly (the policy record's AT-URI and that version's CID) and
//! nothing secret: the policy is a public record, and anyone who may read the author's repo
//! can read it. A link is only a pointer: a node that opens it reads the policy from the
//! author's repo with a proof (`Circles::open_link`), so a forged link can at most point at
//! a record that does not say what the link claims, which is refused.
//!
//! This module is pure (no IO): formatting, parsing (strict: a link is made by a program, so
//! anything but exactly the two parameters is a damaged link) and the refusals in words.

use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::policy::records::nsid;
use crate::policy::validate::is_did;

/// The scheme the app registers.
pub const SCHEME: &str = "p2pds";
/// The host part of an invitation link (`p2pds://invite?…`).
const HOST: &str = "invite";
/// A link longer than this is not one `p2pds circle link` made (a DID is at most 2 KiB).
const MAX_LEN: usize = 4096;

/// One version of one circle, as a link names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvitationLink {
    /// The policy record: `at://<author DID>/org.p2pds.policy/<record key>`.
    pub uri: String,
    /// The version: the CID of the policy record's content.
    pub cid: String,
}

/// Why a link was refused, in words for the person who opened it. Each kind is distinct so
/// that a window can act on it (`kind`), never on the words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a P2PDS invitation link at all (another scheme, or plain text).
    #[error("this is not a P2PDS invitation link ({found}): an invitation link starts with p2pds://invite. Ask the person who invited you to send it again")]
    NotALink { found: String },
    /// A P2PDS link, but cut off, altered or with something added.
    #[error("this invitation link is damaged ({what}): copy the whole link again, or ask the person who invited you for a new one")]
    Damaged { what: String },
    /// The circle does not name the reader.
    #[error("this invitation is for someone else: the circle \u{201c}{name}\u{201d} by {author} does not include you ({me}). If it should, ask {author} to add you and send you a new link")]
    NotForYou {
        name: String,
        author: String,
        me: String,
    },
    /// The circle was changed after the link was made: the link names an older version.
    #[error("the circle \u{201c}{name}\u{201d} was changed by {author} after this link was made: ask {author} for a new link")]
    Changed { name: String, author: String },
    /// The author ended the circle.
    #[error("{author} ended the circle \u{201c}{name}\u{201d}: this invitation no longer counts, and there is nothing to accept")]
    Revoked { name: String, author: String },
    /// The policy record is no longer in the author's repo.
    #[error("the circle this link names is no longer in {author}'s account (it was deleted): ask {author} whether there is a new one")]
    Gone { author: String },
}

impl LinkError {
    /// A stable name for the kind of refusal (`p2pds invitations --link … --json`).
    pub fn kind(&self) -> &'static str {
        match self {
            LinkError::NotALink { .. } => "not-a-link",
            LinkError::Damaged { .. } => "damaged",
            LinkError::NotForYou { .. } => "not-for-you",
            LinkError::Changed { .. } => "changed",
            LinkError::Revoked { .. } => "revoked",
            LinkError::Gone { .. } => "gone",
        }
    }
}

fn damaged(what: &str) -> LinkError {
    LinkError::Damaged {
        what: what.to_string(),
    }
}

/// Whether `rkey` is a valid record key (1–512 of `A-Za-z0-9._:~-`, not `.` or `..`).
fn is_rkey(rkey: &str) -> bool {
    (1..=512).contains(&rkey.len())
        && rkey != "."
        && rkey != ".."
        && rkey
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '~' | '-'))
}

/// Checks that `uri` is a policy record's exact address: `at://<DID>/org.p2pds.policy/<rkey>`
/// (a DID, not a handle: a handle can be moved to another account).
fn check_uri(uri: &str) -> Result<(), LinkError> {
    let bad = || damaged("the circle's address is not complete");
    let rest = uri.strip_prefix("at://").ok_or_else(bad)?;
    let mut parts = rest.split('/');
    let (Some(did), Some(collection), Some(rkey), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !is_did(did) || collection != nsid::POLICY || !is_rkey(rkey) {
        return Err(bad());
    }
    Ok(())
}

/// Checks that `cid` is a record version's CID in its one canonical text form (CIDv1,
/// DAG-CBOR, base32): anything else was altered on the way.
fn check_cid(cid: &str) -> Result<(), LinkError> {
    let bad = || damaged("the circle's version is not readable");
    let parsed = cid::Cid::try_from(cid).map_err(|_| bad())?;
    if parsed.version() != cid::Version::V1 || parsed.codec() != 0x71 || parsed.to_string() != cid {
        return Err(bad());
    }
    Ok(())
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3 / 2);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits, or bytes that are not UTF-8,
/// make the link damaged.
fn decode(text: &str) -> Result<String, LinkError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| damaged("a character in it is cut off"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| damaged("a character in it is cut off"))
}

impl InvitationLink {
    /// A link to one version of a circle; refused unless both parts are exact.
    pub fn new(uri: &str, cid: &str) -> Result<Self, LinkError> {
        check_uri(uri)?;
        check_cid(cid)?;
        Ok(InvitationLink {
            uri: uri.to_string(),
            cid: cid.to_string(),
        })
    }

    /// Reads a link as pasted: surrounding spaces and angle brackets are ignored; anything else
    /// that is not exactly what [`fmt::Display`] writes is refused.
    pub fn parse(text: &str) -> Result<Self, LinkError> {
        let text = text.trim();
        let text = text
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .unwrap_or(text)
            .trim();
        if text.is_empty() {
            return Err(LinkError::NotALink {
                found: "nothing was pasted".into(),
            });
        }
        let Some((scheme, rest)) = text.split_once(':') else {
            return Err(LinkError::NotALink {
                found: "it is plain text".into(),
            });
        };
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            let shown: String = scheme.chars().take(20).collect();
            return Err(LinkError::NotALink {
                found: format!("it starts with {shown}:"),
            });
        }
        if text.len() > MAX_LEN {
            return Err(damaged("it is far too long"));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(damaged("something was added to it"));
        }
        let rest = rest
            .strip_prefix("//")
            .ok_or_else(|| damaged("its beginning is not p2pds://invite"))?;
        let (host, query) = rest
            .split_once('?')
            .ok_or_else(|| damaged("the circle's address and version are missing"))?;
        if !host.trim_end_matches('/').eq_ignore_ascii_case(HOST) {
            return Err(damaged("its beginning is not p2pds://invite"));
        }
        if query.contains('#') {
            return Err(damaged("something was added to it"));
        }
        let (mut uri, mut cid) = (None, None);
        for pair in query.split('&') {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| damaged("something was added to it"))?;
            let slot = match name {
                "uri" => &mut uri,
                "cid" => &mut cid,
                _ => return Err(damaged("something was added to it")),
            };
            if slot.replace(decode(value)?).is_some() {
                return Err(damaged("a part of it appears twice"));
            }
        }
        let uri = uri.ok_or_else(|| damaged("the circle's address is missing"))?;
        let cid = cid.ok_or_else(|| damaged("the circle's version is missing"))?;
        Self::new(&uri, &cid)
    }

    /// The circle's author (the DID the record's address starts with).
    pub fn author(&self) -> &str {
        self.parts().0
    }

    /// The policy's record key.
    pub fn rkey(&self) -> &str {
        self.parts().1
    }

    fn parts(&self) -> (&str, &str) {
        let rest = self.uri.strip_prefix("at://").unwrap_or(&self.uri);
        let author = rest.split('/').next().unwrap_or_default();
        let rkey = rest.rsplit('/').next().unwrap_or_default();
        (author, rkey)
    }
}

impl fmt::Display for InvitationLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}://{HOST}?uri={}&cid={}",
            encode(&self.uri),
            encode(&self.cid)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    const URI: &str = "at://did:plc:abcdefghijklmnopqrstuvwx/org.p2pds.policy/3lbxyz2kq4s2a";
    const CID: &str = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm";

    fn link() -> InvitationLink {
        InvitationLink::new(URI, CID).unwrap()
    }

    #[test]
    fn a_link_reads_back_as_the_same_version() {
        let text = link().to_string();
        assert_eq!(
            text,
            "p2pds://invite?uri=at%3A%2F%2Fdid%3Aplc%3Aabcdefghijklmnopqrstuvwx%2Forg.p2pds.policy%2F3lbxyz2kq4s2a&cid=bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
        );
        let back = InvitationLink::parse(&text).unwrap();
        assert_eq!(back, link());
        assert_eq!(back.author(), "did:plc:abcdefghijklmnopqrstuvwx");
        assert_eq!(back.rkey(), "3lbxyz2kq4s2a");
        // Pasted with spaces or in angle brackets, or with its parts in the other order.
        assert_eq!(InvitationLink::parse(&format!("  <{text}>\n")), Ok(link()));
        let swapped = format!("p2pds://invite?cid={CID}&uri={}", encode(URI));
        assert_eq!(InvitationLink::parse(&swapped), Ok(link()));
        assert_eq!(
            InvitationLink::parse(&text.replace("p2pds://invite", "P2PDS://Invite")),
            Ok(link())
        );
        // Nothing but the address and the version: no secret travels in a link.
        let json = serde_json::to_value(link()).unwrap();
        assert_eq!(json, serde_json::json!({"uri": URI, "cid": CID}));
    }

    #[rstest]
    #[case::https("https://bsky.app/profile/alice.test")]
    #[case::at_uri(URI)]
    #[case::plain_words("please join my circle")]
    #[case::empty("   ")]
    #[case::mailto("mailto:alice@example.com")]
    fn a_foreign_link_is_not_an_invitation(#[case] text: &str) {
        let e = InvitationLink::parse(text).unwrap_err();
        assert!(matches!(e, LinkError::NotALink { .. }), "{e:?}");
        assert_eq!(e.kind(), "not-a-link");
        assert!(e.to_string().contains("not a P2PDS invitation link"), "{e}");
    }

    fn damaged_text(f: impl Fn(&str) -> String) -> LinkError {
        InvitationLink::parse(&f(&link().to_string())).unwrap_err()
    }

    #[rstest]
    #[case::cut_off(|t: &str| t[..t.len() - 10].to_string())]
    #[case::cid_missing(|t: &str| t.split("&cid=").next().unwrap().to_string())]
    #[case::uri_missing(|_: &str| format!("p2pds://invite?cid={CID}"))]
    #[case::no_query(|_: &str| "p2pds://invite".to_string())]
    #[case::other_host(|t: &str| t.replace("//invite", "//join"))]
    #[case::no_slashes(|t: &str| t.replace("p2pds://", "p2pds:"))]
    #[case::half_escape(|t: &str| t.replace("%2F%2F", "%2"))]
    #[case::junk_after(|t: &str| format!("{t} see you there"))]
    #[case::junk_param(|t: &str| format!("{t}&token=secret"))]
    #[case::fragment(|t: &str| format!("{t}#x"))]
    #[case::doubled(|t: &str| format!("{t}&cid={CID}"))]
    #[case::bare_word(|t: &str| format!("{t}&x"))]
    #[case::not_utf8(|t: &str| t.replace("%3A", "%FF"))]
    #[case::far_too_long(|t: &str| format!("{t}{}", "a".repeat(5000)))]
    fn a_damaged_link_is_refused_in_words(#[case] f: fn(&str) -> String) {
        let e = damaged_text(f);
        assert!(matches!(e, LinkError::Damaged { .. }), "{e:?}");
        assert_eq!(e.kind(), "damaged");
        let words = e.to_string();
        assert!(
            words.contains("damaged") && words.contains("copy the whole link again"),
            "{words}"
        );
    }

    #[rstest]
    #[case::cid_v0("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG")]
    #[case::raw_codec("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")]
    #[case::not_base32("zdpuAyvkgEDQm9TenwGkd5eNaosSxjgEYd8QatfPetgB1CdEZ")]
    #[case::upper_case("BAFYREIE5737GDXLW5I64VZICHCALBA3Z2V5N6ICIFVX5XYTVSKE7MR3HPM")]
    #[case::altered("bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hp")]
    #[case::garbage("not-a-cid")]
    fn a_bad_cid_is_a_damaged_link(#[case] cid: &str) {
        let text = format!("p2pds://invite?uri={}&cid={}", encode(URI), encode(cid));
        let e = InvitationLink::parse(&text).unwrap_err();
        assert_eq!(e, damaged("the circle's version is not readable"));
        assert!(InvitationLink::new(URI, cid).is_err());
    }

    #[rstest]
    #[case::handle("at://alice.test/org.p2pds.policy/3lbxyz2kq4s2a")]
    #[case::other_collection("at://did:plc:abc/app.bsky.feed.post/3lbxyz2kq4s2a")]
    #[case::no_rkey("at://did:plc:abc/org.p2pds.policy/")]
    #[case::no_collection("at://did:plc:abc")]
    #[case::extra_segment("at://did:plc:abc/org.p2pds.policy/3k/more")]
    #[case::bad_rkey("at://did:plc:abc/org.p2pds.policy/..")]
    #[case::rkey_space("at://did:plc:abc/org.p2pds.policy/a b")]
    #[case::https("https://did:plc:abc/org.p2pds.policy/3k")]
    #[case::bad_did("at://did:PLC:abc/org.p2pds.policy/3k")]
    fn a_bad_at_uri_is_a_damaged_link(#[case] uri: &str) {
        let text = format!("p2pds://invite?uri={}&cid={CID}", encode(uri));
        let e = InvitationLink::parse(&text).unwrap_err();
        assert_eq!(e, damaged("the circle's address is not complete"));
    }

    #[test]
    fn refusals_say_what_to_do() {
        let cases = [
            LinkError::NotForYou {
                name: "Kitchen".into(),
                author: "alice.test".into(),
                me: "dan.test".into(),
            },
            LinkError::Changed {
                name: "Kitchen".into(),
                author: "alice.test".into(),
            },
            LinkError::Revoked {
                name: "Kitchen".into(),
                author: "alice.test".into(),
            },
            LinkError::Gone {
                author: "alice.test".into(),
            },
        ];
        let kinds: Vec<&str> = cases.iter().map(LinkError::kind).collect();
        assert_eq!(kinds, ["not-for-you", "changed", "revoked", "gone"]);
        for e in &cases {
            let words = e.to_string();
            assert!(words.contains("alice.test"), "{words}");
            assert!(
                !words.contains("did:") && !words.contains("bafy"),
                "{words}"
            );
        }
        assert!(cases[0].to_string().contains("for someone else"));
        assert!(cases[1]
            .to_string()
            .contains("ask alice.test for a new link"));
        assert!(cases[2].to_string().contains("ended the circle"));
    }

    proptest! {
        #[test]
        fn any_valid_link_round_trips(
            method in "[a-z]{1,8}",
            id in "[a-zA-Z0-9._:-]{0,40}[a-zA-Z0-9]",
            rkey in "[a-zA-Z0-9_~:-][a-zA-Z0-9._~:-]{0,60}",
            digest in proptest::array::uniform32(any::<u8>()),
        ) {
            let uri = format!("at://did:{method}:{id}/org.p2pds.policy/{rkey}");
            let mh = multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
            let cid = cid::Cid::new_v1(0x71, mh).to_string();
            let l = InvitationLink::new(&uri, &cid).unwrap();
            let text = l.to_string();
            prop_assert!(!text.chars().any(char::is_whitespace));
            prop_assert_eq!(InvitationLink::parse(&text), Ok(l));
        }

        #[test]
        fn no_text_makes_the_parser_panic(text in ".{0,300}") {
            let _ = InvitationLink::parse(&text);
            let _ = InvitationLink::parse(&format!("p2pds://invite?{text}"));
        }
    }
}
