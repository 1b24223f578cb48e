use clap::Parser;
use repartition::cli::{Cli, LogFormat};
use repartition::error::exit_code;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // With a progress bar on the terminal, only warnings are logged, so
    // that log lines do not tear the bar.
    init_tracing(cli.log_format, repartition::progress::uses_bar(cli.quiet));
    let code = match repartition::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("migrate: {e:#}");
            exit_code(&e)
        }
    };
    std::process::exit(code);
}

fn init_tracing(format: LogFormat, bar: bool) {
    let default = if bar { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MIGRATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
