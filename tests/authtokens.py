"""An external token issuer, the way GitLab (or any distribution-style token server) does it.

The test holds its own keys (RSA 2048, EC P-256 / P-384, Ed25519) and self-signed certificates,
writes them as a PEM bundle for Berth's `auth.token.rootcertbundle` (or a JWKS file for
`auth.token.jwks`), and mints JWTs with PyJWT in the header variants registries meet:

- `x5c`: the leaf certificate (DER, base64) in the header, as distribution's token server does;
- `kid` = the libtrust key ID of the public key (GitLab, docker/auth servers);
- `kid` = the RFC 7638 JWK thumbprint (distribution 3 with a JWKS).

It also forges the tokens a registry must refuse: `alg: none`, HS256 signed with the public key's
PEM as the HMAC secret, a tampered payload under the old signature, a truncated token, a token
from a key that is not in the bundle.

As a command (the benchmark uses it):

    python3 tests/authtokens.py keys DIR            # DIR/{key.pem,cert.pem,bundle.pem}, EC P-256
    python3 tests/authtokens.py mint DIR --scope repository:bench/x:pull [--exp 3600]
                                         [--issuer I] [--service S] [--subject U]
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import sys
import time
import uuid
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

KINDS = ("RSA", "P-256", "P-384", "Ed25519")
DEFAULT_ALG = {"RSA": "RS256", "P-256": "ES256", "P-384": "ES384", "Ed25519": "EdDSA"}
ALGS_FOR = {"RSA": ("RS256", "RS384", "RS512"), "P-256": ("ES256",), "P-384": ("ES384",), "Ed25519": ("EdDSA",)}


# --- encodings --------------------------------------------------------------------------------

def b64url(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _uint(n: int, size: int | None = None) -> bytes:
    size = size or max(1, (n.bit_length() + 7) // 8)
    return n.to_bytes(size, "big")


# --- key identifiers --------------------------------------------------------------------------

def spki_der(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def libtrust_key_id(public_key) -> str:
    """libtrust's KeyID: sha256 of the SubjectPublicKeyInfo DER, first 240 bits, base32 without
    padding, in groups of four joined by ':' (`ABCD:EFGH:...`, 12 groups)."""
    digest = hashlib.sha256(spki_der(public_key)).digest()[:30]
    s = base64.b32encode(digest).decode().rstrip("=")
    return ":".join(s[i:i + 4] for i in range(0, len(s), 4))


def public_jwk(public_key) -> dict:
    """The public JWK (RFC 7517/7518/8037) with only the required members."""
    if isinstance(public_key, rsa.RSAPublicKey):
        n = public_key.public_numbers()
        return {"kty": "RSA", "n": b64url(_uint(n.n)), "e": b64url(_uint(n.e))}
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        crv, size = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}[public_key.curve.name]
        n = public_key.public_numbers()
        return {"kty": "EC", "crv": crv, "x": b64url(_uint(n.x, size)), "y": b64url(_uint(n.y, size))}
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    raise TypeError(f"unsupported key {type(public_key)}")


# RFC 7638 §3.2: the required members only, in lexicographic order, no whitespace.
_REQUIRED = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}


def jwk_thumbprint(jwk: dict) -> str:
    """RFC 7638 JWK thumbprint: base64url(sha256(canonical JSON of the required members))."""
    members = {k: jwk[k] for k in _REQUIRED[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


# --- keys and certificates --------------------------------------------------------------------

class SigningKey:
    """A private key with a self-signed certificate, and its names."""

    def __init__(self, kind: str = "P-256", name: str | None = None, private=None, certificate=None):
        if kind not in KINDS:
            raise ValueError(kind)
        self.kind = kind
        self.name = name or f"berth test issuer {kind}"
        if private is None:
            if kind == "RSA":
                private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            elif kind == "P-256":
                private = ec.generate_private_key(ec.SECP256R1())
            elif kind == "P-384":
                private = ec.generate_private_key(ec.SECP384R1())
            else:
                private = ed25519.Ed25519PrivateKey.generate()
        self.private = private
        self.certificate = certificate or self._self_signed()

    def _self_signed(self) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(self.private.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False,
                                                key_agreement=False, key_cert_sign=True, crl_sign=False,
                                                encipher_only=False, decipher_only=False), critical=True))
        algo = None if self.kind == "Ed25519" else hashes.SHA256()
        return builder.sign(self.private, algo)

    @property
    def public(self):
        return self.private.public_key()

    @property
    def alg(self) -> str:
        return DEFAULT_ALG[self.kind]

    @property
    def libtrust_kid(self) -> str:
        return libtrust_key_id(self.public)

    @property
    def thumbprint(self) -> str:
        return jwk_thumbprint(public_jwk(self.public))

    def jwk(self, kid: str | None = None) -> dict:
        j = public_jwk(self.public)
        if kid is not None:
            j["kid"] = kid
        return j

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def cert_der_b64(self) -> str:
        """The certificate as an `x5c` entry: standard base64 of the DER (not url-safe)."""
        return base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()

    def key_pem(self) -> bytes:
        """PKCS#8, unencrypted."""
        return self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())

    def public_pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def save(self, key_path: Path, cert_path: Path) -> None:
        key_path.write_bytes(self.key_pem())
        os.chmod(key_path, 0o600)
        cert_path.write_bytes(self.cert_pem())

    @classmethod
    def load(cls, key_path: Path, cert_path: Path) -> "SigningKey":
        private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if isinstance(private, rsa.RSAPrivateKey):
            kind = "RSA"
        elif isinstance(private, ed25519.Ed25519PrivateKey):
            kind = "Ed25519"
        else:
            kind = {"secp256r1": "P-256", "secp384r1": "P-384"}[private.curve.name]
        return cls(kind, private=private, certificate=cert)


def write_bundle(path: Path, keys) -> Path:
    """A PEM bundle of the keys' certificates (what `rootcertbundle` names)."""
    path.write_bytes(b"".join(k.cert_pem() for k in keys))
    return path


def write_jwks(path: Path, keys, kid: str = "thumbprint") -> Path:
    """A JWKS file (`{"keys":[jwk with kid]}`, distribution 3's `jwks`); kid = thumbprint or libtrust."""
    entries = [k.jwk(k.thumbprint if kid == "thumbprint" else k.libtrust_kid) for k in keys]
    path.write_text(json.dumps({"keys": entries}, indent=2))
    return path


def load_certificate_public_key(pem: bytes):
    return x509.load_pem_x509_certificate(pem).public_key()


# --- claims -----------------------------------------------------------------------------------

def access(type_: str, name: str, *actions: str) -> dict:
    return {"type": type_, "name": name, "actions": list(actions)}


def repo(name: str, *actions: str) -> dict:
    return access("repository", name, *actions)


CATALOG = access("registry", "catalog", "*")


def scope_string(entry: dict) -> str:
    """`repository:foo:pull,push` for an access entry."""
    return f"{entry['type']}:{entry['name']}:{','.join(entry['actions'])}"


def parse_scope(scope: str) -> dict:
    """`repository:foo/bar:pull,push` -> access entry (the name may not contain ':' here)."""
    kind, rest = scope.split(":", 1)
    name, actions = rest.rsplit(":", 1)
    return access(kind, name, *[a for a in actions.split(",") if a])


class Issuer:
    """Mints tokens for one issuer name and audience, signed by any of its keys."""

    def __init__(self, keys: list[SigningKey], issuer: str = "test-issuer", service: str = "berth-test"):
        self.keys = keys
        self.issuer = issuer
        self.service = service

    def claims(self, access_: list[dict] | None = None, *, sub: str = "tester", iss: str | None = None,
               aud: str | list[str] | None = None, exp_in: float = 300, nbf_in: float = -10,
               iat_in: float = -10, now: float | None = None, omit: tuple[str, ...] = (), **extra) -> dict:
        now = time.time() if now is None else now
        c = {
            "iss": self.issuer if iss is None else iss,
            "sub": sub,
            "aud": self.service if aud is None else aud,
            "exp": int(now + exp_in),
            "nbf": int(now + nbf_in),
            "iat": int(now + iat_in),
            "jti": uuid.uuid4().hex,
            "access": list(access_ or []),
        }
        c.update(extra)
        for k in omit:
            c.pop(k, None)
        return c

    def headers(self, key: SigningKey, variant: str) -> dict:
        """`x5c`, `libtrust` (kid = libtrust key ID) or `thumbprint` (kid = RFC 7638 thumbprint)."""
        if variant == "x5c":
            return {"x5c": [key.cert_der_b64()]}
        if variant == "libtrust":
            return {"kid": key.libtrust_kid}
        if variant == "thumbprint":
            return {"kid": key.thumbprint}
        if variant == "none":
            return {}
        raise ValueError(variant)

    def mint(self, access_: list[dict] | None = None, *, key: SigningKey | None = None, alg: str | None = None,
             variant: str = "x5c", headers: dict | None = None, **claim_args) -> str:
        key = key or self.keys[0]
        h = self.headers(key, variant)
        h.update(headers or {})
        return encode(self.claims(access_, **claim_args), key, alg or key.alg, h)


def encode(claims: dict, key: SigningKey, alg: str, headers: dict) -> str:
    h = {"typ": "JWT", **headers}
    return jwt.encode(claims, key.private, algorithm=alg, headers=h)


def decode(token: str, public_key, audience: str | None = None, algorithms=None, **options) -> dict:
    """Verify and decode with PyJWT (signature, exp, nbf, and aud when given)."""
    algorithms = algorithms or ["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"]
    opts = {"verify_aud": audience is not None}
    opts.update(options)
    return jwt.decode(token, public_key, algorithms=algorithms, audience=audience, options=opts)


def header(token: str) -> dict:
    return jwt.get_unverified_header(token)


def unverified_claims(token: str) -> dict:
    return json.loads(unb64url(token.split(".")[1]))


# --- forgeries --------------------------------------------------------------------------------

def _segment(obj: dict) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def alg_none(claims: dict, extra_header: dict | None = None) -> str:
    """An unsigned token: header `{"alg":"none"}`, empty signature."""
    return f"{_segment({'alg': 'none', 'typ': 'JWT', **(extra_header or {})})}.{_segment(claims)}."


def hs256_with_public_key(claims: dict, key: SigningKey, extra_header: dict | None = None) -> str:
    """The classic key-confusion attack: HS256 with the verifier's public key PEM as the secret
    (and its kid, so a naive verifier picks that key)."""
    h = {"alg": "HS256", "typ": "JWT", "kid": key.libtrust_kid, **(extra_header or {})}
    signing_input = f"{_segment(h)}.{_segment(claims)}"
    mac = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def tampered(token: str, **changes) -> str:
    """The same header and signature over a payload with `changes` applied."""
    h, p, s = token.split(".")
    claims = json.loads(unb64url(p))
    claims.update(changes)
    return f"{h}.{_segment(claims)}.{s}"


def truncated(token: str, keep: int | None = None) -> str:
    """The token cut short: by default in the middle of its signature."""
    if keep is None:
        keep = len(token) - len(token.split(".")[2]) // 2
    return token[:keep]


def resigned_header(token: str, key: SigningKey, **header_changes) -> str:
    """Re-sign the payload of `token` with `key` under a modified header."""
    claims = unverified_claims(token)
    h = header(token)
    h.update(header_changes)
    alg = h.pop("alg")
    h.pop("typ", None)
    return encode(claims, key, alg, h)


# --- command line -----------------------------------------------------------------------------

def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keys", help="write DIR/key.pem, DIR/cert.pem and DIR/bundle.pem")
    k.add_argument("dir", type=Path)
    k.add_argument("--kind", default="P-256", choices=KINDS)
    m = sub.add_parser("mint", help="print a token signed by DIR/key.pem")
    m.add_argument("dir", type=Path)
    m.add_argument("--scope", action="append", default=[], help="repository:NAME:ACTIONS (repeatable)")
    m.add_argument("--exp", type=float, default=3600, help="lifetime in seconds")
    m.add_argument("--issuer", default="test-issuer")
    m.add_argument("--service", default="berth-test")
    m.add_argument("--subject", default="tester")
    m.add_argument("--variant", default="x5c", choices=("x5c", "libtrust", "thumbprint"))
    a = ap.parse_args(argv)
    if a.cmd == "keys":
        a.dir.mkdir(parents=True, exist_ok=True)
        key = SigningKey(a.kind)
        key.save(a.dir / "key.pem", a.dir / "cert.pem")
        write_bundle(a.dir / "bundle.pem", [key])
        print(key.libtrust_kid)
        return 0
    key = SigningKey.load(a.dir / "key.pem", a.dir / "cert.pem")
    issuer = Issuer([key], a.issuer, a.service)
    print(issuer.mint([parse_scope(s) for s in a.scope], sub=a.subject, exp_in=a.exp, variant=a.variant))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
