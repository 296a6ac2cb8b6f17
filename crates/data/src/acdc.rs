//! The ACDC directory layout: patients, `Info.cfg`, ED/ES frames and their ground truth.
//!
//! ```text
//! <root>/{training,testing}/patientNNN/
//!     Info.cfg
//!     patientNNN_frameYY.nii.gz      one cardiac phase, 3D short-axis stack
//!     patientNNN_frameYY_gt.nii.gz   its labels: 0 bg, 1 RV cavity, 2 myocardium, 3 LV cavity
//!     patientNNN_4d.nii.gz           the whole cine sequence (read only on request)
//! ```
//!
//! The official archive unpacks to `<root>/database/{training,testing}`; both forms are
//! accepted. ED is not always frame 01: frames are taken from `Info.cfg`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::nii::{self, Volume, Volume4};
use crate::orient::{OrientationPolicy, SliceOrientation};

/// Label value of the right-ventricle cavity.
pub const LABEL_RV: u8 = 1;
/// Label value of the left-ventricle myocardium.
pub const LABEL_MYO: u8 = 2;
/// Label value of the left-ventricle cavity.
pub const LABEL_LV: u8 = 3;
/// Number of classes including background.
pub const NUM_CLASSES: usize = 4;
/// Class names indexed by label value.
pub const CLASS_NAMES: [&str; NUM_CLASSES] = ["BG", "RV", "MYO", "LV"];

/// Which half of ACDC a patient belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Subset {
    /// `training/` (patients 001-100 in ACDC).
    Training,
    /// `testing/` (patients 101-150 in ACDC).
    Testing,
}

impl Subset {
    /// Directory name under the root.
    pub fn dir_name(self) -> &'static str {
        match self {
            Subset::Training => "training",
            Subset::Testing => "testing",
        }
    }
}

/// Cardiac phase with ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// End diastole (largest LV).
    ED,
    /// End systole (smallest LV).
    ES,
}

impl Phase {
    /// Both phases, ED first.
    pub const BOTH: [Phase; 2] = [Phase::ED, Phase::ES];
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::ED => "ED",
            Phase::ES => "ES",
        })
    }
}

/// Pathology group of an ACDC patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Group {
    /// Normal subject (`NOR`).
    Nor,
    /// Previous myocardial infarction (`MINF`).
    Minf,
    /// Dilated cardiomyopathy (`DCM`).
    Dcm,
    /// Hypertrophic cardiomyopathy (`HCM`).
    Hcm,
    /// Abnormal right ventricle (`RV` in Info.cfg, `ARV` in the papers).
    Arv,
}

impl Group {
    /// All groups in ACDC's patient-number order (DCM, HCM, MINF, NOR, RV).
    pub const ACDC_ORDER: [Group; 5] =
        [Group::Dcm, Group::Hcm, Group::Minf, Group::Nor, Group::Arv];

    /// The code written in `Info.cfg`.
    pub fn code(self) -> &'static str {
        match self {
            Group::Nor => "NOR",
            Group::Minf => "MINF",
            Group::Dcm => "DCM",
            Group::Hcm => "HCM",
            Group::Arv => "RV",
        }
    }

    /// Parses an `Info.cfg` code (case-insensitive; `RV` and `ARV` both mean [`Group::Arv`]).
    pub fn parse(s: &str) -> Option<Group> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "NOR" => Group::Nor,
            "MINF" => Group::Minf,
            "DCM" => Group::Dcm,
            "HCM" => Group::Hcm,
            "RV" | "ARV" => Group::Arv,
            _ => return None,
        })
    }
}

/// The content of a patient's `Info.cfg`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientInfo {
    /// End-diastolic frame number (1-based).
    pub ed: u32,
    /// End-systolic frame number (1-based).
    pub es: u32,
    /// Pathology group; `None` only when the file has no `Group` line (the original 2017
    /// testing release withheld it).
    pub group: Option<Group>,
    /// Height in cm.
    pub height: f64,
    /// Weight in kg.
    pub weight: f64,
    /// Number of frames in the cine sequence.
    pub nb_frame: u32,
}

impl PatientInfo {
    /// Parses `Info.cfg` text: `Key: value` lines in any order, whitespace tolerated, keys
    /// case-insensitive. ED, ES, NbFrame, Height and Weight are required and numeric; ED
    /// and ES must be different frames in `1..=NbFrame`. `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let err = |reason: String| DataError::InvalidInfo {
            path: path.to_path_buf(),
            reason,
        };
        let mut fields: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim().trim_start_matches('\u{feff}');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once(':')
                .or_else(|| line.split_once('='))
                .ok_or_else(|| {
                    err(format!(
                        "line {}: expected `Key: value`, found {line:?}",
                        i + 1
                    ))
                })?;
            let key = k.trim().to_ascii_lowercase();
            if fields
                .insert(key.clone(), (i + 1, v.trim().to_string()))
                .is_some()
            {
                return Err(err(format!("line {}: duplicate key `{}`", i + 1, k.trim())));
            }
        }
        let number = |key: &str, name: &str| -> Result<f64> {
            let (line, v) = fields
                .get(key)
                .ok_or_else(|| err(format!("missing key `{name}`")))?;
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(x),
                _ => Err(err(format!(
                    "line {line}: `{name}` must be a number, found {v:?}"
                ))),
            }
        };
        let integer = |key: &str, name: &str| -> Result<u32> {
            let x = number(key, name)?;
            if x.fract() != 0.0 || !(0.0..=u32::MAX as f64).contains(&x) {
                let line = fields[key].0;
                return Err(err(format!(
                    "line {line}: `{name}` must be a non-negative integer, found {x}"
                )));
            }
            Ok(x as u32)
        };
        let ed = integer("ed", "ED")?;
        let es = integer("es", "ES")?;
        let nb_frame = integer("nbframe", "NbFrame")?;
        let height = number("height", "Height")?;
        let weight = number("weight", "Weight")?;
        let group = match fields.get("group") {
            None => None,
            Some((line, v)) => Some(Group::parse(v).ok_or_else(|| {
                err(format!(
                    "line {line}: unknown Group {v:?}, expected NOR, MINF, DCM, HCM or RV"
                ))
            })?),
        };
        for (name, f) in [("ED", ed), ("ES", es)] {
            if f < 1 || f > nb_frame {
                return Err(err(format!(
                    "{name} is frame {f}, outside 1..={nb_frame} (NbFrame)"
                )));
            }
        }
        if ed == es {
            return Err(err(format!(
                "ED and ES are both frame {ed}: end diastole and end systole must be different frames"
            )));
        }
        Ok(PatientInfo {
            ed,
            es,
            group,
            height,
            weight,
            nb_frame,
        })
    }

    /// Reads and parses an `Info.cfg` file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Renders the file as ACDC writes it (keys in alphabetical order).
    pub fn to_cfg_string(&self) -> String {
        let mut s = format!("ED: {}\nES: {}\n", self.ed, self.es);
        if let Some(g) = self.group {
            s.push_str(&format!("Group: {}\n", g.code()));
        }
        s.push_str(&format!(
            "Height: {:.1}\nNbFrame: {}\nWeight: {:.1}\n",
            self.height, self.nb_frame, self.weight
        ));
        s
    }

    /// Frame number of a phase.
    pub fn frame(&self, phase: Phase) -> u32 {
        match phase {
            Phase::ED => self.ed,
            Phase::ES => self.es,
        }
    }
}

/// One patient directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcdcPatient {
    /// Patient number (`patient042` -> 42).
    pub id: u32,
    /// `training` or `testing`.
    pub subset: Subset,
    /// The patient's directory.
    pub dir: PathBuf,
    /// Parsed `Info.cfg`.
    pub info: PatientInfo,
    /// How [`load_frame`](Self::load_frame) orders the in-plane axes.
    #[serde(default)]
    pub orientation: OrientationPolicy,
}

/// One loaded cardiac phase: image and (when present) labels on the same grid.
#[derive(Debug, Clone)]
pub struct AcdcFrame {
    /// Patient number.
    pub patient: u32,
    /// ED or ES.
    pub phase: Phase,
    /// Frame number in the cine sequence.
    pub frame: u32,
    /// The image in canonical slice order (`[slice, y, x]`, see [`crate::orient`]), raw
    /// intensities as f32; its header describes that grid.
    pub image: Volume<f32>,
    /// The ground truth on the image's grid, values 0..=3; `None` if the `_gt` file is
    /// absent.
    pub labels: Option<Volume<u8>>,
    /// How the files' voxel order maps to the canonical one.
    pub orientation: SliceOrientation,
}

/// `patient042` for 42.
pub fn patient_name(id: u32) -> String {
    format!("patient{id:03}")
}

/// Parses `patientNNN` (or a bare number) to its id.
pub fn parse_patient_name(s: &str) -> Option<u32> {
    let s = s.trim();
    let digits = s.strip_prefix("patient").unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl AcdcPatient {
    /// Opens one patient directory (its name must be `patientNNN`) and parses `Info.cfg`.
    pub fn open(dir: &Path, subset: Subset) -> Result<Self> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = name
            .strip_prefix("patient")
            .and_then(parse_patient_name)
            .ok_or_else(|| DataError::Layout {
                path: dir.to_path_buf(),
                reason: "patient directory must be named patientNNN".into(),
            })?;
        let info = PatientInfo::read(&dir.join("Info.cfg"))?;
        Ok(AcdcPatient {
            id,
            subset,
            dir: dir.to_path_buf(),
            info,
            orientation: OrientationPolicy::default(),
        })
    }

    /// `patientNNN`.
    pub fn name(&self) -> String {
        patient_name(self.id)
    }

    /// Path of frame `frame`'s image (`gt = false`) or labels (`gt = true`); prefers
    /// `.nii.gz` and falls back to an existing `.nii`.
    pub fn frame_path(&self, frame: u32, gt: bool) -> PathBuf {
        let suffix = if gt { "_gt" } else { "" };
        let base = format!("{}_frame{frame:02}{suffix}", self.name());
        let gz = self.dir.join(format!("{base}.nii.gz"));
        let plain = self.dir.join(format!("{base}.nii"));
        if !gz.exists() && plain.exists() {
            plain
        } else {
            gz
        }
    }

    /// Path of the 4D cine file.
    pub fn path_4d(&self) -> PathBuf {
        let gz = self.dir.join(format!("{}_4d.nii.gz", self.name()));
        let plain = self.dir.join(format!("{}_4d.nii", self.name()));
        if !gz.exists() && plain.exists() {
            plain
        } else {
            gz
        }
    }

    /// Loads the image of `phase` and its labels when the `_gt` file exists, both in
    /// canonical slice order ([`crate::orient`], under the patient's `orientation`). Non-finite image voxels are an error;
    /// labels are validated (integers 0..=3, the image's grid: extents, spacing,
    /// direction and origin).
    pub fn load_frame(&self, phase: Phase) -> Result<AcdcFrame> {
        let frame = self.info.frame(phase);
        let image = nii::read_volume(&self.frame_path(frame, false))?;
        let orientation = SliceOrientation::of(&image.header, &image.path, self.orientation)?;
        let gt_path = self.frame_path(frame, true);
        let labels = if gt_path.exists() {
            let labels = nii::read_labels(&gt_path)?;
            if labels.shape_xyz() != image.shape_xyz() {
                return Err(DataError::ShapeMismatch {
                    path: gt_path,
                    reference: image.path.clone(),
                    expected: image.shape_xyz(),
                    found: labels.shape_xyz(),
                });
            }
            if let Some(reason) = nii::geometry_difference(&labels.header, &image.header) {
                return Err(DataError::GeometryMismatch {
                    path: gt_path,
                    reference: image.path.clone(),
                    reason,
                });
            }
            Some(labels.reoriented(&orientation))
        } else {
            None
        };
        Ok(AcdcFrame {
            patient: self.id,
            phase,
            frame,
            image: image.reoriented(&orientation),
            labels,
            orientation,
        })
    }

    /// Like [`load_frame`](Self::load_frame) but fails when the labels are missing.
    pub fn load_labelled_frame(&self, phase: Phase) -> Result<AcdcFrame> {
        let f = self.load_frame(phase)?;
        if f.labels.is_none() {
            return Err(DataError::Layout {
                path: self.frame_path(f.frame, true),
                reason: "ground-truth file is missing".into(),
            });
        }
        Ok(f)
    }

    /// Loads the whole cine sequence (`[t, z, y, x]`); checks that it has NbFrame frames.
    pub fn load_4d(&self) -> Result<Volume4> {
        let v = nii::read_volume_4d(&self.path_4d())?;
        let t = v.data.shape()[0];
        if t != self.info.nb_frame as usize {
            return Err(DataError::Layout {
                path: v.path.clone(),
                reason: format!(
                    "has {t} frames but Info.cfg says NbFrame {}",
                    self.info.nb_frame
                ),
            });
        }
        Ok(v)
    }
}

/// An ACDC tree: all patients of `training/` and `testing/`, sorted by id.
#[derive(Debug, Clone)]
pub struct AcdcDataset {
    /// The directory holding `training/` and/or `testing/`.
    pub root: PathBuf,
    /// Patients sorted by id.
    pub patients: Vec<AcdcPatient>,
}

impl AcdcDataset {
    /// Discovers the patients under `root` (or `root/database`). Entries that are not
    /// `patientNNN` directories are ignored; a patient directory with a missing or
    /// malformed Info.cfg is an error. Duplicate ids across subsets are an error.
    pub fn open(root: &Path) -> Result<Self> {
        let scan = Self::scan(root)?;
        match scan.broken.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(scan.dataset),
        }
    }

    /// Like [`open`](Self::open), but a broken patient directory (missing or malformed
    /// Info.cfg, a duplicate id) is collected instead of ending the scan, and folders
    /// that are not patients and empty subset folders are listed. Only a root without
    /// `training/` or `testing/`, or an unreadable folder, is an error.
    pub fn scan(root: &Path) -> Result<DatasetScan> {
        let base = if !root.join("training").is_dir()
            && !root.join("testing").is_dir()
            && root.join("database").is_dir()
        {
            root.join("database")
        } else {
            root.to_path_buf()
        };
        let mut scan = DatasetScan {
            dataset: AcdcDataset {
                root: base.clone(),
                patients: Vec::new(),
            },
            broken: Vec::new(),
            stray: Vec::new(),
            empty_subsets: Vec::new(),
        };
        let mut found_subset = false;
        for subset in [Subset::Training, Subset::Testing] {
            let dir = base.join(subset.dir_name());
            if !dir.is_dir() {
                continue;
            }
            found_subset = true;
            let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
                .map_err(|e| DataError::io(&dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            entries.sort();
            let mut patients = 0;
            for p in entries {
                let is_patient = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix("patient"))
                    .is_some_and(|d| parse_patient_name(d).is_some());
                if !is_patient {
                    scan.stray.push(p);
                    continue;
                }
                patients += 1;
                match AcdcPatient::open(&p, subset) {
                    Ok(patient) => scan.dataset.patients.push(patient),
                    Err(e) => scan.broken.push((p, e)),
                }
            }
            if patients == 0 {
                scan.empty_subsets.push(dir);
            }
        }
        if !found_subset {
            return Err(DataError::Layout {
                path: root.to_path_buf(),
                reason: "no `training/` or `testing/` directory (expected an ACDC root)".into(),
            });
        }
        let patients = &mut scan.dataset.patients;
        patients.sort_by_key(|p| p.id);
        let mut i = 1;
        while i < patients.len() {
            if patients[i].id == patients[i - 1].id {
                let dup = patients.remove(i);
                let reason = format!(
                    "duplicate patient id {} (also {})",
                    dup.id,
                    patients[i - 1].dir.display()
                );
                let path = dup.dir;
                scan.broken
                    .push((path.clone(), DataError::Layout { path, reason }));
            } else {
                i += 1;
            }
        }
        Ok(scan)
    }

    /// The same dataset with frames loaded under `policy` (default
    /// [`OrientationPolicy::Stored`]).
    pub fn with_orientation(mut self, policy: OrientationPolicy) -> Self {
        for p in &mut self.patients {
            p.orientation = policy;
        }
        self
    }

    /// The patient with this id.
    pub fn patient(&self, id: u32) -> Option<&AcdcPatient> {
        self.patients
            .binary_search_by_key(&id, |p| p.id)
            .ok()
            .map(|i| &self.patients[i])
    }

    /// Patients of one subset.
    pub fn subset(&self, subset: Subset) -> impl Iterator<Item = &AcdcPatient> {
        self.patients.iter().filter(move |p| p.subset == subset)
    }

    /// All patient ids.
    pub fn ids(&self) -> Vec<u32> {
        self.patients.iter().map(|p| p.id).collect()
    }

    /// Loads ED and ES frames with labels of the given patients, in parallel. Fails on the
    /// first missing patient or unreadable file.
    pub fn load_labelled_frames(&self, ids: &[u32]) -> Result<Vec<AcdcFrame>> {
        let patients: Vec<&AcdcPatient> = ids
            .iter()
            .map(|&id| {
                self.patient(id).ok_or_else(|| DataError::Layout {
                    path: self.root.clone(),
                    reason: format!("no directory for {}", patient_name(id)),
                })
            })
            .collect::<Result<_>>()?;
        let nested: Vec<Vec<AcdcFrame>> = patients
            .par_iter()
            .map(|p| {
                Phase::BOTH
                    .iter()
                    .map(|&ph| p.load_labelled_frame(ph))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        Ok(nested.into_iter().flatten().collect())
    }
}

/// Label statistics of one phase of one patient.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameStats {
    /// Patient number.
    pub patient: u32,
    /// ED or ES.
    pub phase: Phase,
    /// Image extents `[x, y, z]`.
    pub shape: [usize; 3],
    /// Spacing `[x, y, z]` in mm.
    pub spacing: [f64; 3],
    /// Volume of each class in millilitres (index = label; index 0 is background).
    pub volume_ml: [f64; NUM_CLASSES],
}

/// What [`AcdcDataset::scan`] found: the readable patients and what is wrong around them.
#[derive(Debug)]
pub struct DatasetScan {
    /// The patients whose directory and Info.cfg are readable.
    pub dataset: AcdcDataset,
    /// Patient directories that could not be opened, with the reason.
    pub broken: Vec<(PathBuf, DataError)>,
    /// Folders inside `training/` or `testing/` that are not `patientNNN`.
    pub stray: Vec<PathBuf>,
    /// `training/` or `testing/` folders without any patient.
    pub empty_subsets: Vec<PathBuf>,
}

/// The result of checking a whole ACDC tree (`slimseg data check`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetCheck {
    /// The root checked.
    pub root: PathBuf,
    /// Number of training patients.
    pub training: usize,
    /// Number of testing patients.
    pub testing: usize,
    /// Patients per group code (`"NOR"`, ..., `"?"` when missing).
    pub groups: BTreeMap<String, usize>,
    /// Per-frame statistics of every ED/ES frame that loaded with labels.
    pub frames: Vec<FrameStats>,
    /// Frames without a `_gt` file (testing data of the 2017 release).
    pub unlabelled_frames: usize,
    /// One message per problem found (each names the file).
    pub problems: Vec<String>,
}

impl DatasetCheck {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Mean and standard deviation (sample) of each class's volume in ml at `phase`.
    pub fn volume_stats(&self, phase: Phase) -> [(f64, f64); NUM_CLASSES] {
        let vals: Vec<&FrameStats> = self.frames.iter().filter(|f| f.phase == phase).collect();
        let mut out = [(0.0, 0.0); NUM_CLASSES];
        for (c, o) in out.iter_mut().enumerate() {
            let xs: Vec<f64> = vals.iter().map(|f| f.volume_ml[c]).collect();
            *o = mean_sd(&xs);
        }
        out
    }
}

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let sd = if xs.len() > 1 {
        (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, sd)
}

impl std::fmt::Display for DatasetCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "ACDC root: {}", self.root.display())?;
        writeln!(
            f,
            "patients: {} training, {} testing",
            self.training, self.testing
        )?;
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|(g, n)| format!("{g} {n}"))
            .collect();
        writeln!(f, "groups: {}", groups.join(", "))?;
        writeln!(
            f,
            "labelled frames: {} ({} without ground truth)",
            self.frames.len(),
            self.unlabelled_frames
        )?;
        if !self.frames.is_empty() {
            let (mut zmin, mut zmax) = (usize::MAX, 0);
            let (mut smin, mut smax) = (f64::INFINITY, 0.0f64);
            for fr in &self.frames {
                zmin = zmin.min(fr.shape[2]);
                zmax = zmax.max(fr.shape[2]);
                smin = smin.min(fr.spacing[0]);
                smax = smax.max(fr.spacing[0]);
            }
            writeln!(
                f,
                "slices per volume: {zmin}..{zmax}; in-plane spacing {smin:.2}..{smax:.2} mm"
            )?;
            for phase in Phase::BOTH {
                let st = self.volume_stats(phase);
                writeln!(
                    f,
                    "{phase:?} volumes (ml, mean ± sd): RV {:.1} ± {:.1}, MYO {:.1} ± {:.1}, LV {:.1} ± {:.1}",
                    st[1].0, st[1].1, st[2].0, st[2].1, st[3].0, st[3].1
                )?;
            }
        }
        if self.problems.is_empty() {
            write!(f, "no problems found")
        } else {
            writeln!(f, "{} problem(s):", self.problems.len())?;
            for p in &self.problems {
                writeln!(f, "  - {p}")?;
            }
            Ok(())
        }
    }
}

/// Voxel counts per label value.
pub fn label_counts(labels: &ndarray::Array3<u8>) -> [u64; NUM_CLASSES] {
    let mut c = [0u64; NUM_CLASSES];
    for &v in labels.iter() {
        c[(v as usize).min(NUM_CLASSES - 1)] += 1;
    }
    c
}

/// Checks every patient of an ACDC tree with the rules training applies, and more:
/// Info.cfg (present, well-formed, ED != ES), ED/ES images (readable, finite voxels, a
/// slice axis that can be found), labels (present for training patients, values 0..=3,
/// the image's extents, spacing, direction and origin), and 4D files when `check_4d`
/// (header only: frame count and grid). Stray folders and empty `training/` or
/// `testing/` folders are problems too. Each broken patient is one problem and the check
/// goes on; only an unreadable root is an error.
pub fn check_dataset(root: &Path, check_4d: bool) -> Result<DatasetCheck> {
    let scan = AcdcDataset::scan(root)?;
    let ds = &scan.dataset;
    let per_patient: Vec<(Vec<FrameStats>, usize, Option<String>)> = ds
        .patients
        .par_iter()
        .map(|p| {
            let mut stats = Vec::new();
            let mut unlabelled = 0;
            let mut problems = Vec::new();
            for phase in Phase::BOTH {
                match p.load_frame(phase) {
                    Ok(fr) => match &fr.labels {
                        Some(l) => {
                            let s = l.spacing();
                            let voxel_ml = s[0] * s[1] * s[2] / 1000.0;
                            let counts = label_counts(&l.data);
                            stats.push(FrameStats {
                                patient: p.id,
                                phase,
                                shape: fr.image.shape_xyz(),
                                spacing: fr.image.spacing(),
                                volume_ml: counts.map(|n| n as f64 * voxel_ml),
                            });
                        }
                        None if p.subset == Subset::Training => problems.push(format!(
                            "{phase:?} ground truth {} is missing (training needs it)",
                            p.frame_path(fr.frame, true).display()
                        )),
                        None => unlabelled += 1,
                    },
                    Err(e) => problems.push(format!("{phase:?}: {e}")),
                }
            }
            if check_4d {
                let path = p.path_4d();
                match nii::read_header(&path) {
                    Ok(h) => {
                        let s = h.shape();
                        let t = s.get(3).copied().unwrap_or(1);
                        if t != p.info.nb_frame as usize {
                            problems.push(format!(
                                "{}: {t} frames but Info.cfg says NbFrame {}",
                                path.display(),
                                p.info.nb_frame
                            ));
                        }
                        if let Ok(frame) = nii::read_header(&p.frame_path(p.info.ed, false)) {
                            if h.shape_xyz() != frame.shape_xyz() {
                                problems.push(format!(
                                    "{}: grid {:?} differs from the frames' {:?}",
                                    path.display(),
                                    h.shape_xyz(),
                                    frame.shape_xyz()
                                ));
                            }
                        }
                    }
                    Err(e) => problems.push(e.to_string()),
                }
            }
            let problem =
                (!problems.is_empty()).then(|| format!("{}: {}", p.name(), problems.join("; ")));
            (stats, unlabelled, problem)
        })
        .collect();
    let mut check = DatasetCheck {
        root: ds.root.clone(),
        training: ds.subset(Subset::Training).count(),
        testing: ds.subset(Subset::Testing).count(),
        groups: BTreeMap::new(),
        frames: Vec::new(),
        unlabelled_frames: 0,
        problems: Vec::new(),
    };
    for p in &ds.patients {
        let g = p.info.group.map(|g| g.code()).unwrap_or("?");
        *check.groups.entry(g.to_string()).or_default() += 1;
    }
    for dir in &scan.empty_subsets {
        check
            .problems
            .push(format!("{}: no patient folder in it", dir.display()));
    }
    for (dir, e) in &scan.broken {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        check.problems.push(format!("{name}: {e}"));
    }
    for dir in &scan.stray {
        check.problems.push(format!(
            "{}: not a patient folder (expected patientNNN)",
            dir.display()
        ));
    }
    for (s, u, pr) in per_patient {
        check.frames.extend(s);
        check.unlabelled_frames += u;
        check.problems.extend(pr);
    }
    Ok(check)
}
