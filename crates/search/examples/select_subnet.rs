//! Threshold selection from saved gate values: reads a run configuration and a
//! `gates_end.json` written by the search stage, selects the subnet for a budget and
//! prints (and optionally writes) the SubnetSpec.
//!
//! ```text
//! cargo run --release -p slimseg-search --example select_subnet -- \
//!     configs/tiny.toml /tmp/slimseg-tiny/run/search/gates_end.json \
//!     macs 0.7 transformer [out.toml]
//! ```
//! `metric` is `macs` or `params`, `scope` is `model` or `transformer`.

use slimseg_search::engine::read_gate_values;
use slimseg_search::{Budget, CostMetric, CostScope, RunConfig, select};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        return Err(
            "usage: select_subnet CONFIG GATES.json macs|params KEEP model|transformer [OUT.toml]"
                .into(),
        );
    }
    let cfg = RunConfig::from_toml_file(&args[0])?;
    let gates = read_gate_values(&args[1])?;
    let metric = match args[2].as_str() {
        "macs" => CostMetric::Macs,
        "params" => CostMetric::Params,
        other => return Err(format!("metric must be macs or params, found {other}").into()),
    };
    let keep: f64 = args[3].parse()?;
    let scope = match args[4].as_str() {
        "model" => CostScope::Model,
        "transformer" => CostScope::Transformer,
        other => return Err(format!("scope must be model or transformer, found {other}").into()),
    };
    let mut sel = cfg.select;
    sel.budget = Budget::Model {
        metric,
        keep,
        scope,
    };
    let spec = select(&cfg.model, &gates, &sel)?;
    println!(
        "params {} of {} ({:.2}%), MACs {} of {} ({:.2}%), thresholds {:?}",
        spec.params,
        spec.full_params,
        100.0 * spec.params_fraction(),
        spec.macs,
        spec.full_macs,
        100.0 * spec.macs_fraction(),
        spec.thresholds
    );
    for (l, la) in spec.arch.layers.iter().enumerate() {
        println!(
            "  layer {l}: head widths {:?}, MLP units {}, tokens {}",
            la.head_widths(),
            la.mlp_units.len(),
            la.tokens.len()
        );
    }
    if let Some(out) = args.get(5) {
        spec.save_toml(out)?;
        println!("wrote {out}");
    }
    Ok(())
}
