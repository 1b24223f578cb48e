//! Runtime control from another shell: pause, continue, a new batch size,
//! and `status --watch`, all through the control table.

mod common;
use common::*;
use std::time::{Duration, Instant};

async fn moved(db: &Db) -> i64 {
    match db
        .client()
        .await
        .query_one("SELECT rows_moved FROM repartition.migrations", &[])
        .await
    {
        Ok(r) => r.get(0),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_continue_and_a_new_batch_size() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 20, 20_000).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(400, "  pause: 20ms\n"));
    let plan = plan.to_str().unwrap().to_string();
    let mut runner = db.command(&["apply", &plan], &[]).spawn().unwrap();
    let mut watch = db.command(&["status", &plan, "--watch"], &[]).spawn().unwrap();
    let start = Instant::now();
    while moved(&db).await < 2000 {
        assert!(start.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    db.migrate(&["pause", &plan]).await.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_pause = moved(&db).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(moved(&db).await, at_pause, "rows moved while paused");
    let status = db.migrate(&["status", &plan]).await;
    assert!(
        status
            .stdout
            .contains("Paused by the operator (postgres from local) since"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("Last strong lock: route held it"),
        "{}",
        status.stdout
    );
    // What a runbook or a dashboard reads, as docs/json.md lists it.
    let json = db.migrate(&["status", &plan, "--output", "json"]).await;
    json.ok();
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_json_documented(&doc);
    let m = &doc["migration"];
    assert_eq!(m["paused"], true, "{doc}");
    assert_eq!(m["paused_by"], "operator (postgres from local)", "{doc}");
    assert!(m["paused_at"].is_string() && m["paused_reason"].is_null(), "{doc}");
    assert!(m["runner"]["pid"].as_i64().unwrap() > 0, "{doc}");
    assert_eq!(m["runner"]["client"], "local", "{doc}");
    assert_eq!(m["phase"], "routed", "{doc}");
    assert_eq!(
        m["rows_remaining"].as_i64().unwrap(),
        m["rows_total"].as_i64().unwrap() - m["rows_moved"].as_i64().unwrap(),
        "{doc}"
    );
    assert!(m["pages_remaining"].as_i64().unwrap() > 0, "{doc}");
    assert!(m["rate_rows_per_second"].as_f64().unwrap() > 0.0, "{doc}");
    assert!(m["eta_seconds"].as_i64().is_some(), "{doc}");
    assert_eq!(m["last_lock"]["step"], "route", "{doc}");
    assert!(m["last_lock"]["held_ms"].as_f64().unwrap() >= 0.0, "{doc}");
    assert!(m["last_lock"]["wait_ms"].as_f64().is_some(), "{doc}");
    assert_eq!(m["waiting_for_swap"], false, "{doc}");
    assert!(m["throttled"].is_null() && m["last_error"].is_null(), "{doc}");
    assert!(
        status.stdout.contains("Batch size: 400 rows, as the plan fixes it"),
        "{}",
        status.stdout
    );
    let set = db.migrate(&["set", &plan, "batch-size", "60"]).await;
    set.ok();
    assert!(set.stdout.contains("about 60 rows per batch"), "{}", set.stdout);
    let bad = db.migrate(&["set", &plan, "batch-size", "lots"]).await;
    assert_eq!(bad.code, 2);
    let last_before: i64 = db.scalar_i64("SELECT max(batch_no) FROM repartition.batches").await;
    db.migrate(&["continue", &plan]).await.ok();
    let out = runner.wait().await.unwrap();
    assert!(out.success());
    // Batches after the change are about 60 rows (a batch covers whole pages).
    let big: i64 = db
        .scalar_i64(&format!(
            "SELECT count(*) FROM repartition.batches WHERE batch_no > {} + 2 AND rows > 150",
            last_before
        ))
        .await;
    assert_eq!(big, 0, "batches kept the old size after `set batch-size`");
    assert!(
        db.scalar_i64(&format!(
            "SELECT count(*) FROM repartition.batches WHERE batch_no > {last_before}"
        ))
        .await
            > 10
    );
    // `status --watch` ends by itself once the migration is done.
    let watched = tokio::time::timeout(Duration::from_secs(30), watch.wait()).await;
    assert!(watched.is_ok(), "status --watch did not end after the migration");
    let events = db
        .scalar_str("SELECT string_agg(kind, ',' ORDER BY id) FROM repartition.events WHERE kind = 'control'")
        .await
        .unwrap();
    assert_eq!(events, "control,control,control");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_check_pauses_the_run_and_status_says_why() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 20, 15_000).await;
    db.exec("CREATE TABLE public.lag_signal (lagging boolean NOT NULL); INSERT INTO lag_signal VALUES (false);")
        .await;
    let dir = scratch();
    let plan = db.plan_file(
        dir.path(),
        "p.yaml",
        &event_plan(
            300,
            // Batches of 300 rows 50ms apart: the run lasts seconds, and the
            // throttle is read twice a second.
            "  pause: 50ms\nthrottle:\n  check: \"SELECT lagging FROM public.lag_signal\"\n",
        ),
    );
    let plan = plan.to_str().unwrap().to_string();
    let mut runner = db.command(&["apply", &plan], &[]).spawn().unwrap();
    let start = Instant::now();
    while moved(&db).await < 1500 {
        assert!(start.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A replica "lags": the run waits by itself and says why.
    db.exec("UPDATE lag_signal SET lagging = true").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = moved(&db).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(moved(&db).await, held, "rows moved while the throttle condition held");
    let status = db.migrate(&["status", &plan]).await;
    assert!(
        status
            .stdout
            .contains("Waiting by itself: throttle.check returned true"),
        "{}",
        status.stdout
    );
    let json = db.migrate(&["status", &plan, "--output", "json"]).await;
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(
        doc["migration"]["throttled"]
            .as_str()
            .is_some_and(|t| t.starts_with("throttle.check returned true")),
        "{doc}"
    );
    assert_eq!(doc["migration"]["paused"], false, "{doc}");
    db.exec("UPDATE lag_signal SET lagging = false").await;
    assert!(runner.wait().await.unwrap().success());
    let status = db.migrate(&["status", &plan]).await;
    assert!(!status.stdout.contains("Waiting by itself"), "{}", status.stdout);
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM repartition.events WHERE kind = 'throttled'")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_at_phase_boundaries_on_failure_and_on_completion() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 5, 500).await;
    let dir = scratch();
    let log = dir.path().join("hooks.log");
    let extra = format!(
        "locks:\n  lock_timeout: 100ms\n  retries: 1\nhooks:\n  after_phase: 'echo \"$MIGRATE_EVENT $MIGRATE_PHASE $MIGRATE_TABLE\" >> {log}'\n  on_failure: 'echo \"failure $MIGRATE_PHASE\" >> {log}; exit 3'\n  on_complete: 'echo \"complete $MIGRATE_STATE $MIGRATE_ROWS_MOVED\" >> {log}'\n",
        log = log.display()
    );
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(200, &extra));
    let plan = plan.to_str().unwrap();
    db.migrate(&["apply", plan, "--until", "move"]).await.ok();
    // A session holds the table: the swap gives up, the failure hook runs.
    let holder = db.client().await;
    holder
        .batch_execute("BEGIN; SELECT count(*) FROM workflow_events;")
        .await
        .unwrap();
    let run = db.migrate(&["swap", plan]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("a hook failed; the migration goes on"),
        "{}",
        run.stderr
    );
    holder.batch_execute("COMMIT").await.unwrap();
    db.migrate(&["swap", plan]).await.ok();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("after_phase prepared \"public\".\"workflow_events\""),
        "{text}"
    );
    assert!(text.contains("after_phase moved"), "{text}");
    assert!(text.contains("failure moved"), "{text}");
    assert!(text.contains("after_phase finished"), "{text}");
    assert!(text.contains("complete done 500"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postponed_swap_waits_for_the_operator() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 10, 3000).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(500, "swap:\n  postpone: true\n"));
    let plan = plan.to_str().unwrap().to_string();
    let mut runner = db.command(&["apply", &plan], &[]).spawn().unwrap();
    let start = Instant::now();
    loop {
        let s = db.migrate(&["status", &plan]).await;
        if s.stdout.contains("Ready: waiting for `migrate swap`") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never got ready: {}",
            s.stdout
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still waiting a while later: nothing swaps by itself.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        db.scalar_str("SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('public.workflow_events'))")
            .await
            .as_deref(),
        Some("v")
    );
    let order = db.migrate(&["swap", &plan]).await;
    order.ok();
    assert!(
        order.stderr.contains("the waiting runner was asked to swap"),
        "{}",
        order.stderr
    );
    let out = tokio::time::timeout(Duration::from_secs(60), runner.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(out.success());
    assert_eq!(
        db.scalar_str("SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('public.workflow_events'))")
            .await
            .as_deref(),
        Some("p")
    );
}

/// Without a batch size in the plan, batches start at 5000 rows and tune
/// themselves toward 100ms each; status says what was chosen and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_size_tunes_itself_by_default_and_status_reports_it() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 20, 60_000).await;
    let dir = scratch();
    let text = event_plan(1, "").replace("  size: 1\n", "");
    assert!(!text.contains("size"), "{text}");
    let plan = db.plan_file(dir.path(), "p.yaml", &text);
    let plan = plan.to_str().unwrap();
    let p = db.migrate(&["plan", plan]).await;
    p.ok();
    assert!(
        p.stdout.contains("from about 5000 rows, tuned toward 100ms each"),
        "{}",
        p.stdout
    );
    db.migrate(&["apply", plan]).await.ok();
    // The second batch follows what the first took: larger after a batch
    // well under 100ms, smaller after one well over it (how fast 5,000 rows
    // move depends on the machine and its load; the tuner's law itself is a
    // unit test of the batch loop). Always within ten times the start.
    let c = db.client().await;
    // Each worker's batches follow one another over its own pages: the
    // second batch is the one that starts where the first ended.
    let batches: Vec<(i64, f64, i64, i64)> = c
        .query(
            "SELECT rows::int8, (extract(epoch FROM finished_at - started_at) * 1000)::float8, from_block, to_block \
             FROM repartition.batches WHERE direction = 'forward' ORDER BY batch_no",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert!(batches.len() >= 3, "{batches:?}");
    let (r1, ms1, _, end1) = batches[0];
    let (r2, ..) = *batches
        .iter()
        .find(|b| b.2 == end1)
        .unwrap_or_else(|| panic!("no batch follows the first: {batches:?}"));
    if ms1 < 60.0 {
        assert!(
            r2 as f64 > r1 as f64 * 1.1,
            "a batch of {r1} rows took {ms1}ms, the next moved {r2}"
        );
    } else if ms1 > 160.0 {
        assert!(
            (r2 as f64) < r1 as f64 * 0.9,
            "a batch of {r1} rows took {ms1}ms, the next moved {r2}"
        );
    }
    let biggest = batches.iter().map(|b| b.0).max().unwrap();
    assert!(biggest <= 50_000 + 500, "batches grew to {biggest} rows");
    let status = db.migrate(&["status", plan, "--output", "json"]).await;
    status.ok();
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(
        doc["migration"]["batch_size_source"], "tuned toward batches of 100ms",
        "{doc}"
    );
    let chosen = doc["migration"]["batch_rows"].as_i64().unwrap();
    assert!((500..=50_000).contains(&chosen), "{doc}");
}

/// `batch.mode: gentle`: short batches (tuned toward 20ms), each committed
/// synchronously and followed by a rest of 30% of its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gentle_mode_commits_each_batch_synchronously_and_rests_after_it() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 20, 40_000).await;
    let dir = scratch();
    let text = event_plan(1, "  mode: gentle\n").replace("  size: 1\n", "");
    let plan = db.plan_file(dir.path(), "p.yaml", &text);
    let plan = plan.to_str().unwrap();
    let p = db.migrate(&["plan", plan]).await;
    p.ok();
    assert!(p.stdout.contains("tuned toward 20ms each"), "{}", p.stdout);
    assert!(
        p.stdout.contains("followed by a rest of 30% of its time"),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout.contains("SET LOCAL synchronous_commit = local"),
        "{}",
        p.stdout
    );
    assert!(!p.stdout.contains("synchronous_commit = off"), "{}", p.stdout);
    db.migrate(&["apply", plan]).await.ok();
    // Between the end of one batch and the start of the next lies at least
    // a quarter of the first one's duration.
    let c = db.client().await;
    let rows = c
        .query(
            "SELECT extract(epoch FROM finished_at - started_at)::float8, \
                    extract(epoch FROM lead(started_at) OVER (ORDER BY batch_no) - finished_at)::float8 \
             FROM repartition.batches ORDER BY batch_no",
            &[],
        )
        .await
        .unwrap();
    let pairs: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r.get::<_, f64>(0), r.get::<_, Option<f64>>(1)?)))
        .collect();
    assert!(pairs.len() >= 5, "only {} batches", pairs.len());
    let rested = pairs.iter().filter(|(took, gap)| *gap >= took * 0.25).count();
    assert!(
        rested * 10 >= pairs.len() * 9,
        "only {rested} of {} gaps were a quarter of their batch: {pairs:?}",
        pairs.len()
    );
}

/// `migrate plan | head`, `migrate status | head`: a reader that closes
/// its end ends the command quietly with the status of a process SIGPIPE
/// stopped, not with a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_a_command_quietly() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 5, 300).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(100, ""));
    let plan = plan.to_str().unwrap();
    for command in ["plan", "status"] {
        // `true` reads nothing and is gone before the tool has asked the
        // database anything.
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -o pipefail; '{}' {command} '{plan}' | true",
                env!("CARGO_BIN_EXE_migrate")
            ))
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{command}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{command}: {stderr}"
        );
    }
}

/// One scrape of the metrics endpoint: the status line and the body.
async fn scrape(addr: &str, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The value of the series whose line starts with `name{` and holds `with`.
fn sample(text: &str, name: &str, with: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(with))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} with {with} in\n{text}"))
}

/// `--metrics-listen` serves the run's figures to a scraper while rows
/// move, and `--metrics-textfile` leaves the last of them in a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_while_a_migration_runs() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 20, 20_000).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(300, "  pause: 20ms\n"));
    let plan = plan.to_str().unwrap().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let textfile = dir.path().join("migrate.prom");
    let mut runner = db
        .command(
            &[
                "--metrics-listen",
                &addr,
                "--metrics-textfile",
                textfile.to_str().unwrap(),
                "apply",
                &plan,
            ],
            &[],
        )
        .spawn()
        .unwrap();
    let start = Instant::now();
    while moved(&db).await < 2000 {
        assert!(start.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, first) = scrape(&addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{first}");
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json.md")).unwrap();
    for name in first.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = name.split(' ').next().unwrap();
        assert!(
            page.contains(&format!("| `{name}` |")),
            "docs/json.md does not list {name}"
        );
    }
    let table = "table=\"\\\"public\\\".\\\"workflow_events\\\"\"";
    assert_eq!(sample(&first, "repartition_phase", "phase=\"routed\""), 1.0, "{first}");
    assert_eq!(
        sample(&first, "repartition_phase", "phase=\"prepared\""),
        0.0,
        "{first}"
    );
    assert_eq!(sample(&first, "repartition_state", "state=\"active\""), 1.0);
    assert_eq!(sample(&first, "repartition_runner_up", table), 1.0, "{first}");
    let moved_first = sample(&first, "repartition_rows_moved_total", "method=\"move\"");
    let total = sample(&first, "repartition_rows_total", "");
    let remaining = sample(&first, "repartition_rows_remaining", "");
    assert!(moved_first >= 2000.0, "{first}");
    assert_eq!(remaining, (total - moved_first).max(0.0), "{first}");
    assert!(sample(&first, "repartition_rate_rows_per_second", "") > 0.0);
    assert!(sample(&first, "repartition_eta_seconds", "") >= 0.0);
    assert!(sample(&first, "repartition_batch_rows", "") > 0.0);
    assert!(sample(&first, "repartition_batch_duration_seconds", "") > 0.0);
    assert_eq!(sample(&first, "repartition_paused", ""), 0.0);
    assert_eq!(sample(&first, "repartition_throttled", "reason=\"\""), 0.0);
    assert!(sample(&first, "repartition_last_lock_hold_seconds", "step=\"route\"") >= 0.0);
    assert!(sample(&first, "repartition_last_lock_wait_seconds", "step=\"route\"") >= 0.0);
    // The route took its lock in this process.
    assert!(sample(&first, "repartition_lock_sections_total", "") >= 1.0, "{first}");
    assert!(
        sample(&first, "repartition_lock_hold_seconds_total", "") > 0.0,
        "{first}"
    );
    sample(&first, "repartition_lock_retries_total", "");

    db.migrate(&["pause", &plan]).await.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, paused) = scrape(&addr, "/metrics").await;
    assert_eq!(sample(&paused, "repartition_paused", ""), 1.0, "{paused}");
    assert!(sample(&paused, "repartition_rows_moved_total", "") > moved_first);
    let (status, _) = scrape(&addr, "/other").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    // The textfile is written meanwhile, every 2 seconds, always whole.
    let start = Instant::now();
    loop {
        let written = std::fs::read_to_string(&textfile).unwrap();
        assert!(written.ends_with('\n'), "{written}");
        if written.contains("repartition_paused{") {
            assert_eq!(sample(&written, "repartition_paused", ""), 1.0, "{written}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{written}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    db.migrate(&["continue", &plan]).await.ok();
    assert!(runner.wait().await.unwrap().success());
    let last = std::fs::read_to_string(&textfile).unwrap();
    assert_eq!(sample(&last, "repartition_phase", "phase=\"finished\""), 1.0, "{last}");
    assert_eq!(sample(&last, "repartition_state", "state=\"done\""), 1.0, "{last}");
    assert_eq!(sample(&last, "repartition_rows_remaining", ""), 0.0, "{last}");
    assert!(sample(&last, "repartition_lock_sections_total", "") >= 2.0, "{last}");
    // Nothing listens once the run is over.
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());

    // A listen address that cannot be had is refused before the run.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let run = db.migrate(&["--metrics-listen", &busy, "resume", &plan]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("cannot listen on {busy} for metrics")),
        "{}",
        run.stderr
    );
}

async fn status_doc(db: &Db, plan: &str) -> serde_json::Value {
    let json = db.migrate(&["status", plan, "--output", "json"]).await;
    json.ok();
    serde_json::from_str(&json.stdout).unwrap()
}

/// Beside the baseline the run measures the application's own
/// transactions: here two sessions whose transactions each take 20 ms, so
/// a 2x budget allows the probe 20 ms over its baseline, not one baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_budget_measures_the_applications_transactions_beside_its_baseline() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 20, 2_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut apps = Vec::new();
    for _ in 0..2 {
        let c = db.client().await;
        let stop = stop.clone();
        apps.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // It reads a table, as applications do: a session's
                // transactions are counted in pg_stat_database once it has
                // touched one.
                c.batch_execute("SELECT pg_sleep(0.02) FROM workflow_runs LIMIT 1")
                    .await
                    .unwrap();
            }
        }));
    }
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(500, "throttle:\n  latency: 2x\n"));
    let plan = plan.to_str().unwrap().to_string();
    let p = db.migrate(&["plan", &plan]).await;
    p.ok();
    assert!(p.stdout.contains(repartition::latency::APPLICATION), "{}", p.stdout);
    db.migrate(&["apply", &plan]).await.ok();
    stop.store(true, Ordering::Relaxed);
    for a in apps {
        a.await.unwrap();
    }
    let doc = status_doc(&db, &plan).await;
    assert_json_documented(&doc);
    let l = &doc["migration"]["latency"];
    let app = l["application_ms"].as_f64().unwrap();
    assert!((15.0..40.0).contains(&app), "{doc}");
    let base = l["baseline_ms"].as_f64().unwrap();
    let ceiling = l["ceiling_ms"].as_f64().unwrap();
    assert!((ceiling - (base + app.max(base))).abs() < 1e-9, "{doc}");
    let baseline_event = db
        .client()
        .await
        .query_one(
            "SELECT detail FROM repartition.events WHERE kind = 'latency' ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert!(
        baseline_event.contains("the application's transactions") && baseline_event.contains("in flight"),
        "{baseline_event}"
    );
    let status = db.migrate(&["status", &plan]).await;
    assert!(
        status.stdout.contains("the application's transactions"),
        "{}",
        status.stdout
    );
}

/// A budget no pace can hold (an absolute 0.001 ms): the run learns the
/// baseline before its first step and, its batches back to back, halves
/// them down to the slowest, then rests after each; once the probes
/// between batches are over the budget too, it holds that pace, and
/// `status` says the excess is not the batches'. Killed and resumed, it
/// keeps the baseline it learned; the operator's batch size wins over the
/// budget, and every row arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_budget_slows_the_batches_and_status_says_what_it_measures() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 20, 600_000).await;
    // The test clusters commit asynchronously; the application of this
    // test, as most, waits for its commits (the probe connects after this).
    db.client()
        .await
        .batch_execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = on', current_database()); END $$",
        )
        .await
        .unwrap();
    let before = all_events(&db).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(50, "throttle:\n  latency: 0.001ms\n"));
    let plan = plan.to_str().unwrap().to_string();
    let p = db.migrate(&["plan", &plan]).await;
    p.ok();
    assert!(
        p.stdout.contains("SET LOCAL synchronous_commit = local"),
        "{}",
        p.stdout
    );
    assert!(p.stdout.contains(repartition::latency::PROBE), "{}", p.stdout);
    assert!(!p.stdout.contains("latency-budget-method-cost"), "{}", p.stdout);
    let mut runner = db.command(&["apply", &plan], &[]).spawn().unwrap();
    // The slowest pace: batches of 5% of the plan's 50 rows (3), a rest
    // after each growing until most probes fall between batches, and then
    // the pace holds.
    let start = Instant::now();
    let mut last = serde_json::Value::Null;
    let doc = loop {
        if start.elapsed() > Duration::from_secs(90) || last["state"] == "done" {
            let course = db
                .client()
                .await
                .query(
                    "SELECT to_char(at, 'HH24:MI:SS.MS') || ' ' || kind || ' ' || detail FROM repartition.events ORDER BY id",
                    &[],
                )
                .await
                .unwrap();
            let course: Vec<String> = course.iter().map(|r| r.get(0)).collect();
            panic!("the run never reached its slowest pace: {last}\n{}", course.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let doc = status_doc(&db, &plan).await;
        last = doc["migration"].clone();
        if doc["migration"]["batch_rows"] == 3
            && doc["migration"]["latency"]["doing"].as_str().is_some_and(|d| {
                d.contains("between batches too")
                    && d.contains("ms of rest after each")
                    && !d.contains(", 0 ms of rest")
            })
        {
            break doc;
        }
    };
    assert_json_documented(&doc);
    let l = &doc["migration"]["latency"];
    assert_eq!(l["budget"], "0.001ms", "{doc}");
    assert_eq!(l["ceiling_ms"], 0.001, "{doc}");
    let baseline = l["baseline_ms"].as_f64().unwrap();
    assert!(baseline > 0.0, "{doc}");
    assert!(l["measured_ms"].as_f64().unwrap() > 0.001, "{doc}");
    assert!(l["doing"].as_str().unwrap().contains("not the batches'"), "{doc}");
    assert_eq!(
        doc["migration"]["batch_size_source"], "set by the latency budget",
        "{doc}"
    );
    let status = db.migrate(&["status", &plan]).await;
    assert!(
        status.stdout.contains("Latency budget: 0.001ms (baseline ") && status.stdout.contains("between batches too"),
        "{}",
        status.stdout
    );
    // Rests after the batches, as the budget asks.
    let start = Instant::now();
    while db
        .scalar_i64(
            "SELECT count(*) FROM (SELECT started_at - lag(finished_at) OVER (ORDER BY batch_no) AS gap \
             FROM repartition.batches) g WHERE gap > interval '15 ms'",
        )
        .await
        == 0
    {
        assert!(start.elapsed() < Duration::from_secs(20), "no batch rested");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The probe's commit waits for what the application's writes wait for:
    // with a synchronous standby named that never answers, it is held in
    // SyncRep (a commit that wrote nothing before its record is not
    // flushed, and would not be held).
    let c = db.client().await;
    for sql in [
        "ALTER SYSTEM SET synchronous_standby_names = 'nobody'",
        "SELECT pg_reload_conf()",
    ] {
        c.batch_execute(sql).await.unwrap();
    }
    let start = Instant::now();
    while db
        .scalar_i64(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name LIKE '%(latency probe)' AND wait_event = 'SyncRep'",
        )
        .await
        == 0
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the probe's commit never waited for the standby"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for sql in [
        "ALTER SYSTEM RESET synchronous_standby_names",
        "SELECT pg_reload_conf()",
    ] {
        c.batch_execute(sql).await.unwrap();
    }
    runner.start_kill().unwrap();
    runner.wait().await.unwrap();

    // The operator's batch size wins; the resumed run keeps its baseline.
    db.migrate(&["set", &plan, "batch-size", "20000"]).await.ok();
    db.migrate(&["resume", &plan]).await.ok();
    let doc = status_doc(&db, &plan).await;
    assert_eq!(doc["migration"]["state"], "done", "{doc}");
    assert_eq!(
        doc["migration"]["latency"]["baseline_ms"].as_f64(),
        Some(baseline),
        "{doc}"
    );
    assert_eq!(all_events(&db).await, before);
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM ONLY public.workflow_events").await,
        0,
        "rows left in the parent"
    );
    // Learned once, before the first step changed anything.
    assert_eq!(
        db.scalar_i64(
            "SELECT count(*) FROM repartition.events WHERE kind = 'latency' AND detail LIKE 'baseline %' \
             AND id < (SELECT min(id) FROM repartition.events WHERE kind NOT IN ('planned', 'latency'))"
        )
        .await,
        1,
        "the baseline was not learned before the first step"
    );
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM repartition.events WHERE kind = 'latency' AND detail LIKE 'baseline %'")
            .await,
        1
    );
}

/// A budget with room to spare (an absolute 10 s) lets the run go as fast
/// as the plan allows; a multiple below what the view costs the
/// application on its own is noted by `plan`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_budget_with_room_runs_at_the_plans_pace_and_plan_notes_a_tight_one() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 20, 40_000).await;
    let dir = scratch();
    let tight = db.plan_file(
        dir.path(),
        "tight.yaml",
        &event_plan(500, "throttle:\n  latency: 1.5x\n"),
    );
    let p = db.migrate(&["plan", tight.to_str().unwrap()]).await;
    p.ok();
    assert!(
        p.stdout.contains("latency-budget-method-cost") && p.stdout.contains("the view in front of the table"),
        "{}",
        p.stdout
    );
    let plan = db.plan_file(
        dir.path(),
        "p.yaml",
        // A measurement every 3 s: the second worker joins after two calm
        // ones, and the third finds the run at the plan's pace; 40,000 rows
        // last about 13 s at this pause.
        &event_plan(500, "  pause: 250ms\nthrottle:\n  latency: 10s\n"),
    );
    let plan = plan.to_str().unwrap();
    db.migrate(&["apply", plan]).await.ok();
    let doc = status_doc(&db, plan).await;
    let l = &doc["migration"]["latency"];
    assert_eq!(l["budget"], "10000ms", "{doc}");
    assert_eq!(l["doing"], "under the budget: as fast as the plan allows", "{doc}");
    assert!(l["measured_ms"].as_f64().unwrap() < 10_000.0, "{doc}");
    assert_eq!(doc["migration"]["batch_rows"], 500, "{doc}");
    // The pass began on one worker; the second joined while it was calm.
    assert_eq!(
        db.scalar_i64(
            "SELECT count(*) FROM repartition.events WHERE kind = 'latency' \
             AND detail LIKE '%under the budget: speeding up (%, 2 of 2 workers,%'"
        )
        .await,
        1,
        "{doc}"
    );
}
