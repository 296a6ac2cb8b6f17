//! `evaluate --pred DIR --gt DIR`: scores a folder of predicted label volumes against
//! ground truth, matched by file name (`NAME.nii.gz` against `NAME.nii.gz` or
//! `NAME_gt.nii.gz`, ACDC's naming). Per case and class: Dice, IoU, HD95 in mm and in
//! voxels, TP, FP, FN, predicted and reference voxels; per class the mean and standard
//! deviation over cases, and the mean over the foreground classes. The layout follows
//! nnU-Net's `summary.json` (`metric_per_case`, `mean`, `foreground_mean`). Dice and HD95
//! follow the empty-mask convention named in the output (TransUNet's by default, as the
//! run's `eval.json`), so the numbers equal those of `slimseg eval` on the same files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;
use slimseg_data::metrics::{Convention, evaluate_class};
use slimseg_data::nii::{geometry_difference, read_labels};

use crate::predict::{nifti_files, split_nifti_name};
use crate::run::write_json;

/// Empty-mask convention on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConventionArg {
    /// TransUNet's: an empty prediction scores Dice 0 and HD95 0; a prediction of a class
    /// absent from the reference scores Dice 1 and HD95 0.
    Transunet,
    /// Undefined cases are left out: Dice needs a non-empty union, HD95 two non-empty masks.
    Strict,
}

/// Options of `evaluate`.
#[derive(Debug, Clone, Args)]
pub struct EvaluateArgs {
    /// Folder of predicted label volumes (`.nii`, `.nii.gz`).
    #[arg(long)]
    pub pred: PathBuf,
    /// Folder of reference label volumes: the same names, or with `_gt` before the
    /// extension.
    #[arg(long)]
    pub gt: PathBuf,
    /// Labels to score (comma-separated, of 1 RV, 2 MYO, 3 LV).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub labels: Vec<u8>,
    /// Empty-mask convention of Dice and HD95.
    #[arg(long, value_enum, default_value = "transunet")]
    pub convention: ConventionArg,
    /// Write the summary as JSON to this file.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

/// Scores of one class in one case.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClassScores {
    /// Dice (by the convention).
    #[serde(rename = "Dice")]
    pub dice: Option<f64>,
    /// TP / (TP + FP + FN); absent when both masks are empty.
    #[serde(rename = "IoU")]
    pub iou: Option<f64>,
    /// HD95 in millimetres (by the convention).
    #[serde(rename = "HD95_mm")]
    pub hd95_mm: Option<f64>,
    /// HD95 in voxels (by the convention).
    #[serde(rename = "HD95_vox")]
    pub hd95_vox: Option<f64>,
    /// Voxels in both.
    #[serde(rename = "TP")]
    pub tp: u64,
    /// Voxels predicted only.
    #[serde(rename = "FP")]
    pub fp: u64,
    /// Voxels of the reference only.
    #[serde(rename = "FN")]
    pub fn_: u64,
    /// Predicted voxels.
    pub n_pred: u64,
    /// Reference voxels.
    pub n_ref: u64,
}

/// One case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseScores {
    /// The prediction.
    pub prediction_file: PathBuf,
    /// Its reference.
    pub reference_file: PathBuf,
    /// By label.
    pub metrics: BTreeMap<String, ClassScores>,
}

/// Mean (or sd) of the metrics of a class over cases (defined values only).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Aggregate {
    #[serde(rename = "Dice")]
    dice: Option<f64>,
    #[serde(rename = "IoU")]
    iou: Option<f64>,
    #[serde(rename = "HD95_mm")]
    hd95_mm: Option<f64>,
    #[serde(rename = "HD95_vox")]
    hd95_vox: Option<f64>,
    #[serde(rename = "TP")]
    tp: Option<f64>,
    #[serde(rename = "FP")]
    fp: Option<f64>,
    #[serde(rename = "FN")]
    fn_: Option<f64>,
    n_pred: Option<f64>,
    n_ref: Option<f64>,
}

/// What `summary.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The empty-mask convention and what it means.
    pub convention: BTreeMap<&'static str, String>,
    /// Labels scored.
    pub labels: Vec<u8>,
    /// Every case.
    pub metric_per_case: Vec<CaseScores>,
    /// Per label, the mean over cases.
    pub mean: BTreeMap<String, Aggregate>,
    /// Per label, the sample standard deviation over cases.
    pub sd: BTreeMap<String, Aggregate>,
    /// The mean of the per-label means.
    pub foreground_mean: Aggregate,
    /// References without a prediction.
    pub references_without_prediction: Vec<PathBuf>,
}

/// Mean and sample sd of the defined values.
fn mean_sd(values: &[Option<f64>]) -> (Option<f64>, Option<f64>) {
    let v: Vec<f64> = values.iter().flatten().copied().collect();
    if v.is_empty() {
        return (None, None);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.len() > 1)
        .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (Some(mean), sd)
}

fn aggregate(cases: &[&ClassScores]) -> (Aggregate, Aggregate) {
    let pick = |f: &dyn Fn(&ClassScores) -> Option<f64>| {
        mean_sd(&cases.iter().map(|c| f(c)).collect::<Vec<_>>())
    };
    let (dice, dice_sd) = pick(&|c| c.dice);
    let (iou, iou_sd) = pick(&|c| c.iou);
    let (hm, hm_sd) = pick(&|c| c.hd95_mm);
    let (hv, hv_sd) = pick(&|c| c.hd95_vox);
    let (tp, tp_sd) = pick(&|c| Some(c.tp as f64));
    let (fp, fp_sd) = pick(&|c| Some(c.fp as f64));
    let (fn_, fn_sd) = pick(&|c| Some(c.fn_ as f64));
    let (np, np_sd) = pick(&|c| Some(c.n_pred as f64));
    let (nr, nr_sd) = pick(&|c| Some(c.n_ref as f64));
    (
        Aggregate {
            dice,
            iou,
            hd95_mm: hm,
            hd95_vox: hv,
            tp,
            fp,
            fn_,
            n_pred: np,
            n_ref: nr,
        },
        Aggregate {
            dice: dice_sd,
            iou: iou_sd,
            hd95_mm: hm_sd,
            hd95_vox: hv_sd,
            tp: tp_sd,
            fp: fp_sd,
            fn_: fn_sd,
            n_pred: np_sd,
            n_ref: nr_sd,
        },
    )
}

/// Scores one prediction against its reference.
fn score_case(pred: &Path, gt: &Path, labels: &[u8], convention: Convention) -> Result<CaseScores> {
    let p = read_labels(pred)?;
    let g = read_labels(gt)?;
    if let Some(why) = geometry_difference(&p.header, &g.header) {
        bail!(
            "{} and {}: the prediction's geometry differs from the reference's ({why})",
            pred.display(),
            gt.display()
        );
    }
    let spacing = g.spacing_zyx();
    let mut metrics = BTreeMap::new();
    for &k in labels {
        let pm = p.data.mapv(|v| v == k);
        let gm = g.data.mapv(|v| v == k);
        let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
        for (&a, &b) in pm.iter().zip(gm.iter()) {
            match (a, b) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fn_ += 1,
                _ => {}
            }
        }
        let m = evaluate_class(pm.view(), gm.view(), spacing, convention);
        let union = tp + fp + fn_;
        metrics.insert(
            k.to_string(),
            ClassScores {
                dice: m.dice,
                iou: (union > 0).then(|| tp as f64 / union as f64),
                hd95_mm: m.hd95_mm,
                hd95_vox: m.hd95_vox,
                tp,
                fp,
                fn_,
                n_pred: tp + fp,
                n_ref: tp + fn_,
            },
        );
    }
    Ok(CaseScores {
        prediction_file: pred.to_path_buf(),
        reference_file: gt.to_path_buf(),
        metrics,
    })
}

/// `evaluate`.
pub fn cmd(args: EvaluateArgs) -> Result<()> {
    if args.labels.is_empty() || args.labels.iter().any(|&l| !(1..=3).contains(&l)) {
        bail!("--labels: give labels among 1 (RV), 2 (MYO), 3 (LV)");
    }
    let mut labels = args.labels.clone();
    labels.sort_unstable();
    labels.dedup();
    let convention = match args.convention {
        ConventionArg::Transunet => Convention::TransUnet,
        ConventionArg::Strict => Convention::Strict,
    };
    let preds = nifti_files(&args.pred)?;
    if preds.is_empty() {
        bail!("{}: no .nii or .nii.gz files", args.pred.display());
    }
    let refs = nifti_files(&args.gt)?;
    let mut used = Vec::new();
    let mut cases = Vec::new();
    for name in &preds {
        let (stem, ext) = split_nifti_name(name).expect("listed as NIfTI");
        // `_gt` first: in an ACDC patient folder the bare name is the image.
        let candidates = [format!("{stem}_gt{ext}"), name.clone()];
        let Some(r) = candidates.iter().find(|c| refs.contains(c)) else {
            bail!(
                "{}: no reference {} or {} in {}",
                args.pred.join(name).display(),
                candidates[0],
                candidates[1],
                args.gt.display()
            );
        };
        used.push(r.clone());
        cases.push(score_case(
            &args.pred.join(name),
            &args.gt.join(r),
            &labels,
            convention,
        )?);
    }
    let mut mean = BTreeMap::new();
    let mut sd = BTreeMap::new();
    for &k in &labels {
        let key = k.to_string();
        let per: Vec<&ClassScores> = cases.iter().map(|c| &c.metrics[&key]).collect();
        let (m, s) = aggregate(&per);
        mean.insert(key.clone(), m);
        sd.insert(key, s);
    }
    let fg = |f: &dyn Fn(&Aggregate) -> Option<f64>| {
        mean_sd(&mean.values().map(f).collect::<Vec<_>>()).0
    };
    let foreground_mean = Aggregate {
        dice: fg(&|a| a.dice),
        iou: fg(&|a| a.iou),
        hd95_mm: fg(&|a| a.hd95_mm),
        hd95_vox: fg(&|a| a.hd95_vox),
        tp: fg(&|a| a.tp),
        fp: fg(&|a| a.fp),
        fn_: fg(&|a| a.fn_),
        n_pred: fg(&|a| a.n_pred),
        n_ref: fg(&|a| a.n_ref),
    };
    let meaning = match convention {
        Convention::TransUnet => {
            "TransUNet's calculate_metric_percase: both masks non-empty: computed; a \
             prediction of a class absent from the reference: Dice 1, HD95 0; an empty \
             prediction: Dice 0, HD95 0. IoU is TP / (TP + FP + FN), absent when both masks \
             are empty."
        }
        Convention::Strict => {
            "undefined values are left out: Dice needs a non-empty union, HD95 two \
             non-empty masks; IoU is TP / (TP + FP + FN), absent when both masks are empty."
        }
    };
    let summary = Summary {
        convention: BTreeMap::from([
            (
                "name",
                match convention {
                    Convention::TransUnet => "transunet".to_string(),
                    Convention::Strict => "strict".to_string(),
                },
            ),
            ("meaning", meaning.to_string()),
        ]),
        labels: labels.clone(),
        references_without_prediction: refs
            .iter()
            .filter(|r| !used.contains(r))
            .map(|r| args.gt.join(r))
            .collect(),
        metric_per_case: cases,
        mean,
        sd,
        foreground_mean,
    };
    let names = ["", "RV", "MYO", "LV"];
    println!(
        "{} cases, convention {}; mean (sd) over cases",
        summary.metric_per_case.len(),
        summary.convention["name"]
    );
    println!(
        "{:<6} {:>16} {:>16} {:>18} {:>18}",
        "label", "Dice", "IoU", "HD95 (mm)", "HD95 (voxels)"
    );
    let cell = |m: Option<f64>, s: Option<f64>| match (m, s) {
        (Some(m), Some(s)) => format!("{m:.4} ({s:.4})"),
        (Some(m), None) => format!("{m:.4}"),
        _ => "-".into(),
    };
    for &k in &labels {
        let (m, s) = (&summary.mean[&k.to_string()], &summary.sd[&k.to_string()]);
        println!(
            "{:<6} {:>16} {:>16} {:>18} {:>18}",
            format!("{k} {}", names[k as usize]),
            cell(m.dice, s.dice),
            cell(m.iou, s.iou),
            cell(m.hd95_mm, s.hd95_mm),
            cell(m.hd95_vox, s.hd95_vox)
        );
    }
    let f = &summary.foreground_mean;
    println!(
        "{:<6} {:>16} {:>16} {:>18} {:>18}",
        "mean",
        cell(f.dice, None),
        cell(f.iou, None),
        cell(f.hd95_mm, None),
        cell(f.hd95_vox, None)
    );
    if !summary.references_without_prediction.is_empty() {
        eprintln!(
            "note: {} reference(s) in {} have no prediction",
            summary.references_without_prediction.len(),
            args.gt.display()
        );
    }
    if let Some(p) = &args.out {
        write_json(p, &summary)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd_of_defined_values() {
        let (m, s) = mean_sd(&[Some(1.0), None, Some(3.0)]);
        assert_eq!(m, Some(2.0));
        assert!((s.unwrap() - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(mean_sd(&[None]), (None, None));
        assert_eq!(mean_sd(&[Some(5.0)]), (Some(5.0), None));
    }
}
