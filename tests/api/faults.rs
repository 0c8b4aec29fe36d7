//! Fault injection with a fake IdP (wiremock): every failure of SPEC §3.3–§3.4 answers its
//! SPEC code, stores nothing, and is never a 500.

use crate::helpers::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KID: &str = "test-key-1";

fn rsa_key(file: &str) -> EncodingKey {
    let pem = std::fs::read(format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{e}"));
    EncodingKey::from_rsa_pem(&pem).unwrap_or_else(|e| panic!("{e}"))
}

struct Fake {
    server: MockServer,
    issuer: String,
    bff: Bff,
    browser: Browser,
    state: String,
    nonce: String,
}

impl Fake {
    async fn start(vars: &[(&str, &str)]) -> Fake {
        Self::start_with_jwks(vars, None).await
    }

    /// `extra_jwk`: one more key published in the JWKS.
    async fn start_with_jwks(vars: &[(&str, &str)], extra_jwk: Option<Value>) -> Fake {
        Self::start_full(vars, extra_jwk, "").await
    }

    async fn start_full(vars: &[(&str, &str)], extra_jwk: Option<Value>, extra_toml: &str) -> Fake {
        oidc_bff::startup::install_crypto_providers();
        let server = MockServer::start().await;
        let issuer = format!("{}/ENV/as", server.uri());
        let discovery = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "end_session_endpoint": format!("{issuer}/signoff"),
            "authorization_response_iss_parameter_supported": true,
            "dpop_signing_alg_values_supported": ["ES256"],
        });
        Mock::given(method("GET"))
            .and(path("/ENV/as/.well-known/openid-configuration"))
            .respond_with(ResponseTemplate::new(200).set_body_json(discovery))
            .mount(&server)
            .await;
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa_key("rsa.pem"), Algorithm::RS256)
            .unwrap_or_else(|e| panic!("{e}"));
        jwk.common.key_id = Some(KID.into());
        let mut keys = vec![serde_json::to_value(&jwk).unwrap_or_default()];
        keys.extend(extra_jwk);
        Mock::given(method("GET"))
            .and(path("/ENV/as/jwks"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": keys})))
            .mount(&server)
            .await;
        let listener = reserve().await;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let bff = spawn_bff(listener, settings_with(port, &issuer, vars, extra_toml)).await;
        let mut browser = Browser::new(&bff);
        let start = browser.get(&bff.url("/login?return_to=/x")).await;
        let auth = url::Url::parse(&start.location()).unwrap_or_else(|e| panic!("{e}"));
        let q: std::collections::HashMap<_, _> = auth.query_pairs().into_owned().collect();
        Fake { server, issuer, bff, browser, state: q["state"].clone(), nonce: q["nonce"].clone() }
    }

    fn claims(&self) -> Value {
        let now = oidc_bff::clock::now();
        json!({"iss": self.issuer, "sub": "alice", "aud": "bff-basic", "iat": now, "exp": now + 300, "nonce": self.nonce})
    }

    fn sign(&self, claims: &Value, key: &str) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(KID.into());
        jsonwebtoken::encode(&h, claims, &rsa_key(key)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn sign_with(&self, claims: &Value, alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, claims, key).unwrap_or_else(|e| panic!("{e}"))
    }

    async fn callback(&mut self) -> Resp {
        let url = self.bff.url(&format!("/callback?code=c0de&state={}&iss={}", self.state, urlencode(&self.issuer)));
        self.browser.get(&url).await
    }

    fn token_response(id_token: &str) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "at-123", "token_type": "Bearer", "expires_in": 3600, "id_token": id_token}),
        )
    }

    async fn token_answers(&self, template: ResponseTemplate) {
        Mock::given(method("POST")).and(path("/ENV/as/token")).respond_with(template).mount(&self.server).await;
    }

    /// Present the callback; assert the status and code, and that no session was stored.
    async fn callback_fails(&mut self, status: u16, code: &str) -> Resp {
        let url = self.bff.url(&format!("/callback?code=c0de&state={}&iss={}", self.state, urlencode(&self.issuer)));
        let r = self.browser.get(&url).await;
        assert_eq!(r.status, status, "{}", r.body);
        assert!(r.body.contains(&format!("<code>{code}</code>")), "expected {code}: {}", r.body);
        assert!(self.browser.jar().keys().all(|k| !k.starts_with("__Host-bff") || k.starts_with("__Host-bff-tx.")));
        let s = self.browser.session(&self.bff).await;
        assert_eq!(s.status, 401, "nothing may be stored");
        r
    }
}

#[tokio::test]
async fn rp_id_token_sig_rs256_a_valid_token_logs_in() {
    let mut f = Fake::start(&[]).await;
    let t = f.sign(&f.claims(), "rsa.pem");
    f.token_answers(Fake::token_response(&t)).await;
    let url = f.bff.url(&format!("/callback?code=c0de&state={}&iss={}", f.state, urlencode(&f.issuer)));
    let r = f.browser.get(&url).await;
    assert_eq!((r.status, r.location()), (302, "/x".to_owned()), "{}", r.body);
    assert_eq!(f.browser.session(&f.bff).await.status, 200);
}

#[tokio::test]
async fn token_endpoint_invalid_grant_is_token_exchange_failed() {
    let mut f = Fake::start(&[]).await;
    f.token_answers(
        ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant", "error_description": "<b>nope</b>"})),
    )
    .await;
    let r = f.callback_fails(400, "token_exchange_failed").await;
    assert!(r.body.contains("invalid_grant") && !r.body.contains("nope"));
}

#[tokio::test]
async fn token_endpoint_500_is_idp_unavailable() {
    let mut f = Fake::start(&[]).await;
    f.token_answers(ResponseTemplate::new(500).set_body_string("boom")).await;
    f.callback_fails(502, "idp_unavailable").await;
}

#[tokio::test]
async fn token_endpoint_redirect_is_idp_unavailable_and_not_followed() {
    let mut f = Fake::start(&[]).await;
    f.token_answers(ResponseTemplate::new(302).insert_header("location", "http://127.0.0.1:1/steal")).await;
    f.callback_fails(502, "idp_unavailable").await;
}

#[tokio::test]
async fn token_endpoint_timeout_is_idp_timeout() {
    let mut f = Fake::start(&[("BFF_OIDC__HTTP_TIMEOUT_SECS", "1")]).await;
    let t = f.sign(&f.claims(), "rsa.pem");
    f.token_answers(Fake::token_response(&t).set_delay(Duration::from_millis(2500))).await;
    f.callback_fails(504, "idp_timeout").await;
}

#[tokio::test]
async fn non_json_token_response_is_idp_unavailable() {
    let mut f = Fake::start(&[]).await;
    f.token_answers(ResponseTemplate::new(200).set_body_string("<html>hello</html>")).await;
    f.callback_fails(502, "idp_unavailable").await;
}

#[tokio::test]
async fn rp_id_token_bad_sig_rs256_is_invalid_id_token() {
    let mut f = Fake::start(&[]).await;
    let t = f.sign(&f.claims(), "rsa2.pem");
    f.token_answers(Fake::token_response(&t)).await;
    f.callback_fails(400, "invalid_id_token").await;
}

#[tokio::test]
async fn rp_id_token_sig_none_is_invalid_id_token() {
    use base64::Engine;
    let mut f = Fake::start(&[]).await;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let t = format!("{}.{}.", b64(&json!({"alg": "none", "kid": KID})), b64(&f.claims()));
    f.token_answers(Fake::token_response(&t)).await;
    f.callback_fails(400, "invalid_id_token").await;
}

#[tokio::test]
async fn id_token_hs256_signed_with_the_public_key_is_invalid_id_token() {
    let mut f = Fake::start(&[]).await;
    let pem = std::fs::read(format!("{}/tests/fixtures/rsa.pem", env!("CARGO_MANIFEST_DIR"))).unwrap_or_default();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(KID.into());
    let t = jsonwebtoken::encode(&h, &f.claims(), &EncodingKey::from_secret(&pem)).unwrap_or_default();
    f.token_answers(Fake::token_response(&t)).await;
    f.callback_fails(400, "invalid_id_token").await;
}

async fn refuses_claims(edit: impl Fn(&mut Value)) {
    let mut f = Fake::start(&[]).await;
    let mut c = f.claims();
    edit(&mut c);
    let t = f.sign(&c, "rsa.pem");
    f.token_answers(Fake::token_response(&t)).await;
    f.callback_fails(400, "invalid_id_token").await;
}

#[tokio::test]
async fn rp_id_token_issuer_mismatch_with_a_trailing_slash_is_invalid_id_token() {
    refuses_claims(|c| c["iss"] = json!(format!("{}/", c["iss"].as_str().unwrap_or("")))).await;
}

#[tokio::test]
async fn rp_id_token_aud_without_the_client_is_invalid_id_token() {
    refuses_claims(|c| c["aud"] = json!("someone-else")).await;
}

#[tokio::test]
async fn rp_nonce_invalid_is_invalid_id_token() {
    refuses_claims(|c| c["nonce"] = json!("not-the-nonce")).await;
}

#[tokio::test]
async fn rp_nonce_missing_is_invalid_id_token() {
    refuses_claims(|c| {
        if let Some(o) = c.as_object_mut() {
            o.remove("nonce");
        }
    })
    .await;
}

#[tokio::test]
async fn expired_id_token_is_invalid_id_token() {
    refuses_claims(|c| {
        c["exp"] = json!(oidc_bff::clock::now() - 3600);
        c["iat"] = json!(oidc_bff::clock::now() - 7200);
    })
    .await;
}

#[tokio::test]
async fn several_audiences_without_azp_is_invalid_id_token() {
    refuses_claims(|c| c["aud"] = json!(["bff-basic", "other"])).await;
}

#[tokio::test]
async fn at_hash_that_does_not_match_the_access_token_is_invalid_id_token() {
    refuses_claims(|c| c["at_hash"] = json!("AAAAAAAAAAAAAAAAAAAAAA")).await;
}

#[tokio::test]
async fn azp_other_than_the_client_is_invalid_id_token() {
    refuses_claims(|c| c["azp"] = json!("someone-else")).await;
}

#[tokio::test]
async fn iat_far_in_the_future_is_invalid_id_token() {
    refuses_claims(|c| c["iat"] = json!(oidc_bff::clock::now() + 3600)).await;
}

#[tokio::test]
async fn rp_id_token_iat_missing_is_invalid_id_token() {
    refuses_claims(|c| {
        if let Some(o) = c.as_object_mut() {
            o.remove("iat");
        }
    })
    .await;
}

#[tokio::test]
async fn rp_id_token_sub_missing_is_invalid_id_token() {
    refuses_claims(|c| {
        if let Some(o) = c.as_object_mut() {
            o.remove("sub");
        }
    })
    .await;
}

async fn token_body_fails(body: Value, status: u16, code: &str) {
    let mut f = Fake::start(&[]).await;
    f.token_answers(ResponseTemplate::new(200).set_body_json(body)).await;
    f.callback_fails(status, code).await;
}

#[tokio::test]
async fn token_type_other_than_bearer_is_idp_unavailable() {
    let f = Fake::start(&[]).await;
    let t = f.sign(&f.claims(), "rsa.pem");
    drop(f);
    token_body_fails(json!({"access_token": "a", "token_type": "mac", "id_token": t}), 502, "idp_unavailable").await;
}

/// SPEC §3.6: a proof was sent, so the token must be DPoP-bound; a Bearer one is refused, and
/// the same answer saying DPoP opens the session.
#[tokio::test]
async fn a_bearer_token_while_dpop_is_on_is_idp_unavailable() {
    let mut f = Fake::start(&[("BFF_OIDC__DPOP", "true")]).await;
    let t = f.sign(&f.claims(), "rsa.pem");
    f.token_answers(Fake::token_response(&t)).await;
    f.callback_fails(502, "idp_unavailable").await;
    let received = f.server.received_requests().await.unwrap_or_default();
    let token = received.iter().find(|r| r.url.path() == "/ENV/as/token").unwrap_or_else(|| panic!("no token call"));
    assert!(token.headers.get("dpop").is_some(), "the code exchange carried no DPoP proof");

    let mut f = Fake::start(&[("BFF_OIDC__DPOP", "true")]).await;
    let t = f.sign(&f.claims(), "rsa.pem");
    let body = json!({"access_token": "at-123", "token_type": "DPoP", "expires_in": 3600, "id_token": t});
    f.token_answers(ResponseTemplate::new(200).set_body_json(body)).await;
    assert_eq!(f.callback().await.status, 302);
}

/// SPEC §3.6: one retry with the nonce the IdP sends; an IdP that asks again is unavailable (a
/// refresh would keep its session), not a refusal of the code.
#[tokio::test]
async fn an_idp_that_keeps_asking_for_a_dpop_nonce_gets_one_retry_then_idp_unavailable() {
    let mut f = Fake::start(&[("BFF_OIDC__DPOP", "true")]).await;
    let again = ResponseTemplate::new(400)
        .insert_header("dpop-nonce", "nonce-1")
        .set_body_json(json!({"error": "use_dpop_nonce", "error_description": "nonce required"}));
    f.token_answers(again).await;
    f.callback_fails(502, "idp_unavailable").await;
    let received = f.server.received_requests().await.unwrap_or_default();
    let proofs: Vec<String> = received
        .iter()
        .filter(|r| r.url.path() == "/ENV/as/token")
        .map(|r| r.headers.get("dpop").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned())
        .collect();
    assert_eq!(proofs.len(), 2, "exactly one retry");
    let nonce_of = |jws: &str| {
        let payload = jws.split('.').nth(1).unwrap_or_default();
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap_or_default();
        serde_json::from_slice::<Value>(&bytes).unwrap_or_default()["nonce"].clone()
    };
    assert_eq!((nonce_of(&proofs[0]), nonce_of(&proofs[1])), (Value::Null, json!("nonce-1")));
}

#[tokio::test]
async fn token_response_without_id_token_is_idp_unavailable() {
    token_body_fails(json!({"access_token": "a", "token_type": "Bearer", "expires_in": 60}), 502, "idp_unavailable")
        .await;
}

#[tokio::test]
async fn non_positive_expires_in_is_idp_unavailable() {
    token_body_fails(
        json!({"access_token": "a", "token_type": "Bearer", "expires_in": 0, "id_token": "x.y.z"}),
        502,
        "idp_unavailable",
    )
    .await;
}

#[tokio::test]
async fn a_4xx_without_an_oauth_error_is_idp_unavailable() {
    let mut f = Fake::start(&[]).await;
    f.token_answers(ResponseTemplate::new(401).set_body_json(json!({"message": "nope"}))).await;
    f.callback_fails(502, "idp_unavailable").await;
}

#[tokio::test]
async fn an_oversized_token_response_is_idp_unavailable() {
    let mut f = Fake::start(&[]).await;
    let huge = "x".repeat(400 * 1024);
    f.token_answers(ResponseTemplate::new(200).set_body_json(json!({"access_token": huge, "token_type": "Bearer"})))
        .await;
    f.callback_fails(502, "idp_unavailable").await;
}

#[tokio::test]
async fn missing_iss_parameter_when_discovery_requires_it_is_invalid_issuer() {
    let mut f = Fake::start(&[]).await;
    let url = f.bff.url(&format!("/callback?code=c0de&state={}", f.state));
    let r = f.browser.get(&url).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("<code>invalid_issuer</code>"), "{}", r.body);
}

const LONG_SECRET: &str = "a-client-secret-of-at-least-32-bytes-for-hs256";

#[tokio::test]
async fn hs256_is_verified_with_the_client_secret_never_the_public_key() {
    let vars = [("BFF_OIDC__ID_TOKEN_SIGNING_ALGS", "RS256,HS256"), ("BFF_OIDC__CLIENT_SECRET", LONG_SECRET)];
    // Algorithm confusion: HMAC keyed with the IdP's public key material.
    let mut f = Fake::start(&vars).await;
    let jwks = reqwest::get(format!("{}/jwks", f.issuer))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    let pem = std::fs::read(format!("{}/tests/fixtures/rsa.pem", env!("CARGO_MANIFEST_DIR"))).unwrap_or_default();
    for key in [jwks.as_bytes(), pem.as_slice()] {
        let t = f.sign_with(&f.claims(), Algorithm::HS256, Some(KID), &EncodingKey::from_secret(key));
        f.server.reset().await;
        f.token_answers(Fake::token_response(&t)).await;
        let r = f.callback().await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.body.contains("invalid_id_token"));
        // The failed attempt spent the state; start a new login.
        f = Fake::start(&vars).await;
    }
    // Signed with the client secret: accepted.
    let t = f.sign_with(&f.claims(), Algorithm::HS256, None, &EncodingKey::from_secret(LONG_SECRET.as_bytes()));
    f.token_answers(Fake::token_response(&t)).await;
    let r = f.callback().await;
    assert_eq!(r.status, 302, "{}", r.body);
}

#[tokio::test]
async fn a_symmetric_key_in_the_jwks_is_never_used() {
    use base64::Engine;
    let k = b"a-shared-secret-published-by-a-hostile-jwks-endpoint!";
    let oct = json!({"kty": "oct", "kid": "hs", "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k)});
    let vars = [("BFF_OIDC__ID_TOKEN_SIGNING_ALGS", "RS256,HS256"), ("BFF_OIDC__CLIENT_SECRET", LONG_SECRET)];
    let mut f = Fake::start_with_jwks(&vars, Some(oct)).await;
    let t = f.sign_with(&f.claims(), Algorithm::HS256, Some("hs"), &EncodingKey::from_secret(k));
    f.token_answers(Fake::token_response(&t)).await;
    f.callback_fails(400, "invalid_id_token").await;
}

#[tokio::test]
async fn alg_that_disagrees_with_the_key_type_is_invalid_id_token() {
    let mut f = Fake::start(&[]).await;
    let pem = std::fs::read(format!("{}/tests/fixtures/ec.pem", env!("CARGO_MANIFEST_DIR"))).unwrap_or_default();
    let ec = EncodingKey::from_ec_pem(&pem).unwrap_or_else(|e| panic!("{e}"));
    // ES256 header naming the RSA key's kid.
    let t = f.sign_with(&f.claims(), Algorithm::ES256, Some(KID), &ec);
    f.token_answers(Fake::token_response(&t)).await;
    f.callback_fails(400, "invalid_id_token").await;
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_jwks_at_most_once_per_30_seconds() {
    let mut f = Fake::start(&[]).await;
    let jwks_fetches = |reqs: Vec<wiremock::Request>| reqs.iter().filter(|r| r.url.path() == "/ENV/as/jwks").count();
    assert_eq!(jwks_fetches(f.server.received_requests().await.unwrap_or_default()), 1, "the start-up fetch");
    let t = f.sign_with(&f.claims(), Algorithm::RS256, Some("unknown-1"), &rsa_key("rsa.pem"));
    f.token_answers(Fake::token_response(&t)).await;
    f.callback_fails(400, "invalid_id_token").await;
    assert_eq!(
        jwks_fetches(f.server.received_requests().await.unwrap_or_default()),
        2,
        "one refetch for the unknown kid"
    );
    // A second unknown kid within 30 s: no new fetch.
    let start = f.browser.get(&f.bff.url("/login")).await;
    let q: std::collections::HashMap<_, _> =
        url::Url::parse(&start.location()).map(|u| u.query_pairs().into_owned().collect()).unwrap_or_default();
    f.state = q["state"].clone();
    f.nonce = q["nonce"].clone();
    let t = f.sign_with(&f.claims(), Algorithm::RS256, Some("unknown-2"), &rsa_key("rsa.pem"));
    f.server.reset().await;
    f.token_answers(Fake::token_response(&t)).await;
    f.callback_fails(400, "invalid_id_token").await;
    assert_eq!(jwks_fetches(f.server.received_requests().await.unwrap_or_default()), 0, "rate-limited");
}

#[tokio::test]
async fn max_age_requires_a_recent_auth_time() {
    let toml = "[oidc.auth_params]\nmax_age = \"300\"\n";
    for (auth_time, ok) in
        [(None, false), (Some(oidc_bff::clock::now() - 3600), false), (Some(oidc_bff::clock::now() - 10), true)]
    {
        let mut f = Fake::start_full(&[], None, toml).await;
        let mut c = f.claims();
        if let Some(t) = auth_time {
            c["auth_time"] = json!(t);
        }
        let t = f.sign(&c, "rsa.pem");
        f.token_answers(Fake::token_response(&t)).await;
        if ok {
            assert_eq!(f.callback().await.status, 302);
        } else {
            f.callback_fails(400, "invalid_id_token").await;
        }
    }
}

fn public_jwk(file: &str, kid: Option<&str>) -> Value {
    let mut jwk =
        jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa_key(file), Algorithm::RS256).unwrap_or_else(|e| panic!("{e}"));
    jwk.common.key_id = kid.map(str::to_owned);
    serde_json::to_value(&jwk).unwrap_or_default()
}

#[tokio::test]
async fn rp_id_token_kid_absent_single_jwks_is_accepted() {
    let mut f = Fake::start(&[]).await;
    let t = f.sign_with(&f.claims(), Algorithm::RS256, None, &rsa_key("rsa.pem"));
    f.token_answers(Fake::token_response(&t)).await;
    assert_eq!(f.callback().await.status, 302);
}

#[tokio::test]
async fn rp_id_token_kid_absent_multiple_jwks_is_accepted_only_if_one_verifies() {
    // The JWKS holds rsa.pem (kid test-key-1) and rsa2.pem (no kid).
    let mut f = Fake::start_with_jwks(&[], Some(public_jwk("rsa2.pem", None))).await;
    let t = f.sign_with(&f.claims(), Algorithm::RS256, None, &rsa_key("rsa2.pem"));
    f.token_answers(Fake::token_response(&t)).await;
    assert_eq!(f.callback().await.status, 302);
    // Signed by a key in neither: refused.
    let mut g = Fake::start_with_jwks(&[], Some(public_jwk("rsa2.pem", Some("other")))).await;
    let unknown = jsonwebtoken::EncodingKey::from_rsa_pem(&rsa_pem_unlisted()).unwrap_or_else(|e| panic!("{e}"));
    let t = g.sign_with(&g.claims(), Algorithm::RS256, None, &unknown);
    g.token_answers(Fake::token_response(&t)).await;
    g.callback_fails(400, "invalid_id_token").await;
}

/// A third RSA key, published in no JWKS.
fn rsa_pem_unlisted() -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/rsa3.pem", env!("CARGO_MANIFEST_DIR"))).unwrap_or_default()
}

#[tokio::test]
async fn duplicate_kids_try_every_candidate_key() {
    let mut f = Fake::start_with_jwks(&[], Some(public_jwk("rsa2.pem", Some(KID)))).await;
    let t = f.sign_with(&f.claims(), Algorithm::RS256, Some(KID), &rsa_key("rsa2.pem"));
    f.token_answers(Fake::token_response(&t)).await;
    assert_eq!(f.callback().await.status, 302);
}

#[tokio::test]
async fn jwks_endpoint_failing_during_a_kid_miss_refetch_is_idp_unavailable() {
    let mut f = Fake::start(&[]).await;
    f.server.reset().await;
    Mock::given(method("GET"))
        .and(path("/ENV/as/jwks"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&f.server)
        .await;
    let t = f.sign_with(&f.claims(), Algorithm::RS256, Some("new-kid"), &rsa_key("rsa.pem"));
    f.token_answers(Fake::token_response(&t)).await;
    f.callback_fails(502, "idp_unavailable").await;
}

#[tokio::test]
async fn a_10_mib_token_response_is_cut_off_as_idp_unavailable() {
    let mut f = Fake::start(&[]).await;
    f.token_answers(ResponseTemplate::new(200).set_body_string("x".repeat(10 * 1024 * 1024))).await;
    f.callback_fails(502, "idp_unavailable").await;
}

#[tokio::test]
async fn rp_id_token_bad_sig_es256_is_invalid_id_token() {
    let fixtures = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let ec = |f: &str| {
        EncodingKey::from_ec_pem(&std::fs::read(format!("{fixtures}/{f}")).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut jwk =
        jsonwebtoken::jwk::Jwk::from_encoding_key(&ec("ec.pem"), Algorithm::ES256).unwrap_or_else(|e| panic!("{e}"));
    jwk.common.key_id = Some("ec-1".into());
    let mut f = Fake::start_with_jwks(&[], Some(serde_json::to_value(&jwk).unwrap_or_default())).await;
    // Signed by another P-256 key under the listed kid.
    let t = f.sign_with(&f.claims(), Algorithm::ES256, Some("ec-1"), &ec("ec2.pem"));
    f.token_answers(Fake::token_response(&t)).await;
    f.callback_fails(400, "invalid_id_token").await;
    // The listed key itself verifies.
    let mut g = Fake::start_with_jwks(&[], Some(serde_json::to_value(&jwk).unwrap_or_default())).await;
    let t = g.sign_with(&g.claims(), Algorithm::ES256, Some("ec-1"), &ec("ec.pem"));
    g.token_answers(Fake::token_response(&t)).await;
    assert_eq!(g.callback().await.status, 302);
}

/// An ID token whose base64url parts do not round-trip (padding, non-zero trailing bits, the
/// standard alphabet) cannot be stored as its decoded parts; the session would keep it as text
/// and lose its claims. Proven harmless: such a token is refused at login (invalid_id_token,
/// nothing stored), so no session ever holds one. A canonical token with the same claims logs in.
#[tokio::test]
async fn an_id_token_that_does_not_round_trip_base64url_is_refused_and_nothing_is_stored() {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    type Spelling = fn(&[u8]) -> String;
    let spellings: [(&str, Spelling); 4] = [
        ("canonical", |b| URL_SAFE_NO_PAD.encode(b)),
        ("padded", |b| URL_SAFE_NO_PAD.encode(b) + "=="),
        ("trailing bits", |b| {
            let mut s = URL_SAFE_NO_PAD.encode(b).into_bytes();
            let last = s.len() - 1;
            let v = ALPHABET.iter().position(|c| *c == s[last]).unwrap_or(0);
            s[last] = ALPHABET[v | 1];
            String::from_utf8(s).unwrap_or_default()
        }),
        ("standard alphabet", |b| STANDARD.encode(b).trim_end_matches('=').to_owned()),
    ];
    for (what, spell) in spellings {
        let mut f = Fake::start(&[]).await;
        // A payload whose length leaves 4 unused bits in its last character, and that holds
        // `+`/`/` in the standard alphabet (the `?>` filler).
        let mut claims = f.claims();
        for n in 0..6 {
            claims["filler"] = json!("?>".repeat(8) + &"x".repeat(n));
            if serde_json::to_vec(&claims).unwrap_or_default().len() % 3 == 1 {
                break;
            }
        }
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let header = URL_SAFE_NO_PAD.encode(format!("{{\"alg\":\"RS256\",\"kid\":\"{KID}\",\"typ\":\"JWT\"}}"));
        let input = format!("{header}.{}", spell(&payload));
        assert!(what == "canonical" || input != format!("{header}.{}", URL_SAFE_NO_PAD.encode(&payload)), "{what}");
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &rsa_key("rsa.pem"), Algorithm::RS256)
            .unwrap_or_else(|e| panic!("{e}"));
        f.token_answers(Fake::token_response(&format!("{input}.{signature}"))).await;
        if what == "canonical" {
            let r = f.callback().await;
            assert_eq!(r.status, 302, "{}", r.body);
            let s = f.browser.session(&f.bff).await;
            assert_eq!(s.json()["claims"]["filler"], claims["filler"], "claims shown as signed");
        } else {
            f.callback_fails(400, "invalid_id_token").await;
        }
    }
}
