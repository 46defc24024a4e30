//! Boot tests: a real guest boots from a mounted clone's `disk.img` in qemu.
//!
//! No Windows image can be shipped, so `scripts/build-boot-master` builds a master that really
//! boots (syslinux, a Debian kernel, a busybox initramfs) next to the test-master builder's
//! Windows NTFS volume. Its guest mounts that volume read-write with the kernel's ntfs3 driver,
//! prints the machine SID it reads from `Windows/Logs/SidfsDemo/sid-ascii.txt` on the serial
//! console, writes `guest-wrote.txt` with a fresh per-boot token, syncs and powers off. These
//! tests prove with it that a booted clone sees its own new SID and never the master's, that the
//! guest's writes go through qemu (page cache or O_DIRECT) into the clone and survive a
//! remount, that clones of one master boot side by side, and that the master never changes.
//!
//! KVM is used when /dev/kvm exists and a probe boot gets as far as the guest's init (some
//! hosts expose a /dev/kvm that cannot run a BIOS guest); otherwise TCG.
//! `SIDFS_QEMU_ACCEL=kvm|tcg` forces one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::*;

const QEMU: &str = "qemu-system-x86_64";
/// Every line the guest means for the host starts with this (scripts/testmaster/guest-init).
const GUEST: &str = "SIDFS-GUEST ";
/// What the guest writes into the Windows volume, with its boot token and the SID it saw.
const WROTE: &str = "guest-wrote.txt";

/// A qemu process, killed by its PID when dropped: a failing test never leaves a VM behind.
struct Vm {
    child: Option<Child>,
    name: String,
    console: PathBuf,
    stderr: PathBuf,
    started: Instant,
}

/// How a guest run ended.
struct VmRun {
    status: ExitStatus,
    console: String,
    stderr: String,
    seconds: f64,
}

impl Vm {
    /// Boots `disk` (a raw disk, no -kernel: the disk boots itself) with the serial console in
    /// `<dir>/<name>.console`.
    fn start(dir: &Path, name: &str, disk: &Path, cache: &str, accel: &str, snapshot: bool) -> Vm {
        let console = dir.join(format!("{name}.console"));
        let stderr = dir.join(format!("{name}.stderr"));
        let mut drive = format!("file={},format=raw,cache={cache}", disk.display());
        if snapshot {
            drive.push_str(",snapshot=on");
        }
        let child = Command::new(QEMU)
            .args(["-accel", accel, "-m", "256", "-nographic", "-no-reboot"])
            .args(["-monitor", "none", "-serial"])
            .arg(format!("file:{}", console.display()))
            .arg("-drive")
            .arg(drive)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {QEMU}: {e}"));
        Vm {
            child: Some(child),
            name: name.to_string(),
            console,
            stderr,
            started: Instant::now(),
        }
    }

    fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    /// The exit status if qemu has exited.
    fn poll(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    /// Waits for qemu to exit on its own (the guest powers off); `limit` after its start the VM is killed
    /// by its PID and the test fails with the console so far.
    fn wait(mut self, limit: Duration) -> VmRun {
        let started = self.started;
        loop {
            if let Some(status) = self.poll() {
                self.child = None;
                return VmRun {
                    status,
                    console: self.console(),
                    stderr: self.stderr(),
                    seconds: started.elapsed().as_secs_f64(),
                };
            }
            if started.elapsed() > limit {
                let (console, stderr) = (self.console(), self.stderr());
                drop(self);
                panic!(
                    "VM timed out after {limit:?}, killed\nconsole:\n{console}\nstderr:\n{stderr}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            eprintln!("killing VM {} (pid {})", self.name, child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The accelerator: KVM when /dev/kvm opens and a probe boot of `master` (on a throwaway
/// snapshot) reaches the guest's init, else TCG. Decided once per test process.
fn accel(s: &Scratch, master: &Path) -> &'static str {
    static ACCEL: OnceLock<&'static str> = OnceLock::new();
    ACCEL.get_or_init(|| {
        match std::env::var("SIDFS_QEMU_ACCEL").as_deref() {
            Ok("kvm") => return "kvm",
            Ok("tcg") => return "tcg",
            _ => {}
        }
        let kvm_opens = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if !kvm_opens {
            eprintln!("boot tests: /dev/kvm is not usable, using TCG");
            return "tcg";
        }
        let mut probe = Vm::start(&s.dir, "kvm-probe", master, "writeback", "kvm", true);
        let started = Instant::now();
        let verdict = loop {
            if probe.console().contains(&format!("{GUEST}boot ")) {
                break Ok(());
            }
            if probe.stderr().contains("KVM internal error") {
                break Err("KVM internal error".to_string());
            }
            if let Some(status) = probe.poll() {
                probe.child = None;
                break Err(format!("qemu exited ({status}): {}", probe.stderr()));
            }
            if started.elapsed() > Duration::from_secs(30) {
                break Err("no guest init after 30 s".to_string());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        drop(probe);
        match verdict {
            Ok(()) => {
                eprintln!("boot tests: using KVM");
                "kvm"
            }
            Err(why) => {
                eprintln!("boot tests: /dev/kvm cannot boot a BIOS guest ({why}), using TCG");
                "tcg"
            }
        }
    })
}

/// How long one guest run may take: a KVM boot takes seconds, a TCG one tens of seconds on a
/// busy host.
fn limit(accel: &str) -> Duration {
    if accel == "kvm" {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(600)
    }
}

fn tools_present() -> bool {
    [QEMU, "syslinux", "mkfs.fat", "ntfs-3g", "losetup"]
        .iter()
        .all(|t| have_tool(t))
}

/// Builds the boot master in `s`; returns its path and manifest.
fn boot_master(s: &Scratch) -> (PathBuf, serde_json::Value) {
    let out = s.path("boot-master.img");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-boot-master");
    ok(Command::new(script).arg(&out));
    let manifest = read_all(&PathBuf::from(format!("{}.json", out.display())));
    (out, serde_json::from_slice(&manifest).unwrap())
}

/// Checks a finished guest run: qemu exited cleanly after the guest powered off, the guest
/// saw `want` as the machine SID and none of `never` anywhere; returns the boot token of the
/// guest's write.
fn check_run(what: &str, run: &VmRun, want: &str, never: &[&str]) -> String {
    let lines: Vec<&str> = run
        .console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter_map(|l| l.find(GUEST).map(|i| &l[i + GUEST.len()..]))
        .collect();
    let dump = format!(
        "{what}: console:\n{}\nqemu stderr:\n{}",
        run.console, run.stderr
    );
    assert!(run.status.success(), "{what}: qemu {}\n{dump}", run.status);
    assert!(
        !lines.iter().any(|l| l.starts_with("FAIL")),
        "the guest failed\n{dump}"
    );
    assert!(
        lines.contains(&format!("machine-sid {want}").as_str()),
        "the guest did not see the clone's SID {want}\n{dump}"
    );
    for sid in never {
        assert!(!run.console.contains(sid), "the guest saw {sid}\n{dump}");
    }
    assert_eq!(lines.last(), Some(&"poweroff"), "{dump}");
    let token = lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("wrote {WROTE} boot ")))
        .unwrap_or_else(|| panic!("the guest did not report its write\n{dump}"));
    eprintln!("{what}: qemu exit seen {:.1} s after start", run.seconds);
    token.to_string()
}

/// Reads the guest's file from the clone's Windows volume with ntfs-3g, through a read-only
/// loop device on the mounted disk.
fn guest_file(s: &Scratch, m: &Mounted, manifest: &serde_json::Value, tag: &str) -> String {
    let (start, size) = windows_partition(manifest);
    let dev = LoopDev::new(&m.disk(), start, size);
    let nm = NtfsMount::new(&dev.0, &s.path(&format!("ntfs-{tag}")));
    let text = std::fs::read_to_string(nm.0.join(WROTE))
        .unwrap_or_else(|e| panic!("{tag}: {WROTE} is not in the clone's volume: {e}"));
    drop(nm);
    drop(dev);
    text
}

fn expected_file(token: &str, sid: &str) -> String {
    format!("written by the sidfs boot-master guest\nboot {token}\nmachine-sid {sid}\n")
}

/// Prove that a clone boots from its mounted disk, once through qemu's page cache
/// (`cache=writeback`) and once with O_DIRECT through FUSE (`cache=none`): each time the guest
/// sees the clone's new SID and never the master's, and after unmount and remount the file the
/// guest wrote is in the clone's NTFS volume (with that boot's token) while the master is
/// unchanged. The second boot runs on the volume the first guest modified.
#[test]
fn clone_boots_sees_its_own_sid_and_keeps_the_guests_write() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("boot");
    let (master, manifest) = boot_master(&s);
    let before = sha256(&master);
    let old = manifest["machine_sid"].as_str().unwrap().to_string();
    let accel = accel(&s, &master);
    let mp = s.mkdir("mp");
    let state = s.path("state");
    let mut sid = None;
    for cache in ["writeback", "none"] {
        let m = Mounted::new(&master, &mp, 7, &state, &[]);
        let new = m.new_sid();
        assert_ne!(new, old);
        assert_eq!(sid.get_or_insert_with(|| new.clone()), &new);
        let run = Vm::start(&s.dir, cache, &m.disk(), cache, accel, false).wait(limit(accel));
        let token = check_run(&format!("{accel} cache={cache}"), &run, &new, &[&old]);
        m.unmount();
        let m = Mounted::new(&master, &mp, 7, &state, &[]);
        assert_eq!(
            guest_file(&s, &m, &manifest, cache),
            expected_file(&token, &new),
            "cache={cache}: the guest's write is not in the remounted clone"
        );
        m.unmount();
    }
    assert_eq!(sha256(&master), before, "the master must never change");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&s.dir.to_string_lossy().into_owned()));
}

/// Prove that two clones of one master boot at the same time, one with `cache=none` and one
/// with `cache=writeback`, and each guest sees its own SID, never the other's or the master's;
/// each keeps its own write, and the master is unchanged.
#[test]
fn two_clones_boot_side_by_side_each_with_its_own_sid() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("boot-pair");
    let (master, manifest) = boot_master(&s);
    let before = sha256(&master);
    let old = manifest["machine_sid"].as_str().unwrap().to_string();
    let accel = accel(&s, &master);
    let seeds = [21u64, 22];
    let clones: Vec<Mounted> = seeds
        .iter()
        .map(|&seed| {
            let mp = s.mkdir(&format!("mp{seed}"));
            Mounted::new(&master, &mp, seed, &s.path(&format!("state{seed}")), &[])
        })
        .collect();
    let sids: Vec<String> = clones.iter().map(Mounted::new_sid).collect();
    assert_ne!(sids[0], sids[1], "two seeds gave the same SID");
    let caches = ["none", "writeback"];
    let vms: Vec<Vm> = clones
        .iter()
        .zip(caches)
        .zip(seeds)
        .map(|((m, cache), seed)| {
            Vm::start(
                &s.dir,
                &format!("pair{seed}"),
                &m.disk(),
                cache,
                accel,
                false,
            )
        })
        .collect();
    // Both VMs run at once; each is waited for (and killed by its PID on timeout or failure).
    let runs: Vec<VmRun> = vms.into_iter().map(|vm| vm.wait(limit(accel))).collect();
    let mut tokens = Vec::new();
    for i in 0..2 {
        let what = format!("{accel} clone seed {} cache={}", seeds[i], caches[i]);
        tokens.push(check_run(&what, &runs[i], &sids[i], &[&old, &sids[1 - i]]));
    }
    for m in clones {
        m.unmount();
    }
    for (i, seed) in seeds.iter().enumerate() {
        let m = Mounted::new(
            &master,
            &s.path(&format!("mp{seed}")),
            *seed,
            &s.path(&format!("state{seed}")),
            &[],
        );
        assert_eq!(
            guest_file(&s, &m, &manifest, &format!("pair{seed}")),
            expected_file(&tokens[i], &sids[i])
        );
        m.unmount();
    }
    assert_eq!(sha256(&master), before, "the master must never change");
}
