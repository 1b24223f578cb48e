//! Crash points for the resume tests: with `MIGRATE_FAILPOINT=name` (or
//! `name@N` for the N-th time the point is reached) the process ends on
//! the spot, as a SIGKILL would end it, in the middle of whatever
//! transaction is open. Unset, a failpoint costs one environment lookup,
//! cached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// Exit code of a process ended by a failpoint.
pub const EXIT_CODE: i32 = 86;

pub fn hit(name: &str) {
    let spec = SPEC.get_or_init(|| {
        let v = std::env::var("MIGRATE_FAILPOINT").ok()?;
        match v.split_once('@') {
            Some((n, count)) => Some((n.to_string(), count.parse().unwrap_or(1))),
            None => Some((v, 1)),
        }
    });
    if let Some((want, count)) = spec {
        if want == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *count {
            eprintln!("migrate: failpoint {name} reached; exiting");
            // No destructors, no COMMIT, no ROLLBACK: the server sees the
            // connection drop, as after a kill.
            std::process::exit(EXIT_CODE);
        }
    }
}
