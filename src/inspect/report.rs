//! What `sidfs inspect` found in a master: the report, serialised as JSON by `--json`.
//!
//! Every field is plain data (strings, numbers, booleans) so that the JSON is stable and can be
//! read back ([`InspectReport`] also implements `Deserialize`, which the tests use). SIDs are in
//! their string form `S-1-5-21-a-b-c`; offsets and sizes are bytes.

use serde::{Deserialize, Serialize};

use super::finding::{Refusal, Warning};

/// Everything `sidfs inspect` reports about one master image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectReport {
    /// The image path as given.
    pub image: String,
    /// Image size in bytes.
    pub image_size: u64,
    pub partition_table: PartitionTableReport,
    /// The Windows installation, if an NTFS volume holds `Windows\System32\config\SYSTEM`.
    pub windows: Option<WindowsReport>,
    /// A disk without Windows inspected for `--old-sid SID`, as `sidfs mount --old-sid` clones it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_disk: Option<DataDiskReport>,
    /// Why the image cannot be cloned safely; empty when it can.
    pub refusals: Vec<Refusal>,
    /// Clonable, but the user should know.
    pub warnings: Vec<Warning>,
}

impl InspectReport {
    /// True when nothing stops cloning.
    pub fn is_cloneable(&self) -> bool {
        self.refusals.is_empty()
    }
}

/// The partition map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTableReport {
    /// "mbr", "gpt" or "none" (a bare volume image).
    pub kind: String,
    /// Logical block size of the table (512 or 4096).
    pub sector_size: u32,
    /// MBR disk signature as 8 hex digits, or the GPT disk GUID.
    pub disk_id: Option<String>,
    pub partitions: Vec<PartitionReport>,
    /// Non-fatal findings of the partition reader (backup GPT used, partition past the end...).
    pub notes: Vec<String>,
}

/// One partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReport {
    /// Linux numbering: MBR primaries 1–4, logicals from 5; GPT slot + 1; 0 for a bare volume.
    pub index: u32,
    /// Image offset of the first byte.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// The table's type: MBR type byte as "0x07", or the GPT type GUID.
    pub type_id: String,
    /// A human name of the type, when it is a known one.
    pub type_name: Option<String>,
    /// GPT partition name (empty for MBR).
    pub name: String,
    /// "ntfs", "bitlocker", "fat" or "unknown", from the partition's first sector.
    pub file_system: String,
    /// True for the NTFS volume that holds Windows.
    pub holds_windows: bool,
}

/// The Windows installation on one NTFS volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowsReport {
    /// Index of the partition (as in [`PartitionReport::index`]).
    pub partition_index: u32,
    pub volume: VolumeReport,
    /// SOFTWARE `Microsoft\Windows NT\CurrentVersion` `ProductName`.
    pub product_name: Option<String>,
    /// `CurrentBuild` (or `CurrentBuildNumber`).
    pub build: Option<String>,
    /// `DisplayVersion` (e.g. "22H2").
    pub display_version: Option<String>,
    /// SYSTEM `ComputerName\ComputerName` of the current control set.
    pub computer_name: Option<String>,
    /// SYSTEM `Tcpip\Parameters` `Hostname`.
    pub hostname: Option<String>,
    /// SYSTEM `ProductOptions` `ProductType` (WinNT, ServerNT, LanmanNT).
    pub product_type: Option<String>,
    /// The machine SID both sources agree on (`None` when they disagree or one is missing).
    pub machine_sid: Option<String>,
    pub machine_sid_sources: MachineSidSources,
    /// SECURITY `PolAcDmN`: the account-domain (computer) name.
    pub account_domain_name: Option<String>,
    /// The AD domain (SECURITY `PolPrDmN`/`PolPrDmS`), when joined. Never rewritten.
    pub domain: Option<DomainReport>,
    /// For a workgroup machine, `PolPrDmN` names the workgroup.
    pub workgroup: Option<String>,
    pub domain_controller: bool,
    /// SAM local accounts, by RID.
    pub local_accounts: Vec<AccountReport>,
    /// SOFTWARE ProfileList entries.
    pub profiles: Vec<ProfileReport>,
    /// Every hive on the volume (primaries; logs are listed with their hive).
    pub hives: Vec<HiveReport>,
    /// EFS-encrypted and compressed files found by a bounded MFT walk.
    pub special_files: SpecialFilesReport,
    /// Per-machine identifiers besides the SID (computer name, MachineGuid, WSUS, MSDTC), with
    /// where Windows reads them: what `sidfs mount` makes unique (docs/IDENTIFIERS.md).
    #[serde(default)]
    pub identifiers: Vec<crate::identity::FoundIdentifier>,
    /// Per-machine identifiers sidfs knows but leaves as they are in every clone (KMS CMID, SQM
    /// MachineId, SCCM SMS GUID, Defender sensor id, DHCPv6 DUID), each with why.
    #[serde(default)]
    pub unchanged_identifiers: Vec<crate::identity::unchanged::UnchangedIdentifier>,
    /// Stores with checksums (ESE databases, event logs outside `winevt\Logs`) and what the
    /// clone does with each (docs/SEMANTICS.md, "Stores with checksums").
    #[serde(default)]
    pub stores: Vec<StoreReport>,
}

/// One store with checksums on the Windows volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreReport {
    /// Path on the volume.
    pub path: String,
    /// "ese", "ese-log", "evtx", "sqlite-wal", "wmi" or "efs" (`rewrite::survey::STORE_KINDS`).
    pub kind: String,
    pub size: u64,
    /// Machine-SID occurrences in the file, every form.
    pub sid_occurrences: usize,
    /// What the clone does: "rewritten with its checksums", "kept as it is (no machine SID)", or
    /// "refused: <reason>".
    pub clone: String,
}

/// A data disk (NTFS volumes without a Windows installation) as `sidfs mount --old-sid SID`
/// surveys it: its stores with checksums on every NTFS volume and what the clone does with each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDiskReport {
    /// The machine SID `--old-sid` names, which the clone replaces.
    pub old_sid: String,
    /// The stores with checksums of every NTFS volume.
    pub stores: Vec<DataDiskStoreReport>,
}

/// One store with checksums on a data disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDiskStoreReport {
    /// Index of its partition (as in [`PartitionReport::index`]).
    pub partition: u32,
    /// Path on the volume.
    pub path: String,
    /// "ese", "ese-log", "evtx", "sqlite-wal", "wmi" or "efs" (`rewrite::survey::STORE_KINDS`).
    pub kind: String,
    pub size: u64,
    /// Occurrences of the `--old-sid` SID in the file, every form.
    pub sid_occurrences: usize,
    /// What the clone does: "rewritten with its ... checksums", "kept as it is (no machine SID)",
    /// or "refused: <the sentence of the refusal>".
    pub clone: String,
}

/// Facts of the Windows volume that decide whether it can be cloned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeReport {
    /// Image offset of the volume.
    pub start: u64,
    pub size: u64,
    pub cluster_size: u32,
    /// "3.1".
    pub ntfs_version: String,
    /// Volume serial number, 16 hex digits.
    pub serial_number: String,
    pub label: Option<String>,
    /// $Volume flag DIRTY.
    pub dirty: bool,
    /// $LogFile restart area says clean (or the journal is emptied).
    pub log_file_clean: Option<bool>,
    /// $LogFile restart page version "major.minor" ("2.0" = Windows Fast Startup capable).
    pub log_file_version: Option<String>,
    /// hiberfil.sys: "absent", "clean", "hibernated", "wake", "restore" or "unknown".
    pub hibernation: String,
}

/// Where the machine SID was read, and whether the two places agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSidSources {
    /// SECURITY `Policy\PolAcDmS` (default value).
    pub security: Option<SidSource>,
    /// SAM `SAM\Domains\Account` value `V`.
    pub sam: Option<SidSource>,
    /// Both present and equal.
    pub agree: bool,
}

/// A machine SID read from one hive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidSource {
    pub sid: String,
    /// Path of the hive on the volume.
    pub hive: String,
    /// Key and value it was read from.
    pub key: String,
    /// Offset of the SID's 24 bytes in the hive file.
    pub hive_offset: u64,
}

/// The AD domain the machine is joined to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainReport {
    pub name: Option<String>,
    pub sid: String,
}

/// A SAM local account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountReport {
    pub name: String,
    pub rid: u32,
    pub sid: String,
}

/// A ProfileList entry and the hives found in its profile directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileReport {
    /// The key name (a SID string for real profiles).
    pub sid: String,
    /// "local" (machine SID + RID), "domain" (the AD domain), "well-known" (S-1-5-18...) or
    /// "other".
    pub kind: String,
    /// `ProfileImagePath` as stored.
    pub path: Option<String>,
    /// Volume paths of the profile's hives (NTUSER.DAT, UsrClass.dat) that exist.
    pub hives: Vec<String>,
    /// Volume path of the DPAPI master-key folder `...\Microsoft\Protect\<SID>`, when present.
    pub dpapi_master_keys: Option<String>,
}

/// One registry hive file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HiveReport {
    /// "sam", "security", "software", "system", "default", "regback", "ntuser", "usrclass",
    /// "service-ntuser", "systemprofile-ntuser" or "bcd".
    pub role: String,
    /// Path on the volume.
    pub path: String,
    /// Profile directory name for per-user hives.
    pub profile: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// "clean", "dirty" (sequence numbers differ or checksum wrong) or "unreadable".
    pub state: String,
    pub primary_sequence: Option<u32>,
    pub secondary_sequence: Option<u32>,
    /// Transaction logs next to it (".LOG", ".LOG1", ".LOG2") with their sizes.
    pub logs: Vec<HiveLogReport>,
    /// Why the hive could not be read, for state "unreadable".
    pub error: Option<String>,
}

/// A transaction log of a hive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HiveLogReport {
    pub path: String,
    pub size: u64,
}

/// EFS-encrypted and compressed files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialFilesReport {
    pub records_scanned: u64,
    /// The walk stopped at its limit before the end of the MFT.
    pub truncated: bool,
    pub encrypted: u64,
    pub compressed: u64,
    pub encrypted_examples: Vec<String>,
    pub compressed_examples: Vec<String>,
    /// Records that could not be parsed.
    pub unreadable: u64,
}
