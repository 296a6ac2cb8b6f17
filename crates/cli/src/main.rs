//! `slimseg`: compress transformer segmentation models for cardiac MRI.
//!
//! One subcommand per pipeline stage, each reading the previous stage's folder of a run
//! directory (`RUN/{baseline,search,compressed,finetuned,report}`), plus `reproduce`
//! (all stages), the data commands and `doctor` (the runtime the tool sees).

mod data_cmd;
mod doctor;
mod guard;
mod lock;
mod plot;
mod report;
mod reproduce;
mod run;
mod stages;

use clap::{Parser, Subcommand};

/// Command-line interface of slimseg.
#[derive(Debug, Parser)]
#[command(name = "slimseg", version, about, long_about = None)]
struct Cli {
    /// Largest volume, in voxels, that any command reads (checked in the header before
    /// memory is allocated). Default 134217728 (2^27), or SLIMSEG_MAX_VOXELS.
    #[arg(long, global = true, value_name = "N")]
    max_voxels: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the slimseg and libtorch versions, where libtorch was loaded from, CPU threads
    /// and CUDA / cuDNN availability.
    Doctor,
    /// Dataset stages: generate a synthetic cohort, validate an ACDC tree.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Shape, datatype, spacing, orientation and affine of a NIfTI file.
    VolumeInfo(data_cmd::VolumeInfoArgs),
    /// Train the baseline (full model, no gates) into RUN/baseline.
    Train(stages::StageArgs),
    /// Search: soft gates from the baseline weights, then the subnet of [select]
    /// (RUN/search/subnet.toml).
    Search(stages::StageArgs),
    /// Slice the searched weights into a physically smaller model (RUN/compressed).
    Compress(stages::CompressArgs),
    /// Fine-tune the compressed model (RUN/finetuned).
    Finetune(stages::FinetuneArgs),
    /// Evaluate stage models on the test set (Dice, HD95 in mm and voxels).
    Eval(stages::EvalArgs),
    /// Segment a NIfTI volume; the label volume keeps the input's header and affine.
    Predict(stages::PredictArgs),
    /// Per-layer kept widths, parameters and MACs of a stage's model.
    Info(stages::InfoArgs),
    /// Full vs compressed forward latency (RUN/compressed/latency.json).
    Bench(stages::BenchArgs),
    /// Write the report of a run (RUN/report: Markdown, JSON, PNG).
    Report(report::ReportArgs),
    /// Every stage in order, then the benchmark and the report; finished stages are
    /// skipped and interrupted training resumes.
    Reproduce(reproduce::ReproduceArgs),
}

fn main() -> anyhow::Result<()> {
    // Die quietly like other Unix tools when the reader of our output goes away
    // (`slimseg doctor | head`), instead of panicking on the broken pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Before anything asks libtorch about CUDA: load its CUDA backend if it can be loaded.
    slimseg_model::runtime::init();
    let cli = Cli::parse();
    if let Some(n) = cli.max_voxels {
        slimseg_data::nii::set_max_voxels(n);
    }
    match cli.command {
        Command::Doctor => doctor::run(),
        Command::Data(command) => data_cmd::run(command),
        Command::VolumeInfo(args) => data_cmd::volume_info(args),
        Command::Train(a) => {
            let run = run::Run::open(&a.run, true)?;
            let cohort = run.cohort()?;
            stages::train_stage(&run, &cohort, a.force)
        }
        Command::Search(a) => {
            let run = run::Run::open(&a.run, true)?;
            let cohort = run.cohort()?;
            stages::search_stage(&run, &cohort, a.force)
        }
        Command::Compress(a) => {
            let run = run::Run::open(&a.stage.run, true)?;
            let cohort = run.cohort()?;
            stages::compress_stage(&run, Some(&cohort), &a)
        }
        Command::Finetune(a) => {
            let run = run::Run::open(&a.stage.run, true)?;
            let cohort = run.cohort()?;
            stages::finetune_stage(&run, &cohort, &a)
        }
        Command::Eval(a) => stages::eval_cmd(a),
        Command::Predict(a) => stages::predict_cmd(a),
        Command::Info(a) => stages::info_cmd(a),
        Command::Bench(a) => stages::bench_cmd(a),
        Command::Report(a) => report::report_cmd(a),
        Command::Reproduce(a) => reproduce::reproduce_cmd(a),
    }
}
