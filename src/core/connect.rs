//! Connections under ureq: name resolution, connecting (Happy Eyeballs), and the socket
//! transport every call's bytes go through.
//!
//! ureq keeps the HTTP protocol, the pool, proxies (SOCKS, CONNECT) and TLS; this module
//! plugs into its `unversioned` connector and resolver hooks (ureq is pinned for them):
//!
//! - [`Resolver`]: IP literals without a lookup, names cached for [`DNS_TTL`], resolved on
//!   the calling thread (no helper thread, no channel: nothing that would keep the library
//!   loaded after a host unloads it); an address set that could not be connected to at all
//!   is dropped from the cache.
//! - [`HappyConnector`]: RFC 8305 connection attempts: the next address starts 250 ms after
//!   the previous one unless it connected, the first to connect wins, the others are closed.
//!   Non-blocking sockets (socket2) waited on with `poll` (Unix) or `select` (Windows) on the
//!   calling thread, on every system.
//! - [`Conn`]: the socket transport: the request head and body leave in one send (writes are
//!   held until the first read), socket timeouts are set only when they change, and the
//!   pool's liveness probe is one non-blocking peek.
//! - [`Outer`]: wraps the whole chain: registers every socket a call uses with the call's
//!   [`Cancel`] token (also pooled connections, on each reuse), and records whether any byte
//!   of the request itself was handed to the connection ([`request_sent`]), which decides
//!   whether a failure may be retried.

use super::cancel::Cancel;
use super::tls::TlsSettings;
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver as UreqResolver};
use ureq::unversioned::transport::time::Duration as UreqDuration;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, NextTimeout, ShutdownHandle, Transport,
};

/// Cached name lookups live this long.
const DNS_TTL: Duration = Duration::from_secs(30);
/// RFC 8305's "Connection Attempt Delay".
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);
/// Held request bytes are sent once they reach this much (or at the first read).
const FLUSH_AT: usize = 64 * 1024;

thread_local! {
    // Plain `Cell`s of `Copy` data: no destructor, so nothing registered with the C runtime
    // (see cancel.rs). ureq runs a call on the calling thread, so these follow one call.
    /// Connectors running on this thread (a CONNECT proxy nests one chain in another).
    static CONNECTING: Cell<u32> = const { Cell::new(0) };
    /// Whether request bytes were handed to a connection since [`begin_request`].
    static SENT: Cell<bool> = const { Cell::new(false) };
}

/// Marks the start of one request on this thread: [`request_sent`] is false until a byte of
/// it is handed to a connection.
pub(super) fn begin_request() {
    let _ = CONNECTING.try_with(|c| c.set(0));
    let _ = SENT.try_with(|c| c.set(false));
    // A body reader's hints never outlive its body (read_body clears them too).
    let _ = EXPECTED.try_with(|e| e.set(0));
    let _ = NEXT_DESTINATION.try_with(|d| d.set(0));
}

/// Whether any byte of the request begun by [`begin_request`] was handed to a connection
/// (the TLS handshake and a proxy's CONNECT do not count; the request head does).
pub(super) fn request_sent() -> bool {
    SENT.try_with(Cell::get).unwrap_or(true)
}

/// Process-wide test hook: names resolved to fixed loopback addresses.
static TEST_HOSTS: Mutex<Option<HashMap<String, Vec<SocketAddr>>>> = Mutex::new(None);

/// Test hook: from now on, `host` resolves to `addrs`, in this order (loopback addresses
/// only; anything else is refused with `false`). An empty list removes the entry.
#[doc(hidden)]
pub fn resolve_for_tests(host: &str, addrs: &[SocketAddr]) -> bool {
    if !addrs.iter().all(|a| a.ip().is_loopback()) {
        return false;
    }
    let mut hosts = TEST_HOSTS.lock().unwrap_or_else(|e| e.into_inner());
    let map = hosts.get_or_insert_with(HashMap::new);
    if addrs.is_empty() {
        map.remove(&host.to_ascii_lowercase());
    } else {
        map.insert(host.to_ascii_lowercase(), addrs.to_vec());
    }
    true
}

/// Frees process-wide state of this module (the test hook's map).
#[cfg_attr(
    not(any(target_os = "linux", target_os = "android", target_os = "freebsd")),
    allow(dead_code)
)]
pub(super) fn release() {
    let taken = TEST_HOSTS.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(taken);
}

/// The name cache shared by an agent's resolver and connector.
#[derive(Debug, Default)]
pub(super) struct DnsCache(Mutex<HashMap<(String, u16), (Instant, ResolvedSocketAddrs)>>);

impl DnsCache {
    fn get(&self, key: &(String, u16)) -> Option<ResolvedSocketAddrs> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(at, _)| at.elapsed() < DNS_TTL)
            .map(|(_, addrs)| addrs.clone())
    }

    fn put(&self, key: (String, u16), addrs: ResolvedSocketAddrs) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (at, _)| at.elapsed() < DNS_TTL);
        map.insert(key, (Instant::now(), addrs));
    }

    /// Drops `host:port`'s cached addresses (none of them could be connected to).
    fn forget(&self, uri: &Uri) {
        if let Some(key) = host_port(uri) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }
    }
}

/// `(host, port)` of an http(s)/socks URI, the host lowercase and without IPv6 brackets.
fn host_port(uri: &Uri) -> Option<(String, u16)> {
    let authority = uri.authority()?;
    let port = authority.port_u16().or(match uri.scheme_str()? {
        "http" => Some(80),
        "https" => Some(443),
        "socks4" | "socks4a" | "socks5" | "socks5h" => Some(1080),
        _ => None,
    })?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    Some((host.to_ascii_lowercase(), port))
}

/// Resolves IP literals without a lookup, test names from [`resolve_for_tests`], and other
/// names with the system resolver on the calling thread, cached for [`DNS_TTL`].
#[derive(Debug)]
pub(super) struct Resolver {
    pub cache: Arc<DnsCache>,
}

impl UreqResolver for Resolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut out = self.empty();
        // An IP literal (the common case for local servers) without lowercasing a copy.
        if let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) {
            if let Ok(ip) = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
            {
                out.push(SocketAddr::new(ip, port));
                return Ok(out);
            }
        }
        let Some((host, port)) = host_port(uri) else {
            return Err(ureq::Error::BadUri(
                "the URL has no host or a scheme without a known port".to_string(),
            ));
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, port));
            return Ok(out);
        }
        if let Some(addrs) = TEST_HOSTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|m| m.get(&host))
        {
            for a in addrs {
                let port = if a.port() == 0 { port } else { a.port() };
                if out.try_push(SocketAddr::new(a.ip(), port)).is_err() {
                    break;
                }
            }
            return Ok(out);
        }
        let key = (host, port);
        if let Some(addrs) = self.cache.get(&key) {
            return Ok(addrs);
        }
        // Blocking getaddrinfo on this thread. ureq's resolver would run it on a new thread
        // with a channel to honour the timeout; that thread's channel leaves a thread-local
        // destructor behind, which keeps the library loaded after the host unloads it.
        let found = (key.0.as_str(), key.1).to_socket_addrs()?;
        let family = config.ip_family();
        for addr in family.keep_wanted(found) {
            if out.try_push(addr).is_err() {
                break;
            }
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        self.cache.put(key, out.clone());
        Ok(out)
    }
}

/// A blocking socket with our I/O rules (see the module docs).
pub(super) struct Conn {
    /// In an `Arc` so that cancel and ureq's shutdown can reach it (weakly) from another thread.
    stream: Arc<TcpStream>,
    buffers: ConnBuffers,
    /// The timeouts set on the socket now (`None`: blocking without limit).
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// The last operation was a read: the pool's probe right after a response is skipped
    /// (the probe before the next reuse still runs).
    just_read: bool,
    /// TLS on this socket (direct `https://` connections; see [`super::tls`]): the buffers
    /// then hold plaintext.
    tls: Option<Box<Tls>>,
    /// The socket's receive low-water mark now (see [`expect_at_least`]).
    lowat: usize,
}

/// A TLS session on a [`Conn`]'s socket. rustls takes records at most 4 KiB at a time (one
/// record at most); the socket is read in large reads into `staged`, from which rustls takes
/// them, so that a 48 MiB answer costs a few hundred system calls, not twelve thousand.
struct Tls {
    session: rustls::ClientConnection,
    staged: Vec<u8>,
    /// `staged[start..end]` is read from the socket and not yet taken by rustls.
    start: usize,
    end: usize,
}

impl Tls {
    /// Reads records into rustls: from `staged`, refilled from the socket when empty
    /// (0: the server closed the connection).
    fn read_tls(
        &mut self,
        stream: &TcpStream,
        wanted: Option<Duration>,
        reason: ureq::Timeout,
    ) -> Result<usize, ureq::Error> {
        if self.start == self.end {
            let n = read_socket(stream, &mut self.staged, wanted, reason)?;
            self.start = 0;
            self.end = n;
        }
        let mut available = &self.staged[self.start..self.end];
        // At the end of the socket (nothing staged) rustls is told so: it reads 0 bytes.
        let n = self.session.read_tls(&mut available)?;
        self.start += n;
        Ok(n)
    }

    /// Writes what rustls has queued for the socket, all of it.
    fn write_tls(&mut self, stream: &TcpStream, reason: ureq::Timeout) -> Result<(), ureq::Error> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut &*stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(ureq::Error::Timeout(reason)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Processes the records read; what rustls answers (an alert, a key update) goes out at
    /// once.
    fn process(&mut self, stream: &TcpStream) -> Result<(), ureq::Error> {
        let processed = self.session.process_new_packets();
        if self.session.wants_write() {
            // Best effort: the server learns why (an alert), or gets its key update answered.
            let _ = self.write_tls(stream, ureq::Timeout::Global);
        }
        processed.map(|_| ()).map_err(ureq::Error::Rustls)
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.stream.peer_addr().ok())
            .finish()
    }
}

impl Conn {
    fn new(stream: TcpStream, input_size: usize, output_size: usize) -> Conn {
        Conn {
            stream: Arc::new(stream),
            buffers: ConnBuffers::new(input_size, output_size),
            read_timeout: None,
            write_timeout: None,
            just_read: false,
            tls: None,
            lowat: 1,
        }
    }

    /// Sets the socket's receive low-water mark for what the body reader expects (only when
    /// it changes; see [`expect_at_least`]).
    fn apply_lowat(&mut self) {
        let expected = EXPECTED.try_with(Cell::get).unwrap_or(0);
        let want = if expected >= LOWAT_FROM { LOWAT } else { 1 };
        if want != self.lowat && set_lowat(&self.stream, want) {
            self.lowat = want;
        }
    }

    /// Sets the socket's write timeout for `timeout` (only when it changes).
    fn write_timeout_for(&mut self, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        if timeout.after.is_zero() {
            return Err(ureq::Error::Timeout(timeout.reason));
        }
        let wanted = timeout.not_zero().map(|d| *d);
        if timeout_changed(self.write_timeout, wanted) {
            let set = padded(wanted);
            self.stream.set_write_timeout(set)?;
            self.write_timeout = set;
        }
        Ok(())
    }

    /// Sets the socket's read timeout for `timeout` (only when it changes); the wanted limit.
    fn read_timeout_for(&mut self, timeout: NextTimeout) -> Result<Option<Duration>, ureq::Error> {
        let timeout = timeout.for_read();
        if timeout.after.is_zero() {
            return Err(ureq::Error::Timeout(timeout.reason));
        }
        let wanted = timeout.not_zero().map(|d| *d);
        if timeout_changed(self.read_timeout, wanted) {
            let set = padded(wanted);
            self.stream.set_read_timeout(set)?;
            self.read_timeout = set;
        }
        Ok(wanted)
    }

    /// The TLS handshake on this connection, within `timeout` (the connect phase's). The
    /// client's last handshake message stays queued: it leaves with the request, in one send.
    fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
        timeout: NextTimeout,
    ) -> Result<(), ureq::Error> {
        let mut tls = Box::new(Tls {
            session: rustls::ClientConnection::new(config, name)?,
            staged: vec![0; self.buffers.input_size],
            start: 0,
            end: 0,
        });
        while tls.session.is_handshaking() {
            if tls.session.wants_write() {
                self.write_timeout_for(timeout)?;
                tls.write_tls(&self.stream, timeout.reason)?;
            } else {
                let wanted = self.read_timeout_for(timeout)?;
                if tls.read_tls(&self.stream, wanted, timeout.reason)? == 0 {
                    return Err(ureq::Error::Tls(
                        "the server closed the connection during the TLS handshake (does it speak HTTPS on this port?)",
                    ));
                }
                tls.process(&self.stream)?;
            }
        }
        self.tls = Some(tls);
        Ok(())
    }

    /// Writes the held output (through TLS when the connection has it).
    fn flush(&mut self, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let tls_queued = self.tls.as_ref().is_some_and(|t| t.session.wants_write());
        if self.buffers.pending == 0 && !tls_queued {
            return Ok(());
        }
        self.write_timeout_for(timeout)?;
        let reason = timeout.for_write().reason;
        let pending = self.buffers.pending;
        self.buffers.pending = 0;
        let mut plain = &self.buffers.output[..pending];
        let Some(tls) = self.tls.as_mut() else {
            return match (&*self.stream).write_all(plain) {
                Ok(()) => Ok(()),
                Err(e) if is_timeout(&e) => Err(ureq::Error::Timeout(reason)),
                Err(e) => Err(e.into()),
            };
        };
        // Encrypted into records as rustls's queue takes them, the queue written out
        // (vectored: the handshake's last message, the head and the body in one send).
        loop {
            let n = tls.session.writer().write(plain)?;
            plain = &plain[n..];
            if plain.is_empty() || n == 0 {
                tls.write_tls(&self.stream, reason)?;
            }
            if plain.is_empty() {
                return Ok(());
            }
        }
    }
}

/// One read from the socket (its timeout already set for `wanted`), retried when a signal
/// interrupts it within the time.
fn read_socket(
    stream: &TcpStream,
    buf: &mut [u8],
    wanted: Option<Duration>,
    reason: ureq::Timeout,
) -> Result<usize, ureq::Error> {
    let started = Instant::now();
    loop {
        match (&*stream).read(buf) {
            Ok(n) => return Ok(n),
            // Linux does not restart socket reads that have a timeout after a signal.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if wanted.is_some_and(|w| started.elapsed() >= w) {
                    return Err(ureq::Error::Timeout(reason));
                }
            }
            Err(e) if is_timeout(&e) => return Err(ureq::Error::Timeout(reason)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Copies are made in pieces of at most this many bytes (see [`copy_in_pieces`]).
const COPY_PIECE: usize = 2048;

/// Copies `src` into `dst` (of equal length) in pieces of at most [`COPY_PIECE`] bytes.
/// glibc's `memcpy` hands copies of more than a few KiB to `rep movsb`, which some processors
/// (AMD EPYC here) run 15-30 times slower when the destination lies 1 to 15 bytes past the
/// source modulo 64 (measured: 1.4-2.6 GB/s against 25-95 GB/s); smaller copies take vector
/// moves at full speed whatever the alignment. TLS plaintext lands at any alignment.
fn copy_in_pieces(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.chunks_mut(COPY_PIECE).zip(src.chunks(COPY_PIECE)) {
        d.copy_from_slice(s);
    }
}

thread_local! {
    /// Where the body reader on this thread will copy the next bytes to (see
    /// [`align_next_read_with`]); 0: nowhere in particular.
    static NEXT_DESTINATION: Cell<usize> = const { Cell::new(0) };
}

thread_local! {
    /// How many more bytes the body reader on this thread is sure to read (see
    /// [`expect_at_least`]); 0: unknown.
    static EXPECTED: Cell<u64> = const { Cell::new(0) };
}

/// Below this many expected bytes, reads wake at the first byte as usual.
const LOWAT_FROM: u64 = 256 * 1024;
/// The low-water mark of a socket read while at least [`LOWAT_FROM`] bytes are expected.
const LOWAT: usize = 128 * 1024;

/// Tells the connection serving this thread's call that at least `bytes` more bytes of the
/// answer will arrive (the rest of a declared `Content-Length`). While that is a lot, a read
/// that has to wait sleeps until [`LOWAT`] bytes are there (`SO_RCVLOWAT`) instead of waking
/// at every segment: a 48 MiB answer otherwise slept and woke some 300 times, each wake-up
/// costing a virtual machine's idle core 50 µs or more. A server that sends less than it
/// declared makes the read wait for the timeout, as it would anyway; the end of the
/// connection wakes it.
pub(super) fn expect_at_least(bytes: u64) {
    let _ = EXPECTED.try_with(|e| e.set(bytes));
}

/// Asks the connection serving this thread's call to land the bytes of its next read (when
/// its buffer is empty) at the same address modulo 64 as `destination`, where ureq will copy
/// them next: that copy is one `memcpy` of up to the whole read, and `rep movsb` (see
/// [`copy_in_pieces`]) is at full speed only when destination and source keep their
/// alignment. A hint: a wrong one costs speed, never bytes.
pub(super) fn align_next_read_with(destination: *const u8) {
    let _ = NEXT_DESTINATION.try_with(|d| d.set(destination as usize));
}

/// Whether the socket's timeout `current` must be replaced to give `wanted`: never when it is
/// not shorter than wanted and at most 1% (at most 500 ms) longer. The remaining time of a
/// call shrinks on every read; setting it each time costs a system call per read.
fn timeout_changed(current: Option<Duration>, wanted: Option<Duration>) -> bool {
    match (current, wanted) {
        (None, None) => false,
        (Some(cur), Some(want)) => cur < want || cur - want > slack(want),
        _ => true,
    }
}

/// How much longer than wanted a socket timeout may be.
fn slack(want: Duration) -> Duration {
    (want / 100).clamp(Duration::from_millis(1), Duration::from_millis(500))
}

/// The value to set for `wanted`: half the slack above it, so that the next calls (whose
/// time left is a little more or less) keep it.
fn padded(wanted: Option<Duration>) -> Option<Duration> {
    wanted.map(|w| w.saturating_add(slack(w) / 2))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

impl Transport for Conn {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.just_read = false;
        self.buffers.pending += amount;
        if self.buffers.pending >= FLUSH_AT {
            self.flush(timeout)?;
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.flush(timeout)?;
        self.apply_lowat();
        let wanted = self.read_timeout_for(timeout)?;
        let reason = timeout.for_read().reason;
        let input = self.buffers.input_append_buf();
        let amount = match self.tls.as_mut() {
            Some(tls) => loop {
                let mut reader = tls.session.reader();
                match reader.fill_buf() {
                    Ok(chunk) => {
                        // Empty: the server closed the session cleanly.
                        let n = chunk.len().min(input.len());
                        copy_in_pieces(&mut input[..n], &chunk[..n]);
                        reader.consume(n);
                        break n;
                    }
                    // No plaintext yet: more records from the socket.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // Closed without close_notify: ureq treats it as the end of the stream.
                    Err(e) => return Err(e.into()),
                }
                // At the end of the socket rustls remembers it; the read above says how.
                tls.read_tls(&self.stream, wanted, reason)?;
                tls.process(&self.stream)?;
            },
            None => read_socket(&self.stream, input, wanted, reason)?,
        };
        self.buffers.input_appended(amount);
        self.just_read = true;
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        if std::mem::take(&mut self.just_read) {
            return true;
        }
        // Bytes a finished answer left behind (staged, or plaintext nobody asked for) make a
        // connection as unusable as bytes waiting on the socket.
        if let Some(tls) = self.tls.as_mut() {
            if tls.start != tls.end || tls.session.reader().read(&mut [0u8; 1]).is_ok() {
                return false;
            }
        }
        probe(&self.stream)
    }

    fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Sets `SO_RCVLOWAT`; whether it was set.
#[cfg(unix)]
fn set_lowat(stream: &TcpStream, bytes: usize) -> bool {
    use std::os::fd::AsRawFd;
    let value = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: a valid socket and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Windows has no receive low-water mark for TCP: reads wake at the first byte.
#[cfg(not(unix))]
fn set_lowat(_stream: &TcpStream, _bytes: usize) -> bool {
    false
}

/// Whether an idle connection is still usable: nothing to read, and not closed.
#[cfg(unix)]
fn probe(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: a valid socket and a 1-byte buffer we own.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && {
        let e = io::Error::last_os_error();
        e.kind() == io::ErrorKind::WouldBlock
    }
}

#[cfg(not(unix))]
fn probe(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let open = matches!(stream.peek(&mut [0u8]), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).is_ok() && open
}

/// ureq's buffer contract (see `LazyBuffers`), with output that accumulates: `output()` is
/// the free space after the bytes held for sending.
struct ConnBuffers {
    input_size: usize,
    output_size: usize,
    input: Vec<u8>,
    filled: usize,
    consumed: usize,
    output: Vec<u8>,
    /// Bytes at the start of `output` not sent yet.
    pending: usize,
    progress: bool,
}

impl ConnBuffers {
    fn new(input_size: usize, output_size: usize) -> Self {
        ConnBuffers {
            input_size: input_size.max(1),
            output_size: output_size.max(FLUSH_AT * 2),
            input: Vec::new(),
            filled: 0,
            consumed: 0,
            output: Vec::new(),
            pending: 0,
            progress: false,
        }
    }

    /// Allocates both buffers at their first use, zeroed by the allocator rather than filled
    /// with zeros: a page of a large buffer becomes resident only when bytes are written to it
    /// (see `heap.rs`), and most of the 512 KiB output buffer never is.
    fn ensure(&mut self) {
        if self.output.is_empty() {
            self.output = vec![0; self.output_size];
        }
        if self.input.is_empty() {
            self.input = vec![0; self.input_size];
        }
    }

    fn free_input(&mut self) -> &mut [u8] {
        if self.consumed == self.filled {
            // Start where the next copy out of this buffer keeps its alignment (the body
            // reader's hint), within the first 64 bytes.
            let hint = NEXT_DESTINATION.try_with(Cell::get).unwrap_or(0);
            let at = if hint == 0 || self.input.len() < 128 {
                0
            } else {
                hint.wrapping_sub(self.input.as_ptr() as usize) % 64
            };
            self.consumed = at;
            self.filled = at;
        } else if self.consumed > 0 && self.filled > self.input.len() / 2 {
            self.input.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
        &mut self.input[self.filled..]
    }
}

impl Buffers for ConnBuffers {
    fn output(&mut self) -> &mut [u8] {
        self.ensure();
        &mut self.output[self.pending..]
    }

    fn input(&self) -> &[u8] {
        &self.input[self.consumed..self.filled]
    }

    fn input_append_buf(&mut self) -> &mut [u8] {
        self.ensure();
        self.free_input()
    }

    fn input_appended(&mut self, amount: usize) {
        self.filled = (self.filled + amount).min(self.input.len());
    }

    fn input_consume(&mut self, amount: usize) {
        self.progress = amount > 0;
        self.consumed = (self.consumed + amount).min(self.filled);
    }

    fn tmp_and_output(&mut self) -> (&mut [u8], &mut [u8]) {
        self.ensure();
        const MIN_TMP: usize = 10 * 1024;
        if self.input.len() - self.filled < MIN_TMP {
            let len = self.filled + MIN_TMP;
            self.input.resize(len, 0);
        }
        let tmp = &mut self.input[self.filled..];
        (tmp, &mut self.output[self.pending..])
    }

    fn can_use_input(&self) -> bool {
        self.consumed < self.filled && self.progress
    }
}

/// Opens direct TCP connections (Happy Eyeballs); passes a SOCKS connection made before it
/// through.
#[derive(Debug)]
pub(super) struct HappyConnector {
    pub cache: Arc<DnsCache>,
    /// TLS for `https://` URLs on the socket itself (direct agents); `None` leaves TLS to
    /// ureq's layer after this connector (agents that go through a proxy).
    pub tls: Option<Arc<TlsSettings>>,
}

impl<In: Transport> Connector<In> for HappyConnector {
    type Out = Either<In, Conn>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if let Some(t) = chained {
            return Ok(Some(Either::A(t)));
        }
        let deadline = match details.timeout.after {
            UreqDuration::Exact(d) => Some(Instant::now() + d),
            UreqDuration::NotHappening => None,
        };
        let stream = match connect_any(&details.addrs, deadline) {
            Ok(s) => s,
            Err(e) => {
                details_failed(&self.cache, details);
                return Err(match e.kind() {
                    io::ErrorKind::TimedOut => ureq::Error::Timeout(details.timeout.reason),
                    _ => ureq::Error::Io(e),
                });
            }
        };
        if details.config.no_delay() {
            stream.set_nodelay(true)?;
        }
        let mut conn = Conn::new(
            stream,
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        let handle = Arc::downgrade(&conn.stream) as Weak<dyn ShutdownHandle>;
        (details.register_shutdown)(handle)?;
        if let Some(tls) = self.tls.as_ref().filter(|_| details.needs_tls()) {
            let host = host_port(details.uri)
                .map(|(host, _)| host)
                .unwrap_or_default();
            let name = super::tls::server_name(&host)?;
            conn.start_tls(tls.config()?, name, details.timeout)?;
        }
        Ok(Some(Either::B(conn)))
    }
}

fn details_failed(cache: &DnsCache, details: &ConnectionDetails) {
    cache.forget(details.uri);
}

/// Orders addresses as RFC 8305 section 4: families interleaved, starting with the first's.
fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return Vec::new();
    };
    let (mut same, mut other): (Vec<_>, Vec<_>) =
        addrs.iter().partition(|a| a.is_ipv6() == first.is_ipv6());
    same.reverse();
    other.reverse();
    let mut out = Vec::with_capacity(addrs.len());
    while let Some(a) = same.pop() {
        out.push(a);
        if let Some(b) = other.pop() {
            out.push(b);
        }
    }
    out.extend(other.into_iter().rev());
    out
}

/// Connects to the first of `addrs` that answers (see [`HappyConnector`]). A cancelled call
/// stops waiting within 50 ms.
fn connect_any(addrs: &[SocketAddr], deadline: Option<Instant>) -> io::Result<TcpStream> {
    let order = interleave(addrs);
    if order.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "the name resolved to no address",
        ));
    }
    imp::connect_any(&order, deadline)
}

fn cancelled_error() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "the call was cancelled")
}

/// Non-blocking connection attempts with socket2 (the same code on every system); only the
/// wait differs: `poll` on Unix, `select` on Windows.
mod imp {
    use super::{cancelled_error, Cancel, ATTEMPT_DELAY};
    use socket2::{Domain, Protocol, Socket, Type};
    use std::io;
    use std::net::{SocketAddr, TcpStream};
    use std::time::{Duration, Instant};

    /// Starts a non-blocking connect to `addr`; a connect that completes at once is returned
    /// as in progress too (the wait sees it writable).
    fn start(addr: &SocketAddr) -> io::Result<Socket> {
        // socket2 opens it close-on-exec (Unix) / not inherited (Windows).
        let socket = Socket::new(
            Domain::for_address(*addr),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_nonblocking(true)?;
        match socket.connect(&(*addr).into()) {
            Ok(()) => Ok(socket),
            Err(e) if in_progress(&e) => Ok(socket),
            Err(e) => Err(e),
        }
    }

    /// Whether a non-blocking connect's error only says it goes on in the background.
    fn in_progress(e: &io::Error) -> bool {
        #[cfg(unix)]
        if e.raw_os_error() == Some(libc::EINPROGRESS) {
            return true;
        }
        // WSAEWOULDBLOCK on Windows.
        e.kind() == io::ErrorKind::WouldBlock
    }

    pub(super) fn connect_any(
        order: &[SocketAddr],
        deadline: Option<Instant>,
    ) -> io::Result<TcpStream> {
        let mut next = 0;
        let mut next_at = Instant::now();
        let mut live: Vec<Socket> = Vec::with_capacity(2);
        let mut last_err: Option<io::Error> = None;
        let mut ready: Vec<bool> = Vec::with_capacity(2);
        loop {
            if Cancel::current_cancelled() {
                return Err(cancelled_error());
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no address accepted a connection in time",
                ));
            }
            // Start the next address when its turn has come, or at once when nothing is in
            // flight (the previous attempt failed).
            if next < order.len() && (live.is_empty() || now >= next_at) {
                let addr = &order[next];
                next += 1;
                match start(addr) {
                    Ok(a) => {
                        live.push(a);
                        next_at = now + ATTEMPT_DELAY;
                    }
                    Err(e) => last_err = Some(e),
                }
                continue;
            }
            if live.is_empty() {
                return Err(last_err.unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused")
                }));
            }
            let mut wait = deadline.map_or(Duration::from_secs(3600), |d| d - now);
            if next < order.len() {
                wait = wait.min(next_at.saturating_duration_since(now));
            }
            if Cancel::with_current(|c| c.is_some()) {
                wait = wait.min(Duration::from_millis(50));
            }
            match wait_writable(&live, wait, &mut ready) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            // Collect the finished attempts (back to front, so removals keep indices).
            for i in (0..live.len()).rev() {
                if !ready[i] {
                    continue;
                }
                let attempt = live.remove(i);
                match attempt.take_error() {
                    Ok(None) => {
                        // The winner; the others close when `live` drops.
                        attempt.set_nonblocking(false)?;
                        return Ok(attempt.into());
                    }
                    Ok(Some(e)) | Err(e) => {
                        last_err = Some(e);
                        // The next address need not wait for its turn.
                        next_at = Instant::now();
                    }
                }
            }
        }
    }

    /// The wait in whole milliseconds, at least 1 when not zero.
    fn millis(wait: Duration) -> i32 {
        let ms = wait.as_millis().min(i32::MAX as u128) as i32;
        if ms == 0 && !wait.is_zero() {
            1
        } else {
            ms
        }
    }

    /// Waits up to `wait` until some of `live` finished connecting (or failed to); sets
    /// `ready[i]` for those.
    #[cfg(unix)]
    fn wait_writable(live: &[Socket], wait: Duration, ready: &mut Vec<bool>) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut polls: Vec<libc::pollfd> = live
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        // SAFETY: `polls` holds `polls.len()` initialised entries.
        let n = unsafe {
            libc::poll(
                polls.as_mut_ptr(),
                polls.len() as libc::nfds_t,
                millis(wait),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        ready.clear();
        ready.extend(polls.iter().map(|p| p.revents != 0));
        Ok(())
    }

    /// Windows: `select` with the write set (connected) and the except set (failed), as
    /// Microsoft documents for non-blocking connects. Not WSAPoll: before Windows 10 2004 it
    /// does not report a failed connect at all, so a refused address would wait for the
    /// timeout.
    #[cfg(windows)]
    fn wait_writable(live: &[Socket], wait: Duration, ready: &mut Vec<bool>) -> io::Result<()> {
        use std::os::windows::io::AsRawSocket;
        use windows_sys::Win32::Networking::WinSock::{select, FD_SET, SOCKET, TIMEVAL};
        let mut write = FD_SET {
            fd_count: 0,
            fd_array: [0; 64],
        };
        // At most 64 sockets per set; an address list is never that long (ureq keeps 16).
        for s in live.iter().take(64) {
            write.fd_array[write.fd_count as usize] = s.as_raw_socket() as SOCKET;
            write.fd_count += 1;
        }
        let mut except = FD_SET {
            fd_count: write.fd_count,
            fd_array: write.fd_array,
        };
        let ms = millis(wait);
        let timeout = TIMEVAL {
            tv_sec: ms / 1000,
            tv_usec: (ms % 1000) * 1000,
        };
        // SAFETY: two initialised sets of `fd_count` sockets, a valid timeout.
        let n = unsafe { select(0, std::ptr::null_mut(), &mut write, &mut except, &timeout) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let seen = |set: &FD_SET, s: SOCKET| set.fd_array[..set.fd_count as usize].contains(&s);
        ready.clear();
        ready.extend(live.iter().map(|s| {
            let s = s.as_raw_socket() as SOCKET;
            seen(&write, s) || seen(&except, s)
        }));
        Ok(())
    }
}

/// Wraps ureq's connector chain: see the module docs.
#[derive(Debug)]
pub(super) struct Outer<C>(pub C);

type RegisterFn = dyn Fn(Weak<dyn ShutdownHandle>) -> Result<(), ureq::Error> + Send + Sync;

impl<C, T> Connector<()> for Outer<C>
where
    C: Connector<(), Out = T>,
    T: Transport,
{
    type Out = Tracked<T>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let handles: Arc<Mutex<Vec<Weak<dyn ShutdownHandle>>>> = Arc::default();
        let forward = details.register_shutdown.clone();
        let seen = handles.clone();
        // Every socket the chain opens (ours, SOCKS, the CONNECT proxy's) is registered with
        // the call's token at once, so a cancel also ends a handshake.
        let register: Arc<RegisterFn> = Arc::new(move |handle| {
            Cancel::with_current(|c| {
                if let Some(c) = c {
                    c.register_handle(&handle)
                }
            });
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(handle.clone());
            forward(handle)
        });
        let inner = ConnectionDetails {
            uri: details.uri,
            addrs: details.addrs.clone(),
            config: details.config,
            request_level: details.request_level,
            resolver: details.resolver,
            now: details.now,
            timeout: details.timeout,
            current_time: details.current_time.clone(),
            run_connector: details.run_connector.clone(),
            register_shutdown: register,
        };
        let _ = CONNECTING.try_with(|c| c.set(c.get() + 1));
        let result = self.0.connect(&inner, None);
        let _ = CONNECTING.try_with(|c| c.set(c.get().saturating_sub(1)));
        let Some(transport) = result? else {
            return Ok(None);
        };
        let handles = std::mem::take(&mut *handles.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(Some(Tracked {
            inner: transport,
            handles,
            token: Cancel::current(),
        }))
    }
}

/// A connection as a call sees it: see [`Outer`].
#[derive(Debug)]
pub(super) struct Tracked<T> {
    inner: T,
    /// The sockets under this connection.
    handles: Vec<Weak<dyn ShutdownHandle>>,
    /// The token they were last registered with.
    token: Option<Cancel>,
}

impl<T> Tracked<T> {
    /// Registers the sockets with the current call's token when not done for it yet.
    fn track(&mut self) {
        let handles = &self.handles;
        let token = &mut self.token;
        Cancel::with_current(|current| match current {
            Some(c) if !token.as_ref().is_some_and(|t| t.same(c)) => {
                for h in handles {
                    c.register_handle(h);
                }
                *token = Some(c.clone());
            }
            _ => {}
        });
    }
}

impl<T: Transport> Transport for Tracked<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.track();
        if CONNECTING.try_with(Cell::get).unwrap_or(0) == 0 {
            let _ = SENT.try_with(|s| s.set(true));
        }
        self.inner.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.track();
        self.inner.await_input(timeout)
    }

    fn maybe_await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.track();
        self.inner.maybe_await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_interleave_starting_with_the_first() {
        let a: Vec<SocketAddr> = [
            "[::1]:1",
            "[::2]:1",
            "127.0.0.1:1",
            "[::3]:1",
            "127.0.0.2:1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let got: Vec<String> = interleave(&a).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            got,
            [
                "[::1]:1",
                "127.0.0.1:1",
                "[::2]:1",
                "127.0.0.2:1",
                "[::3]:1"
            ]
        );
    }

    #[test]
    fn socket_timeouts_change_only_when_needed() {
        let s = Duration::from_secs;
        assert!(!timeout_changed(None, None));
        assert!(timeout_changed(None, Some(s(5))));
        assert!(timeout_changed(Some(s(5)), None));
        // Shorter than wanted: a read could time out early.
        assert!(timeout_changed(Some(s(4)), Some(s(5))));
        // Slightly longer: kept.
        assert!(!timeout_changed(
            Some(s(3600)),
            Some(s(3600) - Duration::from_millis(3))
        ));
        assert!(timeout_changed(Some(s(3600)), Some(s(3598))));
        assert!(timeout_changed(
            Some(s(2)),
            Some(Duration::from_millis(1900))
        ));
    }

    #[test]
    fn request_bytes_are_held_until_the_first_read_and_leave_in_one_send() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut conn = Conn::new(client, 16 * 1024, 128 * 1024);
        let timeout = NextTimeout {
            after: UreqDuration::Exact(Duration::from_secs(5)),
            reason: ureq::Timeout::Global,
            per_read: None,
            per_write: None,
        };
        for part in [&b"POST / HTTP/1.1\r\n\r\n"[..], b"{\"n\":1}"] {
            let out = conn.buffers().output();
            out[..part.len()].copy_from_slice(part);
            conn.transmit_output(part.len(), timeout).unwrap();
        }
        let mut buf = [0u8; 256];
        let held = server.read(&mut buf);
        assert!(
            matches!(&held, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "sent before the read: {held:?}"
        );
        server.write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
        assert!(conn.await_input(timeout).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        let n = server.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"POST / HTTP/1.1\r\n\r\n{\"n\":1}");
    }

    #[test]
    fn a_forgotten_address_set_is_resolved_again() {
        let cache = DnsCache::default();
        let uri: Uri = "http://example.test:8080/x".parse().unwrap();
        let key = host_port(&uri).unwrap();
        assert_eq!(key, ("example.test".to_string(), 8080));
        let mut addrs = ResolvedSocketAddrs::from_fn(|_| "0.0.0.0:0".parse().unwrap());
        addrs.push("127.0.0.1:8080".parse().unwrap());
        cache.put(key.clone(), addrs);
        assert!(cache.get(&key).is_some());
        cache.forget(&uri);
        assert!(cache.get(&key).is_none());
    }
}
