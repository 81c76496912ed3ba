//! Adapter for `admission-policy-plugin`: "may this write land?" asked of a plugin, over
//! `Pool<AdmissionKind>`. A failed call (trap, deadline, memory cap) is a `Failure`; whether it
//! denies or allows is the chain's decision (`crate::admission`), per plugin.

use std::sync::Arc;

use super::wit::latest::admission::exports::berth::plugin::admission_policy as wit;
use super::wit::latest::types::RequestInfo;
use super::{AdmissionKind, Failure, Swap};

pub use wit::{Entry, Identity, Manifest, ManifestDelete, ManifestPut, UploadStart, Verdict, Write};

/// An `admission-policy-plugin`.
pub struct PolicyPlugin(pub Arc<Swap<AdmissionKind>>);

impl PolicyPlugin {
    pub fn name(&self) -> String {
        self.0.current().name().to_string()
    }

    /// One `check` call on a warm instance.
    pub async fn check(
        &self,
        write: Write,
        identity: Option<Identity>,
        request: RequestInfo,
    ) -> Result<Verdict, Failure> {
        let p = self.0.current();
        p.call("check", |i| {
            Box::pin(async move {
                i.bindings
                    .berth_plugin_admission_policy()
                    .call_check(&mut i.store, &write, identity.as_ref(), &request)
                    .await
            })
        })
        .await
    }
}
