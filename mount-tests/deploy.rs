//! Deployment paths, through real mounts and the tools a user would use: `dd` of a read-only
//! mounted clone onto a block device (a loop device over a sparse file stands in for the disk),
//! `sidfs export` onto a file and onto a device, and NBD serving of the mounted disk with
//! qemu-nbd (TCP on loopback and a unix socket) and nbdkit, compared with `qemu-img compare`.
//! Every path must give exactly the bytes of `sidfs export` for the same master and seed.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A read-write loop device over a whole file; detached on drop.
struct RwLoop(String);

impl RwLoop {
    fn new(file: &Path) -> RwLoop {
        let dev = ok(Command::new("losetup").args(["-f", "--show"]).arg(file));
        RwLoop(dev.trim().to_string())
    }
}

impl Drop for RwLoop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).output();
    }
}

/// A file of `size` bytes filled with 0x5a, so that a copy which skips zeros shows up.
fn garbage_disk(path: &Path, size: u64) {
    let f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5au8; 4 << 20];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(chunk.len() as u64) as usize;
        f.write_all_at(&chunk[..n], at).unwrap();
        at += n as u64;
    }
    f.sync_all().unwrap();
}

fn export(master: &Path, out: &Path, seed: u64) -> std::process::Output {
    let out = run(sidfs()
        .arg("export")
        .arg(master)
        .arg(out)
        .args(["--seed", &seed.to_string()])
        .stdin(Stdio::null()));
    assert!(
        out.status.success(),
        "sidfs export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Prove that `dd` of a clone mounted with `--read-only` onto a block device gives exactly the
/// bytes of `sidfs export` (and of `sidfs export` straight onto the device, which must
/// overwrite every byte, zeros included), that the read-only mount refuses writes, that export
/// prints nothing on stderr when it is not a terminal, and that the master never changes.
#[test]
fn dd_of_a_read_only_clone_onto_a_disk_equals_export() {
    for tool in ["losetup", "dd", "cmp"] {
        if !have_tool(tool) {
            return;
        }
    }
    let s = Scratch::new("deploy-dd");
    let (master, manifest) = build_master(&s, "master.img", &[]);
    let before = sha256(&master);
    let size = manifest["disk"]["size"].as_u64().unwrap();

    let exported = s.path("export.img");
    let out = export(&master, &exported, 7);
    assert!(
        out.stderr.is_empty(),
        "export wrote to a non-terminal stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::metadata(&exported).unwrap().len(), size);

    let m = Mounted::new(
        &master,
        &s.mkdir("mp"),
        7,
        &s.path("state"),
        &["--read-only"],
    );
    // A stray write cannot change a clone that is being copied.
    let write = std::fs::OpenOptions::new()
        .write(true)
        .open(m.disk())
        .and_then(|mut f| f.write_all(b"stray"));
    assert!(
        write.is_err(),
        "a --read-only mount accepted a write to its disk"
    );

    let target = s.path("target.raw");
    garbage_disk(&target, size);
    let dev = RwLoop::new(&target);
    ok(Command::new("dd")
        .arg(format!("if={}", m.disk().display()))
        .arg(format!("of={}", dev.0))
        .args(["bs=4M", "conv=fsync", "status=none"]));
    ok(Command::new("cmp").arg(&exported).arg(&dev.0));
    m.unmount();

    // `sidfs export` straight onto the device: every byte, over whatever was there.
    garbage_disk(&target, size);
    ok(Command::new("blockdev").args(["--flushbufs", &dev.0]));
    export(&master, Path::new(&dev.0), 7);
    ok(Command::new("cmp").arg(&exported).arg(&dev.0));
    drop(dev);
    ok(Command::new("cmp").arg(&exported).arg(&target));
    assert_eq!(sha256(&master), before, "the master must never change");
}

/// A server process killed by its PID when dropped.
struct Server {
    child: Option<Child>,
    name: &'static str,
}

impl Server {
    fn spawn(name: &'static str, cmd: &mut Command) -> Server {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Server {
            child: Some(child),
            name,
        }
    }

    /// Waits until `ready()` (the server listens), failing if the server exits first.
    fn wait_ready(&mut self, ready: impl Fn() -> bool) {
        let started = Instant::now();
        while !ready() {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(
                    self.child.as_mut().unwrap().stderr.as_mut().unwrap(),
                    &mut err,
                );
                panic!("{} exited before listening ({st}): {err}", self.name);
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{} did not listen within 20 s",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `limit` for the server to exit on its own; true if it did, with success.
    fn exits_by_itself(&mut self, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// True when something listens on 127.0.0.1:`port` (read from /proc, without connecting: a
/// non-persistent qemu-nbd serves exactly one client).
fn tcp_listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == "0A"
        })
}

/// True when a unix socket at `path` is listening (flag __SO_ACCEPTCON in /proc/net/unix).
fn unix_listening(path: &Path) -> bool {
    let p = path.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 7 && f[7] == p && f[3] == "00010000"
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `qemu-img compare` of an NBD URI against the export; must say the images are identical.
fn compare(uri: &str, exported: &Path) {
    let out = ok(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw", uri])
        .arg(exported));
    assert_eq!(out, "Images are identical.\n", "{uri}");
}

fn qemu_nbd(disk: &Path, listen: &[String]) -> Server {
    Server::spawn(
        "qemu-nbd",
        Command::new("qemu-nbd")
            .args(["--read-only", "--format=raw", "--cache=none"])
            .args(listen)
            .arg(disk),
    )
}

/// Prove that a read-only mounted clone served over NBD by qemu-nbd (TCP on loopback and a unix
/// socket) and by nbdkit is, for `qemu-img compare`, identical to `sidfs export` of the same
/// master and seed; that qemu-nbd without `--persistent` exits by itself after its client; and
/// that the master never changes.
#[test]
fn nbd_export_of_a_mounted_clone_equals_export() {
    for tool in ["qemu-nbd", "qemu-img", "nbdkit"] {
        if !have_tool(tool) {
            return;
        }
    }
    let s = Scratch::new("deploy-nbd");
    let (master, _) = build_master(&s, "master.img", &[]);
    let before = sha256(&master);
    let exported = s.path("export.img");
    export(&master, &exported, 9);
    let m = Mounted::new(
        &master,
        &s.mkdir("mp"),
        9,
        &s.path("state"),
        &["--read-only"],
    );

    let port = free_port();
    let mut tcp = qemu_nbd(
        &m.disk(),
        &[
            "--bind=127.0.0.1".to_string(),
            format!("--port={port}"),
            "--export-name=clone9".to_string(),
        ],
    );
    tcp.wait_ready(|| tcp_listening(port));
    compare(&format!("nbd://127.0.0.1:{port}/clone9"), &exported);
    assert!(
        tcp.exits_by_itself(Duration::from_secs(10)),
        "qemu-nbd without --persistent did not exit cleanly after its client"
    );

    let sock: PathBuf = s.path("nbd.sock");
    let mut unix = qemu_nbd(&m.disk(), &[format!("--socket={}", sock.display())]);
    unix.wait_ready(|| unix_listening(&sock));
    compare(
        &format!("nbd+unix:///?socket={}", sock.display()),
        &exported,
    );
    assert!(unix.exits_by_itself(Duration::from_secs(10)));

    // nbdkit's file plugin, read-only, running the comparison as its captive client.
    let out = run(Command::new("nbdkit")
        .args(["--readonly", "--unix", "-", "file"])
        .arg(format!("file={}", m.disk().display()))
        .arg("--run")
        .arg(format!(
            "qemu-img compare -f raw -F raw \"$uri\" {}",
            exported.display()
        )));
    assert!(
        out.status.success(),
        "nbdkit --run qemu-img compare: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Images are identical.\n"
    );

    drop(tcp);
    drop(unix);
    m.unmount();
    assert_eq!(sha256(&master), before, "the master must never change");
}

/// Prove that docs/CLI.md, the CLI reference, is exactly what the binary's `--help` says
/// (regenerate it with `scripts/gen-cli-doc` after changing an option).
#[test]
fn cli_reference_matches_the_binary() {
    let doc = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CLI.md");
    let doc = std::fs::read_to_string(doc).expect("docs/CLI.md");
    for cmd in [
        "", "mount", "umount", "status", "export", "verify", "inspect",
    ] {
        let mut c = crate::common::sidfs();
        if !cmd.is_empty() {
            c.arg(cmd);
        }
        let help = crate::common::ok(c.arg("--help"));
        assert!(
            doc.contains(&help),
            "docs/CLI.md is out of date for `sidfs {cmd} --help`: run scripts/gen-cli-doc"
        );
    }
}
