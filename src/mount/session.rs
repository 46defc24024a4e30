//! Serving a prepared clone: the FUSE session, the background flush, and the signal thread that
//! turns SIGINT, SIGTERM and SIGHUP into a clean unmount.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{error, info, warn};

use super::{MountError, MountRequest, PreparedClone};
use crate::fuse::CloneFs;
use crate::mountinfo;

/// How often unsynced block-map changes are written back even without fsync, bounding what a
/// crash of the host can lose of writes the guest never synced.
const BACKGROUND_SYNC: Duration = Duration::from_secs(5);

/// Mounts the prepared clone and serves it until it is unmounted (or SIGINT/SIGTERM/SIGHUP
/// arrive, which unmount it cleanly). `ready` is called once: with `Ok` when the kernel mount
/// exists, or with the error that prevented it.
pub fn serve(
    req: &MountRequest,
    prepared: PreparedClone,
    ready: impl FnOnce(Result<(), &MountError>),
) -> Result<(), MountError> {
    let PreparedClone {
        claim,
        state,
        disk,
        kind,
        info_json,
        created,
    } = prepared;
    block_termination_signals();
    let mountpoint = mountinfo::canonical_mountpoint(&req.mountpoint);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        // The only option that carries user data; encoded so that it holds no comma.
        fuser::MountOption::FSName(mountinfo::source_for(state.dir())),
        fuser::MountOption::Subtype("sidfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoAtime,
        if req.read_only {
            fuser::MountOption::RO
        } else {
            fuser::MountOption::RW
        },
    ];
    if req.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(req.threads.max(1));
    config.clone_fd = true;
    // Until the final sync below succeeds, the state reads as not synced (for `sidfs umount`).
    if let Err(source) = disk.delta().begin_session() {
        let e = MountError::SessionStart {
            mountpoint: req.mountpoint.clone(),
            source,
        };
        ready(Err(&e));
        return Err(e);
    }
    let fs = CloneFs::new(disk.clone(), kind, info_json);
    let session = match fuser::Session::new(fs, &req.mountpoint, &config) {
        Ok(s) => s,
        Err(source) => {
            let e = MountError::Kernel {
                mountpoint: req.mountpoint.clone(),
                source,
            };
            // A first mount that never served leaves nothing behind.
            drop(disk);
            drop(state);
            if created {
                claim.discard();
            }
            ready(Err(&e));
            return Err(e);
        }
    };
    if let Err(e) = state.record_mountpoint(&mountpoint) {
        error!("{e}");
    }
    info!(
        "mounted clone of {} (seed {}) at {}, state {}",
        req.clone.master.display(),
        state.meta().seed,
        req.mountpoint.display(),
        state.dir().display()
    );
    ready(Ok(()));

    {
        let (mountpoint, state_dir) = (mountpoint.clone(), state.dir().to_path_buf());
        std::thread::Builder::new()
            .name("sidfs-signals".into())
            .spawn(move || handle_termination_signals(&mountpoint, &state_dir))
            .map_err(|source| MountError::Thread {
                name: "signal",
                source,
            })?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let disk = disk.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("sidfs-flush".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    std::thread::park_timeout(BACKGROUND_SYNC);
                    if disk.delta().has_unsynced_changes() {
                        if let Err(e) = disk.sync() {
                            error!("background sync: {e}");
                        }
                    }
                }
            })
            .map_err(|source| MountError::Thread {
                name: "flush",
                source,
            })?
    };
    let result = session.run();
    stop.store(true, Ordering::Release);
    flusher.thread().unpark();
    let _ = flusher.join();
    // The final sync; only its success marks the state synced, and the lock (which `sidfs
    // umount` waits for) is released after the marker is written.
    if let Err(source) = disk.delta().end_session() {
        error!("final sync of the clone's state failed: {source}");
        drop(state);
        return Err(MountError::FinalSync {
            mountpoint: req.mountpoint.clone(),
            source,
        });
    }
    info!("unmounted {}; state synced", req.mountpoint.display());
    // The claim goes first: `sidfs umount` returns once the lock is free, and a mount started
    // right then must find the directory unclaimed.
    drop(claim);
    drop(state);
    result.map_err(|source| MountError::Serving {
        mountpoint: req.mountpoint.clone(),
        source,
    })
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread it starts afterwards, so
/// that only the signal thread receives them (via sigwait) and turns them into a clean unmount.
fn block_termination_signals() {
    let set = termination_signals();
    // SAFETY: pthread_sigmask on this thread, reading an initialized local set.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// The set of SIGINT, SIGTERM and SIGHUP.
fn termination_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set, zeroed and then initialized by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// How often a clean unmount refused as busy (a program has the disk open) is tried again.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// The signal thread. SIGINT, SIGTERM or SIGHUP unmount the clone. While a program still has
/// the disk open the unmount is busy: it is logged and tried again every second, so the clone
/// unmounts as soon as the disk is closed; a further signal meanwhile detaches the mount at
/// once (lazy unmount: the mountpoint is free, programs that have the disk open keep using it,
/// and the daemon syncs and exits when the last of them closes it). Signals keep being handled
/// whatever happens.
fn handle_termination_signals(mountpoint: &Path, state_dir: &Path) {
    let mut waiting_since: Option<i32> = None;
    loop {
        let timeout = waiting_since.map(|_| BUSY_RETRY);
        let signal = wait_for_termination_signal(timeout);
        let still_ours = || {
            mountinfo::mount_at(mountpoint).and_then(|m| m.sidfs_state())
                == Some(state_dir.to_path_buf())
        };
        match (signal, waiting_since) {
            (Some(sig), None) => {
                info!("signal {sig}: unmounting {}", mountpoint.display());
                match unmount_mountpoint(mountpoint, false) {
                    Ok(()) => return,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        warn!(
                            "signal {sig}: {} is busy (a program still has the disk open; fuser -vm {} shows it): it unmounts as soon as the disk is closed; send the signal again to detach it now",
                            mountpoint.display(),
                            mountpoint.display()
                        );
                        waiting_since = Some(sig);
                    }
                    Err(e) => error!("unmount on signal {sig} failed: {e}"),
                }
            }
            (Some(sig), Some(_)) => {
                info!(
                    "signal {sig} again: detaching {} now (lazy unmount); the clone is served until the disk is closed",
                    mountpoint.display()
                );
                match unmount_mountpoint(mountpoint, true) {
                    Ok(()) => return,
                    Err(e) => error!("lazy unmount on signal {sig} failed: {e}"),
                }
            }
            (None, Some(sig)) => {
                if !still_ours() {
                    return;
                }
                if unmount_mountpoint(mountpoint, false).is_ok() {
                    info!(
                        "signal {sig}: {} unmounted once the disk was closed",
                        mountpoint.display()
                    );
                    return;
                }
            }
            (None, None) => {}
        }
    }
}

/// Waits for SIGINT, SIGTERM or SIGHUP (blocked in every thread); `None` when `timeout` passed.
fn wait_for_termination_signal(timeout: Option<Duration>) -> Option<i32> {
    let set = termination_signals();
    // SAFETY: sigwait and sigtimedwait read an initialized local set and write locals only.
    unsafe {
        match timeout {
            None => {
                let mut sig = 0;
                (libc::sigwait(&set, &mut sig) == 0).then_some(sig)
            }
            Some(t) => {
                let ts = libc::timespec {
                    tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
                    tv_nsec: libc::c_long::from(t.subsec_nanos()),
                };
                let sig = libc::sigtimedwait(&set, std::ptr::null_mut(), &ts);
                (sig > 0).then_some(sig)
            }
        }
    }
}

/// Unmounts the FUSE mount at `mountpoint` (lazily: detached at once, gone when the last user
/// closes it): umount2 as root, fusermount3 otherwise. A busy mount is `EBUSY`.
pub(super) fn unmount_mountpoint(mountpoint: &Path, lazy: bool) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let path = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let flags = if lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: a NUL-terminated path that lives across the call.
        if unsafe { libc::umount2(path.as_ptr(), flags) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        return Ok(());
    }
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd.arg(mountpoint).output()?;
    if out.status.success() {
        return Ok(());
    }
    let msg = String::from_utf8_lossy(&out.stderr);
    if msg.contains("busy") {
        return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
    }
    Err(std::io::Error::other(msg.trim().to_string()))
}
