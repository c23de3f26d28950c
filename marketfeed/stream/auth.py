"""Bearer tokens for the stream: static secrets from the config (or the environment) and JWTs.

JWT support is written here on the standard library: HS256 is an HMAC-SHA256; RS256 verification is
RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 8.2.2), done by encoding the expected message and comparing
it whole to the decrypted signature (never by parsing the decrypted block, which is what signature
forgeries exploit). Only verification is needed, which uses the public key alone: no dependency.
Tokens are checked for ``exp`` (required), ``nbf``, and the configured ``aud`` / ``iss``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from fnmatch import fnmatchcase
from pathlib import Path

from marketfeed.options import JwtConfig, ServerConfig, check_channel_pattern


class AuthError(Exception):
    """Why a token was refused (safe to show to the client)."""


class Grant:
    """What an accepted token allows: channel patterns, until ``expires`` (epoch seconds, or None)."""

    __slots__ = ("expires", "name", "patterns")

    def __init__(self, name: str, patterns: list[str], expires: float | None) -> None:
        self.name = name
        self.patterns = [tuple(p.split(":")) if p != "*" else ("*", "*", "*") for p in patterns]
        self.expires = expires

    def allows(self, kind: str, venue: str, symbol: str) -> bool:
        for k, v, s in self.patterns:
            if fnmatchcase(kind, k) and fnmatchcase(venue, v) and fnmatchcase(symbol, s):
                return True
        return False


OPEN = Grant("anonymous", ["*"], None)


def _b64url(part: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", part):
        raise AuthError("malformed token")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise AuthError("malformed token") from None


# --- RSA public keys (DER) -------------------------------------------------------------------------


def _der_read(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """One DER TLV at ``pos``: (tag, value, position after it)."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, data[pos : pos + length], pos + length


RSA_OID = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1 rsaEncryption


def load_rsa_public_key(pem: str) -> tuple[int, int]:
    """(n, e) from a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo) or ``RSA PUBLIC KEY`` (PKCS#1)."""
    m = re.search(r"-----BEGIN (RSA )?PUBLIC KEY-----(.*?)-----END \1?PUBLIC KEY-----", pem, re.DOTALL)
    if m is None:
        raise ValueError("no PEM public key found")
    der = base64.b64decode("".join(m.group(2).split()))
    if m.group(1) is None:  # SPKI: SEQUENCE { SEQUENCE { OID, NULL }, BIT STRING { RSAPublicKey } }
        tag, spki, _ = _der_read(der, 0)
        _, alg, pos = _der_read(spki, 0)
        _, oid, _ = _der_read(alg, 0)
        if oid != RSA_OID:
            raise ValueError("not an RSA public key")
        tag_bits, bits, _ = _der_read(spki, pos)
        if tag_bits != 0x03 or not bits or bits[0] != 0:
            raise ValueError("bad public key bit string")
        der = bits[1:]
    tag, seq, _ = _der_read(der, 0)
    if tag != 0x30:
        raise ValueError("bad RSA public key")
    tag_n, n_bytes, pos = _der_read(seq, 0)
    tag_e, e_bytes, _ = _der_read(seq, pos)
    if tag_n != 0x02 or tag_e != 0x02:
        raise ValueError("bad RSA public key")
    n, e = int.from_bytes(n_bytes, "big"), int.from_bytes(e_bytes, "big")
    if n.bit_length() < 2048:
        raise ValueError(f"RSA key of {n.bit_length()} bits is too short (at least 2048)")
    return n, e


SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def rsa_sha256_verify(key: tuple[int, int], message: bytes, signature: bytes) -> bool:
    n, e = key
    k = (n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    s = int.from_bytes(signature, "big")
    if s >= n:
        return False
    em = pow(s, e, n).to_bytes(k, "big")
    t = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    expected = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    return hmac.compare_digest(em, expected)


# --- the authenticator ----------------------------------------------------------------------------


class Authenticator:
    """Checks bearer tokens against a ``[server]`` configuration."""

    def __init__(self, config: ServerConfig) -> None:
        self.required = bool(config.tokens) or config.jwt is not None
        self.static: list[tuple[bytes, Grant]] = []
        for i, t in enumerate(config.tokens):
            secret = t.token if t.token is not None else os.environ.get(t.token_env or "")
            if not secret:
                raise ValueError(f"server.tokens[{i}].token_env: environment variable {t.token_env} is not set")
            self.static.append((secret.encode(), Grant(t.name or f"tokens[{i}]", t.channels, None)))
        self.jwt: JwtConfig | None = config.jwt
        self.hs_secret: bytes | None = None
        self.rsa: tuple[int, int] | None = None
        if config.jwt is not None:
            j = config.jwt
            if j.hs256_secret_env is not None:
                value = os.environ.get(j.hs256_secret_env)
                if not value:
                    raise ValueError(f"server.jwt.hs256_secret_env: environment variable {j.hs256_secret_env} is not set")
                self.hs_secret = value.encode()
            elif j.hs256_secret is not None:
                self.hs_secret = j.hs256_secret.encode()
            if j.rs256_public_key is not None:
                try:
                    self.rsa = load_rsa_public_key(Path(j.rs256_public_key).expanduser().read_text())
                except (OSError, ValueError) as exc:
                    raise ValueError(f"server.jwt.rs256_public_key: {exc}") from None

    def check(self, token: object, now: float) -> Grant:
        """The grant of ``token``; AuthError says why it is refused."""
        if not isinstance(token, str) or not token:
            raise AuthError("missing token")
        if len(token) > 8192:
            raise AuthError("token too long")
        raw = token.encode()
        for secret, grant in self.static:
            if hmac.compare_digest(raw, secret):
                return grant
        if self.jwt is not None and token.count(".") == 2:
            return self._check_jwt(token, now)
        raise AuthError("invalid token")

    def _check_jwt(self, token: str, now: float) -> Grant:
        assert self.jwt is not None
        h64, p64, s64 = token.split(".")
        try:
            header = json.loads(_b64url(h64))
            claims = json.loads(_b64url(p64))
        except (ValueError, UnicodeDecodeError):
            raise AuthError("malformed token") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise AuthError("malformed token")
        signature = _b64url(s64)
        signed = f"{h64}.{p64}".encode()
        alg = header.get("alg")
        if alg == "HS256" and self.hs_secret is not None:
            ok = hmac.compare_digest(hmac.new(self.hs_secret, signed, hashlib.sha256).digest(), signature)
        elif alg == "RS256" and self.rsa is not None:
            ok = rsa_sha256_verify(self.rsa, signed, signature)
        else:
            raise AuthError(f"token algorithm {alg!r} is not accepted")
        if not ok:
            raise AuthError("bad token signature")
        j = self.jwt
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise AuthError("token has no exp")
        if now > exp + j.leeway:
            raise AuthError("token expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, (int, float)) and now < nbf - j.leeway:
            raise AuthError("token not valid yet")
        if j.issuer is not None and claims.get("iss") != j.issuer:
            raise AuthError("wrong token issuer")
        if j.audience is not None:
            aud = claims.get("aud")
            if not (aud == j.audience or (isinstance(aud, list) and j.audience in aud)):
                raise AuthError("wrong token audience")
        patterns = claims.get(j.channels_claim, [])
        if isinstance(patterns, str):
            patterns = patterns.split()
        if not isinstance(patterns, list) or not all(isinstance(p, str) and check_channel_pattern(p) is None for p in patterns):
            raise AuthError(f"bad {j.channels_claim} claim")
        return Grant(str(claims.get("sub", "jwt")), patterns, float(exp) + j.leeway)


def make_hs256_jwt(claims: dict[str, object], secret: str | bytes) -> str:
    """An HS256 JWT (for tests and for operators minting tokens)."""
    key = secret.encode() if isinstance(secret, str) else secret

    def enc(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = enc(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = enc(json.dumps(claims, separators=(",", ":")).encode())
    sig = enc(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"
