//! The plugin kinds Berth knows, one WIT world each, and `Kind`: the few lines that connect a
//! world's generated bindings to the generic pool (how to pre-link, instantiate and `init`).
//! A kind's adapter (the storage driver, the retention policy) is then written against
//! `Pool<K>` alone.

use futures_util::future::BoxFuture;
use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::wit::latest::{self as bindings, types::InitError};
use super::State;

/// The plugin kinds, one WIT world each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    StorageDriver,
    AuthPolicy,
    NotificationSink,
    CleanupPolicy,
    AdmissionPolicy,
}

impl World {
    pub const ALL: [World; 5] = [
        World::StorageDriver,
        World::AuthPolicy,
        World::NotificationSink,
        World::CleanupPolicy,
        World::AdmissionPolicy,
    ];

    /// The world's name in `wit/`.
    pub fn name(self) -> &'static str {
        match self {
            World::StorageDriver => "storage-driver-plugin",
            World::AuthPolicy => "auth-policy-plugin",
            World::NotificationSink => "notification-sink-plugin",
            World::CleanupPolicy => "cleanup-policy-plugin",
            World::AdmissionPolicy => "admission-policy-plugin",
        }
    }

    /// The interface the world exports besides `lifecycle`.
    pub fn interface(self) -> &'static str {
        match self {
            World::StorageDriver => "storage-driver",
            World::AuthPolicy => "auth-policy",
            World::NotificationSink => "notification-sink",
            World::CleanupPolicy => "cleanup-policy",
            World::AdmissionPolicy => "admission-policy",
        }
    }

    /// Whether the host serves this kind yet (the others are recognised and link-checked).
    pub fn served(self) -> bool {
        matches!(
            self,
            World::StorageDriver
                | World::AuthPolicy
                | World::NotificationSink
                | World::CleanupPolicy
                | World::AdmissionPolicy
        )
    }

    /// Checks that a pre-linked component has this world's exports with the right types.
    pub fn check(self, pre: InstancePre<State>) -> wasmtime::Result<()> {
        match self {
            World::StorageDriver => StorageKind::pre(pre).map(drop),
            World::AuthPolicy => AuthKind::pre(pre).map(drop),
            World::NotificationSink => NotificationKind::pre(pre).map(drop),
            World::CleanupPolicy => CleanupKind::pre(pre).map(drop),
            World::AdmissionPolicy => AdmissionKind::pre(pre).map(drop),
        }
    }
}

/// The glue between the generic pool and one world's generated bindings.
pub trait Kind: Send + Sync + 'static {
    const WORLD: World;
    /// The world's pre-linked component (`<World>Pre`).
    type Pre: Send + Sync + 'static;
    /// The world's bindings to one instance.
    type Bindings: Send + 'static;

    fn pre(pre: InstancePre<State>) -> wasmtime::Result<Self::Pre>;

    fn instantiate<'a>(
        pre: &'a Self::Pre,
        store: &'a mut Store<State>,
    ) -> BoxFuture<'a, wasmtime::Result<Self::Bindings>>;

    /// Calls the world's `lifecycle.init(config)`.
    fn init<'a>(
        bindings: &'a Self::Bindings,
        store: &'a mut Store<State>,
        config: &'a [(String, String)],
    ) -> BoxFuture<'a, wasmtime::Result<Result<(), InitError>>>;
}

/// Implements `Kind` for a world from its generated `Pre` and bindings types.
macro_rules! kind {
    ($(#[$doc:meta])* $kind:ident, $world:expr, $pre:ty, $bindings:ty) => {
        $(#[$doc])*
        pub struct $kind;

        impl Kind for $kind {
            const WORLD: World = $world;
            type Pre = $pre;
            type Bindings = $bindings;

            fn pre(pre: InstancePre<State>) -> wasmtime::Result<Self::Pre> {
                <$pre>::new(pre)
            }

            fn instantiate<'a>(
                pre: &'a Self::Pre,
                store: &'a mut Store<State>,
            ) -> BoxFuture<'a, wasmtime::Result<Self::Bindings>> {
                Box::pin(pre.instantiate_async(store))
            }

            fn init<'a>(
                bindings: &'a Self::Bindings,
                store: &'a mut Store<State>,
                config: &'a [(String, String)],
            ) -> BoxFuture<'a, wasmtime::Result<Result<(), InitError>>> {
                Box::pin(bindings.berth_plugin_lifecycle().call_init(store, config))
            }
        }
    };
}

kind!(
    /// `storage-driver-plugin`: adapted by `crate::storage::ComponentDriver`.
    StorageKind,
    World::StorageDriver,
    bindings::storage::StorageDriverPluginPre<State>,
    bindings::storage::StorageDriverPlugin
);
kind!(
    /// `auth-policy-plugin`: adapted by `super::auth::PolicyPlugin`.
    AuthKind,
    World::AuthPolicy,
    bindings::auth::AuthPolicyPluginPre<State>,
    bindings::auth::AuthPolicyPlugin
);
kind!(
    /// `notification-sink-plugin`: adapted by `crate::events::plugin_sink::PluginSink`.
    NotificationKind,
    World::NotificationSink,
    bindings::notification::NotificationSinkPluginPre<State>,
    bindings::notification::NotificationSinkPlugin
);
kind!(
    /// `cleanup-policy-plugin`: adapted by `super::cleanup::PolicyPlugin`.
    CleanupKind,
    World::CleanupPolicy,
    bindings::cleanup::CleanupPolicyPluginPre<State>,
    bindings::cleanup::CleanupPolicyPlugin
);
kind!(
    /// `admission-policy-plugin`: adapted by `super::admission::PolicyPlugin`.
    AdmissionKind,
    World::AdmissionPolicy,
    bindings::admission::AdmissionPolicyPluginPre<State>,
    bindings::admission::AdmissionPolicyPlugin
);
