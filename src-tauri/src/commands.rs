//! The window's commands: each one line over the engine, errors as `{code, message}` (the
//! message in plain language).

use p2pds::app::dto::{
    BrowserSignInStarted, Collection, ErrorAnswer, ErrorCode, Health, MoveReport, Overview,
    RecoveryKeyStatus, RestoreChoice, RestoreInput, RestoreOutcome, Settings,
};
use p2pds::app::AppError;
use tauri::{AppHandle, State};

use crate::AppState;

type Answer<T> = Result<T, ErrorAnswer>;

fn text(e: AppError) -> ErrorAnswer {
    e.answer()
}

/// A failure of the shell itself (the location file, the browser), in words.
fn said(code: ErrorCode, message: String) -> ErrorAnswer {
    ErrorAnswer { code, message }
}

#[tauri::command]
pub async fn overview(s: State<'_, AppState>) -> Answer<Overview> {
    s.engine.overview().await.map_err(text)
}

#[tauri::command]
pub async fn sign_in(s: State<'_, AppState>, handle: String, password: String) -> Answer<Overview> {
    s.engine.sign_in(&handle, &password).await.map_err(text)
}

/// Starts signing in with Bluesky: opens the server's sign-in page in the browser (unless
/// `P2PDS_NO_BROWSER` is set: tests answer the page themselves) and returns its address, which
/// the window shows for when no browser opens.
#[tauri::command]
pub async fn start_browser_sign_in(
    s: State<'_, AppState>,
    handle: String,
) -> Answer<BrowserSignInStarted> {
    let started = s
        .engine
        .start_browser_sign_in(&handle)
        .await
        .map_err(text)?;
    Ok(opened(started))
}

#[tauri::command]
pub async fn finish_browser_sign_in(s: State<'_, AppState>) -> Answer<Overview> {
    s.engine.finish_browser_sign_in().await.map_err(text)
}

#[tauri::command]
pub fn cancel_browser_sign_in(s: State<'_, AppState>) {
    s.engine.cancel_browser_sign_in();
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
pub async fn dismiss_flags(s: State<'_, AppState>, did: String) -> Answer<Overview> {
    s.engine.dismiss_flags(&did).await.map_err(text)
}

#[tauri::command]
pub async fn reclaimable(s: State<'_, AppState>) -> Answer<Collection> {
    s.engine.reclaimable().await.map_err(text)
}

#[tauri::command]
pub async fn collect_garbage(s: State<'_, AppState>) -> Answer<Collection> {
    s.engine.collect_garbage().await.map_err(text)
}

/// Starts "Protect your account"'s consent in the browser (opened as for signing in).
#[tauri::command]
pub async fn start_recovery_consent(s: State<'_, AppState>) -> Answer<BrowserSignInStarted> {
    let started = s.engine.start_recovery_consent().await.map_err(text)?;
    Ok(opened(started))
}

/// Opens a started sign-in's page in the browser, unless `P2PDS_NO_BROWSER` is set (tests
/// answer the page themselves). Best effort: the window shows the address either way.
fn opened(started: BrowserSignInStarted) -> BrowserSignInStarted {
    if std::env::var_os("P2PDS_NO_BROWSER").is_none() {
        let _ = open_in_browser(&started.url);
    }
    started
}

#[tauri::command]
pub async fn finish_recovery_consent(s: State<'_, AppState>) -> Answer<RecoveryKeyStatus> {
    s.engine.finish_recovery_consent().await.map_err(text)
}

#[tauri::command]
pub fn cancel_recovery_consent(s: State<'_, AppState>) {
    s.engine.cancel_recovery_consent();
}

#[tauri::command]
pub async fn recovery_key_status(s: State<'_, AppState>) -> Answer<RecoveryKeyStatus> {
    s.engine.recovery_key_status().await.map_err(text)
}

/// The main password goes to the account's server only; it is not kept.
#[tauri::command]
pub async fn add_recovery_key(
    s: State<'_, AppState>,
    password: String,
    code: Option<String>,
) -> Answer<RecoveryKeyStatus> {
    s.engine
        .add_recovery_key(&password, code.as_deref())
        .await
        .map_err(text)
}

#[tauri::command]
pub async fn restore_choice(s: State<'_, AppState>, did: String) -> Answer<RestoreChoice> {
    s.engine.restore_choice(&did).await.map_err(text)
}

/// Gives an account back on a new server; the passwords in `input` go to the servers only.
#[tauri::command]
pub async fn restore_account(
    s: State<'_, AppState>,
    input: RestoreInput,
) -> Answer<RestoreOutcome> {
    s.engine.restore_account(input).await.map_err(text)
}

#[tauri::command]
pub async fn get_settings(s: State<'_, AppState>) -> Answer<Settings> {
    s.engine.settings().await.map_err(text)
}

#[tauri::command]
pub async fn save_settings(s: State<'_, AppState>, settings: Settings) -> Answer<Settings> {
    s.engine.save_settings(settings).await.map_err(text)
}

/// Copies the data to `dir`, checks the copy, records the new place and restarts the app there.
/// The old folder is left as it was: the settings then offer to delete it.
#[tauri::command]
pub async fn move_storage(
    app: AppHandle,
    s: State<'_, AppState>,
    dir: String,
) -> Answer<MoveReport> {
    let report = s.engine.move_storage(&dir).await.map_err(text)?;
    let to = std::path::PathBuf::from(&report.to);
    if let Err(e) =
        crate::location::record(s.location_file.as_deref(), s.default_dir.as_deref(), &to)
    {
        s.engine.cancel_move();
        return Err(said(ErrorCode::Storage, format!(
            "{e} Nothing changed: your copies are still kept in {}. (The copy made in {} can be deleted.)",
            report.from, report.to
        )));
    }
    crate::restart_soon(&app);
    Ok(report)
}

/// Deletes the copy a move left behind.
#[tauri::command]
pub async fn delete_old_copy(s: State<'_, AppState>) -> Answer<Settings> {
    s.engine.delete_old_copy().await.map_err(text)
}

/// The help pages the app links to: a fixed list, so the page can't open any other address.
pub fn help_url(topic: &str) -> Option<&'static str> {
    match topic {
        "app-passwords" => Some("https://bsky.app/settings/app-passwords"),
        _ => None,
    }
}

/// Opens a help page in the person's browser, through the system's opener (started, not
/// waited for).
#[tauri::command]
pub fn open_help(topic: String) -> Answer<()> {
    let url = help_url(&topic).ok_or_else(|| {
        said(
            ErrorCode::Invalid,
            format!("There is no help page called {topic:?}."),
        )
    })?;
    open_in_browser(url).map_err(|_| {
        said(
            ErrorCode::Other,
            format!("Couldn't open your browser. The page is: {url}"),
        )
    })
}

fn open_in_browser(url: &str) -> std::io::Result<()> {
    use std::process::{Command, Stdio};
    #[cfg(target_os = "macos")]
    let mut cmd = {
        let mut c = Command::new("open");
        c.arg(url);
        c
    };
    #[cfg(windows)]
    let mut cmd = {
        use std::os::windows::process::CommandExt;
        // The shell's own opener, not `cmd /C start`: cmd would read `&` in an address
        // (every sign-in page has one) as a command separator.
        let mut c = Command::new("explorer");
        c.arg(url).creation_flags(0x0800_0000);
        c
    };
    #[cfg(not(any(target_os = "macos", windows)))]
    let mut cmd = {
        let mut c = Command::new("xdg-open");
        c.arg(url);
        c
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Reaped in the background: the command does not wait for the browser.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

/// The page drew its first frame. With `P2PDS_BENCH_STARTUP` set, prints the time since the
/// process started, and after a reopening the time since "Open" (`scripts/bench-desktop`
/// reads them).
#[tauri::command]
pub fn ready() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let bench = std::env::var_os("P2PDS_BENCH_STARTUP").is_some();
    let mut first = false;
    ONCE.call_once(|| {
        first = true;
        if bench {
            eprintln!(
                "startup: first paint after {} ms",
                crate::STARTED.elapsed().as_millis()
            );
        }
    });
    if let (false, Some(ms)) = (first, crate::window::painted()) {
        if bench {
            eprintln!("reopen: first paint after {ms} ms");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_topics_map_to_fixed_pages_only() {
        assert_eq!(
            help_url("app-passwords"),
            Some("https://bsky.app/settings/app-passwords")
        );
        for other in [
            "",
            "https://example.com",
            "app-passwords ",
            "APP-PASSWORDS",
            "../x",
        ] {
            assert_eq!(help_url(other), None, "{other:?}");
        }
        assert!(open_help("https://example.com".into())
            .unwrap_err()
            .message
            .contains("no help page"));
    }
}
