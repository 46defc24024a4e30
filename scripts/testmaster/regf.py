"""Minimal registry hive (regf) writer and base-block helpers.

hivex cannot create a hive from nothing, so new_empty_hive() writes the smallest valid one:
a 4096-byte base block (version 1.5, so hivex writes lh subkey lists) and one 4096-byte hbin
holding the root nk cell, one sk cell and a free cell. hivex adds everything else.
Layout: msuhanov/regf "Windows registry file format specification.md" (see docs/FORMAT-FACTS.md §2).
"""
import struct
from typing import Any

BASE_BLOCK = 4096
HBIN = 4096
# Fixed FILETIME (2024-03-01 12:00:00 UTC) so that hives are deterministic.
FIXED_FILETIME = 133537680000000000


def checksum(base: bytes) -> int:
    """XOR of the 127 LE dwords at 0x000-0x1FB, with the 0 / 0xFFFFFFFF special cases."""
    x = 0
    for (w,) in struct.iter_unpack("<I", base[:0x1FC]):
        x ^= w
    if x == 0xFFFFFFFF:
        return 0xFFFFFFFE
    if x == 0:
        return 1
    return x


def fix_checksum(buf: bytearray) -> None:
    struct.pack_into("<I", buf, 0x1FC, checksum(bytes(buf[:0x200])))


def new_empty_hive(file_name: str, root_name: str, sd: bytes) -> bytes:
    """A valid empty hive: root key `root_name` whose sk cell holds `sd`."""
    bins = bytearray(HBIN)
    struct.pack_into("<4sIIQQI", bins, 0, b"hbin", 0, HBIN, 0, FIXED_FILETIME, 0)
    root_off = 0x20
    name = root_name.encode("latin-1")
    nk_len = (4 + 0x4C + len(name) + 7) & ~7
    sk_off = root_off + nk_len
    sk_len = (4 + 0x14 + len(sd) + 7) & ~7
    free_off = sk_off + sk_len
    # nk: flags HIVE_ENTRY|NO_DELETE|COMP_NAME (0x2C), like real root keys.
    nk = struct.pack("<2sHQ" + "I" * 15 + "HH", b"nk", 0x2C, FIXED_FILETIME, 0,
                     0xFFFFFFFF, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0, 0xFFFFFFFF,
                     sk_off, 0xFFFFFFFF, 0, 0, 0, 0, 0, len(name), 0) + name
    assert len(nk) == 0x4C + len(name)
    struct.pack_into("<i", bins, root_off, -nk_len)
    bins[root_off + 4:root_off + 4 + len(nk)] = nk
    # sk: Flink = Blink = itself (a one-element circular list), reference count 1.
    sk = struct.pack("<2sHIIII", b"sk", 0, sk_off, sk_off, 1, len(sd)) + sd
    struct.pack_into("<i", bins, sk_off, -sk_len)
    bins[sk_off + 4:sk_off + 4 + len(sk)] = sk
    struct.pack_into("<i", bins, free_off, HBIN - free_off)

    base = bytearray(BASE_BLOCK)
    struct.pack_into("<4sIIQIIIIIII", base, 0, b"regf", 1, 1, FIXED_FILETIME,
                     1, 5, 0, 1, root_off, HBIN, 1)
    fn = file_name.encode("utf-16-le")[-62:]
    base[0x30:0x30 + len(fn)] = fn
    fix_checksum(base)
    return bytes(base + bins)


def set_sequence_numbers(path: str, primary: int, secondary: int) -> None:
    """Rewrite the base block's sequence numbers and keep the checksum valid."""
    with open(path, "r+b") as f:
        base = bytearray(f.read(0x200))
        struct.pack_into("<II", base, 4, primary, secondary)
        fix_checksum(base)
        f.seek(0)
        f.write(base)


def read_base(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        base = f.read(0x200)
    sig, prim, sec = struct.unpack_from("<4sII", base, 0)
    minor, = struct.unpack_from("<I", base, 0x18)
    stored, = struct.unpack_from("<I", base, 0x1FC)
    return {"signature": sig, "primary": prim, "secondary": sec, "minor": minor,
            "checksum_ok": stored == checksum(base)}
