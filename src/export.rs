//! `sidfs export`: writes a clone out eagerly, as a sparse raw image (or onto a block device).
//! It reads through exactly the code the mount serves, so the export equals the mounted disk.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Seek, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::clone::{open_clone, CloneSpec};
use crate::mount::MountError;
use crate::overlay::state;

mod error;
pub use error::{ExportError, MasterOverlap};

/// Size of one copy step.
const CHUNK: usize = 4 << 20;

pub struct ExportRequest {
    /// The clone to write out (the same options as for mount).
    pub clone: CloneSpec,
    pub out: PathBuf,
    /// Export this clone (with its writes) instead of a fresh one.
    pub state: Option<PathBuf>,
    pub force: bool,
    /// What to write: a raw image (or device), or a qcow2 overlay over the master.
    pub format: ExportFormat,
}

/// The output format of `sidfs export`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExportFormat {
    /// A sparse raw image, or every byte onto a block device.
    #[default]
    Raw,
    /// A qcow2 overlay whose backing file is the master (src/qcow2).
    Qcow2,
}

#[derive(Debug, serde::Serialize)]
pub struct ExportSummary {
    pub out: PathBuf,
    pub disk_size: u64,
    pub data_bytes: u64,
    pub written_bytes: u64,
    pub seconds: f64,
    pub old_sid: Option<String>,
    pub new_sid: Option<String>,
}

/// A temporary clone state for an export without `--state`, removed when dropped.
struct TempState(PathBuf);

impl Drop for TempState {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The output image file while it is written: a temporary name in the output's directory,
/// renamed to the output only when every byte is written and synced, and removed otherwise, so
/// that a failed export leaves no partial image behind (and an existing output stays as it was).
/// Used by the raw and the qcow2 export.
pub(crate) struct PartialOutput {
    path: PathBuf,
    done: bool,
}

impl PartialOutput {
    /// Creates the temporary file for `out` (it must not exist yet).
    pub(crate) fn create(out: &Path) -> Result<(File, PartialOutput), ExportError> {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "export".into());
        let path = out.with_file_name(format!(".{name}.sidfs-partial-{}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| ExportError::CreatePartial {
                partial: path.clone(),
                out: out.to_path_buf(),
                source,
            })?;
        Ok((file, PartialOutput { path, done: false }))
    }

    /// Renames the (synced) temporary file to `out` and syncs the directory, so that the rename
    /// is durable.
    pub(crate) fn commit(mut self, out: &Path) -> Result<(), ExportError> {
        std::fs::rename(&self.path, out).map_err(|source| ExportError::Rename {
            from: self.path.clone(),
            to: out.to_path_buf(),
            source,
        })?;
        self.done = true;
        let dir = out.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| ExportError::SyncDirectory {
                dir: dir.to_path_buf(),
                source,
            })
    }
}

impl Drop for PartialOutput {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Refuses an output that is the master, or that holds it: the same file (a path, a symlink or
/// a hard link: one device and inode), the same block device or one sharing its blocks (a
/// partition of it, or the disk it is a partition of), a loop device backed by the master file
/// (or by the master loop device's file), or the block device (or a whole disk of the partition)
/// the master's file system is on.
fn refuse_output_is_master(master: &Path, out: &Path) -> Result<(), ExportError> {
    let (Ok(m), Ok(o)) = (std::fs::metadata(master), std::fs::metadata(out)) else {
        return Ok(());
    };
    let refuse = |overlap| {
        Err(ExportError::OutputIsMaster {
            out: out.to_path_buf(),
            master: master.to_path_buf(),
            overlap,
        })
    };
    if m.dev() == o.dev() && m.ino() == o.ino() {
        return refuse(MasterOverlap::Same);
    }
    if !o.file_type().is_block_device() {
        return Ok(());
    }
    let out_sys = sys_block_dir(o.rdev());
    let out_backing = out_sys.as_deref().and_then(loop_backing_file);
    if m.file_type().is_block_device() {
        let master_sys = sys_block_dir(m.rdev());
        let shares = m.rdev() == o.rdev()
            || matches!((&out_sys, &master_sys), (Some(a), Some(b)) if a.starts_with(b) || b.starts_with(a));
        if shares {
            return refuse(MasterOverlap::SharesBlocks);
        }
        let master_backing = master_sys.as_deref().and_then(loop_backing_file);
        if let (Some(a), Some(b)) = (&out_backing, &master_backing) {
            if crate::clone::same_file(a, b) {
                return refuse(MasterOverlap::LoopOfSameFile { file: b.clone() });
            }
        }
        return Ok(());
    }
    if out_backing.is_some_and(|b| crate::clone::same_file(&b, master)) {
        return refuse(MasterOverlap::LoopOfMaster);
    }
    // The device the master's file system lives on, or a whole disk that contains it.
    let holds_fs = m.dev() == o.rdev()
        || matches!((&out_sys, sys_block_dir(m.dev())), (Some(outer), Some(inner)) if inner.starts_with(outer));
    if holds_fs {
        return refuse(MasterOverlap::HoldsFileSystem);
    }
    Ok(())
}

/// `/sys/dev/block/MAJOR:MINOR` resolved (e.g. `/sys/devices/.../block/sda/sda1`).
fn sys_block_dir(rdev: u64) -> Option<PathBuf> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()
}

/// The file behind a loop device (or a partition of one), from its sysfs directory.
fn loop_backing_file(sys: &Path) -> Option<PathBuf> {
    let read = |dir: &Path| std::fs::read_to_string(dir.join("loop/backing_file")).ok();
    let text = read(sys).or_else(|| read(sys.parent()?))?;
    Some(PathBuf::from(text.trim_end_matches('\n')))
}

pub fn export(req: &ExportRequest) -> Result<ExportSummary, MountError> {
    let fail = |e: ExportError| Err(e.into());
    req.clone.check_options()?;
    if req.state.is_none()
        && req.clone.seed.is_none()
        && req.clone.sid.is_none()
        && !req.clone.keep_sid
    {
        return fail(ExportError::NoCloneGiven);
    }
    if !req.clone.master.exists() {
        return Err(MountError::MasterMissing {
            master: req.clone.master.clone(),
        });
    }
    refuse_output_is_master(&req.clone.master, &req.out)?;
    let out_type = std::fs::metadata(&req.out).ok().map(|m| m.file_type());
    let is_device = out_type.is_some_and(|t| t.is_block_device());
    // The image is written under a temporary name and renamed over OUT: only a regular file (or
    // a new name) may be replaced that way, never a character device, FIFO or directory.
    if out_type.is_some_and(|t| !t.is_block_device() && !t.is_file()) {
        return fail(ExportError::OutputKind {
            out: req.out.clone(),
        });
    }
    if !is_device && req.out.exists() && !req.force {
        return fail(ExportError::OutputExists {
            out: req.out.clone(),
        });
    }
    if let Some(dir) = &req.state {
        // Exporting a clone that does not exist would silently make a new one.
        if !dir.exists() {
            return fail(ExportError::StateMissing {
                state_dir: dir.clone(),
            });
        }
        if !dir.join(state::STATE_FILE).exists() {
            return fail(ExportError::NotAState {
                state_dir: dir.clone(),
            });
        }
    }
    let temp;
    let state_dir = match &req.state {
        Some(s) => s.clone(),
        None => {
            let dir = std::env::temp_dir().join(format!("sidfs-export-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            temp = TempState(dir.clone());
            let _ = &temp;
            dir
        }
    };
    let mut clone = open_clone(&req.clone, &state_dir, true)?;
    if req.format == ExportFormat::Qcow2 {
        let summary = crate::qcow2::export::write_overlay(
            req,
            &clone.disk,
            clone.sid_stage.as_deref(),
            &mut clone.survey_cache,
        )?;
        return Ok(ExportSummary {
            old_sid: clone.sids.map(|c| c.old.to_string()),
            new_sid: clone.sids.map(|c| c.new.to_string()),
            ..summary
        });
    }
    let disk = clone.disk;
    let size = disk.size();

    let mut partial = None;
    let out = if is_device {
        let dev = OpenOptions::new()
            .write(true)
            .open(&req.out)
            .map_err(|source| ExportError::OpenDevice {
                out: req.out.clone(),
                source,
            })?;
        // Check the room before writing anything: a device smaller than the disk would
        // otherwise take a partial clone.
        let room = (&dev)
            .seek(std::io::SeekFrom::End(0))
            .map_err(|source| ExportError::Size {
                out: req.out.clone(),
                source,
            })?;
        if room < size {
            return fail(ExportError::DeviceTooSmall {
                out: req.out.clone(),
                room,
                size,
            });
        }
        dev
    } else {
        let (file, p) = PartialOutput::create(&req.out)?;
        partial = Some(p);
        file.set_len(size).map_err(|source| ExportError::Size {
            out: req.out.clone(),
            source,
        })?;
        file
    };
    let err = MountError::Overlay;

    // The data extents (master data plus the clone's delta); a block device gets every byte.
    let mut extents = Vec::new();
    if is_device {
        extents.push((0, size));
    } else {
        let mut pos = 0;
        while let Some(d) = disk.seek_data(pos).map_err(err)? {
            let h = disk.seek_hole(d).map_err(err)?;
            extents.push((d, h));
            pos = h;
        }
    }
    let data_bytes: u64 = extents.iter().map(|(d, h)| h - d).sum();
    let progress = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut reported = false;
    let (mut done, mut written) = (0u64, 0u64);
    let mut buf = vec![0u8; CHUNK];
    for (d, h) in extents {
        let mut at = d;
        while at < h {
            let n = ((h - at) as usize).min(CHUNK);
            let chunk = &mut buf[..n];
            disk.read(at, chunk).map_err(err)?;
            if is_device || chunk.iter().any(|&b| b != 0) {
                out.write_all_at(chunk, at)
                    .map_err(|source| ExportError::Write {
                        out: req.out.clone(),
                        source,
                    })?;
                written += n as u64;
            }
            at += n as u64;
            done += n as u64;
            if progress && last_report.elapsed().as_millis() >= 500 {
                last_report = Instant::now();
                reported = true;
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                eprint!(
                    "\rsidfs export: {:>6.1}% of {} MiB, {:.0} MB/s   ",
                    done as f64 * 100.0 / data_bytes.max(1) as f64,
                    data_bytes >> 20,
                    done as f64 / secs / 1e6
                );
                let _ = std::io::stderr().flush();
            }
        }
    }
    out.sync_all().map_err(|source| ExportError::Sync {
        out: req.out.clone(),
        source,
    })?;
    if let Some(p) = partial {
        p.commit(&req.out)?;
    }
    if reported {
        eprintln!();
    }
    Ok(ExportSummary {
        out: req.out.clone(),
        disk_size: size,
        data_bytes,
        written_bytes: written,
        seconds: started.elapsed().as_secs_f64(),
        old_sid: clone.sids.map(|c| c.old.to_string()),
        new_sid: clone.sids.map(|c| c.new.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prove that export refusals are typed (the variant carries the paths and the cause) and
    /// that their sentences are the ones the user always read.
    #[test]
    fn refusals_are_typed() {
        let scratch =
            std::env::temp_dir().join(format!("sidfs-export-test-{}", std::process::id()));
        let req = ExportRequest {
            clone: CloneSpec {
                master: scratch.join("master.img"),
                seed: Some(1),
                ..CloneSpec::default()
            },
            out: scratch.join("out.img"),
            state: Some(scratch.join("no-such-state")),
            force: false,
            format: ExportFormat::Raw,
        };
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::write(&req.clone.master, [0u8; 512]).unwrap();
        let e = export(&req).unwrap_err();
        let _ = std::fs::remove_dir_all(&scratch);
        match &e {
            MountError::Export(x) => assert!(
                matches!(x.as_ref(), ExportError::StateMissing { state_dir } if state_dir.ends_with("no-such-state"))
            ),
            other => panic!("expected a typed export refusal, got {other:?}"),
        }
        assert_eq!(
            e.to_string(),
            format!(
                "state directory {} does not exist: give the --state of an existing clone, or leave out --state to export a new clone",
                scratch.join("no-such-state").display()
            )
        );

        let e = MountError::from(ExportError::OutputIsMaster {
            out: "/dev/loop9".into(),
            master: "/m.img".into(),
            overlap: MasterOverlap::LoopOfSameFile {
                file: "/f.img".into(),
            },
        });
        assert_eq!(
            e.to_string(),
            "the output /dev/loop9 is a loop device of the same file /f.img as the master /m.img: writing the clone there would destroy the master; give another output"
        );
        let e = MountError::from(ExportError::Write {
            out: "/o.img".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        });
        let cause = std::error::Error::source(&e).and_then(|c| c.source());
        assert!(cause.is_some_and(|c| c.is::<std::io::Error>()));
        assert!(e.to_string().starts_with("write to /o.img failed: "));
    }
}
