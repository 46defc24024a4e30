//! The WMI repository as a whole structure of the patch stage: [`super::wmi::rewrite_wmi`]
//! adapted to disk ranges and edits, like [`super::ese_structure::EseStructure`]. It owns
//! `OBJECTS.DATA` and the mapping files (whose page checksums change); `INDEX.BTR` is only
//! checked to hold no SID.

use std::ops::Range;

use super::error::Result;
use super::stage::{Structure, StructureOutput};
use super::stream::{FileStream, STRUCTURE_LIMIT};
use super::wmi::{rewrite_wmi, WmiError, WmiOutput};
use super::{RewriteError, SidMapping};
use crate::image::{NtfsVolume, StreamLayout};
use crate::overlay::MasterImage;

/// The repository directory of Windows Vista and later, relative to the volume.
pub const WMI_DIR: &str = r"Windows\System32\wbem\Repository";
pub const OBJECTS: &str = "OBJECTS.DATA";
pub const INDEX: &str = "INDEX.BTR";
pub const MAPPINGS: [&str; 3] = ["MAPPING1.MAP", "MAPPING2.MAP", "MAPPING3.MAP"];

/// One file of the repository, as found on its volume.
pub struct RepositoryFile {
    pub name: &'static str,
    pub layout: StreamLayout,
    pub bytes: Vec<u8>,
}

/// The files of one volume's repository: `OBJECTS.DATA`, `INDEX.BTR` (if present) and the
/// mapping files present, in order.
pub struct Repository {
    pub objects: RepositoryFile,
    pub index: Option<RepositoryFile>,
    pub mappings: Vec<RepositoryFile>,
}

impl Repository {
    /// `Ok(None)`: the volume has no `OBJECTS.DATA`. An error: a file of it cannot be read.
    pub fn read(volume: &NtfsVolume) -> Result<Option<Self>, WmiFileError> {
        let file = |name: &'static str| -> Result<Option<RepositoryFile>, WmiFileError> {
            let path = format!(r"{WMI_DIR}\{name}");
            let at = |source| WmiFileError {
                path: path.clone(),
                source,
            };
            match volume.try_lookup(&path) {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(None),
                Err(e) => return Err(at(e)),
            }
            let layout = volume.stream_layout(&path, "").map_err(at)?;
            let bytes = volume.read_file(&path, "", STRUCTURE_LIMIT).map_err(at)?;
            Ok(Some(RepositoryFile {
                name,
                layout,
                bytes,
            }))
        };
        let Some(objects) = file(OBJECTS)? else {
            return Ok(None);
        };
        let index = file(INDEX)?;
        let mut mappings = Vec::new();
        for m in MAPPINGS {
            if let Some(f) = file(m)? {
                mappings.push(f);
            }
        }
        Ok(Some(Repository {
            objects,
            index,
            mappings,
        }))
    }

    /// The clone's files, or why the repository cannot be rewritten with valid checksums.
    pub fn rewrite(&self, map: &SidMapping) -> Result<WmiOutput, WmiRefusal> {
        let mappings: Vec<Vec<u8>> = self.mappings.iter().map(|m| m.bytes.clone()).collect();
        let index = self.index.as_ref().map_or(&[][..], |f| &f.bytes[..]);
        let out =
            rewrite_wmi(&self.objects.bytes, index, &mappings, map).map_err(WmiRefusal::Wmi)?;
        for (file, new) in std::iter::once((&self.objects, &out.objects))
            .chain(self.mappings.iter().zip(out.mappings.iter()))
        {
            if file.bytes != *new && (!file.layout.is_plain() || file.layout.extents().is_empty()) {
                return Err(WmiRefusal::NotInPlace {
                    file: file.name,
                    resident: file.layout.is_plain(),
                });
            }
        }
        Ok(out)
    }
}

/// Why a file of a WMI repository cannot be read.
#[derive(Debug)]
pub struct WmiFileError {
    /// The file's path in the volume.
    pub path: String,
    pub source: crate::image::ImageError,
}

impl std::fmt::Display for WmiFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.source)
    }
}

impl std::error::Error for WmiFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Why a WMI repository cannot be rewritten with valid checksums.
#[derive(Debug)]
pub enum WmiRefusal {
    /// The repository's records or pages cannot be rewritten.
    Wmi(WmiError),
    /// A file that would change is not stored in place: resident in its MFT record, or
    /// (`resident` false) compressed or encrypted.
    NotInPlace { file: &'static str, resident: bool },
}

impl std::fmt::Display for WmiRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WmiRefusal::Wmi(e) => write!(f, "{e}"),
            WmiRefusal::NotInPlace { file, resident } => write!(
                f,
                "{file} would change but is stored {}",
                if *resident {
                    "inside its MFT record (resident)"
                } else {
                    "compressed or encrypted"
                }
            ),
        }
    }
}

impl std::error::Error for WmiRefusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WmiRefusal::Wmi(e) => Some(e),
            WmiRefusal::NotInPlace { .. } => None,
        }
    }
}

/// The repository of one volume, registered when it holds the old SID and its rewrite was
/// checked on the master's files.
pub struct WmiStructure {
    partition: u32,
    objects: FileStream,
    mappings: Vec<(&'static str, FileStream)>,
    index: Option<FileStream>,
}

impl WmiStructure {
    pub fn new(repo: &Repository, partition: u32) -> Self {
        WmiStructure {
            partition,
            objects: FileStream::new(&repo.objects.layout),
            mappings: repo
                .mappings
                .iter()
                .map(|m| (m.name, FileStream::new(&m.layout)))
                .collect(),
            index: repo.index.as_ref().map(|f| FileStream::new(&f.layout)),
        }
    }
}

impl Structure for WmiStructure {
    fn name(&self) -> String {
        format!("WMI repository {WMI_DIR} (partition {})", self.partition)
    }

    fn owned(&self) -> Vec<Range<u64>> {
        let mut r = self.objects.owned();
        for (_, stream) in &self.mappings {
            r.extend(stream.owned());
        }
        r.sort_by_key(|x| x.start);
        r
    }

    fn transform(&self, master: &MasterImage, map: &SidMapping) -> Result<StructureOutput> {
        let objects = self.objects.read(master)?;
        let index = match &self.index {
            // A resident INDEX.BTR reads as empty here; it was checked in the survey.
            Some(stream) if !stream.is_empty() => stream.read(master)?,
            _ => Vec::new(),
        };
        let mut mappings = Vec::new();
        for (_, stream) in &self.mappings {
            mappings.push(stream.read(master)?);
        }
        let out = rewrite_wmi(&objects, &index, &mappings, map).map_err(RewriteError::Wmi)?;
        let mut owned_edits = self
            .objects
            .edits_checked(OBJECTS, &objects, &out.objects)?;
        for ((name, stream), (old, new)) in self
            .mappings
            .iter()
            .zip(mappings.iter().zip(out.mappings.iter()))
        {
            owned_edits.extend(stream.edits_checked(name, old, new)?);
        }
        owned_edits.sort_by_key(|(o, _)| *o);
        let r = &out.report;
        Ok(StructureOutput {
            owned_edits,
            record_edits: Vec::new(),
            summary: format!(
                "{} SID occurrences, {} of {} records changed with their CRC-32s, {} pages changed, {} page checksums recomputed (mapping sequence {})",
                r.replaced.total(),
                r.records_changed,
                r.records,
                r.pages_changed,
                r.page_checksums_updated,
                r.sequence
            ),
        })
    }
}

/// What to do about a repository sidfs cannot rewrite, for the refusal.
pub const ADVICE: &str = "remove the permanent WMI event subscriptions that hold it in the master (Get-CimInstance -Namespace root\\subscription __EventFilter, __EventConsumer, __FilterToConsumerBinding | Remove-CimInstance), or reset the repository (winmgmt /resetrepository), and capture it again";

/// The WMI repositories of the survey's volumes as structures, checked first (docs/SEMANTICS.md invariant
/// 8): one that holds the old SID but cannot be rewritten with valid checksums is an error
/// naming it; one without the SID is left alone (the byte rewrite finds nothing in it).
pub fn wmi_structures(
    survey: &super::survey::WindowsSurvey,
    map: &SidMapping,
) -> Result<Vec<Box<dyn Structure>>, RewriteError> {
    let mut out: Vec<Box<dyn Structure>> = Vec::new();
    for part in &survey.volumes {
        if let Some((_, structure)) = wmi_structure(part, map)? {
            out.extend(structure);
        }
    }
    Ok(out)
}

/// A volume's WMI repository and the structure that rewrites it (`None`: kept as it is).
type Checked = Option<(Repository, Option<Box<dyn Structure>>)>;

/// The WMI repository of one volume, if it has one, and what the clone does with it: `Some`
/// structure rewrites it, `None` keeps it as it is (no machine SID), an error refuses it.
fn wmi_structure(
    part: &super::survey::NtfsPart,
    map: &SidMapping,
) -> Result<Checked, RewriteError> {
    let name = format!(
        "the WMI repository {WMI_DIR} (partition {})",
        part.partition.index
    );
    let repo = match Repository::read(&part.volume) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(reason) => {
            return Err(RewriteError::WmiUnreadable {
                store: name,
                reason,
            })
        }
    };
    if map.find_all(&repo.objects.bytes, true).is_empty() {
        log::info!("{name}: holds no machine SID in OBJECTS.DATA, kept as it is");
        return Ok(Some((repo, None)));
    }
    match repo.rewrite(map) {
        Ok(out_files) => {
            log::info!("{name}: {:?}", out_files.report);
            let structure: Box<dyn Structure> =
                Box::new(WmiStructure::new(&repo, part.partition.index));
            Ok(Some((repo, Some(structure))))
        }
        Err(reason) => Err(RewriteError::WmiNotRewritable {
            store: name,
            reason,
        }),
    }
}

/// What the clone does with the WMI repository of one volume ([`wmi_structure`], the check
/// [`wmi_structures`] makes), for `sidfs inspect --old-sid`; `None` when it has none.
pub fn wmi_decision(
    part: &super::survey::NtfsPart,
    map: &SidMapping,
) -> Option<super::stage_builder::StoreDecision> {
    let (size, sid_occurrences, outcome) = match wmi_structure(part, map) {
        Ok(None) => return None,
        Ok(Some((repo, s))) => (
            repo.objects.bytes.len() as u64,
            map.find_all(&repo.objects.bytes, true).len(),
            Ok(s.is_some()),
        ),
        Err(e) => (0, 0, Err(e)),
    };
    Some(super::stage_builder::StoreDecision {
        kind: "wmi",
        path: format!(r"{WMI_DIR}\{OBJECTS}"),
        partition: part.partition.index,
        size,
        sid_occurrences,
        outcome,
    })
}
