"""SIDs and self-relative security descriptors (MS-DTYP 2.4.2, 2.4.6).

Encoders for the test-master builder and a decoder for the independent check.
"""
import struct
from typing import TypedDict

SE_DACL_PRESENT = 0x0004
SE_SELF_RELATIVE = 0x8000
ACL_REVISION = 2

ACE_TYPES = {0: "allow", 1: "deny"}
ACE_TYPE_CODES = {v: k for k, v in ACE_TYPES.items()}
OBJECT_INHERIT_ACE = 0x01
CONTAINER_INHERIT_ACE = 0x02

# An ACE to encode: (type name, flags, access mask, SID).
AceSpec = tuple[str, int, int, str]


class Ace(TypedDict):
    type: str
    flags: int
    mask: int
    sid: str


class SecurityDescriptor(TypedDict):
    owner: str | None
    group: str | None
    dacl: list[Ace]


def sid_to_bytes(sid: str) -> bytes:
    """'S-1-5-21-a-b-c-r' -> binary SID (authority big-endian, sub-authorities LE u32)."""
    parts = sid.split("-")
    if parts[0] != "S" or parts[1] != "1":
        raise ValueError(f"not a SID: {sid}")
    subs = [int(x) for x in parts[3:]]
    return bytes([1, len(subs)]) + int(parts[2]).to_bytes(6, "big") + b"".join(
        struct.pack("<I", s) for s in subs)


def sid_from_bytes(b: bytes, off: int = 0) -> tuple[str, int]:
    """Binary SID at off -> (string, length)."""
    rev, n = b[off], b[off + 1]
    if rev != 1 or n > 15 or off + 8 + 4 * n > len(b):
        raise ValueError(f"bad SID at {off:#x}")
    auth = int.from_bytes(b[off + 2:off + 8], "big")
    subs = struct.unpack_from(f"<{n}I", b, off + 8)
    return f"S-1-{auth}" + "".join(f"-{s}" for s in subs), 8 + 4 * n


def build_sd(owner: str, group: str, dacl: list[AceSpec]) -> bytes:
    """Self-relative SD: header, owner, group, DACL. dacl = [(type, flags, mask, sid)]."""
    o, g = sid_to_bytes(owner), sid_to_bytes(group)
    aces = b""
    for typ, flags, mask, sid in dacl:
        s = sid_to_bytes(sid)
        aces += struct.pack("<BBHI", ACE_TYPE_CODES[typ], flags, 8 + len(s), mask) + s
    acl = struct.pack("<BBHHH", ACL_REVISION, 0, 8 + len(aces), len(dacl), 0) + aces
    off_owner = 20
    off_group = off_owner + len(o)
    off_dacl = off_group + len(g)
    hdr = struct.pack("<BBHIIII", 1, 0, SE_SELF_RELATIVE | SE_DACL_PRESENT,
                      off_owner, off_group, 0, off_dacl)
    return hdr + o + g + acl


def parse_sd(sd: bytes) -> SecurityDescriptor:
    """Self-relative SD -> {'owner','group','dacl':[{type,flags,mask,sid}]} (basic ACEs only)."""
    rev, _sbz, control, o_own, o_grp, _o_sacl, o_dacl = struct.unpack_from("<BBHIIII", sd, 0)
    if rev != 1 or not control & SE_SELF_RELATIVE:
        raise ValueError("not a self-relative SD")
    out: SecurityDescriptor = {"owner": sid_from_bytes(sd, o_own)[0] if o_own else None,
                               "group": sid_from_bytes(sd, o_grp)[0] if o_grp else None,
                               "dacl": []}
    if control & SE_DACL_PRESENT and o_dacl:
        _r, _p, _size, count, _p2 = struct.unpack_from("<BBHHH", sd, o_dacl)
        pos = o_dacl + 8
        for _ in range(count):
            typ, flags, asize = struct.unpack_from("<BBH", sd, pos)
            mask, = struct.unpack_from("<I", sd, pos + 4)
            if typ not in ACE_TYPES:
                raise ValueError(f"unexpected ACE type {typ}")
            out["dacl"].append({"type": ACE_TYPES[typ], "flags": flags, "mask": mask,
                                "sid": sid_from_bytes(sd, pos + 8)[0]})
            pos += asize
    return out
