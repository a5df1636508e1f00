//! Cancelling a call from another thread (the add-in's `CancelJob`, a batch, a stream's
//! callback): a shared flag plus the sockets the call is using right now.
//!
//! A call runs inside [`Cancel::scope`], which makes the token the calling thread's current
//! one. The transport registers each socket it reads or writes with [`Cancel::current`]'s
//! token ([`Cancel::register`]); [`Cancel::cancel`] sets the flag and shuts every registered
//! socket down, so a read blocked for minutes on a generating server returns at once. The
//! core maps any failure of a cancelled call to [`super::Error::Cancelled`].

use std::cell::Cell;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;
use ureq::unversioned::transport::ShutdownHandle;

/// A cancellation token: cheap to clone, shared by the call and whoever may cancel it.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<Inner>);

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    /// What to shut down on cancel: clones of sockets and the transport's shutdown handles.
    sockets: Mutex<Registered>,
    /// Woken by [`Cancel::cancel`], for [`Cancel::wait`].
    woken: Condvar,
}

#[derive(Default)]
struct Registered {
    streams: Vec<TcpStream>,
    handles: Vec<Weak<dyn ShutdownHandle>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel")
            .field("cancelled", &self.cancelled.load(Ordering::Relaxed))
            .finish()
    }
}

thread_local! {
    // A raw pointer, not an `Option<Cancel>`: a thread-local with a destructor would register
    // it with the C runtime on first use, and that keeps the shared library loaded after the
    // host's dlclose for as long as the thread lives. [`Cancel::scope`] keeps the token alive
    // while the pointer is set and restores the previous one.
    static CURRENT: Cell<*const Inner> = const { Cell::new(std::ptr::null()) };
}

impl Cancel {
    /// A new token, not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels: sets the flag, shuts down every socket the call registered and ends a
    /// [`Cancel::wait`]. Idempotent; callable from any thread.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        let registered = {
            let mut guard = self.0.sockets.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *guard)
        };
        self.0.woken.notify_all();
        for s in registered.streams {
            let _ = s.shutdown(Shutdown::Both);
        }
        for h in registered.handles.iter().filter_map(Weak::upgrade) {
            h.shutdown();
        }
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Registers a socket the call is using: it is shut down on cancel (at once when the token
    /// is already cancelled). `socket` is a clone (`try_clone`) the token keeps until the call
    /// ends; registering the same socket again is harmless.
    pub fn register(&self, socket: &TcpStream) {
        let Ok(clone) = socket.try_clone() else {
            return;
        };
        self.0
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .streams
            .push(clone);
        // Checked after the push: either cancel() took the list with our socket in it, or
        // its flag is visible here.
        if self.is_cancelled() {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// As [`Cancel::register`], for a transport's shutdown handle (kept weakly: the transport
    /// closes as usual when dropped).
    pub(crate) fn register_handle(&self, handle: &Weak<dyn ShutdownHandle>) {
        {
            let mut guard = self.0.sockets.lock().unwrap_or_else(|e| e.into_inner());
            guard.handles.retain(|h| h.strong_count() > 0);
            guard.handles.push(handle.clone());
        }
        if self.is_cancelled() {
            if let Some(h) = handle.upgrade() {
                h.shutdown();
            }
        }
    }

    /// Sleeps for `duration` or until the token is cancelled, whichever comes first; returns
    /// whether it was cancelled.
    pub fn wait(&self, duration: Duration) -> bool {
        let guard = self.0.sockets.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .0
            .woken
            .wait_timeout_while(guard, duration, |_| !self.is_cancelled());
        self.is_cancelled()
    }

    /// Whether two handles are the same token.
    pub fn same(&self, other: &Cancel) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Runs `f` with this token as the calling thread's current one (restored afterwards,
    /// also on panic).
    pub fn scope<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(*const Inner);
        impl Drop for Restore {
            fn drop(&mut self) {
                let _ = CURRENT.try_with(|c| c.set(self.0));
            }
        }
        let prev = CURRENT.with(|c| c.replace(Arc::as_ptr(&self.0)));
        let _restore = Restore(prev);
        f()
    }

    /// The calling thread's current token, if a call runs inside [`Cancel::scope`].
    pub fn current() -> Option<Cancel> {
        Self::with_current(|c| c.cloned())
    }

    /// Runs `f` with the calling thread's current token (no reference count taken).
    pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Cancel>) -> R) -> R {
        let ptr = CURRENT.try_with(|c| c.get()).unwrap_or(std::ptr::null());
        if ptr.is_null() {
            return f(None);
        }
        // SAFETY: `ptr` was set by `scope` on this thread from a live `Arc<Inner>` that the
        // scope's `&self` keeps alive until it restores the previous value; we are inside
        // that scope. ManuallyDrop: this borrowed view must not drop a reference count.
        let token = std::mem::ManuallyDrop::new(Cancel(unsafe { Arc::from_raw(ptr) }));
        f(Some(&token))
    }

    /// Whether the calling thread's current token is cancelled.
    pub(crate) fn current_cancelled() -> bool {
        Self::with_current(|c| c.is_some_and(Cancel::is_cancelled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    #[test]
    fn cancel_unblocks_a_read_on_another_thread() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _server = listener.accept().unwrap();
        let token = Cancel::new();
        token.register(&client);
        let t = token.clone();
        let started = Instant::now();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            t.cancel();
        });
        let mut buf = [0u8; 8];
        let _ = client.read(&mut buf);
        assert!(token.is_cancelled());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn scope_sets_and_restores_the_current_token() {
        assert!(Cancel::current().is_none());
        let a = Cancel::new();
        a.scope(|| assert!(Cancel::current().unwrap().same(&a)));
        assert!(Cancel::current().is_none());
    }
}
