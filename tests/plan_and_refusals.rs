//! `plan` changes nothing and shows every statement; every refusal is a
//! sentence with exit code 2 and leaves the database as it was.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_prints_every_phase_and_changes_nothing() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 20, 2000).await;
    let before = db.objects().await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(500, ""));
    let run = db.migrate(&["plan", plan.to_str().unwrap()]).await;
    run.ok();
    for needle in [
        "== Phase 1 of 5: prepare",
        "== Phase 2 of 5: route",
        "== Phase 3 of 5: move",
        "== Phase 4 of 5: swap",
        "== Phase 5 of 5: finish",
        "PARTITION BY RANGE (\"ts\")",
        "ALTER TABLE \"public\".\"workflow_events__part\" ADD CONSTRAINT \"workflow_events_pkey__p\" PRIMARY KEY (\"id\", \"ts\")",
        "uniqueness of (\"id\") alone is no longer enforced",
        "view \"public\".\"event_types\" depends on",
        "INSERT ... ON CONFLICT",
        "SELECT ... FOR UPDATE",
        "DELETE FROM ONLY \"public\".\"workflow_events__orig\" WHERE ctid >=",
        "DROP TABLE \"public\".\"workflow_events__orig\"",
        "ALTER SEQUENCE \"public\".\"workflow_events_id_seq\" OWNED BY",
        "Nothing was changed.",
    ] {
        assert!(run.stdout.contains(needle), "plan output lacks {needle:?}:\n{}", run.stdout);
    }
    assert_eq!(db.objects().await, before, "plan changed the database");
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM pg_namespace WHERE nspname = 'repartition'")
            .await,
        0
    );
}

/// Attach by list on `column`, every existing row holding `initial`.
fn attach_list(column: &str, initial: &str) -> String {
    format!("table: public.workflow_events\npartition:\n  by: list\n  column: {column}\n  initial: {initial}\nmethod: attach\n")
}

struct Case {
    name: &'static str,
    setup: &'static str,
    plan: String,
    expect: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_one_sentence_and_change_nothing() {
    let cluster = Cluster::start();
    let dir = scratch();
    let p = |extra: &str| event_plan(500, extra);
    let cases = vec![
        Case {
            name: "missing table",
            setup: "",
            plan: p("").replace("public.workflow_events", "public.nope"),
            expect: "table (line 1) names \"public\".\"nope\", which does not exist",
        },
        Case {
            name: "missing column",
            setup: "",
            plan: p("").replace("column: ts", "column: tss"),
            expect: "`tss`, which is not a column",
        },
        Case {
            name: "key of another type",
            setup: "",
            plan: p("").replace("column: ts", "column: type"),
            expect: "of type text",
        },
        Case {
            name: "integer key with an interval",
            setup: "",
            plan: p("").replace("column: ts", "column: n"),
            expect: "use partition.step",
        },
        Case {
            name: "incoming foreign key",
            setup: "CREATE TABLE event_refs (event_id bigint REFERENCES workflow_events (id))",
            plan: p(""),
            expect: "(\"event_refs_event_id_fkey\" on \"public\".\"event_refs\")",
        },
        Case {
            name: "a materialized view read by a view",
            setup: "CREATE MATERIALIZED VIEW ev_mv AS SELECT id FROM workflow_events; CREATE VIEW ev_mv_reader AS SELECT * FROM ev_mv",
            plan: p(""),
            expect: "materialized view \"public\".\"ev_mv\" reads \"public\".\"workflow_events\", and views read it in turn (public.ev_mv_reader)",
        },
        Case {
            name: "a statement trigger with transition tables on UPDATE, by move",
            setup: "CREATE FUNCTION tg() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'; \
                    CREATE TRIGGER audit AFTER UPDATE ON workflow_events REFERENCING NEW TABLE AS fresh FOR EACH STATEMENT EXECUTE FUNCTION tg()",
            plan: p(""),
            expect: "the statement trigger \"audit\" has transition tables and fires on UPDATE or DELETE, which reach the table through the routing view row by row; PostgreSQL does not allow transition tables on the view's own trigger; use method sync or attach",
        },
        Case {
            name: "a row trigger with a transition table",
            setup: "CREATE FUNCTION tg() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'; \
                    CREATE TRIGGER audit AFTER INSERT ON workflow_events REFERENCING NEW TABLE AS fresh FOR EACH ROW EXECUTE FUNCTION tg()",
            plan: p("").replace("method: move", "method: sync"),
            expect: "the row trigger \"audit\" has transition tables, which PostgreSQL does not allow on a partitioned table",
        },
        Case {
            name: "no primary key",
            setup: "ALTER TABLE workflow_events DROP CONSTRAINT workflow_events_pkey",
            plan: p(""),
            expect: "no primary key or unique key on NOT NULL columns, which the move method's view needs to route UPDATE and DELETE to the one row meant; add one, or use method attach, which needs none",
        },
        Case {
            name: "no primary key, for sync",
            setup: "ALTER TABLE workflow_events DROP CONSTRAINT workflow_events_pkey",
            plan: p("").replace("method: move", "method: sync"),
            expect: "which the sync method's mirror needs to find the row an UPDATE or DELETE changed",
        },
        Case {
            name: "a NOT VALID foreign key",
            setup: "ALTER TABLE workflow_events ADD CONSTRAINT ev_run_nv FOREIGN KEY (run_id) REFERENCES workflow_runs (id) NOT VALID",
            plan: p(""),
            expect: "the foreign key \"ev_run_nv\" is NOT VALID, and every row this method copies is checked against it; validate it first (ALTER TABLE \"public\".\"workflow_events\" VALIDATE CONSTRAINT \"ev_run_nv\"",
        },
        Case {
            name: "a foreign key of the table to itself",
            setup: "ALTER TABLE workflow_events ADD COLUMN parent_id bigint REFERENCES workflow_events (id)",
            plan: p(""),
            expect: "(\"workflow_events_parent_id_fkey\" on \"public\".\"workflow_events\") and cannot follow it to a partitioned table, whose unique keys include the partition key (a foreign key of the table to itself included",
        },
        Case {
            name: "a unique index on an expression",
            setup: "CREATE UNIQUE INDEX ev_lower_type ON workflow_events (lower(type), id)",
            plan: p(""),
            expect: "the unique index \"ev_lower_type\" is on expressions",
        },
        Case {
            name: "rows below the first bound",
            setup: "",
            plan: p("").replace("  interval: month\n", "  interval: month\n  start: \"2099-01-01\"\n"),
            expect: "existing rows have keys below the first bound",
        },
        Case {
            name: "already partitioned",
            setup: "CREATE TABLE parted (id int, ts timestamptz NOT NULL) PARTITION BY RANGE (ts)",
            plan: p("").replace("public.workflow_events", "public.parted"),
            expect: "is already partitioned",
        },
        Case {
            name: "a view",
            setup: "",
            plan: p("").replace("public.workflow_events", "public.event_types"),
            expect: "is a view, not a table",
        },
        Case {
            name: "an unlogged table",
            setup: "CREATE UNLOGGED TABLE ulog (id bigserial PRIMARY KEY, ts timestamptz NOT NULL)",
            plan: p("").replace("public.workflow_events", "public.ulog"),
            expect: "is unlogged, and its partitioned replacement could not be",
        },
        Case {
            name: "a table with inheritance children",
            setup: "CREATE TABLE child_events () INHERITS (workflow_events)",
            plan: p(""),
            expect: "takes part in inheritance or is a partition already",
        },
        Case {
            name: "unknown key",
            setup: "",
            plan: format!("{}colour: blue\n", p("")),
            expect: "colour (line 10) unknown field `colour`",
        },
        Case {
            name: "list with move on a missing column",
            setup: "",
            plan: p("")
                .replace("  interval: month\n", "")
                .replace("by: range", "by: list")
                .replace("column: ts", "column: partition_id\n  initial: 100"),
            expect: "partition.column (line 4) names `partition_id`, which is not a column of \"public\".\"workflow_events\"; the attach method adds a list key column, move and sync partition on an existing one",
        },
        Case {
            name: "list by attach, a string initial for a missing column",
            setup: "",
            plan: attach_list("partition_id", "eu"),
            expect: "partition.initial (line 5) is the string `eu`, and \"public\".\"workflow_events\" has no column `partition_id`; the attach method adds a missing list key column as bigint only",
        },
        Case {
            name: "list by attach, a label the enum lacks",
            setup: "CREATE TYPE public.region AS ENUM ('eu', 'us'); ALTER TABLE workflow_events ADD COLUMN region public.region NOT NULL DEFAULT 'eu'",
            plan: attach_list("region", "mars"),
            expect: "partition.initial (line 5) is `mars`, which \"region\" of type public.region does not take: invalid input value for enum public.region: \"mars\"",
        },
        Case {
            name: "list by attach, a malformed uuid",
            setup: "ALTER TABLE workflow_events ADD COLUMN tenant uuid NOT NULL DEFAULT gen_random_uuid()",
            plan: attach_list("tenant", "not-a-uuid"),
            expect: "partition.initial (line 5) is `not-a-uuid`, which \"tenant\" of type uuid does not take: invalid input syntax for type uuid",
        },
        Case {
            name: "list by attach, a string initial for an integer key",
            setup: "ALTER TABLE workflow_events ADD COLUMN partition_id bigint NOT NULL DEFAULT 1",
            plan: attach_list("partition_id", "eu"),
            expect: "partition.initial (line 5) is `eu`, and \"partition_id\" is bigint; give an integer",
        },
        Case {
            name: "list by attach, a text key holding other values",
            setup: "ALTER TABLE workflow_events ADD COLUMN region text NOT NULL DEFAULT 'eu'; UPDATE workflow_events SET region = 'us' WHERE id <= 3",
            plan: attach_list("region", "eu"),
            expect: "3 existing rows have \"region\" other than eu; the original can only become the partition of that one value",
        },
        Case {
            name: "list on a column of many values",
            setup: "INSERT INTO workflow_events (run_id, type) SELECT 1, 'x' FROM generate_series(1, 1000)",
            plan: p("")
                .replace("  interval: month\n", "")
                .replace("by: range", "by: list")
                .replace("column: ts", "column: id")
                .replace("  naming: \"{table}_y{YYYY}m{MM}\"\n", ""),
            expect: "holds more than 1000 distinct values of \"id\"; list partitioning makes one partition per value",
        },
        Case {
            name: "zero batch",
            setup: "",
            plan: p("").replace("size: 500", "size: 0"),
            expect: "batch.size (line 9) must be a whole number above zero",
        },
        Case {
            name: "untimed lock",
            setup: "",
            plan: p("locks:\n  lock_timeout: 0\n"),
            expect: "locks.lock_timeout (line 11) must be above zero",
        },
        Case {
            name: "name taken",
            setup: "CREATE TABLE workflow_events__part (x int)",
            plan: p(""),
            expect: "names the migration needs are taken already: \"public\".\"workflow_events__part\"",
        },
    ];
    for case in cases {
        let db = cluster.database().await;
        seed(&db, 5, 200).await;
        if !case.setup.is_empty() {
            db.exec(case.setup).await;
        }
        let before = db.objects().await;
        let plan = db.plan_file(dir.path(), "p.yaml", &case.plan);
        for cmd in ["plan", "apply"] {
            let run = db.migrate(&[cmd, plan.to_str().unwrap()]).await;
            assert_eq!(
                run.code, 2,
                "{}: {cmd} should refuse with exit code 2:\n{}{}",
                case.name, run.stdout, run.stderr
            );
            let last = run.stderr.lines().last().unwrap_or("");
            assert!(last.starts_with("migrate: "), "{}: {last}", case.name);
            assert!(
                last.contains(case.expect),
                "{}: expected {:?} in: {last}",
                case.name,
                case.expect
            );
            assert!(
                !last.contains("backtrace") && !last.contains("panicked"),
                "{}: {last}",
                case.name
            );
        }
        assert_eq!(
            db.objects().await,
            before,
            "{}: a refusal changed the database",
            case.name
        );
        assert_eq!(
            db.scalar_i64("SELECT count(*) FROM pg_namespace WHERE nspname = 'repartition'")
                .await,
            0,
            "{}: a refusal created the control schema",
            case.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connection_and_missing_plan_are_sentences() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    let run = db.migrate(&["plan", "/nonexistent/plan.yaml"]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("cannot read the plan file /nonexistent/plan.yaml"),
        "{}",
        run.stderr
    );
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(500, ""));
    let bad = Db {
        url: "postgres://someone:hunter2@127.0.0.1:1/nowhere".into(),
    };
    let run = bad.migrate(&["plan", plan.to_str().unwrap()]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("cannot connect to the database nowhere on 127.0.0.1:1"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("hunter2"), "the password leaked: {}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_as_json_and_strict() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 5, 300).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(500, ""));
    let plan = plan.to_str().unwrap();
    let run = db.migrate(&["plan", plan, "--output", "json"]).await;
    run.ok();
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("plan prints JSON");
    assert_json_documented(&doc);
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["method"], "move");
    assert_eq!(doc["phases"].as_array().unwrap().len(), 5);
    assert!(doc["phases"][0]["statements"][2]["sql"]
        .as_str()
        .unwrap()
        .starts_with("CREATE TABLE"));
    assert!(doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["level"] == "warning"));
    // Replica identity and replication slots are findings.
    db.exec(
        "ALTER TABLE workflow_events REPLICA IDENTITY FULL;
         SELECT pg_create_physical_replication_slot('standby_a', true);",
    )
    .await;
    let run = db.migrate(&["plan", plan, "--output", "json"]).await;
    run.ok();
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let messages: Vec<&str> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    for needle in [
        "has REPLICA IDENTITY FULL, which the partitioned table does not inherit",
        "the physical replication slot standby_a (inactive,",
    ] {
        assert!(
            messages.iter().any(|m| m.contains(needle)),
            "no `{needle}` in {messages:?}"
        );
    }
    db.exec("SELECT pg_drop_replication_slot('standby_a')").await;
    // Every finding has its code; none is accepted yet.
    let codes: Vec<(&str, bool)> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["code"].as_str().unwrap(), f["accepted"].as_bool().unwrap()))
        .collect();
    assert!(codes.contains(&("pk-gains-partition-key", false)), "{codes:?}");
    assert!(codes.contains(&("replica-identity-not-inherited", false)), "{codes:?}");
    assert!(codes.contains(&("slot-retains-wal", false)), "{codes:?}");
    // The warnings make --strict refuse, naming their codes ...
    let run = db.migrate(&["plan", plan, "--strict"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("--strict")
            && run.stderr.contains("pk-gains-partition-key")
            && run.stderr.contains("replica-identity-not-inherited"),
        "{}",
        run.stderr
    );
    // ... until the plan accepts them: one accepted, the other still fails.
    let one = db.plan_file(
        dir.path(),
        "one.yaml",
        &format!("{}accept: [pk-gains-partition-key]\n", event_plan(500, "")),
    );
    let run = db.migrate(&["plan", one.to_str().unwrap(), "--strict"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        !run.stderr.contains("pk-gains-partition-key") && run.stderr.contains("replica-identity-not-inherited"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("warning [pk-gains-partition-key, accepted]: "),
        "{}",
        run.stdout
    );
    let both = db.plan_file(
        dir.path(),
        "both.yaml",
        &format!(
            "{}accept: [pk-gains-partition-key, replica-identity-not-inherited]\n",
            event_plan(500, "")
        ),
    );
    let run = db.migrate(&["plan", both.to_str().unwrap(), "--strict"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("note [view-rebound]: "), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reads_the_applications_statements() {
    let cluster = Cluster::start_with_settings("-c shared_preload_libraries=pg_stat_statements");
    let db = cluster.database().await;
    seed(&db, 5, 2000).await;
    db.exec(
        "CREATE EXTENSION pg_stat_statements;
         SELECT pg_stat_statements_reset();
         SELECT * FROM workflow_events WHERE id = 5 FOR UPDATE;
         INSERT INTO workflow_events (run_id, type) VALUES (1, 'x') ON CONFLICT (id) DO NOTHING;
         SELECT count(*) FROM workflow_events WHERE run_id = 3;
         SELECT count(*) FROM workflow_events WHERE ts > now() - interval '1 day';",
    )
    .await;
    let dir = scratch();
    // The move method's view fails the locking read and the upsert: refused,
    // each named with its code.
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(500, ""));
    let run = db.migrate(&["plan", plan.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr.contains("WHERE id = $1 FOR UPDATE") && run.stderr.contains("[view-locking-reads]"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("[view-on-conflict]"), "{}", run.stderr);
    assert!(run.stderr.contains("use method sync"), "{}", run.stderr);
    // An unknown code is refused with the known ones.
    let bad = db.plan_file(
        dir.path(),
        "b.yaml",
        &format!("{}accept: [view-anything]\n", event_plan(500, "")),
    );
    let run = db.migrate(&["plan", bad.to_str().unwrap()]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("view-locking-reads, view-read-modify-write"),
        "{}",
        run.stderr
    );
    // Accepted, they are warnings.
    let plan = db.plan_file(
        dir.path(),
        "a.yaml",
        &format!(
            "{}accept: [view-locking-reads, view-on-conflict]\n",
            event_plan(500, "")
        ),
    );
    let run = db.migrate(&["plan", plan.to_str().unwrap()]).await;
    run.ok();
    let findings: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("  warning [") || l.starts_with("  note ["))
        .collect();
    let has = |needle: &str| findings.iter().any(|l| l.contains(needle));
    assert!(
        has("accepted by the plan")
            && has("warning [view-locking-reads, accepted]: ")
            && has("warning [view-on-conflict, accepted]: "),
        "{findings:#?}"
    );
    assert!(
        has("warning [on-conflict-without-key]: ON CONFLICT names columns without ts"),
        "{findings:#?}"
    );
    assert!(has("does not filter on ts") && has("WHERE run_id"), "{findings:#?}");
    assert!(
        !findings
            .iter()
            .any(|l| l.contains("does not filter on ts") && l.contains("ts >")),
        "{findings:#?}"
    );
    assert!(has("estimated partition sizes from a"), "{findings:#?}");
    assert!(has("disk: about"), "{findings:#?}");
    // The sync method serves those statements: no such warnings.
    let sync = db.plan_file(
        dir.path(),
        "s.yaml",
        &event_plan(500, "").replace("method: move", "method: sync"),
    );
    let run = db.migrate(&["plan", sync.to_str().unwrap()]).await;
    run.ok();
    assert!(
        !run.stdout.contains("[view-locking-reads") && !run.stdout.contains("[view-on-conflict"),
        "{}",
        run.stdout
    );
}

/// A role without the privileges a migration needs is told each missing
/// one before anything changes; once granted, it migrates; the control
/// schema stays closed to roles that were given nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_privileges_are_named_before_any_change() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 5, 300).await;
    let dbname = db.scalar_str("SELECT current_database()::text").await.unwrap();
    db.exec(
        "DO $$ BEGIN CREATE ROLE weak LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         DO $$ BEGIN CREATE ROLE nobody LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         REVOKE CREATE ON SCHEMA public FROM PUBLIC;
         GRANT SELECT ON workflow_events TO weak;",
    )
    .await;
    let objects = db.objects().await;
    let as_role = |role: &str| Db {
        url: db.url.replace("user=postgres", &format!("user={role}")),
    };
    let weak = as_role("weak");
    assert_ne!(weak.url, db.url);
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(100, ""));
    let plan = plan.to_str().unwrap();
    for cmd in ["plan", "apply"] {
        let run = weak.migrate(&[cmd, plan]).await;
        assert_eq!(run.code, 2, "{cmd}: {}", run.stderr);
        for missing in [
            "the role weak does not own \"public\".\"workflow_events\" (its owner is postgres)",
            "the role weak lacks the CREATE privilege on the schema \"public\"",
            &format!("the role weak lacks the CREATE privilege on the database {dbname}"),
            "the role weak lacks the REFERENCES privilege on public.workflow_runs",
            "the role weak lacks ownership of the view public.event_types",
            "the role weak lacks the SELECT and UPDATE privileges on public.workflow_runs, whose rows each batch locks FOR KEY SHARE",
        ] {
            assert!(run.stderr.contains(missing), "{cmd}: no `{missing}` in {}", run.stderr);
        }
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    }
    assert_eq!(db.objects().await, objects);
    assert_eq!(
        db.scalar_str("SELECT to_regclass('repartition.migrations')::text")
            .await,
        None,
        "the control schema was created"
    );
    // Granted what it lacked, the same role migrates.
    db.exec(&format!(
        "GRANT CREATE ON SCHEMA public TO weak; GRANT CREATE ON DATABASE \"{dbname}\" TO weak;
         ALTER TABLE workflow_events OWNER TO weak; ALTER VIEW event_types OWNER TO weak;
         GRANT REFERENCES, SELECT, UPDATE ON workflow_runs TO weak;"
    ))
    .await;
    weak.migrate(&["apply", plan]).await.ok();
    assert_eq!(
        db.scalar_str("SELECT relkind::text FROM pg_class WHERE oid = 'workflow_events'::regclass")
            .await
            .as_deref(),
        Some("p")
    );
    // A role given nothing can neither read nor steer the control table.
    let nobody = as_role("nobody");
    for args in [["status", plan], ["pause", plan]] {
        let run = nobody.migrate(&args).await;
        assert_ne!(run.code, 0, "{args:?}: {}", run.stdout);
        assert!(run.stderr.contains("permission denied"), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    }
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM repartition.migrations WHERE paused")
            .await,
        0
    );
}

/// Another session's temporary table is refused; passwords given in the URL
/// or the environment appear in no output, at any log level, in text or
/// JSON, whether the connection works or fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_tables_refused_and_passwords_never_shown() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 5, 300).await;
    let holder = db.client().await;
    holder
        .batch_execute("CREATE TEMP TABLE tmp_events (id bigserial PRIMARY KEY, ts timestamptz NOT NULL)")
        .await
        .unwrap();
    let schema: String = holder
        .query_one(
            "SELECT nspname::text FROM pg_namespace WHERE oid = pg_my_temp_schema()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let dir = scratch();
    let plan = db.plan_file(
        dir.path(),
        "t.yaml",
        &event_plan(100, "").replace("public.workflow_events", &format!("{schema}.tmp_events")),
    );
    let run = db.migrate(&["plan", plan.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("is a temporary table"), "{}", run.stderr);

    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(100, ""));
    let plan = plan.to_str().unwrap();
    let url_secret = "Url-Secret-7731";
    let env_secret = "Env-Secret-9152";
    // key=value URL with a password (the server trusts, so it connects).
    let with_password = Db {
        url: format!("{} password={url_secret}", db.url),
    };
    let unreachable = Db {
        url: format!("postgres://someone:{url_secret}@127.0.0.1:1/nowhere"),
    };
    for (target, args) in [
        (&with_password, vec!["plan", plan]),
        (&with_password, vec!["--log-format", "json", "apply", plan]),
        (&with_password, vec!["status", plan, "--output", "json"]),
        (&unreachable, vec!["plan", plan]),
        (&unreachable, vec!["--log-format", "json", "status", plan]),
    ] {
        let run = target
            .migrate_env(&args, &[("PGPASSWORD", env_secret), ("MIGRATE_LOG", "trace")])
            .await;
        for secret in [url_secret, env_secret] {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "{args:?} showed a password:\n{}\n{}",
                run.stdout,
                run.stderr
            );
        }
    }
}
