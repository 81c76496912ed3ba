use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use berth::config::Config;

#[derive(Parser)]
#[command(name = "berth", version, about = "An OCI container registry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry (defaults: 127.0.0.1:5000, filesystem storage under ./data).
    Serve {
        /// YAML configuration file (keys follow distribution's config.yml).
        #[arg(long, short, env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// WebAssembly plugin tools.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Report which Berth plugin world a component implements and whether it links.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and print each problem with its key.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Plugin { command: PluginCommand::Check { file } } => match berth::plugins::check_file(&file) {
            Ok(world) => {
                println!("{}: {} (links: ok)", file.display(), world.name());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Config { command: ConfigCommand::Check { file } } => match Config::load(Some(&file), std::env::vars()) {
            Ok(loaded) => {
                for k in &loaded.unknown_keys {
                    println!("warning: {k}: unknown key, ignored");
                }
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    let loaded = match Config::load(config_path.as_deref(), std::env::vars()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let config = loaded.config;
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config.log.level.as_str()));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    for k in &loaded.unknown_keys {
        tracing::warn!(key = %k, "unknown configuration key ignored");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async move {
        let app = match berth::server::build_with_plugins(&config, config_path).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "cannot open storage");
                return ExitCode::FAILURE;
            }
        };
        berth::server::spawn_sighup_reload(app.clone());
        let listener = match tokio::net::TcpListener::bind(config.http.addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(addr = %config.http.addr, error = %e, "http.addr: cannot listen");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(%addr, driver = app.registry.driver().name(), read_only = app.options.read_only, "berth listening");
        berth::server::serve(app, listener, berth::server::shutdown_signal()).await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// glibc gives every thread that allocates its own arena, each keeping freed blob buffers for
/// reuse; two arenas keep the resident set small with no measurable cost on the hot paths.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
