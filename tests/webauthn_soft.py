"""A software WebAuthn authenticator and client for the API tests: what a browser and a
platform authenticator send (`PublicKeyCredential.toJSON()`), built here from the
options Gatehouse answers, with its own ES256 keys and CBOR — not the server's library —
so the server's checks meet independent input. The browser tests use Chromium's own
virtual authenticator instead (tests/test_passkeys_browser.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, AT = 0x01, 0x04, 0x40
ORIGIN = "https://app.example.test"
RP_ID = "example.test"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Credential:
    id: bytes
    key: ec.EllipticCurvePrivateKey
    user_handle: str  # base64url, as the creation options gave it
    rp_id: str
    count: int = 0


@dataclass
class SoftAuthenticator:
    """A platform authenticator with discoverable credentials. `counter`: keeps a sign
    count (else always 0); `uv`: verifies its user."""

    origin: str = ORIGIN
    counter: bool = True
    uv: bool = True
    credentials: list[Credential] = field(default_factory=list)

    def _client_data(self, kind: str, options: dict[str, Any], origin: str | None) -> bytes:
        data = {"type": kind, "challenge": options["challenge"], "origin": origin or self.origin, "crossOrigin": False}
        return json.dumps(data, separators=(",", ":")).encode()

    def _flags(self, extra: int = 0) -> bytes:
        return bytes([UP | (UV if self.uv else 0) | extra])

    def create(self, options: dict[str, Any], *, origin: str | None = None, reuse: Credential | None = None) -> dict:
        """`navigator.credentials.create` for these creation options (`reuse`: the same
        credential id and key again, as a second registration of one authenticator)."""
        rp_id = options["rp"]["id"]
        excluded = {unb64url(c["id"]) for c in options.get("excludeCredentials", [])}
        cred = reuse or Credential(
            os.urandom(16), ec.generate_private_key(ec.SECP256R1()), options["user"]["id"], rp_id
        )
        assert reuse is not None or cred.id not in excluded
        numbers = cred.key.public_key().public_numbers()
        cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})
        attested = bytes(16) + len(cred.id).to_bytes(2, "big") + cred.id + cose
        auth_data = hashlib.sha256(rp_id.encode()).digest() + self._flags(AT) + cred.count.to_bytes(4, "big") + attested
        if reuse is None:
            self.credentials.append(cred)
        return {
            "id": b64url(cred.id),
            "rawId": b64url(cred.id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(self._client_data("webauthn.create", options, origin)),
                "attestationObject": b64url(cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})),
                "transports": ["internal", "hybrid"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        credential: Credential | None = None,
        count: int | None = None,
    ) -> dict:
        """`navigator.credentials.get`: an assertion by an allowed credential (or, with
        none listed, the first discoverable one); `count` forces the sign count."""
        allowed = [unb64url(c["id"]) for c in options.get("allowCredentials", [])]
        cred = credential or next(c for c in self.credentials if not allowed or c.id in allowed)
        if count is not None:
            cred.count = count
        elif self.counter:
            cred.count += 1
        auth_data = hashlib.sha256(options["rpId"].encode()).digest() + self._flags() + cred.count.to_bytes(4, "big")
        client_data = self._client_data("webauthn.get", options, origin)
        signature = cred.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        return {
            "id": b64url(cred.id),
            "rawId": b64url(cred.id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": cred.user_handle,
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }
