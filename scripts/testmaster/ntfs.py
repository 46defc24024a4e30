"""Byte-level NTFS edits on an unmounted volume inside a disk image.

Everything works on (image path, partition byte offset). Sources: docs/FORMAT-FACTS.md §3
(ntfs-3g layout.h, mst.c, logfile.h/logfile.c; libfsntfs).
"""
import struct
from collections.abc import Iterator
from typing import Any

NTFS_BLOCK = 512            # update-sequence stride, whatever the sector size
ATTR_VOLUME_INFORMATION = 0x70
ATTR_DATA = 0x80
ATTR_END = 0xFFFFFFFF
MFT_LOGFILE = 2
MFT_VOLUME = 3
VOLUME_IS_DIRTY = 0x0001
LOGFILE_NO_CLIENT = 0xFFFF
RESTART_VOLUME_IS_CLEAN = 0x0002


class Volume:
    bytes_per_sector: int
    cluster: int
    total_sectors: int
    mft_lcn: int
    mftmirr_lcn: int
    record_size: int
    serial: int

    def __init__(self, image: str, part_offset: int) -> None:
        self.image, self.base = image, part_offset
        boot = self.read(0, 512)
        if boot[3:11] != b"NTFS    ":
            raise ValueError(f"no NTFS boot sector at {part_offset:#x}: OEM {boot[3:11]!r}")
        self.bytes_per_sector, = struct.unpack_from("<H", boot, 0x0B)
        spc = boot[0x0D]
        spc = 1 << (256 - spc) if spc > 128 else spc
        self.cluster = self.bytes_per_sector * spc
        self.total_sectors, self.mft_lcn, self.mftmirr_lcn = struct.unpack_from("<QQQ", boot, 0x28)
        cpr = struct.unpack_from("<b", boot, 0x40)[0]
        self.record_size = 1 << -cpr if cpr < 0 else cpr * self.cluster
        self.serial, = struct.unpack_from("<Q", boot, 0x48)

    def read(self, off: int, n: int) -> bytes:
        with open(self.image, "rb") as f:
            f.seek(self.base + off)
            return f.read(n)

    def write(self, off: int, data: bytes) -> None:
        with open(self.image, "r+b") as f:
            f.seek(self.base + off)
            f.write(data)

    # --- boot sector -------------------------------------------------------------------
    def backup_boot_offset(self) -> int:
        # mkntfs / Windows keep a copy in the last sector of the volume (total_sectors
        # excludes it), i.e. at sector total_sectors.
        return self.total_sectors * self.bytes_per_sector

    def patch_boot_both(self, off: int, data: bytes) -> None:
        self.write(off, data)
        self.write(self.backup_boot_offset() + off, data)

    # --- MFT records -------------------------------------------------------------------
    def record_offset(self, n: int, mirror: bool = False) -> int:
        lcn = self.mftmirr_lcn if mirror else self.mft_lcn
        return lcn * self.cluster + n * self.record_size

    def read_record(self, n: int, mirror: bool = False) -> tuple[int, bytearray]:
        off = self.record_offset(n, mirror)
        return off, unfix(bytearray(self.read(off, self.record_size)))

    def write_record(self, off: int, rec: bytearray) -> None:
        self.write(off, bytes(refix(bytearray(rec))))


def unfix(buf: bytearray) -> bytearray:
    """Undo update-sequence fixups in place (ntfs_mst_post_read_fixup)."""
    usa_ofs, usa_count = struct.unpack_from("<HH", buf, 4)
    usn = buf[usa_ofs:usa_ofs + 2]
    for i in range(1, usa_count):
        end = i * NTFS_BLOCK - 2
        if buf[end:end + 2] != usn:
            raise ValueError(f"fixup mismatch in block {i - 1} (torn write)")
        buf[end:end + 2] = buf[usa_ofs + 2 * i:usa_ofs + 2 * i + 2]
    return buf


def refix(buf: bytearray) -> bytearray:
    """Apply update-sequence fixups in place, keeping the record's current USN."""
    usa_ofs, usa_count = struct.unpack_from("<HH", buf, 4)
    usn = buf[usa_ofs:usa_ofs + 2]
    for i in range(1, usa_count):
        end = i * NTFS_BLOCK - 2
        buf[usa_ofs + 2 * i:usa_ofs + 2 * i + 2] = buf[end:end + 2]
        buf[end:end + 2] = usn
    return buf


def attributes(rec: bytes) -> Iterator[tuple[int, int]]:
    """Yield (offset, type) for each attribute of an unfixed FILE record."""
    pos, = struct.unpack_from("<H", rec, 0x14)
    while pos + 8 <= len(rec):
        typ, length = struct.unpack_from("<II", rec, pos)
        if typ == ATTR_END or length == 0:
            return
        yield pos, typ
        pos += length


def resident_value_offset(rec: bytes, attr_off: int) -> int:
    if rec[attr_off + 8]:
        raise ValueError("attribute is non-resident")
    vofs: int = struct.unpack_from("<H", rec, attr_off + 0x14)[0]
    return attr_off + vofs


def runlist(rec: bytes, attr_off: int) -> list[tuple[int | None, int]]:
    """Decode a non-resident attribute's mapping pairs -> [(lcn or None, clusters)]."""
    mp, = struct.unpack_from("<H", rec, attr_off + 0x20)
    pos, lcn = attr_off + mp, 0
    runs: list[tuple[int | None, int]] = []
    while rec[pos]:
        h = rec[pos]
        ln, lo = h & 0xF, h >> 4
        length = int.from_bytes(rec[pos + 1:pos + 1 + ln], "little")
        if lo:
            lcn += int.from_bytes(rec[pos + 1 + ln:pos + 1 + ln + lo], "little", signed=True)
            runs.append((lcn, length))
        else:
            runs.append((None, length))
        pos += 1 + ln + lo
    return runs


def set_volume_flags(vol: Volume, set_bits: int) -> None:
    """$Volume (record 3) VOLUME_INFORMATION.flags |= set_bits, in $MFT and in $MFTMirr."""
    for mirror in (False, True):
        off, rec = vol.read_record(MFT_VOLUME, mirror)
        for a, typ in attributes(rec):
            if typ == ATTR_VOLUME_INFORMATION:
                v = resident_value_offset(rec, a)
                flags, = struct.unpack_from("<H", rec, v + 0x0A)
                struct.pack_into("<H", rec, v + 0x0A, flags | set_bits)
                break
        else:
            raise ValueError("no $VOLUME_INFORMATION in record 3")
        vol.write_record(off, rec)


def volume_flags(vol: Volume, mirror: bool = False) -> int:
    _, rec = vol.read_record(MFT_VOLUME, mirror)
    for a, typ in attributes(rec):
        if typ == ATTR_VOLUME_INFORMATION:
            flags: int = struct.unpack_from("<H", rec, resident_value_offset(rec, a) + 0x0A)[0]
            return flags
    raise ValueError("no $VOLUME_INFORMATION")


def logfile_extent(vol: Volume) -> tuple[int, int]:
    """(byte offset in partition, data size) of $LogFile's first run."""
    _, rec = vol.read_record(MFT_LOGFILE)
    for a, typ in attributes(rec):
        if typ == ATTR_DATA:
            size, = struct.unpack_from("<Q", rec, a + 0x30)
            lcn, _n = runlist(rec, a)[0]
            if lcn is None:
                raise ValueError("$LogFile's first run is sparse")
            return lcn * vol.cluster, size
    raise ValueError("no $DATA in $LogFile")


PAGE = 4096
RA_OFS = 0x30          # restart area offset in the restart page (after the USA)
CA_OFS = 0x30          # client array offset inside the restart area (sizeof(RESTART_AREA))
CLIENT_RECORD = 0xA0   # sizeof(LOG_CLIENT_RECORD)


def restart_page(file_size: int, clean: bool, major: int = 1, minor: int = 1, usn: int = 1) -> bytes:
    """One $LogFile restart page (RSTR), version major.minor, with one client "NTFS".

    clean: the NTFS client is on the free list, no client in use, RESTART_VOLUME_IS_CLEAN.
    not clean: the client is in use and the clean flag is clear (Windows crashed or was
    switched off while the volume was mounted)."""
    p = bytearray(PAGE)
    usa_count = 1 + PAGE // NTFS_BLOCK
    struct.pack_into("<4sHHqIIHhh", p, 0, b"RSTR", 0x1E, usa_count, 0, PAGE, PAGE,
                     RA_OFS, minor, major)
    struct.pack_into("<H", p, 0x1E, usn)
    bits = file_size.bit_length()
    lsn = 0x2000A5  # any plausible non-zero LSN
    ra = RA_OFS
    free_list, in_use, flags = (0, LOGFILE_NO_CLIENT, RESTART_VOLUME_IS_CLEAN) if clean else \
        (LOGFILE_NO_CLIENT, 0, 0)
    struct.pack_into("<qHHHHIHHqIHHII", p, ra, lsn, 1, free_list, in_use, flags, 67 - bits,
                     CA_OFS + CLIENT_RECORD, CA_OFS, file_size, 0, 0x30, 0x40, 7, 0)
    cr = ra + CA_OFS
    name = "NTFS".encode("utf-16-le")
    struct.pack_into("<qqHHHxxxxxxI", p, cr, lsn, lsn, LOGFILE_NO_CLIENT, LOGFILE_NO_CLIENT,
                     1, len(name))
    p[cr + 0x20:cr + 0x20 + len(name)] = name
    return bytes(refix(p))


def write_restart_pages(vol: Volume, clean: bool, major: int = 1, minor: int = 1) -> None:
    off, size = logfile_extent(vol)
    page = restart_page(size, clean, major, minor)
    vol.write(off, page)
    vol.write(off + PAGE, page)


def read_restart_area(vol: Volume, which: int = 0) -> dict[str, Any]:
    off, _ = logfile_extent(vol)
    p = unfix(bytearray(vol.read(off + which * PAGE, PAGE)))
    if p[:4] not in (b"RSTR", b"CHKD"):
        return {"magic": bytes(p[:4]).hex()}
    ra_ofs, minor, major = struct.unpack_from("<Hhh", p, 0x18)
    _lsn, _clients, _free_list, in_use, flags = struct.unpack_from("<qHHHH", p, ra_ofs)
    return {"magic": p[:4].decode(), "version": f"{major}.{minor}", "in_use": in_use,
            "flags": flags, "clean": in_use == LOGFILE_NO_CLIENT or bool(flags & RESTART_VOLUME_IS_CLEAN)}
