//! A TCP proxy of the test's own, on loopback, between the service and PostgreSQL or RabbitMQ.
//!
//! The real servers are shared by every test, so a test must never stop or pause them to
//! simulate an outage. Instead it points the service at this proxy and breaks the path here:
//! refuse, freeze, blackhole or reset connections, then heal it again.
//!
//! Forwarding uses `readable`/`try_read` and `writable`/`try_write` on `TcpStream` only, because
//! the crate does not enable tokio's `io-util` feature (no `copy_bidirectional`).

use std::collections::HashMap;
use std::future::{pending, poll_fn};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How the proxy treats traffic. Set with [`Proxy::set_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes both ways, including half-closes and resets.
    Pass,
    /// New connections are accepted and reset at once, as by a server that is down; existing
    /// connections (blackholed ones too) are reset when this mode is set.
    Refuse,
    /// Connections stay open but nothing is read or forwarded in either direction, like a
    /// stalled peer. Back in [`Mode::Pass`], buffered bytes flow again. New connections made
    /// meanwhile are accepted (the kernel completes the handshake anyway) and frozen too.
    Freeze,
    /// Connections stay open and every byte in both directions is read and dropped, never
    /// forwarded and never closed: packets vanishing on the network. This sticks to each
    /// connection open or made while the mode is on, even after [`Mode::Pass`]; only
    /// connections made after that work again.
    Blackhole,
}

/// A running proxy. Dropping it stops it: the listener closes and every connection is reset.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Parent of every connection's token, so one cancel on drop ends all tasks.
    stop: CancellationToken,
}

struct Shared {
    upstream: SocketAddr,
    /// The current mode; its change notifications also wake connections on
    /// `blackhole_existing`, so a blocked pump re-evaluates what it may do.
    mode: watch::Sender<Mode>,
    /// Open client connections. Mode changes and accepts both happen under this lock (taken
    /// before the watch's), so a connection accepted during a change sees either the old
    /// mode and is updated with the others, or the new one.
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Shared {
    /// A panic elsewhere must not take the proxy down with a poisoned lock.
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the proxy controls of one client connection.
struct Conn {
    /// Sticky: once set, this connection only ever discards.
    blackholed: AtomicBool,
    /// Cancelled to reset the connection (close_existing, Refuse, drop of the proxy).
    cancel: CancellationToken,
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1 at a free port, forwarding to `upstream`.
    ///
    /// Panics unless `upstream` is a loopback address: the proxy must only ever carry the
    /// test's own traffic to the local test servers.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        assert!(upstream.ip().is_loopback(), "the proxy only forwards to loopback, not {upstream}");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind the proxy on loopback");
        let addr = listener.local_addr().expect("proxy listener address");
        let (mode, _) = watch::channel(Mode::Pass);
        let shared = Arc::new(Shared { upstream, mode, conns: Mutex::new(HashMap::new()), next_id: AtomicU64::new(0) });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        Proxy { addr, shared, stop }
    }

    /// The address to give the service instead of the real server's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Switches the mode for new connections and for the existing ones (see [`Mode`]).
    pub fn set_mode(&self, mode: Mode) {
        let mut conns = self.shared.conns();
        match mode {
            Mode::Refuse => {
                // Drop them from the count at once: they are done from the proxy's view even
                // if their sockets close a moment later.
                for (_, conn) in conns.drain() {
                    conn.cancel.cancel();
                }
            }
            Mode::Blackhole => {
                for conn in conns.values() {
                    conn.blackholed.store(true, Ordering::SeqCst);
                }
            }
            Mode::Pass | Mode::Freeze => {}
        }
        self.shared.mode.send_replace(mode);
    }

    /// Blackholes the connections open now (bytes both ways dropped, never closed), leaving
    /// the mode alone so new connections work: a path that died under live connections,
    /// which only timeouts or keepalives can detect.
    pub fn blackhole_existing(&self) {
        let conns = self.shared.conns();
        for conn in conns.values() {
            conn.blackholed.store(true, Ordering::SeqCst);
        }
        // Wake every pump so one blocked on a write drops its buffer at once.
        self.shared.mode.send_modify(|_| {});
    }

    /// Client connections the proxy is currently serving. An accepted connection is counted
    /// once the proxy's accept loop has taken it, which may lag the client's connect a little.
    pub fn connections(&self) -> usize {
        self.shared.conns().len()
    }

    /// Resets every current connection on both sides; new ones are still accepted as the
    /// mode says.
    pub fn close_existing(&self) {
        for (_, conn) in self.shared.conns().drain() {
            conn.cancel.cancel();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Tasks see this at their next poll; the listener closes and connections are reset then.
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of descriptors or an aborted handshake: pause rather than spin.
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => continue,
                }
            }
        };
        let _ = client.set_nodelay(true);
        let registered = {
            let mut conns = shared.conns();
            let mode = *shared.mode.borrow();
            if mode == Mode::Refuse {
                None
            } else {
                let conn =
                    Arc::new(Conn { blackholed: AtomicBool::new(mode == Mode::Blackhole), cancel: stop.child_token() });
                let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                conns.insert(id, conn.clone());
                Some((Registration { shared: shared.clone(), id }, conn))
            }
        };
        match registered {
            None => reset(&client),
            Some((registration, conn)) => {
                tokio::spawn(run_conn(registration, conn, client));
            }
        }
    }
}

/// Removes a connection from the count when its task ends or is dropped with the runtime.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.conns().remove(&self.id);
    }
}

/// Makes the coming close of `stream` a reset (RST) rather than an orderly FIN, as a crashed
/// or refusing server would.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// What a connection may do under the current mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Forward,
    Hold,
    Discard,
    Close,
}

/// One direction of a connection.
#[derive(Default)]
struct Flow {
    /// Read but not yet written on.
    pending: Vec<u8>,
    /// The source sent EOF (or, when discarding, failed): read no more from it.
    eof: bool,
    /// The EOF was passed on by shutting down the destination's write side.
    shut: bool,
}

enum Event {
    Cancelled,
    ModeChanged(Result<(), watch::error::RecvError>),
    Readable(Side, io::Result<()>),
    Writable(Side, io::Result<()>),
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Client,
    Upstream,
}

const CHUNK: usize = 16 * 1024;

async fn run_conn(registration: Registration, conn: Arc<Conn>, client: TcpStream) {
    // Subscribe before looking at any state, so no change can slip by unnoticed.
    let mut mode_rx = registration.shared.mode.subscribe();
    // A connection blackholed from the start never needs the real server.
    let upstream = if conn.blackholed.load(Ordering::SeqCst) {
        None
    } else {
        tokio::select! {
            biased;
            _ = conn.cancel.cancelled() => return reset(&client),
            connected = TcpStream::connect(registration.shared.upstream) => match connected {
                Ok(upstream) => {
                    let _ = upstream.set_nodelay(true);
                    Some(upstream)
                }
                Err(_) => return reset(&client),
            },
        }
    };
    let mut client = client;
    let mut upstream = upstream;
    let mut to_upstream = Flow::default();
    let mut to_client = Flow { eof: upstream.is_none(), ..Flow::default() };
    let mut buf = vec![0u8; CHUNK];

    loop {
        // Always mark the mode seen, or `changed()` below would fire again at once.
        let mode = *mode_rx.borrow_and_update();
        let action = if conn.blackholed.load(Ordering::SeqCst) {
            Action::Discard
        } else {
            match mode {
                Mode::Pass => Action::Forward,
                Mode::Freeze => Action::Hold,
                Mode::Blackhole => {
                    conn.blackholed.store(true, Ordering::SeqCst);
                    Action::Discard
                }
                Mode::Refuse => Action::Close,
            }
        };
        match action {
            Action::Close => return reset_both(&client, upstream.as_ref()),
            Action::Discard => {
                to_upstream.pending.clear();
                to_client.pending.clear();
            }
            Action::Forward => {
                // Pass a half-close on only after everything sent before it.
                if to_upstream.eof && to_upstream.pending.is_empty() && !to_upstream.shut {
                    if let Some(upstream) = upstream.as_mut() {
                        let _ = shutdown(upstream).await;
                    }
                    to_upstream.shut = true;
                }
                if to_client.eof && to_client.pending.is_empty() && !to_client.shut {
                    let _ = shutdown(&mut client).await;
                    to_client.shut = true;
                }
                if to_upstream.shut && to_client.shut {
                    return; // Both sides finished: close normally.
                }
            }
            Action::Hold => {}
        }

        let may_read = |flow: &Flow| {
            !flow.eof
                && match action {
                    Action::Forward => flow.pending.is_empty(), // backpressure
                    Action::Discard => true,
                    Action::Hold | Action::Close => false,
                }
        };
        let read_client = may_read(&to_upstream);
        let read_upstream = upstream.is_some() && may_read(&to_client);
        let write_upstream = action == Action::Forward && !to_upstream.pending.is_empty();
        let write_client = action == Action::Forward && !to_client.pending.is_empty();

        let event = tokio::select! {
            biased;
            _ = conn.cancel.cancelled() => Event::Cancelled,
            changed = mode_rx.changed() => Event::ModeChanged(changed),
            ready = client.readable(), if read_client => Event::Readable(Side::Client, ready),
            ready = readable(upstream.as_ref()), if read_upstream => Event::Readable(Side::Upstream, ready),
            ready = writable(upstream.as_ref()), if write_upstream => Event::Writable(Side::Upstream, ready),
            ready = client.writable(), if write_client => Event::Writable(Side::Client, ready),
        };

        match event {
            Event::Cancelled => return reset_both(&client, upstream.as_ref()),
            // The sender lives in `Shared`, which this task keeps alive; an error cannot
            // happen, but ending beats spinning on it.
            Event::ModeChanged(Err(_)) => return reset_both(&client, upstream.as_ref()),
            Event::ModeChanged(Ok(())) => {}
            Event::Readable(side, ready) => {
                let (source, flow) = match side {
                    Side::Client => (Some(&client), &mut to_upstream),
                    Side::Upstream => (upstream.as_ref(), &mut to_client),
                };
                let Some(source) = source else { continue };
                match ready.and_then(|()| source.try_read(&mut buf)) {
                    Ok(0) => flow.eof = true,
                    // Kept even if the mode changed meanwhile: the next turn clears it when
                    // discarding, holds it when frozen.
                    Ok(n) => flow.pending.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) if action == Action::Discard => flow.eof = true, // stay silent, stay open
                    Err(_) => return reset_both(&client, upstream.as_ref()),
                }
            }
            Event::Writable(side, ready) => {
                let (dest, flow) = match side {
                    Side::Client => (Some(&client), &mut to_client),
                    Side::Upstream => (upstream.as_ref(), &mut to_upstream),
                };
                let Some(dest) = dest else { continue };
                match ready.and_then(|()| dest.try_write(&flow.pending)) {
                    Ok(n) => {
                        flow.pending.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return reset_both(&client, upstream.as_ref()),
                }
            }
        }
    }
}

/// Resets both sides; the streams close when the caller returns and drops them.
fn reset_both(client: &TcpStream, upstream: Option<&TcpStream>) {
    reset(client);
    if let Some(upstream) = upstream {
        reset(upstream);
    }
}

async fn readable(stream: Option<&TcpStream>) -> io::Result<()> {
    match stream {
        Some(stream) => stream.readable().await,
        None => pending().await,
    }
}

async fn writable(stream: Option<&TcpStream>) -> io::Result<()> {
    match stream {
        Some(stream) => stream.writable().await,
        None => pending().await,
    }
}

/// Half-closes the write side (sends FIN); `AsyncWriteExt::shutdown` would need `io-util`.
async fn shutdown(stream: &mut TcpStream) -> io::Result<()> {
    poll_fn(|cx| Pin::new(&mut *stream).poll_shutdown(cx)).await
}
