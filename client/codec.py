"""Payload encryption: AES-256-GCM over every payload opsflow writes to Temporal.

With `OPSFLOW_PAYLOAD_KEYS` set (`k2=<base64>,k1=<base64>`), the first key encrypts and every
key decrypts, so keys rotate by putting a new one first and dropping an old one only once no
history still needs it. An encrypted payload is the whole serialized payload (metadata and
data), encrypted, with metadata `encoding: binary/encrypted` and the key id; a payload without
that encoding decodes unchanged, so histories recorded before encryption still replay.

No web framework here: clients and workers import this; the codec server (worker/codec_server.py)
serves the same codec over HTTP for the Temporal UI and CLI.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce; random per payload
KEYS_VARIABLE = "OPSFLOW_PAYLOAD_KEYS"

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


class PayloadKeyError(ValueError):
    """OPSFLOW_PAYLOAD_KEYS cannot be used; the message says why, never showing a key."""


class PayloadDecryptError(ValueError):
    """An encrypted payload cannot be decrypted with the keys at hand."""


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.translate(_URLSAFE_TO_STANDARD), validate=True)
    except (binascii.Error, ValueError):
        raise PayloadKeyError(
            f"{where}: the key is not base64 (make one with `openssl rand -base64 32`)"
        ) from None
    if len(key) != KEY_BYTES:
        raise PayloadKeyError(
            f"{where}: the key is {len(key)} bytes; AES-256 needs {KEY_BYTES} "
            "(make one with `openssl rand -base64 32`)"
        )
    return key


@dataclasses.dataclass(frozen=True)
class PayloadKeys:
    """Named AES-256 keys in order: the first encrypts, every one decrypts."""

    keys: tuple[tuple[str, bytes], ...] = dataclasses.field(repr=False)  # never in a log

    def __post_init__(self) -> None:
        if not self.keys:
            raise PayloadKeyError("at least one key is needed")

    @classmethod
    def parse(cls, text: str) -> PayloadKeys:
        """`id=base64,id=base64`, newest first. Errors name entries by position, never by
        content: a key pasted without its id would otherwise be echoed into a log."""
        if not text.strip():
            raise PayloadKeyError(
                "must not be empty: give key-id=base64-key pairs, newest first, e.g. "
                "k2=<base64>,k1=<base64>"
            )
        parsed: list[tuple[str, bytes]] = []
        for position, entry in enumerate(text.split(","), start=1):
            where = f"entry {position}"
            if not entry.strip():
                raise PayloadKeyError(f"{where} is empty (a stray comma?)")
            key_id, equals, key_text = entry.strip().partition("=")
            if not equals:
                raise PayloadKeyError(f"{where} is not key-id=base64-key")
            if not _KEY_ID.fullmatch(key_id.strip()):
                raise PayloadKeyError(
                    f"{where}: the key id must be 1 to 64 letters, digits, '.', '_' or '-'"
                )
            if not key_text.strip():
                raise PayloadKeyError(f"{where}: the key is empty")
            parsed.append((key_id.strip(), _decode_key(key_text.strip(), where)))
        seen: set[str] = set()
        for key_id, _ in parsed:
            if key_id in seen:
                raise PayloadKeyError(f"the key id {key_id!r} appears more than once")
            seen.add(key_id)
        return cls(tuple(parsed))

    @property
    def current_id(self) -> str:
        return self.keys[0][0]

    def ids(self) -> list[str]:
        return [key_id for key_id, _ in self.keys]


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole payloads, as in Temporal's encryption samples (no associated
    data, nonce first), so a codec server in another SDK's language can read them too."""

    def __init__(self, keys: PayloadKeys) -> None:
        super().__init__()
        self.keys = keys
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.keys}
        self._current = self._ciphers[keys.current_id]

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._current.encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={
                "encoding": ENCODING,
                KEY_ID_METADATA: self.keys.current_id.encode(),
            },
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was on (or by a plain client)
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadDecryptError(
                f"a payload is encrypted under key id {key_id!r}, which {KEYS_VARIABLE} does "
                f"not hold (it holds {', '.join(self.keys.ids())}): add that key after the "
                "current one"
            )
        try:
            plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], None)
        except InvalidTag:
            raise PayloadDecryptError(
                f"a payload under key id {key_id!r} does not decrypt: that id names a different "
                "key than the one it was encrypted with, or the payload was altered"
            ) from None
        return Payload.FromString(plain)


def data_converter(keys: PayloadKeys | None) -> DataConverter:
    """opsflow's data converter (pydantic), encrypting when keys are given."""
    if keys is None:
        return pydantic_data_converter
    return dataclasses.replace(pydantic_data_converter, payload_codec=EncryptionCodec(keys))
