"""JwtVerifier and ChainedVerifier against a local JWKS and tokens signed here."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tapetum.errors import ConfigError
from tapetum.serve.auth import ApiKey, KeyStore, Scope
from tapetum.serve.jwt_auth import ChainedVerifier, JwtPrincipal, JwtVerifier, looks_like_jwt
from tapetum.serve.settings import ServeSettings, default_key_store

ISSUER = "https://id.example.test/"
AUDIENCE = "tapetum"
KID = "key-1"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_jwks(path: Path, *pairs: tuple[str, Any]) -> Path:
    keys = []
    for kid, private in pairs:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
        keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
    path.write_text(json.dumps({"keys": keys}))
    return path


@pytest.fixture
def jwks_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    return write_jwks(tmp_path / "jwks.json", (KID, rsa_key))


@pytest.fixture
def verifier(jwks_file: Path) -> JwtVerifier:
    return JwtVerifier(ISSUER, AUDIENCE, str(jwks_file))


def make_token(key: Any, *, kid: str | None = KID, alg: str = "RS256", **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-42",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "scope": "openid read infer",
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def test_valid_token_gives_principal_with_its_scopes(
    verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    principal = verifier.verify(make_token(rsa_key))
    assert isinstance(principal, JwtPrincipal)
    assert principal.subject == "user-42"
    # Rate limits and ownership see a namespace of their own: no clash with API key ids.
    assert principal.key_id == "jwt:user-42"
    assert principal.scopes == {Scope.READ, Scope.INFER}
    assert principal.allows(Scope.READ) and principal.allows(Scope.INFER)
    assert not principal.allows(Scope.ADMIN)


def test_scope_list_claim_and_admin(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier(ISSUER, AUDIENCE, str(jwks_file), scope_claim="scp")
    principal = verifier.verify(make_token(rsa_key, scope=None, scp=["ADMIN", 3, "email"]))
    assert principal is not None and principal.scopes == {Scope.ADMIN}
    assert principal.allows(Scope.INFER)
    no_scopes = verifier.verify(make_token(rsa_key, scope=None))
    assert no_scopes is not None and not no_scopes.allows(Scope.READ)


def test_audience_list_is_accepted(verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    assert verifier.verify(make_token(rsa_key, aud=["other", AUDIENCE])) is not None


def test_leeway_tolerates_small_skew(verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    assert verifier.verify(make_token(rsa_key, exp=now - 5)) is not None  # within 30 s
    assert verifier.verify(make_token(rsa_key, nbf=now + 10, iat=now + 10)) is not None


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "not_yet_valid",
        "issued_in_future",
        "wrong_audience",
        "wrong_issuer",
        "no_sub",
        "no_exp",
        "bad_signature",
        "unknown_kid",
        "hs256",
        "alg_none",
        "malformed",
        "garbage_parts",
        "tampered_payload",
    ],
)
def test_invalid_tokens_give_none(
    case: str, verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey, jwks_file: Path
) -> None:
    now = int(time.time())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases: dict[str, Callable[[], str]] = {
        "expired": lambda: make_token(rsa_key, exp=now - 120, iat=now - 900, nbf=now - 900),
        "not_yet_valid": lambda: make_token(rsa_key, nbf=now + 600),
        "issued_in_future": lambda: make_token(rsa_key, iat=now + 600),
        "wrong_audience": lambda: make_token(rsa_key, aud="someone-else"),
        "wrong_issuer": lambda: make_token(rsa_key, iss="https://evil.example.test/"),
        "no_sub": lambda: make_token(rsa_key, sub=None),
        "no_exp": lambda: make_token(rsa_key, exp=None),
        "bad_signature": lambda: make_token(other),
        "unknown_kid": lambda: make_token(rsa_key, kid="key-2"),
        # HMAC with a secret an attacker picks (e.g. the public key): algorithm confusion
        "hs256": lambda: make_token(b"attacker-chosen-secret-32-bytes!", alg="HS256"),
        "alg_none": lambda: make_token(None, alg="none") + "x",
        "malformed": lambda: "not.a.jwt",
        "garbage_parts": lambda: "a.b",
        "tampered_payload": lambda: _tamper(make_token(rsa_key)),
    }
    assert verifier.verify(cases[case]()) is None


def _tamper(token: str) -> str:
    header, _payload, sig = token.split(".")
    forged = jwt.utils.base64url_encode(
        json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "root", "exp": 2**40}).encode()
    ).decode()
    return f"{header}.{forged}.{sig}"


def test_no_kid_uses_the_only_key(verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    assert verifier.verify(make_token(rsa_key, kid=None)) is not None


def test_rotated_jwks_file_is_reloaded(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, verifier: JwtVerifier, jwks_file: Path
) -> None:
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = make_token(new_key, kid="key-2")
    assert verifier.verify(token) is None
    write_jwks(jwks_file, (KID, rsa_key), ("key-2", new_key))
    stat = jwks_file.stat()
    os.utime(jwks_file, (stat.st_atime, stat.st_mtime + 5))
    assert verifier.verify(token) is not None


def test_es256_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    path = tmp_path / "ec.json"
    path.write_text(json.dumps({"keys": [{**jwk, "kid": "ec-1"}]}))
    verifier = JwtVerifier(ISSUER, AUDIENCE, str(path))
    principal = verifier.verify(make_token(key, kid="ec-1", alg="ES256"))
    assert principal is not None and principal.allows(Scope.READ)


def test_bad_configuration_is_a_config_error(tmp_path: Path, jwks_file: Path) -> None:
    with pytest.raises(ConfigError):
        JwtVerifier(ISSUER, AUDIENCE, str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError):
        JwtVerifier(ISSUER, AUDIENCE, str(tmp_path / "bad.json"))
    with pytest.raises(ConfigError):
        JwtVerifier(ISSUER, AUDIENCE, str(jwks_file), algorithms=("HS256",))
    with pytest.raises(ConfigError):
        JwtVerifier("", AUDIENCE, str(jwks_file))


@pytest.mark.parametrize(
    "url", ["http://id.example.com/jwks", "HTTP://id.example.com/jwks", "ftp://x/jwks"]
)
def test_jwks_over_cleartext_is_refused(url: str) -> None:
    """Whoever can alter a JWKS fetched over http:// can mint tokens the server accepts."""
    with pytest.raises(ConfigError, match="https"):
        JwtVerifier(ISSUER, AUDIENCE, url)


def test_jwks_over_https_is_accepted_without_fetching_at_construction() -> None:
    verifier = JwtVerifier(ISSUER, AUDIENCE, "https://id.example.invalid/jwks")
    assert verifier.issuer == ISSUER


def test_looks_like_jwt() -> None:
    assert looks_like_jwt("eyJh.eyJz.c2ln")
    assert not looks_like_jwt("tpk_0123456789ab_" + "s" * 43)
    assert not looks_like_jwt("a.b")
    assert not looks_like_jwt("a.b.c.d")
    assert not looks_like_jwt("a..c")


def test_chained_verifier_routes_keys_and_tokens(
    verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    with KeyStore(":memory:", cache_ttl_s=0) as store:
        _record, raw_key = store.create("ci", [Scope.INFER])
        chained = ChainedVerifier(store, verifier)
        by_key = chained.verify(raw_key)
        assert isinstance(by_key, ApiKey) and by_key.allows(Scope.INFER)
        by_token = chained.verify(make_token(rsa_key))
        assert isinstance(by_token, JwtPrincipal) and by_token.key_id == "jwt:user-42"
        assert chained.verify(make_token(rsa_key, aud="x")) is None
        assert chained.verify("tpk_0123456789ab_" + "s" * 43) is None
        assert chained.verify("") is None
    jwt_only = ChainedVerifier(None, verifier)
    assert jwt_only.verify(raw_key) is None
    assert jwt_only.verify(make_token(rsa_key)) is not None


def test_default_key_store_chains_when_jwt_is_configured(
    tmp_path: Path, jwks_file: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    model = tmp_path / "m.onnx"

    def settings(keys_db: Path | None, *, jwt_on: bool, auth: bool = True) -> ServeSettings:
        if not jwt_on:
            return ServeSettings(model, keys_db=keys_db, require_auth=auth)
        return ServeSettings(
            model,
            keys_db=keys_db,
            require_auth=auth,
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
            jwt_jwks=str(jwks_file),
        )

    plain = default_key_store(settings(tmp_path / "keys.db", jwt_on=False))
    assert isinstance(plain, KeyStore)
    plain.close()
    chained = default_key_store(settings(tmp_path / "keys.db", jwt_on=True))
    assert isinstance(chained, ChainedVerifier) and isinstance(chained.key_store, KeyStore)
    chained.key_store.close()
    jwt_only = default_key_store(settings(None, jwt_on=True))
    assert isinstance(jwt_only, ChainedVerifier) and jwt_only.key_store is None
    assert jwt_only.verify(make_token(rsa_key)) is not None
    with pytest.raises(ConfigError):
        default_key_store(settings(None, jwt_on=False))
    with pytest.raises(ConfigError):
        ServeSettings(model, jwt_issuer=ISSUER)
    assert default_key_store(settings(None, jwt_on=True, auth=False)) is None
