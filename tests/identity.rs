//! Identity columns, GENERATED ALWAYS and BY DEFAULT, for every method:
//! the application inserts through the table's name without giving the
//! id (`INSERT … RETURNING id`), updates and deletes its rows, while the
//! migrator is killed and resumed, swaps, unswaps (sync), splits (attach)
//! or aborts. The oracle is the multiset of committed rows; afterwards
//! every new id is above every id ever handed out, and no id is in the
//! table twice.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

type Row = (i64, String, String);

fn schema(always: bool) -> String {
    let kind = if always { "ALWAYS" } else { "BY DEFAULT" };
    // A cache of several values: sessions hold values the sequence has
    // handed out but no row has used yet, across the swap.
    format!(
        "DO $$ BEGIN CREATE ROLE app_rw; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         CREATE TABLE public.items (
             id bigint GENERATED {kind} AS IDENTITY (INCREMENT BY 2 CACHE 5) PRIMARY KEY,
             ts timestamptz NOT NULL,
             v text NOT NULL
         );
         GRANT SELECT, INSERT, UPDATE, DELETE ON public.items TO app_rw;
         INSERT INTO public.items (ts, v)
         SELECT now() - (g % 90) * interval '1 day' - (g % 1440) * interval '1 minute', 'seed ' || g
         FROM generate_series(1, 4000) g;
         ANALYZE public.items;"
    )
}

fn plan(method: &str) -> String {
    format!(
        "table: public.items
partition:
  by: range
  column: ts
  interval: month
method: {method}
batch:
  size: 200
  pause: 2ms
"
    )
}

/// What one application session committed.
#[derive(Default)]
struct Seen {
    rows: Vec<Row>,
    max_id: i64,
    errors: Vec<String>,
}

/// Application sessions: each inserts without an id, reads the id back,
/// and now and then updates or deletes one of its own rows, through the
/// table's name; the oracle follows what committed.
struct App {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Seen>>,
}

impl App {
    async fn start(db: &Db, sessions: usize) -> App {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..sessions {
            let (db, stop) = (db.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let c = db.client().await;
                // One session is an application role with table privileges
                // only: an identity asks no privilege on its sequence, and
                // neither may the routing view's default.
                if w == 0 {
                    c.batch_execute("SET ROLE app_rw").await.unwrap();
                }
                let mut seen = Seen::default();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let v = format!("w{w} n{n}");
                    // Keys stay below the next month: the attach method's cutoff.
                    let r = c
                        .query_one(
                            "INSERT INTO public.items (ts, v) VALUES (now() - ($1::int % 80) * interval '1 day', $2) \
                             RETURNING id, ts::text, v",
                            &[&((n % 80) as i32), &v],
                        )
                        .await;
                    match r {
                        Ok(r) => {
                            let row: Row = (r.get(0), r.get(1), r.get(2));
                            seen.max_id = seen.max_id.max(row.0);
                            seen.rows.push(row);
                        }
                        Err(e) => seen.errors.push(common::workload::db_message(&e)),
                    }
                    if n.is_multiple_of(5) && !seen.rows.is_empty() {
                        let k = (n as usize * 7) % seen.rows.len();
                        let id = seen.rows[k].0;
                        if n.is_multiple_of(10) {
                            match c.execute("DELETE FROM public.items WHERE id = $1", &[&id]).await {
                                Ok(1) => {
                                    seen.rows.swap_remove(k);
                                }
                                Ok(x) => seen.errors.push(format!("delete of {id} touched {x} rows")),
                                Err(e) => seen.errors.push(common::workload::db_message(&e)),
                            }
                        } else {
                            // The new value is computed here, not from the row
                            // (`SET v = v || …`): through the move method's view
                            // that would be a read-modify-write, which the run
                            // pauses for.
                            let v = format!("{}+", seen.rows[k].2);
                            let r = c
                                .query(
                                    "UPDATE public.items SET v = $2 WHERE id = $1 RETURNING id, ts::text, v",
                                    &[&id, &v],
                                )
                                .await;
                            match r {
                                Ok(rows) if rows.len() == 1 => {
                                    seen.rows[k] = (rows[0].get(0), rows[0].get(1), rows[0].get(2));
                                }
                                Ok(rows) => seen.errors.push(format!("update of {id} touched {} rows", rows.len())),
                                Err(e) => seen.errors.push(common::workload::db_message(&e)),
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                seen
            }));
        }
        App { stop, tasks }
    }

    /// Stops the sessions: the rows they committed, and the highest id
    /// any was handed.
    async fn stop(self) -> (Vec<Row>, i64) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut rows, mut max) = (Vec::new(), 0);
        for t in self.tasks {
            let seen = t.await.unwrap();
            assert!(seen.errors.is_empty(), "the application saw errors: {:?}", seen.errors);
            assert!(seen.rows.len() > 10, "the application made too little progress");
            rows.extend(seen.rows);
            max = max.max(seen.max_id);
        }
        (rows, max)
    }
}

async fn rows(db: &Db) -> Vec<Row> {
    let c = db.client().await;
    let mut v: Vec<Row> = c
        .query("SELECT id, ts::text, v FROM public.items", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    v.sort();
    v
}

/// The table holds exactly the seed's rows and what the application
/// committed, each once.
async fn compare(db: &Db, seed: &[Row], app: Vec<Row>) {
    let mut want: Vec<Row> = seed.to_vec();
    want.extend(app);
    want.sort();
    let have = rows(db).await;
    if have != want {
        let extra: Vec<_> = have.iter().filter(|r| !want.contains(r)).take(5).collect();
        let missing: Vec<_> = want.iter().filter(|r| !have.contains(r)).take(5).collect();
        panic!(
            "the table has {} rows, the oracle {}; extra {extra:?}, missing {missing:?}",
            have.len(),
            want.len()
        );
    }
    assert_eq!(
        db.scalar_i64("SELECT count(*) - count(DISTINCT id) FROM public.items")
            .await,
        0,
        "an id is in the table twice"
    );
}

/// New rows through the name get ids above every id handed out so far,
/// from several sessions (each draws its own cache).
async fn fresh_ids_above(db: &Db, max: i64) -> i64 {
    let mut top = max;
    for _ in 0..3 {
        let c = db.client().await;
        for _ in 0..4 {
            let id: i64 = c
                .query_one(
                    "INSERT INTO public.items (ts, v) VALUES (now() - interval '1 day', 'after') RETURNING id",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert!(id > max, "id {id} handed out again (the highest so far was {max})");
            top = top.max(id);
        }
    }
    // The USAGE the routing view's default needed is gone with the view.
    assert_eq!(
        db.scalar_str(
            "SELECT has_sequence_privilege('app_rw', pg_get_serial_sequence('public.items', 'id'), 'USAGE')::text"
        )
        .await
        .as_deref(),
        Some("false"),
        "the application role kept a privilege on the identity's sequence"
    );
    top
}

async fn identity_of(db: &Db) -> String {
    db.scalar_str(
        "SELECT a.attidentity::text || ' ' || pg_get_serial_sequence('public.items', 'id') || ' ' || s.seqincrement || ' ' || s.seqcache \
         FROM pg_attribute a, pg_sequence s WHERE a.attrelid = 'public.items'::regclass AND a.attname = 'id' \
         AND s.seqrelid = pg_get_serial_sequence('public.items', 'id')::regclass",
    )
    .await
    .unwrap()
}

fn expected_identity(always: bool) -> String {
    format!("{} public.items_id_seq 2 5", if always { "a" } else { "d" })
}

struct Setup {
    _cluster: Cluster,
    db: Db,
    _dir: tempfile::TempDir,
    plan: String,
    seed: Vec<Row>,
}

async fn setup(method: &str, always: bool) -> Setup {
    let cluster = Cluster::start();
    let db = cluster.database().await;
    db.exec(&schema(always)).await;
    let seed = rows(&db).await;
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &plan(method));
    let plan = plan.to_str().unwrap().to_string();
    let out = db.migrate(&["plan", &plan]).await;
    out.ok();
    assert!(
        out.stdout.contains("\"id\" is GENERATED") && out.stdout.contains("continuing where the original's stands"),
        "plan says nothing of the identity:\n{}",
        out.stdout
    );
    Setup {
        _cluster: cluster,
        db,
        _dir: dir,
        plan,
        seed,
    }
}

/// A failpoint in the middle of the method's copy or constraint phase.
fn crash_point(method: &str) -> &'static str {
    match method {
        "attach" => "constrain:after-check",
        _ => "batch-forward:after-commit@3",
    }
}

/// Through a kill and a resume to the swap (and for sync an unswap and a
/// second swap; for attach a split, killed and resumed too), with the
/// application inserting throughout.
async fn migrate_through_a_crash(method: &str, always: bool) {
    let Setup {
        db,
        plan,
        seed,
        _cluster,
        _dir,
    } = setup(method, always).await;
    let plan = plan.as_str();
    let app = App::start(&db, 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = db
        .migrate_env(&["apply", plan], &[("MIGRATE_FAILPOINT", crash_point(method))])
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Killed again inside the swap's transaction: it rolls back whole,
    // the identity's hand-over with it.
    let run = db
        .migrate_env(&["resume", plan], &[("MIGRATE_FAILPOINT", "swap:before-commit")])
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    tokio::time::sleep(Duration::from_millis(200)).await;
    db.migrate(&["resume", plan]).await.ok();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(identity_of(&db).await, expected_identity(always));
    if method == "sync" {
        let run = db
            .migrate_env(&["unswap", plan], &[("MIGRATE_FAILPOINT", "unswap:before-commit")])
            .await;
        assert_eq!(run.code, 86, "{}", run.stderr);
        db.migrate(&["unswap", plan]).await.ok();
        assert_eq!(identity_of(&db).await, expected_identity(always), "after unswap");
        tokio::time::sleep(Duration::from_millis(300)).await;
        db.migrate(&["swap", plan]).await.ok();
        assert_eq!(
            identity_of(&db).await,
            expected_identity(always),
            "after the second swap"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        db.migrate(&["cleanup", plan]).await.ok();
    }
    if method == "attach" {
        let run = db
            .migrate_env(
                &["split", plan],
                &[("MIGRATE_FAILPOINT", "batch-forward:after-commit@3")],
            )
            .await;
        assert_eq!(run.code, 86, "{}", run.stderr);
        tokio::time::sleep(Duration::from_millis(200)).await;
        db.migrate(&["resume", plan]).await.ok();
        assert_eq!(identity_of(&db).await, expected_identity(always), "after the split");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (app_rows, max) = app.stop().await;
    assert_eq!(db.relkind("public.items").await.as_deref(), Some("p"));
    compare(&db, &seed, app_rows).await;
    let seed_max = seed.iter().map(|r| r.0).max().unwrap();
    fresh_ids_above(&db, max.max(seed_max)).await;
    let left: Vec<String> = db.objects().await.into_iter().filter(|o| o.contains("__")).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Aborted at a phase in the middle, with the application inserting
/// before, during and after: the original keeps its identity and draws
/// no id twice.
async fn abort_in_the_middle(method: &str, always: bool) {
    let Setup {
        db,
        plan,
        seed,
        _cluster,
        _dir,
    } = setup(method, always).await;
    let plan = plan.as_str();
    let app = App::start(&db, 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let point = match method {
        "attach" => "prepare:after-commit",
        _ => "batch-forward:after-commit@5",
    };
    let run = db.migrate_env(&["apply", plan], &[("MIGRATE_FAILPOINT", point)]).await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    tokio::time::sleep(Duration::from_millis(300)).await;
    if method == "move" {
        // Killed in the middle of moving the rows back, then aborted again.
        let run = db
            .migrate_env(&["abort", plan], &[("MIGRATE_FAILPOINT", "batch-back:after-commit@2")])
            .await;
        assert_eq!(run.code, 86, "{}", run.stderr);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.migrate(&["abort", plan]).await.ok();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (app_rows, max) = app.stop().await;
    assert_eq!(db.relkind("public.items").await.as_deref(), Some("r"));
    assert_eq!(identity_of(&db).await, expected_identity(always));
    compare(&db, &seed, app_rows).await;
    let seed_max = seed.iter().map(|r| r.0).max().unwrap();
    fresh_ids_above(&db, max.max(seed_max)).await;
}

/// An attach, then a split aborted half-way: the partitioned table keeps
/// its identity.
async fn split_aborted(always: bool) {
    let Setup {
        db,
        plan,
        seed,
        _cluster,
        _dir,
    } = setup("attach", always).await;
    let plan = plan.as_str();
    db.migrate(&["apply", plan]).await.ok();
    let app = App::start(&db, 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = db
        .migrate_env(
            &["split", plan],
            &[("MIGRATE_FAILPOINT", "batch-forward:after-commit@4")],
        )
        .await;
    assert_eq!(run.code, 86, "{}", run.stderr);
    tokio::time::sleep(Duration::from_millis(200)).await;
    db.migrate(&["abort", plan]).await.ok();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (app_rows, max) = app.stop().await;
    assert_eq!(identity_of(&db).await, expected_identity(always));
    compare(&db, &seed, app_rows).await;
    let seed_max = seed.iter().map(|r| r.0).max().unwrap();
    fresh_ids_above(&db, max.max(seed_max)).await;
}

macro_rules! identity_tests {
    ($($name:ident => $body:expr,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $body.await;
        }
    )*};
}

identity_tests! {
    move_always => migrate_through_a_crash("move", true),
    move_by_default => migrate_through_a_crash("move", false),
    sync_always => migrate_through_a_crash("sync", true),
    sync_by_default => migrate_through_a_crash("sync", false),
    attach_and_split_always => migrate_through_a_crash("attach", true),
    attach_and_split_by_default => migrate_through_a_crash("attach", false),
    move_aborted_always => abort_in_the_middle("move", true),
    move_aborted_by_default => abort_in_the_middle("move", false),
    sync_aborted_always => abort_in_the_middle("sync", true),
    sync_aborted_by_default => abort_in_the_middle("sync", false),
    attach_aborted_always => abort_in_the_middle("attach", true),
    attach_aborted_by_default => abort_in_the_middle("attach", false),
    split_aborted_always => split_aborted(true),
    split_aborted_by_default => split_aborted(false),
}
