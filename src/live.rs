//! What `status` and the metrics read next to a migration's control row.

use crate::control::{self, MigrationRow, Phase};
use crate::inspect::{Live, Runner};
use crate::plan_file::Method;
use anyhow::Result;
use tokio_postgres::Client;

/// What `status` reads next to a migration's control row: the runner
/// holding the table's advisory lock, the pages the mover has still to
/// read, and the rates of the recent batches.
pub async fn live(client: &Client, m: &MigrationRow) -> Result<Live> {
    let runner = client
        .query_opt(
            "SELECT a.pid, coalesce(host(a.client_addr), 'local'), a.backend_start \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.classid::int = $1 AND l.objid::int = hashtext($2) \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&crate::db::advisory::LOCK_CLASS, &m.table_name],
        )
        .await?
        .map(|r| Runner {
            pid: r.get(0),
            client: r.get(1),
            since: r.get(2),
        });
    let source = match (m.blueprint.method, m.phase) {
        (Method::Move, Phase::Routed) => Some(&m.blueprint.old),
        (Method::Sync, Phase::Prepared) => Some(&m.blueprint.table),
        _ => None,
    };
    let pages_left = match source {
        Some(rel) if m.state == "active" && crate::catalog::relation_oid(client, rel).await?.is_some() => {
            Some((crate::method::batches::pages_of(client, rel).await? - m.cursor_block).max(0))
        }
        _ => None,
    };
    Ok(Live {
        runner,
        pages_left,
        rate: control::recent_rate(client, m.id, "forward").await?,
        back_rate: control::recent_rate(client, m.id, "back").await?,
    })
}
