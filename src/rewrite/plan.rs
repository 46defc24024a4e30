//! Turning a surveyed master and a seed into the clone's SID and its patch stage.

use crate::rewrite::derive::{check_explicit_sid, derive_new_sid};
use crate::rewrite::model::WindowsSurvey;
use crate::rewrite::stage::{SidPatchStage, Structure};
use crate::rewrite::SidMapping;
use crate::sid::MachineSid;

/// The clone's identity: the master's machine SID and the one that replaces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SidChoice {
    pub old: MachineSid,
    pub new: MachineSid,
}

/// How the new SID is decided, in order of precedence.
pub enum SidSource<'a> {
    /// Recorded in the clone's state by an earlier mount (old, new as strings).
    Recorded(&'a str, &'a str),
    /// Given with `--sid`.
    Explicit(MachineSid),
    /// Derived from the seed.
    Seed(u64),
}

pub fn choose_sid(survey: &WindowsSurvey, source: SidSource<'_>) -> Result<SidChoice, String> {
    let old = survey.old_sid;
    match source {
        SidSource::Recorded(o, n) => {
            let recorded_old: MachineSid = o
                .parse()
                .map_err(|e| format!("state records SID {o:?}: {e}"))?;
            let new: MachineSid = n
                .parse()
                .map_err(|e| format!("state records SID {n:?}: {e}"))?;
            if recorded_old != old {
                return Err(format!(
                    "the clone was made for machine SID {recorded_old}, but the master's is {old}; restore the master or pass a new --state"
                ));
            }
            Ok(SidChoice { old, new })
        }
        SidSource::Explicit(new) => {
            check_explicit_sid(&old, &new, &survey.constraints).map_err(|e| e.to_string())?;
            Ok(SidChoice { old, new })
        }
        SidSource::Seed(seed) => {
            let new = derive_new_sid(&old, seed, &survey.constraints).map_err(|e| e.to_string())?;
            Ok(SidChoice { old, new })
        }
    }
}

/// The whole structures transformed on first touch (hives, `$Secure`).
pub fn structures(_survey: &WindowsSurvey) -> Vec<Box<dyn Structure>> {
    Vec::new()
}

pub fn build_stage(
    survey: &WindowsSurvey,
    choice: &SidChoice,
    disk_size: u64,
) -> Result<SidPatchStage, String> {
    let map = SidMapping::new(choice.old, choice.new)?;
    let excluded = survey.excluded.iter().map(|(r, _)| r.clone()).collect();
    Ok(SidPatchStage::new(
        map,
        excluded,
        structures(survey),
        disk_size,
    ))
}
