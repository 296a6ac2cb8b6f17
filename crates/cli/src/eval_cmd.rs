//! `eval`: a side evaluation of stage models, on the run's own test set or on other data,
//! into `RUN/evals/NAME/STAGE.json` with the data's identity and the stage's fingerprint.
//! It never replaces a stage's own `eval.json` (made with the stage, on the run's test
//! set), which is what the report shows.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use slimseg_data::{AcdcDataset, Subset};
use slimseg_search::EvalReport;
use slimseg_search::data::eval_volumes;

use crate::digest::DataIdentity;
use crate::graph;
use crate::run::{Open, Run, RunArgs, write_json};
use crate::stages::{
    InferenceArgs, InferenceRecord, ModelStage, describe_inference, eval_test, load_for_inference,
};

/// Folder of side evaluations inside the run.
pub const EVALS_DIR: &str = "evals";

/// Options of `eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Stage(s) to evaluate; default every model stage that is complete and up to date.
    #[arg(long, value_enum)]
    pub stage: Vec<ModelStage>,
    /// Evaluate on this ACDC tree instead of the run's test set: the patients of its
    /// `testing/` folder, or all of them when it has none.
    #[arg(long, value_name = "ACDC_ROOT")]
    pub data: Option<PathBuf>,
    /// Name of the evaluation (its folder `RUN/evals/NAME`). Default: the data folder's
    /// name, or `test` for the run's own test set.
    #[arg(long)]
    pub name: Option<String>,
    /// Replace an earlier evaluation of the same name.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub inference: InferenceArgs,
}

/// What `RUN/evals/NAME/STAGE.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SideEval {
    /// The stage evaluated.
    pub stage: ModelStage,
    /// Its fingerprint id.
    pub fingerprint: String,
    /// Root of the data evaluated on.
    pub data_root: PathBuf,
    /// Whether it is the run's own test set.
    pub run_test_set: bool,
    /// The data's identity (the patients evaluated).
    pub data: DataIdentity,
    /// How the model ran (precision, fast paths).
    pub inference: InferenceRecord,
    /// The scores.
    pub report: EvalReport,
}

/// `eval`.
pub fn cmd(args: EvalArgs) -> Result<()> {
    let run = Run::open(
        &args.run,
        Open {
            reads_data: true,
            ..Open::write()
        },
    )?;
    let states = graph::states(&run)?;
    let stages: Vec<ModelStage> = if args.stage.is_empty() {
        ModelStage::ALL
            .into_iter()
            .filter(|s| states[s.dir()].done().is_some())
            .collect()
    } else {
        args.stage.clone()
    };
    if stages.is_empty() {
        bail!(
            "{}: no model stage is complete and up to date (see `slimseg status --run {}`)",
            run.root.display(),
            run.root.display()
        );
    }
    let (name, root, own, volumes, identity) = match &args.data {
        None => {
            let cohort = run.cohort()?;
            let name = args.name.clone().unwrap_or_else(|| "test".into());
            let root = run.data_root()?.to_path_buf();
            let ds = AcdcDataset::open(&root)?;
            let split = run.cfg.data.split.resolve(&ds.ids())?;
            let identity = DataIdentity::of_patients(&ds, &split.test)?;
            (name, root, true, cohort.test, identity)
        }
        Some(d) => {
            let ds = AcdcDataset::open(d)?.with_orientation(run.cfg.data.orientation);
            let testing: Vec<u32> = ds.subset(Subset::Testing).map(|p| p.id).collect();
            let ids = if testing.is_empty() {
                ds.ids()
            } else {
                testing
            };
            if ids.is_empty() {
                bail!("{}: no patients", d.display());
            }
            let frames = ds.load_labelled_frames(&ids)?;
            let volumes = eval_volumes(&frames, run.cfg.data.normalization)?;
            let name = match &args.name {
                Some(n) => n.clone(),
                None => d
                    .canonicalize()?
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "other".into()),
            };
            let identity = DataIdentity::of_patients(&ds, &ids)?;
            (name, d.clone(), false, volumes, identity)
        }
    };
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        bail!("--name {name}: not a plain folder name");
    }
    let out = run.root.join(EVALS_DIR).join(&name);
    for s in &stages {
        let p = out.join(format!("{}.json", s.dir()));
        if p.exists() && !args.overwrite {
            bail!(
                "{}: an evaluation of this name exists; pass --overwrite to replace it, or \
                 --name OTHER",
                p.display()
            );
        }
    }
    if let Some(s) = stages.iter().find(|s| states[s.dir()].done().is_none()) {
        bail!(
            "{}: the {} stage is not complete and up to date (see `slimseg status --run {}`)",
            run.stage(s.dir()).display(),
            s.dir(),
            run.root.display()
        );
    }
    let device = run.device()?;
    for s in stages {
        let rec = states[s.dir()].done().expect("checked above");
        let opts = args.inference.options();
        eprintln!(
            "[eval] {} on {name} ({})",
            s.label(),
            describe_inference(opts)
        );
        let m = load_for_inference(&run, s, device, opts)?;
        let rep = eval_test(&run, &m.model, &volumes)?;
        println!(
            "{:<22} mean Dice {}  RV/MYO/LV {}",
            s.label(),
            fmt_opt(rep.mean_dice, 4),
            rep.mean_dice_per_class
                .iter()
                .map(|d| fmt_opt(*d, 4))
                .collect::<Vec<_>>()
                .join(" / ")
        );
        let path = out.join(format!("{}.json", s.dir()));
        write_json(
            &path,
            &SideEval {
                stage: s,
                fingerprint: rec.id.clone(),
                data_root: root.clone(),
                run_test_set: own,
                data: identity.clone(),
                inference: opts.into(),
                report: rep,
            },
        )?;
        eprintln!("  {}", path.display());
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}
