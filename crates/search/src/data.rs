//! Datasets for training and evaluation: training slices and whole labelled volumes of
//! an ACDC-format tree (real ACDC or the synthetic cohort of slimseg-data).

use std::path::Path;

use ndarray::Array3;
use slimseg_data::pipeline::{Normalization, SliceDataset, normalize_volume};
use slimseg_data::split::Split;
use slimseg_data::{AcdcDataset, AcdcFrame, Phase};

use crate::config::DataConfig;
use crate::error::{Error, Result};

/// A labelled 3D frame ready for evaluation.
#[derive(Debug, Clone)]
pub struct EvalVolume {
    /// Patient number.
    pub patient: u32,
    /// ED or ES.
    pub phase: Phase,
    /// Normalised intensities `[z, y, x]`.
    pub image: Array3<f32>,
    /// Ground truth `[z, y, x]`, 0..=3.
    pub labels: Array3<u8>,
    /// Voxel spacing in mm, `[z, y, x]`.
    pub spacing: [f64; 3],
}

/// Evaluation volumes of labelled frames, normalised per volume.
pub fn eval_volumes(frames: &[AcdcFrame], norm: Normalization) -> Result<Vec<EvalVolume>> {
    frames
        .iter()
        .map(|f| {
            let labels = f.labels.as_ref().ok_or_else(|| {
                Error::Input(format!(
                    "{}: frame has no ground truth",
                    f.image.path.display()
                ))
            })?;
            let mut image = f.image.data.clone();
            normalize_volume(&mut image, norm);
            Ok(EvalVolume {
                patient: f.patient,
                phase: f.phase,
                image,
                labels: labels.data.clone(),
                spacing: f.image.spacing_zyx(),
            })
        })
        .collect()
}

/// The three sets of a split, loaded.
#[derive(Debug, Clone)]
pub struct Cohort {
    /// The patient lists.
    pub split: Split,
    /// Training slices (ED and ES, every slice).
    pub train: SliceDataset,
    /// Validation volumes.
    pub val: Vec<EvalVolume>,
    /// Test volumes.
    pub test: Vec<EvalVolume>,
}

/// Loads the ED/ES frames of every patient of `data.split` under `root`, normalised by
/// `data.normalization`, in the slice order of `data.orientation`.
pub fn load_cohort(root: &Path, data: &DataConfig) -> Result<Cohort> {
    let (split, norm) = (&data.split, data.normalization);
    let ds = AcdcDataset::open(root)?.with_orientation(data.orientation);
    let split = split.resolve(&ds.ids())?;
    split.check_available(&ds.ids(), root)?;
    let train = SliceDataset::from_frames(&ds.load_labelled_frames(&split.train)?, norm)?;
    if train.is_empty() {
        return Err(Error::Input(format!(
            "{}: the training patients have no slices",
            root.display()
        )));
    }
    let val = eval_volumes(&ds.load_labelled_frames(&split.val)?, norm)?;
    let test = eval_volumes(&ds.load_labelled_frames(&split.test)?, norm)?;
    Ok(Cohort {
        split,
        train,
        val,
        test,
    })
}
