//! `sidfs export`: writes a clone out eagerly, as a sparse raw image (or onto a block device).
//! It reads through exactly the code the mount serves, so the export equals the mounted disk.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::PathBuf;
use std::time::Instant;

use crate::mount::{open_clone, CloneSpec, MountError};

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

pub fn export(req: &ExportRequest) -> Result<ExportSummary, MountError> {
    let fail = |m: String| Err(MountError(m));
    if req.state.is_none()
        && req.clone.seed.is_none()
        && req.clone.sid.is_none()
        && !req.clone.keep_sid
    {
        return fail(
            "give --seed N or --sid SID (or --state DIR to export an existing clone)".into(),
        );
    }
    if !req.clone.master.exists() {
        return fail(format!(
            "master image {} does not exist",
            req.clone.master.display()
        ));
    }
    let is_device = std::fs::metadata(&req.out)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false);
    if !is_device && req.out.exists() && !req.force {
        return fail(format!(
            "{} already exists; remove it or pass --force to overwrite it",
            req.out.display()
        ));
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
    let clone = open_clone(&req.clone, &state_dir, true)?;
    if req.format == ExportFormat::Qcow2 {
        let summary = crate::qcow2::export::write_overlay(req, &clone.disk)?;
        return Ok(ExportSummary {
            old_sid: clone.sids.map(|c| c.old.to_string()),
            new_sid: clone.sids.map(|c| c.new.to_string()),
            ..summary
        });
    }
    let disk = clone.disk;
    let size = disk.size();

    let out = if is_device {
        OpenOptions::new().write(true).open(&req.out)
    } else {
        File::create(&req.out)
    }
    .map_err(|e| {
        MountError(format!(
            "cannot open {} for writing: {e}",
            req.out.display()
        ))
    })?;
    if !is_device {
        out.set_len(size)
            .map_err(|e| MountError(format!("cannot size {}: {e}", req.out.display())))?;
    }
    let err = |e: crate::overlay::OverlayError| MountError(e.to_string());

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
                out.write_all_at(chunk, at).map_err(|e| {
                    MountError(format!("write to {} failed: {e}", req.out.display()))
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
    out.sync_all()
        .map_err(|e| MountError(format!("cannot sync {}: {e}", req.out.display())))?;
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
