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
MIN_HASH_BYTES = 32
"""A shorter digest is guessable: with 1 byte, one random password in 256 matches."""
MIN_SALT_BYTES = 16
MAX_ENCODED_BYTES = 64
"""Salt and digest are each at most this long: longer buys nothing and costs every check."""
MAX_MEMORY = 1 << 30
"""scrypt's memory per check (128 * r * 2**ln bytes) at most; Python refuses 2 GiB or more."""
_FORMAT = re.compile(r"\$scrypt\$ln=([0-9]{1,2}),r=([0-9]{1,2}),p=([0-9]{1,2})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)")


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
    if 128 * r << log2_n > MAX_MEMORY:
        raise ValueError(
            f"scrypt parameters need more than {MAX_MEMORY >> 30} GiB per check (128 * r * 2^ln bytes); lower ln or r"
        )
    salt, digest = _decoded("salt", match.group(4)), _decoded("hash", match.group(5))
    if not MIN_SALT_BYTES <= len(salt) <= MAX_ENCODED_BYTES:
        raise ValueError(f"the salt is {len(salt)} bytes; expected {MIN_SALT_BYTES} to {MAX_ENCODED_BYTES}")
    if not MIN_HASH_BYTES <= len(digest) <= MAX_ENCODED_BYTES:
        raise ValueError(
            f"the hash is {len(digest)} bytes; expected {MIN_HASH_BYTES} to {MAX_ENCODED_BYTES} (a short one lets wrong passwords in)"
        )
    return ScryptHash(log2_n, r, p, salt, digest)


def verify_password(password: str, stored: ScryptHash) -> bool:
    """Slow on purpose (tens of milliseconds); callers run it off the event loop."""
    return hmac.compare_digest(stored.derive(password), stored.digest)


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int, length: int) -> bytes:
    n = 1 << log2_n
    # OpenSSL needs 128 * r * (n + p + 2) bytes; the slack keeps its own bound from ever tripping.
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=128 * r * (n + p + 2) + (1 << 20), dklen=length
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _decoded(part: str, text: str) -> bytes:
    if len(text) % 4 == 1:  # no byte string encodes to this length
        raise ValueError(f"the {part} is not valid base64")
    return base64.b64decode(text + "=" * (-len(text) % 4))
