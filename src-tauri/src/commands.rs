//! The window's commands, answered in the app process: each one line over the engine, by the
//! name the page invokes (`invoke('sign_in', { handle, password })`), its arguments the page's
//! camelCase keys; errors as `{code, message}` (the message in plain language).

use p2pds::app::dto::{BrowserSignInStarted, ErrorAnswer, ErrorCode, RestoreInput, Settings};
use p2pds::app::AppError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::host::Host;

type Answer = Result<Value, ErrorAnswer>;

/// Runs the page's command `cmd` with `args`.
pub async fn dispatch(h: &Host, cmd: &str, args: &Value) -> Answer {
    let e = &h.engine;
    match cmd {
        "overview" => to(e.overview().await),
        "sign_in" => to(e
            .sign_in(
                &arg::<String>(args, "handle")?,
                &arg::<String>(args, "password")?,
            )
            .await),
        "skip_sign_in" => to(e.skip_sign_in().await),
        "start_browser_sign_in" => opened(
            e.start_browser_sign_in(&arg::<String>(args, "handle")?)
                .await,
        ),
        "finish_browser_sign_in" => to(e.finish_browser_sign_in().await),
        "cancel_browser_sign_in" => {
            e.cancel_browser_sign_in();
            Ok(Value::Null)
        }
        "sign_out" => to(e.sign_out().await),
        "add_friend" => to(e.add_friend(&arg::<String>(args, "who")?).await),
        "remove_friend" => to(e.remove_friend(&arg::<String>(args, "did")?).await),
        "sync_now" => {
            e.wake();
            Ok(Value::Null)
        }
        "pause" => to(e.pause(arg(args, "minutes")?).await),
        "resume" => to(e.resume().await),
        "create_circle" => {
            let members: Vec<String> = arg(args, "members")?;
            let min: Option<u32> = arg(args, "minCopies")?;
            to(
                e.create_circle(&arg::<String>(args, "name")?, &members, min)
                    .await,
            )
        }
        "accept_invitation" => to(e.accept(&arg::<String>(args, "uri")?).await),
        "decline_invitation" => to(e.decline(&arg::<String>(args, "uri")?).await),
        "leave_circle" => to(e
            .leave(&arg::<String>(args, "uri")?, arg(args, "keepCopies")?)
            .await),
        "circle_health" => to(e.health(&arg::<String>(args, "uri")?).await),
        "invitation_link" => to(e.invitation_link(&arg::<String>(args, "uri")?).await),
        "invitation_qr" => to(e.invitation_qr(&arg::<String>(args, "link")?)),
        "take_pending_link" => Ok(h.take_pending_link().map_or(Value::Null, Value::String)),
        "open_invitation_link" => to(e.open_invitation_link(&arg::<String>(args, "link")?).await),
        "dismiss_flags" => to(e.dismiss_flags(&arg::<String>(args, "did")?).await),
        "reclaimable" => to(e.reclaimable().await),
        "collect_garbage" => to(e.collect_garbage().await),
        "recovery_key_status" => to(e.recovery_key_status().await),
        // The main password goes to the account's server only; it is not kept.
        "add_recovery_key" => {
            let code: Option<String> = arg(args, "code")?;
            to(
                e.add_recovery_key(&arg::<String>(args, "password")?, code.as_deref())
                    .await,
            )
        }
        "start_recovery_consent" => opened(e.start_recovery_consent().await),
        "finish_recovery_consent" => to(e.finish_recovery_consent().await),
        "cancel_recovery_consent" => {
            e.cancel_recovery_consent();
            Ok(Value::Null)
        }
        "restore_choice" => to(e.restore_choice(&arg::<String>(args, "did")?).await),
        // The passwords in the input go to the servers only.
        "restore_account" => to(e.restore_account(arg::<RestoreInput>(args, "input")?).await),
        "get_settings" => to(e.settings().await),
        "save_settings" => to(e.save_settings(arg::<Settings>(args, "settings")?).await),
        "move_storage" => h.move_storage(&arg::<String>(args, "dir")?).await,
        "delete_old_copy" => to(e.delete_old_copy().await),
        "open_help" => open_help(&arg::<String>(args, "topic")?).map(|()| Value::Null),
        _ => Err(said(
            ErrorCode::Invalid,
            format!("The app has no command {cmd:?}."),
        )),
    }
}

/// An engine answer as the page's value.
fn to<T: Serialize>(r: Result<T, AppError>) -> Answer {
    let v = r.map_err(|e| e.answer())?;
    serde_json::to_value(v).map_err(|e| {
        said(
            ErrorCode::Other,
            format!("The answer could not be written: {e}"),
        )
    })
}

/// The argument `name` (absent reads as null: an `Option` is then `None`).
fn arg<T: DeserializeOwned>(args: &Value, name: &str) -> Result<T, ErrorAnswer> {
    let v = args.get(name).cloned().unwrap_or(Value::Null);
    serde_json::from_value(v).map_err(|e| {
        said(
            ErrorCode::Invalid,
            format!("The window sent a wrong {name:?}: {e}"),
        )
    })
}

/// A failure of the shell itself (the location file, the browser), in words.
pub fn said(code: ErrorCode, message: String) -> ErrorAnswer {
    ErrorAnswer { code, message }
}

/// Opens a started sign-in's page in the browser, unless `P2PDS_NO_BROWSER` is set (tests
/// answer the page themselves). Best effort: the window shows the address either way.
fn opened(r: Result<BrowserSignInStarted, AppError>) -> Answer {
    let started = r.map_err(|e| e.answer())?;
    if std::env::var_os("P2PDS_NO_BROWSER").is_none() {
        let _ = open_in_browser(&started.url);
    }
    to(Ok::<_, AppError>(started))
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
fn open_help(topic: &str) -> Result<(), ErrorAnswer> {
    let url = help_url(topic).ok_or_else(|| {
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
    #[cfg(not(target_os = "macos"))]
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
        assert!(open_help("https://example.com")
            .unwrap_err()
            .message
            .contains("no help page"));
    }

    #[test]
    fn arguments_are_read_by_the_pages_names() {
        let args = serde_json::json!({"uri": "at://x", "keepCopies": true, "code": null});
        assert_eq!(arg::<String>(&args, "uri").unwrap(), "at://x");
        assert!(arg::<bool>(&args, "keepCopies").unwrap());
        assert_eq!(arg::<Option<String>>(&args, "code").unwrap(), None);
        assert_eq!(arg::<Option<u32>>(&args, "minCopies").unwrap(), None);
        let e = arg::<u64>(&args, "minutes").unwrap_err();
        assert_eq!(e.code, ErrorCode::Invalid);
        assert!(e.message.contains("minutes"), "{}", e.message);
    }
}
