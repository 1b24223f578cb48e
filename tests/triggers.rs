//! The table's own triggers keep firing for the application's writes,
//! once per change, on whichever table holds the row, and never for the
//! tool's work. An audit trigger is the judge: after a migration under the
//! application's traffic, killed and resumed, its table holds exactly one
//! row per change the application committed, by operation, and none from
//! the tool; a BEFORE trigger with a WHEN clause stamps rows as before; a
//! disabled trigger stays disabled; after the swap every trigger is on the
//! partitioned table with its own definition, and on partitions made later.
//! A statement trigger fires once per statement of the application's, and
//! a row trigger on `UPDATE OF` a column only for the statements that name
//! it, also while the move method's or the split's view passes rows on one
//! at a time.

mod common;
use common::workload::{compare, Features, Workload};
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

const TRIGGERS: &str = "
CREATE TABLE audit (op text NOT NULL, id bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.audit (op, id) VALUES (TG_OP, CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END);
  RETURN NULL;
END $$;
CREATE TRIGGER audit_changes AFTER INSERT OR UPDATE OR DELETE ON workflow_events
    FOR EACH ROW EXECUTE FUNCTION audit_row();
ALTER TABLE workflow_events ADD COLUMN touched integer NOT NULL DEFAULT 0;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.touched := OLD.touched + 1;
  RETURN NEW;
END $$;
CREATE TRIGGER touch_on_change BEFORE UPDATE ON workflow_events
    FOR EACH ROW WHEN (OLD.payload IS DISTINCT FROM NEW.payload) EXECUTE FUNCTION touch();
CREATE TABLE statements (op text NOT NULL);
CREATE FUNCTION count_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.statements VALUES (TG_OP);
  RETURN NULL;
END $$;
CREATE TRIGGER resting AFTER INSERT ON workflow_events FOR EACH ROW EXECUTE FUNCTION count_statement();
ALTER TABLE workflow_events DISABLE TRIGGER resting;
CREATE TABLE deferred_audit (id bigint NOT NULL);
CREATE FUNCTION audit_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.deferred_audit VALUES (NEW.id);
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON workflow_events DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION audit_at_commit();
CREATE TRIGGER count_statements AFTER INSERT OR UPDATE OR DELETE ON workflow_events
    FOR EACH STATEMENT EXECUTE FUNCTION count_statement();
CREATE TABLE typed (op text NOT NULL, id bigint NOT NULL);
CREATE FUNCTION typed_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.typed VALUES (TG_OP, NEW.id);
  RETURN NEW;
END $$;
CREATE TRIGGER on_type AFTER INSERT OR UPDATE OF type ON workflow_events
    FOR EACH ROW EXECUTE FUNCTION typed_row();
";

/// An UPDATE of the test's own through the table's name that names `type`,
/// which the workload never does; the rows it updated.
async fn update_type(db: &Db) -> u64 {
    db.client()
        .await
        .execute(
            "UPDATE public.workflow_events SET type = type WHERE id IN (SELECT id FROM public.workflow_events ORDER BY id DESC LIMIT 7)",
            &[],
        )
        .await
        .unwrap()
}

/// Statements by operation, from the statement trigger, against what the
/// application committed and the test's one UPDATE; the `UPDATE OF type`
/// trigger against every insert and the rows of that UPDATE alone.
async fn statements_and_columns(db: &Db, report: &common::workload::Report, typed_rows: u64, what: &str) {
    let grouped = |table: &'static str| async move {
        db.client()
            .await
            .query(&format!("SELECT op, count(*) FROM {table} GROUP BY op"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect::<BTreeMap<String, i64>>()
    };
    let mut want: BTreeMap<String, i64> = report
        .statements
        .iter()
        .map(|(k, v)| (k.to_string(), *v as i64))
        .collect();
    *want.entry("UPDATE".into()).or_default() += 1;
    let got = grouped("statements").await;
    println!("{what}: statements committed {want:?}, statement trigger {got:?}");
    assert_eq!(
        got, want,
        "{what}: the statement trigger fired otherwise than once per statement"
    );
    let mut want = BTreeMap::new();
    want.insert(
        "INSERT".to_string(),
        report.changes.get("INSERT").copied().unwrap_or(0) as i64,
    );
    want.insert("UPDATE".to_string(), typed_rows as i64);
    assert_eq!(
        grouped("typed").await,
        want,
        "{what}: the UPDATE OF trigger fired for statements that do not name its column"
    );
}

/// The audit rows by operation, and the changes the application
/// committed by operation, with the `typed` rows the test updated itself.
async fn audited_against(
    db: &Db,
    report: &common::workload::Report,
    typed: u64,
) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let audit = db
        .client()
        .await
        .query("SELECT op, count(*) FROM audit GROUP BY op", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut want: BTreeMap<String, i64> = report.changes.iter().map(|(k, v)| (k.to_string(), *v as i64)).collect();
    *want.entry("UPDATE".into()).or_default() += typed as i64;
    (audit, want)
}

async fn audited(method: &str, point: &str) {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 120, 12_000).await;
    db.exec(TRIGGERS).await;
    let dir = scratch();
    let yaml = event_plan(400, "").replace("method: move", &format!("method: {method}"));
    let plan = db.plan_file(dir.path(), "p.yaml", &yaml);
    let plan = plan.to_str().unwrap();
    let shown = db.migrate(&["plan", plan]).await;
    shown.ok();
    assert!(
        shown.stdout.contains("the triggers of \"public\".\"workflow_events\""),
        "{}",
        shown.stdout
    );
    let features = Features {
        key_updates: false,
        ..Features::for_method(method)
    };
    let workload = Workload::start_with(&db, 3, 11, features).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = db.migrate_env(&["apply", plan], &[("MIGRATE_FAILPOINT", point)]).await;
    assert_eq!(run.code, 86, "{method}: {}", run.stderr);
    let typed = update_type(&db).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    db.migrate(&["resume", plan]).await.ok();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = workload.stop().await;
    assert!(
        report.errors.is_empty(),
        "{method}: the application saw {} errors, first: {:#?}",
        report.errors.len(),
        &report.errors[..report.errors.len().min(8)]
    );
    compare(&db, &report.oracle).await;
    let (audit, want) = audited_against(&db, &report, typed).await;
    println!("{method}: application changes {want:?}, audit rows {audit:?}");
    assert_eq!(
        audit, want,
        "{method}: the audit trail differs from what the application committed"
    );
    statements_and_columns(&db, &report, typed, method).await;
    // The deferred constraint trigger, at each commit: one row per insert.
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM deferred_audit").await,
        want.get("INSERT").copied().unwrap_or(0),
        "{method}"
    );
    // No row was audited as inserted twice, nor after its deletion.
    assert_eq!(
        db.scalar_i64(
            "SELECT count(*) FROM (SELECT id FROM audit WHERE op = 'INSERT' GROUP BY id HAVING count(*) > 1) d"
        )
        .await,
        0,
        "{method}"
    );
    // The BEFORE trigger stamped every payload change the application made
    // and nothing else.
    let touched = db
        .scalar_i64("SELECT coalesce(sum(touched), 0)::bigint FROM workflow_events")
        .await;
    assert!(touched > 0, "{method}: the BEFORE trigger never fired");
    // On the partitioned table, with their own definitions and states.
    let defs = db
        .scalar_str(
            "SELECT string_agg(tgname::text || ' ' || tgenabled::text || ' ' || pg_get_triggerdef(oid), E'\\n' ORDER BY tgname) \
             FROM pg_trigger WHERE tgrelid = 'public.workflow_events'::regclass AND NOT tgisinternal",
        )
        .await
        .unwrap_or_default();
    assert!(!defs.contains("repartition.tool"), "{method}: a guard is left: {defs}");
    assert!(defs.contains("audit_changes O CREATE TRIGGER audit_changes AFTER INSERT OR DELETE OR UPDATE ON public.workflow_events FOR EACH ROW EXECUTE FUNCTION audit_row()"), "{method}: {defs}");
    assert!(defs.contains("touch_on_change O CREATE TRIGGER touch_on_change BEFORE UPDATE ON public.workflow_events FOR EACH ROW WHEN ((old.payload IS DISTINCT FROM new.payload)) EXECUTE FUNCTION touch()"), "{method}: {defs}");
    assert!(defs.contains("resting D "), "{method}: {defs}");
    assert!(
        defs.contains("CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON public.workflow_events DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_at_commit()"),
        "{method}: {defs}"
    );
    assert_eq!(db.relkind("public.workflow_events").await.as_deref(), Some("p"));
    // After the swap the audit goes on, through the partitioned table and
    // on a partition made later.
    let before = db.scalar_i64("SELECT count(*) FROM audit").await;
    db.exec(
        "CREATE TABLE workflow_events_later PARTITION OF workflow_events FOR VALUES FROM ('2100-01-01') TO ('2100-02-01');
         INSERT INTO workflow_events (run_id, ts, type) SELECT min(id), '2100-01-05', 'later' FROM workflow_runs;
         INSERT INTO workflow_events (run_id, type) SELECT min(id), 'now' FROM workflow_runs;",
    )
    .await;
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM audit").await,
        before + 2,
        "{method}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn triggers_by_move() {
    audited("move", "batch-forward:after-commit@4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn triggers_by_sync() {
    audited("sync", "batch-forward:after-commit@4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn triggers_by_attach() {
    audited("attach", "constrain:after-check").await;
}

/// After the sync method's swap the application writes the partitioned
/// table and the back mirror the retired original, whose triggers rest;
/// unswap gives them back, and the audit still counts each change once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn triggers_through_swap_and_unswap() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 40, 3000).await;
    db.exec(TRIGGERS).await;
    let dir = scratch();
    let yaml = event_plan(400, "").replace("method: move", "method: sync");
    let plan = db.plan_file(dir.path(), "p.yaml", &yaml);
    let plan = plan.to_str().unwrap();
    db.migrate(&["apply", plan, "--until", "swap"]).await.ok();
    db.exec("UPDATE workflow_events SET n = n + 1 WHERE id <= 10").await;
    db.migrate(&["unswap", plan]).await.ok();
    db.exec("UPDATE workflow_events SET n = n + 1 WHERE id <= 10").await;
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM audit WHERE op = 'UPDATE'").await,
        20
    );
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM audit WHERE op <> 'UPDATE'").await,
        0
    );
    assert_eq!(db.relkind("public.workflow_events").await.as_deref(), Some("r"));
    assert_eq!(
        db.scalar_str("SELECT tgenabled::text FROM pg_trigger WHERE tgname = 'audit_changes' AND tgrelid = 'public.workflow_events'::regclass")
            .await
            .as_deref(),
        Some("O")
    );
}

/// The move method aborted half-way: the rows move back (the tool's work,
/// silent), and the original's triggers get their own definitions back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn triggers_through_a_move_aborted_half_way() {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 60, 6000).await;
    db.exec(TRIGGERS).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(300, ""));
    let plan = plan.to_str().unwrap();
    let features = Features {
        key_updates: false,
        ..Default::default()
    };
    let workload = Workload::start_with(&db, 3, 17, features).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = db
        .migrate_env(
            &["apply", plan],
            &[("MIGRATE_FAILPOINT", "batch-forward:after-commit@8")],
        )
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    let typed = update_type(&db).await;
    db.migrate(&["abort", plan]).await.ok();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = workload.stop().await;
    assert!(
        report.errors.is_empty(),
        "{:#?}",
        &report.errors[..report.errors.len().min(8)]
    );
    compare(&db, &report.oracle).await;
    let (audit, want) = audited_against(&db, &report, typed).await;
    println!("move aborted: application changes {want:?}, audit rows {audit:?}");
    assert_eq!(audit, want);
    statements_and_columns(&db, &report, typed, "move aborted").await;
    let defs = db
        .scalar_str(
            "SELECT string_agg(pg_get_triggerdef(oid), E'\\n') FROM pg_trigger \
             WHERE tgrelid = 'public.workflow_events'::regclass AND NOT tgisinternal",
        )
        .await
        .unwrap_or_default();
    assert!(
        !defs.contains("repartition.tool") && defs.contains("audit_changes"),
        "{defs}"
    );
    assert_eq!(db.relkind("public.workflow_events").await.as_deref(), Some("r"));
}

/// After the attach, a split moves the first partition's rows under the
/// application's traffic, killed and resumed (and, in a second run,
/// aborted half-way): the audit counts each committed change once, and the
/// triggers end with their own definitions on the partitioned table.
async fn split_audited(abort: bool) {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    seed(&db, 60, 6000).await;
    db.exec(TRIGGERS).await;
    let dir = scratch();
    let yaml = event_plan(300, "").replace("method: move", "method: attach");
    let plan = db.plan_file(dir.path(), "p.yaml", &yaml);
    let plan = plan.to_str().unwrap();
    db.migrate(&["apply", plan]).await.ok();
    let features = Features {
        upsert_and_lock: false,
        key_updates: false,
        ..Default::default()
    };
    let workload = Workload::start_with(&db, 3, 23, features).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = db
        .migrate_env(
            &["split", plan],
            &[("MIGRATE_FAILPOINT", "batch-forward:after-commit@4")],
        )
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    let typed = update_type(&db).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    db.migrate(&[if abort { "abort" } else { "resume" }, plan]).await.ok();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = workload.stop().await;
    assert!(
        report.errors.is_empty(),
        "{:#?}",
        &report.errors[..report.errors.len().min(8)]
    );
    compare(&db, &report.oracle).await;
    let (audit, want) = audited_against(&db, &report, typed).await;
    println!("split (abort: {abort}): application changes {want:?}, audit rows {audit:?}");
    assert_eq!(audit, want);
    statements_and_columns(&db, &report, typed, if abort { "split aborted" } else { "split" }).await;
    let defs = db
        .scalar_str(
            "SELECT string_agg(c.relname || ': ' || pg_get_triggerdef(t.oid), E'\\n' ORDER BY 1) FROM pg_trigger t \
             JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname = 'audit_changes'",
        )
        .await
        .unwrap_or_default();
    assert!(!defs.contains("repartition.tool"), "a guard is left: {defs}");
    let partitions = db
        .scalar_i64("SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.workflow_events'::regclass")
        .await;
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM pg_trigger WHERE tgname = 'audit_changes'")
            .await,
        partitions + 1,
        "the parent's trigger and one clone on each partition: {defs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn triggers_through_a_split() {
    split_audited(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn triggers_through_a_split_aborted_half_way() {
    split_audited(true).await;
}
