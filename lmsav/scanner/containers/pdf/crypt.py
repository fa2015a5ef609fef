"""The standard security handler: RC4 (R2-R4) with an empty user password."""

from __future__ import annotations

import hashlib

from .document import object_value

_PAD = bytes.fromhex("28bf4e5e4e758a4164004e56fffa01082e2e00b6d0683e802f0ca9fe6453697a")


def encryption(trailers: list[dict], objects: dict, data: bytes) -> dict | None:
    for trailer in reversed(trailers):
        if "Encrypt" in trailer:
            value = object_value(data, objects, trailer["Encrypt"])
            return value if isinstance(value, dict) else {}
    return None


def rc4_decryptor(encrypt: dict, trailers: list[dict], objects: dict, data: bytes):
    """A ``decrypt(num, gen, bytes)`` when the document opens with an empty password, else None."""
    if encrypt.get("Filter") != "Standard":
        return None
    version, revision = encrypt.get("V", 0), encrypt.get("R", 0)
    if version == 4:
        crypt = encrypt.get("CF", {})
        std = crypt.get(str(encrypt.get("StmF", "StdCF"))) if isinstance(crypt, dict) else None
        if not isinstance(std, dict) or std.get("CFM") != "V2":
            return None  # AESV2/AESV3: needs AES, which the standard library has not
    elif version not in (1, 2):
        return None
    if revision not in (2, 3, 4):
        return None
    owner = encrypt.get("O")
    user = encrypt.get("U")
    perms = encrypt.get("P")
    if not isinstance(owner, bytes) or not isinstance(user, bytes) or not isinstance(perms, int):
        return None
    ident = b""
    for trailer in reversed(trailers):
        ids = trailer.get("ID")
        if isinstance(ids, list) and ids and isinstance(ids[0], bytes):
            ident = ids[0]
            break
    length = encrypt.get("Length", 40) if revision >= 3 else 40
    if version == 4 and isinstance(std, dict) and isinstance(std.get("Length"), int):
        length = std["Length"] * 8 if std["Length"] <= 16 else std["Length"]
    n = max(5, min(16, (length if isinstance(length, int) else 40) // 8))
    digest = hashlib.md5(_PAD + owner[:32] + (perms & 0xFFFFFFFF).to_bytes(4, "little") + ident)
    if revision >= 4 and encrypt.get("EncryptMetadata") is False:
        digest.update(b"\xff\xff\xff\xff")
    key = digest.digest()[:n]
    if revision >= 3:
        for _ in range(50):
            key = hashlib.md5(key).digest()[:n]
    # Check the key against /U: a real user password makes this fail.
    if revision == 2:
        ok = _rc4(key, _PAD) == user[:32]
    else:
        check = _rc4(key, hashlib.md5(_PAD + ident).digest())
        for i in range(1, 20):
            check = _rc4(bytes(b ^ i for b in key), check)
        ok = check == user[:16]
    if not ok:
        return None

    def decrypt(num: int, gen: int, payload: bytes) -> bytes:
        obj_key = hashlib.md5(key + num.to_bytes(4, "little")[:3] + gen.to_bytes(2, "little"))
        return _rc4(obj_key.digest()[: min(n + 5, 16)], payload)

    return decrypt


def _rc4(key: bytes, payload: bytes) -> bytes:
    s = list(range(256))
    j = 0
    klen = len(key)
    for i in range(256):
        j = (j + s[i] + key[i % klen]) & 0xFF
        s[i], s[j] = s[j], s[i]
    out = bytearray(len(payload))
    i = j = 0
    for k, byte in enumerate(payload):
        i = (i + 1) & 0xFF
        si = s[i]
        j = (j + si) & 0xFF
        sj = s[j]
        s[i], s[j] = sj, si
        out[k] = byte ^ s[(si + sj) & 0xFF]
    return bytes(out)


def is_identity_crypt(filters: list[str]) -> bool:
    return bool(filters) and filters[0] == "Crypt"
