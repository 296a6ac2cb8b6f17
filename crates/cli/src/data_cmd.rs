//! `slimseg data synth`, `slimseg data check` and `slimseg volume-info`: the dataset
//! stages that need no model.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use slimseg_data::acdc::{CLASS_NAMES, NUM_CLASSES, check_dataset};
use slimseg_data::synth::{self, SynthConfig};
use slimseg_data::{Phase, nii};
use std::path::PathBuf;

/// `slimseg data ...`.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write a synthetic ACDC-format cohort (Info.cfg, ED/ES frames with ground truth,
    /// 4D files) that loads through the same reader as real ACDC.
    Synth(SynthArgs),
    /// Validate an ACDC tree: patient counts, label sets, shapes and spacings, with a
    /// summary table. Exits with an error when a problem is found.
    Check(CheckArgs),
}

/// Options of `data synth`.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Folder to create (must not exist, or be empty).
    #[arg(long, short)]
    out: PathBuf,
    /// Training patients.
    #[arg(long, default_value_t = 100)]
    training: usize,
    /// Testing patients.
    #[arg(long, default_value_t = 50)]
    testing: usize,
    /// Seed of the whole cohort.
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Skip the 4D cine files (faster, smaller).
    #[arg(long)]
    no_4d: bool,
}

/// Options of `data check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Root of the tree (holds training/ and testing/).
    root: PathBuf,
    /// Also read every `_4d` file.
    #[arg(long)]
    with_4d: bool,
    /// Print the full result as JSON instead of the table.
    #[arg(long)]
    json: bool,
}

/// Options of `volume-info`.
#[derive(Debug, Args)]
pub struct VolumeInfoArgs {
    /// A NIfTI file (`.nii` or `.nii.gz`).
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs one `data` subcommand.
pub fn run(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Synth(args) => synth_cmd(args),
        DataCommand::Check(args) => check_cmd(args),
    }
}

fn synth_cmd(args: SynthArgs) -> Result<()> {
    let cfg = SynthConfig {
        training: args.training,
        testing: args.testing,
        seed: args.seed,
        write_4d: !args.no_4d,
        ..SynthConfig::default()
    };
    let summary = synth::generate(&args.out, &cfg).with_context(|| {
        format!(
            "cannot write the synthetic cohort to {}",
            args.out.display()
        )
    })?;
    println!(
        "wrote {} patients ({} files, {:.1} MB) to {} in {:.1} s",
        summary.patients,
        summary.files,
        summary.bytes as f64 / 1e6,
        summary.root.display(),
        summary.seconds
    );
    Ok(())
}

fn check_cmd(args: CheckArgs) -> Result<()> {
    let check = check_dataset(&args.root, args.with_4d)
        .with_context(|| format!("cannot check {}", args.root.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&check)?);
    } else {
        println!("ACDC tree     {}", check.root.display());
        println!(
            "patients      {} training, {} testing",
            check.training, check.testing
        );
        let groups: Vec<String> = check
            .groups
            .iter()
            .map(|(g, n)| format!("{g} {n}"))
            .collect();
        println!("groups        {}", groups.join(", "));
        println!(
            "frames        {} labelled, {} without ground truth",
            check.frames.len(),
            check.unlabelled_frames
        );
        if let Some(range) = axis_ranges(check.frames.iter().map(|f| f.shape), |n| n.to_string()) {
            println!("shape x/y/z   {range}");
        }
        if let Some(range) = axis_ranges(check.frames.iter().map(|f| f.spacing), |mm| {
            format!("{mm:.2}")
        }) {
            println!("spacing (mm)  {range}");
        }
        println!();
        println!("volume (ml), mean ± sd over labelled frames");
        print!("{:<6}", "phase");
        for name in &CLASS_NAMES[1..] {
            print!("{name:>16}");
        }
        println!();
        for phase in Phase::BOTH {
            let stats = check.volume_stats(phase);
            print!("{:<6}", format!("{phase:?}"));
            for (mean, sd) in &stats[1..NUM_CLASSES] {
                print!("{:>16}", format!("{mean:.1} ± {sd:.1}"));
            }
            println!();
        }
        for problem in &check.problems {
            println!("problem: {problem}");
        }
    }
    if !check.is_ok() {
        bail!(
            "{} problem(s) found in {}",
            check.problems.len(),
            args.root.display()
        );
    }
    Ok(())
}

/// `min-max` per axis, e.g. `208-256 / 208-256 / 6-12`; `None` when there is no value.
fn axis_ranges<T: Copy + PartialOrd>(
    values: impl Iterator<Item = [T; 3]>,
    show: impl Fn(T) -> String,
) -> Option<String> {
    let mut bounds: Option<([T; 3], [T; 3])> = None;
    for value in values {
        let (lo, hi) = bounds.get_or_insert((value, value));
        for axis in 0..3 {
            if value[axis] < lo[axis] {
                lo[axis] = value[axis];
            }
            if value[axis] > hi[axis] {
                hi[axis] = value[axis];
            }
        }
    }
    bounds.map(|(lo, hi)| {
        (0..3)
            .map(|a| format!("{}-{}", show(lo[a]), show(hi[a])))
            .collect::<Vec<_>>()
            .join(" / ")
    })
}

/// `slimseg volume-info FILE [--json]`: the header, after reading every voxel, so a
/// truncated file or a bad gzip checksum fails.
pub fn volume_info(args: VolumeInfoArgs) -> Result<()> {
    let info = nii::volume_info(&args.file)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("file         {}", info.path.display());
    let shape: Vec<String> = info.shape.iter().map(usize::to_string).collect();
    println!("shape        {}", shape.join(" x "));
    println!("datatype     {}", info.datatype);
    println!(
        "spacing (mm) {:.4} x {:.4} x {:.4}",
        info.spacing[0], info.spacing[1], info.spacing[2]
    );
    if let Some(dt) = info.time_step {
        println!("time step    {dt}");
    }
    println!("orientation  {}", info.orientation);
    println!(
        "qform/sform  codes {} / {}",
        info.qform_code, info.sform_code
    );
    println!("affine (qform first)");
    for row in &info.affine {
        println!(
            "  {:>10.4} {:>10.4} {:>10.4} {:>10.4}",
            row[0], row[1], row[2], row[3]
        );
    }
    if !info.description.is_empty() {
        println!("description  {}", info.description);
    }
    println!("file size    {} bytes", info.file_bytes);
    if !info.payload_read {
        println!(
            "voxels       {}, not read: above the limit of {} (--max-voxels)",
            info.voxels,
            nii::max_voxels()
        );
        return Ok(());
    }
    let range = info
        .range
        .map_or("no finite value".into(), |[lo, hi]| format!("{lo} .. {hi}"));
    println!(
        "voxels       {} read and verified; range {range}",
        info.voxels
    );
    if info.non_finite > 0 {
        println!(
            "non-finite   {} voxels are NaN or infinite: slimseg refuses this image for \
             training, evaluation and prediction",
            info.non_finite
        );
    }
    Ok(())
}
