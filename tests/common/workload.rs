//! An application workload through the table's name, with an oracle of
//! what committed.
//!
//! Each worker owns a disjoint set of runs, and every event belongs to the
//! worker owning its run, so each worker knows exactly what its own rows
//! must look like: the union of the workers' oracles is the whole table.
//! A worker checks every reported row count and every row it reads.

use super::Db;
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub run_id: i64,
    pub ts: DateTime<Utc>,
    pub kind: String,
    pub payload: serde_json::Value,
    pub n: i32,
}

#[derive(Default, Debug)]
pub struct Report {
    pub oracle: BTreeMap<i64, Event>,
    pub ops: BTreeMap<&'static str, u64>,
    /// Rows the application's committed statements inserted, updated and
    /// deleted, by INSERT, UPDATE and DELETE: what a row trigger sees.
    pub changes: BTreeMap<&'static str, u64>,
    /// The application's committed statements on the table, by INSERT,
    /// UPDATE and DELETE: what a statement trigger sees. An upsert is an
    /// INSERT and an UPDATE; a run's deletion cascades in one DELETE.
    pub statements: BTreeMap<&'static str, u64>,
    pub errors: Vec<String>,
}

impl Report {
    /// Fails the test if the application saw an error, naming the first
    /// few; `context` (say, the method) leads the message.
    #[track_caller]
    pub fn assert_no_errors(&self, context: &str) {
        assert!(
            self.errors.is_empty(),
            "{context}the application saw errors: {:?}",
            &self.errors[..self.errors.len().min(8)]
        );
    }

    pub fn total_ops(&self) -> u64 {
        self.ops.values().sum()
    }
}

pub struct Workload {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Report>>,
}

/// Every row of the table, typed, in id order: a list, not a map, so that
/// a row present twice (say, with two partition keys) shows twice.
pub async fn table_rows(db: &Db) -> Vec<(i64, Event)> {
    let c = db.client().await;
    c.query(
        "SELECT id, run_id, ts, type, payload, n FROM public.workflow_events ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get(0),
            Event {
                run_id: r.get(1),
                ts: r.get(2),
                kind: r.get(3),
                payload: r.get(4),
                n: r.get(5),
            },
        )
    })
    .collect()
}

/// What the workload does besides inserts, updates, deletes and reads.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    /// `INSERT ... ON CONFLICT ON CONSTRAINT ... DO UPDATE` and
    /// `SELECT ... FOR UPDATE` then an increment: a table, not a view.
    pub upsert_and_lock: bool,
    /// How far into the future new keys may lie.
    pub future_days: i64,
    /// Updates of the partition key (on a partitioned table PostgreSQL
    /// fires DELETE and INSERT triggers for a row that changes partition).
    pub key_updates: bool,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            upsert_and_lock: false,
            future_days: 40,
            key_updates: true,
        }
    }
}

impl Features {
    /// What the application may do under `method` until its swap: row
    /// locks and upserts where the table is a table (not the move method's
    /// view), and no key past the attach method's cutoff.
    pub fn for_method(method: &str) -> Features {
        Features {
            upsert_and_lock: method != "move",
            future_days: if method == "attach" { 0 } else { 40 },
            ..Features::default()
        }
    }
}

impl Workload {
    /// Starts `workers` connections working through the table's name.
    pub async fn start(db: &Db, workers: usize, seed: u64) -> Workload {
        Self::start_with(db, workers, seed, Features::default()).await
    }

    pub async fn start_with(db: &Db, workers: usize, seed: u64, features: Features) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let rows = table_rows(db).await;
        let c = db.client().await;
        let runs: Vec<i64> = c
            .query("SELECT id FROM workflow_runs", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut handles = Vec::new();
        for w in 0..workers {
            let mine: Vec<i64> = runs.iter().copied().filter(|r| (*r as usize) % workers == w).collect();
            let oracle: BTreeMap<i64, Event> = rows
                .iter()
                .filter(|(_, e)| mine.contains(&e.run_id))
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            let client = db.client().await;
            let stop = stop.clone();
            handles.push(tokio::spawn(async move {
                let mut worker = Worker::new(client, mine, oracle, seed.wrapping_add(w as u64), features).await;
                while !stop.load(Ordering::Relaxed) {
                    worker.step().await;
                    // A step can finish without waiting on the server (say,
                    // with nothing left to update): never starve the test.
                    tokio::task::yield_now().await;
                }
                worker.report
            }));
        }
        Workload { stop, handles }
    }

    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Report::default();
        for h in self.handles {
            let r = h.await.expect("worker panicked");
            all.oracle.extend(r.oracle);
            for (k, v) in r.ops {
                *all.ops.entry(k).or_default() += v;
            }
            for (k, v) in r.statements {
                *all.statements.entry(k).or_default() += v;
            }
            for (k, v) in r.changes {
                *all.changes.entry(k).or_default() += v;
            }
            all.errors.extend(r.errors);
        }
        all
    }
}

struct Worker {
    client: Client,
    features: Features,
    runs: Vec<i64>,
    report: Report,
    rng: fastrand::Rng,
    now: DateTime<Utc>,
    insert: tokio_postgres::Statement,
    read: tokio_postgres::Statement,
    update: tokio_postgres::Statement,
}

impl Worker {
    async fn new(
        client: Client,
        runs: Vec<i64>,
        oracle: BTreeMap<i64, Event>,
        seed: u64,
        features: Features,
    ) -> Worker {
        // Prepared before the migration starts and used throughout it: the
        // plan cache must follow the table's name through route and swap.
        let insert = client
            .prepare("INSERT INTO public.workflow_events (run_id, ts, type, payload, n) VALUES ($1, $2, $3, $4, $5) RETURNING id")
            .await
            .unwrap();
        let read = client
            .prepare("SELECT run_id, ts, type, payload, n FROM public.workflow_events WHERE id = $1")
            .await
            .unwrap();
        let update = client
            .prepare("UPDATE public.workflow_events SET payload = $2, n = $3 WHERE id = $1")
            .await
            .unwrap();
        Worker {
            client,
            features,
            runs,
            report: Report {
                oracle,
                ..Default::default()
            },
            rng: fastrand::Rng::with_seed(seed),
            // PostgreSQL keeps microseconds.
            now: chrono::SubsecRound::trunc_subsecs(Utc::now(), 6),
            insert,
            read,
            update,
        }
    }

    fn some_ts(&mut self) -> DateTime<Utc> {
        // Within the seeded span and the premade future months.
        let ahead = self.rng.i64(0..=self.features.future_days);
        let back = self.rng.i64(0..120 * 1440);
        if ahead == 0 {
            self.now - Duration::minutes(back)
        } else {
            self.now - Duration::minutes(back) + Duration::days(ahead)
        }
    }

    fn some_event(&mut self) -> Option<i64> {
        let len = self.report.oracle.len();
        if len == 0 {
            return None;
        }
        self.report.oracle.keys().nth(self.rng.usize(0..len)).copied()
    }

    fn count(&mut self, op: &'static str) {
        *self.report.ops.entry(op).or_default() += 1;
    }

    fn changed(&mut self, op: &'static str, rows: u64) {
        *self.report.changes.entry(op).or_default() += rows;
    }

    fn committed(&mut self, op: &'static str, statements: u64) {
        *self.report.statements.entry(op).or_default() += statements;
    }

    fn error(&mut self, what: String) {
        if self.report.errors.len() < 50 {
            self.report.errors.push(what);
        }
    }

    fn expect_one(&mut self, op: &str, id: i64, r: Result<u64, tokio_postgres::Error>) -> bool {
        match r {
            Ok(1) => true,
            Ok(n) => {
                self.error(format!("{op} of event {id} affected {n} rows"));
                false
            }
            Err(e) => {
                self.error(format!("{op} of event {id}: {}", db_message(&e)));
                false
            }
        }
    }

    async fn step(&mut self) {
        let dice = self.rng.u32(0..100);
        match dice {
            0..=29 => self.insert_one().await,
            30..=34 => self.insert_many().await,
            35..=54 => self.update_payload().await,
            55..=62 if self.features.key_updates => self.update_key().await,
            55..=62 => self.update_payload().await,
            63..=70 => self.delete_one().await,
            71..=80 if self.features.upsert_and_lock => self.upsert().await,
            81..=86 if self.features.upsert_and_lock => self.lock_and_increment().await,
            71..=94 => self.read_check().await,
            95..=96 => self.delete_run().await,
            _ => self.run_with_events().await,
        }
    }

    fn new_event(&mut self) -> Event {
        let run_id = self.runs[self.rng.usize(0..self.runs.len())];
        Event {
            run_id,
            ts: self.some_ts(),
            kind: format!("k{}", self.rng.u8(0..5)),
            payload: serde_json::json!({ "w": self.rng.u32(..), "s": "x".repeat(self.rng.usize(0..50)) }),
            n: self.rng.i32(0..1000),
        }
    }

    async fn insert_one(&mut self) {
        self.count("insert (prepared, RETURNING)");
        let e = self.new_event();
        match self
            .client
            .query_one(&self.insert, &[&e.run_id, &e.ts, &e.kind, &e.payload, &e.n])
            .await
        {
            Ok(row) => {
                let id: i64 = row.get(0);
                self.report.oracle.insert(id, e);
                self.changed("INSERT", 1);
                self.committed("INSERT", 1);
            }
            Err(err) => self.error(format!("insert: {}", db_message(&err))),
        }
    }

    async fn insert_many(&mut self) {
        self.count("insert 3 rows (RETURNING)");
        let evs: Vec<Event> = (0..3).map(|_| self.new_event()).collect();
        let res = self
            .client
            .query(
                "INSERT INTO public.workflow_events (run_id, ts, type, payload, n) \
                 SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::jsonb[], $5::int[]) \
                 RETURNING id, run_id, ts, type, payload, n",
                &[
                    &evs.iter().map(|e| e.run_id).collect::<Vec<_>>(),
                    &evs.iter().map(|e| e.ts).collect::<Vec<_>>(),
                    &evs.iter().map(|e| e.kind.clone()).collect::<Vec<_>>(),
                    &evs.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
                    &evs.iter().map(|e| e.n).collect::<Vec<_>>(),
                ],
            )
            .await;
        match res {
            Ok(rows) if rows.len() == 3 => {
                self.changed("INSERT", 3);
                self.committed("INSERT", 1);
                for r in rows {
                    let e = Event {
                        run_id: r.get(1),
                        ts: r.get(2),
                        kind: r.get(3),
                        payload: r.get(4),
                        n: r.get(5),
                    };
                    self.report.oracle.insert(r.get(0), e);
                }
            }
            Ok(rows) => self.error(format!("insert of 3 rows returned {}", rows.len())),
            Err(err) => self.error(format!("insert of 3 rows: {}", db_message(&err))),
        }
    }

    async fn update_payload(&mut self) {
        self.count("update payload (prepared)");
        let Some(id) = self.some_event() else { return };
        let payload = serde_json::json!({ "updated": self.rng.u32(..) });
        let n = self.rng.i32(0..1000);
        let r = self.client.execute(&self.update, &[&id, &payload, &n]).await;
        if self.expect_one("update", id, r) {
            self.changed("UPDATE", 1);
            self.committed("UPDATE", 1);
            let e = self.report.oracle.get_mut(&id).unwrap();
            e.payload = payload;
            e.n = n;
        }
    }

    async fn update_key(&mut self) {
        self.count("update partition key");
        let Some(id) = self.some_event() else { return };
        let ts = self.some_ts();
        // Another column set with the key, to a value of the application's
        // own (not computed from the row: that would be a read-modify-write,
        // which the move method's watch pauses for).
        let kind = self.report.oracle[&id].kind.clone();
        let r = self
            .client
            .execute(
                "UPDATE public.workflow_events SET ts = $2, type = $3 WHERE id = $1",
                &[&id, &ts, &kind],
            )
            .await;
        if self.expect_one("update of the key", id, r) {
            self.changed("UPDATE", 1);
            self.committed("UPDATE", 1);
            self.report.oracle.get_mut(&id).unwrap().ts = ts;
        }
    }

    async fn delete_one(&mut self) {
        self.count("delete");
        let Some(id) = self.some_event() else { return };
        let r = self
            .client
            .execute("DELETE FROM public.workflow_events WHERE id = $1", &[&id])
            .await;
        if self.expect_one("delete", id, r) {
            self.changed("DELETE", 1);
            self.committed("DELETE", 1);
            self.report.oracle.remove(&id);
        }
    }

    /// Upsert of an existing row (same id and key, so it conflicts both on
    /// the original's key and on the partitioned one), naming the
    /// constraint, whose name survives the swap.
    async fn upsert(&mut self) {
        self.count("insert ... on conflict do update");
        let Some(id) = self.some_event() else { return };
        let e = self.report.oracle[&id].clone();
        let n = self.rng.i32(0..1000);
        let r = self
            .client
            .execute(
                "INSERT INTO public.workflow_events (id, run_id, ts, type, payload, n) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT ON CONSTRAINT workflow_events_pkey DO UPDATE SET n = EXCLUDED.n",
                &[&id, &e.run_id, &e.ts, &e.kind, &e.payload, &n],
            )
            .await;
        if self.expect_one("upsert", id, r) {
            self.changed("UPDATE", 1);
            self.committed("INSERT", 1);
            self.committed("UPDATE", 1);
            self.report.oracle.get_mut(&id).unwrap().n = n;
        }
    }

    /// A read-modify-write under a row lock.
    async fn lock_and_increment(&mut self) {
        self.count("select for update, then increment");
        let Some(id) = self.some_event() else { return };
        let res: Result<i32, tokio_postgres::Error> = async {
            self.client.batch_execute("BEGIN").await?;
            let n: i32 = self
                .client
                .query_one("SELECT n FROM public.workflow_events WHERE id = $1 FOR UPDATE", &[&id])
                .await?
                .get(0);
            self.client
                .execute("UPDATE public.workflow_events SET n = n + 1 WHERE id = $1", &[&id])
                .await?;
            self.client.batch_execute("COMMIT").await?;
            Ok(n)
        }
        .await;
        match res {
            Ok(n) => {
                self.changed("UPDATE", 1);
                self.committed("UPDATE", 1);
                let e = self.report.oracle.get_mut(&id).unwrap();
                if e.n != n {
                    let want = e.n;
                    self.error(format!("event {id} had n = {n} under its row lock, expected {want}"));
                }
                self.report.oracle.get_mut(&id).unwrap().n = n + 1;
            }
            Err(e) => {
                let _ = self.client.batch_execute("ROLLBACK").await;
                self.error(format!("select for update of {id}: {}", db_message(&e)));
            }
        }
    }

    async fn read_check(&mut self) {
        self.count("read and compare");
        let Some(id) = self.some_event() else { return };
        match self.client.query(&self.read, &[&id]).await {
            Ok(rows) if rows.len() == 1 => {
                let r = &rows[0];
                let got = Event {
                    run_id: r.get(0),
                    ts: r.get(1),
                    kind: r.get(2),
                    payload: r.get(3),
                    n: r.get(4),
                };
                let want = self.report.oracle[&id].clone();
                if got != want {
                    self.error(format!("event {id} reads {got:?}, expected {want:?}"));
                }
            }
            Ok(rows) => self.error(format!("event {id} read {} times", rows.len())),
            Err(e) => self.error(format!("read of {id}: {}", db_message(&e))),
        }
    }

    async fn delete_run(&mut self) {
        if self.runs.len() < 3 {
            return;
        }
        self.count("delete run (cascade)");
        let i = self.rng.usize(0..self.runs.len());
        let run = self.runs[i];
        match self
            .client
            .execute("DELETE FROM public.workflow_runs WHERE id = $1", &[&run])
            .await
        {
            Ok(1) => {
                self.runs.swap_remove(i);
                let before = self.report.oracle.len();
                self.report.oracle.retain(|_, e| e.run_id != run);
                self.changed("DELETE", (before - self.report.oracle.len()) as u64);
                self.committed("DELETE", 1);
            }
            Ok(n) => self.error(format!("delete of run {run} affected {n} rows")),
            Err(e) => self.error(format!("delete of run {run}: {}", db_message(&e))),
        }
    }

    /// A transaction writing both tables: a new run and two events.
    async fn run_with_events(&mut self) {
        self.count("transaction: run + events");
        let res: Result<(i64, Vec<(i64, Event)>), tokio_postgres::Error> = async {
            self.client.batch_execute("BEGIN").await?;
            let run: i64 = self
                .client
                .query_one(
                    "INSERT INTO public.workflow_runs (name) VALUES ('app') RETURNING id",
                    &[],
                )
                .await?
                .get(0);
            let mut evs = Vec::new();
            for _ in 0..2 {
                let mut e = self.new_event();
                e.run_id = run;
                let id: i64 = self
                    .client
                    .query_one(&self.insert, &[&e.run_id, &e.ts, &e.kind, &e.payload, &e.n])
                    .await?
                    .get(0);
                evs.push((id, e));
            }
            self.client.batch_execute("COMMIT").await?;
            Ok((run, evs))
        }
        .await;
        match res {
            Ok((run, evs)) => {
                // Keep ownership consistent: this worker owns the new run.
                self.runs.push(run);
                self.changed("INSERT", evs.len() as u64);
                self.committed("INSERT", evs.len() as u64);
                self.report.oracle.extend(evs);
            }
            Err(e) => {
                let _ = self.client.batch_execute("ROLLBACK").await;
                self.error(format!("transaction: {}", db_message(&e)));
            }
        }
    }
}

pub fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}

/// Compares the whole multiset of the table's rows with the oracle: every
/// committed row once, exactly as committed, and nothing else. Returns the
/// number of rows compared.
pub async fn compare(db: &Db, oracle: &BTreeMap<i64, Event>) -> usize {
    let rows = table_rows(db).await;
    let mut table: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
    for (id, e) in &rows {
        table.entry(*id).or_default().push(e.clone());
    }
    let mut problems = Vec::new();
    for (id, want) in oracle {
        match table.get(id).map(Vec::as_slice) {
            None => problems.push(format!("event {id} is missing")),
            Some([got]) if got != want => problems.push(format!("event {id} is {got:?}, expected {want:?}")),
            Some([_]) => {}
            Some(copies) => problems.push(format!("event {id} is there {} times: {copies:?}", copies.len())),
        }
    }
    for (id, copies) in &table {
        if !oracle.contains_key(id) {
            problems.push(format!("event {id} should not exist ({} copies)", copies.len()));
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences, first: {:?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );
    rows.len()
}
