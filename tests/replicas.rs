//! A streaming standby on this machine, its replay paused: the move waits
//! while the WAL it has not replayed exceeds `throttle.max_replica_lag_bytes`
//! (the time lag would read the last value it measured, standing still),
//! `status` says why, and the run goes on once replay resumes; the standby
//! ends with the partitioned table and every row.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_move_waits_for_a_standby_that_falls_behind() {
    let primary = Cluster::start();
    let db = primary.database().await;
    seed(&db, 40, 60_000).await;
    let name = db.scalar_str("SELECT current_database()::text").await.unwrap();
    let standby = primary.standby("standby_a").await;
    let replica = standby.database_named(&name);
    let deadline = Instant::now() + Duration::from_secs(60);
    while db
        .scalar_i64(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'standby_a' AND state = 'streaming'",
        )
        .await
        == 0
    {
        assert!(Instant::now() < deadline, "the standby never streamed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    replica.exec("SELECT pg_wal_replay_pause()").await;
    let dir = scratch();
    let plan = db.plan_file(
        dir.path(),
        "p.yaml",
        &event_plan(300, "  pause: 5ms\nthrottle:\n  max_replica_lag_bytes: 1048576\n"),
    );
    let plan = plan.to_str().unwrap().to_string();
    // plan tells what the standby will replay, and warns of a slot that
    // max_slot_wal_keep_size would invalidate before the end.
    for sql in [
        "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'",
        "SELECT pg_reload_conf()",
        "SELECT pg_create_physical_replication_slot('archiver', true)",
    ] {
        db.exec(sql).await;
    }
    let shown = db.migrate(&["plan", &plan]).await;
    shown.ok();
    assert!(
        shown.stdout.contains("WAL: about") && shown.stdout.contains("the one standby streaming now replays"),
        "{}",
        shown.stdout
    );
    assert!(
        shown
            .stdout
            .contains("the physical replication slot archiver can retain only"),
        "{}",
        shown.stdout
    );
    for sql in [
        "SELECT pg_drop_replication_slot('archiver')",
        "ALTER SYSTEM RESET max_slot_wal_keep_size",
        "SELECT pg_reload_conf()",
    ] {
        db.exec(sql).await;
    }
    let t0 = Instant::now();
    let mut apply = db.command(&["apply", &plan], &[]).spawn().unwrap();
    // The run notices the standby and waits.
    let waiting = loop {
        let ready = db
            .scalar_str("SELECT to_regclass('repartition.migrations')::text")
            .await
            .is_some();
        if ready {
            if let Some(why) = db
                .scalar_str("SELECT throttled FROM repartition.migrations WHERE state = 'active'")
                .await
            {
                break why;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the run never waited for the standby"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let t_waiting = t0.elapsed();
    assert!(
        waiting.contains("standby_a") && waiting.contains("not yet replayed"),
        "{waiting}"
    );
    let moved = db
        .scalar_i64("SELECT rows_moved FROM repartition.migrations WHERE state = 'active'")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        db.scalar_i64("SELECT rows_moved FROM repartition.migrations WHERE state = 'active'")
            .await,
        moved,
        "rows moved while the standby was behind"
    );
    let status = db.migrate(&["status", &plan]).await;
    assert!(
        status.stdout.contains("Waiting by itself: the replica standby_a has"),
        "{}",
        status.stdout
    );
    let behind = db
        .scalar_i64("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint FROM pg_stat_replication")
        .await;
    // Replay resumes: so does the run, to the end.
    replica.exec("SELECT pg_wal_replay_resume()").await;
    let t_resumed = t0.elapsed();
    let done = tokio::time::timeout(Duration::from_secs(300), apply.wait())
        .await
        .expect("the run finishes once the standby catches up")
        .unwrap();
    assert!(done.success());
    let t_done = t0.elapsed();
    assert!(db
        .scalar_str("SELECT throttled FROM repartition.migrations")
        .await
        .is_none());
    let waits = db
        .scalar_i64("SELECT count(*) FROM repartition.events WHERE kind = 'throttled' AND detail LIKE '%standby_a%'")
        .await;
    assert!(waits >= 1);
    println!(
        "timeline: apply at 0 s; waiting for the standby at {:.1} s ({moved} rows moved, {behind} bytes not replayed); replay resumed at {:.1} s; done at {:.1} s; {waits} waits recorded",
        t_waiting.as_secs_f64(),
        t_resumed.as_secs_f64(),
        t_done.as_secs_f64()
    );
    // The standby has it all: the partitioned table and every row.
    let rows = db.scalar_i64("SELECT count(*) FROM public.workflow_events").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let kind = replica.relkind("public.workflow_events").await;
        if kind.as_deref() == Some("p")
            && replica.scalar_i64("SELECT count(*) FROM public.workflow_events").await == rows
        {
            break;
        }
        assert!(Instant::now() < deadline, "the standby did not catch up: {kind:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
