//! The `sidfs` command: parses arguments, sets up logging and calls the library.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use sidfs::mount::{self, daemon, CloneSpec, MountRequest};
use sidfs::render;

/// Exit status of a command that failed or refused.
const EXIT_FAILURE: u8 = 1;
/// Exit status of `sidfs inspect` when the master must not be cloned.
const EXIT_REFUSED: u8 = 3;
/// Exit status of `verify` when it found problems.
const EXIT_VERIFY_PROBLEMS: u8 = 4;
/// How long `sidfs umount` waits for the clone's daemon to sync its state.
const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(120);

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
    /// With --old-sid, a disk without Windows (a data disk) is inspected as `sidfs mount
    /// --old-sid SID` clones it: its stores with checksums on every NTFS volume, each with its
    /// SID occurrences and what the clone does, and the refusal mount would give.
    ///
    /// Exit status: 0 when the master can be cloned, 3 when it is refused (the reasons are
    /// listed), 1 when the image cannot be read (or --old-sid is not a Windows master's SID).
    Inspect {
        /// The master disk image (raw) or a bare NTFS volume image. Opened read-only.
        master: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// For a disk without a Windows installation (a data disk): the machine SID a clone
        /// made with `sidfs mount --old-sid SID` replaces. A Windows master's must be its own.
        #[arg(long, value_name = "SID")]
        old_sid: Option<sidfs::sid::MachineSid>,
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
    /// The arguments that make this binary serve the same mount as the background daemon.
    fn daemon_args(&self, state_dir: &Path) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "mount".into(),
            self.master.clone().into(),
            self.mountpoint.clone().into(),
            "--foreground".into(),
            "--state".into(),
            state_dir.into(),
            "--threads".into(),
            self.threads.to_string().into(),
        ];
        v.extend(self.clone.to_args().into_iter().map(OsString::from));
        if self.read_only {
            v.push("--read-only".into());
        }
        if self.allow_other {
            v.push("--allow-other".into());
        }
        v
    }

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
        Cmd::Inspect {
            master,
            json,
            old_sid,
        } => return run_inspect(&master, json, old_sid),
        Cmd::Mount(args) => run_mount(&args),
        Cmd::Umount { mountpoint } => mount::unmount(&mountpoint, UNMOUNT_TIMEOUT)
            .map(|state| print!("{}", render::unmounted_text(&mountpoint, &state)))
            .map_err(|e| e.to_string()),
        Cmd::Status { target, json } => mount::status(&target)
            .map(|s| {
                if json {
                    print!("{}", render::json(&s));
                } else {
                    print!("{}", render::status_text(&s));
                }
            })
            .map_err(|e| e.to_string()),
        Cmd::Export {
            master,
            out,
            format,
            clone,
            state,
            force,
        } => sidfs::export::export(&sidfs::export::ExportRequest {
            clone: clone.spec(master),
            out,
            state,
            force,
            format: match format {
                ExportFormatArg::Raw => sidfs::export::ExportFormat::Raw,
                ExportFormatArg::Qcow2 => sidfs::export::ExportFormat::Qcow2,
            },
        })
        .map(|s| print!("{}", render::export_text(&s)))
        .map_err(|e| e.to_string()),
        Cmd::Verify {
            image,
            old_sid,
            clone_json,
            json,
        } => return run_verify(&image, old_sid, clone_json, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => fail(&msg),
    }
}

/// Prints the one-line refusal and gives exit status 1.
fn fail(msg: &str) -> ExitCode {
    eprintln!("sidfs: {msg}");
    ExitCode::from(EXIT_FAILURE)
}

/// `sidfs inspect`: prints the report; exit 0 cloneable, 3 refused, 1 unreadable.
fn run_inspect(master: &Path, json: bool, old_sid: Option<sidfs::sid::MachineSid>) -> ExitCode {
    let report = match sidfs::inspect::inspect_with(master, old_sid) {
        Ok(report) => report,
        Err(e) => return fail(&e.to_string().replace(['\n', '\r'], " ")),
    };
    if json {
        print!("{}", render::json(&report));
    } else {
        print!("{}", report.render_text());
    }
    if report.is_cloneable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REFUSED)
    }
}

/// `sidfs verify`: prints the report; exit 0 clean, 4 problems found, 1 unreadable.
fn run_verify(
    image: &Path,
    old: Option<sidfs::sid::MachineSid>,
    clone_json: Option<PathBuf>,
    json: bool,
) -> ExitCode {
    let report =
        sidfs::verify::verify_target(image, old, clone_json).and_then(|(old, identity)| {
            sidfs::verify::verify_with_identity(image, old, identity.as_ref())
        });
    let report = match report {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    if json {
        print!("{}", render::json(&report));
    } else {
        print!("{}", render::verify_text(&report));
    }
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_VERIFY_PROBLEMS)
    }
}

/// `sidfs mount`: serves in the foreground, or starts the daemon and waits until it is ready.
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
        return daemon::serve_foreground(&req, &state_dir, daemon::ready_fd_from_env())
            .map_err(|e| e.to_string());
    }
    mount::precheck(&req, &state_dir).map_err(|e| e.to_string())?;
    let pid = daemon::start_daemon(&args.daemon_args(&state_dir), &state_dir)
        .map_err(|e| e.to_string())?;
    print!(
        "{}",
        render::mounted_text(&args.mountpoint, pid, &state_dir)
    );
    Ok(())
}
