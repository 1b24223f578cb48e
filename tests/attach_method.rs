//! The attach method: the original becomes the first partition without
//! moving a row. The application writes throughout (upserts and
//! SELECT ... FOR UPDATE included); the migrator dies in the constrain
//! phase and resumes; the swap adopts the indexes built concurrently
//! instead of building any under its lock.

mod common;
use common::workload::{compare, Features, Workload};
use common::*;
use std::time::{Duration, Instant};

fn attach_plan(extra: &str) -> String {
    event_plan(1000, extra).replace("method: move", "method: attach")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attach_under_load_through_a_crash() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 200, 20_000).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &attach_plan(""));
    let plan = plan.to_str().unwrap();
    let started = Instant::now();
    // Keys stay below the cutoff (the start of next month) until the swap.
    let features = Features {
        upsert_and_lock: true,
        future_days: 0,
        ..Default::default()
    };
    let workload = Workload::start_with(&db, 4, 31, features).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = db
        .migrate_env(&["apply", plan], &[("MIGRATE_FAILPOINT", "constrain:after-check")])
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = db
        .migrate_env(
            &["resume", plan, "--until", "prepare"],
            &[("MIGRATE_FAILPOINT", "constrain:after-index")],
        )
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    db.migrate(&["resume", plan, "--until", "prepare"]).await.ok();
    let built: Vec<u32> = db
        .client()
        .await
        .query(
            "SELECT indexrelid FROM pg_index WHERE indrelid = 'workflow_events'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.migrate(&["resume", plan]).await.ok();
    // The swap adopted the indexes: the first partition has exactly the
    // indexes it had, none built under the swap's lock.
    let after: Vec<u32> = db
        .client()
        .await
        .query(
            "SELECT indexrelid FROM pg_index WHERE indrelid = 'workflow_events_p0'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let new: Vec<&u32> = after.iter().filter(|o| !built.contains(o)).collect();
    assert!(new.is_empty(), "the swap built indexes under its lock: {new:?}");
    assert_eq!(after.len(), built.len() - 1, "only the original primary key gave way");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = workload.stop().await;
    assert!(
        report.errors.is_empty(),
        "the application saw errors: {:?}",
        &report.errors[..report.errors.len().min(8)]
    );
    let compared = compare(&db, &report.oracle).await;
    println!(
        "attach under load: {} operations, 0 errors, {} rows compared, {:.1}s",
        report.total_ops(),
        compared,
        started.elapsed().as_secs_f64()
    );
    assert!(report.ops.get("insert ... on conflict do update").copied().unwrap_or(0) > 0);
    assert!(
        report
            .ops
            .get("select for update, then increment")
            .copied()
            .unwrap_or(0)
            > 0
    );
    assert_eq!(
        db.scalar_str("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = 'workflow_events_p0'::regclass")
            .await
            .unwrap(),
        format!(
            "FOR VALUES FROM (MINVALUE) TO ('{}')",
            db.scalar_str("SELECT blueprint->'attach'->>'cutoff' FROM repartition.migrations")
                .await
                .unwrap()
                .trim_end_matches(":00")
        )
    );
    // New keys go to the new partitions.
    db.exec("INSERT INTO workflow_events (run_id, type, ts) VALUES ((SELECT min(id) FROM workflow_runs), 'future', now() + interval '45 days')")
        .await;
    let home = db
        .scalar_str("SELECT tableoid::regclass::text FROM workflow_events WHERE type = 'future'")
        .await
        .unwrap();
    assert!(!home.contains("_p0"), "a new key landed in {home}");
    let left: Vec<String> = db
        .objects()
        .await
        .into_iter()
        .filter(|o| o.contains("__cutoff"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_crashes_and_aborts() {
    let cluster = Cluster::start();
    for point in ["prepare:before-commit", "swap:before-commit", "swap:after-commit"] {
        let db = cluster.database().await;
        seed(&db, 10, 1500).await;
        let before = all_events(&db).await;
        let dir = scratch();
        let plan = db.plan_file(dir.path(), "p.yaml", &attach_plan(""));
        let plan = plan.to_str().unwrap();
        let run = db.migrate_env(&["apply", plan], &[("MIGRATE_FAILPOINT", point)]).await;
        assert_eq!(run.code, 86, "{point}: {}", run.stderr);
        assert_eq!(all_events(&db).await, before, "{point}");
        db.migrate(&["resume", plan]).await.ok();
        assert_eq!(all_events(&db).await, before, "{point}");
    }
    for until in ["constrain", "prepare"] {
        let db = cluster.database().await;
        seed(&db, 10, 1500).await;
        let objects = db.objects().await;
        let dir = scratch();
        let plan = db.plan_file(dir.path(), "p.yaml", &attach_plan(""));
        let plan = plan.to_str().unwrap();
        db.migrate(&["apply", plan, "--until", until]).await.ok();
        db.exec("INSERT INTO workflow_events (run_id, type) VALUES (2, 'x')")
            .await;
        let expected = all_events(&db).await;
        db.migrate(&["abort", plan]).await.ok();
        assert_eq!(all_events(&db).await, expected, "{until}");
        assert_eq!(
            db.objects().await,
            objects,
            "abort after {until} left the database different"
        );
    }
    // A cutoff below existing keys is refused before anything changes.
    let db = cluster.database().await;
    seed(&db, 5, 300).await;
    let dir = scratch();
    let plan = db.plan_file(
        dir.path(),
        "p.yaml",
        &attach_plan("attach:\n  cutoff: \"2020-01-01\"\n"),
    );
    let run = db.migrate(&["plan", plan.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("at or after the cutoff"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_breaks_up_the_first_partition_under_load() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 200, 20_000).await;
    let dir = scratch();
    let plan = db.plan_file(
        dir.path(),
        "p.yaml",
        &attach_plan("  pause: 2ms\n").replace("size: 1000", "size: 300"),
    );
    let plan = plan.to_str().unwrap();
    db.migrate(&["apply", plan]).await.ok();
    let started = Instant::now();
    let workload = Workload::start(&db, 4, 37).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = db
        .migrate_env(
            &["split", plan],
            &[("MIGRATE_FAILPOINT", "batch-forward:after-commit@8")],
        )
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.migrate(&["resume", plan]).await.ok();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = workload.stop().await;
    assert!(
        report.errors.is_empty(),
        "the application saw errors: {:?}",
        &report.errors[..report.errors.len().min(8)]
    );
    let compared = compare(&db, &report.oracle).await;
    println!(
        "split under load: {} operations, 0 errors, {} rows compared, {:.1}s",
        report.total_ops(),
        compared,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM pg_class WHERE oid = to_regclass('public.workflow_events_p0')")
            .await,
        0,
        "the emptied first partition is dropped"
    );
    assert!(
        db.scalar_i64("SELECT count(*) FROM pg_inherits WHERE inhparent = 'workflow_events'::regclass")
            .await
            >= 5
    );
    let left: Vec<String> = db.objects().await.into_iter().filter(|o| o.contains("__")).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_aborted_midway_reattaches_the_first_partition() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 20, 3000).await;
    let dir = scratch();
    let plan = db.plan_file(
        dir.path(),
        "p.yaml",
        &attach_plan("").replace("size: 1000", "size: 200"),
    );
    let plan = plan.to_str().unwrap();
    db.migrate(&["apply", plan]).await.ok();
    let objects = db.objects().await;
    let run = db
        .migrate_env(
            &["split", plan],
            &[("MIGRATE_FAILPOINT", "batch-forward:after-commit@4")],
        )
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    db.exec("INSERT INTO workflow_events (run_id, type) VALUES ((SELECT min(id) FROM workflow_runs), 'during split'); UPDATE workflow_events SET n = 3 WHERE id < 20;")
        .await;
    let expected = all_events(&db).await;
    db.migrate(&["abort", plan]).await.ok();
    assert_eq!(all_events(&db).await, expected);
    assert_eq!(db.objects().await, objects, "abort left the database different");
    // The split can run again and finish.
    db.migrate(&["split", plan]).await.ok();
    assert_eq!(all_events(&db).await, expected);
}

const LIST_PLAN: &str = "table: public.workflow_events
partition:
  by: list
  column: partition_id
  initial: 100
  premake: 2
method: attach
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attach_by_list_on_a_logical_column_under_load() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 200, 15_000).await;
    let objects = db.objects().await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "l.yaml", LIST_PLAN);
    let plan = plan.to_str().unwrap();
    // Abort after constrain: the added column goes again.
    db.migrate(&["apply", plan, "--until", "constrain"]).await.ok();
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM workflow_events WHERE partition_id = 100")
            .await,
        15_000
    );
    db.migrate(&["abort", plan]).await.ok();
    assert_eq!(db.objects().await, objects);
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM pg_attribute WHERE attrelid = 'workflow_events'::regclass AND attname = 'partition_id'").await,
        0
    );

    let features = Features {
        upsert_and_lock: true,
        ..Features::default()
    };
    let workload = Workload::start_with(&db, 4, 41, features).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = db
        .migrate_env(&["apply", plan], &[("MIGRATE_FAILPOINT", "constrain:after-check")])
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    db.migrate(&["resume", plan]).await.ok();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = workload.stop().await;
    assert!(
        report.errors.is_empty(),
        "the application saw errors: {:?}",
        &report.errors[..report.errors.len().min(8)]
    );
    let compared = compare(&db, &report.oracle).await;
    println!(
        "attach by list under load: {} operations, 0 errors, {compared} rows compared",
        report.total_ops()
    );
    assert_eq!(
        db.scalar_str(
            "SELECT string_agg(c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid), ', ' ORDER BY c.relname) \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'workflow_events'::regclass"
        )
        .await
        .unwrap(),
        "workflow_events_p100 FOR VALUES IN ('100'), workflow_events_p101 FOR VALUES IN ('101'), workflow_events_p102 FOR VALUES IN ('102')"
    );
    db.exec("INSERT INTO workflow_events (run_id, type, partition_id) VALUES ((SELECT min(id) FROM workflow_runs), 'next', 101)")
        .await;
    assert_eq!(
        db.scalar_str("SELECT tableoid::regclass::text FROM workflow_events WHERE type = 'next'")
            .await
            .as_deref(),
        Some("workflow_events_p101")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_crashes_in_route_and_swap() {
    let cluster = Cluster::start();
    for point in [
        "route:before-commit",
        "route:after-commit",
        "swap:before-commit",
        "finish:before-commit",
    ] {
        let db = cluster.database().await;
        seed(&db, 10, 2000).await;
        let dir = scratch();
        let plan = db.plan_file(
            dir.path(),
            "p.yaml",
            &attach_plan("").replace("size: 1000", "size: 300"),
        );
        let plan = plan.to_str().unwrap();
        db.migrate(&["apply", plan]).await.ok();
        let before = all_events(&db).await;
        let run = db.migrate_env(&["split", plan], &[("MIGRATE_FAILPOINT", point)]).await;
        assert_eq!(run.code, 86, "{point}: {}", run.stderr);
        assert_eq!(all_events(&db).await, before, "{point}: rows changed after the crash");
        db.migrate(&["resume", plan]).await.ok();
        assert_eq!(all_events(&db).await, before, "{point}");
        assert_eq!(
            db.scalar_i64("SELECT count(*) FROM pg_class WHERE oid = to_regclass('public.workflow_events_p0')")
                .await,
            0,
            "{point}"
        );
    }
}
