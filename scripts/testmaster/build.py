"""Build a synthetic Windows test master disk image for sidfs (see docs/TEST-MASTERS.md).

Entry point: `python3 -m testmaster build-test-master` (scripts/build-test-master); the boot
master (boot.py) calls build_test_master() for its Windows disk.
"""
import argparse
import hashlib
import os
import shutil
import struct
from dataclasses import dataclass
from typing import Any

from . import evtx, extension_records, hives, ntfs, regf, sids, stores
from .disk import (
    SECTOR,
    MiB,
    Partition,
    create_sparse,
    mkfs_fat,
    mtools_env,
    put_partition,
    write_partition_table,
)
from .mount import NtfsMount
from .spec import (
    COMPUTER_NAME,
    CONFIG,
    DEFENDER_SENSE_GUID,
    DHCPV6_DUID,
    DOMAIN_ACCOUNTS,
    DOMAIN_NAME,
    DOMAIN_SID,
    LOCAL_ACCOUNTS,
    MACHINE_GUID,
    MACHINE_KEY_CONTAINERS,
    MACHINE_SID,
    MASTERKEY_GUID,
    MSDTC_CIDS,
    PRODUCTS,
    PROFILES,
    RECYCLE_DESKTOP_INI,
    SD_ASSIGNMENTS,
    SDS,
    SID_NAMED_DIRS,
    SMS_UNIQUE_ID,
    SQM_MACHINE_ID,
    STUDENT,
    STUDENT_PC8,
    SUS_CLIENT_ID,
    SUS_CLIENT_ID_VALIDATION,
    TASK_GUID,
    TASK_NAME,
    TASK_PATH,
    WIN10_BUILD_SID,
    dsid,
    msid,
    occurrences,
    sid_text_files,
    smscfg_ini,
    task_hash,
    task_xml,
)
from .tools import (
    make_progress,
    package_versions,
    remove_stale,
    run,
    sha256_file,
    work_directory,
    write_manifest,
)

LAYOUTS = ["gpt", "mbr"]
VARIANTS = [
    "clean", "hibernated", "fast-startup", "dirty-ntfs", "unclean-logfile", "bitlocker",
    "dirty-hive", "domain-controller", *extension_records.VARIANTS]
STORES = ["none", "all"]
SIZE_PRESETS = {"small": 256 * MiB, "medium": 1024 * MiB}
MIN_SIZE = 128 * MiB

GUID_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
GUID_MSR = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
GUID_BASIC = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
DISK_GUID = "5D1F5D1F-0000-4000-8000-0000000000D1"
PART_GUIDS = ["5D1F5D1F-0000-4000-8000-0000000000E1", "5D1F5D1F-0000-4000-8000-0000000000E2",
              "5D1F5D1F-0000-4000-8000-0000000000E3"]
MBR_DISK_ID = "0x5d1f5d1f"
SERIAL_WINDOWS = 0x5D1F0000C10E0003
SERIAL_SYSRES = 0x5D1F0000C10E0001
ESP_VOLID = "5D1FE5B0"
BITLOCKER_OEM = b"-FVE-FS-"

HIBERFIL_SIZE = 4 * MiB
HIBERFIL_FAST_SIZE = 2 * MiB     # Fast Startup writes a "reduced" hiberfile (kernel session only)
PAGEFILE_SIZE = 2 * MiB

# Debian packages whose output lands in the image: the image is byte-identical for the same
# arguments and the same versions of these.
TOOL_PACKAGES = ["ntfs-3g", "dosfstools", "mtools", "fdisk", "libhivex0", "libfaketime"]
REAL_HIVES = ("SAM", "SECURITY", "NTUSER.DAT", "UsrClass.dat")

REFUSALS: dict[str, list[dict[str, str]]] = {
    "clean": [],
    "hibernated": [{"code": "hibernated", "detail": "hiberfil.sys starts with HIBR (hibernated)"}],
    "fast-startup": [{"code": "hibernated",
                      "detail": "hiberfil.sys starts with HIBR; HiberbootEnabled=1 (Fast Startup)"}],
    "dirty-ntfs": [{"code": "ntfs-dirty", "detail": "$Volume VOLUME_INFORMATION flags has 0x0001"}],
    "unclean-logfile": [{"code": "logfile-unclean",
                         "detail": "$LogFile restart area has a client in use and no CLEAN flag"}],
    "bitlocker": [{"code": "bitlocker", "detail": "Windows partition OEM ID is -FVE-FS-"}],
    "dirty-hive": [{"code": "hive-dirty", "path": CONFIG + "/SYSTEM",
                    "detail": "SYSTEM primary sequence number != secondary, logs empty"}],
    "domain-controller": [{"code": "domain-controller",
                           "detail": "ProductType LanmanNT and PolPrDmS == PolAcDmS"}],
}

REFUSALS.update({v: [] for v in extension_records.VARIANTS})

progress = make_progress("build-test-master")


@dataclass(frozen=True)
class Options:
    """What to build: partition layout, variant, disk size in bytes, and the directory holding
    the real STUDENT-PC8 hives (winreg-kb-STUDENT-PC8)."""

    layout: str = "gpt"
    variant: str = "clean"
    size: int = SIZE_PRESETS["small"]
    student_pc8: str = STUDENT_PC8
    keep_work: bool = False
    stores: str = "none"   # "all": every store with checksums, testmaster/stores.py

    @property
    def gpt(self) -> bool:
        return self.layout == "gpt"


def options(layout: str, variant: str, size: str, realdata: str | None,
            keep_work: bool, with_stores: str = "none") -> Options:
    """Options from command-line values; ValueError says what is wrong with them."""
    if layout not in LAYOUTS or variant not in VARIANTS:
        raise ValueError(f"no layout {layout!r} or no variant {variant!r}")
    student_pc8 = os.path.join(realdata, "winreg-kb-STUDENT-PC8") if realdata else STUDENT_PC8
    for f in REAL_HIVES:
        if not os.path.isfile(os.path.join(student_pc8, f)):
            raise ValueError(f"real hive {f} not found in {student_pc8} (use --realdata)")
    try:
        size_bytes = parse_size(size)
    except ValueError:
        raise ValueError(f"bad --size {size!r}") from None
    if size_bytes < MIN_SIZE:
        raise ValueError("--size must be at least 128M")
    if with_stores not in STORES:
        raise ValueError(f"no --stores {with_stores!r}")
    return Options(layout, variant, size_bytes, student_pc8, keep_work, with_stores)


def parse_size(s: str) -> int:
    if s in SIZE_PRESETS:
        return SIZE_PRESETS[s]
    units = {"K": 1 << 10, "M": MiB, "G": 1 << 30}
    if s[-1:].upper() in units:
        return int(s[:-1]) * units[s[-1:].upper()]
    return int(s)


def layout(gpt: bool, size: int) -> list[Partition]:
    """The partitions of a disk of `size` bytes, 1 MiB-aligned."""
    end = (size // MiB) * MiB
    if gpt:
        return [
            Partition(1, "esp", GUID_ESP, 1 * MiB, 36 * MiB, "vfat", name="EFI system partition",
                      uuid=PART_GUIDS[0]),
            Partition(2, "msr", GUID_MSR, 37 * MiB, 4 * MiB, None,
                      name="Microsoft reserved partition", uuid=PART_GUIDS[1]),
            Partition(3, "windows", GUID_BASIC, 41 * MiB, end - MiB - 41 * MiB, "ntfs",
                      name="Basic data partition", uuid=PART_GUIDS[2]),
        ]
    return [
        Partition(1, "system-reserved", "7", 1 * MiB, 16 * MiB, "ntfs", bootable=True),
        Partition(2, "windows", "7", 17 * MiB, end - 17 * MiB, "ntfs", bootable=False),
    ]


def mkntfs(path: str, size: int, start: int, label: str, serial: int) -> None:
    create_sparse(path, size)
    # -T: zero time and a fixed random seed, so mkntfs output is deterministic.
    run(["mkntfs", "-q", "-F", "-Q", "-T", "-c", "4096", "-s", "512", "-p", str(start // SECTOR),
         "-H", "255", "-S", "63", "-L", label, path])
    vol = ntfs.Volume(path, 0)
    vol.patch_boot_both(0x48, struct.pack("<Q", serial))


def build_esp(path: str, size: int, start: int, work: str) -> list[str]:
    mkfs_fat(path, size, start, 32, "SYSTEM", ESP_VOLID, sectors_per_cluster=1)
    bcd = os.path.join(work, "BCD")
    hives.write_hive(hives.bcd(), bcd, r"\Device\HarddiskVolume1\EFI\Microsoft\Boot\BCD",
                     "NewStoreRoot")
    env = mtools_env()
    for d in ("::EFI", "::EFI/Microsoft", "::EFI/Microsoft/Boot", "::EFI/Boot"):
        run(["mmd", "-i", path, d], env=env)
    run(["mcopy", "-i", path, bcd, "::EFI/Microsoft/Boot/BCD"], env=env)
    placeholder = os.path.join(work, "bootx64.efi")
    with open(placeholder, "wb") as f:
        f.write(b"MZ sidfs test master: placeholder, not a boot loader\r\n")
    run(["mcopy", "-i", path, placeholder, "::EFI/Boot/bootx64.efi"], env=env)
    run(["mcopy", "-i", path, placeholder, "::EFI/Microsoft/Boot/bootmgfw.efi"], env=env)
    return ["EFI/Microsoft/Boot/BCD", "EFI/Boot/bootx64.efi", "EFI/Microsoft/Boot/bootmgfw.efi"]


def build_system_reserved(path: str, size: int, start: int, work: str) -> list[str]:
    mkntfs(path, size, start, "System Reserved", SERIAL_SYSRES)
    bcd = os.path.join(work, "BCD-sysres")
    hives.write_hive(hives.bcd(), bcd, r"\Device\HarddiskVolume1\Boot\BCD", "NewStoreRoot")
    mnt = os.path.join(work, "mnt-sysres")
    os.mkdir(mnt)
    with NtfsMount(path, mnt, log=os.path.join(work, "ntfs-3g-sysres.log")):
        os.makedirs(os.path.join(mnt, "Boot"))
        shutil.copyfile(bcd, os.path.join(mnt, "Boot/BCD"))
        with open(os.path.join(mnt, "bootmgr"), "wb") as f:
            f.write(b"sidfs test master: placeholder, not a boot manager\r\n")
    vol = ntfs.Volume(path, 0)
    ntfs.write_restart_pages(vol, clean=True)
    return ["Boot/BCD", "bootmgr"]


def synthesize_hives(variant: str, student_pc8: str, work: str
                     ) -> tuple[dict[str, str], list[dict[str, Any]], str, dict[str, str]]:
    """{volume path: local file} for every hive, the manifest's registry values, the domain
    SID and the product."""
    product = PRODUCTS["domain-controller" if variant == "domain-controller" else "workstation"]
    hiberboot = 1 if variant == "fast-startup" else 0
    out: dict[str, str] = {}
    recorded: list[dict[str, Any]] = []
    specs = [("SOFTWARE", hives.software(product)), ("SYSTEM", hives.system(product, hiberboot)),
             ("DEFAULT", hives.default_hive())]
    for name, hs in specs:
        p = os.path.join(work, name)
        hives.write_hive(hs, p, "\\SystemRoot\\System32\\Config\\" + name,
                         f"CMI-CreateHive{{5D1F5D1F-{len(name):04d}-4000-8000-000000000000}}")
        out[f"{CONFIG}/{name}"] = p
        recorded += hs.recorded
    if variant == "dirty-hive":
        b = regf.read_base(out[CONFIG + "/SYSTEM"])
        regf.set_sequence_numbers(out[CONFIG + "/SYSTEM"], b["secondary"] + 1, b["secondary"])
    sam = os.path.join(student_pc8, "SAM")
    sec = os.path.join(student_pc8, "SECURITY")
    domain_sid = DOMAIN_SID
    if variant == "domain-controller":
        sec = os.path.join(work, "SECURITY-dc")
        domain_sid = hives.make_dc_security(os.path.join(student_pc8, "SECURITY"), sec)
    out[CONFIG + "/SAM"] = sam
    out[CONFIG + "/SECURITY"] = sec
    out[CONFIG + "/RegBack/SAM"] = sam
    out[CONFIG + "/RegBack/SECURITY"] = sec
    for prof in PROFILES[:2]:   # systemprofile, LocalService: small synthesized user hives
        p = os.path.join(work, "NTUSER-" + prof["sid"])
        hives.write_hive(hives.default_hive(), p, r"\??\C:\Windows\ntuser.dat", "ROOT")
        out[prof["hives"][0]] = p
    ntuser = os.path.join(student_pc8, "NTUSER.DAT")
    student = os.path.join(work, "NTUSER-student")
    recorded += hives.make_student_ntuser(ntuser, student, "Users/Student/NTUSER.DAT")
    out["Users/Student/NTUSER.DAT"] = student   # the real (bperry's) NTUSER.DAT, see hives.py
    out["Users/bperry/NTUSER.DAT"] = ntuser
    out["Users/bperry/AppData/Local/Microsoft/Windows/UsrClass.dat"] = os.path.join(
        student_pc8, "UsrClass.dat")
    return out, recorded, domain_sid, product


def masterkey_placeholder() -> bytes:
    """A DPAPI master-key file shape: version 2, GUID string (UTF-16), then zeroed blobs."""
    b = struct.pack("<II", 2, 0) + MASTERKEY_GUID.encode("utf-16-le").ljust(72, b"\0")
    b += struct.pack("<IIQQQQ", 0, 4, 0xB0, 0x90, 0x14, 0)
    return b.ljust(468, b"\0")


def populate_windows(mnt: str, variant: str, hive_files: dict[str, str],
                     files_out: list[dict[str, Any]]) -> dict[str, bytes]:
    def mk(path: str, data: bytes) -> None:
        full = os.path.join(mnt, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        files_out.append({"path": path, "size": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()})

    def mkdir(path: str) -> None:
        os.makedirs(os.path.join(mnt, path), exist_ok=True)

    for d in ["$Recycle.Bin", "Program Files", "ProgramData", "Users", "Windows",
              "Windows/System32/config/RegBack", "Windows/System32/Tasks", "Windows/Logs",
              "Windows/ServiceProfiles/LocalService"]:
        mkdir(d)
    for path in sorted(hive_files):
        with open(hive_files[path], "rb") as f:
            mk(path, f.read())
    for name in ["SAM", "SECURITY", "SOFTWARE", "SYSTEM", "DEFAULT"]:
        for ext in (".LOG1", ".LOG2"):
            mk(f"{CONFIG}/{name}{ext}", b"")
    for p in PROFILES:
        for h in p["hives"]:
            stem = h[:-len("NTUSER.DAT")] + "ntuser.dat" if h.endswith("NTUSER.DAT") else h
            mk(stem + ".LOG1", b"")
            mk(stem + ".LOG2", b"")
    for path, _sid in SID_NAMED_DIRS:
        mkdir(path)
        if path.startswith("$Recycle.Bin/"):
            mk(path + "/desktop.ini", b"\xff\xfe" + RECYCLE_DESKTOP_INI.encode("utf-16-le"))
    protect = "Users/Student/AppData/Roaming/Microsoft/Protect/" + STUDENT
    mk(protect + "/" + MASTERKEY_GUID, masterkey_placeholder())
    mk(protect + "/Preferred", bytes.fromhex(MASTERKEY_GUID.replace("-", "")) +
       struct.pack("<Q", regf.FIXED_FILETIME))
    mk(TASK_PATH, task_xml())
    for d, hash_part, guid in MACHINE_KEY_CONTAINERS:
        # Content is a placeholder: sidfs reads container names, never their keys.
        mk(f"{d}/{hash_part}_{guid}", b"sidfs test master: placeholder key container\0" + bytes(64))
    mk("Windows/SMSCFG.INI", smscfg_ini())
    mk(evtx.PATH, evtx.security_log())
    for path, _enc, data in sid_text_files():
        mk(path, data)
    mk("Windows/System32/drivers/etc/hosts", b"# sidfs test master\r\n127.0.0.1 localhost\r\n")
    hib_size = HIBERFIL_FAST_SIZE if variant == "fast-startup" else HIBERFIL_SIZE
    hib = bytearray(hib_size)
    if variant in ("hibernated", "fast-startup"):
        hib[0:4] = b"HIBR"
    mk("hiberfil.sys", bytes(hib))
    mk("pagefile.sys", bytes(PAGEFILE_SIZE))
    sds = {}
    for path, sdname in SD_ASSIGNMENTS:
        owner, group, dacl = SDS[sdname]
        sd = sids.build_sd(owner, group, dacl)
        os.setxattr(os.path.join(mnt, path), "system.ntfs_acl", sd)
        sds[path] = sd
    return sds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="build-test-master",
        description="Build a deterministic synthetic Windows disk image (a 'test master') "
                    "for sidfs tests and demos, and a JSON manifest describing it.",
        epilog="Needs root (FUSE mounts of ntfs-3g) and the packages from scripts/setup-deps. "
               "See docs/TEST-MASTERS.md.")
    ap.add_argument("--layout", choices=LAYOUTS, default="gpt",
                    help="partition table: gpt = ESP (FAT32) + MSR + Windows NTFS; "
                         "mbr = System Reserved NTFS + Windows NTFS (default: gpt)")
    ap.add_argument("--variant", choices=VARIANTS, default="clean",
                    help="clean (cloneable) or one of the states sidfs must refuse "
                         "(default: clean)")
    ap.add_argument("--size", default="small",
                    help="disk size: small (256 MiB), medium (1 GiB) or a number with K/M/G "
                         "suffix, at least 128M; the image is sparse (default: small)")
    ap.add_argument("--stores", choices=STORES, default="none",
                    help="all: add every store with checksums of issue 11 at its real path with "
                         "the machine SID (the real SRUDB.dat, fragmented; a SQLite database with "
                         "a write-ahead log; a WMI repository; exported event logs), listed in the "
                         "manifest's \"stores\" (default: none)")
    add_output_arguments(ap, "partition files, logs")
    a = ap.parse_args(argv)
    try:
        o = options(a.layout, a.variant, a.size, a.realdata, a.keep_work, a.stores)
    except ValueError as e:
        ap.error(str(e))
    if os.geteuid() != 0:
        ap.error("must run as root (ntfs-3g FUSE mounts, system.ntfs_acl)")
    build_test_master(o, *output_paths(a))
    return 0


def add_output_arguments(ap: argparse.ArgumentParser, work_files: str) -> None:
    """The arguments both builders take: OUT.img, --manifest, --realdata, --keep-work."""
    ap.add_argument("out", metavar="OUT.img", help="disk image to write (overwritten)")
    ap.add_argument("--manifest", metavar="OUT.json",
                    help="where to write the manifest (default: OUT.img.json)")
    ap.add_argument("--realdata", metavar="DIR",
                    help="directory holding winreg-kb-STUDENT-PC8/ (default: $SIDFS_REALDATA, "
                         "else ../shared/realdata next to the project root)")
    ap.add_argument("--keep-work", action="store_true",
                    help=f"keep the temporary work directory ({work_files}) for debugging")


def output_paths(a: argparse.Namespace) -> tuple[str, str]:
    """Absolute paths of the image and its manifest (default: the image's + .json)."""
    return os.path.abspath(a.out), os.path.abspath(a.manifest or a.out + ".json")


def build_test_master(o: Options, out: str, manifest_path: str) -> dict[str, Any]:
    """Builds the image `out` and its manifest; returns the manifest."""
    with work_directory("build-test-master", out, o.keep_work, progress) as work:
        return build(o, out, manifest_path, work)


def build(o: Options, out: str, manifest_path: str, work: str) -> dict[str, Any]:
    size = o.size
    progress(f"{o.layout} {o.variant} {size // MiB} MiB -> {out}")
    parts = layout(o.gpt, size)
    final_out, out = out, os.path.join(work, "disk.img")   # renamed into place when complete
    remove_stale(final_out, manifest_path)
    create_sparse(out, size)
    write_partition_table(out, "gpt" if o.gpt else "dos", DISK_GUID if o.gpt else MBR_DISK_ID,
                          [p.sfdisk_line(o.gpt) for p in parts])
    progress("partition table written")
    extra_files = {}
    for p in parts:
        pf = os.path.join(work, f"part{p.index}.img")
        if p.role == "esp":
            extra_files[p.index] = build_esp(pf, p.size, p.start, work)
            put_partition(out, pf, p.start)
            progress("ESP (FAT32) built")
        elif p.role == "system-reserved":
            extra_files[p.index] = build_system_reserved(pf, p.size, p.start, work)
            put_partition(out, pf, p.start)
            progress("System Reserved NTFS built")
    win = next(p for p in parts if p.role == "windows")
    pf = os.path.join(work, "windows.img")
    hive_files, reg_values, domain_sid, product = synthesize_hives(o.variant, o.student_pc8, work)
    progress("hives synthesized")
    mkntfs(pf, win.size, win.start, "Windows", SERIAL_WINDOWS)
    progress("Windows NTFS formatted")
    mnt = os.path.join(work, "mnt")
    os.mkdir(mnt)
    files: list[dict[str, Any]] = []
    with_stores: dict[str, Any] | None = None
    with NtfsMount(pf, mnt, log=os.path.join(work, "ntfs-3g.log")):
        sds = populate_windows(mnt, o.variant, hive_files, files)
        if o.stores == "all":
            realdata = os.path.dirname(o.student_pc8)
            with_stores = stores.populate(mnt, MACHINE_SID, realdata, work, 4096, False, files)
    progress("Windows NTFS populated and unmounted")
    if o.variant in extension_records.VARIANTS:
        extension_records.apply(o.variant, pf, mnt, work, files, progress)
    vol = ntfs.Volume(pf, 0)
    ntfs.write_restart_pages(vol, clean=o.variant != "unclean-logfile")
    if o.variant == "dirty-ntfs":
        ntfs.set_volume_flags(vol, ntfs.VOLUME_IS_DIRTY)
    logfile_off, logfile_size = ntfs.logfile_extent(vol)
    volinfo = {"serial": f"{SERIAL_WINDOWS:#018x}", "label": "Windows",
               "cluster_size": vol.cluster, "mft_record_size": vol.record_size,
               "mft_lcn": vol.mft_lcn, "mftmirr_lcn": vol.mftmirr_lcn,
               "logfile": {"offset": logfile_off, "size": logfile_size},
               "volume_flags": ntfs.volume_flags(vol)}
    if o.variant == "bitlocker":
        vol.patch_boot_both(3, BITLOCKER_OEM)
    put_partition(out, pf, win.start)
    progress("Windows partition written into the disk image")

    manifest = make_manifest(o, parts, win, volinfo, hive_files, reg_values, domain_sid,
                             product, sds, files, extra_files, out)
    if with_stores is not None:
        manifest["stores"] = with_stores
    os.replace(out, final_out)
    write_manifest(manifest, manifest_path)
    progress(f"done: {final_out} (manifest {manifest_path})")
    return manifest


def event_log_manifest() -> dict[str, Any]:
    """The .evtx of the Windows volume (scripts/testmaster/evtx.py): where its chunks are and
    which of them carry the machine SID."""
    data = evtx.security_log()
    needle = bytes(evtx.binary_sid(MACHINE_SID)[12:])   # the sub-authority triple
    chunks = []
    at = evtx.FILE_HEADER_BLOCK
    while at + evtx.CHUNK_SIZE <= len(data):
        block = data[at:at + evtx.CHUNK_SIZE]
        chunks.append({"offset": at, "signature": block[:8] == b"ElfChnk\0",
                       "machine_sid": needle in block or MACHINE_SID.encode("utf-16-le") in block})
        at += evtx.CHUNK_SIZE
    return {"path": evtx.PATH, "size": len(data), "records": 4,
            "sha256": hashlib.sha256(data).hexdigest(), "chunks": chunks}


def make_manifest(o: Options, parts: list[Partition], win: Partition, volinfo: dict[str, Any],
                  hive_files: dict[str, str], reg_values: list[dict[str, Any]], domain_sid: str,
                  product: dict[str, str], sds: dict[str, bytes], files: list[dict[str, Any]],
                  extra_files: dict[int, list[str]], out: str) -> dict[str, Any]:
    mparts = []
    for p in parts:
        e = p.manifest(o.gpt)
        if p.index in extra_files:
            e["files"] = extra_files[p.index]
        mparts.append(e)
    xml = task_xml()
    sd_entries = []
    for path, sd in sds.items():
        d = sids.parse_sd(sd)
        sd_entries.append({"path": path, "owner": d["owner"], "group": d["group"],
                           "ace_sids": [x["sid"] for x in d["dacl"]], "dacl": d["dacl"],
                           "sd_hex": sd.hex()})
    text_files = []
    for path, enc, data in sid_text_files():
        needle = STUDENT.encode("utf-16-le" if enc == "utf-16le" else "ascii")
        text_files.append({"path": path, "encoding": enc, "sid": STUDENT,
                           "offsets": occurrences(data, needle)})
    hive_names = {"SAM", "SECURITY", "SOFTWARE", "SYSTEM", "DEFAULT"}
    return {
        "schema": 1,
        "generator": "scripts/build-test-master",
        "variant": o.variant,
        "layout": o.layout,
        "disk": {"size": o.size, "sector_size": SECTOR, "sha256": sha256_file(out),
                 "label_id": DISK_GUID if o.gpt else MBR_DISK_ID},
        "partitions": mparts,
        "windows_partition": win.index,
        "windows_volume": volinfo,
        "machine_sid": MACHINE_SID,
        "computer_name": COMPUTER_NAME,
        "identifiers": {"computer_name": COMPUTER_NAME, "machine_guid": MACHINE_GUID,
                        "sus_client_id": SUS_CLIENT_ID,
                        "sus_client_id_validation": SUS_CLIENT_ID_VALIDATION.hex(),
                        "msdtc_cids": [{"description": d, "cid": c} for d, c in MSDTC_CIDS]},
        "machine_key_containers": [
            {"dir": d, "name": f"{h}_{g}", "named_after_machine_guid": g == MACHINE_GUID}
            for d, h, g in MACHINE_KEY_CONTAINERS],
        "unchanged_identifiers": {"sqm_machine_id": SQM_MACHINE_ID,
                                  "defender_sense_guid": DEFENDER_SENSE_GUID,
                                  "dhcpv6_duid": DHCPV6_DUID.hex(),
                                  "sms_unique_id": SMS_UNIQUE_ID},
        "domain": {"name": DOMAIN_NAME, "sid": domain_sid},
        "product": product,
        "local_accounts": [{"name": n, "rid": r, "sid": msid(r)} for n, r in LOCAL_ACCOUNTS],
        "domain_accounts": [{"name": n, "rid": r, "sid": dsid(r)} for n, r in DOMAIN_ACCOUNTS],
        "profiles": PROFILES,
        "hives": {n: f"{CONFIG}/{n}" for n in sorted(hive_names)},
        "hive_files": sorted(hive_files),
        "registry_values": reg_values,
        "sid_named_paths": [{"path": p, "sid": s, "machine_sid": s.startswith(MACHINE_SID + "-")}
                            for p, s in SID_NAMED_DIRS],
        "security_descriptors": sd_entries,
        "task": {"name": TASK_NAME, "path": TASK_PATH, "guid": TASK_GUID, "user_id": STUDENT,
                 "taskcache_key": r"Microsoft\Windows NT\CurrentVersion\Schedule\TaskCache\Tasks"
                                  + "\\" + TASK_GUID,
                 "hash_sha256": task_hash(xml).hex(),
                 "hash_input": "task XML file bytes without the UTF-16LE BOM (UNCONFIRMED)"},
        "sid_text_files": text_files,
        "event_log": event_log_manifest(),
        "files": files,
        "never_rewrite_sids": [DOMAIN_SID, WIN10_BUILD_SID],
        "expected_refusals": REFUSALS[o.variant],
        "tool_versions": package_versions(TOOL_PACKAGES),
        "deterministic": True,
    }
