//! Materialized views that read the table are built again on the
//! partitioned table after the swap and take their names in one short
//! transaction: a reader of the view never gets an error, and afterwards
//! the view (its unique index, grant and comment kept) refreshes from the
//! partitioned table.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MATVIEW: &str = "
CREATE MATERIALIZED VIEW public.event_counts AS SELECT type, count(*) AS events FROM public.workflow_events GROUP BY type;
CREATE UNIQUE INDEX event_counts_type ON public.event_counts (type);
GRANT SELECT ON public.event_counts TO app_rw;
COMMENT ON MATERIALIZED VIEW public.event_counts IS 'events by type';
";

async fn rebuilt(method: &str) {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 40, 6000).await;
    db.exec(MATVIEW).await;
    let dir = scratch();
    let yaml = event_plan(500, "").replace("method: move", &format!("method: {method}"));
    let plan = db.plan_file(dir.path(), "p.yaml", &yaml);
    let plan = plan.to_str().unwrap();
    let shown = db.migrate(&["plan", plan]).await;
    shown.ok();
    assert!(
        shown
            .stdout
            .contains("CREATE MATERIALIZED VIEW \"public\".\"event_counts__new\" AS"),
        "{}",
        shown.stdout
    );
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let (db, stop) = (db.clone(), stop.clone());
        async move {
            let c = db.client().await;
            let (mut reads, mut errors) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match c
                    .query("SELECT sum(events)::bigint FROM public.event_counts", &[])
                    .await
                {
                    Ok(_) => reads += 1,
                    Err(e) => errors.push(common::workload::db_message(&e)),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (reads, errors)
        }
    });
    db.migrate(&["apply", plan]).await.ok();
    if method == "sync" {
        db.migrate(&["cleanup", plan]).await.ok();
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, errors) = reader.await.unwrap();
    assert!(
        errors.is_empty(),
        "{method}: a reader of the materialized view saw {errors:?}"
    );
    assert!(reads > 10, "{method}: {reads} reads");
    // It reads the partitioned table now.
    db.exec("INSERT INTO workflow_events (run_id, type) SELECT min(id), 'fresh' FROM workflow_runs")
        .await;
    db.exec("REFRESH MATERIALIZED VIEW CONCURRENTLY public.event_counts")
        .await;
    assert_eq!(
        db.scalar_i64("SELECT events FROM public.event_counts WHERE type = 'fresh'")
            .await,
        1,
        "{method}"
    );
    assert_eq!(
        db.scalar_i64(
            "SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid \
             WHERE r.ev_class = 'public.event_counts'::regclass AND d.refobjid = 'public.workflow_events'::regclass"
        )
        .await,
        1,
        "{method}"
    );
    assert_eq!(
        db.scalar_str("SELECT obj_description('public.event_counts'::regclass, 'pg_class')")
            .await
            .as_deref(),
        Some("events by type")
    );
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM pg_indexes WHERE indexname = 'event_counts_type'")
            .await,
        1
    );
    assert_eq!(
        db.scalar_str("SELECT has_table_privilege('app_rw', 'public.event_counts', 'SELECT')::text")
            .await
            .as_deref(),
        Some("true")
    );
    // (The attach method's first partition keeps its own keys, renamed `__o`.)
    let left: Vec<String> = db
        .objects()
        .await
        .into_iter()
        .filter(|o| o.contains("__") && !o.contains("__o"))
        .collect();
    assert!(left.is_empty(), "{method}: left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_materialized_view_by_move() {
    rebuilt("move").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_materialized_view_by_sync() {
    rebuilt("sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_materialized_view_by_attach() {
    rebuilt("attach").await;
}
