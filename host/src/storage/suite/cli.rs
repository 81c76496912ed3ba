//! `berth plugin test FILE`: the suite against a plugin author's own storage driver, loaded as
//! `serve` would load it (the same sandbox, memory cap and deadline), with the config and the
//! directory grants given on the command line.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{run_case, CASES};
use crate::plugins::{DirGrant, PluginSpec};
use crate::storage::ComponentDriver;

/// What `berth plugin test` takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The storage-driver component (`.wasm`).
    pub file: PathBuf,
    /// One entry of the map the plugin's `init` receives (repeatable).
    #[arg(long = "config", value_name = "K=V", value_parser = parse_config_pair)]
    pub config: Vec<(String, String)>,
    /// A directory the plugin may use, seen inside it at GUEST (repeatable; created if missing;
    /// read-write unless `:ro`).
    #[arg(long = "grant", value_name = "HOST:GUEST[:ro|rw]", value_parser = parse_grant)]
    pub grants: Vec<DirGrant>,
    /// Warm instances serving calls in parallel (`instances` in the plugin's config). More than
    /// one only for a plugin that keeps no state in its instance.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub instances: u16,
    /// Memory cap per instance (`memory_mib`).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(2..=1024))]
    pub memory_mib: u16,
    /// Deadline per call (`deadline_ms`).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..))]
    pub deadline_ms: u64,
}

/// `K=V` of `--config`.
pub fn parse_config_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// `HOST:GUEST[:ro|rw]` of `--grant`, e.g. `./data:/data` or `/srv/blobs:/data:ro`.
pub fn parse_grant(s: &str) -> Result<DirGrant, String> {
    let (rest, read_only) = match s.rsplit_once(':') {
        Some((rest, "ro")) => (rest, true),
        Some((rest, "rw")) => (rest, false),
        _ => (s, false),
    };
    match rest.rsplit_once(':') {
        Some((host, guest)) if !host.is_empty() && guest.starts_with('/') => {
            Ok(DirGrant { host: PathBuf::from(host), guest: guest.to_string(), read_only })
        }
        _ => Err(format!("{s:?} is not HOST:GUEST[:ro|rw] with an absolute GUEST path, e.g. ./data:/data")),
    }
}

/// Loads the plugin and runs every case on it, writing `ok name (12 ms)` or
/// `FAILED name: why` per case and a summary to `out`. `Ok(true)` if every case passed; `Err`
/// if the plugin could not be loaded at all.
pub async fn run(options: Options, out: &mut dyn Write) -> Result<bool, String> {
    for g in &options.grants {
        std::fs::create_dir_all(&g.host).map_err(|e| format!("--grant {}: {e}", g.host.display()))?;
    }
    let name = options.file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut spec = PluginSpec::new(name, options.file.clone());
    spec.deadline = Duration::from_millis(options.deadline_ms);
    spec.memory_bytes = usize::from(options.memory_mib) << 20;
    spec.instances = options.instances.into();
    spec.dirs = options.grants;
    spec.config = options.config;
    let driver = ComponentDriver::load(spec).await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut failed = 0;
    let io = |e: std::io::Error| format!("writing the report: {e}");
    for case in CASES {
        let outcome = run_case(&driver, case).await;
        match &outcome.result {
            Ok(()) => writeln!(out, "ok {} ({} ms)", case.name, outcome.elapsed.as_millis()).map_err(io)?,
            Err(why) => {
                failed += 1;
                writeln!(out, "FAILED {}: {why}", case.name).map_err(io)?;
            }
        }
    }
    writeln!(
        out,
        "{}: {} passed, {failed} failed ({:.1} s)",
        options.file.display(),
        CASES.len() - failed,
        started.elapsed().as_secs_f64()
    )
    .map_err(io)?;
    Ok(failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_and_config_pairs() {
        let g = parse_grant("./data:/data").unwrap();
        assert_eq!((g.host, g.guest.as_str(), g.read_only), (PathBuf::from("./data"), "/data", false));
        let g = parse_grant("/srv/x:/blobs:ro").unwrap();
        assert_eq!((g.host, g.guest.as_str(), g.read_only), (PathBuf::from("/srv/x"), "/blobs", true));
        assert!(!parse_grant("/a/b:/c:rw").unwrap().read_only);
        for bad in ["./data", "./data:data", ":/data", "./data:/data:xx"] {
            assert!(parse_grant(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_config_pair("root=/data").unwrap(), ("root".into(), "/data".into()));
        assert_eq!(parse_config_pair("k=a=b").unwrap(), ("k".into(), "a=b".into()));
        assert!(parse_config_pair("novalue").is_err() && parse_config_pair("=v").is_err());
    }
}
