//! The tray icon: its color tells the state (green ok, blue syncing, amber needs attention),
//! its menu a summary, "Sync now", "Pause for 1 hour", "Open" and "Quit".

use p2pds::app::dto::{Overview, TrayState};
use tauri::image::Image;
use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager, Wry};

use crate::AppState;

const SIZE: u32 = 32;

/// A round icon of one color (drawn here: no image files to keep in step).
fn icon(state: TrayState) -> Image<'static> {
    let (r, g, b) = match state {
        TrayState::Ok => (0x2e, 0x9e, 0x5b),
        TrayState::Syncing => (0x2f, 0x5f, 0xd0),
        TrayState::NeedsAttention => (0xe0, 0x8a, 0x1e),
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
    Image::new_owned(rgba, SIZE, SIZE)
}

/// The menu items whose text changes.
pub struct TrayItems {
    status: MenuItem<Wry>,
    pause: MenuItem<Wry>,
}

pub fn build(app: &AppHandle) -> tauri::Result<()> {
    let status = MenuItem::with_id(app, "status", "Starting…", false, None::<&str>)?;
    let sync = MenuItem::with_id(app, "sync", "Sync now", true, None::<&str>)?;
    let pause = MenuItem::with_id(app, "pause", "Pause for 1 hour", true, None::<&str>)?;
    let open = MenuItem::with_id(app, "open", "Open P2PDS", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit", true, None::<&str>)?;
    let sep = PredefinedMenuItem::separator(app)?;
    let sep2 = PredefinedMenuItem::separator(app)?;
    let menu = Menu::with_items(app, &[&status, &sep, &sync, &pause, &open, &sep2, &quit])?;
    app.manage(TrayItems {
        status,
        pause: pause.clone(),
    });
    TrayIconBuilder::with_id("main")
        .icon(icon(TrayState::Ok))
        .tooltip("P2PDS")
        .menu(&menu)
        .on_menu_event(|app, event| {
            let engine = app.state::<AppState>().engine.clone();
            match event.id().as_ref() {
                "sync" => engine.wake(),
                "pause" => {
                    tauri::async_runtime::spawn(async move {
                        let paused = engine
                            .overview()
                            .await
                            .map(|o| o.paused_until.is_some())
                            .unwrap_or(false);
                        let _ = if paused {
                            engine.resume().await
                        } else {
                            engine.pause(60).await
                        };
                    });
                }
                "open" => {
                    if let Err(e) = crate::window::open(app) {
                        eprintln!("p2pds-desktop: can't open the window: {e}");
                    }
                }
                "quit" => {
                    engine.stop();
                    app.exit(0);
                }
                _ => {}
            }
        })
        .build(app)?;
    Ok(())
}

/// Brings the tray in line with the overview.
pub fn show(app: &AppHandle, o: &Overview) {
    if let Some(tray) = app.tray_by_id("main") {
        let _ = tray.set_icon(Some(icon(o.tray)));
        let _ = tray.set_tooltip(Some(format!("P2PDS: {}", o.headline)));
    }
    if let Some(items) = app.try_state::<TrayItems>() {
        let _ = items.status.set_text(&o.headline);
        let _ = items.pause.set_text(if o.paused_until.is_some() {
            "Resume"
        } else {
            "Pause for 1 hour"
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_has_its_own_round_icon() {
        let ok = icon(TrayState::Ok);
        let attention = icon(TrayState::NeedsAttention);
        assert_eq!((ok.width(), ok.height()), (SIZE, SIZE));
        assert_ne!(ok.rgba(), attention.rgba());
        // Corners are transparent, the middle is opaque.
        assert_eq!(ok.rgba()[3], 0);
        let mid = ((SIZE / 2 * SIZE + SIZE / 2) * 4 + 3) as usize;
        assert_eq!(ok.rgba()[mid], 255);
    }
}
