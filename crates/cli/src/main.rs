//! `slimseg`: compress transformer segmentation models for cardiac MRI.
//!
//! One subcommand per stage of the run's stage graph ([`graph`]), each reading the
//! folders of the stages above it in a run directory, plus `reproduce` (every stage),
//! `status`, the side commands (`eval`, `predict`, `info`), the data commands and `doctor`
//! (the runtime the tool sees).

mod data_cmd;
mod digest;
mod doctor;
mod eval_cmd;
mod evaluate_cmd;
mod export;
mod figures;
mod graph;
mod guard;
mod info;
mod lock;
mod predict;
mod report;
mod reproduce;
mod run;
mod stages;
mod status;

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
    /// Train the baseline (full model, no gates) into RUN/baseline, or with --transunet
    /// the TransUNet control (no pixel module) into RUN/transunet.
    Train(stages::baseline::TrainArgs),
    /// Make the baseline from an official TransUNet checkpoint (.pth, no Python needed)
    /// instead of training it (RUN/baseline).
    Import(stages::baseline::ImportArgs),
    /// Search: soft gates trained from the baseline weights (RUN/search).
    Search(stages::search::SearchArgs),
    /// Profile: per-block latency over a grid of widths, for a latency budget
    /// (RUN/profile).
    Profile(stages::profile::ProfileArgs),
    /// Choose the subnet of the budget from the search's gates and slice the searched
    /// weights into a physically smaller model (RUN/compressed).
    Compress(stages::compress::CompressArgs),
    /// Fine-tune the compressed model (RUN/finetuned).
    Finetune(stages::finetune::FinetuneArgs),
    /// The uniform-width control: the compressed model's cost spread evenly over the
    /// blocks, sliced from the baseline and fine-tuned the same way (RUN/uniform).
    Uniform(stages::finetune::FinetuneArgs),
    /// Budget sweep: from the one search, one subnet per kept fraction (--keep or
    /// [sweep] keep) and its uniform control, sliced, fine-tuned, evaluated and timed
    /// side by side (RUN/sweep).
    Sweep(stages::sweep::SweepArgs),
    /// Each model's forward latency (RUN/bench), or a side measurement with other options
    /// (RUN/measurements).
    Bench(stages::bench::BenchArgs),
    /// Write the report of a run (RUN/report: Markdown, JSON, PNG).
    Report(report::ReportArgs),
    /// Every stage in order: done stages are skipped, stale ones redone (saying why),
    /// interrupted training resumes.
    Reproduce(reproduce::ReproduceArgs),
    /// The stage graph of a run: each stage done, stale (why) or missing.
    Status(status::StatusArgs),
    /// Side evaluation of stage models, on the run's test set or other data
    /// (RUN/evals/NAME; never a stage's own eval.json).
    Eval(eval_cmd::EvalArgs),
    /// Segment a NIfTI volume; the label volume keeps the input's header and affine.
    Predict(predict::PredictArgs),
    /// Per-layer kept widths, parameters and MACs of a stage's model.
    Info(info::InfoArgs),
    /// A stage's model as a TorchScript module (or a Triton model repository), checked
    /// against slimseg's own forward pass.
    Export(export::ExportArgs),
    /// Score a folder of predicted label volumes against ground truth (Dice, IoU, HD95,
    /// TP/FP/FN per case and class; nnU-Net-like summary.json).
    Evaluate(evaluate_cmd::EvaluateArgs),
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
        Command::Train(a) => stages::baseline::cmd(a),
        Command::Import(a) => stages::baseline::import_cmd(a),
        Command::Search(a) => stages::search::cmd(a),
        Command::Profile(a) => stages::profile::cmd(a),
        Command::Compress(a) => stages::compress::cmd(a),
        Command::Finetune(a) => stages::finetune::cmd(a),
        Command::Uniform(a) => stages::uniform::cmd(a),
        Command::Sweep(a) => stages::sweep::cmd(a),
        Command::Bench(a) => stages::bench::cmd(a),
        Command::Report(a) => report::report_cmd(a),
        Command::Reproduce(a) => reproduce::reproduce_cmd(a),
        Command::Status(a) => status::cmd(a),
        Command::Eval(a) => eval_cmd::cmd(a),
        Command::Predict(a) => predict::predict_cmd(a),
        Command::Info(a) => info::info_cmd(a),
        Command::Export(a) => export::cmd(a),
        Command::Evaluate(a) => evaluate_cmd::cmd(a),
    }
}
