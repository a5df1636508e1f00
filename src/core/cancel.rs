//! Cancelling a call from another thread (the add-in's `CancelJob`, a batch, a stream's
//! callback): a shared flag plus the sockets the call is using right now.
//!
//! A call runs inside [`Cancel::scope`], which makes the token the calling thread's current
//! one. The transport registers each socket it reads or writes with [`Cancel::current`]'s
//! token ([`Cancel::register`]); [`Cancel::cancel`] sets the flag and shuts every registered
//! socket down, so a read blocked for minutes on a generating server returns at once. The
//! core maps any failure of a cancelled call to [`super::Error::Cancelled`].

use std::cell::RefCell;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A cancellation token: cheap to clone, shared by the call and whoever may cancel it.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    cancelled: AtomicBool,
    /// Clones of the sockets in use by the call (shut down on cancel).
    sockets: Mutex<Vec<TcpStream>>,
}

thread_local! {
    // No destructor that outlives a call matters here: `scope` restores the previous value.
    static CURRENT: RefCell<Option<Cancel>> = const { RefCell::new(None) };
}

impl Cancel {
    /// A new token, not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels: sets the flag and shuts down every socket the call registered. Idempotent;
    /// callable from any thread.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        let sockets =
            std::mem::take(&mut *self.0.sockets.lock().unwrap_or_else(|e| e.into_inner()));
        for s in sockets {
            let _ = s.shutdown(Shutdown::Both);
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
        if self.is_cancelled() {
            let _ = clone.shutdown(Shutdown::Both);
            return;
        }
        self.0
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(clone);
    }

    /// Whether two handles are the same token.
    pub fn same(&self, other: &Cancel) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Runs `f` with this token as the calling thread's current one (restored afterwards,
    /// also on panic).
    pub fn scope<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Cancel>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let prev = self.0.take();
                let _ = CURRENT.try_with(|c| *c.borrow_mut() = prev);
            }
        }
        let prev = CURRENT.with(|c| c.borrow_mut().replace(self.clone()));
        let _restore = Restore(prev);
        f()
    }

    /// The calling thread's current token, if a call runs inside [`Cancel::scope`].
    pub fn current() -> Option<Cancel> {
        CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
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
