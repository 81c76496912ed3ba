//! Open client connections: how many there are (`http.maxconnections`), what each is doing, and
//! the watchdog that closes one whose client stopped making progress (`http.timeouts.header` and
//! `.idle`, and `.bodystall` for HTTP/2 downloads no one reads). Request bodies that stall are
//! cut where they are read (`api::request_body`); HTTP/1.1 responses a client stops reading, and
//! hyper's own bodyless error answers, are handled in the connection's IO (`guarded_io`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds since the process's first call, plus one (0 means "never" in the fields
/// below): one atomic store per read or write instead of an `Instant` behind a lock.
pub fn now_ms() -> u64 {
    start().elapsed().as_millis() as u64 + 1
}

fn instant_at(ms: u64) -> Instant {
    start() + Duration::from_millis(ms.saturating_sub(1))
}

/// What one connection is doing, shared by its IO (bytes moving), its service (requests in
/// it), its watchdog, and the tracker (which may ask it to close to make room).
#[derive(Debug, Default)]
pub struct ConnState {
    /// Requests being served, counted until their response body is done.
    busy: AtomicU32,
    /// When bytes last moved either way, or a request started or finished.
    last_activity: AtomicU64,
    /// When the first byte of a request head arrived on an otherwise idle connection (0: none
    /// yet): the header timeout runs from it.
    head_started: AtomicU64,
    /// Wakes the watchdog to recompute its deadline (a head started, a request finished).
    kick: Notify,
    /// Asks the connection to close now (the tracker makes room for a new one).
    shed: Notify,
    /// HTTP/2: streams have no head to time here (frames such as PING or WINDOW_UPDATE arrive
    /// between requests), so only the idle timeout applies.
    http2: AtomicBool,
    /// HTTP/2 response bodies that handed hyper a frame and were not asked for the next one yet:
    /// hyper asks once the client's flow-control window lets what it holds go out.
    waiting: AtomicU32,
    /// When an HTTP/2 response body was last asked for a frame (0: never).
    body_asked: AtomicU64,
}

impl ConnState {
    fn new() -> Self {
        let s = ConnState::default();
        s.last_activity.store(now_ms(), Ordering::Relaxed);
        s
    }

    /// The connection speaks HTTP/2 (chosen by ALPN).
    pub fn set_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
    }

    /// Bytes arrived from the client. On an HTTP/2 connection bytes are not activity, only
    /// requests are (as Go's `http2.Server.IdleTimeout`: PINGs are not): a client's PINGs kept
    /// a connection with no request in it open for ever, and with it the last frames its
    /// finished streams were handed but never let out (no window granted), up to 128 KiB a
    /// stream.
    pub fn on_read(&self) {
        if self.http2.load(Ordering::Relaxed) {
            return;
        }
        let now = now_ms();
        self.last_activity.store(now, Ordering::Relaxed);
        if self.busy.load(Ordering::Relaxed) == 0 && self.head_started.load(Ordering::Relaxed) == 0 {
            self.head_started.store(now, Ordering::Relaxed);
            self.kick.notify_one();
        }
    }

    /// Bytes went out to the client (not activity on HTTP/2: `on_read`).
    pub fn on_write(&self) {
        if !self.http2.load(Ordering::Relaxed) {
            self.last_activity.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// A request reached the service; the returned guard ends it when dropped (with the
    /// response body, or with the handler if the client went away).
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        // HTTP/2's watchdog watches busy connections too (`stalled`): wake it to. HTTP/1.1's
        // has nothing to do then, and is not woken on every request.
        if self.busy.fetch_add(1, Ordering::Relaxed) == 0 && self.http2.load(Ordering::Relaxed) {
            self.kick.notify_one();
        }
        self.head_started.store(0, Ordering::Relaxed);
        self.last_activity.store(now_ms(), Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// An HTTP/2 response body is asked for its next frame (`was_waiting`: it had handed one
    /// out, which the client has now let go).
    pub fn body_asked(&self, was_waiting: bool) {
        self.body_asked.store(now_ms(), Ordering::Relaxed);
        if was_waiting {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// An HTTP/2 response handed out its head or a frame, and waits to be asked for the next.
    pub fn body_handed(&self) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
    }

    /// An HTTP/2 response body that was waiting is gone (done, or its stream reset).
    pub fn body_gone(&self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }

    /// HTTP/2: some response waits on the client and no response body on the connection was
    /// asked for anything for `stall`. The client grants no flow-control window: nothing is
    /// written to the socket, so no write stalls there, and its PINGs keep the connection
    /// active, while every stream holds what it was sent.
    fn stalled(&self, stall: Duration) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
            && self.body_asked.load(Ordering::Relaxed) + stall.as_millis() as u64 <= now_ms()
    }

    /// Idle: no request in it and no request head arriving.
    fn idle(&self) -> bool {
        self.busy.load(Ordering::Relaxed) == 0 && self.head_started.load(Ordering::Relaxed) == 0
    }
}

/// Holds a connection busy while one request is served.
pub struct RequestGuard(Arc<ConnState>);

/// A response body on an HTTP/2 connection, keeping the connection busy until it is done and
/// telling the watchdog whether the client takes what it is sent (`ConnState::stalled`).
pub struct Http2Response<B> {
    inner: B,
    guard: RequestGuard,
    /// The head or a frame was handed out and the next frame not asked for yet.
    waiting: bool,
}

impl<B> Http2Response<B> {
    /// A response whose head hyper sends now: it waits on the client from here, as hyper asks
    /// for the first frame only once the client's window has room.
    pub fn new(inner: B, guard: RequestGuard) -> Self {
        guard.0.body_asked(false);
        guard.0.body_handed();
        Http2Response { inner, guard, waiting: true }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Http2Response<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let was_waiting = std::mem::take(&mut self.waiting);
        self.guard.0.body_asked(was_waiting);
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(f))) = &polled {
            if f.is_data() {
                self.waiting = true;
                self.guard.0.body_handed();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Http2Response<B> {
    fn drop(&mut self) {
        if self.waiting {
            self.guard.0.body_gone();
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.last_activity.store(now_ms(), Ordering::Relaxed);
        if self.0.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.kick.notify_one();
        }
    }
}

/// Why the watchdog ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// A request head did not arrive whole within `http.timeouts.header`.
    HeaderTimeout,
    /// No request for `http.timeouts.idle`.
    Idle,
    /// Closed to make room for a new connection at `http.maxconnections`.
    Shed,
    /// HTTP/2 downloads the client took nothing of for `http.timeouts.bodystall`.
    Stalled,
}

impl Closed {
    /// The `reason` label of `berth_http_connections_closed_total`.
    pub fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::Idle => "idle",
            Closed::Shed => "shed",
            Closed::Stalled => "body_stall",
        }
    }
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Closed::HeaderTimeout => "request head not received within http.timeouts.header",
            Closed::Idle => "idle for http.timeouts.idle",
            Closed::Shed => "idle connection closed to make room (http.maxconnections)",
            Closed::Stalled => "HTTP/2 responses not read for http.timeouts.bodystall",
        })
    }
}

/// Resolves when the connection should be closed: a head that took too long, a keep-alive
/// connection idle too long, HTTP/2 downloads no one reads (`ConnState::stalled`), or the
/// tracker shedding it. Otherwise never while a request is served (its request body has its
/// own stall timeout, and an HTTP/1.1 response its write stall in `guarded_io`). A zero
/// timeout is off.
pub async fn watchdog(state: &ConnState, header: Duration, idle: Duration, stall: Duration) -> Closed {
    loop {
        let deadline = if state.busy.load(Ordering::Relaxed) > 0 {
            // Looked at four times per `stall`: no counter moves per frame to time it exactly.
            (state.http2.load(Ordering::Relaxed) && !stall.is_zero())
                .then(|| (now_ms() + (stall.as_millis() as u64 / 4).max(1), Closed::Stalled))
        } else {
            match state.head_started.load(Ordering::Relaxed) {
                0 => (!idle.is_zero())
                    .then(|| (state.last_activity.load(Ordering::Relaxed) + idle.as_millis() as u64, Closed::Idle)),
                started => (!header.is_zero()).then(|| (started + header.as_millis() as u64, Closed::HeaderTimeout)),
            }
        };
        let sleep = async {
            match deadline {
                Some((at, why)) => {
                    tokio::time::sleep_until(instant_at(at)).await;
                    why
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            why = sleep => {
                // Re-check: activity may have moved the deadline while we slept.
                let still = match why {
                    Closed::Idle => state.idle() && state.last_activity.load(Ordering::Relaxed) + idle.as_millis() as u64 <= now_ms(),
                    Closed::Stalled => state.stalled(stall),
                    _ => state.busy.load(Ordering::Relaxed) == 0 && state.head_started.load(Ordering::Relaxed) != 0,
                };
                if still {
                    return why;
                }
            }
            _ = state.kick.notified() => {}
            _ = state.shed.notified() => return Closed::Shed,
        }
    }
}

/// The server's connections, for metrics and `/debug/vars` (the last `Connections::new`; one
/// per process outside tests).
static SERVED: Mutex<Weak<Connections>> = Mutex::new(Weak::new());

/// How many connections are open, and of them how many are active (a request head arriving or
/// a request being served).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Census {
    pub cap: usize,
    pub open: usize,
    pub active: usize,
}

/// The census of the server's connections, `None` before it serves.
pub fn census() -> Option<Census> {
    let all = SERVED.lock().unwrap_or_else(|e| e.into_inner()).upgrade()?;
    let open = all.open.lock().unwrap_or_else(|e| e.into_inner());
    let active = open.values().filter(|s| !s.idle()).count();
    Some(Census { cap: all.cap, open: open.len(), active })
}

/// Sets `berth_http_connections{state}` from the census, just before metrics are encoded: a
/// scrape counts the open connections once instead of every request updating a shared gauge.
pub fn publish() {
    let c = census().unwrap_or(Census { cap: 0, open: 0, active: 0 });
    let gauges = &crate::metrics::get().connections;
    for (state, n) in [("active", c.active), ("idle", c.open - c.active)] {
        gauges.get_or_create(&crate::metrics::ConnectionStateLabels { state }).set(n as i64);
    }
}

/// Every open connection, for the cap and for shedding idle ones first.
#[derive(Debug)]
pub struct Connections {
    cap: usize,
    /// Told of every connection that closes.
    pub trim: Arc<crate::heap_trim::HeapTrim>,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
}

/// What to do with a connection just accepted.
pub enum Admission {
    /// Serve it; dropping the ticket forgets the connection.
    Admitted(Ticket),
    /// At the cap with nothing idle to close: refuse it.
    Refused,
}

impl Connections {
    /// `cap` 0: derived from the open-file limit (three quarters of it).
    pub fn new(cap: usize) -> Arc<Self> {
        let cap = if cap == 0 { default_cap() } else { cap };
        let all = Arc::new(Connections {
            cap,
            trim: Arc::default(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        });
        *SERVED.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(&all);
        all
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits a new connection. At the cap, the connection idle the longest is asked to close
    /// and the new one admitted in its place; with none idle, the new one is refused.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= self.cap && !Self::shed_locked(&mut open) {
            return Admission::Refused;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new());
        open.insert(id, state.clone());
        Admission::Admitted(Ticket { id, state, all: self.clone() })
    }

    /// Closes the connection idle the longest, if any is idle (used at the cap, and when the
    /// process runs out of file descriptors). True if one was asked to close.
    pub fn shed_idle(&self) -> bool {
        Self::shed_locked(&mut self.open.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn shed_locked(open: &mut HashMap<u64, Arc<ConnState>>) -> bool {
        let oldest = open
            .iter()
            .filter(|(_, s)| s.idle())
            .min_by_key(|(_, s)| s.last_activity.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match oldest.and_then(|id| open.remove(&id)) {
            Some(s) => {
                // notify_one stores a permit, so the watchdog sees it even if not yet waiting.
                s.shed.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A connection's place among the open ones; dropped when the connection ends.
pub struct Ticket {
    id: u64,
    pub state: Arc<ConnState>,
    all: Arc<Connections>,
}

impl Ticket {
    /// This connection held much (`HeapTrim::soon`).
    pub fn held_much(&self) {
        self.all.trim.soon();
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.all.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
        self.all.trim.closed();
    }
}

/// Three quarters of the soft open-file limit, so the cap is met before accept fails with
/// EMFILE; the rest is left to storage files, plugins and the debug server.
fn default_cap() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if !ok || lim.rlim_cur == libc::RLIM_INFINITY {
        return 10_000;
    }
    ((lim.rlim_cur as usize) / 4 * 3).max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cap_sheds_the_longest_idle_then_refuses() {
        let c = Connections::new(2);
        let Admission::Admitted(a) = c.admit() else { panic!() };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let Admission::Admitted(b) = c.admit() else { panic!() };
        let _busy = b.state.begin_request();
        // At the cap: `a` is idle, so it is shed for the newcomer.
        let Admission::Admitted(n) = c.admit() else { panic!("a should have been shed") };
        let closed = tokio::time::timeout(
            Duration::from_secs(1),
            watchdog(&a.state, Duration::ZERO, Duration::ZERO, Duration::ZERO),
        );
        assert_eq!(closed.await.unwrap(), Closed::Shed);
        let _busy2 = n.state.begin_request();
        assert!(matches!(c.admit(), Admission::Refused));
        drop((a, b, n));
        assert!(c.is_empty());
    }

    #[tokio::test]
    async fn watchdog_idle_and_header() {
        let s = ConnState::new();
        let t = Instant::now();
        assert_eq!(watchdog(&s, Duration::from_secs(5), Duration::from_millis(50), Duration::ZERO).await, Closed::Idle);
        assert!(t.elapsed() >= Duration::from_millis(45));
        let s = ConnState::new();
        s.on_read();
        assert_eq!(
            watchdog(&s, Duration::from_millis(50), Duration::from_secs(5), Duration::ZERO).await,
            Closed::HeaderTimeout
        );
        // A request in flight is never timed out here.
        let s = Arc::new(ConnState::new());
        let g = s.begin_request();
        let r = tokio::time::timeout(
            Duration::from_millis(100),
            watchdog(&s, Duration::from_millis(10), Duration::from_millis(10), Duration::ZERO),
        );
        assert!(r.await.is_err());
        drop(g);
        assert_eq!(
            watchdog(&s, Duration::from_millis(10), Duration::from_millis(10), Duration::ZERO).await,
            Closed::Idle
        );
    }

    /// HTTP/2: a response waiting on a client that takes nothing ends the connection after
    /// `stall`; one that keeps being asked for frames, or that waits on its own source, never.
    #[tokio::test]
    async fn watchdog_http2_stalled_downloads() {
        let stall = Duration::from_millis(80);
        let c = Connections::new(4);
        let Admission::Admitted(t) = c.admit() else { panic!() };
        let s = &t.state;
        s.set_http2();
        let _busy = s.begin_request();
        // Waiting on its source (asked, nothing handed out): not the client's doing.
        s.body_asked(false);
        let w = tokio::time::timeout(Duration::from_millis(300), watchdog(s, Duration::ZERO, Duration::ZERO, stall));
        assert!(w.await.is_err());
        // Handed a frame, and asked again in time: still fine.
        s.body_handed();
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            s.body_asked(true);
            s.body_handed();
        }
        assert!(!s.stalled(stall));
        // Not asked again: the client took nothing for `stall`.
        let started = Instant::now();
        assert_eq!(watchdog(s, Duration::ZERO, Duration::ZERO, stall).await, Closed::Stalled);
        assert!(started.elapsed() < stall * 3, "{:?}", started.elapsed());
        s.body_gone();
        assert!(!s.stalled(stall));
    }

    /// HTTP/2: bytes (a client's PINGs) do not keep a connection with no request in it open;
    /// its idle time runs from its last request's end. HTTP/1.1: they start a head's timer.
    #[tokio::test]
    async fn watchdog_http2_idle_counts_requests_not_bytes() {
        let idle = Duration::from_millis(150);
        let s = Arc::new(ConnState::new());
        s.set_http2();
        drop(s.begin_request());
        let pings = {
            let s = s.clone();
            tokio::spawn(async move {
                loop {
                    s.on_read();
                    s.on_write();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        let started = Instant::now();
        assert_eq!(watchdog(&s, Duration::ZERO, idle, Duration::ZERO).await, Closed::Idle);
        assert!(started.elapsed() < idle * 2, "{:?}", started.elapsed());
        pings.abort();
        let s = ConnState::new();
        s.on_read();
        assert_ne!(s.head_started.load(Ordering::Relaxed), 0);
    }
}
