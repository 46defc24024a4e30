"""Independent self-check of a test master against its manifest.

Uses public tools only for the facts it checks: sfdisk --json (partition table), ntfs-3g
(read-only mount, file presence and content, then a read-write `norecover` mount attempt on a
scratch copy for the refusal states), getfattr system.ntfs_acl (security descriptors),
hivexget / python3-hivex (registry), ntfsinfo (volume flags), ntfssecaudit ($Secure).
Exits 1 on any mismatch.
"""
import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from typing import Any

import hivex

from . import sids  # SID/SD decoding only; the SDs are read back with getfattr
from .disk import MiB
from .mount import NtfsMount
from .tools import sha256_file

Manifest = dict[str, Any]


class Checker:
    def __init__(self, verbose: bool) -> None:
        self.failures: list[str] = []
        self.passes, self.verbose = 0, verbose

    def ok(self, cond: bool, what: str, detail: str = "") -> bool:
        if cond:
            self.passes += 1
            if self.verbose:
                print(f"  ok   {what}", file=sys.stderr)
        else:
            self.failures.append(f"{what}: {detail}")
            print(f"  FAIL {what}: {detail}", file=sys.stderr)
        return cond


def sh(cmd: list[str], input: bytes | None = None,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Runs a command whose failure is a check result, not an error."""
    return subprocess.run(cmd, capture_output=True, input=input, env=env, check=False)


def check_partitions(c: Checker, img: str, m: Manifest) -> None:
    r = sh(["sfdisk", "--json", img])
    if not c.ok(r.returncode == 0, "sfdisk --json", r.stderr.decode()):
        return
    pt = json.loads(r.stdout)["partitiontable"]
    c.ok(pt["label"] == ("gpt" if m["layout"] == "gpt" else "dos"), "partition table label",
         pt["label"])
    c.ok(pt.get("sectorsize", 512) == m["disk"]["sector_size"], "sector size")
    got = pt["partitions"]
    c.ok(len(got) == len(m["partitions"]), "partition count", f"{len(got)}")
    for e, g in zip(m["partitions"], got, strict=False):
        n = e["index"]
        c.ok(g["start"] == e["start_lba"] and g["size"] == e["sectors"],
             f"partition {n} extent", f"sfdisk {g['start']}+{g['size']}, manifest "
             f"{e['start_lba']}+{e['sectors']}")
        c.ok(g["type"].upper() == e["type"].upper(), f"partition {n} type", g["type"])
        if m["layout"] == "gpt":
            c.ok(g.get("uuid", "").upper() == e["uuid"].upper(), f"partition {n} uuid")
            c.ok(g.get("name") == e["name"], f"partition {n} name", g.get("name"))
        else:
            c.ok(bool(g.get("bootable")) == e["bootable"], f"partition {n} bootable")
    if m["layout"] == "gpt":
        c.ok(pt["id"].upper() == m["disk"]["label_id"].upper(), "disk GUID", pt["id"])
    else:
        c.ok(int(pt["id"], 16) == int(m["disk"]["label_id"], 16), "disk id", pt["id"])


def extract(img: str, part: dict[str, Any], out: str) -> None:
    subprocess.run(["dd", f"if={img}", f"of={out}", "bs=1M", f"skip={part['start'] // MiB}",
                    f"count={part['size'] // MiB}", "conv=sparse", "status=none"], check=True)


def getfattr_sd(path: str) -> bytes | None:
    r = sh(["getfattr", "--absolute-names", "-e", "hex", "-n", "system.ntfs_acl", path])
    for line in r.stdout.decode().splitlines():
        if line.startswith("system.ntfs_acl=0x"):
            return bytes.fromhex(line.split("=0x", 1)[1])
    return None


def hive_value(path: str, key: str, value: str) -> tuple[int, bytes]:
    """hivexget for strings and numbers; python3-hivex for REG_BINARY."""
    r = sh(["hivexget", path, key, value or "@"])
    return r.returncode, r.stdout


def check_windows_content(c: Checker, mnt: str, m: Manifest) -> None:
    for f in m["files"]:
        p = os.path.join(mnt, f["path"])
        if not c.ok(os.path.isfile(p), f"file {f['path']}", "missing"):
            continue
        with open(p, "rb") as fh:
            data = fh.read()
        c.ok(len(data) == f["size"] and hashlib.sha256(data).hexdigest() == f["sha256"],
             f"content {f['path']}", f"size {len(data)}")
    for e in m["sid_named_paths"]:
        c.ok(os.path.isdir(os.path.join(mnt, e["path"])), f"SID-named dir {e['path']}")
    for prof in m["profiles"]:
        for h in prof["hives"]:
            c.ok(os.path.isfile(os.path.join(mnt, h)), f"profile hive {h}")
    for e in m["security_descriptors"]:
        sd = getfattr_sd(os.path.join(mnt, e["path"]))
        c.ok(sd is not None, f"SD readable {e['path']}")
        if sd is None:
            continue
        d = sids.parse_sd(sd)
        c.ok(d["owner"] == e["owner"] and d["group"] == e["group"]
             and [a["sid"] for a in d["dacl"]] == e["ace_sids"] and sd.hex() == e["sd_hex"],
             f"SD {e['path']}", f"owner {d['owner']} aces {[a['sid'] for a in d['dacl']]}")
    # Registry: every recorded value, read with hivexget from the mounted volume.
    for v in m["registry_values"]:
        hive = os.path.join(mnt, v.get("hive_path") or m["hives"][v["hive"]])
        rc, out = hive_value(hive, v["key"], v["value"])
        got = out.hex() if v["type"] == "REG_BINARY" else out.decode("utf-8", "replace").rstrip("\n")
        c.ok(rc == 0 and got == v["data"], f"registry {v['hive']}\\{v['key']}\\{v['value']}",
             f"got {got!r}, expected {v['data']!r}")
    for h in m["hive_files"]:
        p = os.path.join(mnt, h)
        r = sh(["hivexsh", p], input=b"ls\nlsval\nexit\n")
        c.ok(r.returncode == 0 and not r.stderr, f"hivexsh opens {h}", r.stderr.decode()[:200])
        try:
            hv = hivex.Hivex(p)
            c.ok(hv.root() is not None, f"hivex opens {h}")
        except Exception as ex:  # hivex raises RuntimeError on a bad hive
            c.ok(False, f"hivex opens {h}", str(ex))
    # Task XML: UserId names the local user; TaskCache Hash = SHA-256 of the XML without BOM.
    t = m["task"]
    with open(os.path.join(mnt, t["path"]), "rb") as fh:
        xml = fh.read()
    c.ok(xml[:2] == b"\xff\xfe" and f"<UserId>{t['user_id']}</UserId>".encode("utf-16-le") in xml,
         "task XML UTF-16LE with BOM and UserId")
    c.ok(hashlib.sha256(xml[2:]).hexdigest() == t["hash_sha256"], "task hash input")
    soft = os.path.join(mnt, m["hives"]["SOFTWARE"])
    rc, out = hive_value(soft, t["taskcache_key"], "Hash")
    c.ok(rc == 0 and out.hex() == t["hash_sha256"], "TaskCache Hash (hivexget)", out.hex())
    for e in m["sid_text_files"]:
        with open(os.path.join(mnt, e["path"]), "rb") as fh:
            data = fh.read()
        needle = e["sid"].encode("utf-16-le" if e["encoding"] == "utf-16le" else "ascii")
        c.ok(all(data[o:o + len(needle)] == needle for o in e["offsets"]) and e["offsets"],
             f"SID string in {e['path']}")
    # Machine SID and domain SID as stored by Windows (SAM Account\V tail, PolAcDmS/PolPrDmS).
    sec = hivex.Hivex(os.path.join(mnt, m["hives"]["SECURITY"]))
    pol = sec.node_get_child(sec.root(), "Policy")

    def polsid(name: str) -> str:
        return sids.sid_from_bytes(sec.value_value(sec.node_values(
            sec.node_get_child(pol, name))[0])[1])[0]
    c.ok(polsid("PolAcDmS") == m["machine_sid"], "SECURITY PolAcDmS = machine SID")
    c.ok(polsid("PolPrDmS") == m["domain"]["sid"], "SECURITY PolPrDmS = domain SID",
         polsid("PolPrDmS"))
    rc, v = hive_value(os.path.join(mnt, m["hives"]["SAM"]), r"SAM\Domains\Account", "V")
    c.ok(rc == 0 and sids.sid_from_bytes(v[-24:])[0] == m["machine_sid"],
         "SAM Account\\V ends with the machine SID")
    # Base blocks: sequence numbers and checksum of the primary hives.
    for name, path in m["hives"].items():
        with open(os.path.join(mnt, path), "rb") as fh:
            base = fh.read(512)
        prim, sec_n = struct.unpack_from("<II", base, 4)
        x = 0
        for (w,) in struct.iter_unpack("<I", base[:0x1FC]):
            x ^= w
        x = {0: 1, 0xFFFFFFFF: 0xFFFFFFFE}.get(x, x)
        dirty = any(r["code"] == "hive-dirty" and r["path"] == path for r in m["expected_refusals"])
        c.ok(struct.unpack_from("<I", base, 0x1FC)[0] == x, f"hive {name} checksum valid")
        c.ok((prim != sec_n) == dirty, f"hive {name} sequence numbers {'differ' if dirty else 'equal'}",
             f"{prim}/{sec_n}")
    with open(os.path.join(mnt, "hiberfil.sys"), "rb") as fh:
        sig = fh.read(4)
    hib = any(r["code"] == "hibernated" for r in m["expected_refusals"])
    c.ok((sig == b"HIBR") == hib, "hiberfil.sys signature", sig.hex())


def check_secaudit(c: Checker, part_file: str) -> None:
    if not shutil.which("ntfssecaudit"):
        print("  note ntfssecaudit not installed; $Secure audit skipped", file=sys.stderr)
        return
    r = sh(["ntfssecaudit", "-a", part_file])
    out = r.stdout.decode() + r.stderr.decode()
    counts: dict[str, int] = {}
    for line in out.splitlines():
        if " valid and " in line and " entries in $SDS-" in line:
            counts[line.split()[-1]] = int(line.split()[0])
    c.ok("0 errors in $SDS-1" in out and "0 errors in $SII" in out and "0 errors in $SDH" in out
         and "All keys are present in all lists" in out, "ntfssecaudit $SDS-1/$SII/$SDH",
         out[-400:])
    # Known ntfssecaudit quirk: when $SDS ends exactly after the last mirrored entry (as
    # ntfs-3g leaves it) it reads past the end of the stream in $SDS-2 and reports a "too
    # long" attribute. Accept that only if both copies hold the same number of entries.
    c.ok(counts.get("$SDS-1") == counts.get("$SDS-2") and counts.get("$SDS-1", 0) >= 6,
         "ntfssecaudit $SDS copies hold the same descriptors", str(counts))


def check_volume_state(c: Checker, part_file: str, m: Manifest, work: str) -> None:
    codes = {r["code"] for r in m["expected_refusals"]}
    r = sh(["ntfsinfo", "-m", part_file])
    out = r.stdout.decode() + r.stderr.decode()
    if "ntfs-dirty" in codes:
        c.ok(r.returncode != 0 and "scheduled for check" in out, "ntfsinfo sees a dirty volume",
             out[:200])
        r = sh(["ntfsinfo", "-f", "-m", part_file])
        out = r.stdout.decode()
        c.ok("Volume Flags: 0x0001" in out, "ntfsinfo -f: Volume Flags 0x0001", out[:300])
    else:
        c.ok(r.returncode == 0 and "Volume Flags: 0x0000" in out, "ntfsinfo: Volume Flags 0x0000",
             out[:300])
    with open(part_file, "rb") as f:
        boot = f.read(512)
    serial = struct.unpack_from("<Q", boot, 0x48)[0]
    c.ok(f"{serial:#018x}" == m["windows_volume"]["serial"], "volume serial", f"{serial:#x}")
    # Last: a read-write mount with norecover on the scratch copy. ntfs-3g refuses (or falls
    # back to read-only for) hibernated and unclean-$LogFile volumes; it must accept the
    # others, so our $LogFile restart pages are valid and clean as far as ntfs-3g is
    # concerned. (ntfs-3g 2022.10.3 mounts a volume with the dirty flag read-write; the flag
    # is checked with ntfsinfo above.)
    mnt = os.path.join(work, "mnt-rw")
    os.makedirs(mnt, exist_ok=True)
    must_refuse = bool(codes & {"hibernated", "logfile-unclean"})
    try:
        with NtfsMount(part_file, mnt, log=os.path.join(work, "rw.log"), fake_time=False,
                       extra_opts="norecover"):
            # ntfs-3g falls back to a read-only mount for some unsafe states.
            mounted = not os.statvfs(mnt).f_flag & os.ST_RDONLY
    except RuntimeError:
        mounted = False
    with open(os.path.join(work, "rw.log"), errors="replace") as f:
        log = f.read()
    msg = [ln for ln in log.splitlines() if ln.strip() and not ln.startswith("Version ")]
    c.ok(mounted != must_refuse, "ntfs-3g read-write mount " + ("refused" if must_refuse else "accepted"),
         " / ".join(msg[:3]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="check-test-master",
                                 description="Check a test master image against its manifest "
                                             "using independent tools; exit 1 on any mismatch.")
    ap.add_argument("image", metavar="IMG")
    ap.add_argument("--manifest", help="manifest (default: IMG.json)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every passing check")
    a = ap.parse_args(argv)
    with open(a.manifest or a.image + ".json") as f:
        m = json.load(f)
    c = Checker(a.verbose)
    print(f"check-test-master: {a.image} ({m['layout']}, {m['variant']})", file=sys.stderr)
    c.ok(sha256_file(a.image) == m["disk"]["sha256"], "image sha256")
    c.ok(os.path.getsize(a.image) == m["disk"]["size"], "image size")
    check_partitions(c, a.image, m)
    work = tempfile.mkdtemp(prefix=".check-test-master-", dir=os.path.dirname(os.path.abspath(a.image)))
    try:
        win = next(p for p in m["partitions"] if p["index"] == m["windows_partition"])
        pf = os.path.join(work, "windows.img")
        extract(a.image, win, pf)
        with open(pf, "r+b") as part:
            part.seek(3)
            oem = part.read(8)
            bitlocker = any(r["code"] == "bitlocker" for r in m["expected_refusals"])
            c.ok((oem == b"-FVE-FS-") == bitlocker, "Windows partition OEM ID", repr(oem))
            if oem == b"-FVE-FS-":
                # Check the rest of the content on the scratch copy with the OEM ID restored.
                for off in (3, win["size"] - 512 + 3):
                    part.seek(off)
                    part.write(b"NTFS    ")
        mnt = os.path.join(work, "mnt")
        os.mkdir(mnt)
        try:
            with NtfsMount(pf, mnt, readonly=True, log=os.path.join(work, "ro.log"),
                           fake_time=False):
                check_windows_content(c, mnt, m)
        except RuntimeError as ex:
            c.ok(False, "ntfs-3g read-only mount", str(ex))
        for p in m["partitions"]:
            if p["role"] == "system-reserved":
                sf = os.path.join(work, "sysres.img")
                extract(a.image, p, sf)
                smnt = os.path.join(work, "mnt-sysres")
                os.mkdir(smnt)
                with NtfsMount(sf, smnt, readonly=True, fake_time=False):
                    for name in p["files"]:
                        c.ok(os.path.isfile(os.path.join(smnt, name)), f"System Reserved {name}")
            elif p["role"] == "esp":
                ef = os.path.join(work, "esp.img")
                extract(a.image, p, ef)
                r = sh(["mdir", "-i", ef, "-b", "::/EFI/Microsoft/Boot"],
                       env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
                c.ok(r.returncode == 0 and b"BCD" in r.stdout, "ESP EFI/Microsoft/Boot/BCD",
                     r.stderr.decode())
        check_secaudit(c, pf)
        check_volume_state(c, pf, m, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    verdict = "OK" if not c.failures else f"{len(c.failures)} FAILED"
    print(f"check-test-master: {verdict} ({c.passes} checks passed)", file=sys.stderr)
    return 1 if c.failures else 0

