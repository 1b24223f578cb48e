//! Tables as real applications have them, which the tool refused or broke
//! on: a key of type `timestamp(6)` (Rails' datetime), a partial unique
//! index, a foreign key of the table to itself, a sequence far ahead of the
//! rows retention left, a fresh table with an integer key, a key that may
//! be NULL. Each method runs
//! under the application's traffic, dies, resumes, and every row is
//! compared with what committed.

mod common;
use common::workload::{compare, Features, Workload};
use common::*;
use std::time::Duration;

/// The event log reshaped like a Rails 7 table: `timestamp(6)`, a version
/// tree through a foreign key to itself, and a partial unique index.
const RAILS_SHAPE: &str = "
ALTER TABLE workflow_events ALTER COLUMN ts TYPE timestamp(6) with time zone;
ALTER TABLE workflow_events ADD COLUMN parent_id bigint REFERENCES workflow_events (id) ON DELETE SET NULL;
UPDATE workflow_events SET parent_id = id - 1 WHERE id % 10 = 0;
CREATE UNIQUE INDEX workflow_events_live_per_run ON workflow_events (run_id, id) WHERE type <> 'gone';
";

/// Runs the migration under the application's traffic, killed at `point`
/// and resumed, and compares every row with what committed.
async fn under_load(db: &Db, plan: &str, method: &str, point: &str) {
    let features = Features::for_method(method);
    let workload = Workload::start_with(db, 3, 5, features).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = db.migrate_env(&["apply", plan], &[("MIGRATE_FAILPOINT", point)]).await;
    assert_eq!(run.code, 86, "{method}: {}", run.stderr);
    tokio::time::sleep(Duration::from_millis(200)).await;
    db.migrate(&["resume", plan]).await.ok();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = workload.stop().await;
    assert!(
        report.errors.is_empty(),
        "{method}: the application saw {} errors, first: {:#?}",
        report.errors.len(),
        &report.errors[..report.errors.len().min(8)]
    );
    let compared = compare(db, &report.oracle).await;
    println!("{method}: {} operations, {compared} rows compared", report.total_ops());
    assert!(report.total_ops() > 300, "{method}: the workload ran too little");
    assert_eq!(db.relkind("public.workflow_events").await.as_deref(), Some("p"));
}

async fn rails_shaped(method: &str, point: &str) {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 120, 12_000).await;
    db.exec(RAILS_SHAPE).await;
    let dir = scratch();
    let yaml =
        event_plan(400, "foreign_keys:\n  incoming: drop\n").replace("method: move", &format!("method: {method}"));
    let plan = db.plan_file(dir.path(), "p.yaml", &yaml);
    let plan = plan.to_str().unwrap();
    let shown = db.migrate(&["plan", plan]).await;
    shown.ok();
    for needle in [
        "USING btree (run_id, id, \"ts\") WHERE (type <> 'gone'::text)",
        "\"workflow_events_parent_id_fkey\" on \"public\".\"workflow_events\" will be dropped",
    ] {
        assert!(
            shown.stdout.contains(needle),
            "{method}: plan lacks {needle:?}:\n{}",
            shown.stdout
        );
    }
    under_load(&db, plan, method, point).await;
    // The partial unique index, on the partitioned table, with its WHERE.
    let def = db
        .scalar_str("SELECT indexdef FROM pg_indexes WHERE indexname = 'workflow_events_live_per_run'")
        .await
        .unwrap_or_default();
    assert!(
        def.contains("ON ONLY public.workflow_events ") && def.contains("WHERE (type <> 'gone'::text)"),
        "{method}: {def}"
    );
    let dup = db
        .client()
        .await
        .execute(
            "INSERT INTO workflow_events (id, run_id, ts, type) SELECT id, run_id, ts, 'x' FROM workflow_events WHERE type <> 'gone' LIMIT 1",
            &[],
        )
        .await;
    assert!(dup.is_err(), "{method}: the partial unique index does not hold");
    // The foreign key to itself was dropped as the plan allowed; new rows
    // go in.
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM pg_constraint WHERE conname = 'workflow_events_parent_id_fkey'")
            .await,
        0,
        "{method}"
    );
    db.exec("INSERT INTO workflow_events (run_id, type, parent_id) SELECT min(id), 'after', 1 FROM workflow_runs")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rails_shaped_table_by_move() {
    rails_shaped("move", "batch-forward:after-commit@3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rails_shaped_table_by_sync() {
    rails_shaped("sync", "batch-forward:after-commit@3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rails_shaped_table_by_attach() {
    rails_shaped("attach", "constrain:after-check").await;
}

/// Storage as a tuned table has it: its own tablespace and storage
/// parameters, a primary key with INCLUDE and a fillfactor, a unique key
/// NULLS NOT DISTINCT (15 on), a unique index with a collation, an
/// operator class, an ordering, a fillfactor and a tablespace of its own.
async fn tuned_storage(method: &str, point: &str) {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 120, 12_000).await;
    let place = cluster.data_dir().parent().unwrap().join("fast");
    std::fs::create_dir_all(&place).unwrap();
    let pg = std::process::Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .unwrap();
    if let Ok(uid) = String::from_utf8_lossy(&pg.stdout).trim().parse::<u32>() {
        std::os::unix::fs::chown(&place, Some(uid), None).unwrap();
    }
    db.exec(&format!("CREATE TABLESPACE fast LOCATION '{}'", place.display()))
        .await;
    let version = db
        .scalar_i64("SELECT current_setting('server_version_num')::bigint")
        .await;
    db.exec(
        "ALTER TABLE workflow_events SET TABLESPACE fast;
         ALTER TABLE workflow_events SET (fillfactor = 85, autovacuum_vacuum_scale_factor = 0.01);
         ALTER TABLE workflow_events DROP CONSTRAINT workflow_events_pkey,
             ADD CONSTRAINT workflow_events_pkey PRIMARY KEY (id) INCLUDE (run_id) WITH (fillfactor = 80);
         CREATE UNIQUE INDEX workflow_events_by_type ON workflow_events (type COLLATE \"C\" text_pattern_ops DESC, id)
             WITH (fillfactor = 70) TABLESPACE pg_default;",
    )
    .await;
    if version >= 150_000 {
        db.exec("ALTER TABLE workflow_events ADD COLUMN ref text, ADD CONSTRAINT workflow_events_ref UNIQUE NULLS NOT DISTINCT (id, ref)")
            .await;
    }
    let dir = scratch();
    let yaml = event_plan(400, "").replace("method: move", &format!("method: {method}"));
    let plan = db.plan_file(dir.path(), "p.yaml", &yaml);
    let plan = plan.to_str().unwrap();
    db.migrate(&["plan", plan]).await.ok();
    under_load(&db, plan, method, point).await;
    let defs = db
        .scalar_str(
            "SELECT string_agg(pg_get_constraintdef(oid), ' | ' ORDER BY conname) FROM pg_constraint \
             WHERE conrelid = 'public.workflow_events'::regclass AND contype IN ('p', 'u')",
        )
        .await
        .unwrap_or_default();
    assert!(
        defs.contains("PRIMARY KEY (id, ts) INCLUDE (run_id)"),
        "{method}: {defs}"
    );
    let pkey = db
        .scalar_str("SELECT indexdef FROM pg_indexes WHERE indexname = 'workflow_events_pkey'")
        .await
        .unwrap_or_default();
    assert!(
        pkey.contains("(id, ts) INCLUDE (run_id) WITH (fillfactor='80')"),
        "{method}: {pkey}"
    );
    if version >= 150_000 {
        assert!(
            defs.contains("UNIQUE NULLS NOT DISTINCT (id, ref, ts)"),
            "{method}: {defs}"
        );
    }
    let index = db
        .scalar_str("SELECT indexdef FROM pg_indexes WHERE indexname = 'workflow_events_by_type'")
        .await
        .unwrap_or_default();
    assert!(
        index.contains("(type COLLATE \"C\" text_pattern_ops DESC, id, ts) WITH (fillfactor='70')"),
        "{method}: {index}"
    );
    // Every partition in the table's tablespace, with its storage
    // parameters; the parent names the tablespace for partitions to come.
    let misplaced = db
        .scalar_i64(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'public.workflow_events'::regclass \
               AND (c.reltablespace <> (SELECT oid FROM pg_tablespace WHERE spcname = 'fast') \
                    OR NOT coalesce(c.reloptions @> '{fillfactor=85,autovacuum_vacuum_scale_factor=0.01}', false))",
        )
        .await;
    // The attach method's first partition is the original, in place.
    assert_eq!(misplaced, 0, "{method}");
    assert_eq!(
        db.scalar_str(
            "SELECT t.spcname::text FROM pg_class c JOIN pg_tablespace t ON t.oid = c.reltablespace \
             WHERE c.oid = 'public.workflow_events'::regclass"
        )
        .await
        .as_deref(),
        Some("fast"),
        "{method}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tuned_storage_by_move() {
    tuned_storage("move", "batch-forward:after-commit@3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tuned_storage_by_sync() {
    tuned_storage("sync", "batch-forward:after-commit@3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tuned_storage_by_attach() {
    tuned_storage("attach", "constrain:after-check").await;
}

fn by_id(method: &str) -> String {
    event_plan(500, "")
        .replace("method: move", &format!("method: {method}"))
        .replace("column: ts", "column: id")
        .replace("  interval: month\n", "  step: 1000\n")
        .replace("  naming: \"{table}_y{YYYY}m{MM}\"\n", "")
}

/// Retention deleted every row but the newest few: the sequence stands
/// far beyond what min and max of the column say. The partitions must
/// cover the ids the application is handed next.
async fn sequence_ahead(method: &str) {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 10, 5000).await;
    db.exec("DELETE FROM workflow_events WHERE id > 40").await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &by_id(method));
    let plan = plan.to_str().unwrap();
    db.migrate(&["apply", plan]).await.ok();
    db.exec("INSERT INTO workflow_events (run_id, type) SELECT 1, 'next' FROM generate_series(1, 50)")
        .await;
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM workflow_events WHERE id > 5000")
            .await,
        50,
        "{method}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_ahead_of_the_rows_by_move() {
    sequence_ahead("move").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_ahead_of_the_rows_by_sync() {
    sequence_ahead("sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_ahead_of_the_rows_by_attach() {
    sequence_ahead("attach").await;
}

/// A table just created, its sequence never used, by attach: the original
/// does not take the name of the first new partition, the swap ends, no
/// CHECK is left behind, and the first ids go in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_on_a_fresh_table_with_an_integer_key() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    db.exec(EVENT_SCHEMA).await;
    db.exec("INSERT INTO workflow_runs (name) VALUES ('r')").await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &by_id("attach"));
    let plan = plan.to_str().unwrap();
    db.migrate(&["apply", plan]).await.ok();
    db.exec("INSERT INTO workflow_events (run_id, type) SELECT 1, 'first' FROM generate_series(1, 1500)")
        .await;
    assert_eq!(db.scalar_i64("SELECT count(*) FROM workflow_events").await, 1500);
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM pg_constraint WHERE contype = 'c' AND conname LIKE '%cutoff%'")
            .await,
        0
    );
    assert_eq!(db.relkind("public.workflow_events").await.as_deref(), Some("p"));
}

/// Through the move method's view, an UPDATE that gives a row a key no
/// partition takes fails at once with PostgreSQL's error for a partitioned
/// table, whether the row has moved yet or not; the migration goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_no_partition_takes_fails_the_update_at_once() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 10, 3000).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(200, ""));
    let plan = plan.to_str().unwrap();
    let run = db
        .migrate_env(
            &["apply", plan],
            &[("MIGRATE_FAILPOINT", "batch-forward:after-commit@3")],
        )
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    let c = db.client().await;
    for rel in ["ONLY public.workflow_events__orig", "public.workflow_events__part"] {
        let id: i64 = c
            .query_one(&format!("SELECT min(id) FROM {rel}"), &[])
            .await
            .unwrap()
            .get(0);
        let e = c
            .execute("UPDATE workflow_events SET ts = '2199-01-01' WHERE id = $1", &[&id])
            .await
            .expect_err("a key no partition takes was accepted");
        let d = e.as_db_error().unwrap();
        assert_eq!(d.code().code(), "23514", "{rel}: {}", d.message());
        assert!(
            d.message().starts_with("no partition of relation"),
            "{rel}: {}",
            d.message()
        );
    }
    // A key that fits still moves the row.
    c.execute(
        "UPDATE workflow_events SET ts = now() - interval '1 day' WHERE id = (SELECT min(id) FROM ONLY workflow_events__orig)",
        &[],
    )
    .await
    .unwrap();
    db.migrate(&["resume", plan]).await.ok();
    assert_eq!(db.scalar_i64("SELECT count(*) FROM workflow_events").await, 3000);
}

fn by_type(method: &str) -> String {
    event_plan(400, "")
        .replace("method: move", &format!("method: {method}"))
        .replace("by: range", "by: list")
        .replace("column: ts", "column: type\n  default_partition: true")
        .replace("  interval: month\n", "")
        .replace("  naming: \"{table}_y{YYYY}m{MM}\"\n", "")
}

/// A list key of text values: a partition per value the table holds, new
/// values in the default partition; under traffic, killed and resumed.
async fn text_list(method: &str) {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 120, 12_000).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &by_type(method));
    let plan = plan.to_str().unwrap();
    db.migrate(&["plan", plan]).await.ok();
    under_load(&db, plan, method, "batch-forward:after-commit@3").await;
    let parts = db
        .scalar_str(
            "SELECT string_agg(c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid), ', ' ORDER BY c.relname) \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'public.workflow_events'::regclass",
        )
        .await
        .unwrap_or_default();
    assert!(
        parts.contains("workflow_events_pt0 FOR VALUES IN ('t0')"),
        "{method}: {parts}"
    );
    assert!(parts.contains("workflow_events_default DEFAULT"), "{method}: {parts}");
    // A value no partition was made for lands in the default partition.
    db.exec("INSERT INTO workflow_events (run_id, type) SELECT min(id), 'brand new' FROM workflow_runs")
        .await;
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM ONLY workflow_events_default WHERE type = 'brand new'")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_text_list_key_by_move() {
    text_list("move").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_text_list_key_by_sync() {
    text_list("sync").await;
}

/// Enum, uuid and date list keys, each by move and by sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_uuid_and_date_list_keys() {
    let cluster = Cluster::start();
    let dir = scratch();
    for (column, ty, values) in [
        ("state", "public.state", "'queued'::public.state, 'running', 'Done Now'"),
        (
            "tenant",
            "uuid",
            "'6f1c1a5e-0a4b-4a4e-9d55-2f0c1e0d9b11'::uuid, '00000000-0000-0000-0000-000000000001'",
        ),
        ("day", "date", "'2026-11-30'::date, '2026-12-01'"),
    ] {
        for method in ["move", "sync"] {
            let db = cluster.database().await;
            db.exec(&format!(
                "CREATE TYPE public.state AS ENUM ('queued', 'running', 'Done Now');
                 CREATE TABLE jobs (id bigserial PRIMARY KEY, {column} {ty} NOT NULL, n int);
                 INSERT INTO jobs ({column}, n) SELECT (ARRAY[{values}])[1 + g % 2], g FROM generate_series(1, 500) g;"
            ))
            .await;
            let yaml = format!(
                "table: public.jobs\npartition:\n  by: list\n  column: {column}\nmethod: {method}\nbatch:\n  size: 100\n"
            );
            let plan = db.plan_file(dir.path(), "j.yaml", &yaml);
            db.migrate(&["apply", plan.to_str().unwrap()]).await.ok();
            assert_eq!(
                db.scalar_i64("SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.jobs'::regclass")
                    .await,
                2,
                "{ty} by {method}"
            );
            assert_eq!(
                db.scalar_i64("SELECT count(*) FROM jobs").await,
                500,
                "{ty} by {method}"
            );
            db.exec(&format!(
                "INSERT INTO jobs ({column}, n) SELECT {column}, 0 FROM jobs LIMIT 1"
            ))
            .await;
        }
    }
}

/// A table with no primary key and no unique key at all: attach needs
/// none; the split that would route through a view says why it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_takes_a_table_without_any_key() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 10, 3000).await;
    db.exec("ALTER TABLE workflow_events DROP CONSTRAINT workflow_events_pkey")
        .await;
    let dir = scratch();
    let yaml = event_plan(500, "").replace("method: move", "method: attach");
    let plan = db.plan_file(dir.path(), "p.yaml", &yaml);
    let plan = plan.to_str().unwrap();
    let shown = db.migrate(&["plan", plan]).await;
    shown.ok();
    assert!(shown.stdout.contains("attach needs none"), "{}", shown.stdout);
    db.migrate(&["apply", plan]).await.ok();
    db.exec("INSERT INTO workflow_events (run_id, type) SELECT min(id), 'after' FROM workflow_runs")
        .await;
    assert_eq!(db.scalar_i64("SELECT count(*) FROM workflow_events").await, 3001);
    let split = db.migrate(&["split", plan]).await;
    assert_eq!(split.code, 2, "{}", split.stderr);
    assert!(
        split.stderr.contains("which the split's routing view needs"),
        "{}",
        split.stderr
    );
}

/// A key that may be NULL, as `created_at` often is: every method makes
/// it NOT NULL first. A row with a NULL key stops the run at the validation
/// with a sentence, and the check refuses new ones meanwhile; an abort
/// drops the check. Without such rows the run makes the key NOT NULL under
/// the application's traffic, killed once the check is added and resumed.
async fn nullable_key(method: &str) {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 40, 8_000).await;
    db.exec("ALTER TABLE workflow_events ALTER COLUMN ts DROP NOT NULL")
        .await;
    db.exec("INSERT INTO workflow_events (run_id, ts, type) VALUES (1, NULL, 'no key')")
        .await;
    let dir = scratch();
    let yaml = event_plan(400, "").replace("method: move", &format!("method: {method}"));
    let plan = db.plan_file(dir.path(), "p.yaml", &yaml);
    let plan = plan.to_str().unwrap();
    let shown = db.migrate(&["plan", plan]).await;
    shown.ok();
    for needle in [
        "key-made-not-null",
        "CHECK (\"ts\" IS NOT NULL) NOT VALID",
        "ALTER COLUMN \"ts\" SET NOT NULL",
    ] {
        assert!(
            shown.stdout.contains(needle),
            "{method}: plan lacks {needle:?}:\n{}",
            shown.stdout
        );
    }
    let null_ts = "INSERT INTO workflow_events (run_id, ts, type) VALUES (1, NULL, 'no key either')";
    let refused = db.migrate(&["apply", plan]).await;
    assert_ne!(refused.code, 0, "{method}: {}", refused.stdout);
    assert!(
        refused
            .stderr
            .contains("have a NULL \"ts\", which no partition would hold: give them a key, then `migrate resume`"),
        "{method}: {}",
        refused.stderr
    );
    assert!(
        db.client().await.execute(null_ts, &[]).await.is_err(),
        "{method}: the check lets a NULL key in"
    );
    db.migrate(&["abort", plan]).await.ok();
    let checks = "SELECT count(*) FROM pg_constraint WHERE conname = 'workflow_events__key_not_null'";
    assert_eq!(db.scalar_i64(checks).await, 0, "{method}: the abort left the check");
    db.exec(null_ts).await;
    db.exec("DELETE FROM workflow_events WHERE ts IS NULL").await;

    under_load(&db, plan, method, "constrain:after-not-null-check").await;
    assert_eq!(db.scalar_i64(checks).await, 0, "{method}: the check was left");
    assert_eq!(
        db.scalar_i64(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.workflow_events'::regclass AND attname = 'ts' AND attnotnull"
        )
        .await,
        1,
        "{method}: the key is not NOT NULL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_that_may_be_null_by_move() {
    nullable_key("move").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_that_may_be_null_by_sync() {
    nullable_key("sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_that_may_be_null_by_attach() {
    nullable_key("attach").await;
}
