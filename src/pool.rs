//! The fixed pool of worker threads that run sessions.
//!
//! It exists so the number of threads is fixed at start however many clients connect (no thread
//! per connection), as in the Rust Book's chapter 21 server. Workers take accepted connections
//! from one rendezvous channel: a hand-off succeeds only when a worker is free, which is how the
//! dispatcher knows to answer 421 instead of letting a client hang. A cloned crossbeam `Receiver`
//! is multi-consumer, so no `Mutex` is needed. Dropping the pool closes the channel, then joins
//! the workers, which finish their current session first.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::Sender;

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
                .spawn(move || {
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
