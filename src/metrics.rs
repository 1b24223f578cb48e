//! Metrics while a migration runs, for the dashboards a team already has:
//! an HTTP endpoint Prometheus scrapes (`--metrics-listen`) and a textfile
//! for node_exporter's collector (`--metrics-textfile`). Each scrape reads
//! the control table on a connection of its own, so the figures are those
//! `status` shows; the lock counters are this process's own
//! (`lock_counts`).

use crate::control;
use crate::report::metrics::{metrics_text, LastBatch, Scrape};
use anyhow::{Context as _, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio_postgres::Client;

/// Where the metrics go, from the command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub listen: Option<SocketAddr>,
    pub textfile: Option<PathBuf>,
}

/// How often the textfile is written.
const TEXTFILE_EVERY: Duration = Duration::from_secs(2);

/// The metrics of one table's migration, while a command runs it.
pub struct Exporter {
    source: Arc<Source>,
    textfile: Option<PathBuf>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A connection of the exporter's own, opened again after it fails.
struct Source {
    cfg: tokio_postgres::Config,
    table: String,
    client: Mutex<Option<Client>>,
}

impl Source {
    async fn render(&self) -> Result<String> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = Some(crate::db::connect(&self.cfg).await?);
        }
        let client = slot.as_ref().expect("connected above");
        let latest = control::latest(client, &self.table).await?;
        let (live, last_batch) = match &latest {
            Some(m) => (
                Some(crate::live::live(client, m).await?),
                control::last_batch(client, m.id)
                    .await?
                    .map(|(rows, seconds)| LastBatch { rows, seconds }),
            ),
            None => (None, None),
        };
        Ok(metrics_text(&Scrape {
            table: &self.table,
            migration: latest.as_ref().zip(live.as_ref()),
            last_batch,
            locks: crate::lock_counts::now(),
        }))
    }
}

impl Exporter {
    /// Starts what `opts` asks for; none when it asks for nothing. A
    /// listen address that cannot be bound is refused before the run.
    pub async fn start(cfg: &tokio_postgres::Config, opts: &Options, table: &str) -> Result<Option<Exporter>> {
        if opts.listen.is_none() && opts.textfile.is_none() {
            return Ok(None);
        }
        let source = Arc::new(Source {
            cfg: cfg.clone(),
            table: table.to_string(),
            client: Mutex::new(None),
        });
        let mut tasks = Vec::new();
        if let Some(addr) = opts.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| crate::error::Refusal::new(format!("cannot listen on {addr} for metrics: {e}")))?;
            tracing::info!(%addr, "serving metrics at http://{addr}/metrics");
            tasks.push(tokio::spawn(serve(listener, source.clone())));
        }
        if let Some(path) = &opts.textfile {
            let (source, path) = (source.clone(), path.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    if let Err(e) = write_textfile(&source, &path).await {
                        tracing::warn!("cannot write the metrics to {}: {e:#}", path.display());
                    }
                    tokio::time::sleep(TEXTFILE_EVERY).await;
                }
            }));
        }
        Ok(Some(Exporter {
            source,
            textfile: opts.textfile.clone(),
            tasks,
        }))
    }

    /// Stops serving; the textfile is written once more, with where the
    /// command left the migration.
    pub async fn finish(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(path) = &self.textfile {
            if let Err(e) = write_textfile(&self.source, path).await {
                tracing::warn!("cannot write the metrics to {}: {e:#}", path.display());
            }
        }
    }
}

/// Written beside the target and renamed over it, so that the collector
/// never reads half a file.
async fn write_textfile(source: &Source, path: &std::path::Path) -> Result<()> {
    let text = source.render().await?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    tokio::fs::write(&tmp, text).await.context("cannot write")?;
    tokio::fs::rename(&tmp, path).await.context("cannot rename")?;
    Ok(())
}

/// A minimal HTTP/1.1 server: `GET /metrics` (or `/`) answers the
/// exposition, anything else 404; one request per connection.
async fn serve(listener: tokio::net::TcpListener, source: Arc<Source>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            // The request line and headers; nothing more is read.
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
            let request = String::from_utf8_lossy(&buf);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, kind, body) = match (request.split_whitespace().next(), path) {
                (Some("GET"), "/metrics" | "/") => match source.render().await {
                    Ok(text) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text),
                    Err(e) => (
                        "503 Service Unavailable",
                        "text/plain; charset=utf-8",
                        format!("cannot read the control table: {e:#}\n"),
                    ),
                },
                _ => (
                    "404 Not Found",
                    "text/plain; charset=utf-8",
                    "GET /metrics\n".to_string(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
