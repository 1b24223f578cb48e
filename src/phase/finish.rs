//! Phase 5, finish: the emptied original is dropped (or kept, as the plan
//! says) in its own transaction after the swap has committed. Dropping it
//! removes its foreign keys' triggers from the referenced tables, which
//! takes a lock there; no application statement waits on the emptied table,
//! so this wait can form no cycle with the application, and it is timed
//! and retried like every other.

use super::session_limits;
use crate::blueprint::Blueprint;
use crate::sql::Statement;

pub fn statements(bp: &Blueprint) -> Vec<Statement> {
    if bp.settings.keep_old {
        return Vec::new();
    }
    let mut s = session_limits(bp);
    s.push(Statement::new(
        "drop the emptied original",
        format!("DROP TABLE {}", bp.old),
    ));
    s
}
