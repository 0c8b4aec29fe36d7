//! The HTTP surface (SPEC §3, §5, §6, §7): thin axum handlers over the services `AppState`
//! composes. Each module owns a group of endpoints and exports `router()`; they are merged
//! here, with the proxy (`proxy::handle`) as the fallback.

mod backchannel;
mod body;
mod events;
mod health;
mod login;
mod logout;
mod proxy;
pub mod session;
mod upstream_call;
mod websocket;

use crate::error::{AppError, ErrorCode};
use crate::middleware;
use crate::state::AppState;
use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;

pub use session::session_body;

pub fn router(state: AppState) -> Router {
    let base = state.settings.server.base_path.clone();
    let spa = Router::new()
        .merge(login::spa_router())
        .merge(session::router())
        .merge(events::router())
        .merge(logout::spa_router())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), middleware::csrf));
    let bff = Router::new()
        .merge(spa)
        .merge(login::navigation_router())
        .merge(logout::navigation_router())
        .merge(backchannel::router());
    let bff = if base.is_empty() { bff } else { Router::new().nest(&base, bff) };
    let mut app = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(bff)
        .method_not_allowed_fallback(method_not_allowed);
    // Proxied routes, then the SPA's static files, then 404: all decided in one handler so
    // that the path check of SPEC §6 runs before any of them.
    app = app.fallback(proxy::handle);
    // CORS only exists for `allowed_origins`; without any, the layer would do nothing but
    // cost every request a boxed future.
    if !proxied_past_router(&state) {
        app = app.layer(axum::middleware::from_fn_with_state(state.clone(), middleware::cors));
    }
    app.with_state(state)
}

/// Whether `serve` may send proxied routes past the router: only while the router has no layer
/// of its own around every request (today: the CORS layer, with `allowed_origins`). A layer
/// added to `router()` must be reflected here.
fn proxied_past_router(state: &AppState) -> bool {
    state.settings.server.allowed_origins.is_empty()
}

/// Serve one request: the router for the BFF's own endpoints, the proxy handler for the rest
/// (`proxy::direct`), inside `middleware::observe`.
pub async fn serve(state: &AppState, router: Router, req: axum::extract::Request) -> axum::response::Response {
    middleware::observe(state, req, |req| async move {
        // A path that is not one of the BFF's own endpoints goes straight to the fallback
        // handler: the router would only fall through to it, after its own matching, boxing and
        // cloning. Not when the CORS layer wraps the router: every request then goes through it.
        let req = if proxied_past_router(state) {
            match proxy::direct(state, req).await {
                Ok(response) => return response,
                Err(req) => req,
            }
        } else {
            req
        };
        match tower::ServiceExt::oneshot(router, req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    })
    .await
}

async fn method_not_allowed() -> impl IntoResponse {
    AppError::from(ErrorCode::MethodNotAllowed)
}

#[cfg(test)]
mod tests {
    /// `serve` sends a path past the router unless it is one of `reserved_paths`: every path the
    /// router serves must be in that list (and routes may not overlap it, `settings::routes`).
    #[test]
    fn every_path_the_router_serves_is_a_reserved_path() {
        let reserved = crate::settings::reserved_paths("");
        let sources = [
            include_str!("mod.rs"),
            include_str!("backchannel.rs"),
            include_str!("login.rs"),
            include_str!("logout.rs"),
            include_str!("session.rs"),
            include_str!("events.rs"),
            include_str!("health.rs"),
            include_str!("proxy.rs"),
            include_str!("body.rs"),
        ];
        let mut seen = 0;
        for src in sources {
            for (i, pattern) in src.match_indices(".route(\"") {
                let path = src[i + pattern.len()..].split('"').next().unwrap_or_default();
                // `/callback/{provider}`: each provider's path is an endpoint (`endpoint_paths`),
                // and routes may not overlap anything below `/callback`.
                let path = path.strip_suffix("/{provider}").unwrap_or(path);
                assert!(reserved.iter().any(|r| r == path), "{path} is served by the router but not reserved");
                seen += 1;
            }
        }
        assert!(seen >= 10, "{seen}");
    }
}
