"""REST with JWT auth configured: OIDC tokens and API keys side by side, over real HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tapetum.serve.app import ServeSettings, create_app
from tapetum.serve.auth import KeyStore, Scope
from tests.integration.serve_harness import LoopbackServer, assert_error, wait_ready

pytestmark = pytest.mark.integration

ISSUER = "https://id.example.test/"
AUDIENCE = "tapetum"


def _token(key: rsa.RSAPrivateKey, scope: str, exp_in_s: int) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "svc-account",
        "iat": now - 900,
        "exp": now + exp_in_s,
        "scope": scope,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


def test_jwt_reaches_models_and_expired_jwt_is_401(yolox_path: Path, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256"}]}))
    keys_db = tmp_path / "keys.db"
    with KeyStore(keys_db) as store:
        raw_key = store.create("reader", [Scope.READ])[1]
    settings = ServeSettings(
        model_path=yolox_path,
        keys_db=keys_db,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_jwks=str(jwks),
        rate_per_second=None,
    )
    server = LoopbackServer(create_app(settings)).start()  # default verifier: chained
    try:
        with httpx.Client(base_url=server.url, timeout=20) as client:
            wait_ready(client)

            def models(credential: str) -> httpx.Response:
                return client.get("/v1/models", headers={"Authorization": f"Bearer {credential}"})

            ok = models(_token(key, "openid read", 600))
            assert ok.status_code == 200, ok.text
            assert ok.json()["models"][0]["name"] == "yolox_nano"
            assert models(raw_key).status_code == 200  # API keys still work
            expired = models(_token(key, "read", -300))
            assert_error(expired, 401, "invalid_api_key")
            assert "invalid_token" in expired.headers["www-authenticate"]
            assert_error(models(_token(key, "infer", 600)), 403, "insufficient_scope")
    finally:
        server.stop()
