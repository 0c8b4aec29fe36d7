//! Log output: pretty for people, JSON lines for production (SPEC §7). `RUST_LOG` overrides
//! `[logging] level`. Nothing logged anywhere carries a token, code, cookie or secret: those
//! live in `Secret` and are never passed to a log macro.

use crate::settings::{LogFormat, LoggingSettings};
use tracing_subscriber::EnvFilter;

pub fn init(logging: &LoggingSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&logging.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match logging.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
