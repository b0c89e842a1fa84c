//! Where the secrets live: the OS keyring (one entry per account DID, and the recovery keys)
//! or, chosen explicitly, the secrets file in the data directory (mode 0600, written through a
//! synced temporary file and a rename, refused when others may read it).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;

use super::{signed_in, Secrets, SessionError, KEYRING_SERVICE, SECRETS_FILE, SECRET_STORE_KEY};
use crate::store::{Store, StoreError};

/// What a keyring error means for the person.
pub(super) fn keyring_error(e: keyring::Error) -> SessionError {
    match e {
        keyring::Error::NoDefaultStore => SessionError::NoSecretService {
            detail: e.to_string(),
        },
        keyring::Error::NoStorageAccess(inner) => {
            let detail = inner.to_string();
            // A bus without a secret-service provider answers "ServiceUnknown"/"not provided".
            if detail.contains("ServiceUnknown") || detail.contains("not provided") {
                SessionError::NoSecretService { detail }
            } else {
                SessionError::KeyringLocked { detail }
            }
        }
        keyring::Error::PlatformFailure(inner) => {
            let detail = inner.to_string();
            if detail.contains("ServiceUnknown")
                || detail.contains("DBUS_SESSION_BUS_ADDRESS")
                || detail.contains("not provided")
            {
                SessionError::NoSecretService { detail }
            } else {
                SessionError::Keyring(detail)
            }
        }
        other => SessionError::Keyring(other.to_string()),
    }
}

fn entry(did: &str) -> Result<keyring::Entry, SessionError> {
    keyring::Entry::new(KEYRING_SERVICE, did).map_err(keyring_error)
}

pub(super) async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, SessionError> + Send + 'static,
) -> Result<R, SessionError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SessionError::Keyring(format!("the secrets call did not finish: {e}")))?
}

/// Where a data directory keeps its app password and session tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretStore {
    /// The OS keyring (the default): service [`KEYRING_SERVICE`], user = the account's DID.
    Keyring,
    /// The secrets file (chosen explicitly): this path, [`SECRETS_FILE`] in the data directory.
    File(PathBuf),
}

impl SecretStore {
    /// The store chosen for this data directory (`group_meta`, [`SECRET_STORE_KEY`]).
    pub async fn of(store: &Store) -> Result<SecretStore, SessionError> {
        let file = store.dir().join(SECRETS_FILE);
        let choice = store.read(read_choice).await?;
        match choice.as_deref() {
            None | Some("keyring") => Ok(SecretStore::Keyring),
            Some("file") => Ok(SecretStore::File(file)),
            Some(other) => Err(SessionError::UnknownSecretStore(other.to_string())),
        }
    }

    /// The store in words, e.g. "the system keyring (Secret Service)".
    pub fn words(&self) -> String {
        match self {
            SecretStore::Keyring if cfg!(target_os = "macos") => {
                "the system keyring (Keychain)".into()
            }
            SecretStore::Keyring if cfg!(windows) => {
                "the system keyring (Credential Manager)".into()
            }
            SecretStore::Keyring => "the system keyring (Secret Service)".into(),
            SecretStore::File(path) if cfg!(unix) => {
                format!("the file {} (readable only by you)", path.display())
            }
            SecretStore::File(path) => format!(
                "the file {} (protected only by its folder's permissions)",
                path.display()
            ),
        }
    }

    /// How an error names this store ("the keyring", "the secrets file …").
    fn place(&self) -> String {
        match self {
            SecretStore::Keyring => "the keyring".into(),
            SecretStore::File(path) => format!("the secrets file {}", path.display()),
        }
    }
}

fn read_choice(conn: &Connection) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT value FROM group_meta WHERE key = ?1",
            [SECRET_STORE_KEY],
            |r| r.get(0),
        )
        .optional()?)
}

/// Chooses the secrets file for this data directory, from now on (also for later sign-ins;
/// then sign in, which writes it). Secrets are not moved: when the node was signed in with the
/// keyring, that keyring entry is removed (best effort, as the keyring may be unreachable).
pub async fn use_secrets_file(store: &Store) -> Result<(), SessionError> {
    let before = store.read(read_choice).await?;
    store
        .write(|c| -> Result<(), StoreError> {
            c.execute(
                "INSERT INTO group_meta (key, value) VALUES (?1, 'file')
                 ON CONFLICT (key) DO UPDATE SET value = 'file'",
                [SECRET_STORE_KEY],
            )?;
            Ok(())
        })
        .await??;
    if matches!(before.as_deref(), None | Some("keyring")) {
        if let Some(account) = store.read(signed_in).await? {
            let gone = delete_secrets(&SecretStore::Keyring, &account.did);
            match tokio::time::timeout(std::time::Duration::from_secs(5), gone).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%e, "the old keyring entry could not be removed"),
                Err(_) => tracing::debug!("the keyring did not answer; its old entry stays"),
            }
        }
    }
    Ok(())
}

/// Which store keeps this data directory's secrets, in words: "the system keyring (Secret
/// Service)" or "the file /path/secrets.json (readable only by you)".
pub async fn secret_store_words(store: &Store) -> String {
    match SecretStore::of(store).await {
        Ok(s) => s.words(),
        Err(e) => format!("an unknown place ({e})"),
    }
}

/// Reads the secrets of `did` from `at`.
pub async fn load_secrets(at: &SecretStore, did: &str) -> Result<Secrets, SessionError> {
    let did = did.to_string();
    let at = at.clone();
    blocking(move || {
        let place = at.place();
        let value = match &at {
            SecretStore::Keyring => match entry(&did)?.get_password() {
                Ok(t) => serde_json::from_str(&t).ok(),
                Err(keyring::Error::NoEntry) => None,
                Err(e) => return Err(keyring_error(e)),
            },
            SecretStore::File(path) => read_secrets_file(path)?.remove(&did),
        };
        value
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or(SessionError::NoSecret { did, place })
    })
    .await
}

/// Writes the secrets of `did` to `at`.
pub async fn save_secrets(
    at: &SecretStore,
    did: &str,
    secrets: &Secrets,
) -> Result<(), SessionError> {
    let did = did.to_string();
    let encoding =
        |e: serde_json::Error| SessionError::Keyring(format!("encoding the secrets: {e}"));
    match at {
        SecretStore::Keyring => {
            let text = serde_json::to_string(secrets).map_err(encoding)?;
            blocking(move || entry(&did)?.set_password(&text).map_err(keyring_error)).await
        }
        SecretStore::File(path) => {
            let (path, value) = (
                path.clone(),
                serde_json::to_value(secrets).map_err(encoding)?,
            );
            blocking(move || {
                change_secrets_file(&path, |map| {
                    map.insert(did, value);
                })
            })
            .await
        }
    }
}

/// Removes the secrets of `did` from `at` (nothing to remove is fine).
pub async fn delete_secrets(at: &SecretStore, did: &str) -> Result<(), SessionError> {
    let did = did.to_string();
    let at = at.clone();
    blocking(move || match &at {
        SecretStore::Keyring => match entry(&did)?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(keyring_error(e)),
        },
        SecretStore::File(path) => change_secrets_file(path, |map| {
            map.remove(&did);
        }),
    })
    .await
}

/// One read-modify-write of the secrets file at a time in this process.
static SECRETS_FILE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn file_error<'a>(
    path: &'a Path,
    what: &'static str,
) -> impl Fn(std::io::Error) -> SessionError + 'a {
    move |e| SessionError::SecretsFile {
        path: path.display().to_string(),
        what,
        reason: e.to_string(),
    }
}

/// The map in the secrets file (empty when there is no file). Refuses a file that other users
/// may read or change.
pub(super) fn read_secrets_file(
    path: &Path,
) -> Result<serde_json::Map<String, Value>, SessionError> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(file_error(path, "open")(e)),
    };
    let meta = file.metadata().map_err(file_error(path, "open"))?;
    if !meta.is_file() {
        return Err(SessionError::SecretsFile {
            path: path.display().to_string(),
            what: "read",
            reason: "it is not a file".into(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SessionError::SecretsFileOpen {
                path: path.display().to_string(),
                mode,
            });
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(file_error(path, "read"))?;
    if text.trim().is_empty() {
        return Ok(Default::default());
    }
    let damaged = |reason: String| SessionError::SecretsFileDamaged {
        path: path.display().to_string(),
        reason,
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(damaged("it is not a JSON object".into())),
        Err(e) => Err(damaged(e.to_string())),
    }
}

/// Changes the secrets file: read, `change`, then write a temporary file in the same folder
/// (mode 0600), sync it and rename it over the file. A file left empty is removed.
fn change_secrets_file(
    path: &Path,
    change: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> Result<(), SessionError> {
    let _one_at_a_time = SECRETS_FILE_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut map = read_secrets_file(path)?;
    change(&mut map);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if map.is_empty() {
        return match std::fs::remove_file(path) {
            Ok(()) => {
                sync_dir(dir);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(file_error(path, "remove")(e)),
        };
    }
    let text =
        serde_json::to_vec_pretty(&Value::Object(map)).map_err(|e| SessionError::SecretsFile {
            path: path.display().to_string(),
            what: "encode",
            reason: e.to_string(),
        })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| SECRETS_FILE.to_string());
    let tmp = dir.join(format!(
        ".{name}.{}-{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(file_error(path, "write")(e));
    }
    sync_dir(dir);
    Ok(())
}

/// Makes a rename or removal in `dir` durable (best effort: not every platform can).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// The keyring user under which the recovery key of `did` is kept (see [`crate::recovery`]).
fn recovery_user(did: &str) -> String {
    format!("recovery-key:{did}")
}

/// The recovery key text of `did` kept in the keyring, if any.
pub async fn load_recovery_key(did: &str) -> Result<Option<String>, SessionError> {
    let user = recovery_user(did);
    blocking(move || match entry(&user)?.get_password() {
        Ok(t) => Ok(Some(t)),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(keyring_error(e)),
    })
    .await
}

/// Keeps the recovery key text of `did` in the keyring.
pub async fn save_recovery_key(did: &str, text: &str) -> Result<(), SessionError> {
    let (user, text) = (recovery_user(did), text.to_string());
    blocking(move || entry(&user)?.set_password(&text).map_err(keyring_error)).await
}
