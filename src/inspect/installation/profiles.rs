//! User profiles: where each profile's directory and hives are on the volume, and what the
//! report says about each.

use crate::hive::windows;
use crate::image::{HiveFileKind, HiveLocation, HiveRole, NtfsVolume};
use crate::inspect::report::ProfileReport;
use crate::sid::{MachineSid, Sid};

/// Where a local user keeps DPAPI master keys, relative to the profile directory (Vista+ and
/// XP) [docs/FORMAT-FACTS.md §5 DPAPI].
const PROTECT_DIRS: [&str; 2] = [
    r"AppData\Roaming\Microsoft\Protect",
    r"Application Data\Microsoft\Protect",
];

/// `ProfileImagePath` as a path on the volume: drops a drive letter or `%SystemDrive%`, expands
/// `%SystemRoot%`/`%windir%` to `Windows`. `None` for a path on another drive letter form we
/// cannot place.
pub(in crate::inspect) fn profile_volume_path(image_path: &str) -> Option<String> {
    let mut rest = image_path.trim().trim_end_matches('\\').to_string();
    let lower = rest.to_ascii_lowercase();
    for (prefix, replacement) in [
        ("%systemdrive%\\", ""),
        ("%systemroot%", "Windows"),
        ("%windir%", "Windows"),
    ] {
        if lower.starts_with(prefix) {
            rest = format!("{replacement}{}", &rest[prefix.len()..]);
            return Some(rest.trim_start_matches('\\').to_string());
        }
    }
    let bytes = rest.as_bytes();
    if bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' && bytes[2] == b'\\' {
        return Some(rest[3..].to_string());
    }
    None
}

/// The profile directory of a per-user hive (the hive's path without the part below the
/// profile), or `None` for other hives.
fn profile_dir_of(location: &HiveLocation) -> Option<String> {
    let suffixes: &[&str] = match location.role {
        HiveRole::UserNtuser | HiveRole::ServiceProfileNtuser | HiveRole::SystemProfileNtuser => {
            &[r"\NTUSER.DAT"]
        }
        HiveRole::UserClasses => &[
            r"\AppData\Local\Microsoft\Windows\UsrClass.dat",
            r"\Local Settings\Application Data\Microsoft\Windows\UsrClass.dat",
        ],
        _ => return None,
    };
    let lower = location.path.to_ascii_lowercase();
    suffixes.iter().find_map(|s| {
        lower
            .ends_with(&s.to_ascii_lowercase())
            .then(|| location.path[..location.path.len() - s.len()].to_string())
    })
}

pub(super) fn profile_report(
    volume: &NtfsVolume,
    profile: &windows::UserProfile,
    locations: &[HiveLocation],
    machine_sid: Option<MachineSid>,
    domain_sid: Option<&Sid>,
) -> ProfileReport {
    let kind = match &profile.sid {
        Some(sid) => {
            let parent = sid.domain();
            if machine_sid.is_some_and(|m| parent.as_ref() == Some(&m.to_sid())) {
                "local"
            } else if domain_sid.is_some() && parent.as_ref() == domain_sid {
                "domain"
            } else if sid.authority() == 5 && sid.sub_authorities().len() == 1 {
                "well-known"
            } else {
                "other"
            }
        }
        None => "other",
    };
    let dir = profile
        .profile_image_path
        .as_deref()
        .and_then(profile_volume_path);
    let hives = match &dir {
        Some(dir) => locations
            .iter()
            .filter(|l| l.kind == HiveFileKind::Primary)
            .filter(|l| profile_dir_of(l).is_some_and(|d| d.eq_ignore_ascii_case(dir)))
            .map(|l| l.path.clone())
            .collect(),
        None => Vec::new(),
    };
    let dpapi_master_keys = dir.as_ref().and_then(|dir| {
        PROTECT_DIRS.iter().find_map(|protect| {
            let path = format!(r"{dir}\{protect}\{}", profile.key_name);
            match volume.list_dir(&path) {
                Ok(entries) if entries.iter().any(|e| !e.is_directory) => Some(path),
                _ => None,
            }
        })
    });
    ProfileReport {
        sid: profile.key_name.clone(),
        kind: kind.to_string(),
        path: profile.profile_image_path.clone(),
        hives,
        dpapi_master_keys,
    }
}
