//! The process-wide wasmtime `Engine`: epoch interruption for deadlines, the pooling allocator
//! for cheap instantiation, and a ticker thread advancing the epoch.

use std::sync::OnceLock;

use wasmtime::Engine;

use super::limits::{EPOCH_TICK, KEEP_RESIDENT_BYTES, MAX_INSTANCES, MAX_MEMORY_BYTES};
use super::PluginError;

/// The engine, created on first use (pooling allocator if the system allows it, else
/// on-demand allocation).
pub fn engine() -> Result<&'static Engine, PluginError> {
    static ENGINE: OnceLock<Result<Engine, PluginError>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let engine = build(true).or_else(|e| {
                tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation");
                build(false)
            })?;
            let ticker = engine.weak();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => return,
                    }
                })
                .map_err(|e| PluginError::Engine { reason: format!("cannot start the epoch ticker: {e}") })?;
            Ok(engine)
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn build(pooling: bool) -> Result<Engine, PluginError> {
    let mut cfg = wasmtime::Config::new();
    cfg.wasm_component_model(true);
    cfg.epoch_interruption(true);
    cfg.cranelift_opt_level(wasmtime::OptLevel::Speed);
    // Functions compiled for one plugin are reused by the next (`function_cache`).
    cfg.enable_incremental_compilation(super::function_cache::store())
        .map_err(|e| PluginError::Engine { reason: format!("{e:#}") })?;
    if pooling {
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(MAX_INSTANCES)
            .total_core_instances(MAX_INSTANCES * 4)
            .total_memories(MAX_INSTANCES)
            .total_tables(MAX_INSTANCES * 4)
            .total_stacks(MAX_INSTANCES)
            .max_memory_size(MAX_MEMORY_BYTES as usize)
            // A slot reused for a new instance is reset with memset up to these sizes instead
            // of being handed back to the kernel: the next instance then takes no page faults
            // on its first pages (most of an instantiation's cost). Bounded: only slots in use
            // hold them.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES);
        cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&cfg).map_err(|e| PluginError::Engine { reason: format!("{e:#}") })
}
