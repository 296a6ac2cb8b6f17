//! `info`: per-layer kept widths, parameters and MACs of a stage's model.

use anyhow::Result;
use clap::Args;
use slimseg_model::count::count;

use crate::run::{Open, Run, RunArgs};
use crate::stages::{ModelStage, model_info, stage_arch};

/// Options of `info`.
#[derive(Debug, Clone, Args)]
pub struct InfoArgs {
    /// Model of this stage of the run.
    #[arg(long, value_enum, default_value = "compressed")]
    pub stage: ModelStage,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `info`: per-layer kept widths, parameters and MACs of a stage's model.
pub fn info_cmd(args: InfoArgs) -> Result<()> {
    let run = Run::open(&args.run, Open::read())?;
    let arch = stage_arch(&run, args.stage)?;
    let info = model_info(&run.cfg.model, args.stage, arch.as_ref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let full = count(&run.cfg.model, None)?;
    println!(
        "{} model: {} parameters ({:.1}% of full), {} MACs/image ({:.1}% of full), {} FLOPs \
         (FLOPs = 2 MACs, attention matmuls included)",
        args.stage.label(),
        info.params,
        100.0 * info.params as f64 / full.params() as f64,
        info.macs,
        100.0 * info.macs as f64 / full.macs() as f64,
        info.flops
    );
    println!();
    println!("{:<48} {:>12} {:>14}", "part", "params", "MACs");
    for p in &info.count.layers {
        println!("{:<48} {:>12} {:>14}", p.name, p.params, p.macs);
    }
    println!();
    println!(
        "{:>5} {:<28} {:>6} {:>6} {:>7} {:>10} {:>12}",
        "block", "kept dims per head", "attn", "mlp", "tokens", "params", "MACs"
    );
    for b in &info.blocks {
        println!(
            "{:>5} {:<28} {:>6} {:>6} {:>7} {:>10} {:>12}",
            b.layer,
            format!("{:?}", b.head_widths),
            b.attn_dims,
            b.mlp_units,
            b.tokens,
            b.params,
            b.macs
        );
    }
    Ok(())
}
