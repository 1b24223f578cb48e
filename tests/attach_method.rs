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
    report.assert_no_errors("");
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
    report.assert_no_errors("");
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
    report.assert_no_errors("");
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

/// A list key of text or enum values that every row holds already: the
/// original becomes the partition of `initial`, cast to the key's type;
/// nothing is made ahead (no value follows another), so a new value goes to
/// the default partition where the plan asks for one and is refused where
/// it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attach_by_text_and_enum_list_on_an_existing_column_under_load() {
    let cluster = Cluster::start();
    for (ty, setup, initial, literal, default) in [
        ("text", "", "\"eu'west\"", "'eu''west'", true),
        (
            "public.region",
            "CREATE TYPE public.region AS ENUM ('us', 'eu west');",
            "eu west",
            "'eu west'",
            false,
        ),
    ] {
        let db = cluster.database().await;
        seed(&db, 200, 15_000).await;
        db.exec(&format!(
            "{setup} ALTER TABLE workflow_events ADD COLUMN region {ty} NOT NULL DEFAULT {literal};"
        ))
        .await;
        let objects = db.objects().await;
        let dir = scratch();
        let yaml = format!(
            "table: public.workflow_events\npartition:\n  by: list\n  column: region\n  initial: {initial}\n  premake: 2\n{}method: attach\n",
            if default { "  default_partition: true\n" } else { "" }
        );
        let plan = db.plan_file(dir.path(), "l.yaml", &yaml);
        let plan = plan.to_str().unwrap();
        let shown = db.migrate(&["plan", plan]).await;
        shown.ok();
        assert!(
            shown.stdout.contains(&format!("FOR VALUES IN ({literal}::{ty})")),
            "{ty}: {}",
            shown.stdout
        );
        assert_eq!(
            shown.stdout.contains("set partition.default_partition: true"),
            !default,
            "{ty}: {}",
            shown.stdout
        );
        // Abort after constrain: the column was there before, and stays.
        db.migrate(&["apply", plan, "--until", "constrain"]).await.ok();
        db.migrate(&["abort", plan]).await.ok();
        assert_eq!(db.objects().await, objects, "{ty}");

        let features = Features {
            upsert_and_lock: true,
            ..Features::default()
        };
        let workload = Workload::start_with(&db, 4, 43, features).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let run = db
            .migrate_env(&["apply", plan], &[("MIGRATE_FAILPOINT", "constrain:after-check")])
            .await;
        assert_eq!(run.code, 86, "{ty}: {}", run.stderr);
        db.migrate(&["resume", plan]).await.ok();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let report = workload.stop().await;
        report.assert_no_errors(&format!("{ty}: "));
        let compared = compare(&db, &report.oracle).await;
        println!(
            "attach by a {ty} list under load: {} operations, 0 errors, {compared} rows compared",
            report.total_ops()
        );
        let parts: Vec<(String, String)> = db
            .client()
            .await
            .query(
                "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = 'workflow_events'::regclass ORDER BY 2 DESC",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let zero = &parts[0].0;
        // Named as move and sync name a value that is not a plain word.
        assert!(zero.starts_with("workflow_events_peu_west_"), "{ty}: {parts:?}");
        assert_eq!(parts[0].1, format!("FOR VALUES IN ({literal})"), "{ty}");
        let mut expected = vec![zero.clone()];
        if default {
            expected.push("workflow_events_default".into());
            assert_eq!(parts[1].1, "DEFAULT");
        }
        assert_eq!(
            parts.iter().map(|p| p.0.clone()).collect::<Vec<_>>(),
            expected,
            "{ty}: nothing is made ahead"
        );
        assert_eq!(
            db.scalar_i64(&format!("SELECT count(*) FROM ONLY public.{zero}")).await,
            compared as i64,
            "{ty}: every row stays in the original"
        );
        // A row of the first value goes to the original; a new value to
        // the default partition, or nowhere.
        db.exec("INSERT INTO workflow_events (run_id, type) VALUES ((SELECT min(id) FROM workflow_runs), 'same')")
            .await;
        assert_eq!(
            db.scalar_str("SELECT tableoid::regclass::text FROM workflow_events WHERE type = 'same'")
                .await
                .as_deref(),
            Some(zero.as_str())
        );
        let new = db
            .client()
            .await
            .execute(
                "INSERT INTO workflow_events (run_id, type, region) VALUES ((SELECT min(id) FROM workflow_runs), 'new', 'us')",
                &[],
            )
            .await;
        if default {
            new.unwrap();
            assert_eq!(
                db.scalar_str("SELECT tableoid::regclass::text FROM workflow_events WHERE type = 'new'")
                    .await
                    .as_deref(),
                Some("workflow_events_default")
            );
        } else {
            let e = new.unwrap_err();
            assert_eq!(
                e.code(),
                Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
                "{e:?}"
            );
        }
        // maintain and split take no text-like list key, and say so.
        let m = db.migrate(&["maintain", plan]).await;
        assert_eq!(m.code, 2, "{ty}: {}", m.stderr);
        assert!(
            m.stderr.contains("maintain handles integer list keys"),
            "{ty}: {}",
            m.stderr
        );
        let s = db.migrate(&["split", plan]).await;
        assert_eq!(s.code, 2, "{ty}: {}", s.stderr);
        assert!(
            s.stderr
                .contains("is partitioned by list; its first partition holds one value"),
            "{ty}: {}",
            s.stderr
        );
    }
}

/// uuid and date keys: `initial` as the plan writes it is read in the key's
/// type, and the partition holds the value as PostgreSQL prints it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_by_uuid_and_date_list_reads_initial_in_the_keys_type() {
    let cluster = Cluster::start();
    let dir = scratch();
    for (ty, initial, printed, other) in [
        (
            "uuid",
            "6F1C1A5E-0A4B-4A4E-9D55-2F0C1E0D9B11",
            "6f1c1a5e-0a4b-4a4e-9d55-2f0c1e0d9b11",
            "00000000-0000-0000-0000-000000000001",
        ),
        ("date", "2024-01-01", "2024-01-01", "2024-01-02"),
    ] {
        let db = cluster.database().await;
        db.exec(&format!(
            "CREATE TABLE jobs (id bigserial PRIMARY KEY, k {ty} NOT NULL, n int);
             INSERT INTO jobs (k, n) SELECT '{printed}', g FROM generate_series(1, 500) g;"
        ))
        .await;
        let yaml = format!(
            "table: public.jobs\npartition:\n  by: list\n  column: k\n  initial: {initial}\n  default_partition: true\nmethod: attach\n"
        );
        let plan = db.plan_file(dir.path(), "j.yaml", &yaml);
        db.migrate(&["apply", plan.to_str().unwrap()]).await.ok();
        assert_eq!(
            db.scalar_str(
                "SELECT string_agg(pg_get_expr(c.relpartbound, c.oid), ', ' ORDER BY 1) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = 'public.jobs'::regclass"
            )
            .await
            .unwrap(),
            format!("DEFAULT, FOR VALUES IN ('{printed}')"),
            "{ty}"
        );
        db.exec(&format!(
            "INSERT INTO jobs (k, n) VALUES ('{other}', 0), ('{printed}', 0)"
        ))
        .await;
        assert_eq!(
            db.scalar_str(&format!(
                "SELECT tableoid::regclass::text FROM jobs WHERE k = '{other}'"
            ))
            .await
            .as_deref(),
            Some("jobs_default"),
            "{ty}"
        );
        let home = db
            .scalar_str(&format!(
                "SELECT tableoid::regclass::text FROM jobs WHERE n = 0 AND k = '{printed}'"
            ))
            .await
            .unwrap();
        assert!(home.starts_with("jobs_p"), "{ty}: {home}");
        assert_eq!(db.scalar_i64("SELECT count(*) FROM ONLY jobs_default").await, 1, "{ty}");
        assert_eq!(db.scalar_i64("SELECT count(*) FROM jobs").await, 502, "{ty}");
        // status and check read the text-like bounds.
        let status = db.migrate(&["status", plan.to_str().unwrap()]).await;
        status.ok();
        assert!(
            status.stdout.contains(&format!("FOR VALUES IN ('{printed}')")),
            "{ty}: {}",
            status.stdout
        );
        let check = db.migrate(&["check", plan.to_str().unwrap()]).await;
        assert_eq!(check.code, 5, "{ty}: {}{}", check.stdout, check.stderr);
        assert!(
            check.stdout.contains("jobs_default\": 1 rows"),
            "{ty}: {}",
            check.stdout
        );
    }
}
