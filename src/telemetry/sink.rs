//! The log output: every line (access lines and the application's own) goes into one bounded
//! in-memory buffer, and one thread of its own writes that buffer to stderr.
//!
//! Why not write from the request: a `write(2)` per line costs every request a syscall, and a
//! stderr that stops draining (a full pipe, a stuck log shipper) would stall every request
//! behind it. Here a request only copies its line into the buffer under a mutex that is never
//! held across I/O; when the buffer is full the line is dropped and counted, never waited for
//! (other lines have 64 KiB of their own above the access lines' share).
//! The writer thread takes the whole buffer at once (two buffers swap, so the requests never
//! wait for the write), at least every second, as soon as 32 KiB are pending, at once for a line
//! that is not an access line (warnings and errors are not held back), and at shutdown.
//!
//! Accounting: every access line handed to `push_access` ends up either written or counted in
//! `bff_access_log_dropped_total`; `written + dropped` equals the requests answered.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Pending bytes at which the writer is woken before its one-second tick.
const WAKE_AT: usize = 32 * 1024;

/// What the writer thread sleeps on between writes.
const TICK: Duration = Duration::from_secs(1);

/// Bytes held in memory at most, not counting the buffer the writer is writing.
pub const DEFAULT_CAPACITY: usize = 1024 * 1024;

/// Room kept above the capacity for lines that are not access lines: a flood of access lines
/// into a stalled output fills the capacity, and must not crowd out the warnings and errors
/// written meanwhile, nor the closing line that reports what was dropped.
const OTHER_RESERVE: usize = 64 * 1024;

/// The lines waiting for the writer.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Access lines among `bytes`, and the other lines.
    access_lines: u64,
    other_lines: u64,
    /// A line that is not an access line is waiting: write without waiting for the tick.
    urgent: bool,
    /// Set at shutdown: write what is pending, then stop.
    closing: bool,
    /// Set by the writer thread when it has stopped.
    stopped: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer (a full-enough buffer, an urgent line, shutdown).
    wake: Condvar,
    /// Wakes `close` when the writer has stopped.
    done: Condvar,
    capacity: usize,
    access_written: AtomicU64,
    access_dropped: AtomicU64,
    other_dropped: AtomicU64,
}

/// A handle on the log output. Cheap to clone; `close` flushes and stops the writer.
#[derive(Clone)]
pub struct Sink {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sink")
    }
}

/// Lines written and dropped so far (access lines; other lines dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub access_written: u64,
    pub access_dropped: u64,
    pub other_dropped: u64,
}

impl Sink {
    /// Start the writer thread on `out` (stderr in production; a pipe or a slow writer in tests).
    pub fn start(out: Box<dyn Write + Send>, capacity: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            done: Condvar::new(),
            capacity,
            access_written: AtomicU64::new(0),
            access_dropped: AtomicU64::new(0),
            other_dropped: AtomicU64::new(0),
        });
        let writer = Arc::clone(&shared);
        std::thread::Builder::new().name("log-writer".into()).spawn(move || write_loop(&writer, out))?;
        Ok(Self { shared })
    }

    /// Queue one access line (complete, newline included). Never blocks on I/O.
    pub fn push_access(&self, line: &[u8]) {
        if !self.push(line, true) {
            self.shared.access_dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("bff_access_log_dropped_total").increment(1);
        }
    }

    /// Queue any other log line; the writer is woken at once.
    pub fn push_other(&self, line: &[u8]) {
        if !self.push(line, false) {
            self.shared.other_dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("bff_log_dropped_total").increment(1);
        }
    }

    fn push(&self, line: &[u8], access: bool) -> bool {
        let limit = if access { self.shared.capacity } else { self.shared.capacity + OTHER_RESERVE };
        let mut p = lock(&self.shared.pending);
        if p.closing || p.bytes.len() + line.len() > limit {
            return false;
        }
        let was = p.bytes.len();
        p.bytes.extend_from_slice(line);
        if access {
            p.access_lines += 1;
        } else {
            p.other_lines += 1;
            p.urgent = true;
        }
        let wake = !access || (was < WAKE_AT && p.bytes.len() >= WAKE_AT);
        drop(p);
        if wake {
            self.shared.wake.notify_one();
        }
        true
    }

    /// An access line that could not even be queued (counted, so that written + dropped still
    /// equals the requests answered).
    pub fn lost_access_line(&self) {
        self.shared.access_dropped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("bff_access_log_dropped_total").increment(1);
    }

    pub fn counts(&self) -> Counts {
        Counts {
            access_written: self.shared.access_written.load(Ordering::Relaxed),
            access_dropped: self.shared.access_dropped.load(Ordering::Relaxed),
            other_dropped: self.shared.other_dropped.load(Ordering::Relaxed),
        }
    }

    /// Write what is pending and stop the writer, waiting at most `within` (a sink that stopped
    /// reading must not hold the process up forever). Lines pushed after this are dropped.
    /// Returns whether everything pending was written.
    pub fn close(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut p = lock(&self.shared.pending);
        p.closing = true;
        self.shared.wake.notify_one();
        while !p.stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // The output is stuck: what is still queued will not be written (nothing more
                // is accepted, and the process is about to exit). Count it as dropped.
                let (access, other) = (std::mem::take(&mut p.access_lines), std::mem::take(&mut p.other_lines));
                p.bytes.clear();
                self.shared.access_dropped.fetch_add(access, Ordering::Relaxed);
                self.shared.other_dropped.fetch_add(other, Ordering::Relaxed);
                return false;
            }
            p = match self.shared.done.wait_timeout(p, left) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}

/// The buffer's mutex: a panic elsewhere while holding it (there is no code that can) must not
/// silence the logs.
fn lock(m: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_loop(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut spare: Vec<u8> = Vec::new();
    loop {
        let mut p = lock(&shared.pending);
        if p.bytes.len() < WAKE_AT && !p.closing && !p.urgent {
            p = match shared.wake.wait_timeout(p, TICK) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        std::mem::swap(&mut p.bytes, &mut spare);
        let (lines, others) = (std::mem::take(&mut p.access_lines), std::mem::take(&mut p.other_lines));
        p.urgent = false;
        let closing = p.closing;
        drop(p);
        if !spare.is_empty() {
            if write_out(out.as_mut(), &spare).is_ok() {
                shared.access_written.fetch_add(lines, Ordering::Relaxed);
            } else {
                shared.access_dropped.fetch_add(lines, Ordering::Relaxed);
                shared.other_dropped.fetch_add(others, Ordering::Relaxed);
                metrics::counter!("bff_access_log_dropped_total").increment(lines);
                metrics::counter!("bff_log_dropped_total").increment(others);
            }
            spare.clear();
            // A burst may have grown the spare far beyond the usual size: give that back.
            if spare.capacity() > 4 * WAKE_AT {
                spare = Vec::new();
            }
        }
        if closing && lock(&shared.pending).bytes.is_empty() {
            break;
        }
    }
    let mut p = lock(&shared.pending);
    p.stopped = true;
    drop(p);
    shared.done.notify_all();
}

/// Write all of `buf`, waiting out a non-blocking stderr's `WouldBlock` (this is the writer's
/// own thread: it may wait; a half-written batch would splice a cut line onto the next one).
fn write_out(out: &mut (dyn Write + Send), mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match out.write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e),
        }
    }
    out.flush()
}

/// `tracing-subscriber`'s writer for the application's own log lines: the formatter hands over
/// each event whole in one `write_all`, so every `write` here is one complete line.
#[derive(Clone, Debug)]
pub struct OtherLines(pub Sink);

impl Write for OtherLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push_other(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for OtherLines {
    type Writer = OtherLines;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests;
