//! Mounting, unmounting and describing clones: the glue between the CLI, the clone state, the
//! overlay and the FUSE session. Every refusal is one sentence that says what to do.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{error, info, warn};
use serde::Serialize;

use crate::clone::IDENTITY_STATE_KEY;
pub use crate::clone::{default_state_dir, open_clone, state_root, CloneSpec, OpenClone};
use crate::fuse::{CloneFs, MountKind};
use crate::mountinfo;
use crate::overlay::{state, CloneDisk, CloneState};

/// How often unsynced block-map changes are written back even without fsync, bounding what a
/// crash of the host can lose of writes the guest never synced.
const BACKGROUND_SYNC: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct MountRequest {
    pub clone: CloneSpec,
    pub mountpoint: PathBuf,
    pub state: Option<PathBuf>,
    pub read_only: bool,
    pub threads: usize,
    pub allow_other: bool,
}

/// A failure to mount, already phrased for the user.
#[derive(Debug)]
pub struct MountError(pub String);

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MountError {}

impl From<crate::overlay::OverlayError> for MountError {
    fn from(e: crate::overlay::OverlayError) -> Self {
        MountError(e.to_string())
    }
}

fn fail<T>(msg: impl Into<String>) -> Result<T, MountError> {
    Err(MountError(msg.into()))
}

/// The checks that can be made before anything is created, so that a refused mount leaves
/// nothing behind. `state_dir` is where the clone's state is (or will be).
pub fn precheck(req: &MountRequest, state_dir: &Path) -> Result<MountKind, MountError> {
    match std::fs::metadata(&req.clone.master) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fail(format!(
                "master image {} does not exist",
                req.clone.master.display()
            ))
        }
        Err(e) => {
            return fail(format!(
                "cannot read master image {}: {e}",
                req.clone.master.display()
            ))
        }
        Ok(m) if m.is_dir() => {
            return fail(format!(
                "master {} is a directory; give the disk image file (or block device)",
                req.clone.master.display()
            ))
        }
        Ok(m) if !(m.is_file() || m.file_type().is_block_device()) => {
            return fail(format!(
                "master {} is not a regular file or block device",
                req.clone.master.display()
            ))
        }
        Ok(_) => {}
    }
    if let Err(e) = std::fs::File::open(&req.clone.master) {
        return fail(format!(
            "cannot open master image {} for reading: {e}",
            req.clone.master.display()
        ));
    }
    let kind = match std::fs::metadata(&req.mountpoint) {
        Ok(m) if m.is_dir() => MountKind::Directory,
        Ok(m) if m.is_file() => MountKind::File,
        Ok(_) => {
            return fail(format!(
                "mountpoint {} must be a directory or a regular file",
                req.mountpoint.display()
            ))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return fail(format!(
                "mountpoint {} holds a dead sidfs mount (its process was killed); clear it with: sidfs umount {}",
                req.mountpoint.display(),
                req.mountpoint.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fail(format!(
                "mountpoint {} does not exist; create a directory (mkdir -p) to get disk.img inside it, or an empty file (touch) to make the mount the disk itself",
                req.mountpoint.display()
            ))
        }
        Err(e) => return fail(format!("cannot use mountpoint {}: {e}", req.mountpoint.display())),
    };
    if let Some(m) = mountinfo::mount_at(&req.mountpoint) {
        let (hint, command) = match m.sidfs_state() {
            Some(st) => (
                format!("a sidfs clone (state {})", st.display()),
                "sidfs umount",
            ),
            None => (format!("a {} file system", m.fs_type), "umount"),
        };
        return fail(format!(
            "mountpoint {} is busy: {hint} is already mounted there; unmount it first ({command} {}) or pick another mountpoint",
            req.mountpoint.display(),
            req.mountpoint.display()
        ));
    }
    if same_file(&req.clone.master, &req.mountpoint) {
        return fail("the mountpoint cannot be the master image itself");
    }
    refuse_state_under_mountpoint(state_dir, &req.mountpoint)?;
    if !Path::new("/dev/fuse").exists() {
        return fail("/dev/fuse is missing: load the FUSE module (modprobe fuse), or give the container the device (--device /dev/fuse)");
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
        return fail(format!(
            "state directory {} is {} the mountpoint {} (the mount would hide it): pass a --state outside it",
            state_dir.display(),
            if state == mp { "the same as" } else { "inside" },
            mountpoint.display()
        ));
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

/// What `clone.json` shows inside a mounted clone.
#[derive(Serialize)]
pub struct CloneInfo<'a> {
    pub sidfs_version: &'static str,
    pub seed: u64,
    pub seed_was_random: bool,
    pub master: &'a state::MasterRecord,
    pub master_path_now: PathBuf,
    pub state_dir: PathBuf,
    pub block_size: u32,
    pub disk_size: u64,
    pub read_only: bool,
    pub patch_stage: &'static str,
    pub old_sid: Option<String>,
    pub new_sid: Option<String>,
    /// The computer name, MachineGuid, WSUS and MSDTC ids: old and new values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<crate::identity::IdentityChoice>,
}

/// A clone ready to be served: state claimed and locked, delta open, mountpoint checked.
pub struct PreparedClone {
    /// Held until the process ends, so no other mount of this state starts meanwhile.
    pub claim: state::StateClaim,
    pub state: CloneState,
    pub disk: Arc<CloneDisk>,
    pub kind: MountKind,
    pub info_json: Vec<u8>,
    pub created: bool,
}

/// Checks the request, claims the state directory and opens the clone. A mount that finds the
/// state claimed by another refuses as "in use" and touches nothing; a first mount that fails
/// removes what it created (under its claim, so never another mount's files).
pub fn prepare(req: &MountRequest, state_dir: &Path) -> Result<PreparedClone, MountError> {
    let kind = match precheck(req, state_dir) {
        Ok(kind) => kind,
        Err(e) => {
            discard_unserved(state_dir);
            return Err(e);
        }
    };
    let claim = state::StateClaim::take(state_dir)?;
    let fresh = !claim.holds_clone();
    match open_claimed(req, state_dir) {
        Ok((state, disk, info_json, created)) => Ok(PreparedClone {
            claim,
            state,
            disk,
            kind,
            info_json,
            created,
        }),
        Err(e) => {
            if fresh {
                claim.discard();
            }
            Err(e)
        }
    }
}

/// Removes an existing state directory that holds no clone (the log and lock of a background
/// mount refused before it claimed the directory), unless another mount has claimed it.
fn discard_unserved(state_dir: &Path) {
    if !state_dir.is_dir() {
        return;
    }
    if let Ok(claim) = state::StateClaim::take(state_dir) {
        if !claim.holds_clone() {
            claim.discard();
        }
    }
}

/// [`prepare`] once the state directory is claimed: the clone, its disk, its clone.json and
/// whether it was just created.
fn open_claimed(
    req: &MountRequest,
    state_dir: &Path,
) -> Result<(CloneState, Arc<CloneDisk>, Vec<u8>, bool), MountError> {
    let state_dir = &std::fs::canonicalize(state_dir).map_err(|e| {
        MountError(format!(
            "cannot resolve state directory {}: {e}",
            state_dir.display()
        ))
    })?;
    let OpenClone {
        state,
        disk,
        sids,
        identity,
        created,
        ..
    } = open_clone(&req.clone, state_dir, req.read_only)?;
    let meta = state.meta();
    let info = CloneInfo {
        sidfs_version: env!("CARGO_PKG_VERSION"),
        seed: meta.seed,
        seed_was_random: meta.seed_was_random,
        master: &meta.master,
        master_path_now: std::fs::canonicalize(&req.clone.master)
            .unwrap_or_else(|_| req.clone.master.clone()),
        state_dir: state.dir().to_path_buf(),
        block_size: meta.block_size,
        disk_size: disk.size(),
        read_only: req.read_only,
        patch_stage: disk.stage_name(),
        old_sid: sids.map(|c| c.old.to_string()),
        new_sid: sids.map(|c| c.new.to_string()),
        identity,
    };
    let mut info_json = serde_json::to_vec_pretty(&info).expect("clone info serializes");
    info_json.push(b'\n');
    Ok((state, disk, info_json, created))
}

/// Mounts the prepared clone and serves it until it is unmounted (or SIGINT/SIGTERM/SIGHUP
/// arrive, which unmount it cleanly). `ready` is called once: with `Ok` when the kernel mount
/// exists, or with the error that prevented it.
pub fn serve(
    req: &MountRequest,
    prepared: PreparedClone,
    ready: impl FnOnce(Result<(), String>),
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
    if let Err(e) = disk.delta().begin_session() {
        let msg = format!("cannot mount {}: {e}", req.mountpoint.display());
        ready(Err(msg.clone()));
        return fail(msg);
    }
    let fs = CloneFs::new(disk.clone(), kind, info_json);
    let session = match fuser::Session::new(fs, &req.mountpoint, &config) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!(
                "cannot mount {}: {}",
                req.mountpoint.display(),
                e.to_string().trim()
            );
            // A first mount that never served leaves nothing behind.
            drop(disk);
            drop(state);
            if created {
                claim.discard();
            }
            ready(Err(msg.clone()));
            return fail(msg);
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
            .map_err(|e| MountError(format!("cannot start signal thread: {e}")))?;
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
            .map_err(|e| MountError(format!("cannot start flush thread: {e}")))?
    };
    let result = session.run();
    stop.store(true, Ordering::Release);
    flusher.thread().unpark();
    let _ = flusher.join();
    // The final sync; only its success marks the state synced, and the lock (which `sidfs
    // umount` waits for) is released after the marker is written.
    if let Err(e) = disk.delta().end_session() {
        error!("final sync of the clone's state failed: {e}");
        drop(state);
        return fail(format!(
            "unmounted {}, but the final sync of its state failed: {e}",
            req.mountpoint.display()
        ));
    }
    info!("unmounted {}; state synced", req.mountpoint.display());
    // The claim goes first: `sidfs umount` returns once the lock is free, and a mount started
    // right then must find the directory unclaimed.
    drop(claim);
    drop(state);
    result.map_err(|e| MountError(format!("serving {} failed: {e}", req.mountpoint.display())))
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread it starts afterwards, so
/// that only the signal thread receives them (via sigwait) and turns them into a clean unmount.
fn block_termination_signals() {
    // SAFETY: sigset manipulation on a local, initialized set; pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
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
    // SAFETY: as above; sigwait and sigtimedwait read a local set and write locals only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
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
fn unmount_mountpoint(mountpoint: &Path, lazy: bool) -> std::io::Result<()> {
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

/// Unmounts the clone at `mountpoint` and waits for its process to finish syncing the delta.
pub fn unmount(mountpoint: &Path, timeout: Duration) -> Result<PathBuf, MountError> {
    let Some(entry) = mountinfo::mount_at(mountpoint) else {
        return fail(format!("{} is not mounted", mountpoint.display()));
    };
    let Some(state_dir) = entry.sidfs_state() else {
        return fail(format!(
            "{} is a {} mount, not a sidfs clone: unmount it with umount {}",
            mountpoint.display(),
            entry.fs_type,
            mountpoint.display()
        ));
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
    let out = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(&entry.mountpoint)
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let msg = String::from_utf8_lossy(&o.stderr);
            if msg.contains("busy") {
                return fail(format!(
                    "{} is busy: a program still has the disk open (find it with: fuser -vm {}); close it and retry",
                    mountpoint.display(),
                    mountpoint.display()
                ));
            }
            return fail(format!(
                "cannot unmount {}: {}",
                mountpoint.display(),
                msg.trim()
            ));
        }
        Err(e) => return fail(format!("cannot run fusermount3 (install fuse3): {e}")),
    }
    if let Some(pid) = pid {
        let deadline = std::time::Instant::now() + timeout;
        while Path::new(&format!("/proc/{pid}")).exists()
            && state::lock_holder(&state_dir) == Some(pid)
        {
            if std::time::Instant::now() > deadline {
                return fail(format!(
                    "unmounted {}, but sidfs process {pid} is still syncing the state after {}s; it will finish on its own",
                    mountpoint.display(),
                    timeout.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The daemon is gone: it marked the state synced only if its final sync succeeded.
        match crate::overlay::DeltaStore::last_session_synced(&state_dir) {
            Ok(true) => {}
            Ok(false) => {
                return fail(format!(
                    "unmounted {}, but sidfs process {pid} could not sync the clone's state at the end, so the guest's writes since its last successful fsync are lost (its log: {}): free space on or repair the file system of {}, then mount the clone again",
                    mountpoint.display(),
                    state_dir.join(state::LOG_FILE).display(),
                    state_dir.display()
                ))
            }
            Err(e) => {
                return fail(format!(
                    "unmounted {}, but cannot tell whether sidfs process {pid} synced the clone's state: {e}",
                    mountpoint.display()
                ))
            }
        }
    }
    Ok(state_dir)
}

/// What `sidfs status` reports about a clone.
#[derive(Serialize)]
pub struct CloneStatus {
    pub state_dir: PathBuf,
    /// Where the clone is mounted: the mountpoint its live process serves, or a dead mount.
    pub mountpoint: Option<PathBuf>,
    pub serving_pid: Option<u32>,
    /// Other mounts of this state whose process is gone (kill -9): `sidfs umount` clears them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dead_mounts: Vec<PathBuf>,
    pub seed: u64,
    pub old_sid: Option<String>,
    pub new_sid: Option<String>,
    /// The clone's identifiers as recorded in state.json.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<serde_json::Value>,
    pub master: state::MasterRecord,
    pub block_size: u32,
    pub delta_blocks: u64,
    pub delta_bytes: u64,
    pub bytes_on_disk: u64,
}

/// Status of a clone given its state directory or its mountpoint.
pub fn status(target: &Path) -> Result<CloneStatus, MountError> {
    let state_dir = match mountinfo::mount_at(target).and_then(|m| m.sidfs_state()) {
        Some(st) => st,
        None => std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf()),
    };
    let mut mounted: Vec<PathBuf> = mountinfo::mounts()
        .into_iter()
        .filter(|m| m.sidfs_state().as_deref() == Some(state_dir.as_path()))
        .map(|m| m.mountpoint)
        .collect();
    let holder = state::lock_record(&state_dir);
    // The live mount is the one the lock's holder recorded; any other is dead. A holder that
    // recorded none (an export, or a release that did not record it) leaves the first.
    let live = match holder.as_ref().and_then(|r| r.mountpoint.as_ref()) {
        Some(mp) => mounted
            .iter()
            .position(|m| m == mp)
            .map(|i| mounted.remove(i)),
        None if mounted.is_empty() => None,
        None => Some(mounted.remove(0)),
    };
    let (mountpoint, dead_mounts) = match live {
        Some(mp) => (Some(mp), mounted),
        None if holder.is_none() && !mounted.is_empty() => (Some(mounted.remove(0)), mounted),
        None => (None, mounted),
    };
    let state_file = state_dir.join(state::STATE_FILE);
    if !state_file.exists() {
        return fail(format!(
            "{} is neither a mounted sidfs clone nor a clone state directory",
            target.display()
        ));
    }
    let meta = state::read_meta(&state_file)?;
    let (delta_blocks, bytes_on_disk) = read_delta_usage(&state_dir)?;
    Ok(CloneStatus {
        mountpoint,
        serving_pid: holder.map(|r| r.pid),
        dead_mounts,
        seed: meta.seed,
        old_sid: meta.old_sid.clone(),
        new_sid: meta.new_sid.clone(),
        identity: meta.extra.get(IDENTITY_STATE_KEY).cloned(),
        block_size: meta.block_size,
        delta_blocks,
        delta_bytes: delta_blocks * u64::from(meta.block_size),
        bytes_on_disk,
        master: meta.master,
        state_dir,
    })
}

/// Counts the blocks in the on-disk map (what survives a crash right now) and the bytes the state
/// occupies, without taking the clone's lock.
fn read_delta_usage(dir: &Path) -> Result<(u64, u64), MountError> {
    use std::os::unix::fs::MetadataExt;
    let map = std::fs::read(dir.join(crate::overlay::delta::MAP_FILE))
        .map_err(|e| MountError(format!("cannot read block map in {}: {e}", dir.display())))?;
    let blocks = map
        .get(4096..)
        .unwrap_or(&[])
        .iter()
        .map(|b| u64::from(b.count_ones()))
        .sum();
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir)
        .map_err(|e| MountError(format!("cannot list {}: {e}", dir.display())))?
    {
        if let Ok(m) = entry.and_then(|e| e.metadata()) {
            bytes += m.blocks() * 512;
        }
    }
    Ok((blocks, bytes))
}
