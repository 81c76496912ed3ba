use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use berth::config::{Config, LogFormatter};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Delete blobs and manifests no tag reaches, while servers keep serving the same storage
    /// (distribution's `registry garbage-collect`, with its flags).
    GarbageCollect {
        /// Report what would be deleted; delete nothing.
        #[arg(long, short = 'd')]
        dry_run: bool,
        /// Also delete manifests no tag reaches (the children of a kept index stay).
        #[arg(long, short = 'm')]
        delete_untagged: bool,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// YAML configuration file (its storage and `gc.graceperiod` are used).
        config: PathBuf,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run the cleanup policies now, beside a running server or without one: each tag deleted
    /// (or that would be, with --dry-run) with the policy's reason. Garbage collection then
    /// frees the space.
    Cleanup {
        /// Only repositories matching this glob (`*` within a path component, `**` across).
        #[arg(long)]
        repo: Option<String>,
        /// Show what would be deleted; delete nothing.
        #[arg(long, short = 'd')]
        dry_run: bool,
        /// Only this policy (even if it is not enabled); default: every enabled policy.
        #[arg(long)]
        policy: Option<String>,
        /// The configuration file the server uses.
        config: PathBuf,
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
    /// Run the storage driver suite against a storage-driver plugin: one line per case, exit
    /// status 0 only if every case passed.
    Test(berth::storage::suite::cli::Options),
    /// Measure a storage-driver plugin that needs no grants (e.g. storage-memory): a fresh
    /// instance from `InstancePre` (store, instantiate, init) and a trivial call on a warm one.
    Bench {
        file: PathBuf,
        #[arg(long, default_value_t = 2000)]
        iterations: u32,
    },
    /// Measure an admission-policy plugin: first load (compile), load from the cache, a fresh
    /// instance, and warm `check` calls (p50, p99) with a sample manifest push.
    BenchAdmission {
        file: PathBuf,
        /// `key=value` for the plugin's `init`, repeatable.
        #[arg(long = "config")]
        config: Vec<String>,
        #[arg(long, default_value_t = 5000)]
        iterations: u32,
    },
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
        Command::Cleanup { repo, dry_run, policy, config } => cleanup(&config, repo.as_deref(), dry_run, policy),
        Command::GarbageCollect { dry_run, delete_untagged, json, config } => {
            garbage_collect(config, dry_run, delete_untagged, json)
        }
        Command::Plugin { command: PluginCommand::Bench { file, iterations } } => plugin_bench(file, iterations),
        Command::Plugin { command: PluginCommand::Test(options) } => plugin_test(options),
        Command::Plugin { command: PluginCommand::BenchAdmission { file, config, iterations } } => {
            bench_admission(file, config, iterations)
        }
        Command::Plugin { command: PluginCommand::Check { file } } => match berth::plugins::check_file(&file) {
            Ok(loaded) => {
                let served = if loaded.world.served() { "" } else { "; this Berth does not run this kind yet" };
                let stateless = if loaded.stateless { ", stateless" } else { "" };
                println!(
                    "{}: {} (berth:plugin@{}{stateless}; links: ok{served})",
                    file.display(),
                    loaded.world.name(),
                    loaded.version
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error [{}]: {e}", e.kind());
                ExitCode::FAILURE
            }
        },
        Command::Config { command: ConfigCommand::Check { file } } => match Config::check(&file, std::env::vars()) {
            Ok(loaded) => {
                for k in &loaded.unknown_keys {
                    println!("warning: {k}: unknown key, ignored");
                }
                // The files the configuration names must load too, as `serve` would load them.
                let mut problems: Vec<String> = match &loaded.config.http.tls {
                    Some(tls) => berth::tls::server_config(tls).err().unwrap_or_default(),
                    None => Vec::new(),
                }
                .into_iter()
                .map(|e| e.to_string())
                .collect();
                problems.extend(check_plugins(&loaded.config));
                problems.extend(berth::auth::check(&loaded.config).err().map(|e| e.to_string()));
                for name in berth::server::unused_plugins(&loaded.config) {
                    println!("warning: plugins.{name}: configured but nothing uses it; it will not be loaded");
                }
                for e in &problems {
                    eprintln!("error: {e}");
                }
                if !problems.is_empty() {
                    return ExitCode::FAILURE;
                }
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for e in &problems {
                    eprintln!("error: {e}");
                }
                ExitCode::FAILURE
            }
        },
    }
}

/// `berth cleanup`: exit 0 when every repository was handled, 1 when one failed (its line says
/// why), 2 when nothing could run.
fn cleanup(config_path: &std::path::Path, repo: Option<&str>, dry_run: bool, policy: Option<String>) -> ExitCode {
    let config = match Config::load(Some(config_path), std::env::vars()) {
        Ok(l) => l.config,
        Err(e) => {
            eprintln!("berth: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    init_tool_logging();
    let mut options = berth::cleanup::Options { dry_run, policy, ..Default::default() };
    if let Some(glob) = repo {
        options = match options.only_repositories(glob) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("berth: --repo {glob}: {e}");
                return ExitCode::from(2);
            }
        };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async move {
        let cleanup = match berth::cleanup::Cleanup::from_config(&config) {
            Ok(c) if c.is_empty() => {
                eprintln!("berth: {}: no cleanup policies are configured (cleanup.policies)", config_path.display());
                return ExitCode::from(2);
            }
            Ok(c) => c,
            Err(e) => {
                eprintln!("berth: {e}");
                return ExitCode::from(2);
            }
        };
        let registry = match berth::server::open_registry(&config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("berth: cannot open storage: {e}");
                return ExitCode::from(2);
            }
        };
        match cleanup.run(&registry, &options).await {
            Ok(mut report) => {
                match berth::cleanup::gc_would_free(&registry, &report).await {
                    Ok(bytes) => report.gc_would_free = Some(bytes),
                    Err(e) => eprintln!("berth: cannot estimate what garbage collection would free: {e}"),
                }
                println!("{report}");
                if report.failed_repositories == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("berth: {e}");
                ExitCode::from(2)
            }
        }
    })
}

/// Warnings and errors of a one-off command on stderr (`RUST_LOG` for more).
fn init_tool_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
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
    let tls = match config.http.tls.as_ref().map(berth::tls::acceptor).transpose() {
        Ok(t) => t,
        Err(problems) => {
            for e in problems {
                eprintln!("berth: invalid configuration: {e}");
            }
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config.log.level.as_str()));
    // Colour only for a person at a terminal: in a file or a pipe the escape codes are noise.
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log.formatter {
        LogFormatter::Text => fmt.init(),
        // One object a line; the request span (id, method, path) rides along in `span`.
        LogFormatter::Json => fmt.json().with_current_span(true).with_span_list(false).init(),
    }
    for k in &loaded.unknown_keys {
        tracing::warn!(key = %k, "unknown configuration key ignored");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async move {
        let app = match berth::server::build_with_plugins(&config, config_path).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
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
        if let Some(debug_config) = config.http.debug.clone() {
            let listener = match tokio::net::TcpListener::bind(debug_config.addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(addr = %debug_config.addr, error = %e, "http.debug.addr: cannot listen");
                    return ExitCode::FAILURE;
                }
            };
            let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
            tracing::info!(%addr, "debug server listening");
            tokio::spawn(berth::debug::serve(app.clone(), debug_config, listener));
        }
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, scheme, driver = app.registry.driver().name(), read_only = app.options.read_only, "berth listening");
        let limits = berth::server::ConnectionLimits::from_config(&config.http);
        let events = app.events().cloned();
        berth::server::serve(app, listener, tls, limits, berth::server::shutdown_signal()).await;
        // Pull events and cursors waiting for the next sync are written before exit.
        if let Some(e) = events {
            e.close();
        }
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// `berth garbage-collect`: one run against the configured storage; exit status 0 when it
/// completed, 1 when it failed or another run holds the lock, 2 for a bad configuration.
fn garbage_collect(config_path: PathBuf, dry_run: bool, delete_untagged: bool, json: bool) -> ExitCode {
    let config = match Config::load(Some(&config_path), std::env::vars()) {
        Ok(l) => l.config,
        Err(e) => {
            eprintln!("berth: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    init_tool_logging();
    let opts = berth::gc::Options { dry_run, delete_untagged, grace: config.gc.graceperiod, ..Default::default() };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async move {
        let registry = match berth::server::open_registry(&config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("berth: cannot open storage: {e}");
                return ExitCode::FAILURE;
            }
        };
        // A bar for a person at a terminal; nothing in a pipe or a cron mail.
        let progress: Box<dyn berth::gc::Progress> =
            if std::io::stdout().is_terminal() { Box::new(berth::gc::Bar::new()) } else { Box::new(berth::gc::Quiet) };
        match berth::gc::run(&registry, &opts, None, &*progress).await {
            Ok(r) => {
                if json {
                    println!("{}", serde_json::to_string(&r).expect("a report serializes"));
                } else {
                    let what = if r.dry_run { "eligible for deletion" } else { "deleted" };
                    println!("{} blobs marked, {} manifests marked", r.blobs_marked, r.manifests_marked);
                    println!(
                        "{} blobs and {} manifests {what} ({} bytes), {} layer links and {} referrers entries",
                        r.blobs_swept, r.manifests_swept, r.bytes_freed, r.layer_links_swept, r.referrers_swept
                    );
                    println!(
                        "kept: {} written within the grace period, {} in use by writes during the run; {} errors; {:.2} s",
                        r.kept_recent, r.kept_in_use, r.errors, r.duration_seconds
                    );
                }
                if r.errors > 0 {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("berth: garbage collection: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// glibc gives every thread that allocates its own arena, each keeping freed blob buffers for
/// reuse; two arenas keep the resident set small with no measurable cost on the hot paths.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // A fixed threshold: blocks of 1 MiB and more (manifest bodies, large buffers) are
        // mapped for themselves and unmapped when freed. glibc's default threshold rises to the
        // size of the largest block freed (up to 32 MiB), after which 8 MiB manifest bodies
        // come from the arena and their memory stays with the process after a load is over.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Loads and link-checks every plugin the configuration uses, as `serve` would (without
/// instantiating it): a bad pin, a missing file or a plugin of the wrong world is an error
/// naming its key.
fn check_plugins(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    for (role, name, world) in berth::server::used_plugins(config) {
        let Some(p) = config.plugins.entries.get(&name) else { continue };
        if let Err(e) = berth::plugins::loader::check(&p.path, p.sha256.as_deref(), Some(world)) {
            problems.push(format!("plugins.{name} (the {role} plugin): {e}"));
        }
    }
    problems
}

/// `berth plugin test`: the plugin's own log lines and failures go to stderr, the report to
/// stdout.
fn plugin_test(options: berth::storage::suite::cli::Options) -> ExitCode {
    init_tool_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(berth::storage::suite::cli::run(options, &mut std::io::stdout())) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn plugin_bench(file: PathBuf, iterations: u32) -> ExitCode {
    use std::time::Instant;

    use berth::plugins::PluginSpec;
    use berth::storage::{ComponentDriver, StorageDriver};

    let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let spec = PluginSpec::new(name, file);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async move {
        let driver = match ComponentDriver::load(spec).await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let plugin = driver.plugin();
        // Warm up: compile caches, the pooling allocator's slots, the first call.
        for _ in 0..50 {
            let _ = plugin.instantiate().await;
            let _ = driver.stat("/warm-up").await;
        }
        let t = Instant::now();
        for _ in 0..iterations {
            if let Err(e) = plugin.instantiate().await {
                eprintln!("error: instantiate: {e}");
                return ExitCode::FAILURE;
            }
        }
        let instantiate = t.elapsed() / iterations;
        let calls = iterations * 10;
        let t = Instant::now();
        for _ in 0..calls {
            if driver.stat("/bench/not-there").await.is_ok() {
                eprintln!("error: stat of a missing path succeeded");
                return ExitCode::FAILURE;
            }
        }
        let call = t.elapsed() / calls;
        println!("instantiate_us {:.1}", instantiate.as_secs_f64() * 1e6);
        println!("call_us {:.2}", call.as_secs_f64() * 1e6);
        ExitCode::SUCCESS
    })
}

fn bench_admission(file: PathBuf, config: Vec<String>, iterations: u32) -> ExitCode {
    let config = config.iter().map(|kv| kv.split_once('=').unwrap_or((kv, ""))).map(|(k, v)| (k.into(), v.into()));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(berth::admission::bench::run(&file, config.collect(), iterations.max(1))) {
        Ok(f) => {
            println!("first_load_ms {:.1}", f.first_load.as_secs_f64() * 1e3);
            println!("cached_load_ms {:.1}", f.cached_load.as_secs_f64() * 1e3);
            println!("instantiate_us {:.1}", f.instantiate.as_secs_f64() * 1e6);
            println!("call_p50_us {:.2}", f.call_p50.as_secs_f64() * 1e6);
            println!("call_p99_us {:.2}", f.call_p99.as_secs_f64() * 1e6);
            println!("allowed {}", f.allowed);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
