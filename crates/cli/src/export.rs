//! `export`: a stage's whole inference graph as a TorchScript module, traced with tch's
//! JIT tracer (input `[B, 1, S, S]` float32, already normalised -> logits
//! `[B, C, S, S]`; the batch size stays free), with `manifest.json` saying what the
//! module expects and where it came from, and an example input with slimseg's logits for
//! it (`.npy`), so that any runtime can check it gives the same numbers. `--format
//! triton` lays the module out as a Triton Inference Server model repository for the
//! `pytorch_libtorch` backend.
//!
//! The exported module is loaded back with `tch::CModule` and compared with slimseg's own
//! forward pass at another batch size than the traced one before anything is written.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;
use slimseg_data::acdc::CLASS_NAMES;
use slimseg_model::count::count;
use tch::{Device, Kind, Tensor};

use crate::graph::{self, Provenance};
use crate::run::{Open, Run, RunArgs, write_json};
use crate::stages::{
    InferenceArgs, InferenceRecord, ModelStage, describe_inference, load_for_inference, stage_arch,
};

/// Largest difference allowed between the module's logits and slimseg's.
pub const ROUNDTRIP_TOLERANCE: f64 = 1e-5;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `DIR/model.pt` + `manifest.json` + example input and logits.
    Torchscript,
    /// A Triton model repository: `DIR/NAME/1/model.pt`, `DIR/NAME/config.pbtxt`.
    Triton,
}

/// Options of `export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Run directory.
    #[arg(long)]
    pub run: PathBuf,
    /// Model of this stage (complete and up to date).
    #[arg(long, value_enum, default_value = "finetuned")]
    pub stage: ModelStage,
    /// Output folder (created; must not exist unless --overwrite).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Layout of the output.
    #[arg(long, value_enum, default_value = "torchscript")]
    pub format: Format,
    /// Model name in the Triton repository. Default: `slimseg_STAGE`.
    #[arg(long)]
    pub name: Option<String>,
    /// Triton's `max_batch_size`.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Replace an existing output folder.
    #[arg(long)]
    pub overwrite: bool,
    /// The traced graph's precision and fast paths (CPU: fp32 or bf16). Its input and
    /// output stay float32.
    #[command(flatten)]
    pub inference: InferenceArgs,
}

/// What `manifest.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct ExportManifest {
    /// Format of the module file.
    pub format: &'static str,
    /// Module file, relative to the manifest.
    pub module: String,
    /// Input: name, shape with `-1` for the batch, data type.
    pub input: TensorSpec,
    /// Output: name, shape, data type.
    pub output: TensorSpec,
    /// What the input must be.
    pub preprocessing: String,
    /// How the output maps to labels.
    pub postprocessing: String,
    /// Class names by channel.
    pub classes: Vec<String>,
    /// The stage exported.
    pub stage: ModelStage,
    /// Its fingerprint id.
    pub fingerprint: String,
    /// Parameters of the model.
    pub params: u64,
    /// MACs per image.
    pub macs: u64,
    /// Precision inside the module and whether it traced the fast paths.
    pub inference: InferenceRecord,
    /// Largest |module - slimseg| over the example logits.
    pub roundtrip_max_abs_diff: f64,
    /// Who exported it.
    pub exported_by: Provenance,
}

/// A tensor's name, shape and data type.
#[derive(Debug, Clone, Serialize)]
pub struct TensorSpec {
    /// Name (Triton's `INPUT__0` / `OUTPUT__0` convention).
    pub name: String,
    /// Shape, `-1` for the batch.
    pub shape: Vec<i64>,
    /// Data type.
    pub dtype: &'static str,
}

/// Writes a float32 tensor as a NumPy `.npy` file (format 1.0, little-endian, C order).
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let t = t.to_kind(Kind::Float).to_device(Device::Cpu).contiguous();
    let shape = t.size();
    let data = Vec::<f32>::try_from(&t.view(-1))?;
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + 4 * data.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    slimseg_data::write_atomic(path, &bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The Triton `config.pbtxt` of a model.
fn triton_config(name: &str, max_batch: usize, input: &TensorSpec, output: &TensorSpec) -> String {
    let dims = |s: &TensorSpec| {
        s.shape[1..]
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "name: \"{name}\"\nplatform: \"pytorch_libtorch\"\nmax_batch_size: {max_batch}\n\
         input [\n  {{\n    name: \"{}\"\n    data_type: TYPE_FP32\n    dims: [ {} ]\n  }}\n]\n\
         output [\n  {{\n    name: \"{}\"\n    data_type: TYPE_FP32\n    dims: [ {} ]\n  }}\n]\n",
        input.name,
        dims(input),
        output.name,
        dims(output)
    )
}

/// `export`.
pub fn cmd(args: ExportArgs) -> Result<()> {
    let run = Run::open(&RunArgs::dir(&args.run), Open::read())?;
    let states = graph::states(&run)?;
    let Some(rec) = states[args.stage.dir()].done() else {
        bail!(
            "{}: the {} stage is not complete and up to date (see `slimseg status --run {}`)",
            run.stage(args.stage.dir()).display(),
            args.stage.dir(),
            run.root.display()
        );
    };
    if args.max_batch == 0 {
        bail!("--max-batch must be at least 1");
    }
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("slimseg_{}", args.stage.dir()));
    if name.is_empty() || name.contains(['/', '\\', '"']) || name.starts_with('.') {
        bail!("--name {name}: not a plain model name");
    }
    crate::guard::check_output_dir(&args.out, &run.root, args.overwrite, |d| {
        // An earlier export: a manifest at the top (TorchScript) or in one model folder
        // next to its config.pbtxt (Triton).
        d.join("manifest.json").is_file()
            || std::fs::read_dir(d).is_ok_and(|mut it| {
                it.any(|e| e.is_ok_and(|e| e.path().join("config.pbtxt").is_file()))
            })
    })?;
    let device = Device::Cpu;
    let opts = args.inference.options();
    let mut m = load_for_inference(&run, args.stage, device, opts)?;
    // Weights enter the traced graph as constants, which must not require gradients.
    m.vs.freeze();
    // The stage's own network: the TransUNet control has no pixel module.
    let cfg = &args.stage.model_config(&run.cfg.model);
    let s = cfg.img_size as i64;
    let c = cfg.num_classes as i64;
    let _guard = tch::no_grad_guard();
    tch::manual_seed(11);
    let trace_input = Tensor::rand([2, 1, s, s], (Kind::Float, device));
    let mut fail = None;
    let module =
        tch::CModule::create_by_tracing("SlimSeg", "forward", &[trace_input], &mut |xs| match m
            .model
            .forward_t(&xs[0], false)
        {
            Ok(out) => vec![out.logits.to_kind(Kind::Float)],
            Err(e) => {
                fail = Some(e);
                vec![xs[0].shallow_clone()]
            }
        })?;
    if let Some(e) = fail {
        return Err(e).context("tracing the model");
    }

    // Write into a staging folder beside the output, checked, then renamed into place.
    let staging = slimseg_data::staging_sibling(&args.out);
    let result = (|| -> Result<(PathBuf, ExportManifest)> {
        let model_dir = match args.format {
            Format::Torchscript => staging.clone(),
            Format::Triton => staging.join(&name),
        };
        let module_path = match args.format {
            Format::Torchscript => model_dir.join("model.pt"),
            Format::Triton => model_dir.join("1").join("model.pt"),
        };
        std::fs::create_dir_all(module_path.parent().expect("has a parent"))
            .with_context(|| format!("cannot create {}", module_path.display()))?;
        module
            .save(&module_path)
            .with_context(|| format!("cannot write {}", module_path.display()))?;
        // Round trip at another batch size than the traced one.
        let loaded = tch::CModule::load_on_device(&module_path, device)
            .with_context(|| format!("cannot load back {}", module_path.display()))?;
        let example = Tensor::rand([3, 1, s, s], (Kind::Float, device));
        let ours = m
            .model
            .forward_t(&example, false)?
            .logits
            .to_kind(Kind::Float);
        let theirs = loaded.forward_ts(&[&example])?;
        if theirs.size() != ours.size() {
            bail!(
                "the exported module gives logits of shape {:?}, slimseg {:?}",
                theirs.size(),
                ours.size()
            );
        }
        let diff = (&theirs - &ours).abs().max().double_value(&[]);
        if diff.is_nan() || diff > ROUNDTRIP_TOLERANCE {
            bail!(
                "the exported module differs from slimseg's model by {diff:.3e} (more than \
                 {ROUNDTRIP_TOLERANCE:.0e})"
            );
        }
        write_npy(&model_dir.join("example_input.npy"), &example)?;
        write_npy(&model_dir.join("example_logits.npy"), &ours)?;
        let arch = stage_arch(&run, args.stage)?;
        let counts = count(cfg, arch.as_ref())?;
        let manifest = ExportManifest {
            format: "torchscript",
            module: module_path
                .strip_prefix(&model_dir)
                .expect("inside")
                .display()
                .to_string(),
            input: TensorSpec {
                name: "INPUT__0".into(),
                shape: vec![-1, 1, s, s],
                dtype: "float32",
            },
            output: TensorSpec {
                name: "OUTPUT__0".into(),
                shape: vec![-1, c, s, s],
                dtype: "float32",
            },
            preprocessing: format!(
                "2D slices cut along the volume's through-plane axis (the voxel axis whose \
                 spacing is at least 1.2 times both others, else the third), in-plane axes \
                 per data.orientation = {}; each volume normalised with {} over all its \
                 voxels; each slice resized to {s}x{s} with cubic interpolation",
                serde_json::to_value(run.cfg.data.orientation)?,
                serde_json::to_value(run.cfg.data.normalization)?
            ),
            postprocessing: format!(
                "argmax over the {c} channels gives the label of each pixel; resize the \
                 label map back to the slice's size with nearest-neighbour interpolation"
            ),
            classes: CLASS_NAMES
                .iter()
                .take(c as usize)
                .map(|n| n.to_string())
                .collect(),
            stage: args.stage,
            fingerprint: rec.id.clone(),
            params: counts.params(),
            macs: counts.macs(),
            inference: opts.into(),
            roundtrip_max_abs_diff: diff,
            exported_by: Provenance::now(device),
        };
        write_json(&model_dir.join("manifest.json"), &manifest)?;
        if args.format == Format::Triton {
            let path = model_dir.join("config.pbtxt");
            let text = triton_config(&name, args.max_batch, &manifest.input, &manifest.output);
            slimseg_data::write_atomic(&path, text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok((module_path, manifest))
    })();
    let (module_path, manifest) = match result {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let placed = if args.out.exists() {
        // Replace the earlier export: exchanged in one step where the filesystem can.
        crate::graph::swap_in(&staging, &args.out)
    } else {
        std::fs::rename(&staging, &args.out).with_context(|| {
            format!(
                "cannot rename {} to {}",
                staging.display(),
                args.out.display()
            )
        })
    };
    if let Err(e) = placed {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let rel = module_path.strip_prefix(&staging).expect("inside staging");
    println!(
        "exported the {} model ({}; {} params, {} MACs/image, fingerprint {}) to {}; the \
         module loaded back gives slimseg's logits within {:.1e}",
        args.stage.dir(),
        describe_inference(opts),
        manifest.params,
        manifest.macs,
        manifest.fingerprint,
        args.out.join(rel).display(),
        manifest.roundtrip_max_abs_diff
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_names_the_shape() {
        let dir = std::env::temp_dir().join(format!("slimseg-npy-{}", std::process::id()));
        let p = dir.join("x.npy");
        write_npy(
            &p,
            &Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.]).view([2, 3]),
        )
        .unwrap();
        let b = std::fs::read(&p).unwrap();
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
        assert!(header.contains("'shape': (2, 3)"), "{header}");
        assert_eq!(b.len(), 10 + hlen + 24);
        assert_eq!(
            f32::from_le_bytes(b[b.len() - 4..].try_into().unwrap()),
            6.0
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn triton_config_names_inputs_outputs_and_batch() {
        let i = TensorSpec {
            name: "INPUT__0".into(),
            shape: vec![-1, 1, 96, 96],
            dtype: "float32",
        };
        let o = TensorSpec {
            name: "OUTPUT__0".into(),
            shape: vec![-1, 4, 96, 96],
            dtype: "float32",
        };
        let t = triton_config("m", 8, &i, &o);
        assert!(t.contains("platform: \"pytorch_libtorch\""));
        assert!(t.contains("max_batch_size: 8"));
        assert!(t.contains("dims: [ 1, 96, 96 ]") && t.contains("dims: [ 4, 96, 96 ]"));
    }
}
