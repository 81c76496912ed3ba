//! Glue the export macros expand to. Not part of the public API.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::rc::Rc;

use crate::bindings::admission::exports::berth::plugin::admission_policy as admission_wit;
use crate::bindings::auth::exports::berth::plugin::auth_policy as auth_wit;
use crate::bindings::cleanup::exports::berth::plugin::cleanup_policy as cleanup_wit;
use crate::bindings::lifecycle::exports::berth::plugin::lifecycle as lifecycle_wit;
use crate::bindings::notify::exports::berth::plugin::notification_sink as notify_wit;
use crate::bindings::storage::exports::berth::plugin::storage_driver as storage_wit;
use crate::storage::{Driver, Path, StorageError, Writer};
use crate::{admission, auth, cleanup, notify, Config, InitError};

thread_local! {
    /// The plugin value `init` built. A component instance is single-threaded and exports one
    /// plugin kind, so one slot serves every kind.
    static INSTANCE: RefCell<Option<Rc<dyn Any>>> = const { RefCell::new(None) };
}

fn install<T: 'static>(value: T) {
    INSTANCE.with(|slot| *slot.borrow_mut() = Some(Rc::new(value)));
}

/// The plugin value, if `init` succeeded. The slot is only borrowed to clone the `Rc`, so a
/// plugin method may itself call back into anything.
fn instance<T: 'static>() -> Option<Rc<T>> {
    INSTANCE.with(|slot| slot.borrow().clone()).and_then(|any| any.downcast::<T>().ok())
}

const NOT_INITIALISED: &str = "plugin not initialised (init was not called or failed)";

fn init_with<T: 'static>(
    config: Vec<(String, String)>,
    build: fn(Config) -> Result<T, InitError>,
) -> Result<(), InitError> {
    INSTANCE.with(|slot| *slot.borrow_mut() = None);
    install(build(Config::new(config))?);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// storage-driver

/// Implements the generated `lifecycle` and `storage-driver` traits for a [`Driver`].
pub struct StorageAdapter<D>(PhantomData<D>);

impl<D: Driver> lifecycle_wit::Guest for StorageAdapter<D> {
    fn init(config: Vec<(String, String)>) -> Result<(), InitError> {
        init_with::<D>(config, D::init)
    }
}

fn driver<D: Driver>() -> Result<Rc<D>, StorageError> {
    instance::<D>().ok_or_else(|| StorageError::Other(NOT_INITIALISED.into()))
}

impl<D: Driver> storage_wit::Guest for StorageAdapter<D> {
    type Writer = WriterAdapter<D::Writer>;

    fn get_content(path: String) -> Result<Vec<u8>, StorageError> {
        driver::<D>()?.get_content(&Path::parse(path)?)
    }

    fn put_content(path: String, content: Vec<u8>) -> Result<(), StorageError> {
        driver::<D>()?.put_content(&Path::parse(path)?, content)
    }

    fn open_file(path: String) -> Result<storage_wit::Descriptor, StorageError> {
        driver::<D>()?.open_file(&Path::parse(path)?)
    }

    fn open_reader(path: String, offset: u64) -> Result<storage_wit::InputStream, StorageError> {
        driver::<D>()?.open_reader(&Path::parse(path)?, offset)
    }

    fn open_writer(path: String, append: bool) -> Result<storage_wit::Writer, StorageError> {
        let w = driver::<D>()?.open_writer(&Path::parse(path)?, append)?;
        Ok(storage_wit::Writer::new(WriterAdapter::new(w)))
    }

    fn stat(path: String) -> Result<storage_wit::FileInfo, StorageError> {
        driver::<D>()?.stat(&Path::parse(path)?)
    }

    fn list(path: String, start_after: Option<String>, limit: u32) -> Result<storage_wit::ListPage, StorageError> {
        driver::<D>()?.list_page(&Path::parse(path)?, start_after.as_deref(), limit)
    }

    fn rename(source: String, destination: String) -> Result<(), StorageError> {
        let (from, to) = (Path::parse(source)?, Path::parse(destination)?);
        driver::<D>()?.rename(&from, &to)
    }

    fn delete(path: String) -> Result<(), StorageError> {
        driver::<D>()?.delete(&Path::parse(path)?)
    }

    fn redirect_url(path: String, ttl_seconds: u32) -> Result<Option<String>, StorageError> {
        driver::<D>()?.redirect_url(&Path::parse(path)?, ttl_seconds)
    }
}

/// The `writer` resource: a [`Writer`] plus the "exactly one commit or cancel" rule.
pub struct WriterAdapter<W> {
    writer: RefCell<W>,
    /// `Some("committed")` or `Some("cancelled")` once finished: only `size` still answers.
    finished: Cell<Option<&'static str>>,
}

impl<W: Writer> WriterAdapter<W> {
    fn new(writer: W) -> Self {
        WriterAdapter { writer: RefCell::new(writer), finished: Cell::new(None) }
    }

    fn open<R>(&self, f: impl FnOnce(&mut W) -> Result<R, StorageError>) -> Result<R, StorageError> {
        match self.finished.get() {
            None => f(&mut self.writer.borrow_mut()),
            Some(how) => Err(StorageError::Other(format!("writer already {how}"))),
        }
    }

    fn finish(
        &self,
        how: &'static str,
        f: impl FnOnce(&mut W) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let result = self.open(f);
        if self.finished.get().is_none() {
            self.finished.set(Some(how));
        }
        result
    }
}

impl<W: Writer> storage_wit::GuestWriter for WriterAdapter<W> {
    fn file(&self) -> Result<storage_wit::Descriptor, StorageError> {
        self.open(W::file)
    }

    fn body(&self) -> Result<storage_wit::OutputStream, StorageError> {
        self.open(W::body)
    }

    fn write(&self, chunk: Vec<u8>) -> Result<(), StorageError> {
        self.open(|w| w.write(chunk))
    }

    fn size(&self) -> u64 {
        self.writer.borrow_mut().size()
    }

    fn commit(&self) -> Result<(), StorageError> {
        self.finish("committed", W::commit)
    }

    fn cancel(&self) -> Result<(), StorageError> {
        self.finish("cancelled", W::cancel)
    }
}

// ---------------------------------------------------------------------------------------------
// auth-policy

/// Implements the generated `lifecycle` and `auth-policy` traits for an [`auth::AuthPolicy`].
pub struct AuthAdapter<P>(PhantomData<P>);

impl<P: auth::AuthPolicy> lifecycle_wit::Guest for AuthAdapter<P> {
    fn init(config: Vec<(String, String)>) -> Result<(), InitError> {
        init_with::<P>(config, P::init)
    }
}

impl<P: auth::AuthPolicy> auth_wit::Guest for AuthAdapter<P> {
    fn authorize(
        credentials: auth::Credentials,
        requested: Vec<auth::Scope>,
        request: crate::RequestInfo,
    ) -> Result<auth::Decision, String> {
        instance::<P>().ok_or_else(|| NOT_INITIALISED.to_string())?.authorize(credentials, requested, request)
    }
}

// ---------------------------------------------------------------------------------------------
// notification-sink

/// Implements the generated `lifecycle` and `notification-sink` traits for a
/// [`notify::NotificationSink`].
pub struct NotifyAdapter<S>(PhantomData<S>);

impl<S: notify::NotificationSink> lifecycle_wit::Guest for NotifyAdapter<S> {
    fn init(config: Vec<(String, String)>) -> Result<(), InitError> {
        init_with::<S>(config, S::init)
    }
}

impl<S: notify::NotificationSink> notify_wit::Guest for NotifyAdapter<S> {
    fn deliver(events: Vec<notify::Event>) -> Result<(), notify::SinkError> {
        instance::<S>().ok_or_else(|| notify::SinkError::Fatal(NOT_INITIALISED.into()))?.deliver(events)
    }
}

// ---------------------------------------------------------------------------------------------
// cleanup-policy

/// Implements the generated `lifecycle` and `cleanup-policy` traits for a
/// [`cleanup::CleanupPolicy`].
pub struct CleanupAdapter<P>(PhantomData<P>);

impl<P: cleanup::CleanupPolicy> lifecycle_wit::Guest for CleanupAdapter<P> {
    fn init(config: Vec<(String, String)>) -> Result<(), InitError> {
        init_with::<P>(config, P::init)
    }
}

impl<P: cleanup::CleanupPolicy> cleanup_wit::Guest for CleanupAdapter<P> {
    fn plan(snapshot: cleanup::Snapshot) -> Result<Vec<cleanup::Deletion>, String> {
        instance::<P>().ok_or_else(|| NOT_INITIALISED.to_string())?.plan(snapshot)
    }
}

// ---------------------------------------------------------------------------------------------
// admission-policy

/// Implements the generated `lifecycle` and `admission-policy` traits for a
/// [`admission::AdmissionPolicy`].
pub struct AdmissionAdapter<P>(PhantomData<P>);

impl<P: admission::AdmissionPolicy> lifecycle_wit::Guest for AdmissionAdapter<P> {
    fn init(config: Vec<(String, String)>) -> Result<(), InitError> {
        init_with::<P>(config, P::init)
    }
}

impl<P: admission::AdmissionPolicy> admission_wit::Guest for AdmissionAdapter<P> {
    fn check(
        write: admission::Write,
        identity: Option<admission::Identity>,
        request: crate::RequestInfo,
    ) -> admission::Verdict {
        match instance::<P>() {
            Some(p) => p.check(write, identity.as_ref(), &request),
            // Fail closed: an uninitialised policy admits nothing.
            None => admission::Verdict::Deny(NOT_INITIALISED.into()),
        }
    }
}
