"""A small, deterministic WMI (CIM) repository, format version 2.1 (Windows Vista and later).

No real repository is at hand: this is our own writer, field by field from the published notes
[libyal dtformats, "WMI repository file format": "The index binary-tree file", "The mapping
file", "The objects data file"], written independently of sidfs's Rust code. What the notes leave
open is chosen as docs/SEMANTICS.md ("WMI repository") says sidfs assumes, so a real sample may
differ there:
- OBJECTS.DATA: 8192-byte pages; a page that starts records begins with 16-byte descriptors
  (identifier, offset from the page start, size, CRC-32 of the record data: zlib.crc32) ended by
  an all-zero descriptor; a longer record continues on the following logical pages.
- MAPPING1..3.MAP: header (0xabcd, sequence, two identifiers, physical page count, entry count),
  24-byte entries (physical page, page checksum = zlib.crc32 of the whole physical page, free
  space, used space, two identifiers), free-page table, footer 0xdcba; then the same for
  INDEX.BTR, whose logical page 0 entry gives the root page in its "used space" field. The file
  with the highest sequence number is current; the others are older generations.
- INDEX.BTR: one 8192-byte leaf page whose keys are `NS_<hash>/CI_<hash>/IL_<hash>.<logical
  page>.<record id>.<size>` strings (hash: SHA-256 of the upper-case UTF-16LE name).

Records (instance layout of version 2.1: the class name hash in 64 UTF-16 hex digits, two
FILETIMEs, the instance block size and data): an `__EventFilter` and a
`CommandLineEventConsumer` with a binary CreatorSID (the machine's Administrator, RID 500), a
consumer whose command line names the SID as a string and that is longer than a page (it spans
three pages, not in physical order), and a namespace record without any SID.

With `--sid-key`, also an `__EventFilter` whose key property `Name` is the SID string of the
machine's Administrator (`SID-500`, stored as a CIM string: a flag byte 0, ASCII, NUL), indexed
as `.../IL_<hash of that name>...` the way the index names every instance by its key value: a
repository sidfs must refuse (docs/SEMANTICS.md, "WMI repository").

`python3 wmi.py SID OUTDIR [--sid-key]` writes the five files for machine SID `SID`.
"""
import hashlib
import os
import struct
import sys
import zlib

PAGE = 0x2000
DIR = "Windows/System32/wbem/Repository"
FILETIME = 0x01DA000000000000


def binary_sid(sid: str, rid: int) -> bytes:
    parts = [int(x) for x in sid.split("-")[3:]]
    return struct.pack("<BB6s", 1, 5, b"\0\0\0\0\0\x05") + struct.pack("<5I", *parts, rid)


def name_hash(name: str) -> str:
    return hashlib.sha256(name.upper().encode("utf-16-le")).hexdigest().upper()


def instance(class_name: str, block: bytes) -> bytes:
    """An instance record: class name hash (64 UTF-16 hex digits), two FILETIMEs, block size
    (including its 4 bytes) and the block."""
    return (name_hash(class_name).encode("utf-16-le") + struct.pack("<QQ", FILETIME, FILETIME + 1)
            + struct.pack("<I", len(block) + 4) + block)


def records(sid: str, sid_key: bool = False) -> list[tuple[int, str, str, bytes]]:
    """(record id, class name, key value, data) of every record, in storage order; with
    `sid_key`, record 5 is an `__EventFilter` keyed on the SID string."""
    admin = binary_sid(sid, 500)
    query = "SELECT * FROM __InstanceCreationEvent WITHIN 60".encode("utf-16-le")
    filt = instance("__EventFilter", b"\x00" + struct.pack("<I", len(admin)) + admin
                    + b"\x01" + query)
    cons = instance("CommandLineEventConsumer", b"\x00" + struct.pack("<I", len(admin)) + admin
                    + b"\x01" + "C:\\Tools\\audit.exe".encode("utf-16-le"))
    long_cmd = ("C:\\Tools\\collect.exe /owner " + sid + "-500 ").encode("utf-16-le")
    padding = bytes((i * 7) & 0xFF for i in range(17000))
    big = instance("CommandLineEventConsumer", b"\x00" + struct.pack("<I", len(admin)) + admin
                   + long_cmd + padding + long_cmd)
    ns = instance("__namespace", "subscription".encode("utf-16-le") * 8)
    out = [(1, "__EventFilter", "Audit", filt),
           (2, "CommandLineEventConsumer", "Audit", cons),
           (3, "__namespace", "subscription", ns),
           (4, "CommandLineEventConsumer", "Collect", big)]
    if sid_key:
        name = sid + "-500"
        keyed = instance("__EventFilter", b"\x00" + struct.pack("<I", len(admin)) + admin
                         + b"\x00" + name.encode("ascii") + b"\x00" + b"\x01" + query)
        out.insert(3, (5, "__EventFilter", name, keyed))
    return out


def descriptors(entries: list[tuple[int, int, bytes]]) -> bytes:
    out = b"".join(struct.pack("<4I", i, off, len(d), zlib.crc32(d)) for i, off, d in entries)
    return out + b"\0" * 16


def build(sid: str, sid_key: bool = False) -> dict[str, bytes]:
    recs = records(sid, sid_key)
    # Logical page 0: records 1-3 (and 5). Logical pages 1-3: record 4 (starts on 1, continues
    # on 2, 3).
    # Physical order of logical pages 0..3: 0, 3, 1, 4; physical page 2 is free (a deleted
    # record's remnant with the SID, which no checksum covers).
    small = recs[:-1]
    head = 16 * (len(small) + 1)
    page0 = bytearray(PAGE)
    at = head
    entries: list[tuple[int, int, bytes]] = []
    for rid, _, _, data in small:
        entries.append((rid, at, data))
        page0[at:at + len(data)] = data
        at += len(data)
    page0[:head] = descriptors(entries)
    rid4, data4 = recs[-1][0], recs[-1][3]
    head4 = 32
    first = PAGE - head4
    logical = [bytearray(PAGE) for _ in range(3)]
    logical[0][:head4] = descriptors([(rid4, head4, data4)])
    logical[0][head4:] = data4[:first]
    rest = data4[first:]
    logical[1][:] = rest[:PAGE]
    logical[2][:len(rest) - PAGE] = rest[PAGE:]
    free = bytearray(PAGE)
    free[100:100 + 28] = binary_sid(sid, 1001)
    physical = [bytes(page0), bytes(logical[1]), bytes(free), bytes(logical[0]),
                bytes(logical[2])]
    objects_map = [0, 3, 1, 4]
    objects = b"".join(physical)

    page_of = {1: 0, 2: 0, 3: 0, 4: 1, 5: 0}
    namespace = name_hash("root\\subscription")
    keys: list[str] = []
    for rid, cls, key, data in recs:
        keys.append(f"NS_{namespace}/CI_{name_hash(cls)}"
                    f"/IL_{name_hash(key)}.{page_of[rid]}.{rid}.{len(data)}")
    keys.sort()
    index = index_page(keys)

    def mapping(sequence: int) -> bytes:
        out = struct.pack("<6I", 0xABCD, sequence, 1, 0, len(physical), len(objects_map))
        for p in objects_map:
            out += struct.pack("<6I", p, zlib.crc32(physical[p]), 0, PAGE, 0, 0)
        out += struct.pack("<I", 1) + struct.pack("<I", 2) + struct.pack("<I", 0xDCBA)
        out += struct.pack("<6I", 0xABCD, sequence, 1, 0, 1, 1)
        out += struct.pack("<6I", 0, zlib.crc32(index), 0, 0, 0, 0)   # root page 0
        out += struct.pack("<I", 0) + struct.pack("<I", 0xDCBA)
        # Real mapping files are tens of KiB: keep these out of their MFT records too.
        return out + b"\0" * (4096 - len(out))

    files = {"OBJECTS.DATA": objects, "INDEX.BTR": index,
             "MAPPING1.MAP": mapping(11), "MAPPING2.MAP": mapping(13),
             "MAPPING3.MAP": mapping(12)}
    return files


def index_page(keys: list[str]) -> bytes:
    """One leaf page: header (type 0xaccc, logical page, 0, root page, key count), unknown
    array, sub pages (none: 0xffffffff), key offsets, key segment table, value table."""
    parts: list[str] = []
    for k in keys:
        for seg in k.split("/"):
            if seg not in parts:
                parts.append(seg)
    sdt: list[int] = []
    key_at: list[int] = []
    for k in keys:
        key_at.append(len(sdt))
        segs = k.split("/")
        sdt.append(len(segs))
        sdt.extend(parts.index(s) for s in segs)
    data = b""
    offsets: list[int] = []
    for p in parts:
        offsets.append(len(data))
        data += p.encode("ascii") + b"\0"
    n = len(keys)
    out = struct.pack("<5I", 0xACCC, 0, 0, 0, n)
    out += struct.pack(f"<{n}I", *([0] * n))
    out += struct.pack(f"<{n + 1}I", *([0xFFFFFFFF] * (n + 1)))
    out += struct.pack(f"<{n}H", *key_at)
    out += struct.pack("<H", len(sdt)) + struct.pack(f"<{len(sdt)}H", *sdt)
    out += struct.pack("<H", len(offsets)) + struct.pack(f"<{len(offsets) + 1}H",
                                                           *offsets, len(data))
    out += data
    assert len(out) <= PAGE
    return out + b"\0" * (PAGE - len(out))


def main() -> None:
    sid, outdir = sys.argv[1], sys.argv[2]
    sid_key = sys.argv[3:] == ["--sid-key"]
    if sys.argv[3:] and not sid_key:
        sys.exit("usage: wmi.py SID OUTDIR [--sid-key]")
    os.makedirs(outdir, exist_ok=True)
    for name, data in build(sid, sid_key).items():
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
