//! `slimseg reproduce`: every stage in order (train, search, compress, finetune), the
//! latency benchmark and the report. Stages whose folder holds a completed result are
//! skipped, and training inside an interrupted stage resumes from its last checkpoint, so
//! running the same command again continues where it stopped.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use slimseg_compress::LatencyOptions;
use slimseg_search::data::Cohort;

use crate::report::write_report;
use crate::run::{Run, RunArgs, STAGE_RECORD, STAGES};
use crate::stages::{
    BudgetArgs, CompressArgs, FinetuneArgs, LATENCY_FILE, StageArgs, bench, compress_stage,
    finetune_stage, search_stage, train_stage,
};

/// Options of `reproduce`.
#[derive(Debug, Clone, Args)]
pub struct ReproduceArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Fine-tuning epochs. Default: `finetune.epochs`, else `search.epochs`, else
    /// `train.epochs`.
    #[arg(long)]
    pub finetune_epochs: Option<usize>,
    /// Batch sizes of the latency benchmark (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub bench_batch: Vec<usize>,
    /// Timed runs of the latency benchmark.
    #[arg(long, default_value_t = 10)]
    pub bench_repeats: usize,
}

fn modified(p: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Runs the pipeline.
pub fn reproduce_cmd(args: ReproduceArgs) -> Result<()> {
    let start = Instant::now();
    let run = Run::open(&args.run, true)?;
    eprintln!("run directory {}", run.root.display());
    let mut cohort: Option<Cohort> = None;
    let mut times: Vec<(String, &str, f64)> = Vec::new();
    for stage in STAGES {
        if let Some(rec) = run.completed(stage)? {
            eprintln!(
                "[{stage}] complete ({}), skipped",
                run.stage(stage).join(STAGE_RECORD).display()
            );
            times.push((stage.to_string(), "skipped (done earlier)", rec.seconds));
            continue;
        }
        if cohort.is_none() {
            cohort = Some(run.cohort()?);
        }
        let c = cohort.as_ref().expect("loaded above");
        let t = Instant::now();
        let stage_args = StageArgs {
            run: args.run.clone(),
            force: false,
        };
        match stage {
            "baseline" => train_stage(&run, c, false)?,
            "search" => search_stage(&run, c, false)?,
            "compressed" => compress_stage(
                &run,
                Some(c),
                &CompressArgs {
                    stage: stage_args,
                    budget: BudgetArgs::default(),
                },
            )?,
            _ => finetune_stage(
                &run,
                c,
                &FinetuneArgs {
                    stage: stage_args,
                    epochs: args.finetune_epochs,
                    lr: None,
                },
            )?,
        }
        times.push((stage.to_string(), "ran", t.elapsed().as_secs_f64()));
    }
    let latency = run.stage("compressed").join(LATENCY_FILE);
    let record = run.stage("compressed").join(STAGE_RECORD);
    if modified(&latency).is_none() || modified(&latency) < modified(&record) {
        let t = Instant::now();
        eprintln!("[bench] full vs compressed latency");
        let rep = bench(
            &run,
            &args.bench_batch,
            LatencyOptions {
                warmup: 3,
                repeats: args.bench_repeats.max(1),
            },
            None,
        )?;
        eprint!("{}", rep.to_markdown());
        times.push(("bench".into(), "ran", t.elapsed().as_secs_f64()));
    }
    let t = Instant::now();
    let path = write_report(&run)?;
    times.push(("report".into(), "ran", t.elapsed().as_secs_f64()));
    eprintln!("\nstage        status                   seconds");
    for (s, status, secs) in &times {
        eprintln!("{s:<12} {status:<24} {secs:>7.1}");
    }
    eprintln!("total this call: {:.1} s", start.elapsed().as_secs_f64());
    println!("report: {}", path.display());
    Ok(())
}
