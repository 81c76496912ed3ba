//! Host bindings for WIT package `berth:plugin@0.1.x`, frozen: one module per world. The
//! shared imports (`host`, `types`) are generated once, in `storage`, and reused by the other
//! worlds through `with`, so one `Linker` setup serves every plugin kind.
//!
//! When the package moves to an incompatible version, this module stays as it is (pointed at a
//! frozen copy of today's `wit/`), a `since_vX_Y_Z` module is added for the new one, and the
//! adapters convert this version's types into the latest, as Zed's `extension_host` does.

pub mod storage {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "storage-driver-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: { "wasi": wasmtime_wasi::p2::bindings },
    });
}

pub mod auth {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "auth-policy-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "berth:plugin/host": super::storage::berth::plugin::host,
            "berth:plugin/types": super::storage::berth::plugin::types,
        },
    });
}

pub mod notification {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "notification-sink-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "berth:plugin/host": super::storage::berth::plugin::host,
            "berth:plugin/types": super::storage::berth::plugin::types,
        },
    });
}

pub mod cleanup {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "cleanup-policy-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "berth:plugin/host": super::storage::berth::plugin::host,
            "berth:plugin/types": super::storage::berth::plugin::types,
        },
    });
}

pub mod admission {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "admission-policy-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "berth:plugin/host": super::storage::berth::plugin::host,
            "berth:plugin/types": super::storage::berth::plugin::types,
        },
    });
}

pub use self::storage::berth::plugin::{host, types};
