//! DPoP (RFC 9449, SPEC §3.6): one P-256 key per session, the proofs that go with its token
//! requests and proxied calls, and the server nonces they must echo.
//!
//! The key is kept as its 32-byte private scalar (the sealed transaction cookie, then the
//! session). Proofs are signed with ring (about 24 µs per ES256 signature on the reference
//! machine, against about 600 µs through jsonwebtoken's RustCrypto backend); ring cannot
//! derive a public key from a bare scalar, so p256 does that, once per [`Signer`].

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

/// A session's DPoP private key: the P-256 scalar, and its signer once built.
#[derive(Clone)]
pub struct DpopKey {
    scalar: [u8; 32],
    signer: OnceLock<Option<Arc<Signer>>>,
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DpopKey([redacted])")
    }
}

impl DpopKey {
    /// A fresh key from the OS's randomness. A 32-byte string is a valid P-256 scalar unless it
    /// is zero or at least the group order (odds below 2^-32): draw again then.
    pub fn generate() -> Self {
        loop {
            let scalar = crate::secret::random_bytes::<32>();
            if let Some(k) = Self::from_scalar(scalar) {
                return k;
            }
        }
    }

    /// The key a sealed cookie or store row carried; `None` if it is not a P-256 scalar.
    pub fn from_scalar(scalar: [u8; 32]) -> Option<Self> {
        p256::SecretKey::from_bytes(&scalar.into()).ok()?;
        Some(Self { scalar, signer: OnceLock::new() })
    }

    /// base64url of the scalar (the transaction cookie's form).
    pub fn to_encoded(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.scalar)
    }

    pub fn from_encoded(s: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        Self::from_scalar(bytes.try_into().ok()?)
    }

    pub fn scalar(&self) -> &[u8; 32] {
        &self.scalar
    }

    /// The signer, built the first time a proof is needed and then shared by every request
    /// that holds this copy of the session. Building one is a scalar multiplication (~180 µs
    /// here, eight proofs' worth): a server-side session is decoded afresh on every request, and
    /// a cookie session after every re-seal, so the signers of recent keys are kept per thread.
    pub fn signer(&self) -> Option<&Arc<Signer>> {
        self.signer.get_or_init(|| recent::get_or_build(&self.scalar)).as_ref()
    }
}

/// A small per-thread, direct-mapped memo of signers by key (no lock on the request path),
/// like the session memo: 64 slots, replaced on collision, the full scalar compared in
/// constant time. It holds keys this process already holds in its sessions.
mod recent {
    use crate::oidc::dpop::Signer;
    use std::cell::RefCell;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Arc;

    const SLOTS: usize = 64;

    /// A key and its signer.
    type Slot = Option<([u8; 32], Arc<Signer>)>;

    thread_local! {
        static MEMO: (RandomState, RefCell<Vec<Slot>>) = (RandomState::new(), RefCell::new(vec![None; SLOTS]));
    }

    pub(super) fn get_or_build(scalar: &[u8; 32]) -> Option<Arc<Signer>> {
        MEMO.with(|(hasher, slots)| {
            let slot = (hasher.hash_one(scalar) as usize) % SLOTS;
            if let Ok(slots) = slots.try_borrow()
                && let Some((k, signer)) = &slots[slot]
                && crate::secret::ct_eq(k, scalar)
            {
                return Some(signer.clone());
            }
            let signer = Arc::new(Signer::new(scalar)?);
            if let Ok(mut slots) = slots.try_borrow_mut() {
                slots[slot] = Some((*scalar, signer.clone()));
            }
            Some(signer)
        })
    }
}

/// Signs proofs for one key.
pub struct Signer {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    /// base64url of the JOSE header, public key included: the same in every proof.
    header: String,
    /// RFC 7638 thumbprint (`dpop_jkt`, `cnf.jkt`).
    thumbprint: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").field("jkt", &self.thumbprint).finish()
    }
}

impl Signer {
    fn new(scalar: &[u8; 32]) -> Option<Self> {
        let secret = p256::SecretKey::from_bytes(&(*scalar).into()).ok()?;
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            scalar,
            point.as_bytes(),
            &rng,
        )
        .ok()?;
        // Uncompressed SEC1: 0x04 || X || Y.
        let public = pair.public_key().as_ref();
        let (x, y) = (URL_SAFE_NO_PAD.encode(&public[1..33]), URL_SAFE_NO_PAD.encode(&public[33..65]));
        // RFC 7638 §3.2: the required members, in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        let header =
            format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}}}"#);
        Some(Self { pair, rng, header: URL_SAFE_NO_PAD.encode(header), thumbprint })
    }

    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// A proof for one request (RFC 9449 §4.2): `htu` is the target URL without query and
    /// fragment; `ath` goes with an access token (resource requests), `nonce` when the server
    /// asked for one. `None` only if the signature fails, which ring reports for no valid key.
    pub fn proof(&self, htm: &str, htu: &str, ath: Option<&str>, nonce: Option<&str>, now: i64) -> Option<String> {
        let mut claims = Vec::with_capacity(160 + htu.len() + nonce.map_or(0, str::len));
        claims.extend_from_slice(br#"{"jti":""#);
        // 128 random bits, above the SPEC's 96.
        let jti = crate::secret::random_bytes::<16>();
        let mut jti_b64 = [0u8; 22];
        URL_SAFE_NO_PAD.encode_slice(jti, &mut jti_b64).ok()?;
        claims.extend_from_slice(&jti_b64);
        claims.extend_from_slice(br#"","htm":"#);
        // Method and URL go through the JSON string writer: no character can break out.
        serde_json::to_writer(&mut claims, htm).ok()?;
        claims.extend_from_slice(br#","htu":"#);
        serde_json::to_writer(&mut claims, htu).ok()?;
        claims.extend_from_slice(br#","iat":"#);
        claims.extend_from_slice(itoa::Buffer::new().format(now).as_bytes());
        if let Some(ath) = ath {
            claims.extend_from_slice(br#","ath":"#);
            serde_json::to_writer(&mut claims, ath).ok()?;
        }
        if let Some(nonce) = nonce {
            claims.extend_from_slice(br#","nonce":"#);
            serde_json::to_writer(&mut claims, nonce).ok()?;
        }
        claims.push(b'}');
        let mut jws = String::with_capacity(self.header.len() + claims.len() * 4 / 3 + 92);
        jws.push_str(&self.header);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut jws);
        let signature = self.pair.sign(&self.rng, jws.as_bytes()).ok()?;
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut jws);
        Some(jws)
    }
}

/// `ath`: base64url(SHA-256(access token)).
pub fn ath(access_token: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token))
}

/// RFC 9449 §8.1: `nonce = 1*NQCHAR`. Bounded, so a hostile server cannot grow our proofs.
pub fn nonce_ok(s: &str) -> bool {
    (1..=512).contains(&s.len()) && s.bytes().all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

/// The newest nonce each server gave us, by origin (SPEC §3.6: remembered per server origin).
/// The origins are the IdP's and the configured upstreams', so the map stays small; it is
/// bounded anyway.
#[derive(Debug, Default)]
pub struct Nonces {
    by_origin: RwLock<Vec<(Box<str>, Arc<str>)>>,
}

const MAX_ORIGINS: usize = 256;

impl Nonces {
    pub fn get(&self, origin: &str) -> Option<Arc<str>> {
        let list = self.by_origin.read().ok()?;
        list.iter().find(|(o, _)| &**o == origin).map(|(_, n)| n.clone())
    }

    /// Remember `nonce` for `origin`; a malformed one is ignored (and `false` returned).
    pub fn set(&self, origin: &str, nonce: &str) -> bool {
        if !nonce_ok(nonce) {
            tracing::warn!("a server sent a malformed DPoP-Nonce; ignored");
            return false;
        }
        let Ok(mut list) = self.by_origin.write() else { return false };
        match list.iter_mut().find(|(o, _)| &**o == origin) {
            Some((_, n)) if &**n == nonce => {}
            Some((_, n)) => *n = Arc::from(nonce),
            None => {
                if list.len() >= MAX_ORIGINS {
                    list.remove(0);
                }
                list.push((Box::from(origin), Arc::from(nonce)));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

    #[test]
    fn a_proof_verifies_with_its_own_jwk_and_carries_the_claims() {
        let key = DpopKey::generate();
        let signer = key.signer().cloned().unwrap_or_else(|| panic!("no signer"));
        let proof = signer
            .proof("GET", "https://api.example/x", Some("ath-value"), Some("n-1"), 1_700_000_000)
            .unwrap_or_default();
        let header = decode_header(&proof).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(header.typ.as_deref(), Some("dpop+jwt"));
        assert_eq!(header.alg, Algorithm::ES256);
        let jwk = header.jwk.unwrap_or_else(|| panic!("no jwk"));
        let thumb = jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256);
        assert_eq!(thumb.ok().as_deref(), Some(signer.thumbprint()));
        let mut v = Validation::new(Algorithm::ES256);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        let dk = DecodingKey::from_jwk(&jwk).unwrap_or_else(|e| panic!("{e}"));
        let claims = decode::<serde_json::Value>(&proof, &dk, &v).unwrap_or_else(|e| panic!("{e}")).claims;
        assert_eq!(claims["htm"], "GET");
        assert_eq!(claims["htu"], "https://api.example/x");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["ath"], "ath-value");
        assert_eq!(claims["nonce"], "n-1");
        assert_eq!(claims["jti"].as_str().map(str::len), Some(22));
        let again = signer.proof("GET", "https://api.example/x", None, None, 1).unwrap_or_default();
        let jti2 = decode::<serde_json::Value>(&again, &dk, &v).map(|d| d.claims["jti"].clone()).ok();
        assert_ne!(jti2.as_ref(), Some(&claims["jti"]));
    }

    #[test]
    fn a_signer_is_built_once_per_key_on_a_thread() {
        let key = DpopKey::generate();
        let a = key.signer().cloned();
        // Another copy of the same key (a session decoded again) finds the same signer.
        let again = DpopKey::from_scalar(*key.scalar()).and_then(|k| k.signer().cloned());
        assert!(matches!((&a, &again), (Some(x), Some(y)) if Arc::ptr_eq(x, y)));
        let other = DpopKey::generate().signer().cloned();
        assert!(matches!((&a, &other), (Some(x), Some(y)) if !Arc::ptr_eq(x, y)));
    }

    #[test]
    fn the_scalar_round_trips_and_two_keys_differ() {
        let a = DpopKey::generate();
        let back = DpopKey::from_encoded(&a.to_encoded()).unwrap_or_else(|| panic!("no key"));
        assert_eq!(back.scalar(), a.scalar());
        let ta = a.signer().map(|s| s.thumbprint().to_owned());
        assert_eq!(back.signer().map(|s| s.thumbprint().to_owned()), ta);
        let b = DpopKey::generate();
        assert_ne!(b.signer().map(|s| s.thumbprint().to_owned()), ta);
        assert!(DpopKey::from_scalar([0; 32]).is_none());
        assert!(DpopKey::from_scalar([0xff; 32]).is_none());
        assert_eq!(format!("{a:?}"), "DpopKey([redacted])");
    }

    #[test]
    fn nonces_are_checked_and_kept_per_origin() {
        let n = Nonces::default();
        assert!(n.set("https://a", "abc"));
        assert!(!n.set("https://a", "bad\"quote"));
        assert!(!n.set("https://a", ""));
        assert!(n.set("https://b", "xyz"));
        assert_eq!(n.get("https://a").as_deref(), Some("abc"));
        assert!(n.set("https://a", "def"));
        assert_eq!(n.get("https://a").as_deref(), Some("def"));
        assert_eq!(n.get("https://b").as_deref(), Some("xyz"));
        assert!(n.get("https://c").is_none());
    }
}
