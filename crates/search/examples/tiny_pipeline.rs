//! Baseline training, search and threshold selection on a synthetic cohort with a run
//! configuration (default `configs/tiny.toml`), printing the figures of the search issue:
//! the baseline's test Dice and training time, gate histograms at the start and end of
//! the search with the share of gates below 0.05, and the SubnetSpec of the budget.
//!
//! ```text
//! cargo run --release -p slimseg-search --example tiny_pipeline -- \
//!     --out /tmp/slimseg-tiny [--config configs/tiny.toml] [--train 20] [--val 2] \
//!     [--test 6] [--epochs 12] [--search-epochs 6] [--stage baseline|search|all] \
//!     [--search-name search]   # stage folder of the search, to compare settings
//! ```
//! Stages resume from their checkpoints when re-run with the same `--out`.

use std::path::PathBuf;
use std::time::Instant;

use slimseg_data::synth::{SynthConfig, generate};
use slimseg_model::GateValues;
use slimseg_search::config::SplitConfig;
use slimseg_search::data::load_cohort;
use slimseg_search::engine::read_gate_values;
use slimseg_search::stages::{SUBNET_FILE, run_baseline, run_search};
use slimseg_search::stats::{GateStats, histogram, render_histogram};
use slimseg_search::{EvalOptions, RunConfig, StageDir, TrainOptions, evaluate, select};

struct Args {
    out: PathBuf,
    config: PathBuf,
    train: usize,
    val: usize,
    test: usize,
    epochs: Option<usize>,
    search_epochs: Option<usize>,
    stage: String,
    search_name: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        out: PathBuf::from("/tmp/slimseg-tiny"),
        config: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/tiny.toml"
        )),
        train: 20,
        val: 2,
        test: 6,
        epochs: None,
        search_epochs: None,
        stage: "all".into(),
        search_name: "search".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        let num = |s: String| s.parse::<usize>().map_err(|e| format!("{k}: {e}"));
        match k.as_str() {
            "--out" => a.out = v()?.into(),
            "--config" => a.config = v()?.into(),
            "--train" => a.train = num(v()?)?,
            "--val" => a.val = num(v()?)?,
            "--test" => a.test = num(v()?)?,
            "--epochs" => a.epochs = Some(num(v()?)?),
            "--search-epochs" => a.search_epochs = Some(num(v()?)?),
            "--stage" => a.stage = v()?,
            "--search-name" => a.search_name = v()?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn print_histograms(title: &str, g: &GateValues) {
    let s = GateStats::of(g);
    println!("--- gates {title} ---");
    for (name, vals, st) in [
        (
            "attention",
            g.attn
                .iter()
                .flatten()
                .flatten()
                .copied()
                .collect::<Vec<_>>(),
            s.attn,
        ),
        ("mlp", g.mlp.iter().flatten().copied().collect(), s.mlp),
        (
            "token",
            g.token.iter().flatten().copied().collect(),
            s.token,
        ),
    ] {
        println!(
            "{name}: n={} mean={:.4} min={:.4} max={:.4} share<0.05={:.4}",
            st.count, st.mean, st.min, st.max, st.below_005
        );
        let hi = st.max.max(1.0);
        print!("{}", render_histogram(&histogram(vals, 10, hi), hi, 40));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    slimseg_model::runtime::init();
    let args = parse_args()?;
    let mut cfg = RunConfig::from_toml_file(&args.config)?;
    if let Some(e) = args.epochs {
        cfg.train.epochs = e;
    }
    let data_root = args.out.join("data");
    if !data_root.join("synth.json").exists() {
        let s = generate(
            &data_root,
            &SynthConfig::small(args.train + args.val, args.test, 1234),
        )?;
        println!(
            "synthetic cohort: {} patients in {:.1} s",
            s.patients, s.seconds
        );
    }
    let n_trainval = (args.train + args.val) as u32;
    cfg.data.root = Some(data_root.clone());
    cfg.data.split = SplitConfig::Explicit {
        train: (1..=args.train as u32).collect(),
        val: (args.train as u32 + 1..=n_trainval).collect(),
        test: (0..args.test as u32)
            .map(|k| n_trainval.max(100) + 1 + k)
            .collect(),
    };
    let cohort = load_cohort(&data_root, &cfg.data)?;
    println!(
        "cohort: {} training slices, {} val volumes, {} test volumes; threads {}",
        cohort.train.len(),
        cohort.val.len(),
        cohort.test.len(),
        tch::get_num_threads()
    );
    let run = args.out.join("run");
    let base_dir = StageDir::new(run.join("baseline"));
    let opts = TrainOptions::default();
    let test_opts = EvalOptions {
        hd95: true,
        ..EvalOptions::default()
    };
    if args.stage == "all" || args.stage == "baseline" {
        let t = Instant::now();
        let (mut net, m) = run_baseline(&cfg, &cohort, &base_dir.root, &opts)?;
        println!(
            "baseline on {} (amp {}): {} epochs, {} iterations, {:.1} s training \
             ({:.1} s this call), {:.1} slices/s, best val Dice {:?} at epoch {:?}",
            m.device,
            m.amp,
            m.epochs,
            m.iterations,
            m.seconds,
            t.elapsed().as_secs_f64(),
            m.slices_per_s,
            m.best_val_dice,
            m.best_epoch
        );
        net.load(base_dir.best())?;
        let rep = evaluate(&net.model, &cohort.test, &test_opts)?;
        println!(
            "baseline test (best checkpoint): mean Dice {:.4}, per class RV/MYO/LV {:?}, \
             HD95 mm {:?}",
            rep.mean_dice.unwrap_or(f64::NAN),
            rep.mean_dice_per_class,
            rep.mean_hd95_mm_per_class
        );
        std::fs::write(
            base_dir.root.join("test_metrics.json"),
            serde_json::to_string_pretty(&rep)?,
        )?;
    }
    if args.stage == "all" || args.stage == "search" {
        let mut scfg = cfg.clone();
        if let Some(e) = args.search_epochs {
            scfg.search.epochs = Some(e);
        }
        let search_dir = StageDir::new(run.join(&args.search_name));
        let (net, m) = run_search(&scfg, &cohort, base_dir.best(), &search_dir.root, &opts)?;
        println!(
            "search: {} epochs, {:.1} s, best val Dice {:?}, last val Dice {:?}",
            m.epochs, m.seconds, m.best_val_dice, m.last_val_dice
        );
        print_histograms(
            "at search start",
            &read_gate_values(search_dir.gates_start())?,
        );
        print_histograms("at search end", &read_gate_values(search_dir.gates_end())?);
        let rep = evaluate(&net.model, &cohort.test, &EvalOptions::default())?;
        println!(
            "searched model (soft gates) test mean Dice {:.4}",
            rep.mean_dice.unwrap_or(f64::NAN)
        );
        if m.completed {
            let spec = select(
                &scfg.model,
                &read_gate_values(search_dir.gates_end())?,
                &scfg.select,
            )?;
            spec.save_toml(search_dir.root.join(SUBNET_FILE))?;
            println!(
                "subnet for {:?}: params {} of {} ({:.2}%), MACs {} of {} ({:.2}%)",
                spec.budget,
                spec.params,
                spec.full_params,
                100.0 * spec.params_fraction(),
                spec.macs,
                spec.full_macs,
                100.0 * spec.macs_fraction()
            );
            for (l, la) in spec.arch.layers.iter().enumerate() {
                println!(
                    "  layer {l}: head widths {:?}, MLP units {}, tokens {}",
                    la.head_widths(),
                    la.mlp_units.len(),
                    la.tokens.len()
                );
            }
        }
    }
    Ok(())
}
