//! Whether a configuration's sparsity factors let the gates separate: compares, per
//! searched dimension, the task loss's gradient on each gate (segmentation, plus the
//! direction-field term when the pixel module is on) with the L1 factor
//! that pulls every gate down. Where almost no gate's segmentation gradient exceeds its
//! factor, the L1 term moves all gates alike and the search cannot tell them apart (what
//! tiny showed with ViT-Slim's factors); then a bounded search follows (the engine's
//! loop for `--epochs` passes over two synthetic patients), with the gate statistics and
//! the search-health warnings after it.
//!
//! The model is the configuration's, with the weights of `--weights` (a trained
//! baseline's `best.safetensors`), else `train.pretrained` when that file exists, else
//! its random initialisation; the slices come from a synthetic cohort at the model's
//! input size. A bounded check: `--iters` batches of `--batch` slices, on the CPU.
//!
//! ```text
//! cargo run --release -p slimseg-search --example gate_signal -- \
//!     --config configs/paper.toml [--weights RUN/baseline/best.safetensors] \
//!     [--iters 4] [--batch 2] [--epochs 1]
//! ```
//!
//! The token gate is `g = tanh(s)` and the L1 term is on `g`, so its gradient is
//! compared as `dL/dg`. Gradients at a random initialisation are not those of trained
//! weights: on tiny the trained baseline's 90th percentiles were 0.6-9x the random
//! initialisation's, so a margin far beyond that is what the check can tell.

use std::path::PathBuf;
use std::time::Instant;

use slimseg_data::pipeline::PipelineConfig;
use slimseg_data::synth::{SynthConfig, generate};
use slimseg_search::data::load_cohort;
use slimseg_search::loss::{direction_loss, segmentation_loss, sparsity_factors};
use slimseg_search::stages::Network;
use slimseg_search::stats::{GateStats, health};
use slimseg_search::{RunConfig, TrainData, TrainOptions, train};
use tch::{Device, Kind, Tensor};

struct Args {
    config: PathBuf,
    weights: Option<PathBuf>,
    iters: usize,
    batch: usize,
    epochs: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        config: PathBuf::from("configs/paper.toml"),
        weights: None,
        iters: 4,
        batch: 2,
        epochs: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        let num = |s: String| s.parse::<usize>().map_err(|e| format!("{k}: {e}"));
        match k.as_str() {
            "--config" => a.config = v()?.into(),
            "--weights" => a.weights = Some(v()?.into()),
            "--iters" => a.iters = num(v()?)?,
            "--batch" => a.batch = num(v()?)?,
            "--epochs" => a.epochs = num(v()?)?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.iters == 0 || a.batch == 0 {
        return Err("--iters and --batch must be positive".into());
    }
    Ok(a)
}

/// Median, 90th percentile and maximum of `v`, and the share of entries above `w`
/// (zeros for no entries).
fn summary(mut v: Vec<f64>, w: f64) -> (f64, f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0, 0.0);
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let above = v.iter().filter(|&&x| x > w).count() as f64 / v.len() as f64;
    (at(0.5), at(0.9), at(1.0), above)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let mut cfg = RunConfig::from_toml_file(&args.config)?;
    cfg.train.batch_size = args.batch;
    let mc = cfg.model.clone();
    println!(
        "config {}: {} blocks, hidden {}, MLP {}, {} tokens, input {}",
        args.config.display(),
        mc.layers,
        mc.hidden,
        mc.mlp_dim,
        mc.num_tokens(),
        mc.img_size
    );
    let tmp = std::env::temp_dir().join(format!("slimseg-gate-signal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    generate(&tmp, &SynthConfig::small(3, 1, 1234))?;
    let mut data = cfg.data.clone();
    data.split = slimseg_search::config::SplitConfig::Explicit {
        train: vec![1, 2],
        val: vec![3],
        test: vec![101],
    };
    let cohort = load_cohort(&tmp, &data)?;
    let _ = std::fs::remove_dir_all(&tmp);

    let mut net = Network::new(&mc, Device::Cpu, cfg.train.seed)?;
    let init = match (&args.weights, &cfg.train.pretrained) {
        (Some(w), _) => {
            net.load(w)?;
            format!("weights {}", w.display())
        }
        (None, Some(p)) if p.is_file() => {
            slimseg_model::weights::import_vit_npz(&net.vs, &mc, p)?;
            format!("pretrained {}", p.display())
        }
        _ => "random initialisation (no weights given, no pretrained file)".into(),
    };
    println!("model: {init}");
    net.attach_soft_gates()?;
    let gates = net.model.soft_gates().expect("attached above");
    let factors = sparsity_factors(&mc, &cfg.search);
    let pixel = mc.pixel_head != slimseg_model::PixelHead::None;
    let pipe = PipelineConfig {
        size: mc.img_size,
        batch_size: args.batch,
        augment: true,
        shuffle: true,
        drop_last: true,
        direction_fields: pixel,
        normalization: cfg.data.normalization,
        seed: cfg.train.seed,
    };
    let n = cohort.train.len();
    let batch_at = |i: usize| -> Result<_, Box<dyn std::error::Error>> {
        let idx: Vec<usize> = (0..args.batch).map(|k| (i * args.batch + k) % n).collect();
        let b = cohort.train.make_batch(&idx, &pipe, 0)?;
        let s = mc.img_size as i64;
        let bs = b.len() as i64;
        let x = Tensor::from_slice(&b.images).view([bs, 1, s, s]);
        let y = Tensor::from_slice(&b.labels).view([bs, s, s]);
        let d = b
            .directions
            .map(|d| Tensor::from_slice(&d).view([bs, 2, s, s]));
        Ok((x, y, d))
    };
    let seg_of = |x: &Tensor,
                  y: &Tensor,
                  d: &Option<Tensor>|
     -> Result<Tensor, Box<dyn std::error::Error>> {
        let out = net.model.forward_t(x, true)?;
        let mut loss = segmentation_loss(&out.logits, y);
        if let (Some(f), Some(t)) = (&out.direction_field, d) {
            loss += direction_loss(f, t) * cfg.train.lambda_df;
        }
        Ok(loss)
    };

    // Gradients of the task loss (no sparsity term) on every gate, averaged over batches.
    let vars = gates.variables();
    let t = Instant::now();
    let mut acc: Vec<Tensor> = vars.iter().map(Tensor::zeros_like).collect();
    for i in 0..args.iters {
        let (x, y, d) = batch_at(i)?;
        let loss = seg_of(&x, &y, &d)?;
        let grads = Tensor::run_backward(&[&loss], &vars, false, false);
        for (a, g) in acc.iter_mut().zip(grads) {
            *a = &*a + g / args.iters as f64;
        }
    }
    let per_step = t.elapsed().as_secs_f64() / args.iters as f64;
    let layers = mc.layers;
    let collect = |range: std::ops::Range<usize>, scale: &dyn Fn(usize) -> Tensor| -> Vec<f64> {
        range
            .flat_map(|i| {
                let g = (acc[i].abs() * scale(i))
                    .to_kind(Kind::Double)
                    .flatten(0, -1);
                Vec::<f64>::try_from(g).unwrap_or_default()
            })
            .collect()
    };
    let one = |_: usize| Tensor::from(1.0f64);
    // Token gates: dL/dg = (dL/ds) / (1 - tanh(s)^2).
    let token_scale = |i: usize| {
        let s = &vars[i];
        let slope: Tensor = 1.0 - s.tanh().square();
        slope.reciprocal().detach()
    };
    println!(
        "\n{} batches of {} slices ({per_step:.1} s per forward and backward)\n",
        args.iters, args.batch
    );
    println!("| dimension | factor w | median abs(dL/dgate) | 90th pct | max | share above w |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, range, w, scale) in [
        (
            "attention",
            0..layers,
            factors.0,
            &one as &dyn Fn(usize) -> Tensor,
        ),
        ("MLP", layers..2 * layers, factors.1, &one),
        ("token", 2 * layers..3 * layers, factors.2, &token_scale),
    ] {
        let (med, p90, max, above) = summary(collect(range, scale), w);
        println!(
            "| {name} | {w:.1e} | {med:.2e} | {p90:.2e} | {max:.2e} | {:.1}% |",
            100.0 * above
        );
    }

    // A bounded search: the engine's search loop (gates in their own group at
    // search.gate_lr, weights at search.lr) for --epochs passes over the small cohort.
    if args.epochs > 0 {
        let mut scfg = cfg.for_search();
        scfg.train.epochs = args.epochs;
        scfg.train.device = slimseg_search::config::DeviceChoice::Cpu;
        scfg.train.val_every = args.epochs;
        let dir = std::env::temp_dir().join(format!("slimseg-gate-search-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data = TrainData {
            train: &cohort.train,
            val: &cohort.val,
        };
        let t = Instant::now();
        let m = train(
            &net.vs,
            &net.model,
            data,
            &scfg,
            &dir,
            &TrainOptions::default(),
        )?;
        let _ = std::fs::remove_dir_all(&dir);
        let g = gates.values();
        println!(
            "\nafter {} search epoch(s) ({} iterations of {} slices, {:.0} s):",
            m.epochs,
            m.iterations,
            args.batch,
            t.elapsed().as_secs_f64()
        );
        let st = GateStats::of(&g);
        for (name, d) in [
            ("attention", &st.attn),
            ("MLP", &st.mlp),
            ("token", &st.token),
        ] {
            println!("  {name}: {d:?}");
        }
        for w in health(&g, None) {
            println!("  warning: {w}");
        }
    }
    Ok(())
}
