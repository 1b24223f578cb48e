//! `plan` prints what runs: every statement the tool sends to the
//! database, as the server's statement log records it, is one that `plan`
//! printed (batch bounds aside: they are the parameters `plan` names), and
//! every statement `plan` prints for a step that runs unconditionally was
//! sent. Only the tool's bookkeeping (catalog reads, the control table's
//! own reads and writes, the advisory lock) is outside the plan.

mod common;
use common::*;
use std::collections::{BTreeSet, HashSet};

/// A cluster that logs every statement of every session as CSV.
fn logging_cluster() -> Cluster {
    Cluster::start_with_settings("-c logging_collector=on -c log_destination=csvlog -c log_statement=all")
}

/// Splits one CSV file into records of fields (quoted fields may hold
/// commas, quotes doubled, and newlines).
fn csv_records(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rec = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => rec.push(std::mem::take(&mut field)),
            (false, '\n') => {
                rec.push(std::mem::take(&mut field));
                out.push(std::mem::take(&mut rec));
            }
            (false, c) => field.push(c),
        }
    }
    out
}

/// Every statement the tool's sessions sent to `dbname`, in order.
fn sent(cluster: &Cluster, dbname: &str) -> Vec<String> {
    let dir = cluster.data_dir().join("log");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        for r in csv_records(&std::fs::read_to_string(f).unwrap()) {
            // database, severity, message, application_name
            let (Some(db), Some(sev), Some(msg), Some(app)) = (r.get(2), r.get(11), r.get(13), r.get(22)) else {
                continue;
            };
            if db != dbname || sev != "LOG" || !app.starts_with("migrate") || app.contains("runner lock") {
                continue;
            }
            let sql = if let Some(s) = msg.strip_prefix("statement: ") {
                s
            } else if let Some(rest) = msg.strip_prefix("execute ") {
                match rest.split_once(": ") {
                    Some((_, s)) => s,
                    None => continue,
                }
            } else {
                continue;
            };
            out.push(sql.to_string());
        }
    }
    out
}

/// The tool's own bookkeeping, which no step renders: reads of the catalog
/// and of the control table, the control table's progress writes between
/// steps (never a phase: that is a step's record), the control schema's
/// creation, the session's name, the probe of whether the role may compress
/// WAL. Each is a message of one statement.
fn bookkeeping(sql: &str) -> bool {
    let s = sql.trim_start();
    if s == include_str!("../src/control/schema.sql") {
        return true;
    }
    if s.contains(";\n") {
        return false;
    }
    let writes = [
        "FOR UPDATE",
        "FOR NO KEY UPDATE",
        "FOR SHARE",
        "FOR KEY SHARE",
        "setval",
        "nextval",
        "set_config",
        "pg_cancel_backend",
        "pg_terminate_backend",
    ];
    let read_only = s.starts_with("SELECT ") && !writes.iter().any(|w| s.contains(w));
    read_only
        || (s.starts_with("INSERT INTO repartition.")
            || s.starts_with("UPDATE repartition.")
            || s.starts_with("WITH e AS (INSERT INTO repartition.events"))
            && !s.contains("SET phase")
        || s == "START TRANSACTION"
        || s.starts_with("SET application_name = ")
        || s == "SET wal_compression = lz4"
        || s == "RESET wal_compression"
}

struct Printed {
    /// Every statement `plan` printed, the id filled in.
    all: HashSet<String>,
    /// Those of the parts that always run, with the step's name.
    always: Vec<(String, String)>,
    /// Each transaction as one message, as it must be sent.
    transactions: HashSet<String>,
    /// The steps printed, with their groups.
    steps: HashSet<(String, String)>,
}

/// What `plan --output json` printed. `wanted` names the steps that must
/// have run, each with the group it is printed in: `phases`, or the
/// command of an extra (`abort`, `unswap`, `split`, `abort (split)`);
/// `ids` gives each group's migration id (the split is a migration of
/// its own), the latest by default.
fn printed(doc: &serde_json::Value, ids: &[(&str, i64)], latest: i64, wanted: &[(&str, &str)]) -> Printed {
    let mut p = Printed {
        all: HashSet::new(),
        always: Vec::new(),
        transactions: HashSet::new(),
        steps: HashSet::new(),
    };
    let mut groups: Vec<(&str, &serde_json::Value)> = doc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| ("phases", s))
        .collect();
    for e in doc["extras"].as_array().unwrap() {
        let command = e["command"].as_str().unwrap();
        groups.extend(e["steps"].as_array().unwrap().iter().map(|s| (command, s)));
    }
    for (group, step) in groups {
        let name = step["name"].as_str().unwrap();
        let id = ids.iter().find(|(g, _)| *g == group).map_or(latest, |(_, i)| *i);
        let must = wanted.contains(&(group, name));
        p.steps.insert((group.to_string(), name.to_string()));
        for part in step["parts"].as_array().unwrap() {
            // A part that runs only in a case it names (a crash left an
            // invalid index, a range differs) may not run.
            let conditional = part["when"].as_str().unwrap().starts_with("only");
            let mut wire = String::new();
            for st in part["statements"].as_array().unwrap() {
                let sql = st["sql"].as_str().unwrap().replace(":migration_id", &id.to_string());
                let why = st["why"].as_str().unwrap();
                // Where the role may not compress WAL, that setting is left out.
                if must && !conditional && !why.starts_with("where the role may") {
                    p.always.push((format!("{group}: {name}"), sql.clone()));
                }
                wire.push_str(&sql);
                wire.push_str(";\n");
                p.all.insert(sql);
            }
            if part["how"] == "transaction" {
                p.transactions.insert(wire);
            }
        }
    }
    p
}

/// Splits a logged message into the printed statements it is made of
/// (a transaction is sent as one message: each statement and `;\n`).
fn decompose(msg: &str, printed: &HashSet<String>) -> Option<Vec<String>> {
    if printed.contains(msg) {
        return Some(vec![msg.to_string()]);
    }
    let mut rest = msg;
    let mut parts = Vec::new();
    // Longest first: a statement may be a prefix of another.
    let mut candidates: Vec<&String> = printed.iter().collect();
    candidates.sort_by_key(|s| std::cmp::Reverse(s.len()));
    while !rest.is_empty() {
        let next = candidates
            .iter()
            .find(|c| rest.starts_with(c.as_str()) && rest[c.len()..].starts_with(";\n"))?;
        parts.push(next.to_string());
        rest = &rest[next.len() + 2..];
    }
    Some(parts)
}

/// A command of the tool, and the failpoint it dies at, if any.
type Command<'a> = (&'a [&'a str], Option<&'a str>);

/// Runs the commands and checks the server's log against the plan.
async fn check(cluster: &Cluster, db: &Db, plan: &str, commands: &[Command<'_>], wanted: &[(&str, &str)]) {
    let run = db.migrate(&["plan", plan, "--output", "json"]).await;
    run.ok();
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let dbname = db.url.rsplit("dbname=").next().unwrap().to_string();
    db.exec(&format!("ALTER DATABASE {dbname} SET log_statement = 'all'"))
        .await;
    for (args, failpoint) in commands {
        let mut a: Vec<&str> = args.to_vec();
        a.push(plan);
        match failpoint {
            Some(fp) => {
                let run = db.migrate_env(&a, &[("MIGRATE_FAILPOINT", fp)]).await;
                assert_eq!(run.code, 86, "{}", run.stderr);
            }
            None => {
                db.migrate(&a).await.ok();
            }
        }
    }
    let first = db.scalar_i64("SELECT min(id) FROM repartition.migrations").await;
    let latest = db.scalar_i64("SELECT max(id) FROM repartition.migrations").await;
    let ids = [("phases", first), ("abort", first), ("unswap", first)];
    let p = printed(&doc, &ids, latest, wanted);
    for (g, step) in wanted {
        assert!(
            p.steps.contains(&(g.to_string(), step.to_string())),
            "plan printed no step {step} under {g}"
        );
    }
    let mut seen = BTreeSet::new();
    let mut unplanned = Vec::new();
    // The control schema is created in a transaction of its own.
    let mut bootstrap = false;
    let mut split = Vec::new();
    for msg in sent(cluster, &dbname) {
        // A strong lock and a step's record travel with their whole
        // transaction, in one message.
        if (msg.contains("LOCK TABLE") || msg.contains("DO $record$")) && !p.transactions.contains(&msg) {
            split.push(msg.clone());
        }
        match decompose(&msg, &p.all) {
            _ if bootstrap && msg == "COMMIT" => {}
            Some(parts) => seen.extend(parts),
            None if bookkeeping(&msg) => {}
            None => unplanned.push(msg.clone()),
        }
        bootstrap = msg.starts_with("-- The control schema");
    }
    assert!(
        split.is_empty(),
        "transactions not sent as the one message plan printed:\n{}",
        split.join("\n---\n")
    );
    assert!(
        unplanned.is_empty(),
        "statements sent that plan did not print:\n{}",
        unplanned.join("\n---\n")
    );
    let missing: Vec<String> = p
        .always
        .iter()
        .filter(|(_, sql)| !seen.contains(sql))
        .map(|(step, sql)| format!("[{step}] {sql}"))
        .collect();
    assert!(
        missing.is_empty(),
        "statements plan printed that were never sent:\n{}",
        missing.join("\n---\n")
    );
}

fn group<'a>(g: &'a str, steps: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    steps.iter().map(|s| (g, *s)).collect()
}

fn phases<'a>(steps: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    group("phases", steps)
}

fn abort<'a>(steps: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    group("abort", steps)
}

fn plan_for(db: &Db, dir: &std::path::Path, method: &str) -> String {
    let yaml = event_plan(300, "").replace("method: move", &format!("method: {method}"));
    db.plan_file(dir, "p.yaml", &yaml).to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_move_method_sends_what_plan_printed() {
    let cluster = logging_cluster();
    let db = cluster.database().await;
    seed(&db, 20, 3000).await;
    let dir = scratch();
    let plan = plan_for(&db, dir.path(), "move");
    check(
        &cluster,
        &db,
        &plan,
        &[(&["apply"], None)],
        &phases(&["prepare", "route", "move", "swap", "finish"]),
    )
    .await;
}

/// Under a latency budget the batches commit differently and a probe runs
/// beside them, on a connection of its own: both as `plan` printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_move_method_under_a_latency_budget_sends_what_plan_printed() {
    let cluster = logging_cluster();
    let db = cluster.database().await;
    seed(&db, 20, 3000).await;
    let dir = scratch();
    let yaml = event_plan(300, "throttle:\n  latency: 4x\n");
    let plan = db.plan_file(dir.path(), "p.yaml", &yaml).to_str().unwrap().to_string();
    check(
        &cluster,
        &db,
        &plan,
        &[(&["apply"], None)],
        &phases(&["prepare", "route", "move", "swap", "finish"]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_move_methods_abort_sends_what_plan_printed() {
    let cluster = logging_cluster();
    let db = cluster.database().await;
    seed(&db, 20, 3000).await;
    let dir = scratch();
    let plan = plan_for(&db, dir.path(), "move");
    check(
        &cluster,
        &db,
        &plan,
        &[(&["apply", "--until", "move"], None), (&["abort"], None)],
        &[
            phases(&["prepare", "route", "move"]),
            abort(&[
                "abort (reroute)",
                "abort (move back)",
                "abort (unroute)",
                "abort (drop)",
            ]),
        ]
        .concat(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_method_unswap_and_cleanup_send_what_plan_printed() {
    let cluster = logging_cluster();
    let db = cluster.database().await;
    seed(&db, 20, 3000).await;
    let dir = scratch();
    let plan = plan_for(&db, dir.path(), "sync");
    check(
        &cluster,
        &db,
        &plan,
        &[
            (&["apply"], None),
            (&["unswap"], None),
            (&["swap"], None),
            (&["cleanup"], None),
        ],
        &[
            phases(&["prepare", "backfill", "verify", "swap", "cleanup"]),
            vec![("unswap", "unswap")],
        ]
        .concat(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_methods_abort_sends_what_plan_printed() {
    let cluster = logging_cluster();
    let db = cluster.database().await;
    seed(&db, 20, 3000).await;
    let dir = scratch();
    let plan = plan_for(&db, dir.path(), "sync");
    check(
        &cluster,
        &db,
        &plan,
        &[(&["apply", "--until", "backfill"], None), (&["abort"], None)],
        &[
            phases(&["prepare", "backfill"]),
            abort(&["abort (mirror)", "abort (drop)"]),
        ]
        .concat(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attach_method_and_its_split_send_what_plan_printed() {
    let cluster = logging_cluster();
    let db = cluster.database().await;
    seed(&db, 20, 3000).await;
    let dir = scratch();
    let plan = plan_for(&db, dir.path(), "attach");
    check(
        &cluster,
        &db,
        &plan,
        &[(&["apply"], None), (&["split"], None)],
        &[
            phases(&["constrain", "prepare", "swap", "finish"]),
            group("split", &["prepare", "route", "move", "swap", "finish"]),
        ]
        .concat(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attach_methods_abort_sends_what_plan_printed() {
    let cluster = logging_cluster();
    let db = cluster.database().await;
    seed(&db, 20, 3000).await;
    let dir = scratch();
    let plan = plan_for(&db, dir.path(), "attach");
    check(
        &cluster,
        &db,
        &plan,
        &[(&["apply", "--until", "prepare"], None), (&["abort"], None)],
        &[
            phases(&["constrain", "prepare"]),
            abort(&["abort (constraint)", "abort (drop)"]),
        ]
        .concat(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_splits_abort_sends_what_plan_printed() {
    let cluster = logging_cluster();
    let db = cluster.database().await;
    seed(&db, 20, 3000).await;
    let dir = scratch();
    let plan = plan_for(&db, dir.path(), "attach");
    check(
        &cluster,
        &db,
        &plan,
        &[
            (&["apply"], None),
            (&["split"], Some("batch-forward:after-commit@2")),
            (&["abort"], None),
        ],
        &[
            phases(&["constrain", "prepare", "swap", "finish"]),
            group("split", &["prepare", "route"]),
            group(
                "abort (split)",
                &["abort (reroute)", "abort (move back)", "abort (unroute)"],
            ),
        ]
        .concat(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_aborted_before_its_route_sends_what_plan_printed_and_leaves_nothing() {
    let cluster = logging_cluster();
    let db = cluster.database().await;
    seed(&db, 20, 3000).await;
    let dir = scratch();
    let plan = plan_for(&db, dir.path(), "attach");
    db.migrate(&["apply", &plan]).await.ok();
    let attached = db.objects().await;
    let split = db
        .migrate_env(&["split", &plan], &[("MIGRATE_FAILPOINT", "prepare:after-commit")])
        .await;
    assert_eq!(split.code, 86, "{}", split.stderr);
    assert_ne!(db.objects().await, attached, "the split's prepare made no table");
    db.migrate(&["abort", &plan]).await.ok();
    assert_eq!(db.objects().await, attached, "the split's abort left something behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drop_of_a_split_aborted_before_its_route_is_what_plan_printed() {
    let cluster = logging_cluster();
    let db = cluster.database().await;
    seed(&db, 20, 3000).await;
    let dir = scratch();
    let plan = plan_for(&db, dir.path(), "attach");
    check(
        &cluster,
        &db,
        &plan,
        &[
            (&["apply"], None),
            (&["split"], Some("prepare:after-commit")),
            (&["abort"], None),
        ],
        &[
            phases(&["constrain", "prepare", "swap", "finish"]),
            group("split", &["prepare"]),
            group("abort (split)", &["abort (drop partitions)"]),
        ]
        .concat(),
    )
    .await;
}

/// The event log with its key GENERATED ALWAYS AS IDENTITY instead of a
/// serial: the identity's hand-over, the view's default and the copies'
/// OVERRIDING SYSTEM VALUE are printed as they run.
async fn seed_identity(db: &Db) {
    seed(db, 20, 3000).await;
    db.exec(
        "ALTER TABLE workflow_events ALTER COLUMN id DROP DEFAULT;
         DROP SEQUENCE workflow_events_id_seq;
         ALTER TABLE workflow_events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (START WITH 5000 CACHE 4);",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_moved_and_aborted_sends_what_plan_printed() {
    for abort_it in [false, true] {
        let cluster = logging_cluster();
        let db = cluster.database().await;
        seed_identity(&db).await;
        let dir = scratch();
        let plan = plan_for(&db, dir.path(), "move");
        if abort_it {
            check(
                &cluster,
                &db,
                &plan,
                &[(&["apply", "--until", "move"], None), (&["abort"], None)],
                &[
                    phases(&["prepare", "route", "move"]),
                    abort(&[
                        "abort (reroute)",
                        "abort (move back)",
                        "abort (unroute)",
                        "abort (drop)",
                    ]),
                ]
                .concat(),
            )
            .await;
        } else {
            check(
                &cluster,
                &db,
                &plan,
                &[(&["apply"], None)],
                &phases(&["prepare", "route", "move", "swap", "finish"]),
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_synced_unswapped_and_swapped_again_sends_what_plan_printed() {
    let cluster = logging_cluster();
    let db = cluster.database().await;
    seed_identity(&db).await;
    let dir = scratch();
    let plan = plan_for(&db, dir.path(), "sync");
    check(
        &cluster,
        &db,
        &plan,
        &[
            (&["apply"], None),
            (&["unswap"], None),
            (&["swap"], None),
            (&["cleanup"], None),
        ],
        &[
            phases(&["prepare", "backfill", "verify", "swap", "cleanup"]),
            vec![("unswap", "unswap")],
        ]
        .concat(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_attached_split_and_split_aborted_sends_what_plan_printed() {
    for abort_it in [false, true] {
        let cluster = logging_cluster();
        let db = cluster.database().await;
        seed_identity(&db).await;
        let dir = scratch();
        let plan = plan_for(&db, dir.path(), "attach");
        if abort_it {
            check(
                &cluster,
                &db,
                &plan,
                &[
                    (&["apply"], None),
                    (&["split"], Some("batch-forward:after-commit@2")),
                    (&["abort"], None),
                ],
                &[
                    phases(&["constrain", "prepare", "swap", "finish"]),
                    group("split", &["prepare", "route"]),
                    group(
                        "abort (split)",
                        &["abort (reroute)", "abort (move back)", "abort (unroute)"],
                    ),
                ]
                .concat(),
            )
            .await;
        } else {
            check(
                &cluster,
                &db,
                &plan,
                &[(&["apply"], None), (&["split"], None)],
                &[
                    phases(&["constrain", "prepare", "swap", "finish"]),
                    group("split", &["prepare", "route", "move", "swap", "finish"]),
                ]
                .concat(),
            )
            .await;
        }
    }
}

/// The event log with what real tables carry: its own triggers (a row
/// trigger with a WHEN clause, a deferred constraint trigger, a statement
/// trigger, an `UPDATE OF` trigger), row-level
/// security (15 on), a materialized view with a unique index, a partial
/// unique index, a primary key with INCLUDE and a fillfactor, and a key
/// that may be NULL: the guarded copies, the policies, the rebuild, the
/// clauses and the key made NOT NULL are printed as they run.
async fn seed_consumers(db: &Db) {
    seed(db, 20, 3000).await;
    db.exec(
        "CREATE TABLE audit (op text, id bigint);
         CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS
           'BEGIN INSERT INTO public.audit VALUES (TG_OP, 0); RETURN NULL; END';
         CREATE TRIGGER audit_changes AFTER INSERT OR UPDATE OR DELETE ON workflow_events
           FOR EACH ROW WHEN (pg_trigger_depth() < 1) EXECUTE FUNCTION audit_row();
         CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON workflow_events DEFERRABLE INITIALLY DEFERRED
           FOR EACH ROW EXECUTE FUNCTION audit_row();
         CREATE TRIGGER per_statement AFTER INSERT OR UPDATE OR DELETE ON workflow_events
           FOR EACH STATEMENT EXECUTE FUNCTION audit_row();
         CREATE TRIGGER on_type AFTER INSERT OR UPDATE OF type ON workflow_events
           FOR EACH ROW EXECUTE FUNCTION audit_row();
         CREATE MATERIALIZED VIEW event_counts AS SELECT type, count(*) AS events FROM workflow_events GROUP BY type;
         CREATE UNIQUE INDEX event_counts_type ON event_counts (type);
         CREATE UNIQUE INDEX workflow_events_live ON workflow_events (run_id, id) WHERE type <> 'gone';
         ALTER TABLE workflow_events DROP CONSTRAINT workflow_events_pkey,
           ADD CONSTRAINT workflow_events_pkey PRIMARY KEY (id) INCLUDE (run_id) WITH (fillfactor = 80);
         ALTER TABLE workflow_events ALTER COLUMN ts DROP NOT NULL;",
    )
    .await;
    if db
        .scalar_i64("SELECT current_setting('server_version_num')::bigint")
        .await
        >= 150_000
    {
        db.exec(
            "ALTER TABLE workflow_events ENABLE ROW LEVEL SECURITY;
             CREATE POLICY readers ON workflow_events FOR SELECT TO app_rw USING (n >= 0);",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_real_tables_carry_is_sent_as_plan_printed_by_move() {
    let cluster = logging_cluster();
    let db = cluster.database().await;
    seed_consumers(&db).await;
    let dir = scratch();
    let plan = plan_for(&db, dir.path(), "move");
    check(
        &cluster,
        &db,
        &plan,
        &[(&["apply"], None)],
        &phases(&["constrain", "prepare", "route", "move", "swap", "finish"]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_real_tables_carry_is_sent_as_plan_printed_by_sync() {
    let cluster = logging_cluster();
    let db = cluster.database().await;
    seed_consumers(&db).await;
    let dir = scratch();
    let plan = plan_for(&db, dir.path(), "sync");
    check(
        &cluster,
        &db,
        &plan,
        &[
            (&["apply"], None),
            (&["unswap"], None),
            (&["swap"], None),
            (&["cleanup"], None),
        ],
        &[
            phases(&["constrain", "prepare", "backfill", "verify", "swap", "cleanup"]),
            vec![("unswap", "unswap")],
        ]
        .concat(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_real_tables_carry_is_sent_as_plan_printed_by_attach_and_split() {
    let cluster = logging_cluster();
    let db = cluster.database().await;
    seed_consumers(&db).await;
    let dir = scratch();
    let plan = plan_for(&db, dir.path(), "attach");
    check(
        &cluster,
        &db,
        &plan,
        &[(&["apply"], None), (&["split"], None)],
        &[
            phases(&["constrain", "prepare", "swap", "finish"]),
            group("split", &["prepare", "route", "move", "swap", "finish"]),
        ]
        .concat(),
    )
    .await;
}

/// A key that may be NULL, the run stopped once its check is added and
/// aborted: the abort drops the check as `plan` printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_may_be_null_stopped_and_aborted_sends_what_plan_printed() {
    let cluster = logging_cluster();
    let db = cluster.database().await;
    seed(&db, 20, 3000).await;
    db.exec("ALTER TABLE workflow_events ALTER COLUMN ts DROP NOT NULL")
        .await;
    let dir = scratch();
    let plan = plan_for(&db, dir.path(), "move");
    check(
        &cluster,
        &db,
        &plan,
        &[(&["apply"], Some("constrain:after-not-null-check")), (&["abort"], None)],
        &abort(&["abort (key check)", "abort (drop)"]),
    )
    .await;
}
