//! A logical subscriber of the table, on a second throwaway server, across
//! the whole migration: under live traffic, with the tool killed and
//! resumed, it receives every change the application made exactly once
//! (an ALWAYS trigger on the subscriber counts what it applies) and none of
//! the tool's work, keeps the table's name after the swap with nothing done
//! on its side, and ends with the rows of the application's oracle. The
//! move method, whose moves are DELETEs and INSERTs, and publications of
//! all tables, which would publish the tool's own, are refused.

mod common;
use common::workload::{compare, Features, Workload};
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// What the subscriber applies, by operation, counted by a trigger that
/// fires for the apply worker.
const SUBSCRIBER_AUDIT: &str = "
CREATE TABLE applied (op text NOT NULL);
CREATE FUNCTION count_applied() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.applied VALUES (TG_OP);
  RETURN NULL;
END $$;
CREATE TRIGGER count_applied AFTER INSERT OR UPDATE OR DELETE ON workflow_events
    FOR EACH ROW EXECUTE FUNCTION count_applied();
ALTER TABLE workflow_events ENABLE ALWAYS TRIGGER count_applied;
";

/// Waits until the subscriber has applied everything the publisher has
/// committed so far. The target is the insert position: the test servers
/// commit asynchronously, so the write position can still lag the last
/// commits. A logical subscriber reports as `replay_lsn` what it has
/// received; `flush_lsn` passes a transaction only once it has been
/// applied and its local commit flushed.
async fn caught_up(publisher: &Db) {
    let target = publisher
        .scalar_str("SELECT pg_current_wal_insert_lsn()::text")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done = publisher
            .scalar_str(&format!(
                "SELECT (coalesce(bool_and(flush_lsn >= '{target}'::pg_lsn), false))::text FROM pg_stat_replication"
            ))
            .await;
        if done.as_deref() == Some("true") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscriber did not catch up with {target}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A publisher with the events table published, and a subscriber whose
/// initial copy is done.
async fn publish_and_subscribe(publisher: &Db, subscriber: &Db) {
    seed(publisher, 40, 12_000).await;
    publisher
        .exec("CREATE PUBLICATION app FOR TABLE workflow_runs, workflow_events")
        .await;
    subscriber.exec(EVENT_SCHEMA).await;
    subscriber
        .exec(&format!(
            "CREATE SUBSCRIPTION app_sub CONNECTION '{}' PUBLICATION app",
            publisher.url
        ))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while subscriber
        .scalar_i64("SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'")
        .await
        > 0
        || subscriber.scalar_i64("SELECT count(*) FROM pg_subscription_rel").await < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the initial copy did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    caught_up(publisher).await;
    subscriber.exec(SUBSCRIBER_AUDIT).await;
}

async fn subscribed(method: &str, point: &str, unswap: bool) {
    let publisher_server = Cluster::start_with_settings("-c wal_level=logical");
    let subscriber_server = Cluster::start();
    let publisher = publisher_server.database().await;
    let subscriber = subscriber_server.database().await;
    publish_and_subscribe(&publisher, &subscriber).await;
    let dir = scratch();
    let yaml = event_plan(400, "").replace("method: move", &format!("method: {method}"));
    let plan = publisher.plan_file(dir.path(), "p.yaml", &yaml);
    let plan = plan.to_str().unwrap();
    let shown = publisher.migrate(&["plan", plan]).await;
    shown.ok();
    assert!(
        shown
            .stdout
            .contains("published by \"app\": the swap hands the publication"),
        "{}",
        shown.stdout
    );
    let features = Features {
        key_updates: false,
        ..Features::for_method(method)
    };
    let workload = Workload::start_with(&publisher, 3, 41, features).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = publisher
        .migrate_env(&["apply", plan], &[("MIGRATE_FAILPOINT", point)])
        .await;
    assert_eq!(run.code, 86, "{method}: {}", run.stderr);
    tokio::time::sleep(Duration::from_millis(300)).await;
    publisher.migrate(&["resume", plan]).await.ok();
    assert_eq!(publisher.relkind("public.workflow_events").await.as_deref(), Some("p"));
    // The application goes on after the swap, through the partitioned
    // table, which the subscriber knows by the table's name.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // And back: unswap hands the publication to the original again.
    if unswap {
        publisher.migrate(&["unswap", plan]).await.ok();
        assert_eq!(publisher.relkind("public.workflow_events").await.as_deref(), Some("r"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let report = workload.stop().await;
    assert!(
        report.errors.is_empty(),
        "{method}: {:#?}",
        &report.errors[..report.errors.len().min(8)]
    );
    compare(&publisher, &report.oracle).await;
    caught_up(&publisher).await;
    let rows = compare(&subscriber, &report.oracle).await;
    let applied: BTreeMap<String, i64> = subscriber
        .client()
        .await
        .query("SELECT op, count(*) FROM applied GROUP BY op", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let sent: BTreeMap<String, i64> = report.changes.iter().map(|(k, v)| (k.to_string(), *v as i64)).collect();
    println!("{method} (unswap: {unswap}): the application changed {sent:?}, the subscriber applied {applied:?}, {rows} rows compared");
    assert_eq!(
        applied, sent,
        "{method}: the subscriber applied other changes than the application made"
    );
    // Nothing to do on the subscriber's side: no error in its log.
    assert!(
        !subscriber_server.server_log().contains("ERROR"),
        "{method}: the subscriber logged errors:\n{}",
        subscriber_server.server_log()
    );
    let published = publisher
        .scalar_str(
            "SELECT string_agg(tablename::text, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'app'",
        )
        .await
        .unwrap_or_default();
    assert_eq!(published, "workflow_events,workflow_runs", "{method}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_through_sync() {
    subscribed("sync", "batch-forward:after-commit@3", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_through_sync_swap_and_unswap() {
    subscribed("sync", "batch-forward:after-commit@3", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_through_attach() {
    subscribed("attach", "constrain:after-check", false).await;
}

/// The move method and publications of all tables are refused, naming the
/// publication and what would work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_would_break_a_subscriber_is_refused() {
    let server = Cluster::start_with_settings("-c wal_level=logical");
    let db = server.database().await;
    seed(&db, 5, 500).await;
    db.exec("CREATE PUBLICATION app FOR TABLE workflow_events").await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(100, ""));
    let run = db.migrate(&["plan", plan.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("published by \"app\": the move method moves every row with a DELETE and an INSERT")
            && run.stderr.contains("use method sync"),
        "{}",
        run.stderr
    );
    db.exec("DROP PUBLICATION app; CREATE PUBLICATION everything FOR ALL TABLES")
        .await;
    for method in ["sync", "attach"] {
        let plan = db.plan_file(
            dir.path(),
            &format!("{method}.yaml"),
            &event_plan(100, "").replace("method: move", &format!("method: {method}")),
        );
        let run = db.migrate(&["plan", plan.to_str().unwrap()]).await;
        assert_eq!(run.code, 2, "{method}: {}", run.stdout);
        assert!(
            run.stderr
                .contains("published by \"everything\", which publishes all tables"),
            "{method}: {}",
            run.stderr
        );
    }
}
