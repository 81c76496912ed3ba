//! The keys a token may be signed with: certificates from `rootcertbundle` (and, for
//! distribution 3 setups, a JWKS file), each findable the three ways issuers name their key:
//! an `x5c` chain whose leaf is one of the bundle's certificates, a `kid` that is the libtrust
//! key ID (GitLab, distribution 2.x), or a `kid` that is the RFC 7638 JWK thumbprint
//! (distribution 3.x).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::{Digest, Sha256};
use x509_cert::der::{Decode, Encode};
use x509_cert::spki::{ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;

const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The key types tokens can be verified with (`ring`'s: no P-521, no HMAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyType {
    /// Whether a token signed with `alg` can be from a key of this type. Checked before the
    /// signature, so a key is never used with an algorithm it was not made for.
    pub fn fits(self, alg: Algorithm) -> bool {
        use Algorithm as A;
        match self {
            KeyType::Rsa => matches!(alg, A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512),
            KeyType::P256 => alg == A::ES256,
            KeyType::P384 => alg == A::ES384,
            KeyType::Ed25519 => alg == A::EdDSA,
        }
    }

    /// The algorithm Berth's issuer signs with for a key of this type.
    pub fn signing_algorithm(self) -> Algorithm {
        match self {
            KeyType::Rsa => Algorithm::RS256,
            KeyType::P256 => Algorithm::ES256,
            KeyType::P384 => Algorithm::ES384,
            KeyType::Ed25519 => Algorithm::EdDSA,
        }
    }
}

/// One trusted public key.
pub struct TrustedKey {
    pub kind: KeyType,
    pub decoding: DecodingKey,
    /// The libtrust key ID of the key (`ABCD:EFGH:…`).
    pub libtrust_kid: String,
    /// The RFC 7638 thumbprint (base64url SHA-256 of the canonical JWK).
    pub thumbprint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// Every key a verifier trusts, indexed each way a token may name one.
#[derive(Default)]
pub struct TrustStore {
    by_cert: HashMap<Vec<u8>, Arc<TrustedKey>>,
    by_kid: HashMap<String, Arc<TrustedKey>>,
}

impl TrustStore {
    /// Loads `rootcertbundle` (PEM certificates) and, if given, a JWKS file.
    pub fn load(bundle: Option<&Path>, jwks: Option<&Path>) -> Result<TrustStore, KeyError> {
        let mut store = TrustStore::default();
        if let Some(path) = bundle {
            let pem = read(path)?;
            let certs =
                Certificate::load_pem_chain(&pem).map_err(|e| invalid(path, format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(invalid(path, "no certificate in the bundle".into()));
            }
            for cert in certs {
                let der = cert.to_der().map_err(|e| invalid(path, e.to_string()))?;
                let key =
                    Arc::new(from_spki(&cert.tbs_certificate.subject_public_key_info).map_err(|m| invalid(path, m))?);
                store.by_kid.insert(key.libtrust_kid.clone(), key.clone());
                store.by_kid.insert(key.thumbprint.clone(), key.clone());
                store.by_cert.insert(der, key);
            }
        }
        if let Some(path) = jwks {
            let set: JwkSet =
                serde_json::from_slice(&read(path)?).map_err(|e| invalid(path, format!("not a JWK set: {e}")))?;
            for jwk in &set.keys {
                let key = Arc::new(from_jwk(jwk).map_err(|m| invalid(path, m))?);
                if let Some(kid) = &jwk.common.key_id {
                    store.by_kid.insert(kid.clone(), key.clone());
                }
                store.by_kid.insert(key.thumbprint.clone(), key.clone());
            }
        }
        Ok(store)
    }

    /// A store holding one certificate (DER), for an issuer verifying its own tokens.
    pub fn single(cert_der: &[u8]) -> Result<TrustStore, String> {
        let cert = Certificate::from_der(cert_der).map_err(|e| e.to_string())?;
        let key = Arc::new(from_spki(&cert.tbs_certificate.subject_public_key_info)?);
        let mut store = TrustStore::default();
        store.by_kid.insert(key.libtrust_kid.clone(), key.clone());
        store.by_kid.insert(key.thumbprint.clone(), key.clone());
        store.by_cert.insert(cert_der.to_vec(), key);
        Ok(store)
    }

    pub fn is_empty(&self) -> bool {
        self.by_cert.is_empty() && self.by_kid.is_empty()
    }

    /// The key whose certificate is the leaf (first) of an `x5c` chain.
    pub fn by_leaf(&self, leaf_der: &[u8]) -> Option<&Arc<TrustedKey>> {
        self.by_cert.get(leaf_der)
    }

    /// The key a `kid` names: a JWKS key ID, a libtrust key ID or a JWK thumbprint.
    pub fn by_kid(&self, kid: &str) -> Option<&Arc<TrustedKey>> {
        self.by_kid.get(kid)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read { path: path.display().to_string(), source })
}

fn invalid(path: &Path, message: String) -> KeyError {
    KeyError::Invalid { path: path.display().to_string(), message }
}

/// A trusted key from a certificate's SubjectPublicKeyInfo.
pub fn from_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<TrustedKey, String> {
    let spki_der = spki.to_der().map_err(|e| e.to_string())?;
    let raw = spki.subject_public_key.raw_bytes();
    let (kind, decoding, jwk) = match spki.algorithm.oid {
        RSA => {
            let k = pkcs1::RsaPublicKey::from_der(raw).map_err(|e| format!("bad RSA key: {e}"))?;
            let (n, e) = (k.modulus.as_bytes(), k.public_exponent.as_bytes());
            let jwk =
                format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, URL_SAFE_NO_PAD.encode(e), URL_SAFE_NO_PAD.encode(n));
            (KeyType::Rsa, DecodingKey::from_rsa_raw_components(n, e), jwk)
        }
        EC => {
            let curve: ObjectIdentifier = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as().ok())
                .ok_or("an EC key without its curve")?;
            let (kind, crv, len) = match curve {
                P256 => (KeyType::P256, "P-256", 32),
                P384 => (KeyType::P384, "P-384", 48),
                other => return Err(format!("EC curve {other} is not supported (P-256, P-384)")),
            };
            if raw.len() != 1 + 2 * len || raw[0] != 4 {
                return Err("EC point is not uncompressed".into());
            }
            let (x, y) = (&raw[1..1 + len], &raw[1 + len..]);
            let jwk = format!(
                r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(x),
                URL_SAFE_NO_PAD.encode(y)
            );
            (kind, DecodingKey::from_ec_der(raw), jwk)
        }
        ED25519 => {
            let jwk = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, URL_SAFE_NO_PAD.encode(raw));
            (KeyType::Ed25519, DecodingKey::from_ed_der(raw), jwk)
        }
        other => return Err(format!("key algorithm {other} is not supported (RSA, EC P-256/P-384, Ed25519)")),
    };
    Ok(TrustedKey {
        kind,
        decoding,
        libtrust_kid: libtrust_key_id(&spki_der),
        thumbprint: sha256_b64url(jwk.as_bytes()),
    })
}

fn from_jwk(jwk: &jsonwebtoken::jwk::Jwk) -> Result<TrustedKey, String> {
    let decoding = DecodingKey::from_jwk(jwk).map_err(|e| format!("bad JWK: {e}"))?;
    let (kind, canonical) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => (KeyType::Rsa, format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, p.e, p.n)),
        AlgorithmParameters::EllipticCurve(p) => {
            let (kind, crv) = match p.curve {
                EllipticCurve::P256 => (KeyType::P256, "P-256"),
                EllipticCurve::P384 => (KeyType::P384, "P-384"),
                _ => return Err("EC curve not supported (P-256, P-384)".into()),
            };
            (kind, format!(r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#, p.x, p.y))
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            (KeyType::Ed25519, format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, p.x))
        }
        AlgorithmParameters::OctetKey(_) => return Err("symmetric keys are never trusted".into()),
    };
    Ok(TrustedKey { kind, decoding, libtrust_kid: String::new(), thumbprint: sha256_b64url(canonical.as_bytes()) })
}

fn sha256_b64url(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(b))
}

/// libtrust's key ID: the first 240 bits of SHA-256 over the DER SubjectPublicKeyInfo, in
/// base32, in groups of four separated by `:`.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(spki_der);
    let mut chars = String::with_capacity(59);
    // 30 bytes = 48 base32 characters, no padding.
    for group in hash[..30].chunks(5) {
        let mut v: u64 = 0;
        for b in group {
            v = v << 8 | *b as u64;
        }
        for i in (0..8).rev() {
            chars.push(ALPHABET[((v >> (i * 5)) & 31) as usize] as char);
        }
    }
    let groups: Vec<&str> = (0..12).map(|i| &chars[i * 4..i * 4 + 4]).collect();
    groups.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtrust_key_id_shape() {
        let kid = libtrust_key_id(b"anything");
        assert_eq!(kid.len(), 59);
        assert_eq!(kid.split(':').count(), 12);
        assert!(kid.chars().all(|c| c == ':' || c.is_ascii_uppercase() || ('2'..='7').contains(&c)));
    }

    #[test]
    fn a_generated_certificate_is_found_by_each_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["berth".into()]).unwrap().self_signed(&key).unwrap();
        let store = TrustStore::single(cert.der()).unwrap();
        let k = store.by_leaf(cert.der()).unwrap();
        assert_eq!(k.kind, KeyType::P256);
        assert_eq!(libtrust_key_id(&key.public_key_der()), k.libtrust_kid);
        assert!(store.by_kid(&k.libtrust_kid).is_some());
        assert!(store.by_kid(&k.thumbprint).is_some());
        assert!(store.by_kid("nope").is_none());
    }
}
