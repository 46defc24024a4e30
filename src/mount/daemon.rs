//! The mount daemon: `sidfs mount` (without `--foreground`) starts this binary again with
//! `--foreground` in a new session, logging to the state directory, and waits on a pipe until
//! the daemon reports the mount ready or the one-line reason it failed.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{MountError, MountRequest};
use crate::overlay::state;

/// The environment variable through which a background daemon learns the fd of its readiness pipe.
const READY_FD_ENV: &str = "SIDFS_READY_FD";
const READY_FD: i32 = 3;
/// How long `sidfs mount` waits for the background daemon to report the mount ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the log is reopened when a failed first mount of the same state removed the
/// directory between creating it and opening the log.
const LOG_OPEN_ATTEMPTS: u32 = 4;

/// The readiness fd a starting `sidfs mount` handed to this process (the daemon), if any.
pub fn ready_fd_from_env() -> Option<i32> {
    std::env::var(READY_FD_ENV).ok()?.parse().ok()
}

/// Serves the clone in this process. With a readiness fd (the background case), the outcome of
/// mounting is written there for the waiting parent.
pub fn serve_foreground(
    req: &MountRequest,
    state_dir: &Path,
    ready_fd: Option<i32>,
) -> Result<(), MountError> {
    let mut ready_pipe = ready_fd.map(|fd| {
        // SAFETY: the parent handed us this fd (dup2'd to READY_FD before exec) and nothing else
        // in this process owns it.
        std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) })
    });
    let mut report = |outcome: Result<(), &MountError>| {
        let line = match &outcome {
            Ok(()) => "ok\n".to_string(),
            Err(e) => format!("error: {e}\n"),
        };
        match ready_pipe.take() {
            Some(mut p) => {
                let _ = p.write_all(line.as_bytes());
            }
            None => {
                if outcome.is_ok() {
                    eprintln!(
                        "sidfs: serving the clone at {} (state {}); Ctrl-C or `sidfs umount` to unmount",
                        req.mountpoint.display(),
                        state_dir.display()
                    );
                }
            }
        }
    };
    let prepared = match super::prepare(req, state_dir) {
        Ok(p) => p,
        Err(e) => {
            report(Err(&e));
            return Err(e);
        }
    };
    super::serve(req, prepared, report)
}

/// Creates the state directory (0700) and opens its log for appending (0600).
fn open_log(state_dir: &Path, log_path: &Path) -> Result<std::fs::File, MountError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        state::create_private_dir(state_dir)?;
        match state::open_private(
            log_path,
            std::fs::OpenOptions::new().create(true).append(true),
        ) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < LOG_OPEN_ATTEMPTS => {}
            Err(source) => {
                return Err(MountError::Log {
                    path: log_path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Starts the clone's daemon (this binary with `args`, which must make it serve in the
/// foreground with `--state state_dir`, in a new session, logging to the state directory) and
/// waits until it reports the mount ready (its pid) or failed. Nothing is removed here: the
/// daemon claims the state directory before it reads it, so of parallel mounts of one state
/// exactly one proceeds, and only that one cleans up after a first mount that failed.
pub fn start_daemon(args: &[OsString], state_dir: &Path) -> Result<u32, MountError> {
    let log_path = state_dir.join(state::LOG_FILE);
    let log = open_log(state_dir, &log_path)?;
    let (mut reader, writer) = std::io::pipe().map_err(|source| MountError::Pipe { source })?;
    let exe = std::env::current_exe().map_err(|source| MountError::OwnExecutable { source })?;
    let mut cmd = Command::new(exe);
    cmd.args(args);
    let log_err = log.try_clone().map_err(|source| MountError::Log {
        path: log_path.clone(),
        source,
    })?;
    cmd.env(READY_FD_ENV, READY_FD.to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let wfd = writer.as_raw_fd();
    // SAFETY: runs in the forked child before exec; setsid, dup2 and fcntl are async-signal-safe
    // and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if wfd == READY_FD {
                let flags = libc::fcntl(wfd, libc::F_GETFD);
                libc::fcntl(wfd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(wfd, READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|source| MountError::DaemonSpawn { source })?;
    drop(writer);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = reader.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let answer = match rx.recv_timeout(READY_TIMEOUT) {
        Ok(s) => s,
        Err(_) => {
            let _ = child.kill();
            return Err(MountError::DaemonTimeout {
                waited_secs: READY_TIMEOUT.as_secs(),
                log: log_path,
            });
        }
    };
    let answer = answer.lines().next().unwrap_or("").to_string();
    if answer == "ok" {
        return Ok(child.id());
    }
    let _ = child.wait();
    Err(daemon_answer_error(&answer, log_path))
}

/// The error for a daemon's answer other than "ok": its own refusal, or that it ended silently.
fn daemon_answer_error(answer: &str, log: PathBuf) -> MountError {
    match answer.strip_prefix("error: ") {
        Some(message) => MountError::DaemonFailed {
            message: message.to_string(),
        },
        None => MountError::DaemonExited { log },
    }
}
