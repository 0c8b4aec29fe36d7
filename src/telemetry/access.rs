//! The access log line (SPEC §7, `[logging] access_log`): one per answered request, written
//! straight into a reused buffer and queued on the sink — not an event through the tracing
//! formatter, whose field visitors and `format!` chains cost more than the request itself.
//!
//! JSON (`format = "json"`):
//! `{"timestamp":"…Z","level":"INFO","target":"access","request_id":"…","method":"GET",
//! "route":"session","path":"/session","status":200,"latency_us":81,"error":"","session":true}`
//! Pretty: `… INFO access: request_id=… method=GET route=session path="/session" status=200 …`.
//! The path is JSON-escaped in both (a quoted string), the request id is already restricted to
//! `[A-Za-z0-9._-]`, and nothing else comes from the client.

use super::sink::Sink;
use crate::settings::LogFormat;
use std::cell::{Cell, RefCell};

/// One answered request.
#[derive(Debug)]
pub struct Line<'a> {
    pub request_id: &'a str,
    pub method: &'a http::Method,
    pub route: &'static str,
    pub path: &'a str,
    pub status: u16,
    pub latency_us: u64,
    pub error: &'a str,
    pub session: bool,
    /// The request's span, with traces on.
    pub trace: Option<super::trace::Ids>,
}

/// Where access lines go, in which format.
#[derive(Debug, Clone)]
pub struct AccessLog {
    sink: Sink,
    format: LogFormat,
}

/// A line longer than this (a very long path) leaves the thread's buffer at its usual size.
const KEEP: usize = 4096;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

impl AccessLog {
    pub fn new(sink: Sink, format: LogFormat) -> Self {
        Self { sink, format }
    }

    pub fn write(&self, line: &Line<'_>) {
        SCRATCH.with(|scratch| {
            let Ok(mut buf) = scratch.try_borrow_mut() else {
                // Unreachable (a line is never written from inside another), but counted.
                self.sink.lost_access_line();
                return;
            };
            buf.clear();
            format_line(&mut buf, self.format, time::OffsetDateTime::now_utc(), line);
            self.sink.push_access(&buf);
            if buf.capacity() > KEEP {
                *buf = Vec::with_capacity(512);
            }
        });
    }
}

/// The timestamp as tracing-subscriber writes it (RFC 3339, microseconds, UTC), so access lines
/// and the application's lines sort together. The date and time to the second change once a
/// second: each thread keeps the last one it formatted and adds only the microseconds.
const SECOND: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");

thread_local! {
    static LAST_SECOND: Cell<(i64, [u8; 19])> = const { Cell::new((i64::MIN, [0; 19])) };
}

fn timestamp(buf: &mut Vec<u8>, at: time::OffsetDateTime) {
    let secs = at.unix_timestamp();
    let (cached, mut text) = LAST_SECOND.get();
    if cached != secs {
        let mut out = &mut text[..];
        if !matches!(at.format_into(&mut out, SECOND), Ok(19)) {
            // Outside years 0000-9999 (a clock gone wrong): formatted in full, not cached.
            let _ = at.format_into(buf, &time::format_description::well_known::Rfc3339);
            return;
        }
        LAST_SECOND.set((secs, text));
    }
    buf.extend_from_slice(&text);
    let mut frac = *b".000000Z";
    let mut n = at.microsecond();
    for d in frac[1..7].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    buf.extend_from_slice(&frac);
}

pub fn format_line(buf: &mut Vec<u8>, format: LogFormat, at: time::OffsetDateTime, l: &Line<'_>) {
    let mut int = itoa::Buffer::new();
    match format {
        LogFormat::Json => {
            buf.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(buf, at);
            buf.extend_from_slice(b"\",\"level\":\"INFO\",\"target\":\"access\",\"request_id\":");
            json_str(buf, l.request_id);
            if let Some(t) = &l.trace {
                // Hex digits only: no escaping needed.
                let _ = std::io::Write::write_fmt(
                    buf,
                    format_args!(",\"trace_id\":\"{}\",\"span_id\":\"{}\"", t.trace_id, t.span_id),
                );
            }
            buf.extend_from_slice(b",\"method\":");
            json_str(buf, l.method.as_str());
            buf.extend_from_slice(b",\"route\":\"");
            buf.extend_from_slice(l.route.as_bytes());
            buf.extend_from_slice(b"\",\"path\":");
            path_str(buf, l.path);
            buf.extend_from_slice(b",\"status\":");
            buf.extend_from_slice(int.format(l.status).as_bytes());
            buf.extend_from_slice(b",\"latency_us\":");
            buf.extend_from_slice(int.format(l.latency_us).as_bytes());
            buf.extend_from_slice(b",\"error\":\"");
            buf.extend_from_slice(l.error.as_bytes());
            buf.extend_from_slice(if l.session { b"\",\"session\":true}\n" } else { b"\",\"session\":false}\n" });
        }
        LogFormat::Pretty => {
            timestamp(buf, at);
            buf.extend_from_slice(b"  INFO access: request_id=");
            buf.extend_from_slice(l.request_id.as_bytes());
            if let Some(t) = &l.trace {
                let _ = std::io::Write::write_fmt(buf, format_args!(" trace_id={} span_id={}", t.trace_id, t.span_id));
            }
            buf.extend_from_slice(b" method=");
            buf.extend_from_slice(l.method.as_str().as_bytes());
            buf.extend_from_slice(b" route=");
            buf.extend_from_slice(l.route.as_bytes());
            buf.extend_from_slice(b" path=");
            path_str(buf, l.path);
            buf.extend_from_slice(b" status=");
            buf.extend_from_slice(int.format(l.status).as_bytes());
            buf.extend_from_slice(b" latency_us=");
            buf.extend_from_slice(int.format(l.latency_us).as_bytes());
            buf.extend_from_slice(b" error=");
            buf.extend_from_slice(if l.error.is_empty() { b"-" } else { l.error.as_bytes() });
            buf.extend_from_slice(if l.session { b" session=true\n" } else { b" session=false\n" });
        }
    }
}

/// The path as a JSON string, in ASCII: a request target may carry raw non-ASCII bytes, and
/// characters such as U+0085, U+2028 or a bidi override would end or reorder the line for some
/// readers. They are percent-encoded (the form the URI should have had); then quotes and
/// backslashes are escaped as JSON.
fn path_str(buf: &mut Vec<u8>, path: &str) {
    if path.is_ascii() {
        json_str(buf, path);
    } else {
        let encoded = percent_encoding::utf8_percent_encode(path, percent_encoding::CONTROLS).to_string();
        json_str(buf, &encoded);
    }
}

/// A JSON string, quotes included: serde_json's escaping (control characters, quotes,
/// backslashes), so no client byte can end the line or the field.
fn json_str(buf: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *buf, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(path: &str) -> Line<'_> {
        Line {
            request_id: "abc-1f",
            method: &http::Method::GET,
            route: "session",
            path,
            status: 200,
            latency_us: 81,
            error: "",
            session: true,
            trace: None,
        }
    }

    fn at() -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp_nanos(1_796_313_600_123_456_789)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn json_line_has_the_fields_and_request_id_at_the_top_level() {
        let mut buf = Vec::new();
        format_line(&mut buf, LogFormat::Json, at(), &line("/session"));
        let text = String::from_utf8(buf).unwrap_or_default();
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(v["timestamp"], "2026-12-03T16:00:00.123456Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "access");
        assert_eq!(v["request_id"], "abc-1f");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["route"], "session");
        assert_eq!(v["path"], "/session");
        assert_eq!(v["status"], 200);
        assert_eq!(v["latency_us"], 81);
        assert_eq!(v["error"], "");
        assert_eq!(v["session"], true);
    }

    #[test]
    fn timestamps_keep_their_microseconds_across_the_cached_second() {
        let base = 1_796_313_600_i128 * 1_000_000_000;
        for (nanos, want) in [
            (base + 5_000, "2026-12-03T16:00:00.000005Z"),
            (base + 999_999_999, "2026-12-03T16:00:00.999999Z"),
            (base + 1_000_000_000, "2026-12-03T16:00:01.000000Z"),
            (base - 1_000, "2026-12-03T15:59:59.999999Z"),
        ] {
            let at = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let mut buf = Vec::new();
            timestamp(&mut buf, at);
            assert_eq!(String::from_utf8(buf).unwrap_or_default(), want);
        }
    }

    #[test]
    fn hostile_paths_stay_inside_their_field_in_both_formats() {
        // ASCII controls are JSON-escaped; a path with any non-ASCII character (C1 controls,
        // line and paragraph separators, bidi overrides) is percent-encoded first.
        let ascii = "/a\"b\\c\n{\"status\":500}\r\u{1b}[31m";
        let unicode = "/a\"b\\c\n{\"status\":500}\r\u{1b}[31m\u{85}\u{9b}31m\u{2028}\u{202e}";
        let unicode_read = "/a\"b\\c%0A{\"status\":500}%0D%1B[31m%C2%85%C2%9B31m%E2%80%A8%E2%80%AE";
        for (path, read) in [(ascii, ascii), (unicode, unicode_read)] {
            for format in [LogFormat::Json, LogFormat::Pretty] {
                let mut buf = Vec::new();
                format_line(&mut buf, format, at(), &line(path));
                let text = String::from_utf8(buf).unwrap_or_default();
                assert_eq!(text.matches('\n').count(), 1, "{text}");
                assert!(text.is_ascii(), "{text}");
                assert!(!text.contains('\r') && !text.contains('\u{1b}'), "{text}");
                if format == LogFormat::Json {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    assert_eq!(v["path"], read);
                    assert_eq!(v["status"], 200);
                }
            }
        }
    }
}
