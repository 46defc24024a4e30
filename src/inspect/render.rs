//! The human summary of an [`InspectReport`]: refusals first, then the facts in aligned tables.

use std::fmt::Write;

use super::report::{DataDiskReport, InspectReport, WindowsReport};
use crate::render::human;

/// Width of the label column of key/value lines.
const LABEL_WIDTH: usize = 19;

impl InspectReport {
    /// A readable multi-line summary. Refusals come first and stand out; the last line says
    /// whether the image can be cloned.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{} ({})", self.image, human(self.image_size));
        out.push('\n');
        if !self.refusals.is_empty() {
            let _ = writeln!(
                out,
                "REFUSED: this image cannot be cloned safely ({} reason{}):",
                self.refusals.len(),
                if self.refusals.len() == 1 { "" } else { "s" }
            );
            for r in &self.refusals {
                let _ = writeln!(out, "  !! [{}] {}", r.reason.as_str(), r.message);
            }
            out.push('\n');
        }
        self.render_partitions(&mut out);
        match (&self.windows, &self.data_disk) {
            (Some(w), _) => render_windows(w, &mut out),
            (None, Some(d)) => render_data_disk(d, &mut out),
            (None, None) => {
                let _ = writeln!(out, "Windows: not found");
                out.push('\n');
            }
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(out, "Warnings:");
            for w in &self.warnings {
                let _ = writeln!(out, "  ! [{}] {}", w.reason.as_str(), w.message);
            }
            out.push('\n');
        }
        if self.is_cloneable() {
            let _ = writeln!(out, "Result: cloneable");
        } else {
            let _ = writeln!(
                out,
                "Result: REFUSED ({} reason{}, listed at the top)",
                self.refusals.len(),
                if self.refusals.len() == 1 { "" } else { "s" }
            );
        }
        out
    }

    fn render_partitions(&self, out: &mut String) {
        let t = &self.partition_table;
        let id = t
            .disk_id
            .as_deref()
            .map(|d| format!(", disk {d}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "Partition table: {} ({}-byte sectors{id})",
            t.kind, t.sector_size
        );
        let mut rows = vec![vec![
            "#".to_string(),
            "start".to_string(),
            "size".to_string(),
            "type".to_string(),
            "file system".to_string(),
            String::new(),
        ]];
        for p in &t.partitions {
            let type_name = match &p.type_name {
                Some(n) if p.name.is_empty() || p.name.eq_ignore_ascii_case(n) => n.clone(),
                Some(n) => format!("{n} \"{}\"", p.name),
                None => p.type_id.clone(),
            };
            rows.push(vec![
                p.index.to_string(),
                p.start.to_string(),
                human(p.size),
                type_name,
                p.file_system.clone(),
                if p.holds_windows {
                    "<- Windows".to_string()
                } else {
                    String::new()
                },
            ]);
        }
        table(out, &rows);
        for note in &t.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        out.push('\n');
    }
}

fn render_windows(w: &WindowsReport, out: &mut String) {
    let _ = writeln!(out, "Windows (partition {}):", w.partition_index);
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    let mut product = dash(&w.product_name);
    if let Some(build) = &w.build {
        let _ = write!(product, ", build {build}");
    }
    if let Some(display) = &w.display_version {
        let _ = write!(product, " ({display})");
    }
    line(out, "product", &product);
    line(out, "product type", &dash(&w.product_type));
    let mut name = dash(&w.computer_name);
    if let Some(host) = &w.hostname {
        if Some(host) != w.computer_name.as_ref() {
            let _ = write!(name, " (host name {host})");
        }
    }
    line(out, "computer name", &name);
    line(
        out,
        "machine SID",
        &w.machine_sid
            .clone()
            .unwrap_or_else(|| "UNKNOWN".to_string()),
    );
    for (label, source) in [
        ("  from SECURITY", &w.machine_sid_sources.security),
        ("  from SAM", &w.machine_sid_sources.sam),
    ] {
        let text = match source {
            Some(s) => format!("{} ({} {}, at {:#x})", s.sid, s.hive, s.key, s.hive_offset),
            None => "not found".to_string(),
        };
        line(out, label, &text);
    }
    line(
        out,
        "  agree",
        if w.machine_sid_sources.agree {
            "yes"
        } else {
            "NO"
        },
    );
    match (&w.domain, &w.workgroup) {
        (Some(d), _) => line(
            out,
            "AD domain",
            &format!(
                "{} {} (never changed)",
                d.name.as_deref().unwrap_or("-"),
                d.sid
            ),
        ),
        (None, Some(wg)) => line(out, "workgroup", wg),
        (None, None) => line(out, "AD domain", "not joined"),
    }
    line(
        out,
        "domain controller",
        if w.domain_controller { "YES" } else { "no" },
    );
    let v = &w.volume;
    line(
        out,
        "volume",
        &format!(
            "NTFS {}, {}-byte clusters, serial {}{}",
            v.ntfs_version,
            v.cluster_size,
            v.serial_number,
            v.label
                .as_deref()
                .filter(|l| !l.is_empty())
                .map(|l| format!(", label \"{l}\""))
                .unwrap_or_default()
        ),
    );
    line(
        out,
        "volume state",
        &format!(
            "{}; $LogFile {}{}; hiberfil.sys {}",
            if v.dirty { "DIRTY" } else { "clean" },
            match v.log_file_clean {
                Some(true) => "clean",
                Some(false) => "UNCLEAN",
                None => "unreadable",
            },
            v.log_file_version
                .as_deref()
                .map(|ver| format!(" (restart page {ver})"))
                .unwrap_or_default(),
            v.hibernation
        ),
    );
    out.push('\n');

    let _ = writeln!(out, "Local accounts ({}):", w.local_accounts.len());
    let mut rows = vec![vec!["RID".into(), "name".into(), "SID".into()]];
    for a in &w.local_accounts {
        rows.push(vec![a.rid.to_string(), a.name.clone(), a.sid.clone()]);
    }
    table(out, &rows);
    out.push('\n');

    let _ = writeln!(out, "Profiles ({}):", w.profiles.len());
    let mut rows = vec![vec![
        "SID".into(),
        "kind".into(),
        "path".into(),
        "hives".into(),
    ]];
    for p in &w.profiles {
        let mut hives = p.hives.len().to_string();
        if p.dpapi_master_keys.is_some() {
            hives.push_str(", DPAPI keys");
        }
        rows.push(vec![
            p.sid.clone(),
            p.kind.clone(),
            p.path.clone().unwrap_or_else(|| "-".into()),
            hives,
        ]);
    }
    table(out, &rows);
    out.push('\n');

    let _ = writeln!(out, "Hives ({}):", w.hives.len());
    let mut rows = vec![vec![
        "role".into(),
        "state".into(),
        "size".into(),
        "logs".into(),
        "path".into(),
    ]];
    for h in &w.hives {
        let logs: Vec<&str> = h
            .logs
            .iter()
            .map(|l| l.path.rsplit('.').next().unwrap_or(""))
            .collect();
        rows.push(vec![
            h.role.clone(),
            if h.state == "clean" {
                h.state.clone()
            } else {
                h.state.to_uppercase()
            },
            human(h.size),
            if logs.is_empty() {
                "-".into()
            } else {
                logs.join(",")
            },
            h.path.clone(),
        ]);
    }
    table(out, &rows);
    let s = &w.special_files;
    let _ = writeln!(
        out,
        "  {} MFT records checked{}: {} encrypted, {} compressed",
        s.records_scanned,
        if s.truncated {
            " (stopped at the limit)"
        } else {
            ""
        },
        s.encrypted,
        s.compressed
    );
    if !w.stores.is_empty() {
        let _ = writeln!(out, "  stores with checksums:");
        let mut rows = vec![vec![
            "    kind".to_string(),
            "SIDs".to_string(),
            "the clone".to_string(),
            "path".to_string(),
        ]];
        for st in &w.stores {
            rows.push(vec![
                format!("    {}", st.kind),
                st.sid_occurrences.to_string(),
                st.clone.clone(),
                st.path.clone(),
            ]);
        }
        table(out, &rows);
    }
    if !w.identifiers.is_empty() {
        let _ = writeln!(
            out,
            "  identifiers (made unique per clone; --keep to opt out):"
        );
        let mut rows = vec![vec![
            "    identifier".to_string(),
            "value".to_string(),
            "where Windows reads it".to_string(),
        ]];
        for id in &w.identifiers {
            let what = match &id.label {
                Some(l) => format!("    {} ({l})", id.kind),
                None => format!("    {}", id.kind),
            };
            for (i, loc) in id.locations.iter().enumerate() {
                let (a, b) = if i == 0 {
                    (what.clone(), id.value.clone())
                } else {
                    (String::new(), String::new())
                };
                rows.push(vec![a, b, loc.to_string()]);
            }
        }
        table(out, &rows);
        for id in w.identifiers.iter().filter(|i| !i.named_files.is_empty()) {
            let _ = writeln!(
                out,
                "    {} stays as in the master by default: {} machine key container(s) are named after it (docs/IDENTIFIERS.md)",
                id.kind,
                id.named_files.len()
            );
        }
    }
    if !w.unchanged_identifiers.is_empty() {
        let _ = writeln!(
            out,
            "  identifiers sidfs does not change (the same in every clone):"
        );
        for u in &w.unchanged_identifiers {
            let place = match (&u.location, &u.file) {
                (Some(l), _) => l.to_string(),
                (None, Some(f)) => f.clone(),
                (None, None) => "-".to_string(),
            };
            let _ = writeln!(out, "    {} {} ({place}): {}", u.name, u.value, u.why);
        }
    }
    out.push('\n');
}

fn line(out: &mut String, label: &str, value: &str) {
    let _ = writeln!(out, "  {label:<LABEL_WIDTH$} {value}");
}

/// Writes rows with columns padded to their widest cell (the first row is the header).
fn table(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut text = String::from(" ");
        for (c, cell) in row.iter().enumerate() {
            let _ = write!(text, " {cell:<width$}", width = widths[c]);
        }
        let _ = writeln!(out, "{}", text.trim_end());
    }
}

/// A data disk inspected for `--old-sid`: what it is, and its stores as for a Windows volume.
fn render_data_disk(d: &DataDiskReport, out: &mut String) {
    let sids: usize = d.stores.iter().map(|s| s.sid_occurrences).sum();
    let _ = writeln!(
        out,
        "Data disk: no Windows installation; inspected for --old-sid {}, as `sidfs mount --old-sid` clones it",
        d.old_sid
    );
    let _ = writeln!(
        out,
        "  {} stores with checksums, holding {sids} occurrences of {}",
        d.stores.len(),
        d.old_sid
    );
    if !d.stores.is_empty() {
        let mut rows = vec![vec![
            "    partition".to_string(),
            "kind".to_string(),
            "SIDs".to_string(),
            "the clone".to_string(),
            "path".to_string(),
        ]];
        for st in &d.stores {
            rows.push(vec![
                format!("    {}", st.partition),
                st.kind.clone(),
                st.sid_occurrences.to_string(),
                st.clone.clone(),
                st.path.clone(),
            ]);
        }
        table(out, &rows);
    }
    out.push('\n');
}
