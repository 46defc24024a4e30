//! `sidfs umount`: unmounting a clone and waiting until its daemon has synced the state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::MountError;
use crate::mountinfo;
use crate::overlay::state;

/// How long `umount` keeps retrying a mount the kernel reports busy before refusing.
const BUSY_GRACE: Duration = Duration::from_secs(3);
/// How long `umount` waits for the daemon's process to end once it released the state's lock.
const EXIT_GRACE: Duration = Duration::from_secs(3);

/// Unmounts the clone at `mountpoint` and waits for its process to finish syncing the delta.
pub fn unmount(mountpoint: &Path, timeout: Duration) -> Result<PathBuf, MountError> {
    let Some(entry) = mountinfo::mount_at(mountpoint) else {
        return Err(MountError::NotMounted {
            mountpoint: mountpoint.to_path_buf(),
        });
    };
    let Some(state_dir) = entry.sidfs_state() else {
        return Err(MountError::NotSidfs {
            mountpoint: mountpoint.to_path_buf(),
            fs_type: entry.fs_type,
        });
    };
    // The process to wait for is the one serving this mountpoint. After a kill -9 the state
    // may be served again elsewhere: when the lock's holder serves another mount of this state,
    // this one is dead and clearing it waits for nobody.
    let serves_elsewhere = |r: &state::LockRecord| {
        r.mountpoint.as_deref().is_some_and(|m| {
            m != entry.mountpoint.as_path()
                && mountinfo::mounts()
                    .iter()
                    .any(|o| o.mountpoint == m && o.sidfs_state().as_ref() == Some(&state_dir))
        })
    };
    let pid = state::lock_record(&state_dir)
        .filter(|r| !serves_elsewhere(r))
        .map(|r| r.pid);
    // A file closed a moment ago can keep the mount busy a little longer: the kernel finishes
    // its release after close() returns to the closer, and a clone of this clone (whose
    // daemon reads this disk as its master) may still be exiting. So "busy" is only believed
    // once it has lasted BUSY_GRACE.
    let busy_until = std::time::Instant::now() + BUSY_GRACE;
    loop {
        let out = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(&entry.mountpoint)
            .output();
        match out {
            Ok(o) if o.status.success() => break,
            Ok(o) => {
                let msg = String::from_utf8_lossy(&o.stderr);
                if msg.contains("busy") {
                    if std::time::Instant::now() < busy_until {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    return Err(MountError::Busy {
                        mountpoint: mountpoint.to_path_buf(),
                    });
                }
                return Err(MountError::Unmount {
                    mountpoint: mountpoint.to_path_buf(),
                    message: msg.trim().to_string(),
                });
            }
            Err(source) => return Err(MountError::NoFusermount { source }),
        }
    }
    if let Some(pid) = pid {
        let deadline = std::time::Instant::now() + timeout;
        while Path::new(&format!("/proc/{pid}")).exists()
            && state::lock_holder(&state_dir) == Some(pid)
        {
            if std::time::Instant::now() > deadline {
                return Err(MountError::StillSyncing {
                    mountpoint: mountpoint.to_path_buf(),
                    pid,
                    waited_secs: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The lock is released just before the daemon exits; let it finish closing its files
        // (its master may be another clone's disk, which the caller may unmount next). Bounded:
        // a pid reused by another process only costs this wait.
        let gone_by = std::time::Instant::now() + EXIT_GRACE;
        while Path::new(&format!("/proc/{pid}")).exists() && std::time::Instant::now() < gone_by {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The daemon is gone: it marked the state synced only if its final sync succeeded.
        match crate::overlay::DeltaStore::last_session_synced(&state_dir) {
            Ok(true) => {}
            Ok(false) => {
                return Err(MountError::SyncLost {
                    mountpoint: mountpoint.to_path_buf(),
                    pid,
                    state_dir,
                })
            }
            Err(source) => {
                return Err(MountError::SyncUnknown {
                    mountpoint: mountpoint.to_path_buf(),
                    pid,
                    source,
                })
            }
        }
    }
    Ok(state_dir)
}
