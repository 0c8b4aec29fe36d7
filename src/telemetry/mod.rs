//! Log output: pretty for people, JSON lines for production (SPEC §7). `RUST_LOG` overrides
//! `[logging] level`. Nothing logged anywhere carries a token, code, cookie or secret: those
//! live in `Secret` and are never passed to a log macro.
//!
//! Every line goes through one buffered, non-blocking writer (`sink`); the access log writes
//! its lines there directly (`access`).

pub mod access;
pub mod context;
pub mod sink;
pub mod trace;

use crate::settings::{LogFormat, LoggingSettings};
use access::AccessLog;
use sink::Sink;
use std::sync::OnceLock;
use std::time::Duration;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// The process's access log, set by `init` when `[logging] access_log` is on. A process-wide
/// value like the tracing subscriber it sits beside: in-process test apps that never call
/// `init` log no access lines, as they log nothing else.
static ACCESS: OnceLock<AccessLog> = OnceLock::new();

/// How long the exit waits for the log writer to drain (a stderr that stopped reading must not
/// keep a stopped process alive).
const DRAIN_AT_EXIT: Duration = Duration::from_secs(5);

/// The access log, when on and initialised.
pub fn access_log() -> Option<&'static AccessLog> {
    ACCESS.get()
}

/// Held by `main` while serving: dropping it writes every pending line (access lines of the
/// requests answered while draining included) and stops the writer.
#[derive(Debug)]
pub struct LogGuard(Option<Sink>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        let Some(sink) = self.0.take() else { return };
        let c = sink.counts();
        // The last line: the lines dropped so far (pushed before closing, so that it is written
        // itself; no request is answered after it, so only a failing write could add to them).
        tracing::info!(
            access_lines_dropped = c.access_dropped,
            other_lines_dropped = c.other_dropped,
            "log writer closing"
        );
        // Nothing is said when the output did not drain: it is the output that is stuck, and
        // waiting on it again (std's stderr lock) could hold the exit forever.
        let _ = sink.close(DRAIN_AT_EXIT);
    }
}

pub fn init(logging: &LoggingSettings) -> LogGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&logging.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // The writer gets its own handle on fd 2: `std::io::Stderr` holds a process-wide lock for
    // the whole of a blocked write, which would stall any `eprintln!` (or panic message) too.
    let out: Box<dyn std::io::Write + Send> = match std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned() {
        Ok(fd) => Box::new(std::fs::File::from(fd)),
        Err(_) => Box::new(std::io::stderr()),
    };
    let (writer, sink) = match Sink::start(out, sink::DEFAULT_CAPACITY) {
        Ok(s) => (BoxMakeWriter::new(sink::OtherLines(s.clone())), Some(s)),
        Err(e) => {
            // No thread for the writer: log straight to stderr, without an access log.
            eprintln!("oidc-bff: cannot start the log writer ({e}); logging to stderr directly");
            (BoxMakeWriter::new(std::io::stderr), None)
        }
    };
    // Colour codes only for a person at a terminal: in a file or a log pipeline they are noise
    // (and formatting them was a third of the request span's cost).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    // No spans in the lines: a request's id comes from `context` (no span per request).
    let _ = match logging.format {
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false);
            builder
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(context::JsonWithRequestId(json))
                .try_init()
        }
        LogFormat::Pretty => builder
            .compact()
            .with_timer(context::TimeAndRequestId(tracing_subscriber::fmt::time::SystemTime))
            .try_init(),
    };
    // Access lines are INFO lines of the target `access`, as the filter sees them: a level above
    // info (or `RUST_LOG=…,access=off`) turns them off. Asked once, here, not per request.
    let wanted = logging.access_log && tracing::enabled!(target: "access", tracing::Level::INFO);
    if let Some(sink) = sink.as_ref().filter(|_| wanted) {
        let _ = ACCESS.set(AccessLog::new(sink.clone(), logging.format));
    }
    LogGuard(sink)
}
