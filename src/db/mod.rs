//! Sessions, locks and retries.

pub mod advisory;
pub mod connect;
pub mod pgpass;
pub mod retry;
pub mod tls;

pub use connect::{config, connect};
