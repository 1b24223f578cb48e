//! The process dies inside every phase (mid-transaction and right after a
//! commit, mid-batch included); the table stays whole and `resume` ends
//! the migration with every row as it was.

mod common;
use common::*;

async fn crash_then_resume(point: &str) {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 25, 2500).await;
    let before = all_events(&db).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(200, ""));
    let plan = plan.to_str().unwrap();
    let run = db.migrate_env(&["apply", plan], &[("MIGRATE_FAILPOINT", point)]).await;
    assert_eq!(
        run.code, 86,
        "{point}: the failpoint should end the process:\n{}",
        run.stderr
    );
    // Whatever was committed, the table's name serves every row.
    assert_eq!(all_events(&db).await, before, "{point}: rows changed after the crash");
    let status = db.migrate(&["status", plan]).await;
    status.ok();
    assert!(
        status.stdout.contains("Runner: none attached"),
        "{point}: {}",
        status.stdout
    );
    let run = db.migrate(&["resume", plan]).await;
    run.ok();
    assert_eq!(
        all_events(&db).await,
        before,
        "{point}: rows changed by the resumed run"
    );
    assert_eq!(
        db.scalar_str("SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('public.workflow_events'))")
            .await
            .as_deref(),
        Some("p"),
        "{point}"
    );
    let left: Vec<String> = db.objects().await.into_iter().filter(|o| o.contains("__")).collect();
    assert!(left.is_empty(), "{point}: left behind: {left:?}");
    assert_eq!(
        db.scalar_str("SELECT state || '/' || phase FROM repartition.migrations")
            .await
            .as_deref(),
        Some("done/finished")
    );
}

macro_rules! crash_tests {
    ($($name:ident => $point:expr,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            crash_then_resume($point).await;
        }
    )*};
}

crash_tests! {
    prepare_before_commit => "prepare:before-commit",
    prepare_after_commit => "prepare:after-commit",
    route_before_commit => "route:before-commit",
    route_after_commit => "route:after-commit",
    first_batch_before_commit => "batch-forward:before-commit",
    mid_batch => "batch-forward:before-commit@4",
    between_batches => "batch-forward:after-commit@6",
    before_sweep => "move:before-sweep",
    last_batches => "batch-forward:before-commit@12",
    swap_before_commit => "swap:before-commit",
    swap_after_commit => "swap:after-commit",
    finish_before_commit => "finish:before-commit",
}

/// Rows at the end of the emptied original keep it at its size (VACUUM
/// gives back only the empty pages after the last row); a sweep reads only
/// the pages that still hold rows, found through the row-identity index,
/// and moves those rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_reads_only_the_pages_that_still_hold_rows() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 25, 20_000).await;
    let before = all_events(&db).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(1000, ""));
    let plan = plan.to_str().unwrap();
    let run = db
        .migrate_env(&["apply", plan], &[("MIGRATE_FAILPOINT", "move:before-sweep")])
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    let main_pass = db.scalar_i64("SELECT count(*) FROM repartition.batches").await;
    // Fifty rows go back into the original; with no free space known in
    // its emptied pages they land at its end.
    db.exec(
        "WITH m AS (DELETE FROM public.workflow_events__part WHERE id IN \
           (SELECT id FROM public.workflow_events__part ORDER BY id LIMIT 50) RETURNING *) \
         INSERT INTO public.workflow_events__orig SELECT * FROM m",
    )
    .await;
    let size = db
        .scalar_i64("SELECT pg_relation_size('public.workflow_events__orig') / 8192")
        .await;
    let first_row_page = db
        .scalar_i64("SELECT min((ctid::text::point)[0])::int8 FROM ONLY public.workflow_events__orig")
        .await;
    assert!(
        size > 100 && first_row_page > size / 2,
        "{first_row_page} of {size} pages"
    );
    db.migrate(&["resume", plan]).await.ok();
    assert_eq!(all_events(&db).await, before);
    // The sweep's batches began at the first page holding a row, moved the
    // fifty rows, and never read the emptied pages before it.
    let swept = db
        .scalar_str(&format!(
            "SELECT min(from_block) || ' ' || sum(rows) FROM repartition.batches WHERE batch_no > {main_pass}"
        ))
        .await
        .unwrap();
    assert_eq!(swept, format!("{first_row_page} 50"), "main pass: {main_pass} batches");
}
