"""Build a bootable test master for sidfs: the test-master builder's MBR disk plus a FAT boot
partition that boots Linux with syslinux (see docs/TEST-MASTERS.md, "Boot master").

The disk boots with a plain `qemu-system-x86_64 -drive file=disk.img,format=raw` (BIOS, no
-kernel): syslinux's MBR code loads the active partition's boot sector (syslinux on FAT16), which
loads the Debian kernel and an initramfs holding busybox-static, the kernel modules the guest
needs (ntfs3 and the disk drivers, for exactly the shipped kernel's version) and the guest's
init (scripts/bootmaster/init).
"""
import argparse
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SCRIPTS, "testmaster"))

from mount import faketime_env  # noqa: E402
from tools import make_progress, run  # noqa: E402

MiB = 1 << 20
SECTOR = 512
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

progress = make_progress("build-boot-master")


def version_key(v):
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", v)]


def module_paths(version):
    """{module name: path relative to /lib/modules/VERSION} and {path: [dependency paths]}."""
    deps, names = {}, {}
    with open(f"/lib/modules/{version}/modules.dep") as f:
        for line in f:
            path, _, rest = line.partition(":")
            deps[path] = rest.split()
            name = os.path.basename(path).split(".ko")[0].replace("-", "_")
            names[name] = path
    return names, deps


def builtin_modules(version):
    try:
        with open(f"/lib/modules/{version}/modules.builtin") as f:
            return {os.path.basename(x.strip()).split(".ko")[0].replace("-", "_") for x in f}
    except FileNotFoundError:
        return set()


def pick_kernel(wanted):
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


def module_load_order(version):
    """Paths (relative to /lib/modules/VERSION) of GUEST_MODULES and their dependencies,
    every dependency before its users."""
    names, deps = module_paths(version)
    builtin = builtin_modules(version)
    order, seen = [], set()

    def visit(path):
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


def is_static_elf(path):
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

    def __init__(self):
        self.out = bytearray()
        self.ino = 1

    def _entry(self, name, mode, data=b"", rdev=(0, 0), nlink=1):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{x:08X}" for x in (
            self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0))
        self.ino += 1
        self.out += hdr.encode() + name_b
        self.out += b"\0" * (-len(self.out) % 4)
        self.out += data
        self.out += b"\0" * (-len(self.out) % 4)

    def dir(self, name):
        self._entry(name, 0o040755, nlink=2)

    def file(self, name, data, mode=0o644):
        self._entry(name, 0o100000 | mode, data)

    def chardev(self, name, major, minor, mode=0o600):
        self._entry(name, 0o020000 | mode, rdev=(major, minor))

    def finish(self):
        self.ino = 0
        self._entry("TRAILER!!!", 0)
        return bytes(self.out)


def build_initramfs(version, path):
    if not is_static_elf(BUSYBOX):
        raise RuntimeError(f"{BUSYBOX} is not statically linked: install busybox-static")
    order = module_load_order(version)
    c = Cpio()
    for d in ["bin", "dev", "etc", "lib", "lib/modules", "mnt", "proc", "sys"]:
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    with open(BUSYBOX, "rb") as f:
        c.file("bin/busybox", f.read(), 0o755)
    with open(os.path.join(HERE, "init"), "rb") as f:
        c.file("init", f.read(), 0o755)
    shipped = []
    for rel in order:
        with open(f"/lib/modules/{version}/{rel}", "rb") as f:
            data = f.read()
        if rel.endswith(".xz"):
            data, rel = lzma.decompress(data), rel[:-3]
        elif rel.endswith(".zst"):
            data, rel = run(["zstd", "-dc", f"/lib/modules/{version}/{rel}"]).stdout, rel[:-4]
        elif rel.endswith(".gz"):
            data, rel = gzip.decompress(data), rel[:-3]
        name = os.path.basename(rel)
        c.file(f"lib/modules/{name}", data)
        shipped.append(name)
    c.file("etc/modules.load", "".join(n + "\n" for n in shipped).encode())
    with open(path, "wb") as f:
        f.write(gzip.compress(c.finish(), compresslevel=9, mtime=0))
    return shipped


def syslinux_cfg():
    return ("SERIAL 0 115200\r\n"
            "DEFAULT sidfs\r\n"
            "PROMPT 0\r\n"
            "TIMEOUT 0\r\n"
            "LABEL sidfs\r\n"
            "  KERNEL /vmlinuz\r\n"
            f"  APPEND initrd=/initrd.img {KERNEL_CMDLINE}\r\n").encode()


def build_boot_partition(path, start, version, work):
    with open(path, "wb") as f:
        f.truncate(BOOT_SIZE)
    run(["mkfs.fat", "-F", "16", "-n", BOOT_LABEL, "-i", BOOT_VOLID, "--invariant",
         "-h", str(start // SECTOR), path])
    initrd = os.path.join(work, "initrd.img")
    modules = build_initramfs(version, initrd)
    cfg = os.path.join(work, "syslinux.cfg")
    with open(cfg, "wb") as f:
        f.write(syslinux_cfg())
    env = dict(faketime_env(), MTOOLS_SKIP_CHECK="1")
    # The syslinux installer writes the boot sector, ldlinux.sys and ldlinux.c32 through mtools.
    run(["syslinux", "--install", path], env=env)
    run(["mcopy", "-i", path, f"/boot/vmlinuz-{version}", "::vmlinuz"], env=env)
    run(["mcopy", "-i", path, initrd, "::initrd.img"], env=env)
    run(["mcopy", "-i", path, cfg, "::syslinux.cfg"], env=env)
    files = sorted(line.split()[-1] for line in
                   run(["mdir", "-b", "-i", path, "::"], env=env).stdout.decode().split("\n")
                   if line.strip())
    return modules, [f.removeprefix("::/") for f in files], initrd


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions(pkgs):
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"] + pkgs,
                       capture_output=True, text=True)
    return dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)


def kernel_package(version):
    r = subprocess.run(["dpkg-query", "-S", f"/boot/vmlinuz-{version}"], capture_output=True,
                       text=True)
    return r.stdout.split(":")[0].strip() if r.returncode == 0 else None


def main(argv=None):
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
    ap.add_argument("out", metavar="OUT.img", help="disk image to write (overwritten)")
    ap.add_argument("--size", default="128M",
                    help="size of the test-master part of the disk (build-test-master --size); "
                         "the boot partition adds 32 MiB (default: 128M)")
    ap.add_argument("--kernel", metavar="VERSION",
                    help="kernel version to ship (/boot/vmlinuz-VERSION and "
                         "/lib/modules/VERSION); default: the newest installed one with ntfs3")
    ap.add_argument("--manifest", metavar="OUT.json",
                    help="where to write the manifest (default: OUT.img.json)")
    ap.add_argument("--realdata", metavar="DIR", help="passed to build-test-master")
    ap.add_argument("--keep-work", action="store_true",
                    help="keep the temporary work directory (partition files, initramfs)")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        ap.error("must run as root (the test-master builder mounts ntfs-3g)")
    out = os.path.abspath(a.out)
    manifest_path = os.path.abspath(a.manifest or a.out + ".json")
    work = tempfile.mkdtemp(prefix=".build-boot-master-", dir=os.path.dirname(out))
    try:
        return build(a, out, manifest_path, work)
    finally:
        if a.keep_work:
            progress(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def build(a, out, manifest_path, work):
    version = pick_kernel(a.kernel)
    progress(f"kernel {version}, test master --layout mbr --size {a.size} -> {out}")
    for stale in (out, manifest_path):
        if os.path.exists(stale):
            os.unlink(stale)
    disk = os.path.join(work, "disk.img")
    cmd = [os.path.join(SCRIPTS, "build-test-master"), "--layout", "mbr", "--size", a.size]
    if a.realdata:
        cmd += ["--realdata", a.realdata]
    r = subprocess.run(cmd + [disk], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise RuntimeError("build-test-master failed:\n" + r.stderr.decode(errors="replace"))
    with open(disk + ".json") as f:
        manifest = json.load(f)
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
    parts = manifest["partitions"]
    lines = ["unit: sectors", "label: dos", f"label-id: {manifest['disk']['label_id']}"]
    for p in parts:
        lines.append(f"start={p['start_lba']}, size={p['sectors']}, type={p['type']}")
        p["bootable"] = False
    lines.append(f"start={boot_start // SECTOR}, size={BOOT_SIZE // SECTOR}, type={BOOT_TYPE}, "
                 "bootable")
    run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", "--wipe", "never",
         "--wipe-partitions", "never", disk], input=("\n".join(lines) + "\n").encode())
    with open(SYSLINUX_MBR, "rb") as f:
        code = f.read()
    if len(code) > MBR_CODE_LEN:
        raise RuntimeError(f"{SYSLINUX_MBR} is {len(code)} bytes, more than {MBR_CODE_LEN}")
    with open(disk, "r+b") as f:
        f.write(code)
    run(["dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={boot_start // MiB}",
         "conv=notrunc,sparse", "status=none"])
    progress("partition table (3 partitions, boot partition active) and MBR code written")

    parts.append({"index": len(parts) + 1, "start": boot_start, "size": BOOT_SIZE,
                  "start_lba": boot_start // SECTOR, "sectors": BOOT_SIZE // SECTOR,
                  "type": BOOT_TYPE, "role": "boot", "filesystem": "vfat", "bootable": True,
                  "files": boot_files})
    manifest["generator"] = "scripts/build-boot-master"
    manifest["disk"]["size"] = size
    manifest["disk"]["sha256"] = sha256_file(disk)
    pkgs = ["busybox-static", "syslinux", "syslinux-common"]
    kpkg = kernel_package(version)
    manifest["boot"] = {
        "partition": len(parts),
        "loader": "syslinux (BIOS): mbr.bin in the MBR, ldlinux on the active FAT16 partition",
        "kernel_version": version,
        "kernel_package": kpkg,
        "kernel_cmdline": KERNEL_CMDLINE,
        "vmlinuz_sha256": sha256_file(f"/boot/vmlinuz-{version}"),
        "initramfs_sha256": sha256_file(initrd),
        "modules": modules,
        "guest": GUEST,
    }
    manifest["tool_versions"].update(package_versions(pkgs + ([kpkg] if kpkg else [])))
    os.replace(disk, out)
    with open(manifest_path + ".partial", "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(manifest_path + ".partial", manifest_path)
    progress(f"done: {out} (manifest {manifest_path})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        print(f"build-boot-master: error: {e}", file=sys.stderr)
        sys.exit(1)
