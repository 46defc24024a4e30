"""Synthesized registry hives (SOFTWARE, SYSTEM, DEFAULT, BCD) and edits of real ones.

New hives start as regf.new_empty_hive() and are filled with hivex. Returns, besides the
files, the list of registry values the manifest records so that check.py can read them back
with hivexget.
"""
import struct
from typing import Any

import hivex

from . import regf, sids
from .spec import (
    ADMINISTRATORS,
    BPERRY,
    COMPUTER_NAME,
    DEFENDER_SENSE_GUID,
    DHCPV6_DUID,
    DOMAIN_NAME,
    FIREWALL_RULE_GUID,
    FULL,
    MACHINE_GUID,
    MSDTC_CIDS,
    PROFILES,
    SQM_MACHINE_ID,
    STUDENT,
    SUS_CLIENT_ID,
    SUS_CLIENT_ID_VALIDATION,
    SYSTEM_SID,
    TASK_GUID,
    TASK_NAME,
    USERS,
    WIN10_BUILD_SID,
    task_hash,
    task_xml,
)

REG_NONE, REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ = 0, 1, 2, 3, 4, 7
TYPE_NAMES = {0: "REG_NONE", 1: "REG_SZ", 2: "REG_EXPAND_SZ", 3: "REG_BINARY", 4: "REG_DWORD",
              7: "REG_MULTI_SZ"}

# Default key security of new hives: Administrators/SYSTEM full, Users read, inherited.
HIVE_ROOT_SD = sids.build_sd(ADMINISTRATORS, SYSTEM_SID, [
    ("allow", 0x02, 0xF003F, SYSTEM_SID), ("allow", 0x02, 0xF003F, ADMINISTRATORS),
    ("allow", 0x02, 0x20019, USERS)])


def sz(s: str) -> bytes:
    return (s + "\0").encode("utf-16-le")


def dword(n: int) -> bytes:
    return struct.pack("<I", n)


class HiveSpec:
    """Keys and values to create; `record` marks values to list in the manifest."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.keys: dict[str, list[tuple[str, int, bytes]]] = {}
        self.recorded: list[dict[str, Any]] = []

    def key(self, path: str) -> str:
        self.keys.setdefault(path, [])
        return path

    def val(self, path: str, name: str, typ: int, data: bytes, record: bool = False,
            expect: str | None = None) -> None:
        self.keys.setdefault(path, []).append((name, typ, data))
        if record:
            self.recorded.append({"hive": self.name, "key": path, "value": name,
                                  "type": TYPE_NAMES[typ], "data": expect})


def write_hive(spec: HiveSpec, out: str, file_name: str, root_name: str) -> None:
    with open(out, "wb") as f:
        f.write(regf.new_empty_hive(file_name, root_name, HIVE_ROOT_SD))
    h = hivex.Hivex(out, write=True)
    nodes: dict[str, int] = {"": h.root()}

    def node(path: str) -> int:
        if path in nodes:
            return nodes[path]
        parent, _, leaf = path.rpartition("\\")
        n: int = h.node_add_child(node(parent), leaf)
        nodes[path] = n
        return n

    for path in sorted(spec.keys):
        n = node(path)
        vals = spec.keys[path]
        if vals:
            h.node_set_values(n, [{"key": k, "t": t, "value": v} for k, t, v in vals])
    h.commit(out)


def software(product: dict[str, str]) -> HiveSpec:
    s = HiveSpec("SOFTWARE")
    cv = r"Microsoft\Windows NT\CurrentVersion"
    s.val(cv, "ProductName", REG_SZ, sz(product["name"]), True, product["name"])
    s.val(cv, "EditionID", REG_SZ, sz(product["edition"]))
    s.val(cv, "InstallationType", REG_SZ, sz(product["installation_type"]))
    s.val(cv, "CurrentBuild", REG_SZ, sz(product["current_build"]), True, product["current_build"])
    s.val(cv, "CurrentBuildNumber", REG_SZ, sz(product["current_build"]), True,
          product["current_build"])
    s.val(cv, "DisplayVersion", REG_SZ, sz(product["display_version"]), True,
          product["display_version"])
    s.val(cv, "CurrentVersion", REG_SZ, sz("6.3"))
    s.val(cv, "CurrentMajorVersionNumber", REG_DWORD, dword(10))
    s.val(cv, "CurrentMinorVersionNumber", REG_DWORD, dword(0))
    s.val(cv, "RegisteredOwner", REG_SZ, sz("Student"))
    s.val(cv, "SystemRoot", REG_SZ, sz(r"C:\Windows"))
    # Winlogon / LogonUI carry the last user's SID as a UTF-16 string.
    s.val(cv + r"\Winlogon", "AutoLogonSID", REG_SZ, sz(STUDENT), True, STUDENT)
    s.val(cv + r"\Winlogon", "LastUsedUsername", REG_SZ, sz("gold_administrator"))
    s.val(r"Microsoft\Windows\CurrentVersion\Authentication\LogonUI", "LastLoggedOnUserSID",
          REG_SZ, sz(STUDENT), True, STUDENT)
    s.val(r"Microsoft\Windows\CurrentVersion\Authentication\LogonUI", "LastLoggedOnSAMUser",
          REG_SZ, sz(COMPUTER_NAME + r"\gold_administrator"))
    pl = cv + r"\ProfileList"
    s.val(pl, "ProfilesDirectory", REG_EXPAND_SZ, sz(r"%SystemDrive%\Users"))
    s.val(pl, "Default", REG_EXPAND_SZ, sz(r"%SystemDrive%\Users\Default"))
    s.val(pl, "Public", REG_EXPAND_SZ, sz(r"%SystemDrive%\Users\Public"))
    for p in PROFILES:
        k = pl + "\\" + p["sid"]
        s.val(k, "ProfileImagePath", REG_EXPAND_SZ, sz(p["profile_image_path"]), True,
              p["profile_image_path"])
        s.val(k, "Sid", REG_BINARY, sids.sid_to_bytes(p["sid"]))
        s.val(k, "Flags", REG_DWORD, dword(12 if p["sid"].count("-") < 4 else 0))
        s.val(k, "State", REG_DWORD, dword(0))
    tc = cv + r"\Schedule\TaskCache"
    xml = task_xml()
    t = tc + r"\Tasks" + "\\" + TASK_GUID
    s.val(t, "Path", REG_SZ, sz("\\" + TASK_NAME), True, "\\" + TASK_NAME)
    s.val(t, "URI", REG_SZ, sz("\\" + TASK_NAME))
    s.val(t, "Hash", REG_BINARY, task_hash(xml), True, task_hash(xml).hex())
    s.val(t, "Schema", REG_DWORD, dword(0x10002))
    tree = tc + r"\Tree" + "\\" + TASK_NAME
    s.val(tree, "Id", REG_SZ, sz(TASK_GUID), True, TASK_GUID)
    s.val(tree, "Index", REG_DWORD, dword(3))
    # Task SD (REG_BINARY self-relative SD naming the local user; real TaskCache has one).
    s.val(tree, "SD", REG_BINARY, sids.build_sd(SYSTEM_SID, SYSTEM_SID, [
        ("allow", 0, FULL, SYSTEM_SID), ("allow", 0, FULL, ADMINISTRATORS),
        ("allow", 0, FULL, STUDENT)]))
    s.key(tc + r"\Boot")
    s.key(tc + r"\Logon" + "\\" + TASK_GUID)
    identifiers(s, cv)
    return s


def identifiers(s: HiveSpec, cv: str) -> None:
    """Per-machine identifiers of SOFTWARE besides the SID (docs/IDENTIFIERS.md)."""
    s.val(r"Microsoft\Cryptography", "MachineGuid", REG_SZ, sz(MACHINE_GUID), True, MACHINE_GUID)
    wu = r"Microsoft\Windows\CurrentVersion\WindowsUpdate"
    s.val(wu, "SusClientId", REG_SZ, sz(SUS_CLIENT_ID), True, SUS_CLIENT_ID)
    s.val(wu, "SusClientIDValidation", REG_BINARY, SUS_CLIENT_ID_VALIDATION, True,
          SUS_CLIENT_ID_VALIDATION.hex())
    for desc, cid in MSDTC_CIDS:
        s.val(r"Classes\CID" + "\\" + cid + r"\Description", "", REG_SZ, sz(desc), True, desc)
        s.val(r"Classes\CID" + "\\" + cid + r"\CustomProperties\Log\Path", "", REG_SZ,
              sz(r"C:\Windows\system32\MsDtc"))
    s.val(r"Microsoft\MSDTC", "MaxLogSize", REG_DWORD, dword(4096))
    # Known but not changed by sidfs (listed by `sidfs inspect`).
    s.val(r"Microsoft\SQMClient", "MachineId", REG_SZ, sz(SQM_MACHINE_ID), True, SQM_MACHINE_ID)
    s.val(r"Microsoft\Windows Advanced Threat Protection", "senseGuid", REG_SZ,
          sz(DEFENDER_SENSE_GUID), True, DEFENDER_SENSE_GUID)
    # Domain-joined: DefaultDomainName is the domain (never rewritten), AltDefaultDomainName the
    # computer (rewritten).
    s.val(cv + r"\Winlogon", "DefaultDomainName", REG_SZ, sz(DOMAIN_NAME), True, DOMAIN_NAME)
    s.val(cv + r"\Winlogon", "AltDefaultDomainName", REG_SZ, sz(COMPUTER_NAME), True,
          COMPUTER_NAME)


def system(product: dict[str, str], hiberboot: int) -> HiveSpec:
    s = HiveSpec("SYSTEM")
    for v in ("Current", "Default", "LastKnownGood"):
        s.val("Select", v, REG_DWORD, dword(1), True, "1")
    s.val("Select", "Failed", REG_DWORD, dword(0))
    cs = "ControlSet001"
    s.val(cs + r"\Control\ComputerName\ComputerName", "ComputerName", REG_SZ,
          sz(COMPUTER_NAME), True, COMPUTER_NAME)
    s.val(cs + r"\Control\ComputerName\ActiveComputerName", "ComputerName", REG_SZ,
          sz(COMPUTER_NAME), True, COMPUTER_NAME)
    tcp = cs + r"\Services\Tcpip\Parameters"
    s.val(tcp, "Hostname", REG_SZ, sz(COMPUTER_NAME), True, COMPUTER_NAME)
    s.val(tcp, "NV Hostname", REG_SZ, sz(COMPUTER_NAME), True, COMPUTER_NAME)
    s.val(tcp, "Domain", REG_SZ, sz(""))
    s.val(cs + r"\Services\Tcpip6\Parameters", "Dhcpv6DUID", REG_BINARY, DHCPV6_DUID, True,
          DHCPV6_DUID.hex())
    # A second control set (LastKnownGood history): the computer name lives in every one.
    s.val(r"ControlSet002\Control\ComputerName\ComputerName", "ComputerName", REG_SZ,
          sz(COMPUTER_NAME), True, COMPUTER_NAME)
    s.val(r"ControlSet002\Services\Tcpip\Parameters", "Hostname", REG_SZ, sz(COMPUTER_NAME),
          True, COMPUTER_NAME)
    s.val(cs + r"\Control\ProductOptions", "ProductType", REG_SZ, sz(product["product_type"]),
          True, product["product_type"])
    s.val(cs + r"\Control\Session Manager\Power", "HiberbootEnabled", REG_DWORD,
          dword(hiberboot), True, str(hiberboot))
    # A per-user firewall rule: Windows records the owning local user as LUOwn=<SID> (REG_SZ).
    rule = ("v2.30|Action=Allow|Active=TRUE|Dir=In|Protocol=6|Profile=Private|"
            r"App=C:\Users\Student\AppData\Local\Demo\demo.exe|Name=demo.exe|Desc=demo.exe|"
            f"LUOwn={STUDENT}|EmbedCtxt=demo.exe|")
    s.val(cs + r"\Services\SharedAccess\Parameters\FirewallPolicy\FirewallRules",
          FIREWALL_RULE_GUID, REG_SZ, sz(rule), True, rule)
    # Background Activity Moderator: one key per user SID (a SID-named key in SYSTEM).
    bam = cs + r"\Services\bam\State\UserSettings"
    s.val(bam + "\\" + STUDENT, r"\Device\HarddiskVolume3\Windows\System32\notepad.exe",
          REG_BINARY, struct.pack("<Q", regf.FIXED_FILETIME) + bytes(16))
    s.val(bam + "\\" + STUDENT, "Version", REG_DWORD, dword(1))
    s.val(bam + "\\" + STUDENT, "SequenceNumber", REG_DWORD, dword(7))
    s.val(bam + "\\" + SYSTEM_SID, "Version", REG_DWORD, dword(1))
    # Decoy: the SID every Windows 10 SYSTEM hive has; not a machine SID, never rewritten.
    s.val(cs + r"\Control\DeviceContainerPropertyUpdateEvents", "BuildSid", REG_SZ,
          sz(WIN10_BUILD_SID), True, WIN10_BUILD_SID)
    return s


def default_hive() -> HiveSpec:
    s = HiveSpec("DEFAULT")
    s.val(r"Control Panel\Desktop", "Wallpaper", REG_SZ, sz(""))
    s.val(r"Control Panel\International", "LocaleName", REG_SZ, sz("en-US"))
    s.key(r"Software\Microsoft\Windows\CurrentVersion")
    return s


def bcd() -> HiveSpec:
    s = HiveSpec("BCD")
    s.val(r"Description", "KeyName", REG_SZ, sz("BCD00000000"))
    s.val(r"Description", "System", REG_DWORD, dword(1))
    s.key("Objects")
    return s


def make_dc_security(src: str, out: str) -> str:
    """Copy SECURITY with PolPrDmS := PolAcDmS (what a domain controller looks like)."""
    h = hivex.Hivex(src, write=True)
    pol = h.node_get_child(h.root(), "Policy")
    acc = h.node_values(h.node_get_child(pol, "PolAcDmS"))[0]
    sid = h.value_value(acc)[1]
    prim = h.node_get_child(pol, "PolPrDmS")
    h.node_set_values(prim, [{"key": "", "t": REG_NONE, "value": sid}])
    h.commit(out)
    return sids.sid_from_bytes(sid)[0]


def make_student_ntuser(src: str, out: str, hive_path: str) -> list[dict[str, Any]]:
    """Copy the real NTUSER.DAT (bperry's) for the local user: the REG_SZ values that name
    bperry's SID (Windows Search ProcessedSearchRoots) are changed to name the local user's
    SID, so that this hive carries machine-SID strings next to bperry's binary SIDs in its
    sk cells (which must stay). Only values of existing keys change: no new subkey lists."""
    old, new = BPERRY, STUDENT
    h = hivex.Hivex(src, write=True)
    recorded = []

    def walk(n: int, path: str) -> None:
        for v in h.node_values(n):
            t, d = h.value_value(v)
            if t in (REG_SZ, REG_EXPAND_SZ) and old.encode("utf-16-le") in d:
                text = d.decode("utf-16-le").replace(old, new).replace(
                    "\\Users\\bperry\\", "\\Users\\Student\\")
                name = h.value_key(v)
                h.node_set_value(n, {"key": name, "t": t, "value": text.encode("utf-16-le")})
                recorded.append({"hive": "Users/Student/NTUSER.DAT", "hive_path": hive_path,
                                 "key": path, "value": name, "type": TYPE_NAMES[t],
                                 "data": text.rstrip("\0")})
                return walk(n, path)   # value handles changed; rescan this key
        for c in h.node_children(n):
            walk(c, path + "\\" + h.node_name(c) if path else h.node_name(c))

    walk(h.root(), "")
    h.commit(out)
    return recorded
