//! Repartition live PostgreSQL tables with zero downtime.
//!
//! A YAML plan is resolved against the live catalog into a [`blueprint`];
//! [`phase`] renders each phase's SQL from it; the [`runner`] applies the
//! phases and records progress in the [`control`] table.

pub mod aborter;
pub mod access;
pub mod attach;
pub mod blueprint;
pub mod catalog;
pub mod cli;
pub mod control;
pub mod db;
pub mod error;
pub mod failpoint;
pub mod hooks;
pub mod indexer;
pub mod inspect;
pub mod maintain;
pub mod mover;
pub mod partition;
pub mod phase;
pub mod plan_file;
pub mod preflight;
pub mod progress;
pub mod report;
pub mod runner;
pub mod sql;
pub mod throttle;
pub mod verify;
