//! What the app process (engine, tray, notifications) and the window process (the web view)
//! say to each other over a Unix socket: one JSON message per line, each at most
//! [`MAX_LINE`] bytes (a longer one ends the connection: nothing waits for an end that never
//! comes, nothing grows without bound).
//!
//! The socket lives in a folder only this user may enter (`$XDG_RUNTIME_DIR`, else the data
//! folder), named after the data folder, so a second start of the app on the same folder finds
//! the first and asks it to open its window; the app also checks that whoever connects runs as
//! the same user.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// The longest message, in bytes (an overview of many friends fits many times over).
pub const MAX_LINE: usize = 8 << 20;

/// From the window (or a second start of the app) to the app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ToApp {
    /// A command of the page (`invoke(cmd, args)`), answered by [`ToWindow::Answer`].
    Call { id: u64, cmd: String, args: Value },
    /// Show the window (a second start of the app, or the window asking to be raised).
    Open,
    /// An invitation link the system opened with the app (`p2pds:`): show the window at it.
    OpenLink { link: String },
    /// The window came to the front as [`ToWindow::Focus`] asked (said from its main thread:
    /// a window that never says it is hung).
    Focused,
}

/// From the app to the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ToWindow {
    /// The answer to [`ToApp::Call`] `id`: `ok` or `err` (`{code, message}`).
    Answer {
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ok: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        err: Option<Value>,
    },
    /// An engine event, for the page's `engine` listener.
    Event { event: Value },
    /// Come to the front, and answer [`ToApp::Focused`].
    Focus,
    /// Close the window (and so end the window process).
    Close,
    /// An invitation link is waiting: the page takes it (`take_pending_link`) and opens it.
    Link,
}

/// Why a message could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    TooLong,
    Garbled(serde_json::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::TooLong => write!(f, "a message longer than {MAX_LINE} bytes"),
            ReadError::Garbled(e) => write!(f, "a message that is not understood: {e}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// The next message, or `None` at the end of the stream.
pub async fn read<R, T>(r: &mut R, buf: &mut Vec<u8>) -> Result<Option<T>, ReadError>
where
    R: AsyncBufRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    buf.clear();
    loop {
        let chunk = r.fill_buf().await.map_err(ReadError::Io)?;
        if chunk.is_empty() {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()))
            };
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if buf.len() + take > MAX_LINE + 1 {
            return Err(ReadError::TooLong);
        }
        buf.extend_from_slice(&chunk[..take]);
        r.consume(take);
        if done {
            return serde_json::from_slice(buf)
                .map(Some)
                .map_err(ReadError::Garbled);
        }
    }
}

/// Writes one message.
pub async fn write<W, T>(w: &mut W, message: &T) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

/// The socket of the app running on `data_dir`: in `runtime_dir` (the per-user runtime folder)
/// when there is one, else in `private_dir` (a folder of this user's own, see [`socket_for`]);
/// named after the data folder, kept short (a socket's path has room for about 100 bytes).
pub fn socket_path(data_dir: &Path, runtime_dir: Option<&Path>, private_dir: &Path) -> PathBuf {
    let name = format!("p2pds-desktop-{:016x}.sock", fnv(data_dir));
    match runtime_dir {
        Some(run) => run.join(name),
        None => private_dir.join(name),
    }
}

/// The socket of the app running on `data_dir` (as it is spelled on disk, when it exists):
/// in `$XDG_RUNTIME_DIR`, else in `p2pds-<uid>` in the temporary folder, made mode 0700 and
/// refused unless it is this user's own directory that nobody else may enter. (Not in the data
/// folder: a disk the copies were moved to may hold no sockets, and its path may be too long.)
pub fn socket_for(data_dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let data_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").filter(|r| !r.is_empty()) {
        return Ok(socket_path(&data_dir, Some(Path::new(&run)), Path::new("")));
    }
    // This user's id: the owner of a file this process makes.
    let probe = tempfile_uid()?;
    let private = std::env::temp_dir().join(format!("p2pds-{probe}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&private) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(&private)?;
    if !meta.is_dir() || meta.uid() != probe || meta.permissions().mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a private folder of this user's: remove it and start P2PDS again",
            private.display()
        )));
    }
    Ok(socket_path(&data_dir, None, &private))
}

/// This process's user id, read off a file it creates.
fn tempfile_uid() -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    let path = std::env::temp_dir().join(format!("p2pds-uid-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    let uid = file.metadata()?.uid();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(uid)
}

/// FNV-1a over the path's bytes: a stable short name (not a secret, not a check).
fn fnv(path: &Path) -> u64 {
    path.to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn messages_go_one_per_line_and_a_long_one_ends_the_reading() {
        let mut out = Vec::new();
        let call = ToApp::Call {
            id: 7,
            cmd: "pause".into(),
            args: serde_json::json!({"minutes": 60}),
        };
        write(&mut out, &call).await.unwrap();
        write(&mut out, &ToApp::Open).await.unwrap();
        let mut r = BufReader::new(&out[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read::<_, ToApp>(&mut r, &mut buf).await.unwrap(),
            Some(call)
        );
        assert_eq!(
            read::<_, ToApp>(&mut r, &mut buf).await.unwrap(),
            Some(ToApp::Open)
        );
        assert_eq!(read::<_, ToApp>(&mut r, &mut buf).await.unwrap(), None);

        let long = vec![b'x'; MAX_LINE + 10];
        let mut r = BufReader::new(&long[..]);
        assert!(matches!(
            read::<_, ToApp>(&mut r, &mut buf).await,
            Err(ReadError::TooLong)
        ));
        let mut r = BufReader::new(&b"{\"type\":\"nothing\"}\n"[..]);
        assert!(matches!(
            read::<_, ToApp>(&mut r, &mut buf).await,
            Err(ReadError::Garbled(_))
        ));
        let mut r = BufReader::new(&b"{\"type\":\"open\""[..]);
        assert!(matches!(
            read::<_, ToApp>(&mut r, &mut buf).await,
            Err(ReadError::Io(_))
        ));
    }

    #[test]
    fn an_answer_says_ok_or_err() {
        let a = ToWindow::Answer {
            id: 1,
            ok: Some(Value::Null),
            err: None,
        };
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"type":"answer","id":1,"ok":null}"#
        );
    }

    #[test]
    fn each_data_folder_has_its_own_short_socket() {
        let run = Path::new("/run/user/1000");
        let private = Path::new("/tmp/p2pds-1000");
        let a = socket_path(Path::new("/home/a/.local/share/p2pds"), Some(run), private);
        let b = socket_path(Path::new("/media/disk/p2pds"), Some(run), private);
        assert_ne!(a, b);
        assert_eq!(
            a,
            socket_path(Path::new("/home/a/.local/share/p2pds"), Some(run), private)
        );
        assert!(a.as_os_str().len() < 100);
        assert!(socket_path(Path::new("/srv/p2pds"), None, private).starts_with(private));
    }

    #[test]
    fn the_socket_is_found_however_the_folder_is_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let plain = socket_for(dir.path()).unwrap();
        let spelled = socket_for(&dir.path().join(".")).unwrap();
        assert_eq!(plain, spelled);
    }
}
