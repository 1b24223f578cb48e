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
    snapshot.assert_no_errors("");
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
    report.assert_no_errors("");
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
        db.exec("INSERT INTO workflow_events (run_id, type) VALUES ((SELECT min(id) FROM workflow_runs), 'after')")
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

/// The verification hashes some types by value; a value that changes only
/// in its spelling is still a difference: a numeric's scale, a jsonb
/// number's, an interval's units, the sign of a float's zero, the case of
/// a text in a case-insensitive collation. Each is written to the copy
/// behind the mirror's back, in its own row, and every one is repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_sees_a_value_spelled_differently() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 10, 3000).await;
    db.exec(
        "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         ALTER TABLE workflow_events
             ADD COLUMN amount numeric NOT NULL DEFAULT 1.0,
             ADD COLUMN doc jsonb NOT NULL DEFAULT '{\"a\": 1.0}',
             ADD COLUMN span interval NOT NULL DEFAULT '1 day',
             ADD COLUMN ratio float8 NOT NULL DEFAULT 0,
             ADD COLUMN label text COLLATE ci NOT NULL DEFAULT 'a',
             ADD COLUMN at timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00';",
    )
    .await;
    // One row of each month, each in a range of its own, so that the
    // repair of one range cannot hide a difference another one missed.
    let ids: Vec<i64> = db
        .client()
        .await
        .query(
            "INSERT INTO workflow_events (run_id, ts, type, payload, n) \
             SELECT 1, date_trunc('month', now()) - k * interval '1 month' + interval '1 hour', 'spelled', '{}', k \
             FROM generate_series(0, 5) k RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &sync_plan(500, ""));
    let plan = plan.to_str().unwrap();
    db.migrate(&["apply", plan, "--until", "backfill"]).await.ok();
    let damage = [
        "amount = 1.00",
        "doc = '{\"a\": 1.00}'",
        "span = '24 hours'",
        "ratio = '-0'",
        "label = 'A'",
        "at = '2026-01-01 00:00:00.000001+00'",
    ];
    assert_eq!(ids.len(), damage.len());
    for (set, id) in damage.iter().zip(&ids) {
        db.exec(&format!("UPDATE workflow_events__part SET {set} WHERE id = {id}"))
            .await;
    }
    let as_text = "SELECT count(*) FROM (SELECT t::text FROM ONLY workflow_events t \
                   EXCEPT ALL SELECT t::text FROM workflow_events__part t) d";
    assert_eq!(db.scalar_i64(as_text).await, damage.len() as i64);
    db.migrate(&["resume", plan, "--until", "verify"]).await.ok();
    let detail = db
        .scalar_str("SELECT detail FROM repartition.events WHERE kind = 'verify'")
        .await
        .unwrap();
    assert!(detail.contains("; 6 ranges repaired"), "{detail}");
    assert_eq!(db.scalar_i64(as_text).await, 0, "{detail}");
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

/// List partitioning on an existing column (a tenant or a logical
/// partition number, as in the GitLab CI design), with move and with sync:
/// one partition per value the table holds plus the premade values after
/// the highest, the migrator killed mid-move and resumed, the application
/// writing all along (some of it moving rows between values), and every row
/// compared with the oracle.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_partitioning_on_an_existing_column_with_move_and_sync() {
    let cluster = Cluster::start();
    for method in ["move", "sync"] {
        let db = cluster.database().await;
        seed(&db, 100, 12_000).await;
        db.exec(
            "ALTER TABLE workflow_events ADD COLUMN partition_id bigint NOT NULL DEFAULT 101;
             UPDATE workflow_events SET partition_id = 100 + id % 3;
             CREATE INDEX workflow_events_pid ON workflow_events (partition_id);
             ANALYZE workflow_events;",
        )
        .await;
        let dir = scratch();
        let plan = db.plan_file(
            dir.path(),
            "l.yaml",
            &format!(
                "table: public.workflow_events\npartition:\n  by: list\n  column: partition_id\n  premake: 2\nmethod: {method}\nbatch:\n  size: 300\n  pause: 2ms\n"
            ),
        );
        let plan = plan.to_str().unwrap();
        let p = db.migrate(&["plan", plan]).await;
        p.ok();
        for v in 100..=104 {
            assert!(
                p.stdout.contains(&format!("workflow_events_p{v}\" PARTITION OF")),
                "{method}: no partition for {v}:\n{}",
                p.stdout
            );
        }
        assert!(!p.stdout.contains("workflow_events_p105"), "{}", p.stdout);

        // No upserts: the workload's upserts name the key without partition_id,
        // which the partitioned table's primary key includes.
        let workload = Workload::start(&db, 3, 57).await;
        // Rows of a run the workload does not own (it shares out the runs
        // that exist when it starts) change their list value while they
        // move; PostgreSQL fails a concurrent update of a row that another
        // moved between partitions (40001), as on any partitioned table.
        let owner: i64 = db
            .client()
            .await
            .query_one("INSERT INTO workflow_runs (name) VALUES ('changer') RETURNING id", &[])
            .await
            .unwrap()
            .get(0);
        db.exec(&format!(
            "INSERT INTO workflow_events (run_id, ts, type, partition_id) \
             SELECT {owner}, now() - g * interval '1 hour', 'changer', 100 FROM generate_series(1, 1500) g"
        ))
        .await;
        let extra: Vec<(i64, common::workload::Event)> = common::workload::table_rows(&db)
            .await
            .into_iter()
            .filter(|(_, e)| e.run_id == owner)
            .collect();
        let dbw = db.clone();
        let mover = tokio::spawn(async move {
            let c = dbw.client().await;
            let mut changed = std::collections::BTreeSet::new();
            for i in 0..60i64 {
                for r in c
                    .query(
                        "UPDATE workflow_events SET partition_id = 103 WHERE run_id = $2 AND id % 60 = $1 RETURNING id",
                        &[&i, &owner],
                    )
                    .await
                    .unwrap()
                {
                    changed.insert(r.get::<_, i64>(0));
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            changed
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The third batch: stretches of dead rows widen batches quickly
        // (empty ranges double them), so a sixth is not certain to come.
        let run = db
            .migrate_env(
                &["apply", plan],
                &[("MIGRATE_FAILPOINT", "batch-forward:after-commit@3")],
            )
            .await;
        assert_eq!(run.code, 86, "{method}: {}", run.stderr);
        db.migrate(&["resume", plan]).await.ok();
        let changed = mover.await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = workload.stop().await;
        report.assert_no_errors(&format!("{method}: "));
        if method == "sync" {
            db.migrate(&["cleanup", plan]).await.ok();
        }
        let mut oracle = report.oracle.clone();
        oracle.extend(extra);
        let compared = compare(&db, &oracle).await;
        println!(
            "list with {method} under load: {} operations, 0 errors, {compared} rows compared, {} rows changed value",
            report.total_ops(),
            changed.len()
        );
        assert!(!changed.is_empty());
        assert_eq!(relkind(&db, "workflow_events").await.as_deref(), Some("p"));
        // Every row sits in the partition of its value.
        assert_eq!(
            db.scalar_i64(
                "SELECT count(*) FROM workflow_events WHERE tableoid::regclass::text <> 'workflow_events_p' || partition_id"
            )
            .await,
            0,
            "{method}"
        );
        // Exactly the rows the application moved to 103 (and did not delete
        // since) have it.
        let c = db.client().await;
        let now_103: std::collections::BTreeSet<i64> = c
            .query("SELECT id FROM workflow_events WHERE partition_id = 103", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(now_103.is_subset(&changed), "{method}");
        let gone: std::collections::BTreeSet<i64> = changed.difference(&now_103).copied().collect();
        let gone: Vec<i64> = gone.into_iter().collect();
        assert_eq!(
            c.query_one("SELECT count(*) FROM workflow_events WHERE id = ANY($1)", &[&gone])
                .await
                .unwrap()
                .get::<_, i64>(0),
            0,
            "{method}: rows the application moved to 103 have another value"
        );
        // A premade value takes rows at once.
        db.exec(&format!(
            "INSERT INTO workflow_events (run_id, type, partition_id) VALUES ({owner}, 'next', 104)"
        ))
        .await;
        // A value with no partition is refused, with PostgreSQL's message.
        let e = c
            .execute(
                "INSERT INTO workflow_events (run_id, type, partition_id) VALUES ($1, 'next', 999)",
                &[&owner],
            )
            .await
            .unwrap_err();
        assert!(format!("{e:?}").contains("no partition"), "{e:?}");
    }
}

/// Sync builds the copy's non-unique indexes after the backfill, one
/// partition at a time; killed half-way, and with an invalid index left
/// where the next one goes, a resumed run drops it, builds the rest and
/// attaches them, and the swapped table has every index valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_indexes_resume_after_a_crash_and_an_invalid_index() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 100, 10_000).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &sync_plan(1000, ""));
    let plan = plan.to_str().unwrap();
    let p = db.migrate(&["plan", plan]).await;
    p.ok();
    let builds: Vec<(String, String)> = p
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("CREATE INDEX CONCURRENTLY "))
        .map(|l| {
            let (name, rest) = l.split_once(" ON ").unwrap();
            let table = rest.split(" USING ").next().unwrap();
            (name.to_string(), table.to_string())
        })
        .collect();
    assert!(builds.len() >= 6, "{}", p.stdout);
    assert!(
        p.stdout.contains("ON ONLY \"public\".\"workflow_events__part\""),
        "{}",
        p.stdout
    );
    let run = db
        .migrate_env(&["apply", plan], &[("MIGRATE_FAILPOINT", "indexes:after-create@2")])
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    // A build that died mid-way leaves an invalid index behind.
    let (name, table) = &builds[4];
    let failed = db
        .client()
        .await
        .batch_execute(&format!("CREATE INDEX CONCURRENTLY {name} ON {table} ((1 / (n - n)))"))
        .await;
    assert!(failed.is_err());
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT count(*) FROM pg_index WHERE NOT indisvalid AND indexrelid = '{}'::regclass",
            name.replace('\'', "''")
        ))
        .await,
        1
    );
    db.migrate(&["apply", plan]).await.ok();
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid WHERE c.relname LIKE 'workflow_events%' AND NOT x.indisvalid")
            .await,
        0
    );
    // Each partition has the original's two plain indexes and the key.
    assert_eq!(
        db.scalar_i64(
            "SELECT count(DISTINCT (i.inhparent, x.indrelid)) FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid \
             WHERE i.inhparent IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'workflow_events'::regclass)"
        )
        .await,
        builds.len() as i64 / 2 * 3
    );
    assert_eq!(db.scalar_i64("SELECT count(*) FROM workflow_events").await, 10_000);
}

/// A session holding an event's row lock updates it while another deletes
/// the event's run, whose cascade waits for that row. Without the tool the
/// update asks the run for no lock (its run_id keeps its value) and both
/// commit. Under the mirror they must too: before the backfill copies the
/// row, after it, after the swap (the mirror back into the retired
/// original) and after an unswap. Only the table under the name holds the
/// foreign key; the other copy follows it through the mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mirrored_update_and_a_cascading_delete_do_not_deadlock() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 10, 2_000).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &sync_plan(500, ""));
    let plan = plan.to_str().unwrap();
    let fks = |db: &Db| {
        let db = db.clone();
        async move {
            let c = db.client().await;
            c.query(
                "SELECT conrelid::regclass::text || ' ' || convalidated FROM pg_constraint \
                 WHERE contype = 'f' AND confrelid = 'workflow_runs'::regclass AND conparentid = 0 ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
        }
    };
    db.migrate(&["apply", plan, "--until", "prepare"]).await.ok();
    assert_eq!(fks(&db).await, ["workflow_events true"]);
    update_while_the_run_goes(&db, 2).await;
    db.migrate(&["apply", plan, "--until", "backfill"]).await.ok();
    update_while_the_run_goes(&db, 3).await;
    db.migrate(&["apply", plan, "--until", "swap"]).await.ok();
    assert_eq!(relkind(&db, "public.workflow_events").await.as_deref(), Some("p"));
    assert_eq!(fks(&db).await, ["workflow_events true"]);
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = 'workflow_events_y2026m11'::regclass AND convalidated")
            .await,
        1,
        "each partition holds the foreign key"
    );
    update_while_the_run_goes(&db, 4).await;
    db.migrate(&["unswap", plan]).await.ok();
    assert_eq!(relkind(&db, "public.workflow_events").await.as_deref(), Some("r"));
    assert_eq!(fks(&db).await, ["workflow_events true"]);
    update_while_the_run_goes(&db, 5).await;
    db.migrate(&["swap", plan]).await.ok();
    assert_eq!(fks(&db).await, ["workflow_events true"]);
    update_while_the_run_goes(&db, 6).await;
    // The foreign key holds on the partitioned table.
    let c = db.client().await;
    let e = c
        .execute("INSERT INTO workflow_events (run_id, type) VALUES (999999, 'x')", &[])
        .await
        .expect_err("no run 999999");
    assert!(
        common::workload::db_message(&e).contains("violates foreign key constraint"),
        "{}",
        common::workload::db_message(&e)
    );
    db.migrate(&["cleanup", plan]).await.ok();
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM workflow_events WHERE run_id BETWEEN 2 AND 6")
            .await,
        0
    );
}

async fn update_while_the_run_goes(db: &Db, run: i64) {
    let holder = db.client().await;
    holder.batch_execute("BEGIN").await.unwrap();
    let id: i64 = holder
        .query_one(
            "SELECT id FROM workflow_events WHERE run_id = $1 ORDER BY id LIMIT 1 FOR UPDATE",
            &[&run],
        )
        .await
        .unwrap()
        .get(0);
    let deleter = {
        let db = db.clone();
        tokio::spawn(async move {
            db.client()
                .await
                .execute("DELETE FROM workflow_runs WHERE id = $1", &[&run])
                .await
                .map_err(|e| common::workload::db_message(&e))
        })
    };
    // The cascade waits for the held row.
    let deadline = Instant::now() + Duration::from_secs(30);
    while db
        .scalar_i64("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM workflow_runs%'")
        .await
        == 0
    {
        assert!(Instant::now() < deadline, "the delete never waited for the held row");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let updated = async {
        holder
            .execute(
                "UPDATE workflow_events SET payload = '{\"held\": true}' WHERE id = $1",
                &[&id],
            )
            .await?;
        // Past deadlock_timeout (1 s): a deadlock would have been found.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        holder.batch_execute("COMMIT").await
    }
    .await;
    assert!(
        updated.is_ok(),
        "the update failed: {}",
        common::workload::db_message(&updated.unwrap_err())
    );
    assert_eq!(deleter.await.unwrap(), Ok(1), "the delete of the run");
}

/// Partitions fill without autovacuum, whose locks the index builds, the
/// ANALYZE and the swap's LOCK would wait for; from the swap on they vacuum
/// as the original's storage parameters say, which a table may set too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_fill_without_autovacuum_and_get_it_back_at_the_swap() {
    let cluster = Cluster::start();
    for (method, until, original_off) in [
        ("sync", "backfill", false),
        ("sync", "backfill", true),
        ("move", "move", false),
        ("move", "move", true),
    ] {
        let db = cluster.database().await;
        seed(&db, 10, 2000).await;
        db.exec("ALTER TABLE workflow_events SET (fillfactor = 90)").await;
        if original_off {
            db.exec("ALTER TABLE workflow_events SET (autovacuum_enabled = false)")
                .await;
        }
        let dir = scratch();
        let plan = db.plan_file(
            dir.path(),
            "p.yaml",
            &event_plan(500, "").replace("method: move", &format!("method: {method}")),
        );
        let plan = plan.to_str().unwrap();
        let off = |parent: &str| {
            format!(
                "SELECT count(*) FILTER (WHERE 'autovacuum_enabled=false' = ANY (coalesce(c.reloptions, '{{}}'))), \
                        count(*) FILTER (WHERE 'fillfactor=90' = ANY (coalesce(c.reloptions, '{{}}'))), count(*) \
                 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = '{parent}'::regclass"
            )
        };
        let counts = |sql: String| {
            let db = db.clone();
            async move {
                let r = db.client().await.query_one(&sql, &[]).await.unwrap();
                (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2))
            }
        };
        db.migrate(&["apply", plan, "--until", until]).await.ok();
        let (quiet, fill, n) = counts(off("workflow_events__part")).await;
        assert!(n >= 4, "{method}: {n} partitions");
        assert_eq!((quiet, fill), (n, n), "{method}: before the swap");
        db.migrate(&["resume", plan]).await.ok();
        let (quiet, fill, n) = counts(off("workflow_events")).await;
        let expected = if original_off { n } else { 0 };
        assert_eq!(
            (quiet, fill),
            (expected, n),
            "{method}, original off {original_off}: after the swap"
        );
    }
}

/// With one worker and rows that lie in time order, each partition's
/// indexes are built as soon as the backfill has passed its range, beside
/// the batches of the later ranges. Killed half-way, resumed, under
/// traffic: every row is there once, every index valid and attached.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_indexes_build_beside_the_backfill_of_later_ranges() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 2000, 0).await;
    db.exec(
        "INSERT INTO workflow_events (run_id, ts, type, payload, n)
         SELECT 1 + g % 2000, now() - interval '120 days' + g * interval '5 minutes',
                't' || (g % 7), jsonb_build_object('g', g, 'pad', repeat('x', 100)), g % 100
         FROM generate_series(1, 30000) g;
         ANALYZE workflow_events",
    )
    .await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &sync_plan(500, "  pause: 50ms\n"));
    let plan = plan.to_str().unwrap();
    let shown = db.migrate(&["plan", plan]).await;
    shown.ok();
    assert!(shown.stdout.contains("TABLESAMPLE SYSTEM ($1)"), "{}", shown.stdout);
    let workload = Workload::start(&db, 1, 31).await;
    let run = db
        .migrate_env(
            &["apply", plan],
            &[("MIGRATE_FAILPOINT", "batch-forward:after-commit@40")],
        )
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    // Killed in the backfill: partitions with rows copied have their
    // indexes already, and not every partition has.
    let deferred = "SELECT count(*) FILTER (WHERE EXISTS (SELECT 1 FROM public.workflow_events__part p WHERE p.tableoid = x.indrelid)), \
                   count(*) FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid \
                   WHERE i.inhparent IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'public.workflow_events__part'::regclass AND NOT indisunique)";
    let r = db.client().await.query_one(deferred, &[]).await.unwrap();
    let (with_rows, attached): (i64, i64) = (r.get(0), r.get(1));
    let builds = shown.stdout.matches("CREATE INDEX CONCURRENTLY ").count() as i64;
    assert!(
        with_rows > 0 && attached < builds,
        "at the kill: {with_rows} of {attached} built indexes on partitions with rows, {builds} in all"
    );
    db.migrate(&["resume", plan]).await.ok();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = workload.stop().await;
    report.assert_no_errors("");
    let compared = compare(&db, &report.oracle).await;
    assert!(compared > 25_000, "{compared} rows compared");
    assert_eq!(
        db.scalar_i64(
            "SELECT count(*) FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid \
             WHERE c.relname LIKE 'workflow_events%' AND NOT x.indisvalid"
        )
        .await,
        0
    );
    // Every partition holds each of the table's three indexes, attached.
    let partitions = db
        .scalar_i64("SELECT count(*) FROM pg_inherits WHERE inhparent = 'workflow_events'::regclass")
        .await;
    assert!(partitions >= 4, "{partitions} partitions");
    assert_eq!(
        db.scalar_i64(
            "SELECT count(*) FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid \
             WHERE i.inhparent IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'workflow_events'::regclass)"
        )
        .await,
        partitions * 3
    );
    let batches = db.scalar_i64("SELECT count(*) FROM repartition.batches").await;
    assert!(batches > 30, "{batches} batches");
}
