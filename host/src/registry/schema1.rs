//! Docker image manifest schema 1 (`compatibility.schema1.enabled`), for Docker clients of 1.9
//! and older. A signed manifest is a libtrust "pretty JWS": the manifest JSON with a
//! `signatures` array spliced in before its closing brace. Each signature's protected header
//! says where the splice is (`formatLength`, the length of the JSON before it, and
//! `formatTail`, the bytes after it), which gives back the signed payload: the manifest without
//! its signatures. That payload is what distribution stores and what the digest is computed
//! over, so a manifest keeps its digest whoever signed it.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm as JwsAlgorithm, DecodingKey};
use serde::Deserialize;
use serde_json::{Map, Value};
use x509_cert::der::Decode;

use super::digest::Digest;

pub const SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const UNSIGNED: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// Why a schema 1 manifest is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Schema1Error {
    /// Not a well-formed schema 1 manifest (`MANIFEST_INVALID`).
    #[error("{0}")]
    Invalid(String),
    /// Its signatures are missing, malformed or do not verify (`MANIFEST_UNVERIFIED`).
    #[error("{0}")]
    Unverified(String),
}

fn invalid(msg: impl Into<String>) -> Schema1Error {
    Schema1Error::Invalid(msg.into())
}

fn unverified(msg: impl Into<String>) -> Schema1Error {
    Schema1Error::Unverified(msg.into())
}

/// A schema 1 manifest whose signatures (if any) all verify.
#[derive(Debug)]
pub struct Manifest {
    pub name: String,
    pub tag: String,
    /// The `fsLayers` blob sums, in order (repeats kept).
    pub blob_sums: Vec<Digest>,
    /// The manifest without its signatures: what is stored and digested.
    pub canonical: Vec<u8>,
    /// Whether it came with signatures (served as `+prettyjws`), or as plain `+json`.
    pub signed: bool,
}

impl Manifest {
    pub fn media_type(&self) -> &'static str {
        if self.signed {
            SIGNED
        } else {
            UNSIGNED
        }
    }
}

/// Parses and verifies a schema 1 manifest as pushed. `require_signatures` is set when the
/// client called it `+prettyjws`: then a manifest without signatures is unverified, not plain.
pub fn parse(body: &[u8], require_signatures: bool) -> Result<Manifest, Schema1Error> {
    let outer: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not a JSON object: {e}")))?;
    let (canonical, signed) = match outer.get("signatures") {
        None if require_signatures => return Err(unverified("signed manifest has no signatures")),
        None => (body.to_vec(), false),
        Some(sigs) => {
            let payload = verify(body, sigs)?;
            // Everything a reader of the served bytes sees must be what was signed: the
            // manifest outside its signatures has to be the payload (a key repeated after the
            // signed part would otherwise override it for some JSON readers).
            let mut rest = outer.clone();
            rest.remove("signatures");
            let signed_part: Map<String, Value> = serde_json::from_slice(&payload)
                .map_err(|e| unverified(format!("signed payload is not a JSON object: {e}")))?;
            if rest != signed_part {
                return Err(unverified("the manifest differs from its signed payload"));
            }
            (payload, true)
        }
    };
    let m: Body = serde_json::from_slice(&canonical).map_err(|e| invalid(format!("not a schema 1 manifest: {e}")))?;
    if m.schema_version != 1 {
        return Err(invalid(format!("schemaVersion is {}, not 1", m.schema_version)));
    }
    if m.fs_layers.len() != m.history.len() {
        return Err(invalid(format!("{} fsLayers but {} history entries", m.fs_layers.len(), m.history.len())));
    }
    let blob_sums = m
        .fs_layers
        .iter()
        .enumerate()
        .map(|(i, l)| Digest::parse(&l.blob_sum).map_err(|e| invalid(format!("fsLayers[{i}].blobSum: {e}"))))
        .collect::<Result<_, _>>()?;
    Ok(Manifest { name: m.name, tag: m.tag, blob_sums, canonical, signed })
}

/// The fields of the payload the registry checks.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    schema_version: u64,
    name: String,
    tag: String,
    fs_layers: Vec<FsLayer>,
    history: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FsLayer {
    blob_sum: String,
}

#[derive(Deserialize)]
struct Signature {
    header: Header,
    signature: String,
    protected: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    jwk: Option<Jwk>,
    /// base64 DER certificates, the signer's first (libtrust's `x5c`).
    #[serde(rename = "x5c")]
    chain: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Protected {
    format_length: usize,
    format_tail: String,
}

/// libtrust's base64url: unpadded, though padding is tolerated.
fn b64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// Verifies every signature and returns the payload they sign.
fn verify(body: &[u8], sigs: &Value) -> Result<Vec<u8>, Schema1Error> {
    let sigs: Vec<Signature> =
        serde_json::from_value(sigs.clone()).map_err(|e| unverified(format!("malformed signatures: {e}")))?;
    if sigs.is_empty() {
        return Err(unverified("signatures is empty"));
    }
    let mut payload: Option<Vec<u8>> = None;
    for (i, sig) in sigs.iter().enumerate() {
        let bad = |what: &str| unverified(format!("signatures[{i}]: {what}"));
        let protected: Protected = b64url(&sig.protected)
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or_else(|| bad("protected header is not base64url JSON with formatLength and formatTail"))?;
        let tail = b64url(&protected.format_tail).ok_or_else(|| bad("formatTail is not base64url"))?;
        let head = body.get(..protected.format_length).ok_or_else(|| bad("formatLength is past the end"))?;
        let this = [head, &tail].concat();
        match &payload {
            None => payload = Some(this),
            Some(p) if *p != this => return Err(bad("signs a different payload than signatures[0]")),
            Some(_) => {}
        }
        let key = PublicKey::of(&sig.header).map_err(|e| bad(&e))?;
        let input = format!("{}.{}", sig.protected, URL_SAFE_NO_PAD.encode(payload.as_ref().unwrap()));
        key.verify(&sig.header.alg, input.as_bytes(), &sig.signature).map_err(|e| bad(&e))?;
    }
    Ok(payload.unwrap_or_default())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn by_name(crv: &str) -> Option<Curve> {
        match crv {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            _ => None,
        }
    }

    /// Bytes of one coordinate.
    fn field_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// The one algorithm libtrust signs with on this curve.
    fn alg(self) -> &'static str {
        match self {
            Curve::P256 => "ES256",
            Curve::P384 => "ES384",
            Curve::P521 => "ES512",
        }
    }
}

/// A signer's key, from the header's `jwk` or the first certificate of its `chain`.
enum PublicKey {
    /// SEC1 uncompressed point.
    Ec(Curve, Vec<u8>),
    Rsa(DecodingKey),
}

impl PublicKey {
    fn of(h: &Header) -> Result<PublicKey, String> {
        if let Some(first) = h.chain.as_ref().and_then(|c| c.first()) {
            let der = STANDARD.decode(first).map_err(|_| "x5c[0] is not base64")?;
            return PublicKey::from_certificate(&der);
        }
        let jwk = h.jwk.as_ref().ok_or("header has neither jwk nor x5c")?;
        let field = |v: &Option<String>, name: &str| {
            v.as_deref().and_then(b64url).ok_or_else(|| format!("jwk has no base64url {name}"))
        };
        match jwk.kty.as_str() {
            "EC" => {
                let curve = jwk
                    .crv
                    .as_deref()
                    .and_then(Curve::by_name)
                    .ok_or_else(|| format!("unsupported jwk curve {:?}", jwk.crv))?;
                let (x, y) = (field(&jwk.x, "x")?, field(&jwk.y, "y")?);
                let n = curve.field_len();
                if x.len() > n || y.len() > n {
                    return Err("jwk coordinates are longer than the curve's".into());
                }
                let mut point = vec![4u8];
                for c in [x, y] {
                    point.resize(point.len() + n - c.len(), 0);
                    point.extend_from_slice(&c);
                }
                Ok(PublicKey::Ec(curve, point))
            }
            "RSA" => {
                Ok(PublicKey::Rsa(DecodingKey::from_rsa_raw_components(&field(&jwk.n, "n")?, &field(&jwk.e, "e")?)))
            }
            other => Err(format!("unsupported jwk key type {other:?}")),
        }
    }

    fn from_certificate(der: &[u8]) -> Result<PublicKey, String> {
        const EC_KEY: &str = "1.2.840.10045.2.1";
        const RSA_KEY: &str = "1.2.840.113549.1.1.1";
        let cert = x509_cert::Certificate::from_der(der).map_err(|e| format!("x5c[0] is not a certificate: {e}"))?;
        let spki = &cert.tbs_certificate.subject_public_key_info;
        let key = spki.subject_public_key.raw_bytes().to_vec();
        match spki.algorithm.oid.to_string().as_str() {
            EC_KEY => {
                let curve_oid = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as::<x509_cert::der::asn1::ObjectIdentifier>().ok())
                    .map(|o| o.to_string());
                let curve = match curve_oid.as_deref() {
                    Some("1.2.840.10045.3.1.7") => Curve::P256,
                    Some("1.3.132.0.34") => Curve::P384,
                    Some("1.3.132.0.35") => Curve::P521,
                    other => return Err(format!("unsupported certificate curve {other:?}")),
                };
                Ok(PublicKey::Ec(curve, key))
            }
            RSA_KEY => Ok(PublicKey::Rsa(DecodingKey::from_rsa_der(&key))),
            other => Err(format!("unsupported certificate key algorithm {other}")),
        }
    }

    /// Checks `signature` (base64url) over `input` with the header's `alg`, which must be one
    /// the key signs with (as libtrust requires).
    fn verify(&self, alg: &str, input: &[u8], signature: &str) -> Result<(), String> {
        let ok = match self {
            PublicKey::Ec(curve, point) => {
                if alg != curve.alg() {
                    return Err(format!("alg {alg} does not go with a {curve:?} key"));
                }
                match curve {
                    Curve::P256 | Curve::P384 => {
                        let jws_alg = if *curve == Curve::P256 { JwsAlgorithm::ES256 } else { JwsAlgorithm::ES384 };
                        jsonwebtoken::crypto::verify(signature, input, &DecodingKey::from_ec_der(point), jws_alg)
                            .unwrap_or(false)
                    }
                    // jsonwebtoken (ring) has no ES512; P-521 verification would need the
                    // RustCrypto curves, whose digest features rebuild wasmtime.
                    Curve::P521 => return Err("P-521 (ES512) signatures are not supported".into()),
                }
            }
            PublicKey::Rsa(key) => {
                let jws_alg = match alg {
                    "RS256" => JwsAlgorithm::RS256,
                    "RS384" => JwsAlgorithm::RS384,
                    "RS512" => JwsAlgorithm::RS512,
                    other => return Err(format!("alg {other} does not go with an RSA key")),
                };
                jsonwebtoken::crypto::verify(signature, input, key, jws_alg).unwrap_or(false)
            }
        };
        if ok {
            Ok(())
        } else {
            Err("invalid signature".into())
        }
    }
}

/// The registry's own key, for schema 1 manifests stored without any signature (distribution
/// keeps only the payload): they are served signed by it, as distribution serves them. Made
/// at start and never stored, as distribution does without `signingkeyfile`.
pub struct Signer {
    pkcs8: Vec<u8>,
    header: Value,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("header", &self.header).finish_non_exhaustive()
    }
}

impl Signer {
    /// A fresh P-256 key.
    pub fn generate() -> Result<Signer, ring::error::Unspecified> {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING as ALG};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ALG, &rng)?.as_ref().to_vec();
        let pair = EcdsaKeyPair::from_pkcs8(&ALG, &pkcs8, &rng).map_err(|_| ring::error::Unspecified)?;
        let point = pair.public_key().as_ref();
        let jwk = serde_json::json!({"crv": "P-256", "kty": "EC",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])});
        Ok(Signer { pkcs8, header: serde_json::json!({"jwk": jwk, "alg": "ES256"}) })
    }

    /// Signs a manifest payload the way libtrust's `NewJSONSignature`, `Sign` and
    /// `PrettySignature` do, so old clients read it as they read distribution's.
    pub fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, Schema1Error> {
        let not_space = |b: &u8| !b.is_ascii_whitespace();
        let close = payload.iter().rposition(not_space).filter(|&i| payload[i] == b'}');
        let close = close.ok_or_else(|| invalid("payload does not end with '}'"))?;
        let len = payload[..close].iter().rposition(not_space).map_or(0, |i| i + 1);
        if len == 0 || matches!(payload[len - 1], b',' | b'{') {
            return Err(invalid("payload has no members to sign"));
        }
        let protected = URL_SAFE_NO_PAD.encode(
            serde_json::json!({
                "formatLength": len,
                "formatTail": URL_SAFE_NO_PAD.encode(&payload[len..]),
                "time": super::uploads::rfc3339(std::time::SystemTime::now()),
            })
            .to_string(),
        );
        let input = format!("{protected}.{}", URL_SAFE_NO_PAD.encode(payload));
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8);
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, JwsAlgorithm::ES256)
            .map_err(|e| invalid(format!("signing failed: {e}")))?;
        let sigs = serde_json::json!([{"header": self.header, "signature": signature, "protected": protected}]);
        let indent = json_indent(payload);
        let mut out = payload[..len].to_vec();
        if indent.is_empty() {
            out.extend_from_slice(b",\"signatures\":");
            out.extend_from_slice(sigs.to_string().as_bytes());
        } else {
            let mut block = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(indent);
            serde::Serialize::serialize(&sigs, &mut serde_json::Serializer::with_formatter(&mut block, fmt))
                .map_err(|e| invalid(e.to_string()))?;
            // Go's MarshalIndent(v, indent, indent): every line after the first one level in.
            let nested =
                String::from_utf8_lossy(&block).replace('\n', &format!("\n{}", String::from_utf8_lossy(indent)));
            out.extend_from_slice(b",\n");
            out.extend_from_slice(indent);
            out.extend_from_slice(b"\"signatures\": ");
            out.extend_from_slice(nested.as_bytes());
            out.push(b'\n');
        }
        out.push(b'}');
        Ok(out)
    }
}

/// libtrust's `detectJSONIndent`: the whitespace before the first key of `{\n<indent>"key"`.
fn json_indent(payload: &[u8]) -> &[u8] {
    if payload.len() > 2 && payload[0] == b'{' && payload[1] == b'\n' {
        if let Some(q) = payload[1..].iter().position(|&b| b == b'"').filter(|&q| q > 0) {
            return &payload[2..q + 1];
        }
    }
    b""
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    const LAYER: &str = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";

    fn manifest_json() -> String {
        let m = serde_json::json!({
            "schemaVersion": 1, "name": "lib/app", "tag": "v1", "architecture": "amd64",
            "fsLayers": [{"blobSum": LAYER}], "history": [{"v1Compatibility": "{\"id\":\"x\"}"}],
        });
        // libtrust's pretty form: three-space indent, no trailing newline.
        let mut out = Vec::new();
        let mut ser =
            serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b"   "));
        serde::Serialize::serialize(&m, &mut ser).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Signs `payload` as libtrust does with a P-256 key: `key` signs, `claimed` is the jwk.
    fn sign(payload: &str, key: &EcdsaKeyPair, claimed: &EcdsaKeyPair) -> String {
        let cut = payload.rfind('}').unwrap();
        let cut = payload[..cut].trim_end().len();
        let protected = URL_SAFE_NO_PAD.encode(
            serde_json::json!({"formatLength": cut, "formatTail": URL_SAFE_NO_PAD.encode(&payload[cut..]),
                "time": "2026-01-01T00:00:00Z"})
            .to_string(),
        );
        let input = format!("{protected}.{}", URL_SAFE_NO_PAD.encode(payload));
        let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        let point = claimed.public_key().as_ref();
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "K",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])});
        let sigs = serde_json::json!([{"header": {"jwk": jwk, "alg": "ES256"},
            "signature": URL_SAFE_NO_PAD.encode(sig.as_ref()), "protected": protected}]);
        format!("{},\n   \"signatures\": {}{}", &payload[..cut], sigs, &payload[cut..])
    }

    fn keypair() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    #[test]
    fn signed_manifest_verifies_and_digests_its_payload() {
        let payload = manifest_json();
        let k = keypair();
        let signed = sign(&payload, &k, &k);
        let m = parse(signed.as_bytes(), true).unwrap();
        assert!(m.signed);
        assert_eq!(m.media_type(), SIGNED);
        assert_eq!(m.canonical, payload.as_bytes());
        assert_eq!((m.name.as_str(), m.tag.as_str()), ("lib/app", "v1"));
        assert_eq!(m.blob_sums, [Digest::parse(LAYER).unwrap()]);
    }

    #[test]
    fn unsigned_only_when_not_claimed_signed() {
        let payload = manifest_json();
        let m = parse(payload.as_bytes(), false).unwrap();
        assert!(!m.signed);
        assert_eq!(m.media_type(), UNSIGNED);
        assert!(matches!(parse(payload.as_bytes(), true), Err(Schema1Error::Unverified(_))));
    }

    #[test]
    fn tampering_is_unverified() {
        let payload = manifest_json();
        let (k, other) = (keypair(), keypair());
        let signed = sign(&payload, &k, &k);
        let tampered = signed.replace("\"v1\"", "\"v2\"");
        assert!(matches!(parse(tampered.as_bytes(), true), Err(Schema1Error::Unverified(_))));
        let wrong_key = sign(&payload, &other, &k);
        assert!(matches!(parse(wrong_key.as_bytes(), true), Err(Schema1Error::Unverified(_))));
        // A key repeated after the signed part, which a last-key-wins reader would take.
        let smuggled = signed.replacen("\"signatures\"", "\"tag\": \"evil\",\n   \"signatures\"", 1);
        assert!(matches!(parse(smuggled.as_bytes(), true), Err(Schema1Error::Unverified(_))));
        let empty = format!("{},\n   \"signatures\": []\n}}", &payload[..payload.len() - 2]);
        assert!(matches!(parse(empty.as_bytes(), true), Err(Schema1Error::Unverified(_))));
    }

    #[test]
    fn registry_signature_verifies_and_keeps_the_payload() {
        let signer = Signer::generate().unwrap();
        for payload in [
            manifest_json(),
            manifest_json() + "\n",
            serde_json::to_string(&serde_json::json!(
            {"schemaVersion": 1, "name": "a", "tag": "t", "fsLayers": [], "history": []}))
            .unwrap(),
        ] {
            let signed = signer.sign(payload.as_bytes()).unwrap();
            let m = parse(&signed, true).unwrap();
            assert_eq!(m.canonical, payload.as_bytes());
            assert!(signed.starts_with(payload.trim_end().trim_end_matches('}').trim_end().as_bytes()));
        }
        let pretty = signer.sign(manifest_json().as_bytes()).unwrap();
        assert!(String::from_utf8(pretty).unwrap().contains("\n   \"signatures\": [\n      {\n         \""));
        assert!(signer.sign(b"[]").is_err());
        assert!(signer.sign(b"{ }").is_err());
    }

    #[test]
    fn malformed_is_invalid() {
        assert!(matches!(parse(b"[]", false), Err(Schema1Error::Invalid(_))));
        assert!(matches!(parse(br#"{"schemaVersion":1,"name":"a"}"#, false), Err(Schema1Error::Invalid(_))));
        let mismatch =
            r#"{"schemaVersion":1,"name":"a","tag":"t","fsLayers":[{"blobSum":"sha256:zz"}],"history":[{}]}"#;
        assert!(matches!(parse(mismatch.as_bytes(), false), Err(Schema1Error::Invalid(_))));
        let counts =
            format!(r#"{{"schemaVersion":1,"name":"a","tag":"t","fsLayers":[{{"blobSum":"{LAYER}"}}],"history":[]}}"#);
        assert!(matches!(parse(counts.as_bytes(), false), Err(Schema1Error::Invalid(_))));
    }

    #[test]
    fn keys_from_jwk_and_certificate() {
        let k = keypair();
        let point = k.public_key().as_ref().to_vec();
        // x with its leading zero byte dropped, as a big-integer encoder may write it.
        let h: Header = serde_json::from_value(serde_json::json!({"alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])}}))
        .unwrap();
        let PublicKey::Ec(Curve::P256, p) = PublicKey::of(&h).unwrap() else { panic!("not P-256") };
        assert_eq!(p, point);
        let msg = b"input";
        let sig = URL_SAFE_NO_PAD.encode(k.sign(&SystemRandom::new(), msg).unwrap().as_ref());
        let key = PublicKey::Ec(Curve::P256, point);
        assert!(key.verify("ES256", msg, &sig).is_ok());
        assert!(key.verify("ES384", msg, &sig).is_err());
        assert!(key.verify("ES256", b"other", &sig).is_err());
        let h: Header =
            serde_json::from_value(serde_json::json!({"alg": "ES256", "x5c": ["bm90IGEgY2VydA=="]})).unwrap();
        assert!(PublicKey::of(&h).is_err());
        let h: Header = serde_json::from_value(serde_json::json!({"alg": "ES256"})).unwrap();
        assert!(PublicKey::of(&h).is_err());
    }
}
