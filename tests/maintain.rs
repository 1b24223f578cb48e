//! `migrate maintain`: premake up to the horizon, retention that detaches
//! before it archives and drops (a concurrent writer on the parent never
//! waits longer than the lock timeout), idempotence, two runners, a crash
//! between detach and drop, and the loud exit when partitions run out.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A monthly table with twelve months of history, partitioned by the tool.
async fn partitioned(db: &Db, dir: &std::path::Path, extra: &str) -> String {
    db.exec(
        "CREATE TABLE public.audit (id bigserial PRIMARY KEY, at timestamptz NOT NULL, what text NOT NULL);
         INSERT INTO audit (at, what) SELECT now() - g * interval '1 hour', 'e' || g FROM generate_series(0, 24 * 365) g;",
    )
    .await;
    let plan = db.plan_file(
        dir,
        "a.yaml",
        &format!(
            "table: public.audit\npartition:\n  by: range\n  column: at\n  interval: month\n  premake: 2\nmethod: move\nbatch:\n  size: 5000\nlocks:\n  lock_timeout: 200ms\n{extra}"
        ),
    );
    let plan = plan.to_str().unwrap().to_string();
    db.migrate(&["apply", &plan]).await.ok();
    plan
}

/// A copy of the plan file `plan` named `name`, with `from` replaced by
/// `to`.
fn variant(plan: &str, name: &str, from: &str, to: &str) -> String {
    let path = plan.replace("a.yaml", name);
    std::fs::write(&path, std::fs::read_to_string(plan).unwrap().replace(from, to)).unwrap();
    path
}

async fn partitions(db: &Db) -> Vec<String> {
    db.client()
        .await
        .query("SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit'::regclass ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// What a steady writer saw: its slowest statement, how many it ran, its
/// errors.
type Seen = (Duration, u32, Vec<String>);

/// A writer running `sql` every 2 ms until told to stop.
fn steady_writer(db: &Db, sql: &'static str) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Seen>) {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let db = db.clone();
        let stop = stop.clone();
        async move {
            let c = db.client().await;
            let (mut worst, mut n, mut errors) = (Duration::ZERO, 0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if let Err(e) = c.execute(sql, &[]).await {
                    errors.push(e.to_string());
                }
                worst = worst.max(t.elapsed());
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (worst, n, errors)
        }
    });
    (stop, writer)
}

/// Runs `maintain` with `plan` while a steady writer runs `write` and a
/// reader holds `read` open in a transaction for its first 800 ms; what
/// the run printed and what the writer saw.
async fn maintain_behind_a_reader(db: &Db, plan: &str, read: &str, write: &'static str) -> (Run, Seen) {
    let (stop, writer) = steady_writer(db, write);
    let reader = db.client().await;
    reader.batch_execute(&format!("BEGIN; {read};")).await.unwrap();
    let run = tokio::spawn({
        let db = db.clone();
        let plan = plan.to_string();
        async move { db.migrate(&["maintain", &plan]).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    reader.batch_execute("COMMIT").await.unwrap();
    let run = run.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    (run, writer.await.unwrap())
}

/// Premake behind a long reader of the whole table: the new partitions are
/// created alone and attached (SHARE UPDATE EXCLUSIVE on the parent, which
/// the reader's lock does not conflict with), so the run ends while the
/// reader is still open and a steady writer never waits on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn premake_attaches_behind_a_long_reader_without_stalling_a_writer() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    let dir = scratch();
    let plan = partitioned(&db, dir.path(), "").await;
    let plan4 = variant(&plan, "a4.yaml", "premake: 2", "premake: 5");
    db.exec("CREATE ROLE audit_owner; ALTER TABLE audit OWNER TO audit_owner")
        .await;
    let before = partitions(&db).await;
    let (stop, writer) = steady_writer(&db, "INSERT INTO audit (at, what) VALUES (now(), 'live')");
    // A report reading the whole table in a long transaction: it holds
    // ACCESS SHARE on the parent and every partition until it commits.
    let reader = db.client().await;
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM audit;")
        .await
        .unwrap();
    let t0 = Instant::now();
    let run = db.migrate(&["maintain", &plan4]).await;
    let took = t0.elapsed();
    let reader_open = db
        .scalar_i64("SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'")
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let (worst, n, errors) = writer.await.unwrap();
    reader.batch_execute("COMMIT").await.unwrap();
    run.ok();
    println!(
        "premake behind a long reader with a writer: {n} inserts, slowest {worst:?}; maintain took {took:?}\n{}",
        run.stdout
    );
    assert_eq!(reader_open, 1, "the reader was open through the run");
    assert!(errors.is_empty(), "the writer saw errors: {errors:?}");
    assert!(worst < Duration::from_millis(50), "an insert waited {worst:?}");
    let after = partitions(&db).await;
    let new: Vec<&String> = after.iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(new.len(), 3, "{:?} then {after:?}", before);
    for p in &new {
        // The bound's CHECK is gone, the parent's key and owner are there.
        let check = db
            .scalar_i64(&format!(
                "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.{p}'::regclass AND contype = 'c'"
            ))
            .await;
        assert_eq!(check, 0, "{p} kept a CHECK");
        let owner = db
            .scalar_str(&format!(
                "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 'public.{p}'::regclass"
            ))
            .await;
        assert_eq!(owner.as_deref(), Some("audit_owner"), "{p}");
        let pk = db
            .scalar_i64(&format!(
                "SELECT count(*) FROM pg_index WHERE indrelid = 'public.{p}'::regclass AND indisprimary AND indisvalid"
            ))
            .await;
        assert_eq!(pk, 1, "{p} has no primary key");
    }
    // Rows of the new months land in their partitions.
    db.exec("INSERT INTO audit (at, what) VALUES (now() + interval '4 months', 'ahead')")
        .await;
    let home = db
        .scalar_str("SELECT tableoid::regclass::text FROM audit WHERE what = 'ahead'")
        .await
        .unwrap();
    assert!(new.iter().any(|p| **p == home), "{home} {new:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_detaches_archives_and_drops_without_blocking_writers() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    let dir = scratch();
    let archive = dir.path().join("archive");
    let plan = partitioned(
        &db,
        dir.path(),
        &format!(
            "retention:\n  keep: 3\n  archive:\n    directory: {}\n",
            archive.display()
        ),
    )
    .await;
    // The horizon grows: premake 4.
    let plan4 = variant(&plan, "a4.yaml", "premake: 2", "premake: 4");
    let before = partitions(&db).await;
    let rows_before = db.scalar_i64("SELECT count(*) FROM audit").await;

    // A writer on the parent for the whole run, and someone reading the
    // oldest partition in a long transaction: detach must wait for it
    // without holding up the writer.
    let (run, (worst, n, errors)) = maintain_behind_a_reader(
        &db,
        &plan4,
        "SELECT count(*) FROM audit WHERE at < now() - interval '300 days'",
        "INSERT INTO audit (at, what) VALUES (now(), 'live')",
    )
    .await;
    run.ok();
    println!(
        "maintain with a writer on the parent: {n} inserts, slowest {worst:?}, lock_timeout 200ms\n{}",
        run.stdout
    );
    assert!(errors.is_empty(), "the writer saw errors: {errors:?}");
    assert!(
        worst < Duration::from_millis(400),
        "an insert waited {worst:?}, longer than the lock timeout allows"
    );

    let after = partitions(&db).await;
    assert_eq!(after.len(), 3 + 4, "three kept, four ahead: {after:?}");
    let dropped: Vec<&String> = before.iter().filter(|p| !after.contains(p)).collect();
    assert!(!dropped.is_empty());
    let mut archived_rows = 0i64;
    for p in &dropped {
        let file = archive.join(format!("public.{p}.csv.gz"));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("zcat {} | wc -l", file.display()))
            .output()
            .unwrap();
        archived_rows += String::from_utf8_lossy(&out.stdout).trim().parse::<i64>().unwrap() - 1;
        assert_eq!(
            db.scalar_i64(&format!("SELECT count(*) FROM pg_class WHERE relname = '{p}'"))
                .await,
            0
        );
    }
    let live = db.scalar_i64("SELECT count(*) FROM audit WHERE what = 'live'").await;
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM audit").await + archived_rows,
        rows_before + live,
        "a row was lost"
    );

    // Again: nothing to do.
    let again = db.migrate(&["maintain", &plan4]).await;
    again.ok();
    assert!(
        !again.stdout.contains("created") && !again.stdout.contains("dropped"),
        "{}",
        again.stdout
    );
    assert_eq!(partitions(&db).await, after);
}

/// Retention of partitions with foreign keys, behind a long reader of the
/// referenced table with a writer on it: each partition's own foreign key
/// is dropped alone, under a quarter of the lock timeout and retried,
/// before the table (dropping it locks the referenced table), so the writer
/// waits well below the lock timeout; a partition that rows of another table still
/// reference is kept attached, with a warning, and the others go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_drops_foreign_keys_alone_and_keeps_what_is_referenced() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    let dir = scratch();
    db.exec(
        "CREATE TABLE public.actors (id int PRIMARY KEY, seen int NOT NULL DEFAULT 0);
         INSERT INTO actors (id) SELECT generate_series(1, 100);
         CREATE TABLE public.audit (id bigserial PRIMARY KEY, at timestamptz NOT NULL, what text NOT NULL,
                                    actor int NOT NULL REFERENCES actors);
         INSERT INTO audit (at, what, actor) SELECT now() - g * interval '1 hour', 'e' || g, 1 + g % 100
             FROM generate_series(0, 24 * 365) g;",
    )
    .await;
    let plan = db.plan_file(
        dir.path(),
        "a.yaml",
        "table: public.audit\npartition:\n  by: range\n  column: at\n  interval: month\n  premake: 2\nmethod: move\n\
         batch:\n  size: 5000\nlocks:\n  lock_timeout: 200ms\nretention:\n  keep: 3\n",
    );
    let plan = plan.to_str().unwrap().to_string();
    db.migrate(&["apply", &plan]).await.ok();
    let before = partitions(&db).await;
    // A note refers to a row of the oldest partition.
    db.exec(
        "CREATE TABLE public.notes (audit_id bigint NOT NULL, audit_at timestamptz NOT NULL,
                                    FOREIGN KEY (audit_id, audit_at) REFERENCES audit (id, at));
         INSERT INTO notes SELECT id, at FROM audit ORDER BY at LIMIT 1;",
    )
    .await;
    let oldest = db
        .scalar_str("SELECT tableoid::regclass::text FROM audit ORDER BY at LIMIT 1")
        .await
        .unwrap();
    let (run, (worst, n, errors)) = maintain_behind_a_reader(
        &db,
        &plan,
        "SELECT count(*) FROM actors",
        "UPDATE actors SET seen = seen + 1 WHERE id = 7",
    )
    .await;
    run.ok();
    println!(
        "retention with foreign keys behind a reader of the referenced table: {n} writes to it, slowest {worst:?}, lock_timeout 200ms\n{}{}",
        run.stdout, run.stderr
    );
    assert!(errors.is_empty(), "the writer saw errors: {errors:?}");
    assert!(
        worst < Duration::from_millis(150),
        "a write waited {worst:?}, the lock timeout is 200ms and the foreign keys' drops wait a quarter of it"
    );
    assert!(
        run.stderr
            .contains(&format!("kept the expired partition \"public\".\"{oldest}\"")),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("violates foreign key constraint"), "{}", run.stdout);
    let after = partitions(&db).await;
    assert!(after.contains(&oldest), "{after:?}");
    let dropped: Vec<&String> = before.iter().filter(|p| !after.contains(p)).collect();
    assert!(dropped.len() >= 8, "{dropped:?}");
    // Nothing pending, nothing half done.
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM pg_inherits WHERE inhdetachpending")
            .await,
        0
    );
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM repartition.expired_partitions WHERE state <> 'dropped'")
            .await,
        0
    );
    // Once the note is gone, the next run takes it.
    db.exec("DELETE FROM notes").await;
    let again = db.migrate(&["maintain", &plan]).await;
    again.ok();
    assert!(!partitions(&db).await.contains(&oldest));

    // Someone's concurrent detach of the newest partition was cut short
    // while it waited for a reader: it stays pending, a table has one
    // pending detach at a time, and retention keeps what expires with a
    // warning that says how to finish it.
    let newest = partitions(&db).await.last().unwrap().clone();
    let reader = db.client().await;
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM audit;")
        .await
        .unwrap();
    let other = db.client().await;
    other.batch_execute("SET statement_timeout = '300ms'").await.unwrap();
    let cut = other
        .batch_execute(&format!("ALTER TABLE audit DETACH PARTITION {newest} CONCURRENTLY"))
        .await;
    assert!(
        cut.as_ref().is_err_and(
            |e| e.to_string().contains("statement timeout") || format!("{e:?}").contains("statement timeout")
        ),
        "{cut:?}"
    );
    reader.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM pg_inherits WHERE inhdetachpending")
            .await,
        1
    );
    let shorter = variant(&plan, "a2.yaml", "keep: 3", "keep: 2");
    let before = partitions(&db).await;
    let kept = db.migrate(&["maintain", &shorter]).await;
    kept.ok();
    assert!(
        kept.stderr
            .contains(&format!("the partition \"public\".\"{newest}\" is pending detach"))
            && kept.stderr.contains("FINALIZE"),
        "{}",
        kept.stderr
    );
    assert_eq!(partitions(&db).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_detach_and_drop_is_finished_next_time() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    let dir = scratch();
    let plan = partitioned(
        &db,
        dir.path(),
        "retention:\n  keep: 6\n  archive:\n    schema: archive\n",
    )
    .await;
    let run = db
        .migrate_env(&["maintain", &plan], &[("MIGRATE_FAILPOINT", "maintain:after-detach")])
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    db.migrate(&["maintain", &plan]).await.ok();
    assert_eq!(partitions(&db).await.len(), 6 + 2);
    assert!(
        db.scalar_i64("SELECT count(*) FROM pg_tables WHERE schemaname = 'archive'")
            .await
            >= 6
    );
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM repartition.expired_partitions WHERE state <> 'archived'")
            .await,
        0
    );
    // A second runner at the same time does nothing, quietly.
    let holder = db.client().await;
    holder
        .execute(
            "SELECT pg_advisory_lock(1380994375, hashtext('\"public\".\"audit\"'))",
            &[],
        )
        .await
        .unwrap();
    let second = db.migrate(&["maintain", &plan]).await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(second.stderr.contains("this run does nothing"), "{}", second.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_partitions_is_loud() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    let dir = scratch();
    let plan = partitioned(&db, dir.path(), "").await;
    // A plan that premakes nothing, and no partition past the current one.
    let plan0 = variant(&plan, "a0.yaml", "premake: 2", "premake: 0");
    db.exec(
        "DO $$ DECLARE r record; BEGIN
           FOR r IN SELECT c.oid::regclass AS p FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                    WHERE i.inhparent = 'audit'::regclass AND c.relname > 'audit_p' || to_char(now(), 'YYYYMM')
           LOOP EXECUTE format('DROP TABLE %s', r.p); END LOOP; END $$;",
    )
    .await;
    let run = db.migrate(&["maintain", &plan0]).await;
    assert_eq!(
        run.code, 5,
        "running out has its own exit code: {}{}",
        run.stdout, run.stderr
    );
    assert!(run.stderr.contains("WARNING: the newest partition"), "{}", run.stderr);
    // With the plan's horizon the partitions are made and all is well.
    let run = db.migrate(&["maintain", &plan]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintain_reports_what_it_premade_as_json() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    let dir = scratch();
    let plan = partitioned(&db, dir.path(), "").await;
    // The horizon grows by two months: two partitions to premake.
    let plan4 = variant(&plan, "a4.yaml", "premake: 2", "premake: 4");
    let before = partitions(&db).await;
    let run = db.migrate(&["maintain", &plan4, "--output", "json"]).await;
    run.ok();
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("maintain prints JSON");
    assert_json_documented(&doc);
    assert_eq!(doc["version"], 1, "{doc}");
    assert_eq!(doc["strategy"], "range", "{doc}");
    assert_eq!(doc["running_out"], false, "{doc}");
    assert!(doc["reach"].is_string(), "{doc}");
    let mut premade: Vec<String> = doc["premade"]
        .as_array()
        .expect("premade is a list")
        .iter()
        .map(|p| {
            assert!(p["from"].is_string() && p["to"].is_string(), "{p}");
            p["partition"].as_str().unwrap().to_string()
        })
        .collect();
    premade.sort();
    let mut new: Vec<String> = partitions(&db)
        .await
        .into_iter()
        .filter(|p| !before.contains(p))
        .map(|p| format!("\"public\".\"{p}\""))
        .collect();
    new.sort();
    assert_eq!(new.len(), 2, "{doc}");
    assert_eq!(premade, new, "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_check_report_partitions_and_problems() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    let dir = scratch();
    let plan = partitioned(&db, dir.path(), "").await;
    let run = db.migrate(&["status", &plan, "--exact", "--output", "json"]).await;
    run.ok();
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("status prints JSON");
    assert_json_documented(&doc);
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["migration"]["state"], "done");
    let parts = doc["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), partitions(&db).await.len());
    let total: i64 = parts.iter().map(|p| p["exact_rows"].as_i64().unwrap()).sum();
    assert_eq!(total, db.scalar_i64("SELECT count(*) FROM audit").await);
    let text = db.migrate(&["status", &plan]).await;
    assert!(
        text.stdout.contains("last vacuum") && text.stdout.contains("FOR VALUES FROM"),
        "{}",
        text.stdout
    );

    let run = db.migrate(&["check", &plan]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("healthy") && run.stdout.contains("next boundary"),
        "{}",
        run.stdout
    );

    // A gap, rows in a default partition, an index the partitions lack.
    let middle = partitions(&db).await[4].clone();
    db.exec(&format!(
        "DROP TABLE {middle}; CREATE TABLE audit_default PARTITION OF audit DEFAULT;
         INSERT INTO audit (at, what) VALUES (now() + interval '5 years', 'lost');
         CREATE INDEX audit_what ON ONLY audit (what);"
    ))
    .await;
    let run = db.migrate(&["check", &plan, "--output", "json"]).await;
    assert_eq!(run.code, 5, "{}{}", run.stdout, run.stderr);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_json_documented(&doc);
    assert_eq!(doc["healthy"], false);
    assert_eq!(doc["gaps"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["default_rows"], 1);
    assert!(
        doc["missing_indexes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.as_str().unwrap().contains("audit_what")),
        "{doc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_in_the_default_partition_move_out_while_writers_go_on() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    let dir = scratch();
    let plan = partitioned(&db, dir.path(), "").await;
    // Far-future rows with no partition land in a default partition.
    db.exec(
        "CREATE TABLE audit_default PARTITION OF audit DEFAULT;
         INSERT INTO audit (at, what) SELECT date_trunc('month', now()) + interval '7 months' + g * interval '1 hour', 'future'
           FROM generate_series(0, 24 * 40) g;
         CREATE TABLE deletions (id bigint);
         CREATE FUNCTION note_deletion() RETURNS trigger LANGUAGE plpgsql AS
           'BEGIN INSERT INTO public.deletions VALUES (OLD.id); RETURN NULL; END';
         CREATE TRIGGER deletions AFTER DELETE ON audit FOR EACH ROW EXECUTE FUNCTION note_deletion();",
    )
    .await;
    let before = db.scalar_i64("SELECT count(*) FROM audit").await;
    let future = db.scalar_i64("SELECT count(*) FROM ONLY audit_default").await;
    assert!(future > 900);
    // Writers insert into every range, the default's included, and read
    // back what they wrote.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let db = db.clone();
        let stop = stop.clone();
        async move {
            let c = db.client().await;
            let (mut worst, mut ids, mut errors) = (Duration::ZERO, Vec::new(), Vec::new());
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let months = [0, 7, 8][(i % 3) as usize];
                match c
                    .query_one(
                        "INSERT INTO audit (at, what) VALUES (date_trunc('month', now()) + $1 * interval '1 month' + interval '3 days', 'live') RETURNING id",
                        &[&(months as f64)],
                    )
                    .await
                {
                    Ok(r) => ids.push(r.get::<_, i64>(0)),
                    Err(e) => errors.push(e.to_string()),
                }
                worst = worst.max(t.elapsed());
                i += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            (worst, ids, errors)
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = db.migrate(&["maintain", &plan]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let (worst, ids, errors) = writer.await.unwrap();
    run.ok();
    println!(
        "default drain with a writer: {} inserts, slowest {worst:?}\n{}",
        ids.len(),
        run.stdout
    );
    assert!(
        run.stdout
            .contains("out of \"public\".\"audit_default\" into the new partition"),
        "{}",
        run.stdout
    );
    assert!(errors.is_empty(), "the writer saw errors: {errors:?}");
    assert!(worst < Duration::from_millis(1000), "an insert waited {worst:?}");
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM audit").await,
        before + ids.len() as i64,
        "a row was lost"
    );
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT count(*) FROM audit WHERE id IN ({})",
            ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
        ))
        .await,
        ids.len() as i64
    );
    // What is left in the default arrived after its range's move; a second
    // run takes it out too.
    db.migrate(&["maintain", &plan]).await.ok();
    assert_eq!(db.scalar_i64("SELECT count(*) FROM ONLY audit_default").await, 0);
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM audit WHERE what = 'future'").await,
        future
    );
    // The drain's moves are the tool's: the table's DELETE trigger rested
    // for them and fires again for the application's.
    assert_eq!(db.scalar_i64("SELECT count(*) FROM deletions").await, 0);
    db.exec("DELETE FROM audit WHERE id = (SELECT max(id) FROM audit)")
        .await;
    assert_eq!(db.scalar_i64("SELECT count(*) FROM deletions").await, 1);
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM pg_trigger WHERE tgname = 'deletions' AND tgenabled <> 'O'")
            .await,
        0
    );
}

/// List partitions made by other means (a logical partition number, as in
/// the GitLab CI design): rows that landed in the default partition get
/// partitions of their values while a writer goes on inserting them,
/// the plan's values ahead are premade, retention archives and drops the
/// oldest, and an exhausted list is loud. Hash needs no care.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_partitions_drain_premake_and_expire_while_a_writer_inserts() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    db.exec(
        "CREATE TABLE public.builds (id bigserial, partition_id bigint NOT NULL, status text NOT NULL, PRIMARY KEY (id, partition_id)) PARTITION BY LIST (partition_id);
         CREATE TABLE builds_p100 PARTITION OF builds FOR VALUES IN (100);
         CREATE TABLE builds_p101 PARTITION OF builds FOR VALUES IN (101);
         CREATE TABLE builds_default PARTITION OF builds DEFAULT;
         INSERT INTO builds (partition_id, status) SELECT 100 + g % 2, 'old' FROM generate_series(1, 4000) g;
         INSERT INTO builds (partition_id, status) SELECT 102 + g % 2, 'new' FROM generate_series(1, 800) g;",
    )
    .await;
    let dir = scratch();
    let archive = dir.path().join("archive");
    let plan = db.plan_file(
        dir.path(),
        "b.yaml",
        &format!(
            "table: public.builds\npartition:\n  by: list\n  column: partition_id\n  premake: 2\nmethod: move\nlocks:\n  lock_timeout: 200ms\nretention:\n  keep: 2\n  archive:\n    directory: {}\n",
            archive.display()
        ),
    );
    let plan = plan.to_str().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let db = db.clone();
        let stop = stop.clone();
        async move {
            let c = db.client().await;
            let (mut worst, mut ids, mut errors) = (Duration::ZERO, Vec::new(), Vec::new());
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match c
                    .query_one(
                        "INSERT INTO builds (partition_id, status) VALUES ($1, 'live') RETURNING id",
                        &[&(102 + i % 2)],
                    )
                    .await
                {
                    Ok(r) => ids.push(r.get::<_, i64>(0)),
                    Err(e) => errors.push(format!("{:?}", e.as_db_error())),
                }
                worst = worst.max(t.elapsed());
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (worst, ids, errors)
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let run = db.migrate(&["maintain", &plan]).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    let (worst, ids, errors) = writer.await.unwrap();
    run.ok();
    println!(
        "list maintain with a writer: {} inserts, slowest {worst:?}\n{}",
        ids.len(),
        run.stdout
    );
    assert!(errors.is_empty(), "the writer saw errors: {errors:?}");
    for v in [102, 103] {
        assert!(
            run.stdout.contains(&format!(
                "of \"partition_id\" = {v} out of \"public\".\"builds_default\" into the new partition \"public\".\"builds_p{v}\""
            )),
            "{}",
            run.stdout
        );
    }
    let parts: Vec<String> = db
        .client()
        .await
        .query(
            "SELECT c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'builds'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        parts,
        [
            "builds_default DEFAULT",
            "builds_p102 FOR VALUES IN ('102')",
            "builds_p103 FOR VALUES IN ('103')",
            "builds_p104 FOR VALUES IN ('104')",
            "builds_p105 FOR VALUES IN ('105')"
        ]
    );
    assert!(
        run.stdout.contains("partitions reach up to \"partition_id\" = 105"),
        "{}",
        run.stdout
    );
    // Every row the writer committed is there, in its value's partition or
    // (arrived during the move of its value) still in the default.
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM builds").await,
        800 + ids.len() as i64,
        "a row was lost"
    );
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM builds WHERE tableoid <> 'builds_default'::regclass AND tableoid::regclass::text <> 'builds_p' || partition_id")
            .await,
        0
    );
    assert_eq!(db.scalar_i64("SELECT count(*) FROM ONLY builds_default").await, 0);
    // The expired values went to the archive, whole.
    for v in [100, 101] {
        let f = archive.join(format!("public.builds_p{v}.csv.gz"));
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(std::fs::File::open(&f).unwrap()),
            &mut text,
        )
        .unwrap();
        assert_eq!(text.lines().count(), 2001, "{}", f.display());
    }
    let check = db.migrate(&["check", &plan, "--output", "json"]).await;
    check.ok();
    let doc: serde_json::Value = serde_json::from_str(&check.stdout).unwrap();
    assert_eq!(doc["last_bound"], "105", "{doc}");
    assert_eq!(doc["default_rows"], 0, "{doc}");
    // A second run changes nothing.
    let again = db.migrate(&["maintain", &plan]).await;
    again.ok();
    assert!(
        !again.stdout.contains("created") && !again.stdout.contains("dropped"),
        "{}",
        again.stdout
    );
    // Nothing premade and the newest value holding rows: loud.
    db.exec("DROP TABLE builds_p104, builds_p105; INSERT INTO builds (partition_id, status) VALUES (103, 'x')")
        .await;
    let tight = db.plan_file(
        dir.path(),
        "t.yaml",
        "table: public.builds\npartition:\n  by: list\n  column: partition_id\n  premake: 0\nmethod: move\n",
    );
    let run = db.migrate(&["maintain", tight.to_str().unwrap()]).await;
    assert_eq!(run.code, 5, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("no empty partition is left for the next value"),
        "{}",
        run.stderr
    );

    // Hash partitions are made up front.
    db.exec(
        "CREATE TABLE public.sessions (id bigint NOT NULL) PARTITION BY HASH (id);
         CREATE TABLE sessions_h0 PARTITION OF sessions FOR VALUES WITH (MODULUS 2, REMAINDER 0);
         CREATE TABLE sessions_h1 PARTITION OF sessions FOR VALUES WITH (MODULUS 2, REMAINDER 1);",
    )
    .await;
    let hash = db.plan_file(
        dir.path(),
        "h.yaml",
        "table: public.sessions\npartition:\n  by: hash\n  column: id\n  modulus: 2\nmethod: move\n",
    );
    let run = db.migrate(&["maintain", hash.to_str().unwrap()]).await;
    run.ok();
    assert!(run.stdout.contains("2 hash partitions"), "{}", run.stdout);
    // A plan that names another strategy than the table's is refused.
    let wrong = db.plan_file(
        dir.path(),
        "w.yaml",
        "table: public.builds\npartition:\n  by: hash\n  column: partition_id\n  modulus: 4\nmethod: move\n",
    );
    let run = db.migrate(&["maintain", wrong.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("is not partitioned by hash"), "{}", run.stderr);
}

/// Autovacuum never analyzes a partitioned parent. The migration analyzes
/// it before the swap; `maintain` again once `maintain.analyze_every` has
/// passed, so that the planner's view of the whole table follows the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintain_analyzes_the_parent_on_its_schedule() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    let dir = scratch();
    let plan = partitioned(&db, dir.path(), "maintain:\n  analyze_every: 2s\n").await;
    let analyzed = || async {
        db.scalar_str(
            "SELECT greatest(last_analyze, last_autoanalyze)::text FROM pg_stat_all_tables WHERE relid = 'public.audit'::regclass",
        )
        .await
    };
    // Analyzed by the migration: too recent for maintain.
    let first = analyzed().await;
    let run = db.migrate(&["maintain", &plan, "--output", "json"]).await;
    run.ok();
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        doc["analyzed_ms"].is_null() && doc["analyzed_before"].is_string(),
        "{doc}"
    );
    // A month of new rows the parent's statistics do not know yet.
    db.exec("INSERT INTO audit (at, what) SELECT now(), 'new' FROM generate_series(1, 20000)")
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let run = db.migrate(&["maintain", &plan]).await;
    run.ok();
    assert!(
        run.stdout.contains("analyzed \"public\".\"audit\" as a whole in"),
        "{}",
        run.stdout
    );
    let second = analyzed().await;
    assert!(second > first, "{first:?} then {second:?}");
    assert!(
        db.scalar_i64(
            "SELECT (reltuples >= 20000 + 24 * 365)::int::bigint FROM pg_class WHERE oid = 'public.audit'::regclass"
        )
        .await
            == 1,
        "the parent's row estimate does not count the new rows"
    );
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM repartition.analyzed WHERE table_name = '\"public\".\"audit\"'")
            .await,
        1
    );
    // And not again before the interval has passed.
    let run = db.migrate(&["maintain", &plan]).await;
    run.ok();
    assert!(!run.stdout.contains("as a whole"), "{}", run.stdout);
}
