//! Where an NTFS volume keeps registry hives.
//!
//! Locations: [docs/FORMAT-FACTS.md §2 "Dirty state and transaction logs" (.LOG/.LOG1/.LOG2, RegBack);
//! Microsoft Learn "Registry Hives" (system hives in %SystemRoot%\System32\Config, user hives
//! NTUSER.DAT and UsrClass.dat in the profile); libyal/winreg-kb documentation].

use super::{NtfsVolume, StreamLayout};
use crate::image::error::{ImageError, Result};

/// What a hive is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HiveRole {
    Sam,
    Security,
    Software,
    System,
    Default,
    /// A file in `config\RegBack` (old copies).
    RegBack,
    /// A profile's NTUSER.DAT (`Users\<name>` or XP `Documents and Settings\<name>`).
    UserNtuser,
    /// A profile's UsrClass.dat.
    UserClasses,
    /// `Windows\ServiceProfiles\<name>\NTUSER.DAT` (LocalService, NetworkService).
    ServiceProfileNtuser,
    /// `Windows\System32\config\systemprofile\NTUSER.DAT` (LocalSystem).
    SystemProfileNtuser,
    /// The boot configuration store `Boot\BCD` on this volume.
    Bcd,
}

/// The hive itself or one of its transaction logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HiveFileKind {
    Primary,
    /// ".LOG", ".LOG1" or ".LOG2".
    Log(&'static str),
}

/// One hive file on the volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HiveLocation {
    pub role: HiveRole,
    pub kind: HiveFileKind,
    /// Path on the volume, with the names as stored where we listed a directory.
    pub path: String,
    /// Profile or service-profile directory name, for per-user hives.
    pub profile: Option<String>,
    pub layout: StreamLayout,
    /// Data size in bytes.
    pub size: u64,
}

impl HiveLocation {
    /// Extents of the hive file.
    pub fn extents(&self) -> &[super::Extent] {
        self.layout.extents()
    }
}

const LOG_SUFFIXES: [&str; 3] = [".LOG", ".LOG1", ".LOG2"];
const CONFIG: &str = r"Windows\System32\config";
const SYSTEM_HIVES: [(&str, HiveRole); 5] = [
    ("SAM", HiveRole::Sam),
    ("SECURITY", HiveRole::Security),
    ("SOFTWARE", HiveRole::Software),
    ("SYSTEM", HiveRole::System),
    ("DEFAULT", HiveRole::Default),
];

impl NtfsVolume {
    /// Every registry hive (and transaction log) this volume holds.
    pub fn locate_hives(&self) -> Result<Vec<HiveLocation>> {
        let mut out = Vec::new();
        for (name, role) in SYSTEM_HIVES {
            self.add_with_logs(&mut out, &format!(r"{CONFIG}\{name}"), role, None)?;
        }
        let regback = format!(r"{CONFIG}\RegBack");
        if self.try_lookup(&regback)?.is_some() {
            for entry in self.list_dir(&regback)? {
                if !entry.is_directory {
                    self.add(
                        &mut out,
                        &format!(r"{regback}\{}", entry.name),
                        HiveRole::RegBack,
                        HiveFileKind::Primary,
                        None,
                    )?;
                }
            }
        }
        for (root, classes) in [
            ("Users", r"AppData\Local\Microsoft\Windows\UsrClass.dat"),
            (
                "Documents and Settings",
                r"Local Settings\Application Data\Microsoft\Windows\UsrClass.dat",
            ),
        ] {
            for profile in self.subdirectories(root)? {
                let base = format!(r"{root}\{profile}");
                self.add_with_logs(
                    &mut out,
                    &format!(r"{base}\NTUSER.DAT"),
                    HiveRole::UserNtuser,
                    Some(&profile),
                )?;
                self.add_with_logs(
                    &mut out,
                    &format!(r"{base}\{classes}"),
                    HiveRole::UserClasses,
                    Some(&profile),
                )?;
            }
        }
        for service in self.subdirectories(r"Windows\ServiceProfiles")? {
            self.add_with_logs(
                &mut out,
                &format!(r"Windows\ServiceProfiles\{service}\NTUSER.DAT"),
                HiveRole::ServiceProfileNtuser,
                Some(&service),
            )?;
        }
        self.add_with_logs(
            &mut out,
            &format!(r"{CONFIG}\systemprofile\NTUSER.DAT"),
            HiveRole::SystemProfileNtuser,
            Some("systemprofile"),
        )?;
        self.add_with_logs(&mut out, r"Boot\BCD", HiveRole::Bcd, None)?;
        Ok(out)
    }

    /// Names of the subdirectories of `path` (empty if `path` does not exist).
    fn subdirectories(&self, path: &str) -> Result<Vec<String>> {
        if self.try_lookup(path)?.is_none() {
            return Ok(Vec::new());
        }
        Ok(self
            .list_dir(path)?
            .into_iter()
            .filter(|e| e.is_directory)
            .map(|e| e.name)
            .collect())
    }

    fn add_with_logs(
        &self,
        out: &mut Vec<HiveLocation>,
        path: &str,
        role: HiveRole,
        profile: Option<&str>,
    ) -> Result<()> {
        self.add(out, path, role.clone(), HiveFileKind::Primary, profile)?;
        for suffix in LOG_SUFFIXES {
            self.add(
                out,
                &format!("{path}{suffix}"),
                role.clone(),
                HiveFileKind::Log(suffix),
                profile,
            )?;
        }
        Ok(())
    }

    fn add(
        &self,
        out: &mut Vec<HiveLocation>,
        path: &str,
        role: HiveRole,
        kind: HiveFileKind,
        profile: Option<&str>,
    ) -> Result<()> {
        let layout = match self.stream_layout(path, "") {
            Ok(layout) => layout,
            Err(ImageError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        out.push(HiveLocation {
            role,
            kind,
            path: path.to_string(),
            profile: profile.map(str::to_string),
            size: layout.size,
            layout,
        });
        Ok(())
    }
}
