"""What a test master contains: identities, accounts, profiles, files, SDs.

Single source of truth for the builder (build.py) and the manifest it writes; the checker
(check.py) reads only the manifest.
"""
import hashlib
import os
from typing import TypedDict

from .sids import AceSpec

# ../shared/realdata relative to the project root (DESIGN.md), overridable with SIDFS_REALDATA
# or build-test-master --realdata.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _realdata() -> str:
    beside = os.path.join(_ROOT, "..", "shared", "realdata")
    found = [d for d in (beside, "/work/shared/realdata") if os.path.isdir(d)]
    return os.environ.get("SIDFS_REALDATA") or (found[0] if found else beside)


REALDATA = _realdata()
STUDENT_PC8 = os.path.normpath(REALDATA + "/winreg-kb-STUDENT-PC8")

MACHINE_SID = "S-1-5-21-4070822719-3404542230-2541167049"
COMPUTER_NAME = "STUDENT-PC8"
DOMAIN_NAME = "INTERNAL"
DOMAIN_SID = "S-1-5-21-226059406-2984137831-1201299043"
# Present in every Windows 10 SYSTEM hive, not a machine SID (realdata README); used here as
# a "never rewrite" decoy in SYSTEM.
WIN10_BUILD_SID = "S-1-5-21-2702878673-795188819-444038987"

LOCAL_ACCOUNTS = [("Administrator", 500), ("Guest", 501), ("gold_administrator", 1001)]
DOMAIN_ACCOUNTS = [("bperry", 1107)]


def msid(rid: int) -> str:
    return f"{MACHINE_SID}-{rid}"


def dsid(rid: int) -> str:
    return f"{DOMAIN_SID}-{rid}"


SYSTEM_SID, LOCAL_SERVICE_SID = "S-1-5-18", "S-1-5-19"
ADMINISTRATORS, USERS = "S-1-5-32-544", "S-1-5-32-545"
STUDENT = msid(1001)
BPERRY = dsid(1107)

CONFIG = "Windows/System32/config"
TASK_NAME = "SidfsDemoTask"
TASK_PATH = "Windows/System32/Tasks/" + TASK_NAME
TASK_GUID = "{5D1E1A7C-3B0F-4F2A-9C1D-51DF5D1FA001}"
MASTERKEY_GUID = "7f1a3c2e-5b4d-4e6f-8a9b-0c1d2e3f4a5b"
FIREWALL_RULE_GUID = "{8C2B6E41-1D3A-4C5B-9E7F-A0B1C2D3E4F5}"

# Per-machine identifiers besides the SID (docs/IDENTIFIERS.md), fixed so builds are
# deterministic. MachineGuid and SusClientId are stored as Windows stores them (lowercase, no
# braces); MSDTC contact ids (CIDs) are key names `Classes\CID\{GUID}` (uppercase, braces), one per
# transaction-manager endpoint, told apart by their Description (MS-CMOM 2.2.3.5).
MACHINE_GUID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
SUS_CLIENT_ID = "b6a1c7d2-8e34-4f51-a9b0-2c3d4e5f6a7b"
# The validation blob's layout is not public; the master carries an opaque placeholder that
# does not embed the id (sidfs leaves it as it is: docs/IDENTIFIERS.md).
SUS_CLIENT_ID_VALIDATION = bytes.fromhex("0600b4002801000000000000") + "PLACEHOLDER-VALIDATION".encode(
    "utf-16-le")
MSDTC_CIDS = [("MSDTC", "{5F2C1A3E-9B7D-4E61-8C2A-1D3E5F7A9B0C}"),
              ("MSDTCUIS", "{8A4E2D6C-1F3B-4A5D-9E7C-2B4D6F8A0C1E}"),
              ("MSDTCXATM", "{C1D3E5F7-A9B0-4C2E-8D4F-6A8B0C2E4F61}"),
              ("MSDTCTIPGW", "{E7F9A1B3-C5D7-4E9F-A1B3-C5D7E9F1A3B5}")]

# Machine key containers (docs/IDENTIFIERS.md): Windows names each file
# `<MD5 of the container name as 4 little-endian DWORDs>_<MachineGuid>`; CryptoAPI keeps them in
# Crypto\RSA\MachineKeys, CNG in Crypto\Keys and (LocalSystem) Crypto\SystemKeys.
# f686aace... is the Remote Desktop self-signed certificate's key (TSSecKeySet1). One file
# carries another machine's GUID (copied keys exist in the wild): not named after this machine.
CRYPTO = "ProgramData/Microsoft/Crypto"
FOREIGN_MACHINE_GUID = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
MACHINE_KEY_CONTAINERS = [
    (CRYPTO + "/RSA/MachineKeys", "f686aace6942fb7f7ceb231212eef4a4", MACHINE_GUID),
    (CRYPTO + "/RSA/MachineKeys", "6de9cb26d2b98c01ec4e9e8b34824aa2", MACHINE_GUID),
    (CRYPTO + "/RSA/MachineKeys", "c2319c42033a5ca7f44e731bfd3fa2b5", FOREIGN_MACHINE_GUID),
    (CRYPTO + "/Keys", "de7cf8a7901d2ad13e5c67c29e5d1662", MACHINE_GUID),
    (CRYPTO + "/SystemKeys", "7bf32367ff67a36d73847d0f98b0d5e5", MACHINE_GUID),
]

# Identifiers sidfs knows but does not change (docs/IDENTIFIERS.md, `sidfs inspect`).
SQM_MACHINE_ID = "{5D1F0A11-7C3E-4B2A-9D8E-1F2A3B4C5D6E}"
DEFENDER_SENSE_GUID = "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d"
# DUID-LLT (RFC 8415 11.2): type 1, hardware type 1 (Ethernet), time, MAC.
DHCPV6_DUID = bytes.fromhex("000100012f5d1f0052540012a4b6")
SMS_UNIQUE_ID = "GUID:5D1F5C0C-2B3A-4C4D-8E5F-6A7B8C9D0E1F"


def smscfg_ini() -> bytes:
    r"""Windows\SMSCFG.INI as the Configuration Manager client writes it (ANSI, CRLF)."""
    return ("[Configuration - Client Properties]\r\n"
            f"SMS Unique Identifier={SMS_UNIQUE_ID}\r\n"
            "SMS Certificate Identifier=SMS;5D1F5D1F00000000000000000000000000000000\r\n"
            ).encode("ascii")


PRODUCTS = {
    "workstation": {"name": "Windows 10 Pro", "edition": "Professional", "current_build": "19045",
                    "display_version": "22H2", "installation_type": "Client",
                    "product_type": "WinNT"},
    "domain-controller": {"name": "Windows Server 2022 Standard", "edition": "ServerStandard",
                          "current_build": "20348", "display_version": "21H2",
                          "installation_type": "Server", "product_type": "LanmanNT"},
}


class Profile(TypedDict):
    """A user profile: SID, its ProfileImagePath, its directory in the volume, its hives."""
    sid: str
    profile_image_path: str
    dir: str
    hives: list[str]


PROFILES: list[Profile] = [
    {"sid": SYSTEM_SID, "profile_image_path": r"%systemroot%\system32\config\systemprofile",
     "dir": CONFIG + "/systemprofile", "hives": [CONFIG + "/systemprofile/NTUSER.DAT"]},
    {"sid": LOCAL_SERVICE_SID, "profile_image_path": r"%systemroot%\ServiceProfiles\LocalService",
     "dir": "Windows/ServiceProfiles/LocalService",
     "hives": ["Windows/ServiceProfiles/LocalService/NTUSER.DAT"]},
    {"sid": STUDENT, "profile_image_path": r"C:\Users\Student", "dir": "Users/Student",
     "hives": ["Users/Student/NTUSER.DAT"]},
    {"sid": BPERRY, "profile_image_path": r"C:\Users\bperry", "dir": "Users/bperry",
     "hives": ["Users/bperry/NTUSER.DAT",
               "Users/bperry/AppData/Local/Microsoft/Windows/UsrClass.dat"]},
]

# Security descriptors (owner, group, DACL). Several distinct ones so $Secure holds several.
FULL, MODIFY, READ_EXEC = 0x001F01FF, 0x001301BF, 0x001200A9
OI_CI = 0x03
SDS: dict[str, tuple[str, str, list[AceSpec]]] = {
    "profile-student": (STUDENT, msid(513), [
        ("allow", OI_CI, FULL, STUDENT), ("allow", OI_CI, FULL, SYSTEM_SID),
        ("allow", OI_CI, FULL, ADMINISTRATORS), ("allow", OI_CI, FULL, msid(500)),
        ("allow", OI_CI, READ_EXEC, BPERRY)]),
    "file-student": (STUDENT, msid(513), [
        ("allow", 0, FULL, STUDENT), ("allow", 0, FULL, SYSTEM_SID),
        ("allow", 0, FULL, ADMINISTRATORS), ("allow", 0, MODIFY, msid(500)),
        ("allow", 0, READ_EXEC, BPERRY)]),
    "admin": (msid(500), msid(513), [
        ("allow", OI_CI, FULL, msid(500)), ("allow", OI_CI, FULL, ADMINISTRATORS),
        ("allow", OI_CI, FULL, SYSTEM_SID), ("deny", 0, FULL, msid(501))]),
    "profile-bperry": (BPERRY, dsid(513), [
        ("allow", OI_CI, FULL, BPERRY), ("allow", OI_CI, FULL, SYSTEM_SID),
        ("allow", OI_CI, FULL, ADMINISTRATORS), ("allow", 0, READ_EXEC, STUDENT)]),
    "system-logs": (ADMINISTRATORS, SYSTEM_SID, [
        ("allow", 0, FULL, SYSTEM_SID), ("allow", 0, FULL, ADMINISTRATORS),
        ("allow", 0, READ_EXEC, STUDENT), ("allow", 0, READ_EXEC, BPERRY),
        ("allow", 0, READ_EXEC, msid(500))]),
    "protect": (STUDENT, STUDENT, [
        ("allow", OI_CI, FULL, STUDENT), ("allow", OI_CI, FULL, SYSTEM_SID)]),
}

# path -> SD name. Applied in this order (parents before children).
SD_ASSIGNMENTS = [
    ("Users/Student", "profile-student"),
    ("Users/Student/NTUSER.DAT", "file-student"),
    ("Users/Student/AppData/Roaming/Microsoft/Protect/" + STUDENT, "protect"),
    ("Users/Student/AppData/Roaming/Microsoft/Protect/" + STUDENT + "/" + MASTERKEY_GUID, "protect"),
    ("Users/bperry", "profile-bperry"),
    ("Users/bperry/NTUSER.DAT", "profile-bperry"),
    ("$Recycle.Bin/" + msid(500), "admin"),
    ("$Recycle.Bin/" + STUDENT, "profile-student"),
    ("$Recycle.Bin/" + BPERRY, "profile-bperry"),
    ("Windows/Logs/SidfsDemo", "system-logs"),
    ("Windows/Logs/SidfsDemo/sid-ascii.txt", "system-logs"),
    ("Windows/Logs/SidfsDemo/sid-utf16le.txt", "file-student"),
    (TASK_PATH, "system-logs"),
]

# Directories named after SIDs: rewrite=True when the SID is in the machine domain.
SID_NAMED_DIRS = [
    ("$Recycle.Bin/" + msid(500), msid(500)),
    ("$Recycle.Bin/" + STUDENT, STUDENT),
    ("$Recycle.Bin/" + BPERRY, BPERRY),
    ("Users/Student/AppData/Roaming/Microsoft/Protect/" + STUDENT, STUDENT),
]

RECYCLE_DESKTOP_INI = ("\r\n[.ShellClassInfo]\r\nCLSID={645FF040-5081-101B-9F08-00AA002F954E}\r\n"
                       "LocalizedResourceName=@%SystemRoot%\\system32\\shell32.dll,-8964\r\n")


def task_xml() -> bytes:
    """Task Scheduler XML as Windows writes it: UTF-16LE with BOM, CRLF."""
    lines = [
        '<?xml version="1.0" encoding="UTF-16"?>',
        '<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">',
        '  <RegistrationInfo>',
        f'    <Author>{COMPUTER_NAME}\\gold_administrator</Author>',
        f'    <URI>\\{TASK_NAME}</URI>',
        '  </RegistrationInfo>',
        '  <Triggers>',
        '    <LogonTrigger>',
        '      <Enabled>true</Enabled>',
        f'      <UserId>{STUDENT}</UserId>',
        '    </LogonTrigger>',
        '  </Triggers>',
        '  <Principals>',
        '    <Principal id="Author">',
        f'      <UserId>{STUDENT}</UserId>',
        '      <LogonType>InteractiveToken</LogonType>',
        '      <RunLevel>LeastPrivilege</RunLevel>',
        '    </Principal>',
        '  </Principals>',
        '  <Settings>',
        '    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>',
        '    <Enabled>true</Enabled>',
        '  </Settings>',
        '  <Actions Context="Author">',
        '    <Exec>',
        '      <Command>C:\\Windows\\System32\\notepad.exe</Command>',
        '    </Exec>',
        '  </Actions>',
        '</Task>',
    ]
    return b"\xff\xfe" + ("\r\n".join(lines) + "\r\n").encode("utf-16-le")


def task_hash(xml: bytes) -> bytes:
    """TaskCache Hash: SHA-256 over the XML file bytes without the BOM (input UNCONFIRMED)."""
    body = xml[2:] if xml[:2] == b"\xff\xfe" else xml
    return hashlib.sha256(body).digest()


# Text files that embed the machine SID string; offsets are recorded in the manifest.
def sid_text_files() -> list[tuple[str, str, bytes]]:
    s = STUDENT
    ascii_txt = (f"sidfs demo log\r\nUser {s} logged on to {COMPUTER_NAME}.\r\n"
                 f"Machine SID {MACHINE_SID}\r\n").encode("ascii")
    utf16 = b"\xff\xfe" + (f"User {s} logged on.\r\nForeign {BPERRY} untouched.\r\n"
                           ).encode("utf-16-le")
    # The SID straddles a 4096-byte block boundary (cluster boundary on this volume).
    pad = 4096 - 10
    straddle_a = (b"x" * pad) + s.encode("ascii") + b"\r\n"
    pad16 = 8192 - 14
    straddle_u = (b"y\x00" * (pad16 // 2)) + s.encode("utf-16-le") + b"\r\x00\n\x00"
    return [
        ("Windows/Logs/SidfsDemo/sid-ascii.txt", "ascii", ascii_txt),
        ("Windows/Logs/SidfsDemo/sid-utf16le.txt", "utf-16le", utf16),
        ("Windows/Logs/SidfsDemo/straddle-ascii.log", "ascii", straddle_a),
        ("Windows/Logs/SidfsDemo/straddle-utf16le.log", "utf-16le", straddle_u),
    ]


def occurrences(data: bytes, needle: bytes) -> list[int]:
    out, i = [], data.find(needle)
    while i >= 0:
        out.append(i)
        i = data.find(needle, i + 1)
    return out
