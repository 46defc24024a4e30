"""sidfs's test-master builders and checker: synthetic Windows disk images made with public
tools (sfdisk, mkfs.fat/mtools, mkntfs, ntfs-3g, hivex), independent of sidfs's own parsers.

One entry point, `python3 -m testmaster COMMAND [ARGS]` (__main__.py); the shell scripts
scripts/build-test-master, scripts/check-test-master and scripts/build-boot-master call it.

- build.py: the test master (layouts, variants, the Windows volume, the manifest)
- boot.py: the boot master (the test master plus a syslinux/Linux boot partition; guest-init
  is its guest's PID 1)
- check.py: checks an image against its manifest with independent tools
- spec.py: what a test master contains (identities, accounts, profiles, files, SDs)
- hives.py, regf.py: registry hives; evtx.py: the event log; ntfs.py: byte-level NTFS edits;
  sids.py: SIDs and security descriptors
- stores.py: every store with checksums (build-test-master --stores all; build-store-disk, a
  data disk); wmi.py: the WMI repository
- disk.py: partitions, partition tables, FAT file systems; mount.py: ntfs-3g mounts;
  tools.py: commands, progress lines, hashes, the work directory, the manifest file
"""
