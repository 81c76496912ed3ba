//! Every limit the plugin runtime puts on a guest, in one place, each with the threat it
//! answers. A plugin is untrusted code: these are what keep a buggy or hostile one from taking
//! the host (or other plugins) down with it.
//!
//! JavaScript (componentize-js: StarlingMonkey) and Python (componentize-py: CPython) components
//! carry their engine: 12 and 18 MB of code, and a heap snapshot taken at build time that each
//! instance starts from. Both run their policies within the default 64 MiB cap (`memorymib`), so
//! no default is raised for them: a larger cap would only give a hostile script more room before
//! it is stopped (a memory bomb in Python is stopped at the cap like any other). Their cost is in
//! compiling (tens of seconds), paid once per file into the component cache, and in a fresh
//! instance (1-5 ms from the snapshot, no interpreter boot), paid once per warm instance.
//! Per-store limits (`STORE_*`) and the pooling allocator's already admit their several core
//! instances and tables sharing one memory.

use std::time::Duration;

/// How often the epoch ticker advances the engine's epoch: the granularity of call deadlines,
/// and how long a guest runs before it yields to the executor.
/// Threat: a guest that never returns (`loop {}`) holds its instance, the request, and (if it
/// never yielded) a worker thread of the runtime with every task queued behind it; at each
/// tick it yields, and at the first tick past its deadline it traps.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Host-side slack on top of the epoch deadline before a host timer gives up on a call.
/// Threat: a guest blocked in a host call (a WASI read on a stalled socket) is not interrupted
/// by epochs, which only fire in guest code; the timer still ends the request.
pub const HOST_TIMER_SLACK: Duration = Duration::from_millis(500);

/// Live instances across all plugins, each its own store; bounded by the pooling allocator.
/// Threat: a pool growing on demand (stateless plugins) under a flood of slow requests would
/// otherwise reserve address space and memory without bound.
pub const MAX_INSTANCES: u32 = 256;

/// The largest linear memory any plugin may be configured for (the pooling slot size).
/// Threat: one plugin's configuration reserving more of the host than it can spare.
pub const MAX_MEMORY_BYTES: u64 = 1 << 30;

/// How much of a reused memory or table slot is kept resident and reset by memset rather than
/// returned to the kernel. Protects instantiation time (no page faults on a new instance's
/// first pages); costs at most this much resident memory per slot that has been used.
pub const KEEP_RESIDENT_BYTES: usize = 128 << 10;

/// Instances a stateless plugin's pool may grow to when every warm one is busy, unless its
/// configuration says otherwise. Threat: a stuck call in one instance makes every other
/// request wait for the deadline; extra instances serve them, but each may use `memorymib`.
pub const DEFAULT_MAX_INSTANCES: usize = 8;

/// Per-store bounds on what a guest may create besides its memory: component and core
/// instances, memories, tables and table elements. Threat: a component that instantiates or
/// grows tables in a loop to exhaust host memory outside the linear-memory cap.
pub const STORE_INSTANCES: usize = 64;
pub const STORE_MEMORIES: usize = 16;
pub const STORE_TABLES: usize = 64;
pub const STORE_TABLE_ELEMENTS: usize = 1 << 20;

/// Longest log line (characters) a plugin may push into the host's log, through `host.log` or
/// its stderr. Threat: a guest flooding the host's log with one enormous line.
pub const LOG_LINE_MAX: usize = 4096;

/// Bytes of a guest's stderr kept while waiting for the end of a line. Threat: output without
/// newlines growing a host buffer without bound.
pub const STDERR_BUFFER_MAX: usize = 16 << 10;
