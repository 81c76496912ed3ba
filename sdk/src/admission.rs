//! Admission policies: "may this write land?". The host calls [`AdmissionPolicy::check`] before
//! a manifest or tag `PUT`, a tag or manifest `DELETE`, or an upload that declares its size;
//! a [`Verdict::Deny`] is answered `403 DENIED` with its message and nothing is written.
//!
//! ```ignore
//! use berth_plugin_sdk::admission::{AdmissionPolicy, Identity, Verdict, Write};
//! use berth_plugin_sdk::{Config, InitError, RequestInfo};
//!
//! struct NoLatest;
//! impl AdmissionPolicy for NoLatest {
//!     fn init(_: Config) -> Result<Self, InitError> { Ok(NoLatest) }
//!     fn check(&self, write: Write, _: Option<&Identity>, _: &RequestInfo) -> Verdict {
//!         match write {
//!             Write::ManifestPut(p) if p.tag.as_deref() == Some("latest") => Verdict::Deny("no latest".into()),
//!             _ => Verdict::Allow,
//!         }
//!     }
//! }
//! berth_plugin_sdk::export_admission_policy!(NoLatest);
//! ```

pub use crate::bindings::admission::exports::berth::plugin::admission_policy::{
    Entry, Identity, Manifest, ManifestDelete, ManifestPut, UploadStart, Verdict, Write,
};
pub use crate::{Config, InitError, RequestInfo};

/// An admission policy.
pub trait AdmissionPolicy: Sized + 'static {
    /// Builds the policy from its `config` map in Berth's configuration.
    fn init(config: Config) -> Result<Self, InitError>;

    /// Allow the write, or deny it with a message the client sees. A panic denies it too (the
    /// host fails closed unless the site configured this plugin to fail open).
    fn check(&self, write: Write, identity: Option<&Identity>, request: &RequestInfo) -> Verdict;
}

/// Exports an [`AdmissionPolicy`] (world `admission-policy-plugin`). Use once, at the crate root.
#[macro_export]
macro_rules! export_admission_policy {
    ($policy:ty) => {
        const _: () = {
            type __BerthAdmissionPolicyExport = $crate::__private::AdmissionAdapter<$policy>;
            $crate::bindings::lifecycle::__export_lifecycle!(
                __BerthAdmissionPolicyExport with_types_in $crate::bindings::lifecycle
            );
            $crate::bindings::admission::__export_admission_policy!(
                __BerthAdmissionPolicyExport with_types_in $crate::bindings::admission
            );
        };
    };
}
