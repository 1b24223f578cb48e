//! Each phase, run one at a time and end to end, with what it must leave.

mod common;
use common::*;

async fn relkind(db: &Db, name: &str) -> Option<String> {
    db.scalar_str(&format!(
        "SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('{name}'))"
    ))
    .await
}

async fn status(db: &Db, plan: &str) -> String {
    let run = db.migrate(&["status", plan]).await;
    run.ok();
    run.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_one_at_a_time_then_the_swap() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 30, 3000).await;
    let before = all_events(&db).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(400, ""));
    let plan = plan.to_str().unwrap();

    db.migrate(&["apply", plan, "--until", "prepare"]).await.ok();
    assert_eq!(relkind(&db, "public.workflow_events").await.as_deref(), Some("r"));
    assert_eq!(relkind(&db, "public.workflow_events__part").await.as_deref(), Some("p"));
    assert!(status(&db, plan).await.contains("(phase prepared)"));
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.workflow_events__part'::regclass")
            .await,
        db.scalar_i64("SELECT count(*) FROM pg_class WHERE relname LIKE 'workflow\\_events\\_y%' AND relkind = 'r'")
            .await
    );

    db.migrate(&["resume", plan, "--until", "route"]).await.ok();
    assert_eq!(relkind(&db, "public.workflow_events").await.as_deref(), Some("v"));
    assert_eq!(relkind(&db, "public.workflow_events__orig").await.as_deref(), Some("r"));
    assert_eq!(all_events(&db).await, before, "the view shows every row");
    // The dependent view reads through the routing view now.
    assert_eq!(db.scalar_i64("SELECT sum(events)::bigint FROM event_types").await, 3000);
    // INSERT ... RETURNING through the view, with defaults.
    let id = db
        .scalar_i64("INSERT INTO workflow_events (run_id, type) VALUES (1, 'via view') RETURNING id")
        .await;
    assert_eq!(
        db.scalar_i64(&format!("SELECT count(*) FROM workflow_events__part WHERE id = {id}"))
            .await,
        1
    );
    assert_eq!(db.scalar_i64("SELECT count(*) FROM workflow_events__part").await, 1);
    // COPY into the view goes through the INSTEAD OF INSERT trigger.
    let c = db.client().await;
    {
        use futures_util::SinkExt;
        let sink = c
            .copy_in("COPY workflow_events (run_id, type) FROM STDIN")
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(b"2\tcopied\n3\tcopied\n"))
            .await
            .unwrap();
        assert_eq!(sink.finish().await.unwrap(), 2);
    }
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM workflow_events__part WHERE type = 'copied'")
            .await,
        2
    );
    // UPDATE and DELETE report the right counts wherever the rows are.
    assert_eq!(
        c.execute("UPDATE workflow_events SET n = 7 WHERE id IN (1, 2, $1)", &[&id])
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        c.execute("DELETE FROM workflow_events WHERE type = 'copied'", &[])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        c.execute("DELETE FROM workflow_events WHERE id = -5", &[])
            .await
            .unwrap(),
        0
    );
    // A partition-key update of a row in the original keeps one copy.
    assert_eq!(
        c.execute(
            "UPDATE workflow_events SET ts = now() - interval '3 days' WHERE id = 5",
            &[]
        )
        .await
        .unwrap(),
        1
    );
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM workflow_events WHERE id = 5").await,
        1
    );
    let expected = all_events(&db).await;

    db.migrate(&["resume", plan, "--until", "move"]).await.ok();
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM ONLY workflow_events__orig").await,
        0
    );
    assert!(status(&db, plan).await.contains("(phase moved)"));
    assert_eq!(all_events(&db).await, expected);
    assert!(
        db.scalar_i64("SELECT count(*) FROM repartition.batches").await > 3,
        "moved in several batches"
    );

    db.migrate(&["swap", plan]).await.ok();
    assert_eq!(relkind(&db, "public.workflow_events").await.as_deref(), Some("p"));
    assert_eq!(
        relkind(&db, "public.workflow_events__orig").await,
        None,
        "the emptied original is dropped"
    );
    assert_eq!(relkind(&db, "public.workflow_events__part").await, None);
    assert_eq!(all_events(&db).await, expected);
    assert!(status(&db, plan).await.contains(": done (phase finished)"));

    // What the swap carries over.
    let names = |sql: &str| {
        let db = db.clone();
        let sql = sql.to_string();
        async move {
            db.client()
                .await
                .query(&sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names("SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'workflow_events'::regclass AND contype <> 'n' ORDER BY 1").await,
        vec![
            "workflow_events_n_check CHECK ((n >= 0))".to_string(),
            "workflow_events_pkey PRIMARY KEY (id, ts)".to_string(),
            "workflow_events_run_id_fkey FOREIGN KEY (run_id) REFERENCES workflow_runs(id) ON DELETE CASCADE".to_string(),
        ]
    );
    assert_eq!(
        names(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'workflow_events'::regclass ORDER BY 1"
        )
        .await,
        vec!["workflow_events_pkey", "workflow_events_run_ts", "workflow_events_type"]
    );
    let acl = db
        .scalar_str("SELECT array_to_string(relacl, ',') FROM pg_class WHERE oid = 'workflow_events'::regclass")
        .await
        .unwrap_or_default();
    assert!(acl.contains("app_rw=arwd"), "privileges were not carried over: {acl}");
    assert_eq!(
        db.scalar_str("SELECT obj_description('workflow_events'::regclass, 'pg_class')")
            .await
            .as_deref(),
        Some("the event log")
    );
    // The sequence moved with the table and is past every id.
    assert_eq!(
        db.scalar_str("SELECT d.refobjid::regclass::text FROM pg_depend d WHERE d.objid = 'workflow_events_id_seq'::regclass AND d.deptype = 'a'").await.as_deref(),
        Some("workflow_events")
    );
    let next = db
        .scalar_i64("INSERT INTO workflow_events (run_id, type) VALUES (1, 'after') RETURNING id")
        .await;
    assert!(next > expected.iter().map(|e| e.0).max().unwrap());
    // The dependent view now reads the partitioned table.
    assert_eq!(
        db.scalar_str("SELECT string_agg(DISTINCT refobjid::regclass::text, ',') FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid \
                       WHERE r.ev_class = 'event_types'::regclass AND refobjid <> 'event_types'::regclass").await.as_deref(),
        Some("workflow_events")
    );
    // Nothing of the tool's is left but its control schema.
    let left: Vec<String> = db.objects().await.into_iter().filter(|o| o.contains("__")).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // Running it again is refused: the table is partitioned now.
    let again = db.migrate(&["apply", plan]).await;
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("already partitioned"), "{}", again.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_old_integer_key_and_order_of_commands() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    db.exec(
        "CREATE TABLE public.builds (id bigserial PRIMARY KEY, project int NOT NULL, status text NOT NULL DEFAULT 'new', \
         big bigint GENERATED ALWAYS AS (project * 10) STORED) WITH (fillfactor = 80);
         INSERT INTO builds (project) SELECT g % 50 FROM generate_series(1, 5000) g;",
    )
    .await;
    let before: Vec<(i64, i32, i64)> = db
        .client()
        .await
        .query("SELECT id, project, big FROM builds ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let dir = scratch();
    let plan = db.plan_file(
        dir.path(),
        "b.yaml",
        "table: public.builds\npartition:\n  by: range\n  column: id\n  step: 1000\n  premake: 2\nmethod: move\nbatch:\n  size: 300\nswap:\n  keep_old: true\n",
    );
    let plan = plan.to_str().unwrap();
    let early = db.migrate(&["swap", plan]).await;
    assert_eq!(early.code, 2);
    assert!(early.stderr.contains("no unfinished migration"), "{}", early.stderr);
    db.migrate(&["apply", plan, "--until", "route"]).await.ok();
    let early = db.migrate(&["swap", plan]).await;
    assert_eq!(early.code, 2);
    assert!(early.stderr.contains("rows are still to be moved"), "{}", early.stderr);
    // Two runners at once: the second is told who holds the table.
    let holder = db.client().await;
    holder
        .execute(
            "SELECT pg_advisory_lock(1380994375, hashtext('\"public\".\"builds\"'))",
            &[],
        )
        .await
        .unwrap();
    let second = db.migrate(&["resume", plan]).await;
    assert_eq!(second.code, 4, "{}", second.stderr);
    assert!(
        second
            .stderr
            .contains("another migrate process is already working on \"public\".\"builds\""),
        "{}",
        second.stderr
    );
    // Released explicitly: a closed connection's locks go only once the
    // server has noticed, which a loaded machine can delay.
    holder
        .execute(
            "SELECT pg_advisory_unlock(1380994375, hashtext('\"public\".\"builds\"'))",
            &[],
        )
        .await
        .unwrap();
    drop(holder);
    db.migrate(&["resume", plan]).await.ok();
    let after: Vec<(i64, i32, i64)> = db
        .client()
        .await
        .query("SELECT id, project, big FROM builds ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(after, before);
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM pg_inherits WHERE inhparent = 'builds'::regclass")
            .await,
        8
    );
    assert_eq!(
        db.scalar_i64(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'builds'::regclass AND c.reloptions = '{fillfactor=80}'"
        )
        .await,
        8,
        "partitions take the original's storage parameters"
    );
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM ONLY builds__orig").await,
        0,
        "kept, and empty"
    );
    let abort = db.migrate(&["abort", plan]).await;
    assert_eq!(abort.code, 2);
    assert!(abort.stderr.contains("no unfinished migration"), "{}", abort.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_need_quoting_survive_every_phase() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    db.exec(
        r#"CREATE SCHEMA "My Schema";
        CREATE TABLE "My Schema"."Weird ""Events"" Ünï" (
            "ID" bigserial PRIMARY KEY,
            "Happened At" timestamp NOT NULL,
            "select" text NOT NULL DEFAULT 'x''y',
            "a.b" int
        );
        CREATE INDEX "idx; DROP TABLE x" ON "My Schema"."Weird ""Events"" Ünï" ("select");
        CREATE VIEW "My Schema"."v ""q""" AS SELECT "ID", "select" FROM "My Schema"."Weird ""Events"" Ünï";
        INSERT INTO "My Schema"."Weird ""Events"" Ünï" ("Happened At", "a.b")
            SELECT timestamp '2025-01-01' + g * interval '1 hour', g FROM generate_series(1, 2000) g;"#,
    )
    .await;
    let dir = scratch();
    let plan = db.plan_file(
        dir.path(),
        "w.yaml",
        "table: '\"My Schema\".\"Weird \"\"Events\"\" Ünï\"'\npartition:\n  by: range\n  column: Happened At\n  interval: week\n  start: \"2024-12-30\"\nmethod: move\nbatch:\n  size: 200\n",
    );
    let plan = plan.to_str().unwrap();
    db.migrate(&["plan", plan]).await.ok();
    db.migrate(&["apply", plan, "--until", "route"]).await.ok();
    db.exec(r#"INSERT INTO "My Schema"."Weird ""Events"" Ünï" ("Happened At") VALUES ('2025-01-02')"#)
        .await;
    db.exec(r#"UPDATE "My Schema"."Weird ""Events"" Ünï" SET "select" = 'upd' WHERE "ID" <= 10"#)
        .await;
    db.migrate(&["resume", plan]).await.ok();
    assert_eq!(
        db.scalar_i64(r#"SELECT count(*) FROM "My Schema"."Weird ""Events"" Ünï""#)
            .await,
        2001
    );
    assert_eq!(
        db.scalar_i64(r#"SELECT count(*) FROM "My Schema"."v ""q""" WHERE "select" = 'upd'"#)
            .await,
        10
    );
    assert_eq!(
        db.scalar_str(r#"SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('"My Schema"."Weird ""Events"" Ünï"'))"#)
            .await
            .as_deref(),
        Some("p")
    );
    assert_eq!(
        db.scalar_i64(r#"SELECT count(*) FROM pg_class WHERE relname = 'idx; DROP TABLE x' AND relkind = 'I'"#)
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_bounds_follow_local_midnight_across_daylight_saving() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    // The server and the role think in another zone: bounds must not care.
    db.exec(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone = %L', current_database(), 'America/New_York'); END $$;
         CREATE TABLE public.visits (id bigserial PRIMARY KEY, at timestamptz NOT NULL);
         INSERT INTO visits (at) VALUES
           ('2025-03-29 23:59:59+01'), ('2025-03-30 00:00:00+01'), ('2025-03-30 23:59:59+02'),
           ('2025-03-31 00:00:00+02'), ('2025-10-25 23:30:00+02'), ('2025-10-26 00:00:00+02'),
           ('2025-10-26 23:59:59+01'), ('2025-10-27 00:00:00+01');",
    )
    .await;
    let dir = scratch();
    let plan = db.plan_file(
        dir.path(),
        "v.yaml",
        "table: public.visits\npartition:\n  by: range\n  column: at\n  interval: day\n  time_zone: Europe/Berlin\n  premake: 0\nmethod: attach\nattach:\n  cutoff: \"2025-11-01\"\n",
    );
    let plan = plan.to_str().unwrap();
    db.migrate(&["apply", plan]).await.ok();
    // The first partition holds the old rows; split makes the daily ones.
    db.migrate(&["split", plan]).await.ok();
    let c = db.client().await;
    c.batch_execute("SET timezone = 'Europe/Berlin'").await.unwrap();
    let rows: Vec<(String, String)> = c
        .query(
            "SELECT to_char(at, 'YYYY-MM-DD HH24:MI:SS'), tableoid::regclass::text FROM visits ORDER BY at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expect = [
        ("2025-03-29 23:59:59", "visits_p20250329"),
        ("2025-03-30 00:00:00", "visits_p20250330"),
        ("2025-03-30 23:59:59", "visits_p20250330"),
        ("2025-03-31 00:00:00", "visits_p20250331"),
        ("2025-10-25 23:30:00", "visits_p20251025"),
        ("2025-10-26 00:00:00", "visits_p20251026"),
        ("2025-10-26 23:59:59", "visits_p20251026"),
        ("2025-10-27 00:00:00", "visits_p20251027"),
    ];
    for ((at, part), (want_at, want_part)) in rows.iter().zip(expect) {
        assert_eq!((at.as_str(), part.as_str()), (want_at, want_part));
    }
    // The 23-hour and 25-hour days, in UTC.
    c.batch_execute("SET timezone = 'UTC'").await.unwrap();
    let mut bounds = std::collections::HashMap::new();
    for p in ["visits_p20250330", "visits_p20251026"] {
        let b: String = c
            .query_one(
                "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = $1",
                &[&p],
            )
            .await
            .unwrap()
            .get(0);
        bounds.insert(p, b);
    }
    assert_eq!(
        bounds["visits_p20250330"],
        "FOR VALUES FROM ('2025-03-29 23:00:00+00') TO ('2025-03-30 22:00:00+00')"
    );
    assert_eq!(
        bounds["visits_p20251026"],
        "FOR VALUES FROM ('2025-10-25 22:00:00+00') TO ('2025-10-26 23:00:00+00')"
    );
}

const WEIRD: &str = r#""My Schema"."Weird ""Events"" Ünï""#;

async fn weird_table(db: &Db) {
    db.exec(
        r#"CREATE SCHEMA "My Schema";
        CREATE TABLE "My Schema"."Weird ""Events"" Ünï" (
            "ID" bigserial PRIMARY KEY,
            "Happened At" timestamp NOT NULL,
            "select" text NOT NULL DEFAULT 'x''y',
            "a.b" int,
            "tenant id" bigint NOT NULL DEFAULT 7
        );
        CREATE INDEX "idx; DROP TABLE x" ON "My Schema"."Weird ""Events"" Ünï" ("select");
        CREATE VIEW "My Schema"."v ""q""" AS SELECT "ID", "select" FROM "My Schema"."Weird ""Events"" Ünï";
        INSERT INTO "My Schema"."Weird ""Events"" Ünï" ("Happened At", "a.b", "tenant id")
            SELECT timestamp '2025-01-01' + g * interval '1 hour', g, 7 + g % 3 FROM generate_series(1, 2000) g;"#,
    )
    .await;
}

/// Quotes, spaces, dots, unicode, reserved words and a name colliding with
/// one the tool derives, through every phase of every method (abort,
/// unswap and split included), by range, list and hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_through_every_method() {
    let cluster = Cluster::start();
    let table = "table: '\"My Schema\".\"Weird \"\"Events\"\" Ünï\"'\n";
    let range = "partition:\n  by: range\n  column: Happened At\n  interval: week\n  start: \"2024-12-30\"\n";
    let cases = [
        ("move", range, &["apply --until move", "abort", "apply"][..]),
        ("sync", range, &["apply", "unswap", "swap", "cleanup"][..]),
        (
            "attach",
            "partition:\n  by: range\n  column: Happened At\n  interval: month\n",
            &["apply", "split"][..],
        ),
        ("move", "partition:\n  by: list\n  column: tenant id\n", &["apply"][..]),
        (
            "sync",
            "partition:\n  by: hash\n  column: select\n  modulus: 3\n",
            &["apply", "cleanup"][..],
        ),
    ];
    // A name the tool would derive, taken already: refused, naming it.
    {
        let db = cluster.database().await;
        weird_table(&db).await;
        db.exec(r#"CREATE INDEX "Weird ""Events"" Ünï__part" ON "My Schema"."Weird ""Events"" Ünï" ("a.b")"#)
            .await;
        let dir = scratch();
        let plan = db.plan_file(dir.path(), "w.yaml", &format!("{table}{range}method: move\n"));
        let run = db.migrate(&["apply", plan.to_str().unwrap()]).await;
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(
            run.stderr
                .contains(r#"names the migration needs are taken already: "My Schema"."Weird ""Events"" Ünï__part""#),
            "{}",
            run.stderr
        );
    }
    for (method, partition, steps) in cases {
        let db = cluster.database().await;
        weird_table(&db).await;
        let dir = scratch();
        let plan = db.plan_file(
            dir.path(),
            "w.yaml",
            &format!("{table}{partition}method: {method}\nbatch:\n  size: 300\n"),
        );
        let plan = plan.to_str().unwrap();
        let what = format!("{method} {}", partition.lines().nth(1).unwrap().trim());
        let p = db.migrate(&["plan", plan]).await;
        p.ok();
        for step in steps {
            let args: Vec<&str> = step.split(' ').collect();
            let mut argv = vec![args[0], plan];
            argv.extend(&args[1..]);
            let run = db.migrate(&argv).await;
            assert_eq!(run.code, 0, "{what}: {step}: {}", run.stderr);
            // The application writes between steps, through the name.
            db.exec(&format!(
                r#"INSERT INTO {WEIRD} ("Happened At", "select", "tenant id") VALUES ('2025-01-02', 'w', 8);
                   UPDATE {WEIRD} SET "a.b" = -1 WHERE "ID" % 100 = 0"#
            ))
            .await;
        }
        assert_eq!(
            db.scalar_i64(&format!(r#"SELECT count(*) FROM {WEIRD}"#)).await,
            2000 + steps.len() as i64,
            "{what}"
        );
        assert_eq!(
            db.scalar_i64(r#"SELECT count(*) FROM "My Schema"."v ""q""" WHERE "select" = 'w'"#)
                .await,
            steps.len() as i64,
            "{what}"
        );
        assert_eq!(
            db.scalar_i64(&format!(r#"SELECT count(*) FROM {WEIRD} WHERE "a.b" = -1"#))
                .await,
            20,
            "{what}"
        );
        let kind = db
            .scalar_str(
                r#"SELECT relkind::text FROM pg_class WHERE oid = '"My Schema"."Weird ""Events"" Ünï"'::regclass"#,
            )
            .await;
        assert_eq!(kind.as_deref(), Some("p"), "{what}");
    }

    // A 63-byte name: the names derived from it stay within the limit and
    // distinct.
    let db = cluster.database().await;
    let long = "e".repeat(63);
    db.exec(&format!(
        "CREATE TABLE public.{long} (id bigserial PRIMARY KEY, at timestamptz NOT NULL);
         INSERT INTO public.{long} (at) SELECT now() - g * interval '1 day' FROM generate_series(1, 500) g;"
    ))
    .await;
    let dir = scratch();
    let plan = db.plan_file(
        dir.path(),
        "l.yaml",
        &format!("table: public.{long}\npartition:\n  by: range\n  column: at\n  interval: month\n  naming: \"p{{YYYY}}{{MM}}\"\nmethod: move\n"),
    );
    let plan = plan.to_str().unwrap();
    db.migrate(&["apply", plan, "--until", "move"]).await.ok();
    db.migrate(&["abort", plan]).await.ok();
    db.migrate(&["apply", plan]).await.ok();
    assert_eq!(db.scalar_i64(&format!("SELECT count(*) FROM public.{long}")).await, 500);
}
