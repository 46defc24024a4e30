//! The mount daemon's lifecycle through the real binary: parallel and killed first mounts, the
//! state directory's privacy and location, commas in its path, status and umount after kill -9,
//! signals while the disk is open, and the messages of refusals around them.

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const MIB: u64 = 1 << 20;

/// How long a test waits for something the daemon does on its own (a liveness bound, not a
/// performance assertion: it only turns a hang into a failure).
const PATIENCE: Duration = Duration::from_secs(60);

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The /proc/self/mountinfo line of the mount at `mp`, if any.
fn mountinfo_line(mp: &Path) -> Option<String> {
    let want = std::fs::canonicalize(mp.parent().unwrap())
        .unwrap()
        .join(mp.file_name().unwrap());
    let want = want.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(want.as_str()))
        .map(str::to_string)
}

fn is_mounted(mp: &Path) -> bool {
    mountinfo_line(mp).is_some()
}

/// The per-mount and the superblock options of the mount at `mp` (not its source).
fn mount_options(mp: &Path) -> String {
    let line = mountinfo_line(mp).expect("mounted");
    let (left, right) = line.split_once(" - ").unwrap();
    let per_mount = left.split(' ').nth(5).unwrap();
    let super_opts = right.split(' ').nth(2).unwrap_or("");
    format!("{per_mount},{super_opts}")
}

/// Whether process `pid` runs (a zombie waiting for a reaper counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: &str) {
    ok(Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string()));
}

fn status_json(target: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(sidfs().arg("status").arg("--json").arg(target))).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A mount made outside `Mounted` (by a command under test); `sidfs umount` on drop, else a lazy
/// fusermount3 -u.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        if !is_mounted(&self.0) {
            return;
        }
        let cleared = sidfs()
            .arg("umount")
            .arg(&self.0)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !cleared {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.0)
                .output();
            let _ = Command::new("umount").arg("-l").arg(&self.0).output();
        }
    }
}

/// The pid the `sidfs mount` output names ("mounted clone at X (pid N, state S)").
fn pid_in(out: &Output) -> u32 {
    let text = String::from_utf8_lossy(&out.stdout);
    let after = text
        .split("(pid ")
        .nth(1)
        .expect("a pid in the mount output");
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn write_synced(disk: &Path, data: &[u8], offset: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    f.write_all_at(data, offset).unwrap();
    f.sync_all().unwrap();
}

fn read_at(disk: &Path, len: usize, offset: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::fs::File::open(disk)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

/// Issue 10 item 11. Prove that parallel first mounts of one new state cannot hurt each other:
/// in each of several rounds, 8 mounts of one new state at 8 mountpoints start at once; exactly
/// one succeeds, the others refuse with one line saying the state is in use, the winner's delta
/// is the live file (not a deleted one), and a write + fsync through it survives a remount.
#[test]
fn parallel_first_mounts_of_one_state_have_one_winner() {
    let s = Scratch::new("dm-parallel");
    let master = s.path("master.img");
    sparse_master(&master, 16 * MIB, &[(0, 1 << 20)], 31);
    for round in 0..5u64 {
        let state = s.path(&format!("state{round}"));
        let mps: Vec<PathBuf> = (0..8)
            .map(|i| s.mkdir(&format!("r{round}-mp{i}")))
            .collect();
        let outs: Vec<Output> = std::thread::scope(|scope| {
            let handles: Vec<_> = mps
                .iter()
                .map(|mp| {
                    let (master, state) = (&master, &state);
                    scope.spawn(move || mount_cmd(master, mp, 1, state, &["--keep-sid"]))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let guards: Vec<MountGuard> = mps.iter().map(|m| MountGuard(m.clone())).collect();
        let winners: Vec<usize> = (0..8).filter(|&i| outs[i].status.success()).collect();
        let report: Vec<String> = outs
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {report:#?}");
        let winner = winners[0];
        for (i, out) in outs.iter().enumerate().filter(|&(i, _)| i != winner) {
            let err = one_line_error(out);
            assert!(err.contains("in use"), "round {round}, mount {i}: {err}");
            assert!(!is_mounted(&mps[i]), "a loser mounted");
        }
        let pid = pid_in(&outs[winner]);
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
            let target = std::fs::read_link(fd.unwrap().path()).unwrap_or_default();
            assert!(
                !target.to_string_lossy().contains("(deleted)"),
                "round {round}: the winner serves a deleted file: {}",
                target.display()
            );
        }
        for name in ["state.json", "delta.bin", "map.bin", "lock"] {
            assert!(state.join(name).exists(), "round {round}: {name} is gone");
        }
        let pattern = format!("round {round} acknowledged").into_bytes();
        let disk = mps[winner].join("disk.img");
        write_synced(&disk, &pattern, 12345 + round * 4096);
        ok(sidfs().arg("umount").arg(&mps[winner]));
        drop(guards);
        let m = Mounted::new(&master, &mps[0], 1, &state, &["--keep-sid"]);
        assert_eq!(
            read_at(&m.disk(), pattern.len(), 12345 + round * 4096),
            pattern,
            "round {round}: an acknowledged write was lost"
        );
        m.unmount();
    }
}

/// Issue 10 item 9. Prove that delta files without state.json (a first mount killed before it
/// wrote state.json) do not block the clone: a mount removes them and starts afresh, both for
/// such leftovers made by hand and after first mounts killed with SIGKILL at many moments of
/// their first milliseconds.
#[test]
fn first_mount_killed_early_is_recovered() {
    let s = Scratch::new("dm-killed");
    let master = s.path("master.img");
    sparse_master(&master, 16 * MIB, &[(0, 1 << 20)], 32);
    let mp = s.mkdir("mp");

    // The leftovers exactly: lock, delta.bin, map.bin, a state.json.tmp, no state.json.
    let state = s.path("state-leftover");
    Mounted::new(&master, &mp, 1, &state, &["--keep-sid"]).unmount();
    std::fs::rename(state.join("state.json"), state.join("state.json.tmp")).unwrap();
    let m = Mounted::new(&master, &mp, 1, &state, &["--keep-sid"]);
    assert_eq!(m.status()["seed"], 1);
    assert_eq!(m.status()["delta_blocks"], 0);
    assert!(!state.join("state.json.tmp").exists());
    m.unmount();

    for round in 0..16u64 {
        let state = s.path(&format!("state{round}"));
        let mut child = sidfs()
            .arg("mount")
            .arg(&master)
            .arg(&mp)
            .args(["--foreground", "--keep-sid", "--seed", "1", "--state"])
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(round * 3));
        let _ = child.kill();
        let _ = child.wait();
        // A kill after the mount existed leaves a dead mount behind.
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&mp)
            .output();
        let m = Mounted::new(&master, &mp, 1, &state, &["--keep-sid"]);
        write_synced(&m.disk(), b"after the crash", 4096);
        m.unmount();
        let m = Mounted::new(&master, &mp, 1, &state, &["--keep-sid"]);
        assert_eq!(read_at(&m.disk(), 15, 4096), b"after the crash");
        m.unmount();
    }
}

/// Issue 10 item 16. Prove that the state directory is 0700 and every file in it 0600 even
/// under umask 000, and that a state made readable by others (0755/0644) is tightened on mount.
#[test]
fn state_directory_is_private_whatever_the_umask() {
    let s = Scratch::new("dm-private");
    let master = s.path("master.img");
    sparse_master(&master, 8 * MIB, &[(0, 1 << 20)], 33);
    let mp = s.mkdir("mp");
    let state = s.path("state");
    let mount_umask_000 = || {
        ok(Command::new("sh")
            .arg("-c")
            .arg("umask 000; exec \"$@\"")
            .arg("sh")
            .arg(SIDFS)
            .arg("mount")
            .arg(&master)
            .arg(&mp)
            .args(["--keep-sid", "--seed", "2", "--state"])
            .arg(&state));
        MountGuard(mp.clone())
    };
    let files = ["state.json", "delta.bin", "map.bin", "lock", "sidfs.log"];
    let check = |when: &str| {
        assert_eq!(mode(&state), 0o700, "{when}: state directory");
        for f in files {
            assert_eq!(mode(&state.join(f)), 0o600, "{when}: {f}");
        }
    };
    let guard = mount_umask_000();
    check("new clone, umask 000");
    ok(sidfs().arg("umount").arg(&mp));
    drop(guard);
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in files {
        std::fs::set_permissions(state.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let guard = mount_umask_000();
    check("remount of a state readable by others");
    ok(sidfs().arg("umount").arg(&mp));
    drop(guard);
}

/// Runs `sidfs ARGS` as user nobody (fusermount3 mounts for it), with HOME in `home`.
fn as_nobody(home: &Path, args: &[&std::ffi::OsStr]) -> Output {
    run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "env"])
        .arg(format!("HOME={}", home.display()))
        .arg(SIDFS)
        .args(args))
}

/// Issue 10 item 17. Prove that a state path with commas (as the default name of a master called
/// `win10,v2.img` has) and with `,allow_other` in it mounts, as root and as a user (through
/// fusermount3, which splits options at commas), that no allow_other reaches the mount's
/// options, and that status and umount find the state from the mount table.
#[test]
fn commas_in_the_state_path_are_not_mount_options() {
    let s = Scratch::new("dm-commas");
    let master = s.path("win10,v2.img");
    sparse_master(&master, 8 * MIB, &[(0, 1 << 20)], 34);

    let mp = s.mkdir("mp-root");
    let state = s.path("win10,v2-1a2b3c4d-seed1,allow_other");
    let m = Mounted::new(&master, &mp, 1, &state, &["--keep-sid"]);
    assert!(
        !mount_options(&mp).contains("allow_other"),
        "{}",
        mount_options(&mp)
    );
    let st = status_json(&mp);
    assert_eq!(st["state_dir"].as_str().unwrap(), state.to_str().unwrap());
    assert_eq!(
        status_json(&state)["mountpoint"].as_str().unwrap(),
        mp.to_str().unwrap()
    );
    m.unmount();

    if !have_tool("setpriv") {
        return;
    }
    let home = s.mkdir("nobody");
    let mp = s.mkdir("nobody/mp");
    let state = home.join("st,allow_other");
    ok(Command::new("chown").args(["-R", "65534:65534"]).arg(&home));
    let out = as_nobody(
        &home,
        &[
            "mount".as_ref(),
            master.as_os_str(),
            mp.as_os_str(),
            "--keep-sid".as_ref(),
            "--seed".as_ref(),
            "1".as_ref(),
            "--state".as_ref(),
            state.as_os_str(),
        ],
    );
    let _guard = MountGuard(mp.clone());
    assert!(
        out.status.success(),
        "a user's mount with a comma in the state path failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !mount_options(&mp).contains("allow_other"),
        "{}",
        mount_options(&mp)
    );
    let st = as_nobody(
        &home,
        &["status".as_ref(), "--json".as_ref(), mp.as_os_str()],
    );
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["state_dir"].as_str().unwrap(), state.to_str().unwrap());
    let out = as_nobody(&home, &["umount".as_ref(), mp.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&mp));
}

/// Issue 10 item 18. Prove that after kill -9 of a daemon and a mount of its state at another
/// mountpoint, status shows the live mountpoint with the live pid (and the old one as dead),
/// and `sidfs umount OLD` just clears the dead mount, leaving the live one serving.
#[test]
fn status_and_umount_tell_the_live_mount_from_a_dead_one() {
    let s = Scratch::new("dm-dead");
    let master = s.path("master.img");
    sparse_master(&master, 8 * MIB, &[(0, 1 << 20)], 35);
    let (old_mp, new_mp) = (s.mkdir("old"), s.mkdir("new"));
    let state = s.path("state");
    let a = Mounted::new(&master, &old_mp, 4, &state, &["--keep-sid"]);
    let old_pid = a.pid();
    signal(old_pid, "KILL");
    wait_for("the killed daemon is gone", || !alive(old_pid));
    a.forget();
    let _old_guard = MountGuard(old_mp.clone());

    let b = Mounted::new(&master, &new_mp, 4, &state, &["--keep-sid"]);
    let new_pid = b.pid();
    for target in [&state, &old_mp, &new_mp] {
        let st = status_json(target);
        assert_eq!(
            st["mountpoint"].as_str(),
            new_mp.to_str(),
            "status {}: {st}",
            target.display()
        );
        assert_eq!(st["serving_pid"].as_u64(), Some(u64::from(new_pid)));
        assert_eq!(st["dead_mounts"][0].as_str(), old_mp.to_str(), "{st}");
    }
    let text = ok(sidfs().arg("status").arg(&state));
    assert!(
        text.contains(&format!("dead mount:   {}", old_mp.display())),
        "{text}"
    );

    let out = run(sidfs().arg("umount").arg(&old_mp));
    assert!(
        out.status.success(),
        "umount of the dead mountpoint: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&old_mp));
    assert!(is_mounted(&new_mp) && alive(new_pid));
    write_synced(&b.disk(), b"still served", 0);
    assert_eq!(read_at(&b.disk(), 12, 0), b"still served");
    assert!(status_json(&state)["dead_mounts"].is_null());
    b.unmount();
}

/// Issue 10 item 19. Prove that signals keep being handled while the disk is open: SIGTERM with
/// disk.img open logs a busy unmount and keeps serving; a second SIGTERM detaches the mount at
/// once while the open disk keeps working; the daemon exits once it is closed, and every
/// acknowledged write survives. And with one SIGTERM, closing the disk lets it unmount.
#[test]
fn sigterm_while_the_disk_is_open_keeps_handling_signals() {
    let s = Scratch::new("dm-sigterm");
    let master = s.path("master.img");
    sparse_master(&master, 8 * MIB, &[(0, 1 << 20)], 36);
    let mp = s.mkdir("mp");
    let state = s.path("state");
    let log = state.join("sidfs.log");
    let busy_lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("busy"))
            .count()
    };

    let m = Mounted::new(&master, &mp, 6, &state, &["--keep-sid"]);
    let pid = m.pid();
    let disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.disk())
        .unwrap();
    disk.write_all_at(b"before the signal", 0).unwrap();
    disk.sync_all().unwrap();
    signal(pid, "TERM");
    wait_for("the daemon logs that the unmount is busy", || {
        busy_lines() >= 1
    });
    assert!(is_mounted(&mp) && alive(pid), "a busy clone stays mounted");
    signal(pid, "TERM");
    wait_for("a second SIGTERM detaches the mount", || !is_mounted(&mp));
    assert!(
        alive(pid),
        "the daemon serves the open disk until it is closed"
    );
    disk.write_all_at(b"after the detach", 8192).unwrap();
    disk.sync_all().unwrap();
    drop(disk);
    wait_for("the daemon exits once the disk is closed", || !alive(pid));
    m.forget();

    let m = Mounted::new(&master, &mp, 6, &state, &["--keep-sid"]);
    assert_eq!(read_at(&m.disk(), 17, 0), b"before the signal");
    assert_eq!(read_at(&m.disk(), 16, 8192), b"after the detach");
    let pid = m.pid();
    let disk = std::fs::File::open(m.disk()).unwrap();
    let before = busy_lines();
    signal(pid, "TERM");
    wait_for("the daemon logs that the unmount is busy", || {
        busy_lines() > before
    });
    assert!(is_mounted(&mp));
    drop(disk);
    wait_for("the clone unmounts once the disk is closed", || {
        !is_mounted(&mp) && !alive(pid)
    });
    m.forget();
}

/// Mount output that must be a refusal; a mount that happened anyway is undone first.
fn refused(out: &Output, mp: &Path) -> String {
    if out.status.success() {
        drop(MountGuard(mp.to_path_buf()));
    }
    one_line_error(out)
}

/// Issue 10 item 20. Prove that a --state equal to the mountpoint or inside it (also through a
/// symlink or `..`) is refused with one line, and nothing is mounted or created.
#[test]
fn state_inside_the_mountpoint_is_refused() {
    let s = Scratch::new("dm-inside");
    let master = s.path("master.img");
    sparse_master(&master, 8 * MIB, &[(0, 1 << 20)], 37);
    let mp = s.mkdir("mp");
    let link = s.path("link");
    std::os::unix::fs::symlink(&mp, &link).unwrap();
    for state in [
        mp.clone(),
        mp.join("state"),
        link.join("state"),
        s.path("mp/../mp/deeper/state"),
    ] {
        let err = refused(&mount_cmd(&master, &mp, 1, &state, &["--keep-sid"]), &mp);
        assert!(
            err.contains("mountpoint") && err.contains("--state"),
            "{}: {err}",
            state.display()
        );
        assert!(!is_mounted(&mp));
        assert_eq!(
            std::fs::read_dir(&mp).unwrap().count(),
            0,
            "created {state:?}"
        );
    }
    let file_mp = s.path("disk.img");
    std::fs::write(&file_mp, b"").unwrap();
    let err = refused(
        &mount_cmd(&master, &file_mp, 1, &file_mp, &["--keep-sid"]),
        &file_mp,
    );
    assert!(err.contains("mountpoint"), "{err}");
}

/// Issue 10 item 21. Prove the messages: a data-disk clone remounted with another --old-sid
/// names the SID it was made with and says to pass it (no "restore the master"); usage errors
/// exit 2 as --help says; a busy mountpoint holding a tmpfs suggests umount, not sidfs umount.
#[test]
fn messages_name_the_right_values_and_commands() {
    let s = Scratch::new("dm-messages");

    if have_tool("mkntfs") {
        let disk = s.path("data.img");
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(16 * MIB)
            .unwrap();
        ok(Command::new("mkntfs").args(["-F", "-q", "-Q"]).arg(&disk));
        let mp = s.mkdir("mp-data");
        let state = s.path("state-data");
        let made_with = "S-1-5-21-1111111111-2222222222-3333333333";
        let other = "S-1-5-21-1444444444-2555555555-3666666666";
        Mounted::new(&disk, &mp, 1, &state, &["--old-sid", made_with]).unmount();
        let err = refused(
            &mount_cmd(&disk, &mp, 1, &state, &["--old-sid", other]),
            &mp,
        );
        assert!(
            err.contains(made_with) && err.contains("--state"),
            "names the SID the clone was made with, and another --state: {err}"
        );
        assert!(!err.contains("restore the master"), "{err}");
    }

    let out = run(sidfs().args(["mount", "--no-such-option"]));
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let help = ok(sidfs().arg("--help"));
    assert!(help.contains("2 usage error"), "--help documents exit 2");
    let cli = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CLI.md")).unwrap();
    assert!(cli.contains("2 usage error"));

    let master = s.path("master.img");
    sparse_master(&master, 8 * MIB, &[(0, 1 << 20)], 38);
    let mp = s.mkdir("mp-tmpfs");
    ok(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "sidfs-test-tmpfs"])
        .arg(&mp));
    struct Tmpfs(PathBuf);
    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).output();
        }
    }
    let tmpfs = Tmpfs(mp.clone());
    let err = one_line_error(&mount_cmd(
        &master,
        &mp,
        1,
        &s.path("state-t"),
        &["--keep-sid"],
    ));
    assert!(err.contains("busy"), "{err}");
    assert!(
        err.contains(&format!("(umount {})", mp.display())) && !err.contains("sidfs umount"),
        "suggests umount for a tmpfs: {err}"
    );
    let err = one_line_error(&run(sidfs().arg("umount").arg(&mp)));
    assert!(err.contains(&format!("umount {}", mp.display())), "{err}");
    drop(tmpfs);
}

/// Prove that `sidfs umount` does not refuse a disk that was closed a moment ago: a program
/// that holds disk.img open and exits half a second after the umount started (as a VM that is
/// shutting down, or the daemon of a clone of this clone) lets the umount succeed; one that
/// keeps it open is still refused as busy, in one line. The old umount refused at once.
#[test]
fn umount_waits_briefly_for_a_disk_that_is_being_closed() {
    let s = Scratch::new("dm-closing");
    let master = s.path("master.img");
    sparse_master(&master, 8 * MIB, &[(0, 1 << 20)], 37);
    let mp = s.mkdir("mp");
    let state = s.path("state");
    let m = Mounted::new(&master, &mp, 7, &state, &["--keep-sid"]);
    let disk = m.disk();
    let holder = |secs: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("exec 3<\"$0\"; exec sleep {secs}"))
            .arg(&disk)
            .spawn()
            .unwrap()
    };
    // Open for good: refused, in one line, and the clone keeps serving.
    let mut long = holder("30");
    wait_for("the holder has the disk open", || {
        std::fs::read_dir(format!("/proc/{}/fd", long.id()))
            .map(|d| d.count() > 3)
            .unwrap_or(false)
    });
    let out = sidfs().arg("umount").arg(&mp).output().unwrap();
    let still_mounted = is_mounted(&mp);
    // The holder goes before any assertion, so a failure leaves nothing mounted behind.
    long.kill().unwrap();
    long.wait().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "umount of a disk held open must fail"
    );
    assert!(
        err.contains("is busy") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert!(still_mounted);
    // Closed half a second after the umount started: the umount succeeds.
    let mut short = holder("0.5");
    wait_for("the holder has the disk open", || {
        std::fs::read_dir(format!("/proc/{}/fd", short.id()))
            .map(|d| d.count() > 3)
            .unwrap_or(false)
    });
    m.unmount();
    short.wait().unwrap();
    assert!(!is_mounted(&mp));
}
