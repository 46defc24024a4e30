//! What the commands print on stdout: the text of `status`, `export`, `verify`, `mount` and
//! `umount`, and the pretty JSON of `--json`. (`inspect`'s text is [`crate::inspect`]'s own.)
//! Each function returns the whole text, so that it is tested without running a command.

use std::fmt::Write as _;
use std::path::Path;

use crate::export::ExportSummary;
use crate::identity::IdentityChoice;
use crate::mount::CloneStatus;
use crate::verify::VerifyReport;

/// Unexpected occurrences `verify` lists in its text; the rest are counted.
const VERIFY_LISTED: usize = 20;

/// A report as pretty JSON, with a final newline.
pub fn json<T: serde::Serialize>(value: &T) -> String {
    let mut out = serde_json::to_string_pretty(value).expect("reports serialize");
    out.push('\n');
    out
}

/// A byte count for people: `512 B`, `1.5 KiB`, `20.0 GiB`.
pub fn human(bytes: u64) -> String {
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

/// `sidfs mount` once the daemon reported the mount ready.
pub fn mounted_text(mountpoint: &Path, pid: u32, state_dir: &Path) -> String {
    format!(
        "mounted clone at {} (pid {pid}, state {})\n",
        mountpoint.display(),
        state_dir.display()
    )
}

/// `sidfs umount` once the clone's state is synced.
pub fn unmounted_text(mountpoint: &Path, state_dir: &Path) -> String {
    format!(
        "unmounted {} (state {})\n",
        mountpoint.display(),
        state_dir.display()
    )
}

/// `sidfs status`.
pub fn status_text(s: &CloneStatus) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_status(&mut out, s);
    out
}

fn write_status(out: &mut String, s: &CloneStatus) -> std::fmt::Result {
    writeln!(out, "state:        {}", s.state_dir.display())?;
    match (&s.mountpoint, s.serving_pid) {
        (Some(mp), Some(pid)) => writeln!(out, "mounted at:   {} (pid {pid})", mp.display())?,
        (Some(mp), None) => writeln!(
            out,
            "mounted at:   {} (process gone: sidfs umount it)",
            mp.display()
        )?,
        (None, _) => writeln!(out, "mounted at:   (not mounted)")?,
    }
    for mp in &s.dead_mounts {
        writeln!(
            out,
            "dead mount:   {} (its process is gone: sidfs umount {})",
            mp.display(),
            mp.display()
        )?;
    }
    writeln!(out, "seed:         {}", s.seed)?;
    if let (Some(old), Some(new)) = (&s.old_sid, &s.new_sid) {
        writeln!(out, "machine SID:  {old} -> {new}")?;
    }
    if let Some(identity) = s
        .identity
        .clone()
        .and_then(|v| serde_json::from_value::<IdentityChoice>(v).ok())
    {
        for c in &identity.changes {
            let label = c
                .label
                .as_ref()
                .map(|l| format!(" ({l})"))
                .unwrap_or_default();
            writeln!(
                out,
                "{:<14}{} -> {}{label}",
                format!("{}:", c.kind),
                c.old,
                c.new
            )?;
        }
        for k in &identity.kept {
            writeln!(out, "{:<14}kept (--keep)", format!("{k}:"))?;
        }
        for h in &identity.held {
            writeln!(out, "{:<14}kept: {}", format!("{}:", h.kind), h.reason)?;
        }
    }
    writeln!(
        out,
        "master:       {} ({} bytes)",
        s.master.path.display(),
        s.master.fingerprint.size
    )?;
    writeln!(
        out,
        "delta:        {} blocks of {} bytes ({})",
        s.delta_blocks,
        s.block_size,
        human(s.delta_bytes)
    )?;
    writeln!(out, "on disk:      {}", human(s.bytes_on_disk))
}

/// `sidfs export`.
pub fn export_text(s: &ExportSummary) -> String {
    let mut out = String::new();
    if let (Some(old), Some(new)) = (&s.old_sid, &s.new_sid) {
        out.push_str(&format!("machine SID {old} -> {new}\n"));
    }
    out.push_str(&format!(
        "exported {} ({} disk, {} of data, {} written) in {:.1}s\n",
        s.out.display(),
        human(s.disk_size),
        human(s.data_bytes),
        human(s.written_bytes),
        s.seconds
    ));
    out
}

/// `sidfs verify`.
pub fn verify_text(report: &VerifyReport) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_verify(&mut out, report);
    out
}

fn write_verify(out: &mut String, report: &VerifyReport) -> std::fmt::Result {
    writeln!(out, "image:        {}", report.image.display())?;
    writeln!(out, "old SID:      {}", report.old_sid)?;
    writeln!(
        out,
        "occurrences:  {} unexpected, {} expected (in ranges kept on purpose)",
        report.unexpected, report.expected
    )?;
    for o in report
        .occurrences
        .iter()
        .filter(|o| !o.expected)
        .take(VERIFY_LISTED)
    {
        writeln!(
            out,
            "  at {:#x} ({:?}){}",
            o.offset,
            o.form,
            o.region
                .as_deref()
                .map(|r| format!(" in {r}"))
                .unwrap_or_default()
        )?;
    }
    writeln!(
        out,
        "structures checked: {}",
        report.structures_checked.len()
    )?;
    for (kind, hive, n) in &report.residual_identifiers {
        writeln!(out, "  old {kind} still in {hive}: {n} occurrences")?;
    }
    for p in &report.problems {
        writeln!(out, "  problem: {p}")?;
    }
    writeln!(
        out,
        "{}",
        if report.is_clean() {
            "clean"
        } else {
            "PROBLEMS FOUND"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(20 << 30), "20.0 GiB");
        assert_eq!(human(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn export_text_names_the_sids_and_sizes() {
        let s = ExportSummary {
            out: "/tmp/c.img".into(),
            disk_size: 1 << 30,
            data_bytes: 1 << 20,
            written_bytes: 2048,
            seconds: 1.5,
            old_sid: Some("S-1-5-21-1-2-3".into()),
            new_sid: Some("S-1-5-21-4-5-6".into()),
        };
        assert_eq!(
            export_text(&s),
            "machine SID S-1-5-21-1-2-3 -> S-1-5-21-4-5-6\n\
             exported /tmp/c.img (1.0 GiB disk, 1.0 MiB of data, 2.0 KiB written) in 1.5s\n"
        );
    }

    #[test]
    fn json_ends_with_a_newline() {
        assert_eq!(json(&[1, 2]), "[\n  1,\n  2\n]\n");
    }
}
