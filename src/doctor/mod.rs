//! `oidc-bff doctor --config FILE` (SPEC §7): a configuration checked against the live IdP(s),
//! one line per check — `ok`, `warn` or `fail`, the check's name, a short explanation — and
//! exit 1 on any `fail`. For each provider (`[oidc]`, then every `[[providers]]` entry):
//! `discovery`, `jwks`, `revocation`, `end-session`, `par`, `dpop` (when on),
//! `backchannel-logout` (when `[session] url` is set), `client-credentials`, `clock` and
//! `redirect-uris`; then `cookie-budget` once. Nothing printed holds a secret, a key, a token or
//! an IdP's message beyond its filtered `error` code. Protocol only: no HTTP framework.

mod clock;
mod idp;
mod local;
mod report;

pub use clock::WARN_SECS as CLOCK_WARN_SECS;
pub use local::PROXY_LINE_BYTES;
pub use report::{Line, Status};

use crate::settings::Settings;

/// Run every check of `settings`, handing the lines to `print` provider by provider (a
/// provider's lines once all its checks are done: at most a few `http_timeout_secs`). Returns
/// the worst status seen.
pub async fn run(settings: &Settings, mut print: impl FnMut(&Line)) -> Status {
    let mut worst = Status::Ok;
    let mut emit = |line: Line| {
        worst = worst.max(line.status());
        print(&line);
    };
    let several = !settings.providers.is_empty();
    let backchannel = settings
        .session
        .url
        .is_some()
        .then(|| format!("{}{}/backchannel-logout", settings.server.public_origin, settings.server.base_path));
    for p in std::iter::once(&settings.oidc).chain(&settings.providers) {
        let mut lines = idp::check(p, backchannel.as_deref()).await;
        lines.push(local::redirect_uris(p));
        for line in lines {
            emit(if several { line.prefixed(&p.name) } else { line });
        }
    }
    emit(local::cookie_budget(settings));
    worst
}
