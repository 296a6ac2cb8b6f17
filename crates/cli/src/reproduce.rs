//! `slimseg reproduce`: every stage of the graph in order (train, the TransUNet control,
//! search, compress, finetune, the uniform control, bench, report; a control that is off
//! is skipped). A stage that is done is skipped; a stale one is redone (in a
//! staging folder, swapped in when it succeeds) with everything below it, saying why; a
//! missing one is made, and training inside an interrupted stage resumes from its last
//! checkpoint, so running the same command again continues where it stopped.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;

use crate::graph::{self, Ctx, GRAPH, Made, State};
use crate::run::{DataArgs, Open, Run, RunArgs, SynthSize};
use crate::stages::StopArgs;
use crate::stages::finetune::set_schedule;

/// Options of `reproduce`.
#[derive(Debug, Clone, Args)]
pub struct ReproduceArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// ImageNet-21k `R50+ViT-B_16.npz` that initialises the baseline's ResNet and
    /// transformer (sets `train.pretrained`).
    #[arg(long, value_name = "NPZ")]
    pub pretrained: Option<PathBuf>,
    #[command(flatten)]
    pub synth: SynthSize,
    #[command(flatten)]
    pub stop: StopArgs,
    /// Fine-tuning epochs (sets `finetune.epochs`).
    #[arg(long)]
    pub finetune_epochs: Option<usize>,
    /// Batch sizes of the latency benchmark, comma-separated (sets `bench.batches`).
    #[arg(long, value_delimiter = ',')]
    pub bench_batch: Vec<usize>,
    /// Timed runs of the latency benchmark (sets `bench.repeats`).
    #[arg(long)]
    pub bench_repeats: Option<usize>,
    /// Redo this stage even if it is up to date; repeatable (baseline, transunet, search,
    /// compressed, finetuned, uniform, bench, report). The stages below it are redone when what
    /// they consume from it changed.
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
}

/// Runs the pipeline.
pub fn reproduce_cmd(args: ReproduceArgs) -> Result<()> {
    let start = Instant::now();
    for f in &args.force {
        if !GRAPH.iter().any(|d| d.name == f) {
            bail!(
                "--force {f}: no such stage (one of {})",
                GRAPH.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
            );
        }
    }
    let mut run = Run::open(
        &args.run,
        Open {
            data: Some(&args.data),
            synth: Some(&args.synth),
            pretrained: args.pretrained.as_deref(),
            reads_data: true,
            ..Open::write()
        },
    )?;
    set_schedule(&mut run.cfg, args.finetune_epochs, None);
    if !args.bench_batch.is_empty() {
        run.cfg.bench.batches = args.bench_batch.clone();
    }
    if let Some(r) = args.bench_repeats {
        run.cfg.bench.repeats = r;
    }
    run.cfg.validate()?;
    eprintln!("run directory {}", run.root.display());
    let mut ctx = Ctx::new(&run);
    ctx.stop_after = args.stop.stop_after;
    let mut times: Vec<(&str, &str, f64)> = Vec::new();
    for (i, d) in GRAPH.iter().enumerate() {
        let states = graph::states(&run)?;
        let forced = args.force.iter().any(|f| f == d.name);
        if let State::Off(why) = &states[d.name] {
            eprintln!("[{}] not part of this run: {why}", d.name);
            continue;
        }
        if let (State::Done(rec), false) = (&states[d.name], forced) {
            eprintln!("[{}] done (fingerprint {}), skipped", d.name, rec.id);
            times.push((d.name, "skipped (up to date)", rec.seconds));
            continue;
        }
        // What the stages below still train, for the whole run's estimate.
        let epochs_after: usize = GRAPH[i + 1..]
            .iter()
            .filter(|l| !matches!(states[l.name], State::Done(_) | State::Off(_)))
            .map(|l| planned_epochs(&run.cfg, l.name))
            .sum();
        ctx.slices_after = match epochs_after {
            0 => None,
            e => Some((e * ctx.cohort()?.train.len()) as u64),
        };
        match graph::make(&mut ctx, d.name, forced)? {
            Made::Ran(s) => times.push((d.name, "made", s)),
            Made::Stopped(why) => {
                eprintln!("[{}] {why}", d.name);
                return Ok(());
            }
        }
    }
    // Every stage is up to date with this configuration now (a new --data path of the
    // same data included).
    run.save_config()?;
    eprintln!("\nstage        status                   seconds");
    for (s, status, secs) in &times {
        eprintln!("{s:<12} {status:<24} {secs:>7.1}");
    }
    eprintln!("total this call: {:.1} s", start.elapsed().as_secs_f64());
    println!(
        "report: {}",
        run.stage("report").join("report.md").display()
    );
    Ok(())
}

/// Epochs over the training slices that making stage `name` takes under `cfg` (0 for the
/// stages that do not train).
fn planned_epochs(cfg: &slimseg_search::RunConfig, name: &str) -> usize {
    let finetune = cfg.for_finetune().train.epochs;
    match name {
        "baseline" | "transunet" => cfg.train.epochs,
        "search" => cfg.for_search().train.epochs,
        "finetuned" | "uniform" => finetune,
        "sweep" => finetune * cfg.sweep.keep.len() * (1 + usize::from(cfg.controls.uniform)),
        _ => 0,
    }
}
