//! The tray icon, a StatusNotifierItem on the session bus (what Linux desktops show in their
//! tray), served by the app process itself over D-Bus: no toolkit, no web view. Its color
//! tells the state (green ok, blue syncing, amber needs attention), its menu a summary, "Sync
//! now", "Pause for 1 hour", "Open P2PDS" and "Quit"; a click opens the window.

use std::sync::Arc;

use p2pds::app::dto::{Overview, TrayState};

use crate::host::Host;

const SIZE: u32 = 32;

/// A round icon of one color, RGBA (drawn here: no image files to keep in step).
fn icon(state: TrayState) -> Vec<u8> {
    let (r, g, b) = match state {
        TrayState::Ok => (0x2e, 0x9e, 0x5b),
        TrayState::Syncing => (0x2f, 0x5f, 0xd0),
        TrayState::NeedsAttention => (0xe0, 0x8a, 0x1e),
        TrayState::Problem => (0xc6, 0x28, 0x28),
    };
    let mut rgba = Vec::with_capacity((SIZE * SIZE * 4) as usize);
    let c = (SIZE as f32 - 1.0) / 2.0;
    for y in 0..SIZE {
        for x in 0..SIZE {
            let d = ((x as f32 - c).powi(2) + (y as f32 - c).powi(2)).sqrt();
            let alpha = (c + 0.5 - d).clamp(0.0, 1.0);
            // A white ring inside: two friends' circles, as in the app icon.
            let ring = (d - c * 0.55).abs() < 1.6;
            let (pr, pg, pb) = if ring { (255, 255, 255) } else { (r, g, b) };
            rgba.extend_from_slice(&[pr, pg, pb, (alpha * 255.0) as u8]);
        }
    }
    rgba
}

/// RGBA to the ARGB (network order) a StatusNotifierItem carries.
fn argb(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|p| [p[3], p[0], p[1], p[2]])
        .collect()
}

/// What the tray shows.
pub struct Tray {
    host: Arc<Host>,
    state: TrayState,
    headline: String,
    paused: bool,
}

/// The running tray, to bring in line with the overview (none when the session has no bus).
pub struct TrayHandle(Option<ksni::Handle<Tray>>);

impl TrayHandle {
    pub async fn show(&self, o: &Overview) {
        if let Some(h) = &self.0 {
            // The menu's first line: why the icon is amber or red, else the headline.
            let headline = o.tray_reason.clone().unwrap_or_else(|| o.headline.clone());
            let (state, paused) = (o.tray, o.paused_until.is_some());
            h.update(move |t| {
                t.state = state;
                t.headline = headline;
                t.paused = paused;
            })
            .await;
        }
    }
}

/// Puts the icon in the tray. Without a session bus there is none, and the app says so on
/// stderr (the window and the engine work the same).
pub async fn start(host: Arc<Host>) -> TrayHandle {
    use ksni::TrayMethods;
    let tray = Tray {
        host,
        state: TrayState::Ok,
        headline: "Starting…".into(),
        paused: false,
    };
    // The desktop's tray may come up after the app (start at login): wait for it.
    match tray.assume_sni_available(true).spawn().await {
        Ok(h) => TrayHandle(Some(h)),
        Err(e) => {
            eprintln!("p2pds-desktop: no tray icon: {e}");
            TrayHandle(None)
        }
    }
}

impl ksni::Tray for Tray {
    fn id(&self) -> String {
        "p2pds".into()
    }

    fn title(&self) -> String {
        "P2PDS".into()
    }

    fn icon_pixmap(&self) -> Vec<ksni::Icon> {
        vec![ksni::Icon {
            width: SIZE as i32,
            height: SIZE as i32,
            data: argb(&icon(self.state)),
        }]
    }

    fn tool_tip(&self) -> ksni::ToolTip {
        ksni::ToolTip {
            title: format!("P2PDS: {}", self.headline),
            ..Default::default()
        }
    }

    fn activate(&mut self, _x: i32, _y: i32) {
        self.host.window.open();
    }

    fn watcher_offline(&self, _reason: ksni::OfflineReason) -> bool {
        // Keep the icon ready for when the desktop's tray comes (back).
        true
    }

    fn menu(&self) -> Vec<ksni::MenuItem<Self>> {
        use ksni::menu::StandardItem;
        let item = |label: &str, activate: fn(&mut Tray)| {
            StandardItem {
                label: label.into(),
                activate: Box::new(activate),
                ..Default::default()
            }
            .into()
        };
        vec![
            StandardItem {
                label: self.headline.clone(),
                enabled: false,
                ..Default::default()
            }
            .into(),
            ksni::MenuItem::Separator,
            item("Sync now", |t| t.host.engine.wake()),
            item(
                if self.paused {
                    "Resume"
                } else {
                    "Pause for 1 hour"
                },
                |t| {
                    let (engine, paused) = (t.host.engine.clone(), t.paused);
                    tokio::spawn(async move {
                        let _ = if paused {
                            engine.resume().await
                        } else {
                            engine.pause(60).await
                        };
                    });
                },
            ),
            item("Open P2PDS", |t| t.host.window.open()),
            ksni::MenuItem::Separator,
            item("Quit", |t| t.host.quit.cancel()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_has_its_own_round_icon() {
        let ok = icon(TrayState::Ok);
        let attention = icon(TrayState::NeedsAttention);
        let problem = icon(TrayState::Problem);
        assert_eq!(ok.len(), (SIZE * SIZE * 4) as usize);
        assert_ne!(ok, attention);
        assert_ne!(attention, problem);
        // Corners are transparent, the middle is opaque.
        assert_eq!(ok[3], 0);
        let mid = ((SIZE / 2 * SIZE + SIZE / 2) * 4 + 3) as usize;
        assert_eq!(ok[mid], 255);
        // ARGB: alpha first.
        let a = argb(&ok);
        assert_eq!(a[mid - 3], 255);
        assert_eq!(&a[mid - 2..=mid], &ok[mid - 3..mid]);
    }
}
