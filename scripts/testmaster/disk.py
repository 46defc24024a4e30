"""Disk-image plumbing shared by the builders: partitions and their sfdisk script lines, the
partition table, copying a partition file into the image, FAT file systems (mkfs.fat, mtools).

Each partition is built as its own file and copied into the disk with `dd conv=notrunc,sparse`:
no loop devices (docs/TEST-MASTERS.md).
"""

from dataclasses import dataclass
from typing import Any

from .mount import faketime_env
from .tools import run

MiB = 1 << 20
SECTOR = 512


@dataclass
class Partition:
    """One partition of a builder's layout; start and size in bytes."""

    index: int
    role: str
    type: str
    start: int
    size: int
    filesystem: str | None
    name: str | None = None  # GPT partition name
    uuid: str | None = None  # GPT partition GUID
    bootable: bool = False  # MBR active flag

    def sfdisk_line(self, gpt: bool) -> str:
        """The partition's line in an sfdisk script."""
        line = f"start={self.start // SECTOR}, size={self.size // SECTOR}, type={self.type}"
        if gpt:
            return line + f', uuid={self.uuid}, name="{self.name}"'
        return line + (", bootable" if self.bootable else "")

    def manifest(self, gpt: bool) -> dict[str, Any]:
        """The partition's manifest entry (without `files`)."""
        e: dict[str, Any] = {"index": self.index, "start": self.start, "size": self.size,
                             "start_lba": self.start // SECTOR, "sectors": self.size // SECTOR,
                             "type": self.type, "role": self.role,
                             "filesystem": self.filesystem}
        if gpt:
            e["uuid"], e["name"] = self.uuid, self.name
        else:
            e["bootable"] = self.bootable
        return e


def write_partition_table(img: str, label: str, label_id: str, lines: list[str],
                          *sfdisk_options: str) -> None:
    """Writes a partition table (`label` gpt or dos) with sfdisk, never touching the kernel's
    view of any device."""
    script = "\n".join(["unit: sectors", f"label: {label}", f"label-id: {label_id}", *lines])
    run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", *sfdisk_options, img],
        input=(script + "\n").encode())


def put_partition(img: str, part_file: str, start: int) -> None:
    """Copies a partition file into the disk image at byte `start` (a multiple of 1 MiB)."""
    run(["dd", f"if={part_file}", f"of={img}", "bs=1M", f"seek={start // MiB}",
         "conv=notrunc,sparse", "status=none"])


def create_sparse(path: str, size: int) -> None:
    """A new sparse file of `size` bytes (replacing any older one)."""
    with open(path, "wb") as f:
        f.truncate(size)


def mtools_env() -> dict[str, str]:
    """Environment for mtools and syslinux: frozen clock (deterministic FAT timestamps), no
    geometry check of the image file."""
    return dict(faketime_env(), MTOOLS_SKIP_CHECK="1")


def mkfs_fat(path: str, size: int, start: int, fat_bits: int, label: str, volume_id: str,
             sectors_per_cluster: int | None = None) -> None:
    """A FAT file system in a new file of `size` bytes for a partition starting at byte
    `start`, with a fixed volume id and no other varying field (--invariant)."""
    create_sparse(path, size)
    cluster = ["-s", str(sectors_per_cluster)] if sectors_per_cluster else []
    run(["mkfs.fat", "-F", str(fat_bits), *cluster, "-n", label, "-i", volume_id, "--invariant",
         "-h", str(start // SECTOR), path])
