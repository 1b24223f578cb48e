//! The sync method: the application keeps using the original table
//! (upserts and SELECT ... FOR UPDATE included) while triggers mirror its
//! writes; the migrator is killed mid-backfill and resumed; after the swap
//! the application writes on, `unswap` returns to the original with every
//! write, the swap is repeated and the retired original cleaned up. An
//! oracle of committed operations is compared with every row at each stage.

mod common;
use common::workload::{compare, Features, Workload};
use common::*;
use std::time::{Duration, Instant};

fn sync_plan(batch: u64, extra: &str) -> String {
    event_plan(batch, extra).replace("method: move", "method: sync")
}

async fn relkind(db: &Db, name: &str) -> Option<String> {
    db.scalar_str(&format!(
        "SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('{name}'))"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_under_load_through_kill_swap_unswap_and_cleanup() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 200, 20_000).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &sync_plan(200, "  pause: 3ms\n"));
    let plan = plan.to_str().unwrap();
    let started = Instant::now();
    let features = Features {
        upsert_and_lock: true,
        ..Features::default()
    };
    let workload = Workload::start_with(&db, 4, 23, features).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let run = db
        .migrate_env(
            &["apply", plan],
            &[("MIGRATE_FAILPOINT", "batch-forward:after-commit@10")],
        )
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.migrate(&["resume", plan]).await.ok();
    assert_eq!(relkind(&db, "public.workflow_events").await.as_deref(), Some("p"));
    assert_eq!(
        relkind(&db, "public.workflow_events__retired").await.as_deref(),
        Some("r")
    );
    let events = db
        .scalar_str("SELECT string_agg(detail, ' | ') FROM repartition.events WHERE kind = 'verify'")
        .await
        .unwrap();
    assert!(events.contains("0 ranges repaired"), "{events}");
    tokio::time::sleep(Duration::from_millis(700)).await;

    // Back to the original: every write made since the swap is there.
    db.migrate(&["unswap", plan]).await.ok();
    assert_eq!(relkind(&db, "public.workflow_events").await.as_deref(), Some("r"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let snapshot = workload.stop().await;
    assert!(
        snapshot.errors.is_empty(),
        "the application saw errors: {:?}",
        &snapshot.errors[..snapshot.errors.len().min(8)]
    );
    let compared_after_unswap = compare(&db, &snapshot.oracle).await;
    // The partitioned copy was kept in step too.
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM public.workflow_events__part").await,
        compared_after_unswap as i64
    );

    // Swap again under load, then clean up.
    let workload = Workload::start_with(&db, 4, 29, features).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.migrate(&["swap", plan]).await.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    db.migrate(&["cleanup", plan]).await.ok();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = workload.stop().await;
    assert!(
        report.errors.is_empty(),
        "the application saw errors: {:?}",
        &report.errors[..report.errors.len().min(8)]
    );
    let compared = compare(&db, &report.oracle).await;
    println!(
        "sync under load: {} + {} operations, 0 errors, {} rows compared after unswap, {} after cleanup, {:.1}s",
        snapshot.total_ops(),
        report.total_ops(),
        compared_after_unswap,
        compared,
        started.elapsed().as_secs_f64()
    );
    for (op, n) in &report.ops {
        println!("  {op}: {n}");
    }
    assert!(report.ops.get("insert ... on conflict do update").copied().unwrap_or(0) > 0);
    assert!(
        report
            .ops
            .get("select for update, then increment")
            .copied()
            .unwrap_or(0)
            > 0
    );
    assert_eq!(relkind(&db, "public.workflow_events__retired").await, None);
    let left: Vec<String> = db.objects().await.into_iter().filter(|o| o.contains("__")).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(
        db.scalar_str("SELECT state FROM repartition.migrations")
            .await
            .as_deref(),
        Some("done")
    );
}

async fn crash_then_continue(point: &str, setup: &[&str], again: &[&str]) {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 20, 2500).await;
    let before = all_events(&db).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &sync_plan(300, ""));
    let plan = plan.to_str().unwrap();
    for cmd in setup {
        db.migrate(&[cmd, plan]).await.ok();
    }
    let cmd = again[0];
    let run = db.migrate_env(&[cmd, plan], &[("MIGRATE_FAILPOINT", point)]).await;
    assert_eq!(run.code, 86, "{point}: {}", run.stderr);
    assert_eq!(all_events(&db).await, before, "{point}: rows changed after the crash");
    for cmd in again {
        db.migrate(&[cmd, plan]).await.ok();
    }
    assert_eq!(all_events(&db).await, before, "{point}");
    if !again.contains(&"cleanup") {
        db.exec("INSERT INTO workflow_events (run_id, type) VALUES (1, 'after')")
            .await;
        db.migrate(&["cleanup", plan]).await.ok();
        assert_eq!(
            db.scalar_i64("SELECT count(*) FROM workflow_events").await,
            before.len() as i64 + 1
        );
    }
    let left: Vec<String> = db.objects().await.into_iter().filter(|o| o.contains("__")).collect();
    assert!(left.is_empty(), "{point}: left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_crashes_in_prepare_backfill_and_verify() {
    for point in [
        "prepare:before-commit",
        "batch-forward:before-commit@3",
        "batch-forward:after-commit@2",
        "verify:before-record",
    ] {
        crash_then_continue(point, &[], &["apply"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_crashes_in_swap_unswap_and_cleanup() {
    crash_then_continue("swap:before-commit", &[], &["apply"]).await;
    crash_then_continue("swap:after-commit", &[], &["apply"]).await;
    crash_then_continue("unswap:before-commit", &["apply"], &["unswap", "swap"]).await;
    crash_then_continue("cleanup:before-commit", &["apply"], &["cleanup"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_abort_from_every_phase() {
    let cluster = Cluster::start();
    for until in ["prepare", "backfill", "verify"] {
        let db = cluster.database().await;
        seed(&db, 10, 1500).await;
        let objects = db.objects().await;
        let dir = scratch();
        let plan = db.plan_file(dir.path(), "p.yaml", &sync_plan(300, ""));
        let plan = plan.to_str().unwrap();
        db.migrate(&["apply", plan, "--until", until]).await.ok();
        db.exec("UPDATE workflow_events SET n = 5 WHERE id < 50; INSERT INTO workflow_events (run_id, type) VALUES (2, 'x')").await;
        let expected = all_events(&db).await;
        db.migrate(&["abort", plan]).await.ok();
        assert_eq!(all_events(&db).await, expected, "{until}");
        assert_eq!(
            db.objects().await,
            objects,
            "abort after {until} left the database different"
        );
    }
    // After the swap, abort is refused and points at unswap.
    let db = cluster.database().await;
    seed(&db, 5, 300).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &sync_plan(300, ""));
    let plan = plan.to_str().unwrap();
    db.migrate(&["apply", plan]).await.ok();
    let run = db.migrate(&["abort", plan]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("migrate unswap"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_finds_and_repairs_a_damaged_copy() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 10, 3000).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &sync_plan(500, ""));
    let plan = plan.to_str().unwrap();
    db.migrate(&["apply", plan, "--until", "backfill"]).await.ok();
    // Damage the copy behind the mirror's back.
    db.exec(
        "DELETE FROM workflow_events__part WHERE id IN (5, 6, 7);
         UPDATE workflow_events__part SET n = n + 1 WHERE id = 100;",
    )
    .await;
    let run = db.migrate(&["resume", plan, "--until", "verify"]).await;
    run.ok();
    let detail = db
        .scalar_str("SELECT detail FROM repartition.events WHERE kind = 'verify'")
        .await
        .unwrap();
    assert!(!detail.contains(" 0 ranges repaired"), "{detail}");
    assert!(run.stderr.contains("a range differs"), "{}", run.stderr);
    let original = all_events(&db).await;
    db.migrate(&["swap", plan]).await.ok();
    assert_eq!(all_events(&db).await, original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hash_partitioning_by_uuid_with_move_and_sync() {
    let cluster = Cluster::start();
    for method in ["move", "sync"] {
        let db = cluster.database().await;
        db.exec(
            "CREATE TABLE public.sessions (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), owner text NOT NULL, data jsonb NOT NULL DEFAULT '{}');
             INSERT INTO sessions (owner) SELECT 'u' || g FROM generate_series(1, 6000) g;",
        )
        .await;
        let before: i64 = db.scalar_i64("SELECT count(*) FROM sessions").await;
        let dir = scratch();
        let plan = db.plan_file(
            dir.path(),
            "h.yaml",
            &format!("table: public.sessions\npartition:\n  by: hash\n  column: id\n  modulus: 8\nmethod: {method}\nbatch:\n  size: 500\n"),
        );
        let plan = plan.to_str().unwrap();
        let p = db.migrate(&["plan", plan]).await;
        p.ok();
        assert!(
            p.stdout.contains("FOR VALUES WITH (MODULUS 8, REMAINDER 7)"),
            "{}",
            p.stdout
        );
        db.migrate(&["apply", plan, "--until", "prepare"]).await.ok();
        // Writes while the migration runs: through the view (move) or the
        // table (sync).
        let dbw = db.clone();
        let writer = tokio::spawn(async move {
            let c = dbw.client().await;
            let mut n = 0i64;
            for i in 0..300 {
                c.execute("INSERT INTO sessions (owner) VALUES ($1)", &[&format!("live{i}")])
                    .await
                    .unwrap();
                c.execute(
                    "UPDATE sessions SET data = '{\"x\": 1}' WHERE owner = $1",
                    &[&format!("u{}", i + 1)],
                )
                .await
                .unwrap();
                n += 1;
            }
            n
        });
        db.migrate(&["resume", plan]).await.ok();
        let n = writer.await.unwrap();
        if method == "sync" {
            db.migrate(&["cleanup", plan]).await.ok();
        }
        assert_eq!(
            db.scalar_i64("SELECT count(*) FROM sessions").await,
            before + n,
            "{method}"
        );
        assert_eq!(
            db.scalar_i64("SELECT count(*) FROM sessions WHERE data = '{\"x\": 1}'")
                .await,
            300,
            "{method}"
        );
        assert_eq!(
            db.scalar_i64("SELECT count(*) FROM pg_inherits WHERE inhparent = 'sessions'::regclass")
                .await,
            8,
            "{method}"
        );
        assert!(
            db.scalar_i64("SELECT min(c) FROM (SELECT count(*) AS c FROM sessions GROUP BY tableoid) s")
                .await
                > 500,
            "{method}: rows spread over the hash partitions"
        );
    }
}
