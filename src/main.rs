//! The `sidfs` command: parses arguments, sets up logging and calls the library.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use sidfs::mount::{self, CloneSpec, MountRequest};

/// Exit status of a command that failed or refused.
const EXIT_FAILURE: u8 = 1;
/// Exit status of `sidfs inspect` when the master must not be cloned.
const EXIT_REFUSED: u8 = 3;
/// The environment variable through which a background daemon learns the fd of its readiness pipe.
const READY_FD_ENV: &str = "SIDFS_READY_FD";
const READY_FD: i32 = 3;
/// How long `sidfs mount` waits for the background daemon to report the mount ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Parser)]
#[command(
    name = "sidfs",
    version,
    about = "Mount one read-only Windows master image as many clones, each a unique machine",
    long_about = "sidfs mounts a read-only Windows master disk image as a clone: a virtual disk \
that is the master byte for byte, except that the machine SID is replaced everywhere by a new one \
derived from the seed (registry hives, NTFS security descriptors, SID-named files, scheduled \
tasks...), lazily, as blocks are first read. Everything the clone writes lives in its own sparse \
delta in its state directory, so a clone costs megabytes, is ready in seconds, survives unmount, \
remount and crashes, and the master is never written.\n\n\
Typical use:\n  \
  sidfs inspect master.img                        # can it be cloned? machine SID, accounts, ...\n  \
  sidfs mount master.img /mnt/clone7 --seed 7     # /mnt/clone7/disk.img is the clone\n  \
  qemu-system-x86_64 -m 4G -drive file=/mnt/clone7/disk.img,format=raw,cache=none\n  \
  sidfs status /mnt/clone7\n  \
  sidfs umount /mnt/clone7\n  \
  sidfs export master.img clone7.img --seed 7     # the same clone as a sparse image file\n\n\
Exit status: 0 success; 1 error or refusal; 2 usage error (an unknown, missing or malformed \
argument); 3 inspect: the master cannot be cloned; 4 verify: problems found."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount a clone of MASTER at MOUNTPOINT (returns once the mount is ready).
    ///
    /// A directory MOUNTPOINT shows disk.img (the clone's whole disk) and clone.json (what the
    /// clone is). A regular-file MOUNTPOINT becomes the disk itself. Mounting the same master with
    /// the same seed (or --state) again reattaches the same clone, with every earlier write.
    Mount(MountArgs),
    /// Unmount a clone and wait until its state is synced.
    Umount {
        /// The clone's mountpoint.
        mountpoint: PathBuf,
    },
    /// Write a clone out eagerly as a sparse raw image (or onto a block device), or as a qcow2
    /// overlay of the master, with progress.
    ///
    /// The export equals what `sidfs mount` shows for the same master and seed, byte for byte.
    /// With --format qcow2 it is a qcow2 (version 3) image whose backing file is the master
    /// (format raw), holding only the 64 KiB clusters where the clone differs from the master:
    /// qemu boots it directly, with no sidfs process, and keeps the guest's writes in it.
    Export {
        /// The master disk image.
        master: PathBuf,
        /// The output image file (created; sparse), or a block device (every byte written;
        /// raw only).
        out: PathBuf,
        /// raw: the whole disk; qcow2: an overlay whose backing file is MASTER, recorded as
        /// given when absolute and relative to OUT's directory when relative (so the master
        /// must stay where it is).
        #[arg(long, value_enum, default_value_t = ExportFormatArg::Raw)]
        format: ExportFormatArg,
        #[command(flatten)]
        clone: CloneArgs,
        /// Export this existing clone, with everything written to it (it must not be mounted).
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        /// Overwrite OUT if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Check an image for a remaining old machine SID and for broken structures.
    ///
    /// Exit status 0: no unexpected occurrence and every structure sound; 4: problems found.
    Verify {
        /// Any raw disk image: a mounted clone's disk.img, an export, a master.
        image: PathBuf,
        /// The SID that must be gone (the master's machine SID). Default: the old SID in the
        /// clone.json next to IMAGE (a mounted clone's disk.img).
        #[arg(long, value_name = "SID")]
        old_sid: Option<sidfs::sid::MachineSid>,
        /// A clone.json whose recorded identifiers (computer name, MachineGuid, WSUS, MSDTC)
        /// must be gone too. Default: the clone.json next to IMAGE, if there is one.
        #[arg(long, value_name = "CLONE_JSON")]
        clone_json: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show a clone's seed, master and delta usage.
    Status {
        /// A clone's mountpoint or state directory.
        target: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Inspect a master: partitions, Windows, machine SID, domain, accounts, profiles, hives,
    /// and every reason it cannot be cloned safely.
    ///
    /// Exit status: 0 when the master can be cloned, 3 when it is refused (the reasons are
    /// listed), 1 when the image cannot be read.
    Inspect {
        /// The master disk image (raw) or a bare NTFS volume image. Opened read-only.
        master: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `sidfs export --format`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormatArg {
    Raw,
    Qcow2,
}

#[derive(Args, Clone)]
struct MountArgs {
    /// The master disk image (raw): a file or a block device. Opened read-only.
    master: PathBuf,
    /// An existing directory (shows disk.img and clone.json) or regular file (becomes the disk).
    mountpoint: PathBuf,
    #[command(flatten)]
    clone: CloneArgs,
    /// The clone's state directory (delta, block map, metadata). Default:
    /// $XDG_STATE_HOME/sidfs/<master>-<hash>-seed<N> (or ~/.local/state/sidfs/...).
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Stay in the foreground (logs to stderr; Ctrl-C unmounts cleanly).
    #[arg(long)]
    foreground: bool,
    /// Refuse writes: for copying a clone to a disk without any chance of changing it.
    #[arg(long)]
    read_only: bool,
    /// Threads serving FUSE requests: as many requests as there are threads are served at once
    /// (an idle thread costs nothing; 16 keeps a queue depth of 16 busy).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
    /// Let other users (e.g. a qemu running as another user) open the disk.
    #[arg(long)]
    allow_other: bool,
}

/// The options that decide what a clone is; `mount` and `export` share them, so the same options
/// give the same clone.
#[derive(Args, Clone)]
struct CloneArgs {
    /// The clone's seed: the same master and seed always give the same clone. Without it (mount
    /// only) a random seed is chosen and recorded in the state.
    #[arg(long)]
    seed: Option<u64>,
    /// The clone's new machine SID (S-1-5-21-a-b-c, each number with as many digits as the
    /// master's), instead of one derived from the seed.
    #[arg(long, value_name = "SID")]
    sid: Option<sidfs::sid::MachineSid>,
    /// For a disk without a Windows installation (a data disk of the master machine): the
    /// machine SID to replace. A Windows master's SID is read from its registry.
    #[arg(long, value_name = "SID")]
    old_sid: Option<sidfs::sid::MachineSid>,
    /// A plain copy-on-write clone that keeps the master's SID and identifiers (no rewrite), of
    /// any image. Not with --sid, --old-sid, --hostname or --keep.
    #[arg(long)]
    keep_sid: bool,
    /// The clone's computer name: 1-15 letters, digits and hyphens, of any length (the NetBIOS
    /// name upper case, the DNS host name as given). Default: one derived from the seed.
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// Identifiers to keep as in the master, comma-separated: hostname, machine-guid, wsus,
    /// msdtc (docs/IDENTIFIERS.md). Default: all are made unique.
    #[arg(long, value_name = "LIST", value_parser = parse_keep)]
    keep: Option<KeepList>,
}

impl CloneArgs {
    fn spec(&self, master: PathBuf) -> CloneSpec {
        CloneSpec {
            master,
            seed: self.seed,
            sid: self.sid,
            old_sid: self.old_sid,
            keep_sid: self.keep_sid,
            identity: sidfs::identity::IdentityRequest {
                hostname: self.hostname.clone(),
                keep: self.keep.clone().map(|k| k.0).unwrap_or_default(),
            },
        }
    }

    /// The same options as command-line arguments (for the background daemon).
    fn to_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(seed) = self.seed {
            v.extend(["--seed".to_string(), seed.to_string()]);
        }
        if let Some(sid) = &self.sid {
            v.extend(["--sid".to_string(), sid.to_string()]);
        }
        if let Some(sid) = &self.old_sid {
            v.extend(["--old-sid".to_string(), sid.to_string()]);
        }
        if self.keep_sid {
            v.push("--keep-sid".to_string());
        }
        if let Some(name) = &self.hostname {
            v.push(format!("--hostname={name}"));
        }
        if let Some(keep) = &self.keep {
            let words: Vec<&str> = keep.0.iter().map(|k| k.word()).collect();
            v.extend(["--keep".to_string(), words.join(",")]);
        }
        v
    }
}

/// The identifiers named by `--keep`.
#[derive(Clone, Debug)]
struct KeepList(Vec<sidfs::identity::IdentifierKind>);

fn parse_keep(s: &str) -> Result<KeepList, String> {
    sidfs::identity::parse_keep_list(s)
        .map(KeepList)
        .map_err(|e| e.to_string())
}

impl MountArgs {
    fn request(&self) -> MountRequest {
        MountRequest {
            clone: self.clone.spec(self.master.clone()),
            mountpoint: self.mountpoint.clone(),
            state: self.state.clone(),
            read_only: self.read_only,
            threads: usize::from(self.threads),
            allow_other: self.allow_other,
        }
    }
}

fn main() -> ExitCode {
    // SAFETY: restores the default SIGPIPE action before any thread exists, so that output piped
    // into `head` ends the process quietly instead of failing a print.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let default_level = match &cli.command {
        Cmd::Mount(_) => "info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_target(false)
        .init();
    let result = match cli.command {
        Cmd::Inspect { master, json } => return run_inspect(&master, json),
        Cmd::Mount(args) => run_mount(&args),
        Cmd::Umount { mountpoint } => mount::unmount(&mountpoint, Duration::from_secs(120))
            .map(|state| {
                println!(
                    "unmounted {} (state {})",
                    mountpoint.display(),
                    state.display()
                );
            })
            .map_err(|e| e.to_string()),
        Cmd::Status { target, json } => run_status(&target, json),
        Cmd::Export {
            master,
            out,
            format,
            clone,
            state,
            force,
        } => run_export(sidfs::export::ExportRequest {
            clone: clone.spec(master),
            out,
            state,
            force,
            format: match format {
                ExportFormatArg::Raw => sidfs::export::ExportFormat::Raw,
                ExportFormatArg::Qcow2 => sidfs::export::ExportFormat::Qcow2,
            },
        }),
        Cmd::Verify {
            image,
            old_sid,
            clone_json,
            json,
        } => return run_verify(&image, old_sid, clone_json, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("sidfs: {msg}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `sidfs inspect`: prints the report; exit 0 cloneable, 3 refused, 1 unreadable.
fn run_inspect(master: &Path, json: bool) -> ExitCode {
    let report = match sidfs::inspect::inspect(master) {
        Ok(report) => report,
        Err(e) => {
            let message = e.to_string().replace(['\n', '\r'], " ");
            eprintln!("sidfs: {message}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if json {
        print_json(&report);
    } else {
        print!("{}", report.render_text());
    }
    if report.is_cloneable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REFUSED)
    }
}

fn run_status(target: &Path, json: bool) -> Result<(), String> {
    let s = mount::status(target).map_err(|e| e.to_string())?;
    if json {
        print_json(&s);
        return Ok(());
    }
    println!("state:        {}", s.state_dir.display());
    match (&s.mountpoint, s.serving_pid) {
        (Some(mp), Some(pid)) => println!("mounted at:   {} (pid {pid})", mp.display()),
        (Some(mp), None) => println!(
            "mounted at:   {} (process gone: sidfs umount it)",
            mp.display()
        ),
        (None, _) => println!("mounted at:   (not mounted)"),
    }
    for mp in &s.dead_mounts {
        println!(
            "dead mount:   {} (its process is gone: sidfs umount {})",
            mp.display(),
            mp.display()
        );
    }
    println!("seed:         {}", s.seed);
    if let (Some(old), Some(new)) = (&s.old_sid, &s.new_sid) {
        println!("machine SID:  {old} -> {new}");
    }
    if let Some(identity) = s
        .identity
        .clone()
        .and_then(|v| serde_json::from_value::<sidfs::identity::IdentityChoice>(v).ok())
    {
        for c in &identity.changes {
            let label = c
                .label
                .as_ref()
                .map(|l| format!(" ({l})"))
                .unwrap_or_default();
            println!(
                "{:<14}{} -> {}{label}",
                format!("{}:", c.kind),
                c.old,
                c.new
            );
        }
        for k in &identity.kept {
            println!("{:<14}kept (--keep)", format!("{k}:"));
        }
        for h in &identity.held {
            println!("{:<14}kept: {}", format!("{}:", h.kind), h.reason);
        }
    }
    println!(
        "master:       {} ({} bytes)",
        s.master.path.display(),
        s.master.fingerprint.size
    );
    println!(
        "delta:        {} blocks of {} bytes ({})",
        s.delta_blocks,
        s.block_size,
        human(s.delta_bytes)
    );
    println!("on disk:      {}", human(s.bytes_on_disk));
    Ok(())
}

fn run_export(req: sidfs::export::ExportRequest) -> Result<(), String> {
    let s = sidfs::export::export(&req).map_err(|e| e.to_string())?;
    if let (Some(old), Some(new)) = (&s.old_sid, &s.new_sid) {
        println!("machine SID {old} -> {new}");
    }
    println!(
        "exported {} ({} disk, {} of data, {} written) in {:.1}s",
        s.out.display(),
        human(s.disk_size),
        human(s.data_bytes),
        human(s.written_bytes),
        s.seconds
    );
    Ok(())
}

/// Exit status of `verify` when it found problems.
const EXIT_VERIFY_PROBLEMS: u8 = 4;

fn run_verify(
    image: &Path,
    old: Option<sidfs::sid::MachineSid>,
    clone_json: Option<PathBuf>,
    json: bool,
) -> ExitCode {
    // A mounted clone's disk.img has its clone.json beside it.
    let beside = image.parent().map(|d| d.join(sidfs::fuse::INFO_NAME));
    let info_path = clone_json.or(beside.filter(|p| p.exists()));
    let info: Option<serde_json::Value> = match &info_path {
        Some(p) => match std::fs::read(p).map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(v)) => Some(v),
            _ => {
                eprintln!("sidfs: cannot read {} as a clone.json", p.display());
                return ExitCode::from(EXIT_FAILURE);
            }
        },
        None => None,
    };
    let old = match old.or_else(|| info.as_ref()?["old_sid"].as_str()?.parse().ok()) {
        Some(sid) => sid,
        None => {
            eprintln!("sidfs: give --old-sid S-1-5-21-... (the master's machine SID)");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let identity: Option<sidfs::identity::IdentityChoice> = info
        .as_ref()
        .and_then(|i| serde_json::from_value(i["identity"].clone()).ok());
    let report = match sidfs::verify::verify_with_identity(image, old, identity.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sidfs: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if json {
        print_json(&report);
    } else {
        println!("image:        {}", report.image.display());
        println!("old SID:      {}", report.old_sid);
        println!(
            "occurrences:  {} unexpected, {} expected (in ranges kept on purpose)",
            report.unexpected, report.expected
        );
        for o in report.occurrences.iter().filter(|o| !o.expected).take(20) {
            println!(
                "  at {:#x} ({:?}){}",
                o.offset,
                o.form,
                o.region
                    .as_deref()
                    .map(|r| format!(" in {r}"))
                    .unwrap_or_default()
            );
        }
        println!("structures checked: {}", report.structures_checked.len());
        for (kind, hive, n) in &report.residual_identifiers {
            println!("  old {kind} still in {hive}: {n} occurrences");
        }
        for p in &report.problems {
            println!("  problem: {p}");
        }
        println!(
            "{}",
            if report.is_clean() {
                "clean"
            } else {
                "PROBLEMS FOUND"
            }
        );
    }
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_VERIFY_PROBLEMS)
    }
}

/// Prints a report as pretty JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("reports serialize")
    );
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn run_mount(args: &MountArgs) -> Result<(), String> {
    if let Some(name) = &args.clone.hostname {
        sidfs::identity::check_hostname(name)?;
    }
    let req = args.request();
    req.clone.check_options().map_err(|e| e.to_string())?;
    let state_dir = req.state.clone().unwrap_or_else(|| {
        mount::default_state_dir(&req.clone.master, req.clone.seed, &req.mountpoint)
    });
    if args.foreground {
        let ready_fd = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<i32>().ok());
        return serve_foreground(&req, &state_dir, ready_fd);
    }
    mount::precheck(&req, &state_dir).map_err(|e| e.to_string())?;
    start_daemon(args, &state_dir)
}

/// Serves the clone in this process. With a readiness fd (the background case), the outcome of
/// mounting is written there for the waiting parent.
fn serve_foreground(
    req: &MountRequest,
    state_dir: &Path,
    ready_fd: Option<i32>,
) -> Result<(), String> {
    let mut ready_pipe = ready_fd.map(|fd| {
        // SAFETY: the parent handed us this fd (dup2'd to READY_FD before exec) and nothing else
        // in this process owns it.
        std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) })
    });
    let mut report = |outcome: Result<(), String>| {
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
    let prepared = match mount::prepare(req, state_dir) {
        Ok(p) => p,
        Err(e) => {
            report(Err(e.to_string()));
            return Err(e.to_string());
        }
    };
    mount::serve(req, prepared, report).map_err(|e| e.to_string())
}

/// How often the log is reopened when a failed first mount of the same state removed the
/// directory between creating it and opening the log.
const LOG_OPEN_ATTEMPTS: u32 = 4;

/// Creates the state directory (0700) and opens its log for appending (0600).
fn open_log(state_dir: &Path, log_path: &Path) -> Result<std::fs::File, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        sidfs::overlay::state::create_private_dir(state_dir).map_err(|e| e.to_string())?;
        match sidfs::overlay::state::open_private(
            log_path,
            std::fs::OpenOptions::new().create(true).append(true),
        ) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < LOG_OPEN_ATTEMPTS => {}
            Err(e) => return Err(format!("cannot open log {}: {e}", log_path.display())),
        }
    }
}

/// Starts the clone's daemon (this binary, `--foreground`, in a new session, logging to the state
/// directory) and waits until it reports the mount ready or failed. Nothing is removed here: the
/// daemon claims the state directory before it reads it, so of parallel mounts of one state
/// exactly one proceeds, and only that one cleans up after a first mount that failed.
fn start_daemon(args: &MountArgs, state_dir: &Path) -> Result<(), String> {
    let log_path = state_dir.join(sidfs::overlay::state::LOG_FILE);
    let log = open_log(state_dir, &log_path)?;
    let (mut reader, writer) = std::io::pipe().map_err(|e| format!("cannot create pipe: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount")
        .arg(&args.master)
        .arg(&args.mountpoint)
        .arg("--foreground")
        .arg("--state")
        .arg(state_dir)
        .arg("--threads")
        .arg(args.threads.to_string());
    cmd.args(args.clone.to_args());
    if args.read_only {
        cmd.arg("--read-only");
    }
    if args.allow_other {
        cmd.arg("--allow-other");
    }
    let log_err = log
        .try_clone()
        .map_err(|e| format!("cannot open log {}: {e}", log_path.display()))?;
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
        .map_err(|e| format!("cannot start the mount daemon: {e}"))?;
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
            return Err(format!(
                "the mount daemon did not report ready within {}s; see {}",
                READY_TIMEOUT.as_secs(),
                log_path.display()
            ));
        }
    };
    let answer = answer.lines().next().unwrap_or("").to_string();
    if answer == "ok" {
        let pid = child.id();
        println!(
            "mounted clone at {} (pid {pid}, state {})",
            args.mountpoint.display(),
            state_dir.display()
        );
        return Ok(());
    }
    let _ = child.wait();
    match answer.strip_prefix("error: ") {
        Some(msg) => Err(msg.to_string()),
        None => Err(format!(
            "the mount daemon exited before the mount was ready; see {}",
            log_path.display()
        )),
    }
}
