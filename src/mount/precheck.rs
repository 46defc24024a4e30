//! The checks made before anything is created, so that a refused mount leaves nothing behind.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::{MountError, MountRequest, Occupant};
use crate::fuse::MountKind;
use crate::mountinfo;

/// The checks that can be made before anything is created. `state_dir` is where the clone's state is (or will be).
pub fn precheck(req: &MountRequest, state_dir: &Path) -> Result<MountKind, MountError> {
    match std::fs::metadata(&req.clone.master) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(MountError::MasterMissing {
                master: req.clone.master.clone(),
            })
        }
        Err(source) => {
            return Err(MountError::MasterUnreadable {
                master: req.clone.master.clone(),
                source,
            })
        }
        Ok(m) if m.is_dir() => {
            return Err(MountError::MasterIsDirectory {
                master: req.clone.master.clone(),
            })
        }
        Ok(m) if !(m.is_file() || m.file_type().is_block_device()) => {
            return Err(MountError::MasterNotDisk {
                master: req.clone.master.clone(),
            })
        }
        Ok(_) => {}
    }
    if let Err(source) = std::fs::File::open(&req.clone.master) {
        return Err(MountError::MasterNotOpenable {
            master: req.clone.master.clone(),
            source,
        });
    }
    let kind = match std::fs::metadata(&req.mountpoint) {
        Ok(m) if m.is_dir() => MountKind::Directory,
        Ok(m) if m.is_file() => MountKind::File,
        Ok(_) => {
            return Err(MountError::MountpointKind {
                mountpoint: req.mountpoint.clone(),
            })
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(MountError::MountpointDead {
                mountpoint: req.mountpoint.clone(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(MountError::MountpointMissing {
                mountpoint: req.mountpoint.clone(),
            })
        }
        Err(source) => {
            return Err(MountError::MountpointUnusable {
                mountpoint: req.mountpoint.clone(),
                source,
            })
        }
    };
    if let Some(m) = mountinfo::mount_at(&req.mountpoint) {
        let occupant = match m.sidfs_state() {
            Some(state_dir) => Occupant::Clone { state_dir },
            None => Occupant::Other { fs_type: m.fs_type },
        };
        return Err(MountError::MountpointBusy {
            mountpoint: req.mountpoint.clone(),
            occupant,
        });
    }
    if same_file(&req.clone.master, &req.mountpoint) {
        return Err(MountError::MountpointIsMaster);
    }
    refuse_state_under_mountpoint(state_dir, &req.mountpoint)?;
    if !Path::new("/dev/fuse").exists() {
        return Err(MountError::NoFuseDevice);
    }
    Ok(kind)
}

/// Refuses a state directory that is the mountpoint or inside it: the mount would hide it, and
/// `sidfs status` and `sidfs umount` could not read its lock and metadata. Compares resolved
/// paths (symlinks, `..`), also for a state directory that does not exist yet.
fn refuse_state_under_mountpoint(state_dir: &Path, mountpoint: &Path) -> Result<(), MountError> {
    let Ok(mp) = std::fs::canonicalize(mountpoint) else {
        return Ok(());
    };
    let state = resolve_existing_prefix(state_dir);
    if state.starts_with(&mp) {
        return Err(MountError::StateUnderMountpoint {
            state_dir: state_dir.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
            same: state == mp,
        });
    }
    Ok(())
}

/// `path` with its longest existing prefix resolved (canonicalize) and the rest appended.
fn resolve_existing_prefix(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        match std::env::current_dir() {
            Ok(cwd) => cwd.join(path),
            Err(_) => path.to_path_buf(),
        }
    };
    let mut rest = Vec::new();
    let mut prefix = absolute.as_path();
    loop {
        if let Ok(resolved) = std::fs::canonicalize(prefix) {
            return rest.iter().rev().fold(resolved, |p, name| p.join(name));
        }
        match (prefix.parent(), prefix.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                prefix = parent;
            }
            _ => return absolute,
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::CloneSpec;
    use crate::testutil::TempDir;

    fn request(master: PathBuf, mountpoint: PathBuf) -> MountRequest {
        MountRequest {
            clone: CloneSpec {
                master,
                ..Default::default()
            },
            mountpoint,
            state: None,
            read_only: false,
            threads: 1,
            allow_other: false,
        }
    }

    /// Prove that each refusal before anything is created is its own variant, with the
    /// sentence the user has always read (docs/TROUBLESHOOTING.md quotes them).
    #[test]
    fn refusals_are_typed_and_keep_their_sentences() {
        let dir = TempDir::new("precheck");
        let state = dir.0.join("state");
        let master = dir.0.join("master.img");
        std::fs::write(&master, b"not a disk").unwrap();
        let mountpoint = dir.0.join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();

        let missing = dir.0.join("nowhere.img");
        let e = precheck(&request(missing.clone(), mountpoint.clone()), &state).unwrap_err();
        assert!(matches!(e, MountError::MasterMissing { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("master image {} does not exist", missing.display())
        );

        let e = precheck(&request(dir.0.clone(), mountpoint.clone()), &state).unwrap_err();
        assert!(matches!(e, MountError::MasterIsDirectory { .. }), "{e:?}");

        let absent = dir.0.join("absent");
        let e = precheck(&request(master.clone(), absent.clone()), &state).unwrap_err();
        assert!(matches!(e, MountError::MountpointMissing { .. }), "{e:?}");
        assert!(e.to_string().starts_with(&format!(
            "mountpoint {} does not exist; create a directory (mkdir -p)",
            absent.display()
        )));

        let e = precheck(&request(master.clone(), master.clone()), &state).unwrap_err();
        assert!(matches!(e, MountError::MountpointIsMaster), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the mountpoint cannot be the master image itself"
        );

        let inside = mountpoint.join("state");
        let e = precheck(&request(master, mountpoint.clone()), &inside).unwrap_err();
        match &e {
            MountError::StateUnderMountpoint { same, .. } => assert!(!same),
            other => panic!("expected StateUnderMountpoint, got {other:?}"),
        }
        assert!(e
            .to_string()
            .ends_with("(the mount would hide it): pass a --state outside it"));
    }
}
