"""Stream authentication (marketfeed.stream.auth): static tokens, HS256 and RS256 JWTs. RS256 tokens
are signed by the openssl command-line tool, an implementation independent of ours."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from marketfeed.options import JwtConfig, ServerConfig, TokenConfig
from marketfeed.stream.auth import (
    Authenticator,
    AuthError,
    load_rsa_public_key,
    make_hs256_jwt,
)

SECRET = "s" * 40
NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def auth(**jwt: object) -> Authenticator:
    tokens = [TokenConfig(token="static-token-0123456789", channels=["trade:*:*"], name="bot1")]
    return Authenticator(ServerConfig(tokens=tokens, jwt=JwtConfig(**jwt) if jwt else None))  # type: ignore[arg-type]


def test_static_token_and_its_channels() -> None:
    grant = auth().check("static-token-0123456789", NOW)
    assert grant.name == "bot1"
    assert grant.allows("trade", "okx", "BTC-USDT")
    assert not grant.allows("book", "okx", "BTC-USDT")
    with pytest.raises(AuthError, match="invalid token"):
        auth().check("static-token-0123456788", NOW)
    with pytest.raises(AuthError, match="missing"):
        auth().check(None, NOW)


def test_static_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MF_TEST_TOKEN", "from-the-environment-42")
    a = Authenticator(ServerConfig(tokens=[TokenConfig(token_env="MF_TEST_TOKEN")]))
    assert a.check("from-the-environment-42", NOW).allows("book", "binance", "BTC-USDT")
    monkeypatch.delenv("MF_TEST_TOKEN")
    with pytest.raises(ValueError, match="MF_TEST_TOKEN is not set"):
        Authenticator(ServerConfig(tokens=[TokenConfig(token_env="MF_TEST_TOKEN")]))


def test_hs256_jwt_claims_exp_and_signature() -> None:
    a = auth(hs256_secret=SECRET, audience="bots")
    token = make_hs256_jwt({"sub": "alice", "exp": NOW + 60, "aud": "bots", "channels": ["book:binance:*"]}, SECRET)
    grant = a.check(token, NOW)
    assert grant.name == "alice" and grant.expires == NOW + 60
    assert grant.allows("book", "binance", "ETH-USDT") and not grant.allows("trade", "binance", "ETH-USDT")
    with pytest.raises(AuthError, match="expired"):
        a.check(token, NOW + 61)
    with pytest.raises(AuthError, match="signature"):
        a.check(make_hs256_jwt({"exp": NOW + 60, "aud": "bots"}, "x" * 40), NOW)
    with pytest.raises(AuthError, match="no exp"):
        a.check(make_hs256_jwt({"aud": "bots"}, SECRET), NOW)
    with pytest.raises(AuthError, match="audience"):
        a.check(make_hs256_jwt({"exp": NOW + 60, "aud": "other"}, SECRET), NOW)
    with pytest.raises(AuthError, match="not valid yet"):
        a.check(make_hs256_jwt({"exp": NOW + 60, "nbf": NOW + 30, "aud": "bots"}, SECRET), NOW)
    with pytest.raises(AuthError, match="channels claim"):
        a.check(make_hs256_jwt({"exp": NOW + 60, "aud": "bots", "channels": ["nonsense"]}, SECRET), NOW)
    # a tampered payload with the original signature
    head, _, sig = token.split(".")
    forged = b64(json.dumps({"sub": "alice", "exp": NOW + 9999, "aud": "bots", "channels": ["*"]}).encode())
    with pytest.raises(AuthError, match="signature"):
        a.check(f"{head}.{forged}.{sig}", NOW)


def test_alg_none_and_unconfigured_algorithms_are_refused() -> None:
    a = auth(hs256_secret=SECRET)
    claims = b64(json.dumps({"exp": NOW + 60}).encode())
    with pytest.raises(AuthError, match="'none' is not accepted"):
        a.check(f"{b64(json.dumps({'alg': 'none'}).encode())}.{claims}.", NOW)
    with pytest.raises(AuthError, match="'RS256' is not accepted"):
        a.check(f"{b64(json.dumps({'alg': 'RS256'}).encode())}.{claims}.{b64(b'x' * 256)}", NOW)
    with pytest.raises(AuthError, match="malformed"):
        a.check("a.b!.c", NOW)


@pytest.fixture(scope="module")
def rsa_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to sign RS256 test tokens (apt-get install openssl)")
    d = tmp_path_factory.mktemp("rsa")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(d / "key.pem")], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(d / "key.pem"), "-pubout", "-out", str(d / "pub.pem")], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(d / "key.pem"), "-RSAPublicKey_out", "-out", str(d / "pub-pkcs1.pem")], check=True, capture_output=True)
    return d


def rs256(claims: dict[str, object], key: Path) -> str:
    signed = f"{b64(json.dumps({'alg': 'RS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}"
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)], input=signed.encode(), check=True, capture_output=True).stdout
    return f"{signed}.{b64(sig)}"


def test_rs256_jwt_signed_by_openssl(rsa_keys: Path) -> None:
    for pub in ("pub.pem", "pub-pkcs1.pem"):
        a = auth(rs256_public_key=str(rsa_keys / pub))
        token = rs256({"sub": "bob", "exp": time.time() + 60, "channels": "top:*:* trade:okx:*"}, rsa_keys / "key.pem")
        grant = a.check(token, time.time())
        assert grant.name == "bob"
        assert grant.allows("top", "kraken", "BTC-USD") and grant.allows("trade", "okx", "BTC-USDT")
        assert not grant.allows("book", "okx", "BTC-USDT")
        # one flipped bit anywhere in the signature fails
        head, body, sig = token.split(".")
        raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
        raw[100] ^= 1
        with pytest.raises(AuthError, match="signature"):
            a.check(f"{head}.{body}.{b64(bytes(raw))}", time.time())
        with pytest.raises(AuthError, match="expired"):
            a.check(rs256({"exp": time.time() - 1}, rsa_keys / "key.pem"), time.time())


def test_short_rsa_keys_are_refused(tmp_path: Path) -> None:
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", str(tmp_path / "k.pem")], check=True, capture_output=True)
    pem = subprocess.run(["openssl", "pkey", "-in", str(tmp_path / "k.pem"), "-pubout"], check=True, capture_output=True).stdout.decode()
    with pytest.raises(ValueError, match="too short"):
        load_rsa_public_key(pem)
