//! `predict IN -o OUT`: segments a NIfTI volume with a stage's model of a run; the label
//! volume keeps the input's header and affine.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use slimseg_data::nii::{NonFinite, read_volume_with};
use slimseg_data::pipeline::{normalize_volume, resize_cubic};
use slimseg_model::infer::predict_volume_with;

use crate::graph::{self, State};
use crate::guard::check_output;
use crate::run::{DeviceArg, Open, Run, RunArgs};
use crate::stages::{ModelStage, load_stage_model};

/// Options of `predict`.
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// Input image volume (NIfTI, 3D).
    pub input: PathBuf,
    /// Output label volume (NIfTI, same header and affine as the input).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Model of this stage of the run.
    #[arg(long, value_enum, default_value = "finetuned")]
    pub stage: ModelStage,
    /// Slices per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Replace an existing output file (never the input, nor a file of the run).
    #[arg(long)]
    pub overwrite: bool,
    /// Replace NaN and infinite input voxels by the smallest finite intensity and say
    /// how many, instead of refusing the file.
    #[arg(long)]
    pub replace_non_finite: bool,
    /// Run directory.
    #[arg(long)]
    pub run: PathBuf,
    /// Device (overrides `train.device`): auto = CUDA when available.
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
}

/// `predict IN -o OUT`: segments a 3D volume along its through-plane axis (found from
/// the affine and spacing); the labels are on the input's grid and keep its header.
pub fn predict_cmd(args: PredictArgs) -> Result<()> {
    let run_args = RunArgs {
        device: args.device,
        ..RunArgs::dir(&args.run)
    };
    let run = Run::open(&run_args, Open::read())?;
    std::fs::metadata(&args.input)
        .with_context(|| format!("cannot read the input volume {}", args.input.display()))?;
    check_output(&args.out, &[&args.input], &run.root, args.overwrite)?;
    let policy = if args.replace_non_finite {
        NonFinite::ReplaceWithMin
    } else {
        NonFinite::Reject
    };
    let (vol, replaced) = read_volume_with(&args.input, policy)
        .with_context(|| format!("cannot read the input volume {}", args.input.display()))?;
    let file_header = vol.header.clone();
    let (vol, orientation) = vol.into_slice_order(run.cfg.data.orientation)?;
    let slices = vol.data.dim().0;
    let device = run.device()?;
    if let Some(State::Stale(_, why)) = graph::states(&run)
        .ok()
        .map(|s| s[args.stage.dir()].clone())
    {
        eprintln!(
            "warning: the {} stage is stale ({}); its model is used as it is",
            args.stage.dir(),
            why.join("; ")
        );
    }
    let m = load_stage_model(&run, args.stage, device)?;
    let mut image = vol.data;
    normalize_volume(&mut image, run.cfg.data.normalization);
    let labels = predict_volume_with(&m.model, image.view(), args.batch.max(1), |s, size| {
        resize_cubic(s, size, size)
    })?;
    drop(image);
    let counts = slimseg_data::acdc::label_counts(&labels);
    let labels = if orientation.is_identity() {
        labels
    } else {
        orientation.from_canonical(labels.view())
    };
    slimseg_data::nii::write_labels_like(&args.out, labels.view(), &file_header)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    if replaced > 0 {
        println!(
            "replaced {replaced} non-finite voxels of {} by the smallest finite intensity",
            args.input.display()
        );
    }
    if !orientation.is_identity() {
        println!("segmented in slice order: {}", orientation.describe());
    }
    println!(
        "wrote {} ({} x {} x {} voxels, {} slices; RV {} MYO {} LV {}) with the {} model",
        args.out.display(),
        file_header.shape_xyz()[0],
        file_header.shape_xyz()[1],
        file_header.shape_xyz()[2],
        slices,
        counts[1],
        counts[2],
        counts[3],
        args.stage.dir()
    );
    Ok(())
}
