"""Test-master variants whose SID carriers are spread over MFT extension records (issue 9 item 6).

Each variant is the clean master plus one layout that real, used Windows volumes have and that a
fresh mkntfs + ntfs-3g volume lacks. Everything is written through ntfs-3g (an NTFS
implementation independent of sidfs): when a record overflows, ntfs-3g itself adds an
`$ATTRIBUTE_LIST` and moves attributes, or further extents of a runlist, into extension
records. The builder only arranges the free space and the writes so that it has to.

- `ext-hive`: SOFTWARE grows to about 2.4 MiB (per-user Windows Installer products under
  `Installer\\UserData\\<machine>-1001`, LogonUI `SessionData\\1\\LoggedOnUserSID` last, so its
  SID lies in the tail of the file) and is rewritten into free space fragmented into single
  clusters: its `$DATA` runlist outgrows the record and ntfs-3g continues it in extents
  (lowest VCN > 0) in extension records listed by `$ATTRIBUTE_LIST`.
- `ext-sid-dir`: `$Recycle.Bin` and the SID-named `$Recycle.Bin/<machine>-1001` get small
  named streams first and then 300 long-named entries each: `$FILE_NAME` and the `$I30`
  `$INDEX_ROOT` end up in extension records (`$INDEX_ALLOCATION` and `$BITMAP` stay in the
  base record; the parent's INDX blocks hold the SID-named keys).
- `ext-mft`: free space of single-cluster holes, then 1,600 empty files: the MFT grows in
  about 300 pieces and record 0 gets an `$ATTRIBUTE_LIST`, its further `$DATA` extents in an
  extension record; then `Users/Public/AccountPictures/<machine>-1001` (a SID-named directory
  with a Student-owned descriptor and a file naming the SID) is created, in MFT records that
  only those extents map; the filler files are deleted again.
- `ext-record-copies`: the on-disk bytes of every MFT record and INDX block that holds the
  machine SID (update-sequence fixups applied, as written) are copied into a file, which is
  then deleted: the copies stay in clusters no file owns, like the stale copies of a used
  volume.

The filler is zeros, so freed clusters stay zero and the image stays sparse.
"""
import errno
import hashlib
import os
import struct
from typing import Any

import hivex

from . import ntfs, sids
from .mount import NtfsMount
from .spec import CONFIG, MACHINE_SID, SDS, STUDENT
from .tools import Progress

VARIANTS = ["ext-hive", "ext-sid-dir", "ext-mft", "ext-record-copies"]

CLUSTER = 4096
FILL_DIR = "sidfs-fill"
BLOCKER = "sidfs-blocker"
REG_SZ, REG_BINARY = 1, 3


def apply(variant: str, pf: str, mnt: str, work: str, files_out: list[dict[str, Any]],
          progress: Progress) -> None:
    """Reshape the populated (unmounted) Windows volume `pf` into `variant`; `files_out` is the
    manifest's file list, updated where a file's content changes."""
    log = os.path.join(work, "ntfs-3g-ext.log")
    if variant == "ext-record-copies":
        copies = record_copies(pf)
        progress(f"{len(copies)} MFT/INDX records hold the machine SID")
        with NtfsMount(pf, mnt, log=log):
            drop_copies(mnt, copies)
        return
    with NtfsMount(pf, mnt, log=log):
        if variant == "ext-hive":
            fragment_hive(mnt, work, files_out)
        elif variant == "ext-sid-dir":
            for d in ["$Recycle.Bin", "$Recycle.Bin/" + STUDENT]:
                spread_directory(os.path.join(mnt, d))
        elif variant == "ext-mft":
            fragment_mft(mnt, files_out)
        else:
            raise ValueError(f"unknown variant {variant}")
    progress(f"{variant}: layout spread over extension records")


def free_bytes(mnt: str) -> int:
    st = os.statvfs(mnt)
    return st.f_bavail * st.f_frsize


def block(mnt: str, keep_free: int) -> None:
    """One contiguous zero file that leaves about `keep_free` bytes free."""
    chunk = bytes(1 << 20)
    with open(os.path.join(mnt, BLOCKER), "wb") as f:
        while free_bytes(mnt) > keep_free + len(chunk):
            f.write(chunk)
            f.flush()
            os.fsync(f.fileno())


def fill(mnt: str, limit: int | None = None) -> list[str]:
    """Single-cluster zero files until the volume is full (or `limit` files); returns paths."""
    d = os.path.join(mnt, FILL_DIR)
    os.makedirs(d, exist_ok=True)
    paths: list[str] = []
    zero = bytes(CLUSTER)
    while limit is None or len(paths) < limit:
        p = os.path.join(d, f"f{len(paths):05d}")
        try:
            with open(p, "wb") as f:
                f.write(zero)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            if os.path.exists(p):
                os.unlink(p)
            break
        paths.append(p)
    return paths


def unfill(mnt: str, paths: list[str], blocker: bool = True) -> None:
    for p in paths:
        os.unlink(p)
    os.rmdir(os.path.join(mnt, FILL_DIR))
    if blocker:
        os.unlink(os.path.join(mnt, BLOCKER))


def grow_software(path: str) -> None:
    """Per-user Windows Installer products of the local user (each with a 2 KiB opaque blob, as
    real InstallProperties carry long strings), then LogonUI's session record naming the user:
    hivex appends new cells at the end, so that SID lies in the last part of the file."""
    h = hivex.Hivex(path, write=True)

    def child(n: int, name: str) -> int:
        found: int = h.node_get_child(n, name) or h.node_add_child(n, name)
        return found

    cv = h.root()
    for k in ["Microsoft", "Windows", "CurrentVersion"]:
        cv = child(cv, k)
    products = child(child(child(child(cv, "Installer"), "UserData"), STUDENT), "Products")
    for i in range(400):
        packed = hashlib.md5(f"sidfs product {i}".encode()).hexdigest().upper()
        props = child(child(products, packed), "InstallProperties")
        blob = hashlib.sha256(packed.encode()).digest() * 64
        h.node_set_values(props, [
            {"key": "DisplayName", "t": REG_SZ, "value": sz(f"Sidfs Test Product {i}")},
            {"key": "InstallSource", "t": REG_SZ,
             "value": sz(f"C:\\Users\\Student\\AppData\\Local\\Temp\\{{{packed}}}\\")},
            {"key": "LocalPackage", "t": REG_SZ, "value": sz(f"C:\\Windows\\Installer\\{i:x}.msi")},
            {"key": "Blob", "t": REG_BINARY, "value": blob}])
    logon = child(child(child(child(cv, "Authentication"), "LogonUI"), "SessionData"), "1")
    h.node_set_values(logon, [{"key": "LoggedOnUserSID", "t": REG_SZ, "value": sz(STUDENT)},
                              {"key": "LoggedOnSAMUser", "t": REG_SZ,
                               "value": sz("STUDENT-PC8\\gold_administrator")}])
    h.commit(path)


def sz(s: str) -> bytes:
    return (s + "\0").encode("utf-16-le")


def fragment_hive(mnt: str, work: str, files_out: list[dict[str, Any]]) -> None:
    rel = CONFIG + "/SOFTWARE"
    hive = os.path.join(mnt, rel)
    tmp = os.path.join(work, "SOFTWARE.grown")
    with open(hive, "rb") as f, open(tmp, "wb") as t:
        t.write(f.read())
    grow_software(tmp)
    with open(tmp, "rb") as t:
        data = t.read()
    # Emptied first, so its old clusters are filled too; then every other cluster is freed.
    os.truncate(hive, 0)
    block(mnt, 8 << 20)
    paths = fill(mnt)
    for p in paths[::2]:
        os.unlink(p)
    with open(hive, "r+b") as f:
        f.write(data)
    unfill(mnt, paths[1::2])
    update_entry(files_out, rel, data)


def update_entry(files_out: list[dict[str, Any]], rel: str, data: bytes) -> None:
    for e in files_out:
        if e["path"] == rel:
            e["size"], e["sha256"] = len(data), hashlib.sha256(data).hexdigest()


def spread_directory(d: str) -> None:
    """Small named streams fill the directory's record, then long-named entries grow `$I30`."""
    for i in range(40):
        os.setxattr(d, f"user.sidfs-stream{i:02d}", bytes([0x41 + i]) * 30)
    for i in range(300):
        name = f"$R{i:06d} - recycled document with a long name to grow the directory index " \
               + "x" * 100 + ".txt"
        with open(os.path.join(d, name), "wb") as f:
            f.write(b"recycled\r\n")


def fragment_mft(mnt: str, files_out: list[dict[str, Any]]) -> None:
    """Free space of single-cluster holes, then many empty files: each extension of the MFT
    (its records are all the new files need) takes a few holes, one run each."""
    block(mnt, 8 << 20)
    paths = fill(mnt)
    for p in paths[::2]:
        os.unlink(p)
    empty: list[str] = []
    for i in range(1600):
        p = os.path.join(mnt, FILL_DIR, f"e{i:05d}")
        open(p, "wb").close()
        empty.append(p)
    # Created last, so their records are among the last ones, which only the extents in
    # extension records map.
    pics = "Users/Public/AccountPictures/" + STUDENT
    os.makedirs(os.path.join(mnt, pics))
    owner, group, dacl = SDS["profile-student"]
    os.setxattr(os.path.join(mnt, pics), "system.ntfs_acl", sids.build_sd(owner, group, dacl))
    rel = pics + "/owner.txt"
    data = f"Account picture owner {STUDENT}\r\n".encode()
    with open(os.path.join(mnt, rel), "wb") as f:
        f.write(data)
    files_out.append({"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    unfill(mnt, paths[1::2] + empty)


def sid_forms() -> list[bytes]:
    tail = MACHINE_SID[len("S-1-5-21-"):]
    triple = struct.pack("<III", *(int(x) for x in tail.split("-")))
    return [MACHINE_SID.encode(), MACHINE_SID.encode("utf-16-le"), triple]


def record_copies(pf: str) -> list[bytes]:
    """The raw bytes (fixups applied) of each MFT record and INDX block holding the SID."""
    vol = ntfs.Volume(pf, 0)
    _, rec0 = vol.read_record(0)
    mft_size = next(struct.unpack_from("<Q", rec0, a + 0x30)[0]
                    for a, t in ntfs.attributes(rec0) if t == ntfs.ATTR_DATA)
    forms = sid_forms()
    out: list[bytes] = []
    for n in range(mft_size // vol.record_size):
        off = vol.record_offset(n)
        raw = vol.read(off, vol.record_size)
        if raw[:4] != b"FILE":
            continue
        rec = ntfs.unfix(bytearray(raw))
        if any(f in rec for f in forms):
            out.append(raw)
        for a, t in ntfs.attributes(rec):
            if t != 0xA0 or not rec[a + 8]:
                continue
            for lcn, length in ntfs.runlist(rec, a):
                if lcn is None:
                    continue
                for c in range(length):
                    raw = vol.read((lcn + c) * vol.cluster, vol.cluster)
                    if raw[:4] == b"INDX" and any(
                            f in ntfs.unfix(bytearray(raw)) for f in forms):
                        out.append(raw)
    return out


def drop_copies(mnt: str, copies: list[bytes]) -> None:
    """Write the copies into a file (each at a cluster boundary), then delete the file."""
    p = os.path.join(mnt, "Windows", "Temp", "sidfs-record-copies.tmp")
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        for c in copies:
            f.write(c.ljust(CLUSTER, b"\0"))
        f.flush()
        os.fsync(f.fileno())
    os.unlink(p)
