//! The one outbound client for every IdP call (SPEC §3.3): bounded time and response size,
//! never follows redirects (a 3xx is `idp_unavailable`), https required except on loopback.

use crate::settings::validate_is_loopback as is_loopback_host;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use std::time::Duration;
use url::Url;

/// Discovery documents, JWKS and token responses are small; anything larger is hostile.
pub const MAX_IDP_RESPONSE_BYTES: usize = 256 * 1024;

/// Why an IdP call failed, before it is mapped to a SPEC code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdpHttpError {
    #[error("IdP did not answer in time")]
    Timeout,
    #[error("IdP unreachable or misbehaving: {0}")]
    Unavailable(&'static str),
}

/// Why the outbound client could not be built (start-up only).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

#[derive(Debug, Clone)]
pub struct IdpHttp {
    client: reqwest::Client,
}

pub struct IdpResponse {
    pub status: StatusCode,
    pub content_type_json: bool,
    pub body: Bytes,
    /// RFC 9449 §8: the nonce the server wants in our next proof.
    pub dpop_nonce: Option<String>,
    /// The IdP's `Date` (doctor compares its clock with ours).
    pub date: Option<http::HeaderValue>,
}

impl IdpHttp {
    pub fn new(timeout: Duration) -> Result<Self, BuildError> {
        let tls = crate::tls::client_config()?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::tls::alpn(tls))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // Below the 5 s keep-alive of Node's HTTP server (and of many load balancers' idle
            // defaults): a token request is a POST, not retried once written, so it must never be
            // sent on a connection the IdP is closing at that moment. A refresh after a quiet spell
            // pays a new connection instead.
            .pool_idle_timeout(Duration::from_secs(4))
            .user_agent(concat!("oidc-bff/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    /// https, or http to a loopback host (development and tests).
    pub fn check_url(url: &Url) -> Result<(), IdpHttpError> {
        match url.scheme() {
            "https" => Ok(()),
            "http" if is_loopback_host(url) => Ok(()),
            _ => Err(IdpHttpError::Unavailable("IdP URL must be https")),
        }
    }

    /// GET `url`; `call` names the span (`idp discovery`, `idp jwks`).
    pub async fn get(&self, call: &'static str, url: &Url) -> Result<IdpResponse, IdpHttpError> {
        Self::check_url(url)?;
        let req = self.client.get(url.clone()).header(http::header::ACCEPT, "application/json");
        self.traced(call, &http::Method::GET, url, req).await
    }

    /// POST a form. `authorization` is an already-encoded `Authorization` value, `dpop` a proof;
    /// `call` names the span (`idp token`, `idp par`, `idp exchange`, `idp revocation`).
    pub async fn post_form(
        &self,
        call: &'static str,
        url: &Url,
        form: String,
        authorization: Option<String>,
        dpop: Option<String>,
    ) -> Result<IdpResponse, IdpHttpError> {
        Self::check_url(url)?;
        let mut req = self
            .client
            .post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json")
            .body(form);
        if let Some(a) = authorization {
            req = req.header(http::header::AUTHORIZATION, a);
        }
        if let Some(proof) = dpop {
            req = req.header("dpop", proof);
        }
        self.traced(call, &http::Method::POST, url, req).await
    }

    /// `send` in a client span (traces on), its `traceparent` sent to the IdP (SPEC §7: never a
    /// `tracestate`). The span records the IdP's scheme, host, port and status only.
    async fn traced(
        &self,
        call: &'static str,
        method: &http::Method,
        url: &Url,
        mut req: reqwest::RequestBuilder,
    ) -> Result<IdpResponse, IdpHttpError> {
        use crate::telemetry::trace::{Peer, Target, begin_call};
        let Some(span) = begin_call(call, Peer::Idp, method, &Target::of_url(url)) else {
            return self.send(req).await;
        };
        if let Some(tp) = span.traceparent() {
            req = req.header("traceparent", tp);
        }
        let result = self.send(req).await;
        match &result {
            Ok(r) => span.end(Some(r.status.as_u16()), None),
            Err(IdpHttpError::Timeout) => span.end(None, Some("idp_timeout")),
            Err(IdpHttpError::Unavailable(_)) => span.end(None, Some("idp_unavailable")),
        }
        result
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<IdpResponse, IdpHttpError> {
        let mut resp = req.send().await.map_err(map_err)?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(IdpHttpError::Unavailable("IdP answered with a redirect"));
        }
        if resp.content_length().is_some_and(|l| l > MAX_IDP_RESPONSE_BYTES as u64) {
            return Err(IdpHttpError::Unavailable("IdP response too large"));
        }
        let content_type_json = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
        let dpop_nonce = resp.headers().get("dpop-nonce").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let date = resp.headers().get(http::header::DATE).cloned();
        let mut body = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(map_err)? {
            if body.len() + chunk.len() > MAX_IDP_RESPONSE_BYTES {
                return Err(IdpHttpError::Unavailable("IdP response too large"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(IdpResponse { status, content_type_json, body: body.freeze(), dpop_nonce, date })
    }
}

fn map_err(e: reqwest::Error) -> IdpHttpError {
    if e.is_timeout() {
        IdpHttpError::Timeout
    } else if e.is_connect() {
        IdpHttpError::Unavailable("cannot connect to the IdP")
    } else {
        IdpHttpError::Unavailable("IdP request failed")
    }
}
