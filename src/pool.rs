//! The fixed pool of worker threads that run sessions.
//!
//! It exists so the number of threads is fixed at start however many clients connect (no thread
//! per connection), as in the Rust Book's chapter 21 server. Workers take accepted connections
//! from one rendezvous channel: a hand-off succeeds only when a worker is free, which is how the
//! dispatcher knows to answer 421 instead of letting a client hang. A cloned crossbeam `Receiver`
//! is multi-consumer, so no `Mutex` is needed. Dropping the pool drops its sender and joins the
//! workers, which finish their current session first; the channel closes, and the join returns,
//! only once every sender from [`Pool::sender`] is dropped too.
//!
//! Every worker has a stack of [`WORKER_STACK`] bytes. With many workers, most of them waiting
//! in an idle session, the stack pages each has touched are most of the server's memory, so the
//! session path is kept shallow (see the constant).

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::Sender;

/// Each worker thread's stack: 256 KiB of address space, of which only the pages a session touches
/// become resident.
///
/// How it was sized (`/proc/PID/mem` of a running server read for the lowest non-zero byte of each
/// worker's stack, fresh stack pages being zero): a whole session (EHLO, two messages by DATA and
/// BDAT, NOOP, HELP, VRFY, RSET, a syntax error) with `RUST_LOG=trace` reaches 28 KiB below the top
/// in a debug build, 8.0 KiB in a release build (51 and 11.8 KiB before its frames were trimmed);
/// capturing and formatting a backtrace, what the panic hook does with `RUST_BACKTRACE` set (the
/// test `a_worker_can_format_a_backtrace_and_panic`), passes with a 32 KiB stack in a debug build
/// and overflows 16 KiB. 256 KiB is eight times the deepest of these; std's default, 2 MiB, would
/// only add address space (2 GiB of it for 1 000 workers) that nothing uses.
///
/// What is resident is what a session touched, and a page once touched stays. In a release build
/// glibc's thread descriptor, TLS and thread start take the top 4.5 KiB (std's thread start begins
/// 4 616 bytes below the top); a session greeted and past EHLO reaches 7.2 KiB below the top, and
/// one that also sent MAIL, RCPT, DATA, RSET, NOOP and QUIT 8.0 KiB (8 152 bytes): two pages, 8 KiB
/// per idle worker (three pages, 11.9 KiB deep, before the frames were trimmed: 4 MiB more for
/// 1 000 idle sessions). A refused command whose refusal is logged still reaches 8.6 KiB, the third
/// page (env_logger's formatting of a line is about 2 KiB deep). The 3.5 KiB left for every frame
/// from the pool loop to the deepest call of a command is why the session path is kept shallow: the
/// protocol core (288 bytes) is on the heap; the connection's set-up and tear-down, MAIL, RCPT,
/// delivery (`handoff.rs`) and rare paths are functions of their own (`#[inline(never)]`, so their
/// locals are not in the frame below every command); the states that hold a transaction box it, and
/// an action boxes its envelope (a state moved through the transition function is 80 bytes, not
/// 248); and the greeting, EHLO reply and reply codes are written without `core::fmt`. `cargo test
/// --release --test memory` fails if an idle session's worker holds more than those two pages.
pub(crate) const WORKER_STACK: usize = 256 * 1024;

/// What a worker does with one connection.
pub(crate) type Handler<T> = Arc<dyn Fn(T) + Send + Sync>;

/// A fixed set of worker threads serving connections (of type `T`) one at a time each.
pub(crate) struct Pool<T> {
    sender: Option<Sender<T>>,
    workers: Vec<JoinHandle<()>>,
}

impl<T: Send + 'static> Pool<T> {
    /// Starts `size` workers running `handler`.
    pub(crate) fn new(size: usize, handler: Handler<T>) -> io::Result<Pool<T>> {
        let (sender, receiver) = crossbeam_channel::bounded::<T>(0);
        let mut pool = Pool {
            sender: Some(sender),
            workers: Vec::with_capacity(size),
        };
        for n in 0..size {
            let receiver = receiver.clone();
            let handler = Arc::clone(&handler);
            // On error the pool built so far is dropped, which stops and joins its workers.
            let worker = thread::Builder::new()
                .name(format!("mboxd-worker-{n}"))
                .stack_size(WORKER_STACK)
                .spawn(move || {
                    // A worker woken by its client's next command waits for the thread running
                    // to finish its turn instead of preempting it: where clients and server
                    // share the cores (a test suite, a benchmark), a client then sends more
                    // commands before the workers run. README, "Where the time goes": 10% less
                    // CPU per message with smtp-source's 20 sessions; one session unchanged.
                    if let Err(e) = crate::os::batch_scheduling() {
                        log::debug!("worker {n}: SCHED_BATCH refused ({e}); default policy kept");
                    }
                    for stream in receiver.iter() {
                        // The session catches its own panics; this keeps the worker serving even
                        // if something outside it panics.
                        if panic::catch_unwind(AssertUnwindSafe(|| handler(stream))).is_err() {
                            log::error!("worker {n}: a connection handler panicked; serving on");
                        }
                    }
                })?;
            pool.workers.push(worker);
        }
        Ok(pool)
    }

    /// A sender that hands a connection to a free worker.
    pub(crate) fn sender(&self) -> Option<Sender<T>> {
        self.sender.clone()
    }
}

impl<T> Drop for Pool<T> {
    fn drop(&mut self) {
        drop(self.sender.take());
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                log::error!("a worker thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn workers_serve_many_connections_and_join_on_drop() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        let pool = Pool::new(
            2,
            Arc::new(move |_stream: TcpStream| {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
        let sender = pool.sender().unwrap();
        for _ in 0..10 {
            let _client = TcpStream::connect(addr).unwrap();
            let (stream, _) = listener.accept().unwrap();
            sender.send(stream).unwrap();
        }
        drop(sender);
        drop(pool);
        assert_eq!(served.load(Ordering::SeqCst), 10);
    }

    #[test]
    fn workers_run_under_sched_batch_and_their_starter_keeps_its_policy() {
        let before = crate::os::scheduling_policy().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let pool = Pool::new(
            1,
            Arc::new(move |_stream: TcpStream| {
                tx.send(crate::os::scheduling_policy().unwrap()).unwrap();
            }),
        )
        .unwrap();
        let sender = pool.sender().unwrap();
        let _client = TcpStream::connect(addr).unwrap();
        let (stream, _) = listener.accept().unwrap();
        sender.send(stream).unwrap();
        let policy = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(policy, Ok(libc::SCHED_BATCH), "the worker's policy");
        assert_eq!(crate::os::scheduling_policy().unwrap(), before);
    }

    /// The deepest thing a worker may do besides a session: with `RUST_BACKTRACE` set, the
    /// panic hook captures and symbolises a backtrace. It must fit in [`WORKER_STACK`] (an
    /// overflow aborts the whole test binary), in debug builds too.
    #[test]
    fn a_worker_can_format_a_backtrace_and_panic() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let formatted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&formatted);
        let pool = Pool::new(
            1,
            Arc::new(move |_stream: TcpStream| {
                let trace = std::backtrace::Backtrace::force_capture().to_string();
                counter.store(trace.len(), Ordering::SeqCst);
                panic!("after a backtrace of {} bytes", trace.len());
            }),
        )
        .unwrap();
        let sender = pool.sender().unwrap();
        let _client = TcpStream::connect(addr).unwrap();
        let (stream, _) = listener.accept().unwrap();
        sender.send(stream).unwrap();
        drop(sender);
        drop(pool);
        assert!(formatted.load(Ordering::SeqCst) > 0);
    }

    #[test]
    fn a_panicking_handler_does_not_kill_its_worker() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        let pool = Pool::new(
            1,
            Arc::new(move |_stream: TcpStream| {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first connection panics");
                }
            }),
        )
        .unwrap();
        let sender = pool.sender().unwrap();
        for _ in 0..3 {
            let _client = TcpStream::connect(addr).unwrap();
            let (stream, _) = listener.accept().unwrap();
            sender.send(stream).unwrap();
        }
        drop(sender);
        drop(pool);
        assert_eq!(served.load(Ordering::SeqCst), 3);
    }
}
