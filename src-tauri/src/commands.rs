//! The window's commands: each one line over the engine, errors as plain-language text.

use p2pds::app::dto::{Health, Overview, Settings};
use p2pds::app::AppError;
use tauri::State;

use crate::AppState;

type Answer<T> = Result<T, String>;

fn text(e: AppError) -> String {
    e.to_string()
}

#[tauri::command]
pub async fn overview(s: State<'_, AppState>) -> Answer<Overview> {
    s.engine.overview().await.map_err(text)
}

#[tauri::command]
pub async fn sign_in(s: State<'_, AppState>, handle: String, password: String) -> Answer<Overview> {
    s.engine.sign_in(&handle, &password).await.map_err(text)
}

#[tauri::command]
pub async fn skip_sign_in(s: State<'_, AppState>) -> Answer<Overview> {
    s.engine.skip_sign_in().await.map_err(text)
}

#[tauri::command]
pub async fn sign_out(s: State<'_, AppState>) -> Answer<Overview> {
    s.engine.sign_out().await.map_err(text)
}

#[tauri::command]
pub async fn add_friend(s: State<'_, AppState>, who: String) -> Answer<Overview> {
    s.engine.add_friend(&who).await.map_err(text)
}

#[tauri::command]
pub async fn remove_friend(s: State<'_, AppState>, did: String) -> Answer<Overview> {
    s.engine.remove_friend(&did).await.map_err(text)
}

#[tauri::command]
pub async fn sync_now(s: State<'_, AppState>) -> Answer<()> {
    s.engine.wake();
    Ok(())
}

#[tauri::command]
pub async fn pause(s: State<'_, AppState>, minutes: u64) -> Answer<Overview> {
    s.engine.pause(minutes).await.map_err(text)
}

#[tauri::command]
pub async fn resume(s: State<'_, AppState>) -> Answer<Overview> {
    s.engine.resume().await.map_err(text)
}

#[tauri::command]
pub async fn create_circle(
    s: State<'_, AppState>,
    name: String,
    members: Vec<String>,
    min_copies: Option<u32>,
) -> Answer<Overview> {
    s.engine
        .create_circle(&name, &members, min_copies)
        .await
        .map_err(text)
}

#[tauri::command]
pub async fn accept_invitation(s: State<'_, AppState>, uri: String) -> Answer<Overview> {
    s.engine.accept(&uri).await.map_err(text)
}

#[tauri::command]
pub async fn decline_invitation(s: State<'_, AppState>, uri: String) -> Answer<Overview> {
    s.engine.decline(&uri).await.map_err(text)
}

#[tauri::command]
pub async fn leave_circle(
    s: State<'_, AppState>,
    uri: String,
    keep_copies: bool,
) -> Answer<Overview> {
    s.engine.leave(&uri, keep_copies).await.map_err(text)
}

#[tauri::command]
pub async fn circle_health(s: State<'_, AppState>, uri: String) -> Answer<Health> {
    s.engine.health(&uri).await.map_err(text)
}

#[tauri::command]
pub async fn get_settings(s: State<'_, AppState>) -> Answer<Settings> {
    s.engine.settings().await.map_err(text)
}

#[tauri::command]
pub async fn save_settings(s: State<'_, AppState>, settings: Settings) -> Answer<Settings> {
    s.engine.save_settings(settings).await.map_err(text)
}

/// The page drew its first frame. With `P2PDS_BENCH_STARTUP` set, prints the time since the
/// process started (`scripts/bench-desktop` reads it).
#[tauri::command]
pub fn ready() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("P2PDS_BENCH_STARTUP").is_some() {
            eprintln!(
                "startup: first paint after {} ms",
                crate::STARTED.elapsed().as_millis()
            );
        }
    });
}
