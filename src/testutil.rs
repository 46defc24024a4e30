//! Helpers shared by the unit tests that build NTFS volumes with real tools or read the real
//! Windows data: temporary directories, ntfs-3g mounts that always unmount, tool checks.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A file or folder of `../shared/realdata` (read where it lies, never copied into the repo).
pub(crate) fn realdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/realdata")
        .join(rel)
}

/// Runs `cmd args` with `stdin` as its standard input and its output discarded; it must succeed.
pub(crate) fn run_stdin(cmd: &str, args: &[&std::ffi::OsStr], stdin: &str) {
    use std::io::Write;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{cmd} {args:?} failed");
}

/// Copies the hive `source` (realdata is read-only) to `target` and edits it with `hivexsh -w`
/// running `script` (a commit is appended).
pub(crate) fn hivexsh_edit(source: &Path, target: &Path, script: &str) {
    std::fs::write(target, std::fs::read(source).unwrap()).unwrap();
    run_stdin(
        "hivexsh",
        &["-w".as_ref(), target.as_os_str()],
        &format!("{script}commit\n"),
    );
}

/// A temporary directory, unique per process, tag and call; removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sidfs-unit-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An ntfs-3g mount, unmounted by path on drop (also when the test fails).
pub(crate) struct NtfsMount(pub PathBuf);

impl NtfsMount {
    pub(crate) fn new(image: &Path, dir: &Path, read_only: bool) -> NtfsMount {
        std::fs::create_dir_all(dir).unwrap();
        let mut args = vec![];
        if read_only {
            args.extend(["-o", "ro"]);
        }
        args.extend([image.to_str().unwrap(), dir.to_str().unwrap()]);
        run("ntfs-3g", &args);
        NtfsMount(dir.to_path_buf())
    }

    /// Writes a file (creating its folders) through the mount.
    pub(crate) fn write(&self, rel: &str, content: &[u8]) {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

impl Drop for NtfsMount {
    fn drop(&mut self) {
        unmount_fuse(&self.0);
    }
}

/// Unmounts the FUSE mount at `dir`, retrying for up to 3 s while it is busy (a file just closed,
/// a child process of a parallel test that has not yet exec'd), then lazily, so that a test never
/// leaves a mount behind.
pub(crate) fn unmount_fuse(dir: &Path) {
    for _ in 0..30 {
        let done = Command::new("fusermount3")
            .arg("-u")
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if done || !is_mount_point(dir) {
            wait_for_ntfs3g(dir);
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(dir)
        .status();
    wait_for_ntfs3g(dir);
}

/// Waits (up to 20 s) until no ntfs-3g process names `dir`: `fusermount3 -u` returns before
/// ntfs-3g has written its last metadata, so a test must not read the image before then.
fn wait_for_ntfs3g(dir: &Path) {
    let want = dir.as_os_str().as_encoded_bytes();
    let serving = || {
        std::fs::read_dir("/proc").is_ok_and(|procs| {
            procs.flatten().any(|p| {
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                let mut args = cmdline.split(|&b| b == 0);
                args.next().is_some_and(|a| a.ends_with(b"ntfs-3g")) && args.any(|a| a == want)
            })
        })
    };
    for _ in 0..1000 {
        if !serving() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether `dir` is listed as a mount point in /proc/self/mounts.
fn is_mount_point(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines()
            .filter_map(|l| l.split(' ').nth(1))
            .any(|p| Path::new(p) == dir)
    })
}

/// Whether a command is on PATH.
pub(crate) fn tool_present(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Why tests that build volumes with `tools` and FUSE cannot run here, if they cannot.
pub(crate) fn missing_tools(tools: &[&str]) -> Option<String> {
    if let Some(tool) = tools.iter().find(|t| !tool_present(t)) {
        return Some(format!("{tool} is not installed"));
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is absent".into());
    }
    None
}

/// Runs a command that must succeed; returns its stdout.
pub(crate) fn run(cmd: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
