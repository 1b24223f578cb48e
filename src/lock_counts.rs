//! This process's strong-lock sections and lock-timeout retries, counted
//! where they happen and read by the metrics. A leaf: it depends on
//! nothing, so that the executor and the retries can count without
//! knowing who reads.

use std::sync::atomic::{AtomicU64, Ordering};

static SECTIONS: AtomicU64 = AtomicU64::new(0);
static HELD_US: AtomicU64 = AtomicU64::new(0);
static WAITED_US: AtomicU64 = AtomicU64::new(0);
static RETRIES: AtomicU64 = AtomicU64::new(0);

/// The counts since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LockCounters {
    pub sections: u64,
    pub held_seconds: f64,
    pub waited_seconds: f64,
    pub retries: u64,
}

/// A strong-lock section committed, having held its locks `held_ms` after
/// its `LOCK` waited `wait_ms`.
pub fn section(held_ms: f64, wait_ms: f64) {
    SECTIONS.fetch_add(1, Ordering::Relaxed);
    HELD_US.fetch_add((held_ms.max(0.0) * 1000.0) as u64, Ordering::Relaxed);
    WAITED_US.fetch_add((wait_ms.max(0.0) * 1000.0) as u64, Ordering::Relaxed);
}

/// A step stepped back from a lock timeout or a deadlock, to try again.
pub fn retry() {
    RETRIES.fetch_add(1, Ordering::Relaxed);
}

pub fn now() -> LockCounters {
    LockCounters {
        sections: SECTIONS.load(Ordering::Relaxed),
        held_seconds: HELD_US.load(Ordering::Relaxed) as f64 / 1e6,
        waited_seconds: WAITED_US.load(Ordering::Relaxed) as f64 / 1e6,
        retries: RETRIES.load(Ordering::Relaxed),
    }
}
