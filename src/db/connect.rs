//! Connection settings: a URL or key=value string, then the libpq `PG*`
//! variables for whatever it leaves out, then libpq's defaults. Every
//! session is pinned to UTC and a fixed search path, so that bounds and
//! rendered definitions never depend on a server or role default.

use super::tls::{self, SslMode};
use anyhow::{Context, Result};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The TLS connector chosen by `config`, for every session of the run.
static TLS: OnceLock<MakeRustlsConnect> = OnceLock::new();

fn tls_connector() -> Result<MakeRustlsConnect> {
    match TLS.get() {
        Some(t) => Ok(t.clone()),
        None => tls::connector(SslMode::Prefer, None),
    }
}

/// The settings every session of the tool starts with; `repartition.tool`
/// silences the table's own triggers for the tool's writes where the
/// move method guards them (`method::shared::triggers`).
const SESSION_OPTIONS: &str =
    "-c TimeZone=UTC -c search_path=pg_catalog -c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=3 -c client_min_messages=warning -c repartition.tool=on";

/// tokio-postgres knows fewer sslmodes than libpq: those two settings are
/// taken out of the connection string (or the environment) and handled
/// here.
fn ssl_split(url: Option<&str>) -> Result<(Option<String>, SslMode, Option<String>)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (url, url_mode, url_root) = match url {
        Some(u) => {
            let (rest, m, r) = tls::split_ssl(u)?;
            (Some(rest), m, r)
        }
        None => (None, None, None),
    };
    let mode = SslMode::parse(&url_mode.or_else(|| env("PGSSLMODE")).unwrap_or_else(|| "prefer".into()))?;
    Ok((url, mode, url_root.or_else(|| env("PGSSLROOTCERT"))))
}

/// The TLS setting a connection string asks for (sslmode and root
/// certificate), to compare: the process has one TLS connector.
pub fn tls_setting(url: Option<&str>) -> Result<String> {
    let (_, mode, root) = ssl_split(url)?;
    Ok(format!("{mode:?} {}", root.unwrap_or_default()))
}

/// Builds the connection configuration.
pub fn config(url: Option<&str>, application_name: &str) -> Result<Config> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (url, mode, root) = ssl_split(url)?;
    let url = url.as_deref();
    let mut cfg = match url {
        Some(u) => Config::from_str(u).map_err(|e| {
            // The URL may hold a password: never echo it back.
            anyhow::anyhow!("the database URL is not valid: {}", redact(&e.to_string(), u))
        })?,
        None => Config::new(),
    };
    if cfg.get_hosts().is_empty() {
        match env("PGHOST") {
            Some(h) => {
                for host in h.split(',') {
                    cfg.host(host);
                }
            }
            None if std::path::Path::new("/var/run/postgresql").exists() => {
                cfg.host("/var/run/postgresql");
            }
            None => {
                cfg.host("localhost");
            }
        }
    }
    if cfg.get_ports().is_empty() {
        if let Some(p) = env("PGPORT") {
            let port: u16 = p
                .parse()
                .with_context(|| format!("PGPORT `{p}` is not a port number"))?;
            cfg.port(port);
        }
    }
    if cfg.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        cfg.user(&user);
    }
    if cfg.get_dbname().is_none() {
        let db = env("PGDATABASE").unwrap_or_else(|| cfg.get_user().unwrap_or("postgres").to_string());
        cfg.dbname(&db);
    }
    if cfg.get_password().is_none() {
        if let Some(p) = env("PGPASSWORD") {
            cfg.password(p);
        } else if let Some(file) = super::pgpass::read() {
            let host = match cfg.get_hosts().first() {
                Some(Host::Tcp(h)) => h.clone(),
                _ => "localhost".to_string(),
            };
            let port = cfg.get_ports().first().copied().unwrap_or(5432);
            let found = super::pgpass::lookup(
                &file,
                &host,
                port,
                cfg.get_dbname().unwrap_or_default(),
                cfg.get_user().unwrap_or_default(),
            );
            if let Some(p) = found {
                cfg.password(p);
            }
        }
    }
    if cfg.get_connect_timeout().is_none() {
        let secs = env("PGCONNECT_TIMEOUT").and_then(|s| s.parse().ok()).unwrap_or(10u64);
        cfg.connect_timeout(Duration::from_secs(secs.max(1)));
    }
    cfg.ssl_mode(mode.wire());
    let _ = TLS.set(tls::connector(mode, root.as_deref())?);
    let options = match cfg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} {SESSION_OPTIONS}"),
        _ => SESSION_OPTIONS.to_string(),
    };
    cfg.options(&options);
    cfg.application_name(application_name);
    Ok(cfg)
}

/// Removes the password of a URL from a message.
pub fn redact(msg: &str, url: &str) -> String {
    let mut out = msg.to_string();
    if let Some(pw) = url_password(url) {
        if !pw.is_empty() {
            out = out.replace(&pw, "***");
        }
    }
    out
}

fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    Some(userinfo.split_once(':')?.1.to_string())
}

/// A short description of where the tool connects, without secrets.
pub fn describe(cfg: &Config) -> String {
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "database {} on {host}:{port} as {}",
        cfg.get_dbname().unwrap_or("?"),
        cfg.get_user().unwrap_or("?")
    )
}

/// Opens one session and drives its connection in the background.
pub async fn connect(cfg: &Config) -> Result<Client> {
    let (client, connection) = cfg
        .connect(tls_connector()?)
        .await
        .with_context(|| format!("cannot connect to the {}", describe(cfg)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// A pool for worker sessions; the advisory lock never lives in it.
pub fn pool(cfg: &Config, size: usize) -> Result<deadpool_postgres::Pool> {
    let mgr = deadpool_postgres::Manager::from_config(
        cfg.clone(),
        tls_connector()?,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(mgr)
        .max_size(size)
        .build()
        .context("cannot set up the connection pool")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let url = "postgres://app:s3cret@db:5432/x";
        assert_eq!(url_password(url).as_deref(), Some("s3cret"));
        assert_eq!(redact("bad s3cret thing", url), "bad *** thing");
    }

    #[test]
    fn sessions_are_pinned() {
        let cfg = config(
            Some("host=/tmp port=5 user=u dbname=d options='-c work_mem=64MB'"),
            "migrate",
        )
        .unwrap();
        let o = cfg.get_options().unwrap();
        assert!(o.contains("TimeZone=UTC") && o.contains("work_mem=64MB"));
        assert_eq!(cfg.get_application_name(), Some("migrate"));
    }
}
