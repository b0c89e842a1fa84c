//! The desktop app's engine side: what the windows show and do, with no UI toolkit in it
//! (the Tauri shell in `src-tauri/` only forwards commands and events).

pub mod alerts;
pub mod conditions;
pub mod dto;
pub mod engine;
pub mod platform;
pub mod relocate;
pub mod tray;
pub mod words;

pub use engine::{AppError, Engine, EngineConfig};
