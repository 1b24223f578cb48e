//! TLS as libpq users expect it: `sslmode` from the URL or PGSSLMODE,
//! `sslrootcert`, and a clear sentence when verification fails. The test
//! server accepts TCP connections over TLS only, so a working connection
//! proves TLS was used.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_connect_verify_and_refuse() {
    let (cluster, tls) = Cluster::start_tls();
    let db = cluster.database().await;
    seed(&db, 5, 100).await;
    let name = db
        .url
        .split_whitespace()
        .find_map(|p| p.strip_prefix("dbname="))
        .unwrap()
        .to_string();
    let dir = scratch();
    let plan = db.plan_file(dir.path(), "p.yaml", &event_plan(100, ""));
    let plan = plan.to_str().unwrap();
    let tcp = |extra: &str| Db {
        url: format!("postgres://postgres@127.0.0.1:{}/{name}{extra}", tls.port),
    };

    let run = tcp("?sslmode=require").migrate(&["plan", plan]).await;
    assert_eq!(run.code, 0, "require: {}", run.stderr);
    let run = tcp(&format!("?sslmode=verify-full&sslrootcert={}", tls.ca.display()))
        .migrate(&["plan", plan])
        .await;
    assert_eq!(run.code, 0, "verify-full: {}", run.stderr);
    let run = tcp("")
        .migrate_env(
            &["plan", plan],
            &[("PGSSLMODE", "verify-ca"), ("PGSSLROOTCERT", tls.ca.to_str().unwrap())],
        )
        .await;
    assert_eq!(run.code, 0, "verify-ca from the environment: {}", run.stderr);
    // The default, prefer, negotiates TLS when the server offers it.
    let run = tcp("").migrate(&["plan", plan]).await;
    assert_eq!(run.code, 0, "prefer: {}", run.stderr);

    let run = tcp(&format!("?sslmode=verify-full&sslrootcert={}", tls.other_ca.display()))
        .migrate(&["plan", plan])
        .await;
    assert_eq!(run.code, 1);
    let last = run.stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("migrate: cannot connect") && last.contains("certificate"),
        "{last}"
    );
    let run = tcp("?sslmode=disable").migrate(&["plan", plan]).await;
    assert_eq!(run.code, 1, "the server takes TLS only: {}", run.stderr);
    let run = tcp("?sslmode=sometimes").migrate(&["plan", plan]).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("sslmode `sometimes`"), "{}", run.stderr);
}
