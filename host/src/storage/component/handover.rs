//! Descriptors and streams a plugin hands over: taken out of its instance's table, checked
//! to be what they claim, and written the way the native driver writes.

use std::sync::Arc;

use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::OpenMode;

use super::{stream_error, StoragePlugin};
use crate::plugins::{Held, StorageKind};
use crate::storage::sink::Sink;
use crate::storage::Result;

/// Takes a resource the plugin handed over (a file descriptor, a stream) out of its instance's
/// table: the host owns it from here, and using it needs no lock on the instance.
pub(super) fn take_resource<T: 'static>(
    p: &StoragePlugin,
    held: &mut Held<'_, StorageKind>,
    r: Resource<T>,
    op: &str,
    path: &str,
) -> Result<T> {
    held.instance().store.data_mut().table().delete(r).map_err(|e| stream_error(p, op, path, e))
}

/// The OS file behind a descriptor a plugin handed over, if it is a regular file open for
/// `mode` (the plugin has no files but those in its granted directories).
pub(super) fn regular_file(d: Descriptor, mode: OpenMode) -> std::result::Result<Arc<std::fs::File>, String> {
    let Descriptor::File(f) = d else { return Err("the descriptor is a directory".into()) };
    let writing = mode.contains(OpenMode::WRITE);
    if !f.open_mode.contains(mode) || (writing && f.perms.write_not_permitted()) {
        return Err(format!("the file is not open for {}", if writing { "writing" } else { "reading" }));
    }
    match f.file.metadata() {
        Ok(m) if m.file_type().is_file() => Ok(f.file),
        Ok(_) => Err("the descriptor is not a regular file".into()),
        Err(e) => Err(format!("the descriptor cannot be inspected: {e}")),
    }
}

/// The native driver's upload sink on a plugin's file, positioned at `at`: the warm prefix
/// through the page cache (for the pull that follows a push), the rest straight to the device,
/// as the native driver writes.
pub(super) fn direct_sink(file: &std::fs::File, at: u64) -> std::io::Result<Sink> {
    use std::io::{Seek, SeekFrom};
    // A descriptor of our own (the plugin's copy was handed over): its offset and its direct
    // flag are ours to set.
    let mut own = file.try_clone()?;
    own.seek(SeekFrom::Start(at))?;
    Ok(Sink::new(own, at, super::super::DEFAULT_WARM_BYTES))
}
