"""Every store with checksums of issue 11 at its real path, for one machine SID.

`populate(root, sid, work, files_out)` writes into a mounted NTFS volume (ntfs-3g):
- `Windows/System32/sru/SRUDB.dat`: the real System Resource Usage Monitor database of
  ../shared/realdata/ese-srum (gunzipped here, never copied into the project). It carries the
  machine SID S-1-5-21-1806060109-1839359715-529511253 ([`SRUM_SID`]) twice in binary; for another
  SID the 12-byte sub-authority triple is replaced and the page checksums of the changed pages are
  recomputed ([`ese_with_sid`]). It is written in (at least) two fragments, one junction at the last
  cluster boundary before the SID ([`write_fragmented`]);
- `ProgramData/Microsoft/Windows/AppRepository/StateRepository-Machine.srd` and its `-wal`: a
  StateRepository-like SQLite database (python's sqlite3 module) whose first rows are in the
  database and the rest only in write-ahead-log frames, the SID as text and as a binary SID in
  both; the log's salts are made fixed and its frame checksums recomputed ([`sqlite_store`]);
- `Windows/System32/wbem/Repository/*`: the WMI repository of testmaster/wmi.py (CreatorSIDs);
- event logs outside `winevt/Logs`: the test master's Security log (testmaster/evtx.py) recorded
  for this SID, exported to `Users/Public/Documents` and to `ProgramData/Microsoft/Windows/...`;
  on a data disk also at `Windows/System32/winevt/Logs` (no Windows there: not a system log).

`python3 -m testmaster build-store-disk OUT.img [--sid SID]` makes a data disk (GPT, one NTFS
partition with 512-byte clusters, no Windows) holding the same set; `build-test-master --stores all`
adds them to a Windows test master with its machine SID (docs/TEST-MASTERS.md).

ESE page checksums [microsoft/Extensible-Storage-Engine (MIT) `dev/ese/src/checksum/checksum.cxx`;
libyal/libesedb documentation, "Page header"], pages of 4 or 8 KiB:
- pages 0 and 1 are the file header and its copy: u32 at 0 = 0x89ABCDEF XOR every u32 after it;
- the page at file offset (n + 1) * page size has page number n. With page flag 0x2000 (u32 at
  36) it has the new format: the page is a matrix of u32 rows (its first two, the checksum, count
  as zero); the XOR at 0 is the XOR of all rows (the column parity) XOR n; the ECC at 4 packs,
  high to low, the complement and the value of the XOR of the indexes of the rows of odd parity
  (as many bits as a row index has) and, in 5 bits each, the complement and the value of the XOR
  of the bit positions of the odd columns: bits 21.., 16..20, 5.., 0..4. Without the flag (old
  format) the u32 at 0 is 0x89ABCDEF XOR every u32 after it and the u32 at 4 is n.

SQLite write-ahead log [sqlite.org/fileformat2.html, "The Write-Ahead Log"]: a 32-byte header
(magic, version, page size, checkpoint sequence, salt-1, salt-2, checksum of the first 24 bytes),
then frames of a 24-byte header (page number, database size after a commit or 0, the salts, the
cumulative checksum over the header's first 8 bytes and the page) and a page. The checksum runs
over u32 pairs (big-endian with magic 0x377f0683, else little-endian): s0 += x0 + s1; s1 += x1 + s0.
"""
import argparse
import gzip
import hashlib
import os
import sqlite3
import struct
from typing import Any

from . import evtx, spec, wmi
from .disk import SECTOR, MiB, Partition, create_sparse, put_partition, write_partition_table
from .mount import NtfsMount
from .tools import make_progress, remove_stale, run, work_directory, write_manifest

SRUM_SID = "S-1-5-21-1806060109-1839359715-529511253"
SRUDB_PATH = "Windows/System32/sru/SRUDB.dat"
SRUDB_GZ = "ese-srum/SRUDB.dat.gz"
STATE_REPOSITORY = "ProgramData/Microsoft/Windows/AppRepository/StateRepository-Machine.srd"
WMI_FILES = ("OBJECTS.DATA", "INDEX.BTR", "MAPPING1.MAP", "MAPPING2.MAP", "MAPPING3.MAP")
EXPORTED_LOGS = ("Users/Public/Documents/Security-exported.evtx",
                 "ProgramData/Microsoft/Windows/Diagnostics/Security-archived.evtx")
DATA_DISK_LOG = evtx.PATH   # on a disk without Windows, winevt/Logs is an ordinary folder
SQLITE_ROWS_IN_DATABASE = 20
SQLITE_ROWS_IN_LOG = 40
WAL_SALTS = (0x5D1F0001, 0x5D1F0002)   # fixed, so the log is the same on every build
DATA_DISK_SIZE = 64 * MiB
DATA_DISK_GUID = "5D1F5D1F-0000-4000-8000-0000000000D2"
DATA_PARTITION_GUID = "5D1F5D1F-0000-4000-8000-0000000000F1"
DATA_PARTITION_TYPE = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"   # basic data
DATA_DISK_CLUSTER = 512   # smaller than an ESE page: a fragment junction can cut a page

ESE_HEADER_SEED = 0x89ABCDEF
ESE_PAGE_SIZE_AT = 236
ESE_PAGE_FLAGS_AT = 36
ESE_NEW_CHECKSUM = 0x2000
WAL_HEADER, WAL_FRAME_HEADER = 32, 24
WAL_MAGIC_BE = 0x377F0683

progress = make_progress("stores")


def sid_forms(sid: str) -> list[bytes]:
    """ASCII, UTF-16LE and the binary sub-authority triple of a machine SID S-1-5-21-a-b-c."""
    triple = struct.pack("<3I", *(int(x) for x in sid.split("-")[4:]))
    return [sid.encode("ascii"), sid.encode("utf-16-le"), triple]


def replace_sid(data: bytes, old: str, new: str) -> bytes:
    out = data
    for o, n in zip(sid_forms(old), sid_forms(new), strict=True):
        if o not in out:
            continue
        if len(o) != len(n):
            raise RuntimeError(f"{new} and {old} differ in length as {o!r}: pick a SID of equal digits")
        out = out.replace(o, n)
    return out


def real_srudb(realdata: str) -> bytes:
    path = os.path.join(realdata, SRUDB_GZ)
    if not os.path.isfile(path):
        raise RuntimeError(f"{path} not found (use --realdata)")
    with gzip.open(path, "rb") as f:
        return f.read()


def _u32(page: bytes | bytearray, at: int) -> int:
    return int(struct.unpack_from("<I", page, at)[0])


def _xor_words(page: bytes | bytearray, first: int) -> int:
    acc = 0
    for (w,) in struct.iter_unpack("<I", page[first * 4:]):
        acc ^= w
    return acc


def ese_new_checksum(page: bytes | bytearray, pgno: int) -> tuple[int, int]:
    """(XOR-32, ECC-32) of a new-format ESE page of at most 8 KiB (see the module docstring)."""
    rows = len(page) // 4
    row_bits = rows.bit_length() - 1
    row_mask = (1 << row_bits) - 1
    columns = odd_rows = odd_rows_complement = 0
    for i, (w,) in enumerate(struct.iter_unpack("<I", page)):
        if i < 2:
            continue
        columns ^= w
        if w.bit_count() & 1:
            odd_rows ^= i
            odd_rows_complement ^= ~i & row_mask
    odd_cols = odd_cols_complement = 0
    for bit in range(32):
        if columns >> bit & 1:
            odd_cols ^= bit
            odd_cols_complement ^= ~bit & 31
    ecc = (odd_rows_complement << 21) | (odd_cols_complement << 16) | (odd_rows << 5) | odd_cols
    return columns ^ pgno, ecc


def ese_checksums(page: bytes | bytearray, index: int) -> bytes:
    """The 8 checksum bytes that page `index` of the file (0 and 1: the header) should carry."""
    if index < 2:
        return struct.pack("<I", ESE_HEADER_SEED ^ _xor_words(page, 1)) + bytes(page[4:8])
    pgno = index - 1
    if _u32(page, ESE_PAGE_FLAGS_AT) & ESE_NEW_CHECKSUM:
        return struct.pack("<II", *ese_new_checksum(page, pgno))
    return struct.pack("<II", ESE_HEADER_SEED ^ _xor_words(page, 2) ^ pgno, pgno)


def ese_with_sid(db: bytes, old: str, new: str) -> bytes:
    """The ESE database `db` with machine SID `old` replaced by `new` and the checksums of every
    changed page recomputed; each of those pages must have had valid checksums before."""
    if old == new:
        return db
    page_size = _u32(db, ESE_PAGE_SIZE_AT)
    if page_size not in (4096, 8192) or len(db) % page_size:
        raise RuntimeError(f"ESE page size {page_size} of a {len(db)}-byte file: only 4 and 8 KiB")
    out = bytearray(replace_sid(db, old, new))
    for index in range(len(db) // page_size):
        at = index * page_size
        before, after = db[at:at + page_size], out[at:at + page_size]
        if before == after:
            continue
        if ese_checksums(before, index)[:8] != before[:8]:
            raise RuntimeError(f"ESE page {index} of the master database has a wrong checksum")
        out[at:at + 8] = ese_checksums(after, index)
    return bytes(out)


def wal_checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    fmt = ">II" if big_endian else "<II"
    for x0, x1 in struct.iter_unpack(fmt, data):
        s0 = (s0 + x0 + s1) & 0xFFFFFFFF
        s1 = (s1 + x1 + s0) & 0xFFFFFFFF
    return s0, s1


def wal_with_salts(wal: bytes, salts: tuple[int, int]) -> bytes:
    """The write-ahead log with fixed salts and every frame's checksum recomputed; frames that
    were not valid (after the end of the log) are left as they are."""
    magic, _version, page_size = struct.unpack_from(">III", wal, 0)
    big = magic == WAL_MAGIC_BE
    out = bytearray(wal)
    old_salts = struct.unpack_from(">II", wal, 16)
    struct.pack_into(">II", out, 16, *salts)
    s_old = wal_checksum(wal[:24], big, 0, 0)
    if s_old != struct.unpack_from(">II", wal, 24):
        raise RuntimeError("the write-ahead log header checksum is wrong")
    s_new = wal_checksum(bytes(out[:24]), big, 0, 0)
    struct.pack_into(">II", out, 24, *s_new)
    at = WAL_HEADER
    while at + WAL_FRAME_HEADER + page_size <= len(wal):
        frame = wal[at:at + WAL_FRAME_HEADER + page_size]
        body = frame[:8] + frame[WAL_FRAME_HEADER:]
        s_old = wal_checksum(body, big, *s_old)
        if struct.unpack_from(">II", frame, 8) != old_salts or \
                struct.unpack_from(">II", frame, 16) != s_old:
            break
        s_new = wal_checksum(body, big, *s_new)
        struct.pack_into(">IIII", out, at + 8, *salts, *s_new)
        at += WAL_FRAME_HEADER + page_size
    return bytes(out)


def binary_sid(sid: str, rid: int) -> bytes:
    subs = [int(x) for x in sid.split("-")[3:]]
    return struct.pack("<BB6s", 1, len(subs) + 1, b"\0\0\0\0\0\x05") + struct.pack(
        f"<{len(subs) + 1}I", *subs, rid)


def sqlite_store(sid: str, work: str) -> tuple[bytes, bytes]:
    """(database, write-ahead log) of a StateRepository-like database: `User` rows with the SID as
    text and binary, the first ones in the database, the rest only in the log (copied while the
    connection is open and automatic checkpoints are off)."""
    path = os.path.join(work, "StateRepository-Machine.srd")
    for p in (path, path + "-wal", path + "-shm"):
        if os.path.exists(p):
            os.remove(p)
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("create table User(_UserID integer primary key, UserSid blob, "
                    "UserSidString text, DisplayName text)")
        con.execute("create table Package(_PackageID integer primary key, PackageFullName text, "
                    "InstallUser integer references User(_UserID))")

        def add(rid: int) -> None:
            user = f"{sid}-{rid}"
            cur = con.execute("insert into User(UserSid, UserSidString, DisplayName) values(?, ?, ?)",
                              (binary_sid(sid, rid), user, f"user {rid}"))
            con.execute("insert into Package(PackageFullName, InstallUser) values(?, ?)",
                        (f"Contoso.App_1.0.{rid}.0_x64__8wekyb3d8bbwe", cur.lastrowid))

        for i in range(SQLITE_ROWS_IN_DATABASE):
            add(1001 + i)
        con.execute("pragma journal_mode=wal")
        con.execute("pragma wal_autocheckpoint=0")
        for i in range(SQLITE_ROWS_IN_LOG):
            add(1001 + SQLITE_ROWS_IN_DATABASE + i)
        with open(path, "rb") as f:
            db = f.read()
        with open(path + "-wal", "rb") as f:
            wal = f.read()
    finally:
        con.close()
    return db, wal_with_salts(wal, WAL_SALTS)


def write_fragmented(path: str, data: bytes, split: int) -> None:
    """Writes `data` so that ntfs-3g stores it in two data runs, the second part first: written
    at offset `split` of a new file (ntfs-3g leaves a sparse hole before it), then the first part
    fills the hole with clusters allocated after the second part's. No hole remains, so the file
    is not sparse; its runs lie out of order, the junction at `split`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.seek(split)
        f.write(data[split:])
        f.flush()
        os.fsync(f.fileno())
        f.seek(0)
        f.write(data[:split])
        f.flush()
        os.fsync(f.fileno())


def store_files(sid: str, realdata: str, work: str, data_disk: bool) -> list[tuple[str, bytes]]:
    """Every store (path on the volume, bytes) for machine SID `sid`, SRUDB.dat first."""
    files = [(SRUDB_PATH, ese_with_sid(real_srudb(realdata), SRUM_SID, sid))]
    db, wal = sqlite_store(sid, work)
    files += [(STATE_REPOSITORY, db), (STATE_REPOSITORY + "-wal", wal)]
    repo = wmi.build(sid)
    files += [(f"{wmi.DIR}/{n}", repo[n]) for n in WMI_FILES]
    log = evtx.security_log(sid)
    files += [(p, log) for p in EXPORTED_LOGS + ((DATA_DISK_LOG,) if data_disk else ())]
    return files


def populate(root: str, sid: str, realdata: str, work: str, cluster: int, data_disk: bool,
             files_out: list[dict[str, Any]]) -> dict[str, Any]:
    """Writes every store into the mounted volume `root`; returns the manifest's "stores"."""
    files = store_files(sid, realdata, work, data_disk)
    (srudb_path, srudb), rest = files[0], files[1:]
    at = srudb.find(sid_forms(sid)[2])
    if at < 0:
        raise RuntimeError(f"{srudb_path} does not hold {sid}")
    page = _u32(srudb, ESE_PAGE_SIZE_AT)
    # The last cluster boundary before the SID, inside its page when clusters are smaller.
    split = at // cluster * cluster if at // cluster * cluster > at // page * page \
        else at // page * page
    write_fragmented(os.path.join(root, srudb_path), srudb, split)
    for path, data in rest:
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
    listed = []
    for path, data in files:
        entry = {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        files_out.append(entry)
        listed.append(dict(entry, sid_occurrences=sum(data.count(f) for f in sid_forms(sid))))
    return {"machine_sid": sid, "srudb_fragment_split": split, "files": listed,
            "sqlite_rows": {"database": SQLITE_ROWS_IN_DATABASE,
                            "total": SQLITE_ROWS_IN_DATABASE + SQLITE_ROWS_IN_LOG}}


def build_store_disk(out: str, manifest_path: str, sid: str, realdata: str, keep: bool) -> None:
    """A GPT disk with one NTFS partition (as Windows partitions a data disk, without its MSR),
    holding every store; and its manifest."""
    part = Partition(1, "data", DATA_PARTITION_TYPE, MiB, DATA_DISK_SIZE - 2 * MiB, "ntfs",
                     name="Basic data partition", uuid=DATA_PARTITION_GUID)
    with work_directory("build-store-disk", out, keep, progress) as work:
        img, pf = os.path.join(work, "disk.img"), os.path.join(work, "part.img")
        remove_stale(out, manifest_path)
        create_sparse(img, DATA_DISK_SIZE)
        write_partition_table(img, "gpt", DATA_DISK_GUID, [part.sfdisk_line(True)])
        create_sparse(pf, part.size)
        run(["mkntfs", "-q", "-F", "-Q", "-T", "-c", str(DATA_DISK_CLUSTER), "-s", "512",
             "-p", str(part.start // SECTOR), "-L", "Data", pf])
        mnt = os.path.join(work, "mnt")
        os.mkdir(mnt)
        files: list[dict[str, Any]] = []
        with NtfsMount(pf, mnt, log=os.path.join(work, "ntfs-3g.log")):
            stores = populate(mnt, sid, realdata, work, DATA_DISK_CLUSTER, True, files)
        put_partition(img, pf, part.start)
        os.replace(img, out)
        write_manifest({"schema": 1, "generator": "python3 -m testmaster build-store-disk",
                        "size": DATA_DISK_SIZE, "partitions": [part.manifest(True)],
                        "data_partition": part.index, "cluster_size": DATA_DISK_CLUSTER,
                        "machine_sid": sid, "stores": stores}, manifest_path)
    progress(f"done: {out} (manifest {manifest_path})")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="build-store-disk",
        description="Build a data disk (GPT, one NTFS partition, no Windows) holding every store with "
                    "checksums at its real path: the real SRUDB.dat, a SQLite database with a "
                    "write-ahead log, a WMI repository and event logs, all with one machine SID; "
                    "clone it with sidfs mount --old-sid SID.",
        epilog="Needs root (ntfs-3g). See docs/TEST-MASTERS.md.")
    ap.add_argument("out", metavar="OUT.img", help="disk image to write (overwritten)")
    ap.add_argument("--sid", default=SRUM_SID,
                    help=f"machine SID of the stores (default: the real SRUDB.dat's, {SRUM_SID}, "
                         "which leaves that file byte for byte the real one)")
    ap.add_argument("--manifest", metavar="OUT.json", help="default: OUT.img.json")
    ap.add_argument("--realdata", metavar="DIR", default=spec.REALDATA,
                    help="directory holding ese-srum/SRUDB.dat.gz (default: %(default)s)")
    ap.add_argument("--keep-work", action="store_true", help="keep the work directory")
    a = ap.parse_args(argv)
    parts = a.sid.split("-")
    if len(parts) != 7 or parts[:4] != ["S", "1", "5", "21"] or not all(p.isdigit() for p in parts[4:]):
        ap.error(f"--sid {a.sid!r} is not a machine SID S-1-5-21-a-b-c")
    if os.geteuid() != 0:
        ap.error("must run as root (ntfs-3g FUSE mounts)")
    out = os.path.abspath(a.out)
    build_store_disk(out, os.path.abspath(a.manifest or out + ".json"), a.sid, a.realdata,
                     a.keep_work)
    return 0
