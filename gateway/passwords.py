"""Password hashes for ``[[users]]``: scrypt from the standard library, in the PHC string format.

A hash looks like ``$scrypt$ln=15,r=8,p=1$<salt>$<hash>`` (unpadded base64), so the cost
parameters travel with it and can be raised later without invalidating existing hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

DEFAULT_LOG2_N = 15
DEFAULT_R = 8
DEFAULT_P = 1
_HASH_BYTES = 32
_SALT_BYTES = 16
_FORMAT = re.compile(r"\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)")


@dataclass(frozen=True)
class ScryptHash:
    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def derive(self, password: str) -> bytes:
        return _scrypt(password, self.salt, self.log2_n, self.r, self.p, len(self.digest))

    def encode(self) -> str:
        return f"$scrypt$ln={self.log2_n},r={self.r},p={self.p}${_b64(self.salt)}${_b64(self.digest)}"


def hash_password(password: str, *, log2_n: int = DEFAULT_LOG2_N) -> str:
    """A fresh salted hash of ``password``, to paste into the config."""
    salt = os.urandom(_SALT_BYTES)
    digest = _scrypt(password, salt, log2_n, DEFAULT_R, DEFAULT_P, _HASH_BYTES)
    return ScryptHash(log2_n, DEFAULT_R, DEFAULT_P, salt, digest).encode()


def parse_hash(encoded: str) -> ScryptHash:
    """Decode a stored hash; raises ValueError saying what is wrong with it."""
    match = _FORMAT.fullmatch(encoded)
    if match is None:
        raise ValueError("not a hash made by `gateway hash-password` (expected $scrypt$ln=..,r=..,p=..$salt$hash)")
    log2_n, r, p = (int(group) for group in match.group(1, 2, 3))
    if not (10 <= log2_n <= 22 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range (ln 10-22, r 1-32, p 1-16)")
    return ScryptHash(log2_n, r, p, _unb64(match.group(4)), _unb64(match.group(5)))


def verify_password(password: str, stored: ScryptHash) -> bool:
    """Slow on purpose (tens of milliseconds); callers run it off the event loop."""
    return hmac.compare_digest(stored.derive(password), stored.digest)


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int, length: int) -> bytes:
    n = 1 << log2_n
    # scrypt needs 128 * n * r * p bytes; allow twice that so OpenSSL's own bound never trips.
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r * p, dklen=length)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))
