//! Test harness: a throwaway PostgreSQL cluster per test (initdb + pg_ctl
//! on a temporary data directory with a private socket directory), torn
//! down on drop, so tests are hermetic and run in parallel.
//!
//! `MIGRATE_TEST_ADMIN_URL` points the tests at an existing server instead:
//! each test then creates its own database there.
#![allow(dead_code)]

pub mod workload;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use tokio_postgres::{Client, NoTls};

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

pub struct Cluster {
    dir: Option<tempfile::TempDir>,
    bin: PathBuf,
    /// key=value connection string of the maintenance database.
    admin: String,
}

fn is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false)
}

/// Where PostgreSQL's server binaries are: `PG_BIN`, else the newest
/// Debian installation, else `pg_config --bindir`.
pub fn pg_bin() -> PathBuf {
    if let Ok(b) = std::env::var("PG_BIN") {
        return PathBuf::from(b);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, b)) = versions.pop() {
        return b;
    }
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.join("initdb").exists() {
            return p;
        }
    }
    panic!("PostgreSQL server binaries not found: install PostgreSQL (scripts/install-postgres.sh) or set PG_BIN");
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn check(out: Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TLS-only TCP listener for the TLS tests.
pub struct TlsSetup {
    pub port: u16,
    /// The server's self-signed certificate (its own CA).
    pub ca: PathBuf,
    /// A certificate that did not sign the server's.
    pub other_ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(None)
    }

    /// A cluster started with extra server settings (`-c name=value ...`).
    pub fn start_with_settings(settings: &str) -> Cluster {
        Self::start_with(Some((5432, settings.to_string())))
    }

    /// A cluster that also listens on 127.0.0.1, TLS only, with a server
    /// certificate signed by a throwaway CA.
    pub fn start_tls() -> (Cluster, TlsSetup) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::Builder::new().prefix("migrate-certs-").tempdir().unwrap();
        let certs = dir.path().to_path_buf();
        let openssl = |args: &[&str]| {
            check(
                Command::new("openssl")
                    .args(args)
                    .current_dir(&certs)
                    .output()
                    .expect("openssl runs"),
                "openssl",
            );
        };
        for ca in ["ca", "other"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca} test CA"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ]);
        }
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            certs.join("ext.cnf"),
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ]);
        if is_root() {
            check(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&certs)
                    .output()
                    .unwrap(),
                "chown",
            );
        }
        check(
            Command::new("chmod")
                .arg("600")
                .arg(certs.join("server.key"))
                .output()
                .unwrap(),
            "chmod",
        );
        let extra = format!(
            "-c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            certs.join("server.crt").display(),
            certs.join("server.key").display()
        );
        let tls = TlsSetup {
            port,
            ca: certs.join("ca.crt"),
            other_ca: certs.join("other.crt"),
            _dir: dir,
        };
        (Self::start_with(Some((port, extra))), tls)
    }

    fn start_with(extra: Option<(u16, String)>) -> Cluster {
        if let Ok(admin) = std::env::var("MIGRATE_TEST_ADMIN_URL") {
            return Cluster {
                dir: None,
                bin: PathBuf::new(),
                admin,
            };
        }
        let bin = pg_bin();
        reap_orphans(&bin);
        let dir = tempfile::Builder::new()
            .prefix("migrate-test-")
            .tempdir()
            .expect("temp dir");
        std::fs::write(dir.path().join("owner.pid"), std::process::id().to_string()).unwrap();
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir_all(&sock).unwrap();
        if is_root() {
            check(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path())
                    .output()
                    .unwrap(),
                "chown",
            );
        }
        check(
            as_postgres(&bin, "initdb")
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale",
                    "C",
                    "-D",
                ])
                .arg(&data)
                .output()
                .expect("initdb runs"),
            "initdb",
        );
        if extra.as_ref().is_some_and(|e| e.1.contains("ssl=on")) {
            // TCP only over TLS; the socket stays open to the harness.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 reject\n",
            )
            .unwrap();
        }
        let port = extra.as_ref().map_or(5432, |e| e.0);
        let mut opts = format!(
            "-k {} -p {port} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c shared_buffers=64MB -c max_connections=60 -c autovacuum_naptime=5s",
            sock.display()
        );
        if let Some((_, e)) = &extra {
            opts = format!("{opts} {e}");
        }
        check(
            as_postgres(&bin, "pg_ctl")
                .args(["-w", "-t", "60", "-D"])
                .arg(&data)
                .arg("-o")
                .arg(&opts)
                .arg("-l")
                .arg(dir.path().join("server.log"))
                .arg("start")
                .stdout(Stdio::null())
                .output()
                .expect("pg_ctl runs"),
            "pg_ctl start",
        );
        let admin = format!("host={} port={port} user=postgres dbname=postgres", sock.display());
        Cluster {
            dir: Some(dir),
            bin,
            admin,
        }
    }

    /// A streaming standby of this server, on this machine: a base backup
    /// of its data directory, started with a socket of its own, replaying
    /// what the primary writes. The backup is taken with the server's own
    /// backup functions around a copy of the directory, as the npm builds of
    /// PostgreSQL ship no pg_basebackup.
    pub async fn standby(&self, name: &str) -> Cluster {
        let primary = self.dir.as_ref().expect("a standby of a server the tests started");
        let dir = tempfile::Builder::new()
            .prefix("migrate-test-standby-")
            .tempdir()
            .expect("temp dir");
        std::fs::write(dir.path().join("owner.pid"), std::process::id().to_string()).unwrap();
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir_all(&sock).unwrap();
        let c = connect(&self.admin).await;
        let version: i32 = c
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .unwrap()
            .get(0);
        let (start, stop) = if version >= 150_000 {
            (
                "SELECT pg_catalog.pg_backup_start('standby', true)::text",
                "SELECT labelfile, spcmapfile FROM pg_catalog.pg_backup_stop(false)",
            )
        } else {
            (
                "SELECT pg_catalog.pg_start_backup('standby', true, false)::text",
                "SELECT labelfile, spcmapfile FROM pg_catalog.pg_stop_backup(false, false)",
            )
        };
        c.query_one(start, &[]).await.unwrap();
        copy_data_dir(&primary.path().join("data"), &data);
        let stopped = c.query_one(stop, &[]).await.unwrap();
        std::fs::write(data.join("backup_label"), stopped.get::<_, String>(0)).unwrap();
        let map: Option<String> = stopped.get(1);
        if let Some(map) = map.filter(|m| !m.is_empty()) {
            std::fs::write(data.join("tablespace_map"), map).unwrap();
        }
        std::fs::write(data.join("standby.signal"), "").unwrap();
        let auto = data.join("postgresql.auto.conf");
        let mut conf = std::fs::read_to_string(&auto).unwrap_or_default();
        // The standby names itself to the primary (pg_stat_replication's
        // application_name).
        conf.push_str(&format!(
            "primary_conninfo = 'host={} port=5432 user=postgres application_name={name}'\n",
            primary.path().join("sock").display()
        ));
        std::fs::write(&auto, conf).unwrap();
        if is_root() {
            check(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path())
                    .output()
                    .unwrap(),
                "chown",
            );
        }
        let opts = format!(
            "-k {} -p 5432 -c listen_addresses='' -c fsync=off -c hot_standby=on -c shared_buffers=64MB -c max_connections=60",
            sock.display()
        );
        check(
            as_postgres(&self.bin, "pg_ctl")
                .args(["-w", "-t", "60", "-D"])
                .arg(&data)
                .arg("-o")
                .arg(&opts)
                .arg("-l")
                .arg(dir.path().join("server.log"))
                .arg("start")
                .stdout(Stdio::null())
                .output()
                .expect("pg_ctl runs"),
            "pg_ctl start of the standby",
        );
        let admin = format!("host={} port=5432 user=postgres dbname=postgres", sock.display());
        Cluster {
            dir: Some(dir),
            bin: self.bin.clone(),
            admin,
        }
    }

    /// A database of this server by name (a standby has its primary's).
    pub fn database_named(&self, name: &str) -> Db {
        Db {
            url: replace_dbname(&self.admin, name),
        }
    }

    /// A fresh database; returns its connection string.
    pub async fn database(&self) -> Db {
        let name = format!("t{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::SeqCst));
        let admin = connect(&self.admin).await;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        let url = replace_dbname(&self.admin, &name);
        Db { url }
    }

    /// The server's data directory (its `log/` holds what the logging
    /// collector wrote).
    pub fn data_dir(&self) -> PathBuf {
        match &self.dir {
            Some(d) => d.path().join("data"),
            None => panic!("a server the tests did not start has no data directory here"),
        }
    }

    pub fn server_log(&self) -> String {
        self.dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.path().join("server.log")).ok())
            .unwrap_or_default()
    }
}

fn replace_dbname(conn: &str, name: &str) -> String {
    if conn.contains("://") {
        // postgres://user@host:port/db?params
        let (base, params) = conn
            .split_once('?')
            .map(|(b, p)| (b, format!("?{p}")))
            .unwrap_or((conn, String::new()));
        let scheme_end = base.find("://").unwrap() + 3;
        let path = base[scheme_end..]
            .find('/')
            .map(|i| scheme_end + i)
            .unwrap_or(base.len());
        format!("{}/{name}{params}", &base[..path])
    } else {
        let mut parts: Vec<String> = conn
            .split_whitespace()
            .filter(|p| !p.starts_with("dbname="))
            .map(String::from)
            .collect();
        parts.push(format!("dbname={name}"));
        parts.join(" ")
    }
}

/// Copies a running server's data directory for a base backup: files
/// that vanish meanwhile (a recycled WAL segment, a statistics temp file)
/// are skipped, as is what belongs to the running server alone.
fn copy_data_dir(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    let Ok(entries) = std::fs::read_dir(from) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if ["postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map"].contains(&name.as_ref()) {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&*name));
        match e.file_type() {
            Ok(t) if t.is_dir() => {
                // A replication slot or a temporary statistics file is the
                // primary's own; the directory stays, empty.
                if ["pg_replslot", "pg_stat_tmp"].contains(&name.as_ref()) {
                    std::fs::create_dir_all(&dst).unwrap();
                } else {
                    copy_data_dir(&src, &dst);
                }
            }
            Ok(_) => match std::fs::copy(&src, &dst) {
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => panic!("copying {}: {err}", src.display()),
            },
            Err(_) => {}
        }
    }
}

/// Stops clusters left by test processes that died without tearing them
/// down (killed by a timeout, say), so they do not pile up.
fn reap_orphans(bin: &Path) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if !path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("migrate-test-"))
        {
            continue;
        }
        let Ok(pid) = std::fs::read_to_string(path.join("owner.pid")) else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.trim()).exists();
        if !alive {
            let _ = as_postgres(bin, "pg_ctl")
                .arg("-D")
                .arg(path.join("data"))
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

impl Cluster {
    /// Stops the server (`fast`, or `immediate`: a crash that recovery must
    /// repair) and starts it again with the options of its last start.
    pub fn restart(&self, mode: &str) {
        let Some(dir) = &self.dir else {
            panic!("a server the tests did not start cannot be restarted");
        };
        check(
            as_postgres(&self.bin, "pg_ctl")
                .args(["-w", "-t", "120", "-D"])
                .arg(dir.path().join("data"))
                .args(["-m", mode, "-l"])
                .arg(dir.path().join("server.log"))
                .arg("restart")
                .stdout(Stdio::null())
                .output()
                .expect("pg_ctl runs"),
            "pg_ctl restart",
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            if std::thread::panicking() {
                // A failing test shows what the server said of a deadlock:
                // both sessions' statements, which the client never sees.
                if let Ok(log) = std::fs::read_to_string(dir.path().join("server.log")) {
                    let lines: Vec<&str> = log.lines().collect();
                    for (i, l) in lines.iter().enumerate() {
                        if l.contains("deadlock detected") {
                            eprintln!("server log:\n{}", lines[i..(i + 16).min(lines.len())].join("\n"));
                        }
                    }
                }
            }
            let _ = as_postgres(&self.bin, "pg_ctl")
                .args(["-D"])
                .arg(dir.path().join("data"))
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

#[derive(Clone)]
pub struct Db {
    pub url: String,
}

/// What a run of the binary printed and returned.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "migrate failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Db {
    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }

    pub async fn exec(&self, sql: &str) {
        self.client()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .get(0)
    }

    /// The relkind of a relation (`r` table, `p` partitioned, `v` view).
    pub async fn relkind(&self, rel: &str) -> Option<String> {
        self.scalar_str(&format!(
            "SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('{}'))",
            rel.replace('\'', "''")
        ))
        .await
    }

    pub async fn scalar_str(&self, sql: &str) -> Option<String> {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .get(0)
    }

    /// Writes a plan file and returns its path (kept in the given dir).
    pub fn plan_file(&self, dir: &Path, name: &str, yaml: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, yaml).unwrap();
        p
    }

    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_migrate"));
        c.args(args)
            .env("DATABASE_URL", &self.url)
            .env_remove("MIGRATE_FAILPOINT")
            .env("MIGRATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// Runs the binary to completion.
    pub async fn migrate(&self, args: &[&str]) -> Run {
        self.migrate_env(args, &[]).await
    }

    /// Runs the binary to completion, within `RUN_LIMIT`: a run that hangs
    /// (paused by itself, say, or waiting on a lock) fails its test with
    /// what the run printed and what the database was doing, instead of
    /// holding the suite until CI's time limit.
    pub async fn migrate_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        use tokio::io::AsyncReadExt;
        let mut child = self.command(args, env).spawn().expect("migrate runs");
        let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let stdout = tokio::spawn(async move {
            let mut b = Vec::new();
            let _ = out.read_to_end(&mut b).await;
            b
        });
        let stderr = tokio::spawn(async move {
            let mut b = Vec::new();
            let _ = err.read_to_end(&mut b).await;
            b
        });
        let limit = run_limit();
        let status = match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => status.expect("migrate runs"),
            Err(_) => {
                let _ = child.kill().await;
                let said = String::from_utf8_lossy(&stderr.await.unwrap_or_default()).into_owned();
                panic!(
                    "migrate {} did not finish within {} s\n--- it printed:\n{said}\n--- the database:\n{}",
                    args.join(" "),
                    limit.as_secs(),
                    self.diagnosis().await
                );
            }
        };
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout.await.unwrap_or_default()).into_owned(),
            stderr: String::from_utf8_lossy(&stderr.await.unwrap_or_default()).into_owned(),
        }
    }

    /// Where the migrations stand and what every session waits on, for a
    /// test that found a run hanging.
    async fn diagnosis(&self) -> String {
        let c = self.client().await;
        let mut lines = Vec::new();
        let queries = [
            "SELECT format('migration %s: %s %s, paused %s %s, last error %s', id, state, phase, paused, \
             coalesce(paused_reason, ''), coalesce(last_error, '')) FROM repartition.migrations",
            "SELECT format('session %s %s %s/%s blocked by %s: %s', pid, state, wait_event_type, wait_event, \
             pg_blocking_pids(pid), left(query, 200)) FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid()",
        ];
        for q in queries {
            match c.query(q, &[]).await {
                Ok(rows) => lines.extend(rows.iter().map(|r| r.get::<_, String>(0))),
                Err(e) => lines.push(format!("({})", workload::db_message(&e))),
            }
        }
        lines.join("\n")
    }

    /// Names of everything in the database outside the system schemas:
    /// relations, functions, schemas; for "nothing changed" and "nothing
    /// left behind" checks.
    pub async fn objects(&self) -> Vec<String> {
        let c = self.client().await;
        let rows = c
            .query(
                "SELECT n.nspname || '.' || c.relname || ':' || c.relkind::text || coalesce(' ' || array_to_string(c.reloptions, ','), '') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'repartition') \
                 UNION ALL SELECT n.nspname || '.' || p.proname || '()' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
                 UNION ALL SELECT 'constraint ' || conname || ' on ' || conrelid::regclass FROM pg_constraint WHERE connamespace = 'public'::regnamespace \
                 UNION ALL SELECT 'rule ' || rulename || ' on ' || ev_class::regclass FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class \
                   WHERE c.relnamespace = 'public'::regnamespace AND rulename <> '_RETURN' \
                 UNION ALL SELECT 'trigger ' || tgname || ' on ' || tgrelid::regclass FROM pg_trigger WHERE NOT tgisinternal \
                 ORDER BY 1",
                &[],
            )
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }
}

/// How long one run of the binary may take in a test (`MIGRATE_TEST_RUN_LIMIT`
/// seconds, 300 unless set): far above any run of the suite.
fn run_limit() -> std::time::Duration {
    let secs = std::env::var("MIGRATE_TEST_RUN_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    std::time::Duration::from_secs(secs)
}

/// A scratch directory for plan files.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("migrate-plans-").tempdir().unwrap()
}

/// The event-log schema of the tests, with a parent table whose deletes
/// cascade, a dependent view, an extra role with privileges and a comment.
pub const EVENT_SCHEMA: &str = "
DO $$ BEGIN CREATE ROLE app_rw; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE TABLE public.workflow_runs (id bigserial PRIMARY KEY, name text NOT NULL DEFAULT '');
CREATE TABLE public.workflow_events (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES public.workflow_runs (id) ON DELETE CASCADE,
    ts timestamptz NOT NULL DEFAULT now(),
    type text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}',
    n integer NOT NULL DEFAULT 0,
    note json,
    CHECK (n >= 0)
);
CREATE INDEX workflow_events_run_ts ON public.workflow_events (run_id, ts);
CREATE INDEX workflow_events_type ON public.workflow_events (type);
CREATE VIEW public.event_types AS SELECT type, count(*) AS events FROM public.workflow_events GROUP BY type;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.workflow_events TO app_rw;
COMMENT ON TABLE public.workflow_events IS 'the event log';
";

/// Seeds `runs` runs and `events` events spread over the last ~4 months.
pub async fn seed(db: &Db, runs: i64, events: i64) {
    db.exec(EVENT_SCHEMA).await;
    db.exec(&format!(
        "INSERT INTO workflow_runs (name) SELECT 'run ' || g FROM generate_series(1, {runs}) g;
         INSERT INTO workflow_events (run_id, ts, type, payload, n)
         SELECT 1 + (g % {runs}), now() - (g % 120) * interval '1 day' - (g % 1440) * interval '1 minute',
                't' || (g % 7), jsonb_build_object('g', g, 'pad', repeat('x', 100)), g % 100
         FROM generate_series(1, {events}) g;
         ANALYZE workflow_events;"
    ))
    .await;
}

pub fn event_plan(batch: u64, extra: &str) -> String {
    format!(
        "table: public.workflow_events
partition:
  by: range
  column: ts
  interval: month
  naming: \"{{table}}_y{{YYYY}}m{{MM}}\"
method: move
batch:
  size: {batch}
{extra}"
    )
}

/// Every row of the events table (through its name), in id order.
pub async fn all_events(db: &Db) -> Vec<(i64, i64, String, String, String, i32)> {
    let c = db.client().await;
    c.query(
        "SELECT id, run_id, ts::text, type, payload::text, n FROM public.workflow_events ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
    .collect()
}

/// Every field of a JSON document the tool printed, as docs/json.md names
/// it: dots between nested fields, `[]` for the elements of an array.
pub fn json_paths(doc: &serde_json::Value) -> std::collections::BTreeSet<String> {
    fn walk(v: &serde_json::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.insert(path.clone());
                    walk(child, &path, out);
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    walk(item, &format!("{prefix}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(doc, "", &mut out);
    out
}

/// Fails naming each field of `doc` that docs/json.md does not list.
pub fn assert_json_documented(doc: &serde_json::Value) {
    let page = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json.md")).unwrap();
    let missing: Vec<String> = json_paths(doc)
        .into_iter()
        .filter(|p| !page.contains(&format!("| `{p}` |")))
        .collect();
    let shown: String = doc.to_string().chars().take(2000).collect();
    assert!(missing.is_empty(), "docs/json.md does not list {missing:?} of {shown}");
}
