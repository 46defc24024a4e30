//! Mounting, unmounting and describing clones: the glue between the CLI, the clone state, the
//! overlay and the FUSE session. Every refusal is one sentence that says what to do.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{error, info};
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
/// nothing behind.
pub fn precheck(req: &MountRequest) -> Result<MountKind, MountError> {
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
        let hint = match m.sidfs_state() {
            Some(st) => format!("a sidfs clone (state {})", st.display()),
            None => format!("a {} file system", m.fs_type),
        };
        return fail(format!(
            "mountpoint {} is busy: {hint} is already mounted there; unmount it first (sidfs umount {})",
            req.mountpoint.display(),
            req.mountpoint.display()
        ));
    }
    if same_file(&req.clone.master, &req.mountpoint) {
        return fail("the mountpoint cannot be the master image itself");
    }
    if !Path::new("/dev/fuse").exists() {
        return fail("/dev/fuse is missing: load the FUSE module (modprobe fuse), or give the container the device (--device /dev/fuse)");
    }
    Ok(kind)
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

/// A clone ready to be served: state locked, delta open, mountpoint checked.
pub struct PreparedClone {
    pub state: CloneState,
    pub disk: Arc<CloneDisk>,
    pub kind: MountKind,
    pub info_json: Vec<u8>,
    pub created: bool,
}

pub fn prepare(req: &MountRequest, state_dir: &Path) -> Result<PreparedClone, MountError> {
    let kind = precheck(req)?;
    std::fs::create_dir_all(state_dir).map_err(|e| {
        MountError(format!(
            "cannot create state directory {}: {e}",
            state_dir.display()
        ))
    })?;
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
    Ok(PreparedClone {
        state,
        disk,
        kind,
        info_json,
        created,
    })
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
        state,
        disk,
        kind,
        info_json,
        ..
    } = prepared;
    block_termination_signals();
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!(
            "{}{}",
            mountinfo::SOURCE_PREFIX,
            state.dir().to_string_lossy()
        )),
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
    let fs = CloneFs::new(disk.clone(), kind, info_json);
    let mut session = match fuser::Session::new(fs, &req.mountpoint, &config) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("cannot mount {}: {e}", req.mountpoint.display());
            ready(Err(msg.clone()));
            return fail(msg);
        }
    };
    info!(
        "mounted clone of {} (seed {}) at {}, state {}",
        req.clone.master.display(),
        state.meta().seed,
        req.mountpoint.display(),
        state.dir().display()
    );
    ready(Ok(()));

    let mut unmounter = session.unmount_callable();
    std::thread::Builder::new()
        .name("sidfs-signals".into())
        .spawn(move || {
            let sig = wait_for_termination_signal();
            info!("signal {sig}: unmounting");
            if let Err(e) = unmounter.unmount() {
                error!("unmount on signal {sig} failed: {e}");
            }
        })
        .map_err(|e| MountError(format!("cannot start signal thread: {e}")))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let disk = disk.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("sidfs-flush".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    std::thread::park_timeout(BACKGROUND_SYNC);
                    if disk.delta().has_unsynced_map() {
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
    disk.sync()?;
    info!("unmounted {}; state synced", req.mountpoint.display());
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

fn wait_for_termination_signal() -> i32 {
    // SAFETY: as above; sigwait writes the received signal number into a local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
        sig
    }
}

/// Unmounts the clone at `mountpoint` and waits for its process to finish syncing the delta.
pub fn unmount(mountpoint: &Path, timeout: Duration) -> Result<PathBuf, MountError> {
    let Some(entry) = mountinfo::mount_at(mountpoint) else {
        return fail(format!("{} is not mounted", mountpoint.display()));
    };
    let Some(state_dir) = entry.sidfs_state() else {
        return fail(format!(
            "{} is a {} mount, not a sidfs clone; use umount",
            mountpoint.display(),
            entry.fs_type
        ));
    };
    let pid = state::lock_holder(&state_dir);
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
    }
    Ok(state_dir)
}

/// What `sidfs status` reports about a clone.
#[derive(Serialize)]
pub struct CloneStatus {
    pub state_dir: PathBuf,
    pub mountpoint: Option<PathBuf>,
    pub serving_pid: Option<u32>,
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
    let sidfs_mount =
        mountinfo::mount_at(target).and_then(|m| Some((m.sidfs_state()?, m.mountpoint)));
    let (state_dir, mountpoint) = match sidfs_mount {
        Some((st, mp)) => (st, Some(mp)),
        None => {
            let abs = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
            let mp = mountinfo::mounts()
                .into_iter()
                .find(|m| m.sidfs_state().as_deref() == Some(abs.as_path()))
                .map(|m| m.mountpoint);
            (abs, mp)
        }
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
        serving_pid: state::lock_holder(&state_dir),
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
