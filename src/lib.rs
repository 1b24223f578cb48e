//! Repartition live PostgreSQL tables with zero downtime.
//!
//! A YAML plan is resolved against the live catalog into a [`blueprint`];
//! each [`method`] renders its list of steps from it; the [`runner`] runs
//! the steps through the executor of [`exec`] and records progress in the
//! [`control`] table.

pub mod access;
pub mod blueprint;
pub mod catalog;
pub mod cli;
pub mod control;
pub mod db;
pub mod error;
pub mod exec;
pub mod failpoint;
pub mod findings;
pub mod fleet;
pub mod hooks;
pub mod inspect;
pub mod latency;
pub mod live;
pub mod lock_counts;
pub mod maintain;
pub mod method;
pub mod metrics;
pub mod partition;
pub mod plan_file;
pub mod preflight;
pub mod progress;
pub mod report;
pub mod runner;
pub mod sql;
pub mod throttle;
