//! `predict`: segments NIfTI volumes with a stage's model of a run. One file
//! (`predict IN -o OUT`) or a folder (`predict -i IN_DIR -o OUT_DIR`, nnU-Net's
//! convention: the same file names out, a `_0000` channel suffix dropped), the model
//! loaded once. 3D volumes are cut along their through-plane axis; 4D cine volumes are
//! segmented frame by frame into a 4D label volume. Labels are on the input's grid and
//! keep its header and affine.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array3, Array4, Axis};
use slimseg_data::nii::{
    GzLevel, NonFinite, Volume, read_header, read_volume_4d, read_volume_with, write_labels_like,
    write_volume_4d,
};
use slimseg_data::pipeline::{normalize_volume, resize_cubic};
use slimseg_model::TransUnet;
use slimseg_model::infer::predict_volume_with;
use slimseg_search::config::DeviceChoice;

use crate::graph::{self, State};
use crate::guard::check_output;
use crate::run::{Open, Run, RunArgs, parse_device};
use crate::stages::{InferenceArgs, ModelStage, describe_inference, load_for_inference};

/// Options of `predict`.
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// Input: a NIfTI volume (3D, or 4D cine), or a folder of `.nii`/`.nii.gz` files.
    #[arg(value_name = "IN", required_unless_present = "input_dir")]
    pub input: Option<PathBuf>,
    /// Input, as a flag (`-i IN_DIR`, nnU-Net's spelling).
    #[arg(
        short = 'i',
        long = "input",
        value_name = "IN",
        conflicts_with = "input"
    )]
    pub input_dir: Option<PathBuf>,
    /// Output label volume, or the output folder for a folder input (created).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Model of this stage of the run.
    #[arg(long, value_enum, default_value = "finetuned")]
    pub stage: ModelStage,
    /// Slices per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Replace existing output files (never an input, nor a file of the run); without it
    /// a folder run skips the cases whose output exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Replace NaN and infinite input voxels by the smallest finite intensity and say
    /// how many, instead of refusing the file (3D volumes).
    #[arg(long)]
    pub replace_non_finite: bool,
    /// Run directory.
    #[arg(long)]
    pub run: PathBuf,
    /// Device (overrides `train.device`): auto (CUDA device 0 when available, else the
    /// CPU), cpu, cuda (device 0) or cuda:N.
    #[arg(long, value_parser = parse_device, value_name = "auto|cpu|cuda|cuda:N")]
    pub device: Option<DeviceChoice>,
    #[command(flatten)]
    pub inference: InferenceArgs,
}

/// What segmenting one file gave.
struct Segmented {
    /// Label voxels per class (all frames).
    counts: [u64; 4],
    /// Frames (1 for a 3D volume).
    frames: usize,
    /// Slices per frame.
    slices: usize,
    /// Non-finite voxels replaced.
    replaced: u64,
    /// The slice order used, when not the stored one.
    reordered: Option<String>,
}

/// The model and how to feed it.
struct Segmenter<'a> {
    run: &'a Run,
    model: &'a TransUnet,
    batch: usize,
    policy: NonFinite,
}

impl Segmenter<'_> {
    /// Labels `[z, y, x]` on the grid of `vol` (a 3D volume or one frame of a 4D one).
    fn labels(&self, vol: Volume<f32>) -> Result<(Array3<u8>, usize, Option<String>)> {
        let (vol, orientation) = vol.into_slice_order(self.run.cfg.data.orientation)?;
        let slices = vol.data.dim().0;
        let mut image = vol.data;
        normalize_volume(&mut image, self.run.cfg.data.normalization);
        let labels = predict_volume_with(self.model, image.view(), self.batch, |s, size| {
            resize_cubic(s, size, size)
        })?;
        Ok(if orientation.is_identity() {
            (labels, slices, None)
        } else {
            let back = orientation.from_canonical(labels.view());
            (back, slices, Some(orientation.describe()))
        })
    }

    /// Segments the file `input` into `out`.
    fn file(&self, input: &Path, out: &Path) -> Result<Segmented> {
        let header = read_header(input)?;
        let shape = header.shape();
        if shape.len() >= 4 && shape[3] > 1 {
            if self.policy == NonFinite::ReplaceWithMin {
                bail!(
                    "{}: --replace-non-finite is for 3D volumes; this one is 4D",
                    input.display()
                );
            }
            let v4 = read_volume_4d(input)?;
            let (t, z, y, x) = v4.data.dim();
            let mut labels = Array4::<u8>::zeros((t, z, y, x));
            let (mut slices, mut reordered) = (0, None);
            for f in 0..t {
                let frame = Volume {
                    data: v4.data.index_axis(Axis(0), f).to_owned(),
                    header: v4.header.clone(),
                    path: input.to_path_buf(),
                };
                let (l, s, r) = self.labels(frame)?;
                labels.index_axis_mut(Axis(0), f).assign(&l);
                slices = s;
                reordered = r;
            }
            let counts = slimseg_data::acdc::label_counts(
                &labels.clone().into_shape_with_order((t * z, y, x))?,
            );
            write_volume_4d(
                out,
                labels.view(),
                &v4.header,
                v4.header.pixdim[4],
                GzLevel::Default,
            )
            .with_context(|| format!("cannot write {}", out.display()))?;
            return Ok(Segmented {
                counts,
                frames: t,
                slices,
                replaced: 0,
                reordered,
            });
        }
        let (vol, replaced) = read_volume_with(input, self.policy)?;
        let file_header = vol.header.clone();
        let (labels, slices, reordered) = self.labels(vol)?;
        write_labels_like(out, labels.view(), &file_header)
            .with_context(|| format!("cannot write {}", out.display()))?;
        Ok(Segmented {
            counts: slimseg_data::acdc::label_counts(&labels),
            frames: 1,
            slices,
            replaced,
            reordered,
        })
    }
}

/// `(stem, extension)` of a NIfTI file name (`.nii.gz` or `.nii`), else `None`.
pub(crate) fn split_nifti_name(name: &str) -> Option<(&str, &str)> {
    [".nii.gz", ".nii"]
        .iter()
        .find_map(|e| name.strip_suffix(e).map(|s| (s, *e)))
}

/// The names of the NIfTI files of `dir` (regular files, not hidden), sorted.
pub(crate) fn nifti_files(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && split_nifti_name(n).is_some())
        .collect();
    names.sort();
    Ok(names)
}

/// The output name of an input file in a folder: the same name, nnU-Net's `_0000`
/// channel suffix dropped; `None` for files that are not NIfTI.
pub fn output_name(name: &str) -> Result<Option<String>> {
    let Some((stem, ext)) = split_nifti_name(name) else {
        return Ok(None);
    };
    if let Some((case, channel)) = stem.rsplit_once('_') {
        if channel.len() == 4 && channel.bytes().all(|b| b.is_ascii_digit()) {
            if channel != "0000" {
                bail!(
                    "{name}: channel {channel} of a multi-channel case; the model takes one \
                     channel (_0000)"
                );
            }
            return Ok(Some(format!("{case}{ext}")));
        }
    }
    Ok(Some(name.to_string()))
}

/// `predict`.
pub fn predict_cmd(args: PredictArgs) -> Result<()> {
    let input = args
        .input
        .clone()
        .or(args.input_dir.clone())
        .expect("clap requires an input");
    let run_args = RunArgs {
        device: args.device,
        ..RunArgs::dir(&args.run)
    };
    let run = Run::open(&run_args, Open::read())?;
    let meta = std::fs::metadata(&input)
        .with_context(|| format!("cannot read the input {}", input.display()))?;
    // The cases, checked before the model is loaded.
    let cases: Vec<(PathBuf, PathBuf)> = if meta.is_dir() {
        folder_cases(&input, &args.out)?
    } else {
        vec![(input.clone(), args.out.clone())]
    };
    let mut todo = Vec::new();
    let mut skipped = 0;
    for (i, o) in &cases {
        if meta.is_dir() && o.exists() && !args.overwrite {
            skipped += 1;
            continue;
        }
        check_output(o, &[i], &run.root, args.overwrite)?;
        todo.push((i.clone(), o.clone()));
    }
    if meta.is_dir() {
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?;
    }
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
    let t = Instant::now();
    let m = load_for_inference(&run, args.stage, device, args.inference.options())?;
    let seg = Segmenter {
        run: &run,
        model: &m.model,
        batch: args.batch.max(1),
        policy: if args.replace_non_finite {
            NonFinite::ReplaceWithMin
        } else {
            NonFinite::Reject
        },
    };
    if !meta.is_dir() {
        let (i, o) = &todo[0];
        let r = seg
            .file(i, o)
            .with_context(|| format!("cannot segment {}", i.display()))?;
        if r.replaced > 0 {
            println!(
                "replaced {} non-finite voxels of {} by the smallest finite intensity",
                r.replaced,
                i.display()
            );
        }
        if let Some(d) = &r.reordered {
            println!("segmented in slice order: {d}");
        }
        let h = read_header(i)?;
        let [x, y, z] = h.shape_xyz();
        let frames = if r.frames > 1 {
            format!(" x {} frames", r.frames)
        } else {
            String::new()
        };
        println!(
            "wrote {} ({x} x {y} x {z} voxels{frames}, {} slices; RV {} MYO {} LV {}) with the \
             {} model ({})",
            o.display(),
            r.slices,
            r.counts[1],
            r.counts[2],
            r.counts[3],
            args.stage.dir(),
            describe_inference(args.inference.options())
        );
        return Ok(());
    }
    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg} [{elapsed}<{eta}]")
            .expect("a valid template"),
    );
    let tty = !bar.is_hidden();
    let mut failed = Vec::new();
    for (k, (i, o)) in todo.iter().enumerate() {
        let name = i.file_name().unwrap_or_default().to_string_lossy();
        bar.set_message(name.to_string());
        match seg.file(i, o) {
            Ok(r) => {
                if !tty {
                    eprintln!(
                        "[{}/{}] {} -> {} ({} frame(s), {} slices)",
                        k + 1,
                        todo.len(),
                        i.display(),
                        o.display(),
                        r.frames,
                        r.slices
                    );
                }
            }
            Err(e) => {
                bar.suspend(|| eprintln!("{}: {e:#}", i.display()));
                failed.push(i.clone());
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "{}: {} segmented, {} skipped (output exists; --overwrite replaces), {} failed, in \
         {:.1} s with the {} model loaded once ({})",
        args.out.display(),
        todo.len() - failed.len(),
        skipped,
        failed.len(),
        t.elapsed().as_secs_f64(),
        args.stage.dir(),
        describe_inference(args.inference.options())
    );
    if !failed.is_empty() {
        bail!(
            "{} case(s) failed: {}",
            failed.len(),
            failed
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// The (input, output) pairs of a folder, sorted by name; two inputs with one output
/// name are an error.
fn folder_cases(dir: &Path, out: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    if out.is_file() {
        bail!(
            "{}: is a file; the output of a folder is a folder",
            out.display()
        );
    }
    let mut cases: Vec<(PathBuf, PathBuf)> = Vec::new();
    let names = nifti_files(dir)?;
    for n in names {
        let Some(o) = output_name(&n).with_context(|| dir.join(&n).display().to_string())? else {
            continue;
        };
        if let Some((other, _)) = cases
            .iter()
            .find(|(_, p)| p.file_name() == Some(o.as_ref()))
        {
            bail!(
                "{} and {} would both be written to {}",
                other.display(),
                dir.join(&n).display(),
                out.join(&o).display()
            );
        }
        cases.push((dir.join(&n), out.join(o)));
    }
    if cases.is_empty() {
        bail!("{}: no .nii or .nii.gz files", dir.display());
    }
    Ok(cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_follow_nnunet() {
        assert_eq!(
            output_name("a.nii.gz").unwrap().as_deref(),
            Some("a.nii.gz")
        );
        assert_eq!(
            output_name("case_001_0000.nii.gz").unwrap().as_deref(),
            Some("case_001.nii.gz")
        );
        assert_eq!(output_name("b_0000.nii").unwrap().as_deref(), Some("b.nii"));
        assert_eq!(
            output_name("p_frame01.nii.gz").unwrap().as_deref(),
            Some("p_frame01.nii.gz")
        );
        assert_eq!(output_name("notes.txt").unwrap(), None);
        assert!(output_name("c_0001.nii.gz").is_err());
    }
}
