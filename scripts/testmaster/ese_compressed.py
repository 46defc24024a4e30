"""ESE databases with a compressed value, made from the real SRUDB.dat for the mount tests of
mount-tests/ese_compressed.rs (issue 11):

    python3 -m testmaster.ese_compressed VARIANT SID IN OUT     (run from scripts/)

IN is the real SRUDB.dat (read where it lies, never copied into the project), SID the machine
SID the compressed value is to hold (sid) or not to hold (plain, unknown). One record of
SruDbIdMapTable gets its IdBlob (tagged column 256) stored compressed, the record's node moved
within its page as it grows, and the page's XOR-32 and ECC-32 computed here:

- sid:     the record whose IdBlob is a binary user SID now holds the UTF-16 string of SID-500,
           XPRESS-compressed (plain LZ77, MS-XCA 2.3): back-references (the text repeats
           "\0-\0") and flag words split the stored text, so no SID form is in the stored bytes;
- plain:   the longest IdBlob without the SID (UTF-16 text) XPRESS-compressed with back-references;
- unknown: the same value marked compressed with scheme 5 (XPRESS9), which sidfs does not read.

Layout [libyal libesedb "Extensible Storage Engine (ESE) Database File (EDB) format": page
header, page tags, record data, tagged data; microsoft/Extensible-Storage-Engine (MIT)
compression.cxx: the scheme in the upper 5 bits of the first byte, XPRESS's u16 plain size
after it; MS-XCA 2.3/2.4: plain LZ77]. docs/FORMAT-FACTS.md says the same with its sources.
"""
from __future__ import annotations

import struct
import sys

from .sids import sid_to_bytes

HDR_PAGE_SIZE = 236
PAGE_HEADER = 40                   # small pages (<= 8 KiB)
PG_FREE, PG_MIC_FREE, PG_ITAG, PG_FLAGS = 28, 32, 34, 36
LEAF, SPACE_TREE, INDEX, LONG_VALUE, NEW_CHECKSUM = 0x2, 0x20, 0x40, 0x80, 0x2000
TV_EXTENDED = 0x4000               # small pages: the tagged value has a flags byte
TV_COMPRESSED = 0x02
IDBLOB = 256
SCHEME_XPRESS, SCHEME_XPRESS9 = 3, 5


def u16(b: bytes | bytearray, at: int) -> int:
    return int(struct.unpack_from("<H", b, at)[0])


def u32(b: bytes | bytearray, at: int) -> int:
    return int(struct.unpack_from("<I", b, at)[0])


def lz77(plain: bytes, matches: bool) -> bytes:
    """MS-XCA plain LZ77 (2.3): one flag bit an item, 32 to a u32 written before its items;
    greedy matches of 3 or more bytes within 8 KiB when `matches`, literals only otherwise."""
    out = bytearray()
    flags, nflags, flag_at = 0, 0, 0
    half: int | None = None
    pos = 0

    def start_item() -> None:
        nonlocal flags, nflags, flag_at
        if nflags == 32:
            struct.pack_into("<I", out, flag_at, flags)
            flags, nflags = 0, 0
        if nflags == 0:
            flag_at = len(out)
            out.extend(b"\0\0\0\0")

    while pos < len(plain):
        best_len, best_off = 0, 0
        if matches:
            for off in range(1, min(pos, 8192) + 1):
                n = 0
                while pos + n < len(plain) and n < 255 + 25 and plain[pos + n] == plain[pos - off + n]:
                    n += 1
                if n > best_len:
                    best_len, best_off = n, off
        start_item()
        if best_len < 3:
            flags = flags << 1
            nflags += 1
            out.append(plain[pos])
            pos += 1
            continue
        flags = (flags << 1) | 1
        nflags += 1
        m = best_len - 3
        out.extend(struct.pack("<H", ((best_off - 1) << 3) | min(m, 7)))
        if m >= 7:
            n = min(m - 7, 15)
            if half is None:
                half = len(out)
                out.append(n)
            else:
                out[half] |= n << 4
                half = None
            if m - 7 >= 15:
                out.append(m - 7 - 15)   # below 255: lengths are capped at 279
        pos += best_len
    # The unused flag bits are ones: a match flag with no input left ends the stream.
    if nflags == 32:
        start_item()
    rest = 32 - nflags
    struct.pack_into("<I", out, flag_at, (flags << rest) | ((1 << rest) - 1))
    return bytes(out)


def xpress_value(plain: bytes, matches: bool) -> bytes:
    """An ESE XPRESS value: scheme 3 in the upper 5 bits, the u16 plain size, the LZ77 stream."""
    return bytes([SCHEME_XPRESS << 3]) + struct.pack("<H", len(plain)) + lz77(plain, matches)


def page_checksums(page: bytearray, pgno: int) -> None:
    """XOR-32 (keyed by the page number) at 0 and ECC-32 at 4 of a new-format page of at most
    8 KiB [libesedb "Page header", the ECC description]: the page is u32 rows, the first two
    counted as zero; the XOR is the column parity; the ECC packs, for the rows and the bit
    columns of odd parity, the XOR of their indexes and of their complements."""
    rows = len(page) // 4
    p = q = column = 0
    for i in range(2, rows):
        w = u32(page, 4 * i)
        column ^= w
        if bin(w).count("1") % 2:
            p ^= i
            q ^= ~i & 0xFFFFFFFF
    r = s = 0
    for bit in range(32):
        if column >> bit & 1:
            r ^= bit
            s ^= ~bit & 0xFFFFFFFF
    mask = rows - 1
    ecc = ((q & mask) << 21) | ((s & 31) << 16) | ((p & mask) << 5) | (r & 31)
    struct.pack_into("<II", page, 0, column ^ pgno, ecc)


class Value:
    """One IdBlob tagged value: where its node and the value lie in the file."""

    def __init__(self, pgno: int, tag: int, node: bytes, at: int, end: int):
        self.pgno, self.tag, self.node = pgno, tag, node
        self.at, self.end = at, end           # value bytes (after the flags byte) in the node

    @property
    def plain(self) -> bytes:
        return self.node[self.at:self.end]


def idblobs(db: bytes) -> list[Value]:
    """Every IdBlob-like value (tagged column 256 with a flags byte, the record's last) of the
    table leaf pages of a database of small pages."""
    size = u32(db, HDR_PAGE_SIZE)
    found = []
    for index in range(2, len(db) // size):
        page = db[index * size:(index + 1) * size]
        flags = u32(page, PG_FLAGS)
        if flags & ~0x3FFFF or not flags & LEAF or flags & (SPACE_TREE | INDEX | LONG_VALUE):
            continue
        for t in range(1, u16(page, PG_ITAG) & 0xFFF):
            cb, ib = u16(page, size - 4 * (t + 1)), u16(page, size - 4 * (t + 1) + 2)
            start = PAGE_HEADER + (ib & 0x1FFF)
            node = page[start:start + (cb & 0x1FFF)]
            o = 2 if ib >> 13 & 0x4 else 0   # prefix-compressed key
            o += 2 + (u16(node, o) & 0x1FFF)
            rec = node[o:]
            if len(rec) < 8 or rec[1] < 127:
                continue
            nvar = rec[1] - 127
            var = u16(rec, 2) + 2 * nvar
            tagged = var + (u16(rec, var - 2) & 0x7FFF if nvar else 0)
            if tagged + 4 > len(rec):
                continue
            col, off = u16(rec, tagged), u16(rec, tagged + 2)
            if col != IDBLOB or off & 0x1FFF != 4 or not off & TV_EXTENDED:
                continue
            found.append(Value(index - 1, t, node, o + tagged + 5, len(node)))
    return found


def fits(db: bytes | bytearray, v: Value, stored: bytes) -> bool:
    """Whether v's node with `stored` as its value fits where it is or in the page's free space."""
    size = u32(db, HDR_PAGE_SIZE)
    page = db[(v.pgno + 1) * size:(v.pgno + 2) * size]
    length = v.at + len(stored)
    tags_start = size - 4 * (u16(page, PG_ITAG) & 0xFFF)
    cb = u16(page, size - 4 * (v.tag + 1)) & 0x1FFF
    return length <= cb or PAGE_HEADER + u16(page, PG_MIC_FREE) + length <= tags_start


def replace_node(db: bytearray, v: Value, stored: bytes, flags: int) -> None:
    """Writes `stored` as v's value with flags byte `flags`; the node moves to the page's free
    space if it grows; tag, free-space fields and page checksums follow."""
    size = u32(db, HDR_PAGE_SIZE)
    base = (v.pgno + 1) * size
    page = bytearray(db[base:base + size])
    node = bytearray(v.node[:v.at - 1]) + bytes([flags]) + stored
    tag_at = size - 4 * (v.tag + 1)
    cb, ib = u16(page, tag_at), u16(page, tag_at + 2)
    free, mic = u16(page, PG_FREE), u16(page, PG_MIC_FREE)
    if len(node) <= cb & 0x1FFF:
        start = ib & 0x1FFF
    else:
        start = mic
        tags_start = size - 4 * (u16(page, PG_ITAG) & 0xFFF)
        if PAGE_HEADER + start + len(node) > tags_start:
            raise RuntimeError(f"page {v.pgno} has no room for a {len(node)}-byte node")
        struct.pack_into("<H", page, PG_MIC_FREE, mic + len(node))
    struct.pack_into("<H", page, PG_FREE, free + (cb & 0x1FFF) - len(node))
    page[PAGE_HEADER + start:PAGE_HEADER + start + len(node)] = node
    struct.pack_into("<HH", page, tag_at, (cb & ~0x1FFF) | len(node), (ib & ~0x1FFF) | start)
    if not u32(page, PG_FLAGS) & NEW_CHECKSUM:
        raise RuntimeError(f"page {v.pgno} has the old checksum format")
    page_checksums(page, v.pgno)
    db[base:base + size] = page


def sid_forms(sid: str) -> list[bytes]:
    """The forms sidfs's byte search knows: the sub-authorities in binary, the text in ASCII and
    UTF-16 (either case of the S)."""
    subs = sid_to_bytes(sid)[8:]
    texts = [sid, "s" + sid[1:]]
    return [subs] + [t.encode() for t in texts] + [t.encode("utf-16-le") for t in texts]


def build(variant: str, sid: str, master: bytes) -> bytes:
    db = bytearray(master)
    blobs = idblobs(master)
    # The IdBlob that is a user's binary SID (S-1-5-21-a-b-c-r: 28 bytes).
    user = bytes.fromhex("0105000000000005")
    holder = [v for v in blobs if v.plain.startswith(user) and len(v.plain) == 28]
    others = [v for v in blobs if v not in holder and not any(f in v.plain for f in sid_forms(sid))]
    if len(holder) != 1 or not others:
        raise RuntimeError(f"expected one IdBlob with a user SID and others, found {len(holder)}")
    if variant == "sid":
        text = sid + "-500"
        stored = xpress_value(text.encode("utf-16-le"), matches=True)
        target = holder[0]
    elif variant in ("plain", "unknown"):
        # The longest value whose page has room for it as stored.
        for target in sorted(others, key=lambda v: -len(v.plain)):
            if variant == "plain":
                stored = xpress_value(target.plain, matches=True)
            else:
                stored = bytes([SCHEME_XPRESS9 << 3]) + target.plain
            if fits(db, target, stored):
                break
    else:
        raise RuntimeError(f"unknown variant {variant!r} (give sid, plain or unknown)")
    if any(f in stored for f in sid_forms(sid)):
        raise RuntimeError("the stored bytes show the SID")
    flags = target.node[target.at - 1] | TV_COMPRESSED
    replace_node(db, target, stored, flags)
    return bytes(db)


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: python3 -m testmaster.ese_compressed sid|plain|unknown SID IN OUT", file=sys.stderr)
        return 1
    variant, sid, src, dst = argv
    with open(src, "rb") as f:
        master = f.read()
    out = build(variant, sid, master)
    with open(dst, "wb") as f:
        f.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
