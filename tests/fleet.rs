//! One plan across a dozen databases on two servers: `fleet plan` refuses
//! the one that cannot be migrated, `fleet apply` is killed mid-way and run
//! again, one server restarts under it, the application works on several
//! targets throughout, and `fleet swap` ends the rollout; every table is
//! partitioned and holds exactly what its application committed. Then the
//! rollout controls: the canary, the stop at the first failure, SIGINT.

mod common;
use common::workload::{compare, Features, Workload};
use common::*;
use std::time::{Duration, Instant};

/// The latest migration of a database: state, phase and rows moved.
async fn migration(db: &Db) -> Option<(String, String, i64)> {
    let c = db.client().await;
    let exists: bool = c
        .query_one("SELECT to_regclass('repartition.migrations') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    if !exists {
        return None;
    }
    c.query_opt(
        "SELECT state, phase, rows_moved FROM repartition.migrations ORDER BY id DESC LIMIT 1",
        &[],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
}

/// Waits until `ready` holds for the databases' migrations.
async fn wait_for(what: &str, dbs: &[&Db], ready: impl Fn(&[Option<(String, String, i64)>]) -> bool) {
    let started = Instant::now();
    loop {
        let mut seen = Vec::new();
        for db in dbs {
            seen.push(migration(db).await);
        }
        if ready(&seen) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "waited 120 s for {what}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn moving(m: &Option<(String, String, i64)>) -> bool {
    matches!(m, Some((state, phase, rows)) if state == "active" && phase == "routed" && *rows > 0)
}

fn targets_file(dir: &std::path::Path, name: &str, targets: &[(&str, &Db)]) -> String {
    let text: String = targets.iter().map(|(n, db)| format!("{n} {}\n", db.url)).collect();
    let path = dir.join(name);
    std::fs::write(&path, format!("# name  connection\n{text}")).unwrap();
    path.to_str().unwrap().to_string()
}

async fn spawn(db: &Db, args: &[&str]) -> tokio::process::Child {
    db.command(args, &[]).spawn().expect("migrate runs")
}

async fn finish(child: tokio::process::Child) -> Run {
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("the fleet run ends within 300 s")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dozen_databases_over_two_servers_killed_restarted_and_swapped() {
    let (a, b) = (Cluster::start(), Cluster::start());
    let mut dbs = Vec::new();
    for i in 0..12 {
        let db = if i < 9 { a.database().await } else { b.database().await };
        seed(&db, 12, if i < 9 { 1500 } else { 4000 }).await;
        dbs.push(db);
    }
    // The fifth cannot be moved: no key to route updates through the view.
    dbs[4]
        .exec("ALTER TABLE workflow_events DROP CONSTRAINT workflow_events_pkey")
        .await;
    let names: Vec<String> = (0..12)
        .map(|i| format!("{}-{i:02}", if i < 9 { "a" } else { "b" }))
        .collect();
    let dir = scratch();
    let targets = targets_file(
        dir.path(),
        "targets",
        &names.iter().map(String::as_str).zip(dbs.iter()).collect::<Vec<_>>(),
    );
    let plan = dbs[0].plan_file(dir.path(), "p.yaml", &event_plan(100, "  pause: 20ms\n"));
    let plan = plan.to_str().unwrap();

    // The dry run: every target planned, the one refused with its sentence.
    let run = dbs[0]
        .migrate(&["fleet", "plan", plan, "--targets", &targets, "--output", "json"])
        .await;
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    let doc = json(&run);
    assert_json_documented(&doc);
    for (i, t) in doc["targets"].as_array().unwrap().iter().enumerate() {
        assert_eq!(t["name"], names[i].as_str());
        if i == 4 {
            assert_eq!(t["verdict"], "refused", "{t}");
            assert!(t["message"].as_str().unwrap().contains("no primary key"), "{t}");
        } else {
            assert_ne!(t["verdict"], "refused", "{t}");
            assert!(t["estimated_rows"].as_i64().unwrap() > 1000, "{t}");
            assert!(t["bytes"].as_i64().unwrap() > 0, "{t}");
        }
    }
    let text = dbs[0].migrate(&["fleet", "plan", plan, "--targets", &targets]).await;
    assert!(
        text.stdout.contains("12 targets:") && text.stdout.contains("1 refused"),
        "{}",
        text.stdout
    );
    for db in &dbs {
        assert_eq!(migration(db).await, None, "plan changed nothing");
    }

    // The application works on four targets of the first server throughout.
    let traffic = [0usize, 1, 2, 6];
    let mut loads = Vec::new();
    for (k, &i) in traffic.iter().enumerate() {
        loads.push(Workload::start_with(&dbs[i], 2, 40 + k as u64, Features::for_method("move")).await);
    }

    // Killed while the first targets move their rows.
    let apply = [
        "fleet",
        "apply",
        plan,
        "--targets",
        &targets,
        "--until",
        "move",
        "--parallel",
        "4",
        "--keep-going",
    ];
    let mut first = spawn(&dbs[0], &apply).await;
    wait_for("two targets moving", &dbs.iter().collect::<Vec<_>>(), |s| {
        s.iter().filter(|m| moving(m)).count() >= 2
    })
    .await;
    first.start_kill().unwrap();
    let _ = first.wait().await;
    let mut touched = 0;
    for db in &dbs {
        if migration(db).await.is_some() {
            touched += 1;
        }
    }
    assert!(touched < 12, "the kill came after every target had started");

    // Run again: it resumes the started ones and starts the rest. The second
    // server restarts while one of its targets moves rows.
    let second = spawn(&dbs[0], &apply).await;
    let on_b: Vec<&Db> = dbs[9..].iter().collect();
    wait_for("a target of the second server moving", &on_b, |s| s.iter().any(moving)).await;
    let screen = dbs[0].migrate(&["fleet", "status", plan, "--targets", &targets]).await;
    screen.ok();
    println!("fleet status mid-run:\n{}", screen.stdout);
    assert!(screen.stdout.contains("running"), "{}", screen.stdout);
    b.restart("fast");
    let run = finish(second).await;
    println!("second apply:\n{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.code, 2,
        "one refused, the rest done:\n{}\n{}",
        run.stdout, run.stderr
    );
    assert!(run.stdout.contains("12 targets: 11 done, 1 refused"), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("b-") && l.split_whitespace().nth(2).is_some_and(|n| n != "1")),
        "a target of the restarted server was run again:\n{}",
        run.stdout
    );
    for (i, db) in dbs.iter().enumerate() {
        let m = migration(db).await;
        if i == 4 {
            assert_eq!(m, None);
        } else {
            assert!(
                matches!(&m, Some((s, p, _)) if s == "active" && p == "moved"),
                "{}: {m:?}",
                names[i]
            );
        }
    }

    // The swap across the fleet, three at a time, status as JSON after it.
    let run = dbs[0]
        .migrate(&[
            "fleet",
            "swap",
            plan,
            "--targets",
            &targets,
            "--parallel",
            "3",
            "--keep-going",
        ])
        .await;
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    let status = dbs[0]
        .migrate(&["fleet", "status", plan, "--targets", &targets, "--output", "json"])
        .await;
    status.ok();
    let doc = json(&status);
    assert_json_documented(&doc);
    assert_eq!(doc["summary"]["done"], 11, "{doc}");
    assert_eq!(doc["summary"]["not_started"], 1, "{doc}");

    let mut reports = Vec::new();
    for load in loads {
        reports.push(load.stop().await);
    }
    let mut compared = Vec::new();
    for (i, db) in dbs.iter().enumerate() {
        if i == 4 {
            assert_eq!(db.relkind("public.workflow_events").await.as_deref(), Some("r"));
            continue;
        }
        assert_eq!(
            db.relkind("public.workflow_events").await.as_deref(),
            Some("p"),
            "{}",
            names[i]
        );
        match traffic.iter().position(|&t| t == i) {
            Some(k) => {
                let r = &reports[k];
                assert!(r.errors.is_empty(), "{}: {:?}", names[i], r.errors);
                assert!(r.total_ops() > 20, "{}: {:?}", names[i], r.ops);
                compared.push(compare(db, &r.oracle).await);
            }
            None => {
                let rows = db.scalar_i64("SELECT count(*) FROM workflow_events").await;
                let distinct = db.scalar_i64("SELECT count(DISTINCT id) FROM workflow_events").await;
                assert_eq!(
                    (rows, distinct),
                    (if i < 9 { 1500 } else { 4000 }, rows),
                    "{}",
                    names[i]
                );
                compared.push(rows as usize);
            }
        }
    }
    println!("rows compared per target: {compared:?}");

    // Run again, nothing is left to do.
    let run = dbs[0]
        .migrate(&["fleet", "apply", plan, "--targets", &targets, "--keep-going"])
        .await;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert_eq!(run.stdout.matches("already done").count(), 11, "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_first_failure_keep_going_and_sigint() {
    let cluster = Cluster::start();
    let mut dbs = Vec::new();
    for _ in 0..6 {
        let db = cluster.database().await;
        seed(&db, 10, 1200).await;
        dbs.push(db);
    }
    dbs[1]
        .exec("ALTER TABLE workflow_events DROP CONSTRAINT workflow_events_pkey")
        .await;
    let dir = scratch();
    let plan = dbs[0].plan_file(dir.path(), "p.yaml", &event_plan(500, ""));
    let plan = plan.to_str().unwrap();

    // A canary of two that holds the refused target: nothing else starts,
    // even with --keep-going.
    let targets = targets_file(
        dir.path(),
        "t1",
        &[("ok0", &dbs[0]), ("bad", &dbs[1]), ("ok2", &dbs[2]), ("ok3", &dbs[3])],
    );
    let run = dbs[0]
        .migrate(&[
            "fleet",
            "apply",
            plan,
            "--targets",
            &targets,
            "--canary",
            "2",
            "--parallel",
            "2",
            "--keep-going",
        ])
        .await;
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("not started: the canary bad ended refused"),
        "{}",
        run.stdout
    );
    assert_eq!(migration(&dbs[0]).await.map(|m| m.1).as_deref(), Some("finished"));
    assert_eq!(migration(&dbs[2]).await, None);
    assert_eq!(migration(&dbs[3]).await, None);

    // What the canary measured estimates the others: `fleet plan` borrows
    // its rate for the targets that have none of their own.
    let run = dbs[0]
        .migrate(&["fleet", "plan", plan, "--targets", &targets, "--output", "json"])
        .await;
    let doc = json(&run);
    assert_json_documented(&doc);
    let t = &doc["targets"];
    assert_eq!(t[0]["rate_measured_here"], true, "{doc}");
    assert_eq!(t[0]["migration"]["state"], "done", "{doc}");
    for i in [2, 3] {
        assert_eq!(t[i]["rate_measured_here"], false, "{doc}");
        assert!(t[i]["estimated_seconds"].as_i64().is_some(), "{doc}");
    }
    let text = dbs[0].migrate(&["fleet", "plan", plan, "--targets", &targets]).await;
    assert!(
        text.stdout
            .contains("estimated at the median rate measured on the other targets"),
        "{}",
        text.stdout
    );

    // Without a canary, one at a time: the failure stops the rollout.
    let targets = targets_file(
        dir.path(),
        "t2",
        &[("bad", &dbs[1]), ("ok2", &dbs[2]), ("ok3", &dbs[3])],
    );
    let run = dbs[0].migrate(&["fleet", "apply", plan, "--targets", &targets]).await;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stdout.contains("not started: bad ended refused first"),
        "{}",
        run.stdout
    );
    assert_eq!(migration(&dbs[2]).await, None);

    // --keep-going, with the targets on standard input and a variable.
    let listing = format!("bad {}\nok2 {}\nok3 ${{OK3_URL}}\n", dbs[1].url, dbs[2].url);
    let mut child = dbs[0]
        .command(
            &[
                "fleet",
                "apply",
                plan,
                "--targets",
                "-",
                "--keep-going",
                "--output",
                "json",
            ],
            &[("OK3_URL", &dbs[3].url)],
        )
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(listing.as_bytes()).await.unwrap();
    }
    let run = finish(child).await;
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    let doc = json(&run);
    assert_json_documented(&doc);
    assert_eq!(doc["summary"]["done"], 2, "{doc}");
    assert_eq!(doc["summary"]["refused"], 1, "{doc}");
    assert_eq!(doc["exit_code"], 2);
    for db in &dbs[2..4] {
        assert_eq!(migration(db).await.map(|m| m.1).as_deref(), Some("finished"));
    }

    // maintain on the partitioned ones, in parallel.
    let done = targets_file(
        dir.path(),
        "done",
        &[("ok0", &dbs[0]), ("ok2", &dbs[2]), ("ok3", &dbs[3])],
    );
    let run = dbs[0]
        .migrate(&[
            "fleet",
            "maintain",
            plan,
            "--targets",
            &done,
            "--parallel",
            "3",
            "--output",
            "json",
        ])
        .await;
    let doc = json(&run);
    assert_json_documented(&doc);
    for t in doc["targets"].as_array().unwrap() {
        assert!(t["result"] == "done" || t["result"] == "attention", "{doc}");
    }
    assert_eq!(run.code, doc["exit_code"].as_i64().unwrap() as i32);
    assert!(run.code == 0 || run.code == 5, "{doc}");

    // SIGINT: every running target stops at its next batch boundary, and a
    // run again finishes them.
    for db in [&dbs[4], &dbs[5]] {
        db.exec("INSERT INTO workflow_events (run_id, type) SELECT 1 + g % 10, 'more' FROM generate_series(1, 1800) g")
            .await;
    }
    let slow = dbs[0].plan_file(dir.path(), "slow.yaml", &event_plan(50, "  pause: 50ms\n"));
    let slow = slow.to_str().unwrap();
    let targets = targets_file(dir.path(), "t3", &[("x", &dbs[4]), ("y", &dbs[5])]);
    let child = spawn(
        &dbs[0],
        &["fleet", "apply", slow, "--targets", &targets, "--parallel", "2"],
    )
    .await;
    wait_for("both moving", &[&dbs[4], &dbs[5]], |s| s.iter().all(moving)).await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let run = finish(child).await;
    assert_eq!(run.code, 130, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("2 targets: 2 interrupted"), "{}", run.stdout);
    for db in [&dbs[4], &dbs[5]] {
        let m = migration(db).await.unwrap();
        assert_eq!((m.0.as_str(), m.1.as_str()), ("active", "routed"), "{m:?}");
        assert!(m.2 > 0 && m.2 < 3000, "{m:?}");
    }
    // One is aborted by a fleet of one; resumed, the other finishes and
    // the aborted one is refused.
    let only_y = targets_file(dir.path(), "y", &[("y", &dbs[5])]);
    let run = dbs[0].migrate(&["fleet", "abort", slow, "--targets", &only_y]).await;
    run.ok();
    assert!(run.stdout.contains("migration aborted"), "{}", run.stdout);
    let run = dbs[0].migrate(&["fleet", "abort", slow, "--targets", &only_y]).await;
    run.ok();
    assert!(run.stdout.contains("nothing to abort"), "{}", run.stdout);
    let run = dbs[0]
        .migrate(&[
            "fleet",
            "resume",
            slow,
            "--targets",
            &targets,
            "--parallel",
            "2",
            "--keep-going",
        ])
        .await;
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("its last migration was aborted"), "{}", run.stdout);
    assert!(
        run.stderr.contains("fleet{target=x}"),
        "log lines name their target:\n{}",
        run.stderr
    );
    for (db, kind) in [(&dbs[4], "p"), (&dbs[5], "r")] {
        assert_eq!(db.relkind("public.workflow_events").await.as_deref(), Some(kind));
        assert_eq!(
            db.scalar_i64("SELECT count(DISTINCT id) FROM workflow_events").await,
            3000
        );
        assert_eq!(db.scalar_i64("SELECT count(*) FROM workflow_events").await, 3000);
    }
}

/// No Citus package can be installed here, so Citus's metadata table is
/// stood in for by a table of the same name and columns in pg_catalog, as
/// the extension creates it: each kind of Citus table is refused with its
/// sentence by `plan` and `apply`, for every method, and a table Citus does
/// not manage beside them is planned as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citus_tables_are_refused_with_a_sentence() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 5, 200).await;
    db.exec(
        "CREATE TABLE public.dist (id bigint PRIMARY KEY, ts timestamptz NOT NULL);
         CREATE TABLE public.refs (id bigint PRIMARY KEY, ts timestamptz NOT NULL);
         CREATE TABLE public.locals (id bigint PRIMARY KEY, ts timestamptz NOT NULL);
         SET allow_system_table_mods = on;
         CREATE TABLE pg_catalog.pg_dist_partition (logicalrelid regclass NOT NULL, partmethod \"char\" NOT NULL,
             partkey text, colocationid integer NOT NULL DEFAULT 0, repmodel \"char\" NOT NULL DEFAULT 's');
         INSERT INTO pg_catalog.pg_dist_partition (logicalrelid, partmethod, repmodel)
         VALUES ('public.dist', 'h', 's'), ('public.refs', 'n', 't'), ('public.locals', 'n', 's');",
    )
    .await;
    let dir = scratch();
    let before = db.objects().await;
    for (table, kind) in [
        ("dist", "a Citus distributed table"),
        ("refs", "a Citus reference table"),
        ("locals", "a Citus local table"),
    ] {
        for method in ["move", "sync", "attach"] {
            let plan = db.plan_file(
                dir.path(),
                &format!("{table}-{method}.yaml"),
                &format!(
                    "table: public.{table}\npartition:\n  by: range\n  column: ts\n  interval: month\nmethod: {method}\n"
                ),
            );
            for command in ["plan", "apply"] {
                let run = db.migrate(&[command, plan.to_str().unwrap()]).await;
                assert_eq!(run.code, 2, "{command} {table} {method}: {}{}", run.stdout, run.stderr);
                assert!(
                    run.stderr.contains(&format!("\"public\".\"{table}\" is {kind}"))
                        && run.stderr.contains("does not support Citus tables"),
                    "{command} {table} {method}: {}",
                    run.stderr
                );
            }
        }
    }
    assert_eq!(db.objects().await, before, "a refusal changed the database");
    let plan = db.plan_file(dir.path(), "events.yaml", &event_plan(100, ""));
    db.migrate(&["plan", plan.to_str().unwrap()]).await.ok();
}
