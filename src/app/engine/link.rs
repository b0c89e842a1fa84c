//! Invitation links in the app: "Copy invitation link" and "Show as QR code" on a circle
//! ([`Engine::invitation_link`], [`Engine::invitation_qr`]), and "I have an invitation link"
//! ([`Engine::open_invitation_link`], also what opening a `p2pds:` link leads to). The link
//! itself and its checks are `group::link` and `Circles::open_link`; each refusal reaches the
//! window with its own [`ErrorCode`] (`link-damaged`, `link-not-for-you`, `link-outdated`,
//! `link-revoked`, `link-gone`) and its words.
//!
//! The QR code is an SVG string made here from the code's modules: one white square and one
//! black `<path>`, coloured with `fill` presentation attributes only (no `style` attribute or
//! element), so the window can show it under its `style-src 'self'` policy by inserting the
//! markup; it scales with its `viewBox` (a quiet zone of four modules included).

use std::fmt::Write as _;

use crate::group::link::{InvitationLink, LinkError};
use crate::session::{self, SessionError};

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
        InvitationLink::parse(link).map_err(refused)?;
        let _work = self.guard().await?;
        if self.store().read(session::signed_in).await?.is_none() {
            return Err(AppError::Session(SessionError::NotSignedIn));
        }
        self.circles().open_link(link).await?;
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
