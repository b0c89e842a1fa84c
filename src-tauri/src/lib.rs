//! What the two programs of the desktop app share: the messages between the app process
//! (`p2pds-desktop`: engine, tray, notifications) and the window process (`p2pds-window`: the
//! web view).

#[cfg(unix)]
pub mod ipc;
