//! Sessions, locks and retries.

pub mod advisory;
pub mod connect;
pub mod retry;

pub use connect::{config, connect};
