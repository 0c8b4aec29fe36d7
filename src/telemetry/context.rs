//! The request id on every log line a request writes, without a tracing span per request.
//!
//! A span cost each request about 3,700 instructions (creating it, formatting its fields into
//! the registry, entering and leaving it at every poll, closing it), a tenth of a `/session`
//! answer, for the sake of the few lines a request logs. The id rides in a task-local instead
//! (a copy of at most 64 bytes, swapped in and out at each poll) and is read by the
//! formatters below only when a line is written: JSON lines carry a top-level `request_id`, as
//! access lines do (SPEC §7); pretty lines show it after the time.

use std::fmt;
use std::future::Future;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The longest request id kept (incoming ids longer than this are replaced before they get here).
const MAX: usize = 64;

/// A request id, inline: copying it costs no allocation.
#[derive(Clone, Copy)]
pub struct RequestIdText {
    len: u8,
    bytes: [u8; MAX],
}

impl RequestIdText {
    /// The id as text; only `[A-Za-z0-9._-]` is kept, so it needs no escaping in JSON or text
    /// (the middleware validates ids before they get here; this keeps the promise local).
    fn new(id: &[u8]) -> Self {
        let mut bytes = [0u8; MAX];
        let mut len = 0;
        for &b in id.iter().take(MAX) {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                bytes[len] = b;
                len += 1;
            }
        }
        Self { len: len as u8, bytes }
    }

    fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("-")
    }
}

tokio::task_local! {
    static REQUEST_ID: RequestIdText;
}

/// Run `fut` with `id` as the request id of the lines it logs.
pub fn scope<F: Future>(id: &[u8], fut: F) -> impl Future<Output = F::Output> {
    REQUEST_ID.scope(RequestIdText::new(id), fut)
}

/// The request id of the task being polled, if it runs inside `scope`.
fn current() -> Option<RequestIdText> {
    REQUEST_ID.try_with(|id| *id).ok()
}

/// JSON lines: the inner formatter's line with `"request_id":"…"` (and, with traces on,
/// `"trace_id"` and `"span_id"`) added inside its closing brace. Lines outside a request are written straight through, unbuffered.
pub struct JsonWithRequestId<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for JsonWithRequestId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let Some(id) = current() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.trim_end_matches('\n');
        match body.strip_suffix('}') {
            Some(open) => {
                let sep = if open.ends_with('{') { "" } else { "," };
                match super::trace::current_ids() {
                    Some(t) => writeln!(
                        writer,
                        "{open}{sep}\"request_id\":\"{}\",\"trace_id\":\"{}\",\"span_id\":\"{}\"}}",
                        id.as_str(),
                        t.trace_id,
                        t.span_id
                    ),
                    None => writeln!(writer, "{open}{sep}\"request_id\":\"{}\"}}", id.as_str()),
                }
            }
            // Not a JSON object (never for the JSON formatter): written as it came.
            None => writer.write_str(&line),
        }
    }
}

/// Pretty lines: the time, then `[request id]` when the line belongs to a request.
pub struct TimeAndRequestId<T>(pub T);

impl<T: FormatTime> FormatTime for TimeAndRequestId<T> {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        self.0.format_time(w)?;
        match current() {
            Some(id) => write!(w, " [{}]", id.as_str()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_only_their_safe_characters_and_at_most_64_bytes() {
        assert_eq!(RequestIdText::new(b"req-abc.123_X").as_str(), "req-abc.123_X");
        assert_eq!(RequestIdText::new(b"a\"b\\c\n{d}").as_str(), "abcd");
        assert_eq!(RequestIdText::new(&[b'x'; 100]).as_str().len(), 64);
        assert_eq!(RequestIdText::new(b"").as_str(), "");
    }

    #[tokio::test]
    async fn the_id_is_visible_inside_the_scope_only() {
        assert!(current().is_none());
        let seen = scope(b"abc-1", async { current().map(|id| id.as_str().to_owned()) }).await;
        assert_eq!(seen.as_deref(), Some("abc-1"));
        assert!(current().is_none());
    }
}
