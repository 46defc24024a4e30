"""Build a bootable test master for sidfs: the test-master builder's MBR disk plus a FAT boot
partition that boots Linux with syslinux (see docs/TEST-MASTERS.md, "Boot master").

The disk boots with a plain `qemu-system-x86_64 -drive file=disk.img,format=raw` (BIOS, no
-kernel): syslinux's MBR code loads the active partition's boot sector (syslinux on FAT16), which
loads the Debian kernel and an initramfs holding busybox-static, the kernel modules the guest
needs (ntfs3 and the disk drivers, for exactly the shipped kernel's version) and the guest's
init (guest-init beside this file).

Entry point: `python3 -m testmaster build-boot-master` (scripts/build-boot-master).
"""
import argparse
import gzip
import lzma
import os
import re
import struct
import subprocess
from typing import Any

from . import build as test_master
from . import tools
from .disk import MiB, Partition, mkfs_fat, mtools_env, put_partition, write_partition_table

GUEST_INIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guest-init")
BOOT_SIZE = 32 * MiB          # FAT16; the 6.12 kernel is ~12 MiB, the initramfs ~2 MiB
BOOT_VOLID = "5D1FB007"       # fixed FAT volume id (determinism)
BOOT_LABEL = "SIDFSBOOT"
BOOT_TYPE = "e"               # FAT16 (LBA)
SYSLINUX_MBR = "/usr/lib/syslinux/mbr/mbr.bin"
MBR_CODE_LEN = 440            # boot code; the disk signature follows at 440
BUSYBOX = "/bin/busybox"      # busybox-static's binary
# Modules the guest loads: the NTFS driver, IDE/SATA disks (qemu's default `-drive` on pc and
# q35 machines) and virtio disks (`if=virtio`). Their dependencies are added from modules.dep.
GUEST_MODULES = ["ntfs3", "ata_piix", "ahci", "sd_mod", "virtio_blk"]
KERNEL_CMDLINE = "console=ttyS0,115200 panic=-1 loglevel=4"
GUEST = {"sid_file": "Windows/Logs/SidfsDemo/sid-ascii.txt", "writes": "guest-wrote.txt",
         "console_prefix": "SIDFS-GUEST "}

progress = tools.make_progress("build-boot-master")


def version_key(v: str) -> list[int | str]:
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", v)]


def module_paths(version: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """{module name: path relative to /lib/modules/VERSION} and {path: [dependency paths]}."""
    deps: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    with open(f"/lib/modules/{version}/modules.dep") as f:
        for line in f:
            path, _, rest = line.partition(":")
            deps[path] = rest.split()
            name = os.path.basename(path).split(".ko")[0].replace("-", "_")
            names[name] = path
    return names, deps


def builtin_modules(version: str) -> set[str]:
    try:
        with open(f"/lib/modules/{version}/modules.builtin") as f:
            return {os.path.basename(x.strip()).split(".ko")[0].replace("-", "_") for x in f}
    except FileNotFoundError:
        return set()


def pick_kernel(wanted: str | None) -> str:
    """The newest installed kernel with both a vmlinuz and ntfs3 (module or built in), or the
    one asked for. The modules shipped must come from the same version as the vmlinuz."""
    versions = sorted((f[len("vmlinuz-"):] for f in os.listdir("/boot") if f.startswith("vmlinuz-")),
                      key=version_key, reverse=True)
    if wanted:
        versions = [v for v in versions if v == wanted]
        if not versions:
            raise RuntimeError(f"/boot/vmlinuz-{wanted} is not installed")
    for v in versions:
        if not os.path.exists(f"/lib/modules/{v}/modules.dep"):
            continue
        names, _ = module_paths(v)
        if "ntfs3" in names or "ntfs3" in builtin_modules(v):
            return v
    raise RuntimeError("no installed kernel has the ntfs3 driver (Debian 12's linux-image-amd64 "
                       "6.1 does not): install linux-image-6.12-amd64 on Debian 12, "
                       "linux-image-amd64 on Debian 13 (scripts/setup-deps does)")


def module_load_order(version: str) -> list[str]:
    """Paths (relative to /lib/modules/VERSION) of GUEST_MODULES and their dependencies,
    every dependency before its users."""
    names, deps = module_paths(version)
    builtin = builtin_modules(version)
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: str) -> None:
        if path in seen:
            return
        seen.add(path)
        # modules.dep lists all (transitive) dependencies; load them deepest first.
        for d in reversed(deps.get(path, [])):
            visit(d)
        order.append(path)

    for m in GUEST_MODULES:
        if m in names:
            visit(names[m])
        elif m not in builtin:
            raise RuntimeError(f"kernel {version} has no module {m}")
    return order


def is_static_elf(path: str) -> bool:
    """True when the ELF file has no PT_INTERP program header (no dynamic loader needed)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, = struct.unpack_from("<I", data, phoff + i * phentsize)
        if p_type == 3:     # PT_INTERP
            return False
    return True


class Cpio:
    """A deterministic newc ("070701") archive: fixed inode numbers, owner root, mtime 0."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{x:08X}" for x in (
            self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0))
        self.ino += 1
        self.out += hdr.encode() + name_b
        self.out += b"\0" * (-len(self.out) % 4)
        self.out += data
        self.out += b"\0" * (-len(self.out) % 4)

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, 0o020000 | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self.ino = 0
        self._entry("TRAILER!!!", 0)
        return bytes(self.out)


def build_initramfs(version: str, out: str) -> list[str]:
    """Writes the gzipped initramfs to `out`; returns the names of the modules it ships."""
    if not is_static_elf(BUSYBOX):
        raise RuntimeError(f"{BUSYBOX} is not statically linked: install busybox-static")
    order = module_load_order(version)
    c = Cpio()
    for d in ["bin", "dev", "etc", "lib", "lib/modules", "mnt", "proc", "sys"]:
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    with open(BUSYBOX, "rb") as f:
        c.file("bin/busybox", f.read(), 0o755)
    with open(GUEST_INIT, "rb") as f:
        c.file("init", f.read(), 0o755)
    shipped = []
    for rel in order:
        module_file = f"/lib/modules/{version}/{rel}"
        with open(module_file, "rb") as f:
            data = f.read()
        # Decompressed: the initramfs holds plain .ko files.
        name = os.path.basename(rel)
        if rel.endswith(".xz"):
            data, name = lzma.decompress(data), name[:-3]
        elif rel.endswith(".zst"):
            data, name = tools.run(["zstd", "-dc", module_file]).stdout, name[:-4]
        elif rel.endswith(".gz"):
            data, name = gzip.decompress(data), name[:-3]
        c.file(f"lib/modules/{name}", data)
        shipped.append(name)
    c.file("etc/modules.load", "".join(n + "\n" for n in shipped).encode())
    with open(out, "wb") as f:
        f.write(gzip.compress(c.finish(), compresslevel=9, mtime=0))
    return shipped


def syslinux_cfg() -> bytes:
    return ("SERIAL 0 115200\r\n"
            "DEFAULT sidfs\r\n"
            "PROMPT 0\r\n"
            "TIMEOUT 0\r\n"
            "LABEL sidfs\r\n"
            "  KERNEL /vmlinuz\r\n"
            f"  APPEND initrd=/initrd.img {KERNEL_CMDLINE}\r\n").encode()


def build_boot_partition(path: str, start: int, version: str,
                         work: str) -> tuple[list[str], list[str], str]:
    """The FAT16 boot partition file: syslinux, kernel, initramfs; returns the modules
    shipped, the files in the partition and the initramfs path."""
    mkfs_fat(path, BOOT_SIZE, start, 16, BOOT_LABEL, BOOT_VOLID)
    initrd = os.path.join(work, "initrd.img")
    modules = build_initramfs(version, initrd)
    cfg = os.path.join(work, "syslinux.cfg")
    with open(cfg, "wb") as f:
        f.write(syslinux_cfg())
    env = mtools_env()
    # The syslinux installer writes the boot sector, ldlinux.sys and ldlinux.c32 through mtools.
    tools.run(["syslinux", "--install", path], env=env)
    tools.run(["mcopy", "-i", path, f"/boot/vmlinuz-{version}", "::vmlinuz"], env=env)
    tools.run(["mcopy", "-i", path, initrd, "::initrd.img"], env=env)
    tools.run(["mcopy", "-i", path, cfg, "::syslinux.cfg"], env=env)
    files = sorted(line.split()[-1] for line in
                   tools.run(["mdir", "-b", "-i", path, "::"], env=env).stdout.decode().split("\n")
                   if line.strip())
    return modules, [f.removeprefix("::/") for f in files], initrd


def kernel_package(version: str) -> str | None:
    r = subprocess.run(["dpkg-query", "-S", f"/boot/vmlinuz-{version}"], capture_output=True,
                       text=True, check=False)
    return r.stdout.split(":")[0].strip() if r.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="build-boot-master",
        description="Build a deterministic bootable test master for sidfs: the test-master "
                    "builder's Windows disk (MBR layout) plus a FAT16 boot partition (active) "
                    "with syslinux, a Debian kernel and a busybox initramfs whose init mounts the "
                    "Windows NTFS volume with ntfs3, prints the machine SID it finds in "
                    "Windows/Logs/SidfsDemo/sid-ascii.txt to the serial console, writes "
                    "guest-wrote.txt, syncs and powers off. Boots with "
                    "`qemu-system-x86_64 -drive file=OUT.img,format=raw` (BIOS, no -kernel).",
        epilog="Needs root (the test-master builder mounts ntfs-3g) and the packages from "
               "scripts/setup-deps. See docs/TEST-MASTERS.md.")
    ap.add_argument("--size", default="128M",
                    help="size of the test-master part of the disk (build-test-master --size); "
                         "the boot partition adds 32 MiB (default: 128M)")
    ap.add_argument("--kernel", metavar="VERSION",
                    help="kernel version to ship (/boot/vmlinuz-VERSION and "
                         "/lib/modules/VERSION); default: the newest installed one with ntfs3")
    test_master.add_output_arguments(ap, "partition files, initramfs")
    a = ap.parse_args(argv)
    try:
        o = test_master.options("mbr", "clean", a.size, a.realdata, a.keep_work)
    except ValueError as e:
        ap.error(str(e))
    if os.geteuid() != 0:
        ap.error("must run as root (the test-master builder mounts ntfs-3g)")
    out, manifest_path = test_master.output_paths(a)
    with tools.work_directory("build-boot-master", out, a.keep_work, progress) as work:
        build(o, a.size, a.kernel, out, manifest_path, work)
    return 0


def build(o: test_master.Options, size_arg: str, kernel: str | None, out: str,
          manifest_path: str, work: str) -> None:
    version = pick_kernel(kernel)
    progress(f"kernel {version}, test master --layout mbr --size {size_arg} -> {out}")
    tools.remove_stale(out, manifest_path)
    disk = os.path.join(work, "disk.img")
    manifest = test_master.build_test_master(o, disk, disk + ".json")
    progress("test master built (System Reserved + Windows NTFS)")

    # The boot partition goes after the Windows one, so the builder's partitions keep their
    # places (and the manifest's offsets and windows_partition index stay true).
    win_size = manifest["disk"]["size"]
    boot_start = (win_size + MiB - 1) // MiB * MiB
    size = boot_start + BOOT_SIZE
    part = os.path.join(work, "boot.img")
    modules, boot_files, initrd = build_boot_partition(part, boot_start, version, work)
    progress(f"boot partition built (syslinux, vmlinuz-{version}, initramfs with "
             f"{len(modules)} modules)")

    with open(disk, "r+b") as f:
        f.truncate(size)
    # The builder's partitions as they are, none active; the boot partition last, active.
    parts: list[dict[str, Any]] = manifest["partitions"]
    table = [Partition(p["index"], p["role"], p["type"], p["start"], p["size"], p["filesystem"])
             for p in parts]
    for p in parts:
        p["bootable"] = False
    boot = Partition(len(parts) + 1, "boot", BOOT_TYPE, boot_start, BOOT_SIZE, "vfat",
                     bootable=True)
    write_partition_table(disk, "dos", manifest["disk"]["label_id"],
                          [p.sfdisk_line(gpt=False) for p in [*table, boot]],
                          "--wipe", "never", "--wipe-partitions", "never")
    with open(SYSLINUX_MBR, "rb") as f:
        code = f.read()
    if len(code) > MBR_CODE_LEN:
        raise RuntimeError(f"{SYSLINUX_MBR} is {len(code)} bytes, more than {MBR_CODE_LEN}")
    with open(disk, "r+b") as f:
        f.write(code)
    put_partition(disk, part, boot_start)
    progress("partition table (3 partitions, boot partition active) and MBR code written")

    parts.append(dict(boot.manifest(gpt=False), files=boot_files))
    manifest["generator"] = "scripts/build-boot-master"
    manifest["disk"]["size"] = size
    manifest["disk"]["sha256"] = tools.sha256_file(disk)
    pkgs = ["busybox-static", "syslinux", "syslinux-common"]
    kpkg = kernel_package(version)
    manifest["boot"] = {
        "partition": len(parts),
        "loader": "syslinux (BIOS): mbr.bin in the MBR, ldlinux on the active FAT16 partition",
        "kernel_version": version,
        "kernel_package": kpkg,
        "kernel_cmdline": KERNEL_CMDLINE,
        "vmlinuz_sha256": tools.sha256_file(f"/boot/vmlinuz-{version}"),
        "initramfs_sha256": tools.sha256_file(initrd),
        "modules": modules,
        "guest": GUEST,
    }
    manifest["tool_versions"].update(tools.package_versions(pkgs + ([kpkg] if kpkg else [])))
    os.replace(disk, out)
    tools.write_manifest(manifest, manifest_path)
    progress(f"done: {out} (manifest {manifest_path})")
