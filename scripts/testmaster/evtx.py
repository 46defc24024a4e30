"""A small, deterministic Windows XML Event Log (.evtx) for the test master.

Written field by field from the format description [libyal/libevtx documentation "Windows XML
Event Log (EVTX)"; docs/FORMAT-FACTS.md §5]: a 4096-byte file header, 64 KiB chunks with a string table
(0x80), a template table (0x180), the records CRC32 at 0x34 over [0x200, free-space offset) and the
header CRC32 at 0x7C over [0, 0x78) + [0x80, 0x200); records whose binary XML is a template
instance with substitution values. The machine SID appears as SidType (0x13) values (in an
attribute and in an element), as UTF-16 string values and as a literal in a template.

Layout of the log built by `security_log()`:
- chunk 0: records 1-3; 1 and 2 carry machine-account SIDs, 3 only the AD domain's SIDs;
- chunk 1: record 4, no machine SID (it must stay byte-identical in a clone);
- one unused 64 KiB block of zeros (no chunk signature), as a preallocated log has.
"""
import struct
import zlib
from collections.abc import Sequence
from typing import Literal

from .spec import BPERRY, DOMAIN_SID, MACHINE_SID, STUDENT, msid

FILE_HEADER_BLOCK = 0x1000
CHUNK_SIZE = 0x10000
RECORDS_START = 0x200
T_WSTRING, T_UINT16, T_SID = 0x01, 0x06, 0x13
TEMPLATE_ID = 0x5D1F0001
FILETIME_BASE = 0x01DA000000000000   # fixed, so the log is deterministic

PATH = "Windows/System32/winevt/Logs/Security.evtx"


def utf16(s: str) -> bytes:
    return s.encode("utf-16-le")


def binary_sid(s: str) -> bytes:
    parts = [int(p) for p in s.split("-")[3:]]
    return bytes([1, len(parts), 0, 0, 0, 0, 0, int(s.split("-")[2])]) + \
        b"".join(struct.pack("<I", p) for p in parts)


def name_hash(name: str) -> int:
    """[libevtx: hash = hash * 65599 + code unit, the low 16 bits stored]"""
    h = 0
    for (unit,) in struct.iter_unpack("<H", utf16(name)):
        h = (h * 65599 + unit) & 0xFFFFFFFF
    return h & 0xFFFF


# Content items: a substitution (index, value type), a text, an element (name, attributes,
# children).
Sub = tuple[Literal["sub"], int, int]
Text = tuple[Literal["text"], str]
Element = tuple[Literal["el"], str, list[tuple[str, "Item"]], list["Item"]]
Item = Sub | Text | Element
# A substitution value: (value type, bytes).
Value = tuple[int, bytes]


def el(name: str, attrs: Sequence[tuple[str, Item]] = (), children: Sequence[Item] = ()) -> Element:
    return ("el", name, list(attrs), list(children))


class Chunk:
    def __init__(self) -> None:
        self.c = bytearray(RECORDS_START)
        self.names: dict[str, int] = {}
        self.first: int | None = None
        self.last = 0
        self.last_record = 0

    def pos(self) -> int:
        return len(self.c)

    def name(self, name: str) -> None:
        if name in self.names:
            self.c += struct.pack("<I", self.names[name])
            return
        at = self.pos() + 4
        self.c += struct.pack("<I", at)
        h = name_hash(name)
        bucket = 0x80 + 4 * (h % 64)
        nxt = struct.unpack_from("<I", self.c, bucket)[0]
        self.c += struct.pack("<IHH", nxt, h, len(name)) + utf16(name) + b"\0\0"
        struct.pack_into("<I", self.c, bucket, at)
        self.names[name] = at

    def item(self, it: Item) -> None:
        if it[0] == "sub":
            self.c += struct.pack("<BHB", 0x0D, it[1], it[2])
        elif it[0] == "text":
            self.c += struct.pack("<BBH", 0x05, T_WSTRING, len(it[1])) + utf16(it[1])
        else:
            self.element(it[1], it[2], it[3])

    def element(self, name: str, attrs: list[tuple[str, Item]], children: list[Item]) -> None:
        self.c += struct.pack("<BH", 0x41 if attrs else 0x01, 0xFFFF)
        size_at = self.pos()
        self.c += b"\0\0\0\0"
        self.name(name)
        attr_at = None
        if attrs:
            attr_at = self.pos()
            self.c += b"\0\0\0\0"
        for i, (attr, value) in enumerate(attrs):
            self.c.append(0x46 if i + 1 < len(attrs) else 0x06)
            self.name(attr)
            self.item(value)
        if attr_at is not None:
            struct.pack_into("<I", self.c, attr_at, self.pos() - attr_at - 4)
        if children:
            self.c.append(0x02)
            for ch in children:
                self.item(ch)
            self.c.append(0x04)
        else:
            self.c.append(0x03)
        struct.pack_into("<I", self.c, size_at, self.pos() - size_at - 4)

    def record(self, rid: int, values: list[Value], body: Element | None = None,
               definition: int | None = None) -> int:
        """A record: a template defined inline (body) or referred to (definition offset)."""
        start = self.pos()
        self.c += b"\x2a\x2a\0\0" + struct.pack("<IQQ", 0, rid, FILETIME_BASE + rid)
        self.c += bytes([0x0F, 1, 1, 0, 0x0C, 1]) + struct.pack("<I", TEMPLATE_ID)
        if body is None:
            if definition is None:
                raise ValueError("a record needs a template body or a definition offset")
            self.c += struct.pack("<I", definition)
        else:
            definition = self.pos() + 4
            self.c += struct.pack("<I", definition)
            slot = 0x180 + 4 * (TEMPLATE_ID % 32)
            self.c += struct.pack("<II", struct.unpack_from("<I", self.c, slot)[0], TEMPLATE_ID)
            self.c += bytes([0x11] * 12)
            size_at = self.pos()
            self.c += b"\0\0\0\0" + bytes([0x0F, 1, 1, 0])
            self.item(body)
            self.c.append(0x00)
            struct.pack_into("<I", self.c, size_at, self.pos() - size_at - 4)
            struct.pack_into("<I", self.c, slot, definition)
        self.c += struct.pack("<I", len(values))
        for t, v in values:
            self.c += struct.pack("<HBB", len(v), t, 0)
        for _, v in values:
            self.c += v
        size = self.pos() + 4 - start
        self.c += struct.pack("<I", size)
        struct.pack_into("<I", self.c, start + 4, size)
        if self.first is None:
            self.first = rid
        self.last = rid
        self.last_record = start
        return definition

    def finish(self) -> bytes:
        free = self.pos()
        assert free <= CHUNK_SIZE
        c = self.c + bytes(CHUNK_SIZE - free)
        c[0:8] = b"ElfChnk\0"
        struct.pack_into("<QQQQIII", c, 8, self.first, self.last, self.first, self.last,
                         0x80, self.last_record, free)
        struct.pack_into("<I", c, 0x34, zlib.crc32(bytes(c[RECORDS_START:free])))
        struct.pack_into("<I", c, 0x7C, zlib.crc32(bytes(c[0:0x78] + c[0x80:0x200])))
        return bytes(c)


def template(literal: str) -> Element:
    def data(name: str, item: Item) -> Element:
        return el("Data", [("Name", ("text", name))], [item])
    return el("Event", [], [
        el("System", [], [
            el("EventID", [], [("sub", 0, T_UINT16)]),
            el("Computer", [], [("sub", 5, T_WSTRING)]),
            el("Security", [("UserID", ("sub", 1, T_SID))]),
        ]),
        el("EventData", [], [
            data("TargetUserSid", ("sub", 2, T_SID)),
            data("TargetUserName", ("sub", 3, T_WSTRING)),
            data("SubjectText", ("sub", 4, T_WSTRING)),
            data("Note", ("text", literal)),
        ]),
    ])


def values(event: int, user: str, target: str, name: str, text: str) -> list[Value]:
    return [(T_UINT16, struct.pack("<H", event)), (T_SID, binary_sid(user)),
            (T_SID, binary_sid(target)), (T_WSTRING, utf16(name)), (T_WSTRING, utf16(text)),
            (T_WSTRING, utf16("STUDENT-PC8"))]


def file_bytes(chunks: list[bytes], unused_blocks: int, next_record: int) -> bytes:
    h = bytearray(FILE_HEADER_BLOCK)
    h[0:8] = b"ElfFile\0"
    struct.pack_into("<QQQIHHHH", h, 8, 0, len(chunks) - 1, next_record, 0x80, 1, 3,
                     FILE_HEADER_BLOCK, len(chunks))
    struct.pack_into("<I", h, 0x7C, zlib.crc32(bytes(h[0:0x78])))
    return bytes(h) + b"".join(chunks) + bytes(CHUNK_SIZE * unused_blocks)


def security_log(machine_sid: str = MACHINE_SID) -> bytes:
    """The Security.evtx of the test master (see the module docstring); `machine_sid`: the
    same log recorded on a machine with that SID (a data disk's, testmaster/stores.py)."""
    student = STUDENT if machine_sid == MACHINE_SID else f"{machine_sid}-1001"
    admin = msid(500) if machine_sid == MACHINE_SID else f"{machine_sid}-500"
    c0 = Chunk()
    d = c0.record(1, values(4624, student, admin, "gold_administrator", student + ";"),
                  body=template(machine_sid + " is this machine"))
    c0.record(2, values(4672, "S-1-5-18", student, "SYSTEM", "S-1-5-18"), definition=d)
    c0.record(3, values(4625, BPERRY, BPERRY, "bperry", DOMAIN_SID), definition=d)
    c1 = Chunk()
    c1.record(4, values(4634, BPERRY, "S-1-5-19", "LOCAL SERVICE", "no machine SID"),
              body=template("S-1-5-32-544"))
    return file_bytes([c0.finish(), c1.finish()], 1, 5)
