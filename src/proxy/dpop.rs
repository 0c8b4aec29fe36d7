//! DPoP on proxied requests (RFC 9449 §7, SPEC §3.6): `Authorization: DPoP <token>` and a fresh
//! proof per request, bound to the token by `ath`; the nonce an upstream asks for.

use crate::oidc::dpop::{Nonces, Signer, ath};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};
use std::sync::Arc;

pub static DPOP: HeaderName = HeaderName::from_static("dpop");
static DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// The credential of one proxied request for a session with a DPoP key.
pub struct DpopCall {
    authorization: HeaderValue,
    ath: String,
    signer: Arc<Signer>,
}

impl DpopCall {
    /// From the `Bearer <token>` value the session or the route's exchange gives: the same
    /// token under the DPoP scheme (RFC 9449 §7.1).
    pub fn new(bearer: &HeaderValue, signer: Arc<Signer>) -> Option<Self> {
        let token = bearer.as_bytes().strip_prefix(b"Bearer ")?;
        let mut value = Vec::with_capacity(5 + token.len());
        value.extend_from_slice(b"DPoP ");
        value.extend_from_slice(token);
        let mut authorization = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).ok()?;
        authorization.set_sensitive(true);
        Some(Self { authorization, ath: ath(token), signer })
    }

    pub fn authorization(&self) -> HeaderValue {
        self.authorization.clone()
    }

    /// A proof for `method` on `uri`, with the nonce its origin last asked for.
    pub fn proof(&self, method: &Method, uri: &Uri, nonces: &Nonces) -> Option<HeaderValue> {
        let (htu, origin_len) = htu(uri)?;
        let nonce = nonces.get(&htu[..origin_len]);
        let proof = self.signer.proof(method.as_str(), &htu, Some(&self.ath), nonce.as_deref(), crate::clock::now())?;
        let mut v = HeaderValue::try_from(proof).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

/// `htu`: the exact URL the request goes to, without query (an `http::Uri` has no fragment),
/// and how long its origin part is.
fn htu(uri: &Uri) -> Option<(String, usize)> {
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?.as_str();
    let path = uri.path();
    let mut s = String::with_capacity(scheme.len() + 3 + authority.len() + path.len());
    s.push_str(scheme);
    s.push_str("://");
    s.push_str(authority);
    let origin_len = s.len();
    s.push_str(path);
    Some((s, origin_len))
}

/// Remember a `DPoP-Nonce` the upstream sent; true when the answer is RFC 9449 §9's request to
/// send the request again with it (a 401 with `WWW-Authenticate: DPoP error="use_dpop_nonce"`).
pub fn take_nonce(status: StatusCode, headers: &HeaderMap, uri: &Uri, nonces: &Nonces) -> bool {
    let Some(nonce) = headers.get(&DPOP_NONCE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((htu, origin_len)) = htu(uri) else { return false };
    if !nonces.set(&htu[..origin_len], nonce) {
        return false;
    }
    // A challenge is recognised only as a field of its own that starts with the DPoP scheme; a
    // DPoP challenge after another scheme in one field gets no retry (the 401 goes back).
    status == StatusCode::UNAUTHORIZED
        && headers.get_all(header::WWW_AUTHENTICATE).iter().any(|v| {
            let v = v.as_bytes();
            v.len() > 5
                && v[..5].eq_ignore_ascii_case(b"DPoP ")
                && memchr::memmem::find(v, br#"error="use_dpop_nonce""#).is_some()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_is_the_url_without_query() {
        let uri: Uri = "http://127.0.0.1:9001/api/x?a=b".parse().unwrap_or_default();
        assert_eq!(htu(&uri), Some(("http://127.0.0.1:9001/api/x".to_owned(), 21)));
    }

    #[test]
    fn only_a_dpop_challenge_asks_for_a_retry() {
        let uri: Uri = "https://api.example/x".parse().unwrap_or_default();
        let nonces = Nonces::default();
        let mut h = HeaderMap::new();
        h.insert(&DPOP_NONCE, HeaderValue::from_static("n1"));
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"DPoP error="use_dpop_nonce""#));
        assert!(take_nonce(StatusCode::UNAUTHORIZED, &h, &uri, &nonces));
        assert_eq!(nonces.get("https://api.example").as_deref(), Some("n1"));
        // A nonce on a success is kept for the next request, without a retry.
        h.insert(&DPOP_NONCE, HeaderValue::from_static("n2"));
        assert!(!take_nonce(StatusCode::OK, &h, &uri, &nonces));
        assert_eq!(nonces.get("https://api.example").as_deref(), Some("n2"));
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer error="use_dpop_nonce""#));
        assert!(!take_nonce(StatusCode::UNAUTHORIZED, &h, &uri, &nonces));
        h.remove(&DPOP_NONCE);
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"DPoP error="use_dpop_nonce""#));
        assert!(!take_nonce(StatusCode::UNAUTHORIZED, &h, &uri, &nonces));
    }

    #[test]
    fn the_token_keeps_its_text_under_the_dpop_scheme() {
        let key = crate::oidc::dpop::DpopKey::generate();
        let signer = key.signer().cloned().unwrap_or_else(|| panic!("no signer"));
        let call = DpopCall::new(&HeaderValue::from_static("Bearer abc.def"), signer);
        let call = call.unwrap_or_else(|| panic!("no call"));
        assert_eq!(call.authorization().as_bytes(), b"DPoP abc.def");
        assert!(call.authorization().is_sensitive());
        assert_eq!(call.ath, ath(b"abc.def"));
        assert!(
            DpopCall::new(&HeaderValue::from_static("Basic x"), key.signer().cloned().unwrap_or_else(|| panic!()))
                .is_none()
        );
    }
}
