"""The test issuer itself (tests/authtokens.py), checked without Berth: key IDs against published
vectors, tokens decoded back with PyJWT and cryptography, and every forgery really broken.
(Guards against blaming Berth for a broken fixture.)"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import authtokens as at

# Public keys with the key IDs libtrust gives them (the fixtures of a Python port of libtrust,
# whose tests check these IDs against Go libtrust's output).
LIBTRUST_EC_PUBLIC = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4pBqYlc5IU5pJh5AOvijtEccStyJ
u0dSAiz4OlDGGFk5PvSlSh+wqUcSyp1ZRSP5kX7Pluof72g5MniaoFrLKg==
-----END PUBLIC KEY-----
"""
LIBTRUST_EC_KID = "UEV2:PPF2:4DMU:WZYF:WOWU:677P:B7XU:SGFA:BMUG:NCTC:R7CL:XFKZ"
LIBTRUST_RSA_PUBLIC = b"""-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAwq1mCmgn460MC6MnCqra
nQNTgmKuKPl7bNH7Qc6hBDGHlnIjU6q/h2KXF37TC5Y9tsKvQ4b8jd0Sf0dXFHml
8qunSvNnqsSvoD8tSPUKqXS6jrlbGSQXhya7BL1RPGccD5K1xrV73QlI6uFPd3AP
RQYij5EOB8IOWEQujJk/8Mjc0EC9zvk5TUJb59hkOUPZ3CkvSBNLNS8wpQI98FRn
IzHjuaNicqve8054oxmDKifHWy0nnF135cXW8zkH3Zto1q89zD2g+zcVxLcRP84U
he0nSQyg7vEYl4Wl74Eo6/89qL2yE0mEiQN245ACA5B8WFV/t3j/OD3ydOCaAOg2
8vQtzcZ1gh2Ev4RxeR7bKq58g+R0+MMwl7nnW29mbCkcgdVVR4YPmglP7Vb6w7/N
bqFhnxx4E3A05AeevHdMdYCrtgQwogvIhdOHLcVQxJgwy1d2Lg/mv9rovhCJ7d3X
aNEYym6CplCHPMtfnU1LCVkA6b44pFaOVjsAQ8FviFtGXQAToRtwoszSarzslHKY
dPoSGFOsgNJgW67iViOYqGPD97rgJA0VPm0POMNHGw/R6o+08KhDF/OI1EDckmjX
hUggY/WCqWDxD77Ezd/wr9Zlbv/uSIEL9ifvBLq06lLcXMLrQbJrwMbDrngMZMAc
UkTzThmtxNs4uwu45R+zfKcCAwEAAQ==
-----END PUBLIC KEY-----
"""
LIBTRUST_RSA_KID = "IIYO:OWAZ:MBMG:2SIK:IK2I:OP5Z:H6QR:KN6Y:QUGO:BUWN:TYW3:JXVW"

# RFC 7638 §3.1's example key and thumbprint.
RFC7638_JWK = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMs"
         "tn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n9"
         "1CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.fixture(scope="module")
def keys():
    return {kind: at.SigningKey(kind) for kind in at.KINDS}


def test_libtrust_key_id_matches_known_vectors():
    assert at.libtrust_key_id(serialization.load_pem_public_key(LIBTRUST_EC_PUBLIC)) == LIBTRUST_EC_KID
    assert at.libtrust_key_id(serialization.load_pem_public_key(LIBTRUST_RSA_PUBLIC)) == LIBTRUST_RSA_KID


def test_jwk_thumbprint_matches_rfc7638():
    assert at.jwk_thumbprint(RFC7638_JWK) == RFC7638_THUMBPRINT


def test_jwk_round_trips_through_pyjwt(keys):
    for kind, key in keys.items():
        j = key.jwk(key.thumbprint)
        loaded = jwt.PyJWK(j).key
        assert at.spki_der(loaded) == at.spki_der(key.public), kind
        assert at.jwk_thumbprint(j) == key.thumbprint


@pytest.mark.parametrize("variant", ["x5c", "libtrust", "thumbprint"])
def test_tokens_verify_with_every_algorithm(keys, variant):
    issuer = at.Issuer(list(keys.values()))
    for kind, key in keys.items():
        for alg in at.ALGS_FOR[kind]:
            tok = issuer.mint([at.repo("a/b", "pull", "push")], key=key, alg=alg, variant=variant, sub="alice")
            h = at.header(tok)
            assert h["alg"] == alg and h["typ"] == "JWT"
            if variant == "x5c":
                cert = x509.load_der_x509_certificate(base64.b64decode(h["x5c"][0]))
                assert cert == key.certificate
                assert "kid" not in h
                pub = cert.public_key()
            else:
                assert h["kid"] == (key.libtrust_kid if variant == "libtrust" else key.thumbprint)
                pub = key.public
            c = at.decode(tok, pub, audience="berth-test")
            assert c["iss"] == "test-issuer" and c["sub"] == "alice" and c["aud"] == "berth-test"
            assert c["access"] == [{"type": "repository", "name": "a/b", "actions": ["pull", "push"]}]
            assert c["nbf"] <= c["iat"] < c["exp"] and len(c["jti"]) == 32


def test_bundle_and_jwks_files(tmp_path, keys):
    bundle = at.write_bundle(tmp_path / "bundle.pem", keys.values())
    certs = x509.load_pem_x509_certificates(bundle.read_bytes())
    assert [c.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            for c in certs] == [at.spki_der(k.public) for k in keys.values()]
    jwks = json.loads(at.write_jwks(tmp_path / "jwks.json", keys.values()).read_text())
    assert [j["kid"] for j in jwks["keys"]] == [k.thumbprint for k in keys.values()]
    assert jwks["keys"][0]["kty"] == "RSA" and jwks["keys"][1] == {**keys["P-256"].jwk(), "kid": keys["P-256"].thumbprint}


def test_forgeries_do_not_verify(keys):
    key = keys["RSA"]
    issuer = at.Issuer([key])
    good = issuer.mint([at.repo("a/b", "pull")])
    claims = at.unverified_claims(good)

    def refused(tok):
        with pytest.raises(jwt.PyJWTError):
            at.decode(tok, key.public, audience="berth-test")

    none = at.alg_none(claims)
    assert at.header(none)["alg"] == "none" and none.endswith(".")
    refused(none)
    hs = at.hs256_with_public_key(claims, key)
    assert at.header(hs)["alg"] == "HS256"
    refused(hs)
    # ... yet it is a correct HMAC under the PEM: a verifier that trusted `alg` would accept it.
    import hashlib
    import hmac
    signing_input, sig = hs.rsplit(".", 1)
    assert hmac.compare_digest(at.unb64url(sig), hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest())
    t = at.tampered(good, access=[at.repo("a/b", "pull", "push", "delete")])
    assert at.unverified_claims(t)["access"][0]["actions"] == ["pull", "push", "delete"]
    refused(t)
    refused(at.truncated(good))
    stranger = at.SigningKey("RSA")
    refused(at.Issuer([stranger]).mint([at.repo("a/b", "pull")]))
    refused(issuer.mint(exp_in=-3600))
    with pytest.raises(jwt.ImmatureSignatureError):
        at.decode(issuer.mint(nbf_in=3600), key.public, audience="berth-test")
    with pytest.raises(jwt.InvalidAudienceError):
        at.decode(issuer.mint(aud="elsewhere"), key.public, audience="berth-test")


def test_command_line_keys_and_mint(tmp_path):
    here = Path(at.__file__).parent
    kid = subprocess.run([sys.executable, str(here / "authtokens.py"), "keys", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    tok = subprocess.run([sys.executable, str(here / "authtokens.py"), "mint", str(tmp_path),
                          "--scope", "repository:bench/x:pull", "--exp", "60", "--variant", "libtrust"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert at.header(tok)["kid"] == kid
    pub = at.load_certificate_public_key((tmp_path / "bundle.pem").read_bytes())
    c = at.decode(tok, pub, audience="berth-test")
    assert c["access"] == [{"type": "repository", "name": "bench/x", "actions": ["pull"]}]
    assert 55 <= c["exp"] - c["iat"] - 10 <= 61
