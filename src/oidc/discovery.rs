//! OpenID Provider metadata (`{issuer}/.well-known/openid-configuration`).

use super::http::{IdpHttp, IdpHttpError};
use crate::settings::Par;
use serde::Deserialize;
use url::Url;

#[derive(Debug, Clone)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub jwks_uri: Url,
    pub end_session_endpoint: Option<Url>,
    pub revocation_endpoint: Option<Url>,
    /// RFC 9207: when true, the callback's `iss` parameter is required.
    pub iss_parameter_supported: bool,
    /// RFC 9126.
    pub par_endpoint: Option<Url>,
    pub par_required: bool,
    /// RFC 9449 §5.1: absent means the IdP does not do DPoP.
    pub dpop_algs: Vec<String>,
    /// OpenID Connect Back-Channel Logout 1.0 §2.1 (`oidc-bff doctor` reports it).
    pub backchannel_logout_supported: bool,
}

#[derive(Deserialize)]
struct RawMetadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    end_session_endpoint: Option<String>,
    #[serde(default)]
    revocation_endpoint: Option<String>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
    #[serde(default)]
    pushed_authorization_request_endpoint: Option<String>,
    #[serde(default)]
    require_pushed_authorization_requests: bool,
    #[serde(default)]
    dpop_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    backchannel_logout_supported: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(transparent)]
    Http(#[from] IdpHttpError),
    #[error("discovery answered HTTP {0}")]
    Status(u16),
    #[error("discovery document is not valid: {0}")]
    Invalid(String),
    /// Fatal: the configuration names another issuer than the IdP claims to be.
    #[error("discovery issuer {found:?} differs from the configured oidc.issuer {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    /// Fatal: the IdP cannot do what the configuration requires (SPEC §3.5, §3.6).
    #[error("{0}")]
    Contradicts(&'static str),
}

fn endpoint(name: &str, s: &str) -> Result<Url, DiscoveryError> {
    let url = Url::parse(s).map_err(|_| DiscoveryError::Invalid(format!("{name} is not a URL")))?;
    IdpHttp::check_url(&url).map_err(|_| DiscoveryError::Invalid(format!("{name} must be https")))?;
    Ok(url)
}

/// What the configuration needs of the IdP: PAR (SPEC §3.5) and DPoP with ES256 (§3.6).
pub fn check_requirements(m: &ProviderMetadata, par: Par, dpop: bool) -> Result<(), DiscoveryError> {
    if par == Par::Required && m.par_endpoint.is_none() {
        return Err(DiscoveryError::Contradicts(
            "oidc.par = \"required\" but discovery lists no usable pushed_authorization_request_endpoint",
        ));
    }
    if par == Par::Off && m.par_required {
        return Err(DiscoveryError::Contradicts(
            "discovery says require_pushed_authorization_requests but oidc.par = \"off\"",
        ));
    }
    if m.par_required && m.par_endpoint.is_none() {
        return Err(DiscoveryError::Contradicts(
            "discovery says require_pushed_authorization_requests but lists no usable pushed_authorization_request_endpoint",
        ));
    }
    if dpop && !m.dpop_algs.iter().any(|a| a == "ES256") {
        return Err(DiscoveryError::Contradicts(
            "oidc.dpop = true but discovery's dpop_signing_alg_values_supported lacks ES256",
        ));
    }
    Ok(())
}

pub async fn discover(http: &IdpHttp, issuer: &str) -> Result<ProviderMetadata, DiscoveryError> {
    let url = Url::parse(&format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/')))
        .map_err(|_| DiscoveryError::Invalid("issuer is not a URL".into()))?;
    let resp = http.get("idp discovery", &url).await?;
    if !resp.status.is_success() {
        return Err(DiscoveryError::Status(resp.status.as_u16()));
    }
    let raw: RawMetadata = serde_json::from_slice(&resp.body).map_err(|e| DiscoveryError::Invalid(e.to_string()))?;
    if raw.issuer != issuer {
        return Err(DiscoveryError::IssuerMismatch { expected: issuer.to_owned(), found: raw.issuer });
    }
    Ok(ProviderMetadata {
        authorization_endpoint: endpoint("authorization_endpoint", &raw.authorization_endpoint)?,
        token_endpoint: endpoint("token_endpoint", &raw.token_endpoint)?,
        jwks_uri: endpoint("jwks_uri", &raw.jwks_uri)?,
        end_session_endpoint: raw
            .end_session_endpoint
            .as_deref()
            .map(|s| endpoint("end_session_endpoint", s))
            .transpose()?,
        revocation_endpoint: raw
            .revocation_endpoint
            .as_deref()
            .map(|s| endpoint("revocation_endpoint", s))
            .transpose()?,
        iss_parameter_supported: raw.authorization_response_iss_parameter_supported,
        // Unusable (not https, not a URL) is as good as absent: with par = "off" it must not stop
        // discovery, and par = "required" then refuses to start (`check_requirements`).
        par_endpoint: raw.pushed_authorization_request_endpoint.as_deref().and_then(|s| {
            endpoint("pushed_authorization_request_endpoint", s)
                .inspect_err(|e| tracing::warn!(error = %e, "ignoring the PAR endpoint"))
                .ok()
        }),
        par_required: raw.require_pushed_authorization_requests,
        dpop_algs: raw.dpop_signing_alg_values_supported,
        backchannel_logout_supported: raw.backchannel_logout_supported,
        issuer: raw.issuer,
    })
}
