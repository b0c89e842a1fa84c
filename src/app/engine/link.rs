//! Invitation links in the app: "Copy invitation link" and "Show as QR code" on a circle
//! ([`Engine::invitation_link`], [`Engine::invitation_qr`]), and "I have an invitation link"
//! ([`Engine::open_invitation_link`], also what opening a `p2pds:` link leads to). The link
//! itself and its checks are `group::link` and `Circles::open_link`; each refusal reaches the
//! window with its own [`ErrorCode`] (`link-damaged`, `link-not-for-you`, `link-outdated`,
//! `link-revoked`, `link-gone`) and its words. A circle that could not be read at all (the
//! author's account unreachable, its identity or its answer unusable, the circle not valid) is
//! said in a sentence about the author's account, never in the raw error's text
//! (`open_failure`): `network` when it could not be reached, `link-damaged` when the link
//! names something no link can, `other` otherwise.
//!
//! The QR code is an SVG string made here from the code's modules: one white square and one
//! black `<path>`, coloured with `fill` presentation attributes only (no `style` attribute or
//! element), so the window can show it under its `style-src 'self'` policy by inserting the
//! markup; it scales with its `viewBox` (a quiet zone of four modules included).

use std::fmt::Write as _;

use crate::group::link::{InvitationLink, LinkError};
use crate::group::{Circles, GroupError};
use crate::identity::{self, IdentityError};
use crate::session::{self, SessionError};
use crate::sync::{FailureKind, SyncError};

use super::{AppError, Engine};
use crate::app::dto::*;

/// Light modules around the code, as the QR standard asks.
const QUIET: usize = 4;

/// The window's code for a refused link.
pub(super) fn code(e: &LinkError) -> ErrorCode {
    match e {
        LinkError::NotALink { .. } | LinkError::Damaged { .. } => ErrorCode::LinkDamaged,
        LinkError::NotForYou { .. } => ErrorCode::LinkNotForYou,
        LinkError::Changed { .. } => ErrorCode::LinkOutdated,
        LinkError::Revoked { .. } => ErrorCode::LinkRevoked,
        LinkError::Gone { .. } => ErrorCode::LinkGone,
    }
}

fn refused(e: LinkError) -> AppError {
    AppError::Group(e.into())
}

/// The author's account in a sentence: "alice.test's account", or "account abcdef…" when
/// no handle is known.
fn account_of(handle: Option<&str>, did: &str) -> String {
    match handle {
        Some(h) => format!("{h}'s account"),
        None => identity::short_name(did),
    }
}

/// A link that names something no link made by the app can: damaged.
fn damaged(what: &str) -> AppError {
    refused(LinkError::Damaged {
        what: what.to_string(),
    })
}

/// Why opening a link whose circle is in `author`'s account (known as `handle`) failed, in
/// words and with its code: the refusals keep theirs; a circle that could not be read is said
/// in a sentence about the author's account (the raw error goes to the log).
pub(super) fn open_failure(e: GroupError, author: &str, handle: Option<&str>) -> AppError {
    let account = account_of(handle, author);
    let unreachable = || {
        AppError::Network(format!(
            "Couldn't read the circle from {account} right now; check your connection and try again later."
        ))
    };
    let identity_unusable = || {
        AppError::Other(format!(
            "Couldn't read the circle: {account} doesn't say where its data is kept or how to check it. Try again later, or ask the person who invited you."
        ))
    };
    let unchecked = || {
        AppError::Other(format!(
            "The circle read from {account} didn't pass its checks, so it was not used. Try again later, or ask the person who invited you for a new link."
        ))
    };
    let other = || {
        AppError::Other(format!(
            "Couldn't open the invitation from {account}; try again later."
        ))
    };
    let identity = |e: &IdentityError| match e {
        IdentityError::UnsupportedDid(_) => {
            damaged("it names an account of a kind this app can't read")
        }
        e if e.is_retryable() => unreachable(),
        _ => identity_unusable(),
    };
    if !matches!(e, GroupError::Link(_)) {
        tracing::warn!(error = %e, author, "an invitation link's circle could not be read");
    }
    match e {
        GroupError::Link(e) => refused(e),
        GroupError::Session(e) => AppError::Session(e),
        GroupError::Store(e) | GroupError::Sync(SyncError::Store(e)) => AppError::Store(e),
        GroupError::BadUri(_) => damaged("the circle's address is not complete"),
        GroupError::InvalidPolicy(_) => AppError::Other(format!(
            "The circle in {account} isn't one this app can read: it may have been made by a newer version of the app. Check for an update, or ask the person who invited you."
        )),
        GroupError::Identity(e) | GroupError::Sync(SyncError::Identity(e)) => identity(&e),
        GroupError::Sync(e) => match e.kind() {
            FailureKind::Unreachable => unreachable(),
            FailureKind::Gone => AppError::Other(format!(
                "Couldn't read the circle: {account} is closed or paused on its server, so this invitation can't be opened."
            )),
            FailureKind::Refused => AppError::Other(format!(
                "Couldn't read the circle: the server of {account} refused to give it. Try again later, or ask the person who invited you for a new link."
            )),
            FailureKind::BadData => unchecked(),
            FailureKind::Identity => identity_unusable(),
            _ => other(),
        },
        GroupError::Read { .. } => identity_unusable(),
        _ => other(),
    }
}

/// `text` as a QR code in SVG (see the module's header).
fn qr_svg(text: &str) -> Result<String, AppError> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| AppError::Other(format!("this link can't be shown as a QR code ({e})")))?;
    let width = code.width();
    let size = width + 2 * QUIET;
    let mut path = String::new();
    for (y, row) in code.to_colors().chunks(width.max(1)).enumerate() {
        let mut x = 0;
        while x < row.len() {
            if row.get(x) != Some(&qrcode::Color::Dark) {
                x += 1;
                continue;
            }
            let run = row
                .iter()
                .skip(x)
                .take_while(|c| **c == qrcode::Color::Dark)
                .count();
            let _ = write!(path, "M{} {}h{run}v1h-{run}z", x + QUIET, y + QUIET);
            x += run;
        }
    }
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" \
         shape-rendering=\"crispEdges\" role=\"img\" aria-label=\"Invitation link as a QR code\">\
         <rect width=\"{size}\" height=\"{size}\" fill=\"#ffffff\"/>\
         <path fill=\"#000000\" d=\"{path}\"/></svg>"
    ))
}

/// Why opening `link` failed, in the words the window shows (also what
/// `p2pds invitations --link` prints): a refusal as itself, a circle that could not be read in
/// a sentence about its author's account (named by a handle this node already knows).
pub async fn failure_in_words(circles: &Circles, link: &InvitationLink, e: GroupError) -> AppError {
    let author = link.author();
    let handle = circles.known_handle(author).await;
    open_failure(e, author, handle.as_deref())
}

impl Engine {
    /// The invitation link of a circle (its newest version): one line to send by any channel.
    pub async fn invitation_link(&self, circle_uri: &str) -> Result<String, AppError> {
        Ok(self
            .circles()
            .invitation_link(circle_uri)
            .await?
            .to_string())
    }

    /// An invitation link as a QR code: an SVG string with no style attribute (see the
    /// module's header). A damaged link is refused like [`Engine::open_invitation_link`] does.
    pub fn invitation_qr(&self, link: &str) -> Result<String, AppError> {
        let link = InvitationLink::parse(link).map_err(refused)?;
        qr_svg(&link.to_string())
    }

    /// Opens an invitation link: the circle is read from its author's account with a proof
    /// and checked (it includes this account, it was not ended, it is the version the link
    /// names), then it shows among the overview's invitations, to accept or decline as any
    /// other. Refused in words, with a code per kind of refusal.
    pub async fn open_invitation_link(&self, link: &str) -> Result<Overview, AppError> {
        let parsed = InvitationLink::parse(link).map_err(refused)?;
        let _work = self.guard().await?;
        if self.store().read(session::signed_in).await?.is_none() {
            return Err(AppError::Session(SessionError::NotSignedIn));
        }
        let circles = self.circles();
        if let Err(e) = circles.open_link(link).await {
            return Err(failure_in_words(circles, &parsed, e).await);
        }
        self.inner.node.refresh_circles(false).await;
        self.changed();
        self.overview().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str = "at://did:plc:abcdefghijklmnopqrstuvwx/org.p2pds.policy/3lbxyz2kq4s2a";
    const CID: &str = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm";

    fn link() -> String {
        InvitationLink::new(URI, CID).unwrap().to_string()
    }

    /// The modules the SVG paints dark, by (x, y), quiet zone included.
    fn dark(svg: &str) -> std::collections::BTreeSet<(usize, usize)> {
        let d = svg
            .split(" d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let mut out = std::collections::BTreeSet::new();
        for part in d.split('M').filter(|p| !p.is_empty()) {
            let (xy, rest) = part.split_once('h').unwrap();
            let (x, y) = xy.split_once(' ').unwrap();
            let run: usize = rest.split('v').next().unwrap().parse().unwrap();
            let (x, y): (usize, usize) = (x.parse().unwrap(), y.parse().unwrap());
            out.extend((x..x + run).map(|x| (x, y)));
        }
        out
    }

    #[test]
    fn the_qr_code_is_an_svg_without_styles_with_its_finder_patterns() {
        let svg = qr_svg(&link()).unwrap();
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(!svg.contains("style"), "{svg}");
        let code = qrcode::QrCode::new(link().as_bytes()).unwrap();
        let w = code.width();
        let size = w + 2 * QUIET;
        assert!(svg.contains(&format!("viewBox=\"0 0 {size} {size}\"")));
        // Every dark module of the code, and nothing else, is painted.
        let want: std::collections::BTreeSet<(usize, usize)> = code
            .to_colors()
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == qrcode::Color::Dark)
            .map(|(i, _)| (i % w + QUIET, i / w + QUIET))
            .collect();
        assert_eq!(dark(&svg), want);
        // The three finder patterns' outer rings (top left, top right, bottom left).
        for (ox, oy) in [(0, 0), (w - 7, 0), (0, w - 7)] {
            for i in 0..7 {
                for (x, y) in [
                    (ox + i, oy),
                    (ox + i, oy + 6),
                    (ox, oy + i),
                    (ox + 6, oy + i),
                ] {
                    assert!(want.contains(&(x + QUIET, y + QUIET)), "({x}, {y})");
                }
            }
        }
    }

    #[tokio::test]
    async fn a_damaged_link_is_refused_with_its_code_before_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let e = super::super::tests::open(dir.path());
        for bad in [
            "https://example.com/join",
            &link()[..40],
            &format!("{} thanks", link()),
        ] {
            let out = e.open_invitation_link(bad).await.unwrap_err().answer();
            assert_eq!(out.code, ErrorCode::LinkDamaged, "{bad}: {}", out.message);
            assert!(
                out.message.contains("invitation link"),
                "{bad}: {}",
                out.message
            );
            let qr = e.invitation_qr(bad).unwrap_err().answer();
            assert_eq!(qr.code, ErrorCode::LinkDamaged);
        }
        // A good link, not signed in: sign in first.
        let out = e.open_invitation_link(&link()).await.unwrap_err().answer();
        assert_eq!(out.code, ErrorCode::NotSignedIn, "{}", out.message);
        assert!(e.invitation_qr(&link()).unwrap().contains("<path"));
    }

    const AUTHOR: &str = "did:plc:abcdefghijklmnopqrstuvwx";

    fn sync_http(status: u16, error: &str) -> GroupError {
        GroupError::Sync(SyncError::Http {
            url: "https://pds.example.com/xrpc/com.atproto.sync.getRecord".into(),
            status,
            error: error.into(),
            body: "{\"error\":\"x\"}".into(),
        })
    }

    fn fetch() -> IdentityError {
        IdentityError::Fetch {
            did: AUTHOR.into(),
            reason: "error sending request for url (https://plc.directory/did:plc:…)".into(),
        }
    }

    #[rstest::rstest]
    #[case::offline(
        GroupError::Sync(SyncError::Network {
            url: "https://pds.example.com/xrpc/com.atproto.sync.getRecord".into(),
            reason: "dns error".into(),
        }),
        ErrorCode::Network,
        "Couldn't read the circle from alice.test's account right now"
    )]
    #[case::server_failing(sync_http(502, ""), ErrorCode::Network, "right now")]
    #[case::no_identity_document(GroupError::Identity(fetch()), ErrorCode::Network, "right now")]
    #[case::no_identity_document_in_sync(
        GroupError::Sync(SyncError::Identity(fetch())),
        ErrorCode::Network,
        "right now"
    )]
    #[case::bad_identity_document(
        GroupError::Identity(IdentityError::BadDocument {
            did: AUTHOR.into(),
            reason: "its id does not match the DID".into(),
        }),
        ErrorCode::Other,
        "alice.test's account doesn't say where its data is kept"
    )]
    #[case::no_pds(
        GroupError::Sync(SyncError::NoPds { did: AUTHOR.into() }),
        ErrorCode::Other,
        "doesn't say where its data is kept"
    )]
    #[case::no_pds_listed(
        GroupError::Read { did: AUTHOR.into(), reason: "its identity document names no PDS".into() },
        ErrorCode::Other,
        "doesn't say where its data is kept"
    )]
    #[case::unsupported_did(
        GroupError::Identity(IdentityError::UnsupportedDid("did:key:z6Mk".into())),
        ErrorCode::LinkDamaged,
        "invitation link is damaged"
    )]
    #[case::bad_uri(
        GroupError::BadUri(format!("at://{AUTHOR}/org.p2pds.policy")),
        ErrorCode::LinkDamaged,
        "invitation link is damaged"
    )]
    #[case::invalid_policy(
        GroupError::InvalidPolicy(crate::policy::validate::Problems {
            problems: Vec::new(),
            warnings: Vec::new(),
        }),
        ErrorCode::Other,
        "The circle in alice.test's account isn't one this app can read"
    )]
    #[case::deactivated(
        GroupError::Sync(SyncError::Upstream { did: AUTHOR.into(), status: "deactivated".into() }),
        ErrorCode::Other,
        "alice.test's account is closed or paused"
    )]
    #[case::refused(
        sync_http(400, "InvalidRequest"),
        ErrorCode::Other,
        "the server of alice.test's account refused"
    )]
    #[case::bad_proof(
        GroupError::Sync(SyncError::Proof {
            did: AUTHOR.into(),
            source: crate::repo::proof::ProofError::NoRoot,
        }),
        ErrorCode::Other,
        "didn't pass its checks"
    )]
    #[case::not_signed_in(
        GroupError::Session(SessionError::NotSignedIn),
        ErrorCode::NotSignedIn,
        ""
    )]
    #[case::refusal_kept(
        GroupError::Link(LinkError::Gone { author: "alice.test".into() }),
        ErrorCode::LinkGone,
        "no longer in alice.test's account"
    )]
    #[case::anything_else(
        GroupError::NothingToEdit,
        ErrorCode::Other,
        "Couldn't open the invitation from alice.test's account"
    )]
    fn a_circle_that_could_not_be_read_is_said_in_words(
        #[case] e: GroupError,
        #[case] want: ErrorCode,
        #[case] words: &str,
    ) {
        let out = open_failure(e, AUTHOR, Some("alice.test")).answer();
        assert_eq!(out.code, want, "{}", out.message);
        assert!(out.message.contains(words), "{}", out.message);
        if want == ErrorCode::NotSignedIn {
            // The session's own error, as every action of the app gives it.
            return;
        }
        // Nothing technical: no DID, address, method name, command or raw detail.
        for technical in [
            "did:", "http", "xrpc", "at://", "p2pds ", "--", "PDS", "policy", "{", "`",
        ] {
            assert!(
                !out.message.contains(technical),
                "{technical}: {}",
                out.message
            );
        }
    }

    #[test]
    fn an_author_without_a_known_handle_has_a_short_name() {
        let out = open_failure(GroupError::Identity(fetch()), AUTHOR, None).answer();
        assert_eq!(out.code, ErrorCode::Network);
        assert_eq!(
            out.message,
            "Couldn't read the circle from account abcdef… right now; check your connection and try again later."
        );
    }

    #[test]
    fn each_refusal_has_its_own_code() {
        let (name, author) = (String::from("Kitchen"), String::from("alice.test"));
        let cases = [
            (
                LinkError::Damaged { what: "x".into() },
                ErrorCode::LinkDamaged,
            ),
            (
                LinkError::NotALink { found: "x".into() },
                ErrorCode::LinkDamaged,
            ),
            (
                LinkError::NotForYou {
                    name: name.clone(),
                    author: author.clone(),
                    me: "dan.test".into(),
                },
                ErrorCode::LinkNotForYou,
            ),
            (
                LinkError::Changed {
                    name: name.clone(),
                    author: author.clone(),
                },
                ErrorCode::LinkOutdated,
            ),
            (
                LinkError::Revoked {
                    name,
                    author: author.clone(),
                },
                ErrorCode::LinkRevoked,
            ),
            (LinkError::Gone { author }, ErrorCode::LinkGone),
        ];
        for (e, want) in cases {
            let answer = refused(e).answer();
            assert_eq!(answer.code, want, "{}", answer.message);
        }
        let json = serde_json::to_value(ErrorCode::LinkNotForYou).unwrap();
        assert_eq!(json, "link-not-for-you");
    }
}
