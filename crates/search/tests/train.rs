//! The training engine end to end on a few slices: search moves the gates and logs their
//! statistics, evaluation scores every volume, bad inputs are refused with clear errors.

mod common;

use slimseg_search::config::{AmpChoice, DeviceChoice, SparsityKind};
use slimseg_search::stages::Network;
use slimseg_search::{EvalOptions, StageDir, TrainData, TrainOptions, evaluate, train};
use tch::Device;

#[test]
fn search_shrinks_gates_writes_stage_files_and_gate_columns() {
    let tmp = common::temp_dir("train-search");
    let (train_set, val) = common::tiny_data(&tmp, 8);
    let mut cfg = common::tiny_config(1);
    // Strong sparsity so that two steps visibly lower the gates' L1 norms.
    cfg.search.sparsity = SparsityKind::CostAware;
    cfg.search.cost_weight = 1.0;
    cfg.search.gate_lr = 0.05;
    let mut net = Network::new(&cfg.model, Device::Cpu, 1).unwrap();
    net.attach_soft_gates().unwrap();
    let before = net.model.soft_gates().unwrap().l1_mlp().double_value(&[]);
    let dir = StageDir::new(tmp.join("search"));
    let data = TrainData {
        train: &train_set,
        val: &val,
    };
    let m = train(
        &net.vs,
        &net.model,
        data,
        &cfg,
        &dir.root,
        &TrainOptions::default(),
    )
    .unwrap();
    assert!(m.completed && m.iterations == 2 && m.gate_mode == "soft");
    let after = net.model.soft_gates().unwrap().l1_mlp().double_value(&[]);
    assert!(after < before, "MLP gate L1 {before} -> {after}");
    for p in [
        dir.weights(),
        dir.best(),
        dir.metrics(),
        dir.config(),
        dir.gates_start(),
        dir.gates_end(),
    ] {
        assert!(p.exists(), "{} missing", p.display());
    }
    let log = std::fs::read_to_string(dir.log()).unwrap();
    let rows: Vec<Vec<&str>> = log.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2);
    let col = |name: &str| rows[0].iter().position(|c| *c == name).unwrap();
    let attn_mean: f64 = rows[1][col("attn_mean")].parse().unwrap();
    assert!(
        attn_mean > 0.0 && attn_mean < 1.0,
        "attention gate mean {attn_mean}"
    );
    let sparsity: f64 = rows[1][col("sparsity_loss")].parse().unwrap();
    assert!(sparsity > 0.0);
    let seg: f64 = rows[1][col("seg_loss")].parse().unwrap();
    let df: f64 = rows[1][col("df_loss")].parse().unwrap();
    assert!(
        df > 0.0,
        "the preset's pixel module adds its direction-field loss"
    );
    let total: f64 = rows[1][col("loss")].parse().unwrap();
    // Epoch means accumulated separately in f32: equal up to rounding relative to the
    // magnitude (the sparsity term alone can be in the hundreds here).
    assert!(
        (total - (seg + df + sparsity)).abs() <= 1e-6 * total.abs().max(1.0),
        "loss {total} != seg {seg} + direction field {df} + sparsity {sparsity}"
    );
    assert!(!rows[1][col("val_dice")].is_empty());
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn evaluation_scores_every_volume_and_class_with_hd95_on_request() {
    let tmp = common::temp_dir("eval");
    let (_, val) = common::tiny_data(&tmp, 1);
    let cfg = common::tiny_config(1);
    let net = Network::new(&cfg.model, Device::Cpu, 2).unwrap();
    let opts = EvalOptions {
        hd95: true,
        ..EvalOptions::default()
    };
    let rep = evaluate(&net.model, &val, &opts).unwrap();
    assert_eq!(rep.volumes.len(), val.len());
    assert_eq!(rep.classes, ["RV", "MYO", "LV"].map(String::from));
    for v in &rep.volumes {
        assert!(
            v.dice
                .iter()
                .all(|d| d.is_some_and(|d| (0.0..=1.0).contains(&d)))
        );
        assert!(v.hd95_mm.is_some() && v.hd95_vox.is_some());
    }
    let mean = rep.mean_dice.unwrap();
    let by_hand = rep
        .mean_dice_per_class
        .iter()
        .map(|d| d.unwrap())
        .sum::<f64>()
        / 3.0;
    assert!((mean - by_hand).abs() < 1e-12);
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn resuming_with_another_configuration_is_refused_but_not_on_other_threads() {
    let tmp = common::temp_dir("train-mismatch");
    let (train_set, _) = common::tiny_data(&tmp, 4);
    let cfg = common::tiny_config(2);
    let net = Network::new(&cfg.model, Device::Cpu, 3).unwrap();
    let data = TrainData {
        train: &train_set,
        val: &[],
    };
    let dir = tmp.join("stage");
    let stop = TrainOptions {
        stop_after_epochs: Some(1),
        ..TrainOptions::default()
    };
    train(&net.vs, &net.model, data, &cfg, &dir, &stop).unwrap();
    // Run-time keys do not make another configuration: the run continues.
    let mut same = cfg.clone();
    same.train.device = DeviceChoice::Auto;
    same.train.threads = 2;
    same.train.progress = true;
    let m = train(&net.vs, &net.model, data, &same, &dir, &stop).unwrap();
    assert_eq!(m.resumed_from_epoch, Some(1));
    let mut other = cfg.clone();
    other.train.lr *= 2.0;
    let err = train(
        &net.vs,
        &net.model,
        data,
        &other,
        &dir,
        &TrainOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("checkpoints") && err.contains("different configuration"),
        "{err}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn too_few_slices_for_a_batch_is_an_error_with_the_counts() {
    let tmp = common::temp_dir("train-few");
    let (train_set, _) = common::tiny_data(&tmp, 3);
    let cfg = common::tiny_config(1);
    let net = Network::new(&cfg.model, Device::Cpu, 4).unwrap();
    let data = TrainData {
        train: &train_set,
        val: &[],
    };
    let err = train(
        &net.vs,
        &net.model,
        data,
        &cfg,
        tmp.join("s"),
        &TrainOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("3 training slices") && err.contains("batch of 4"),
        "{err}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn segmentation_gradient_reaches_every_gate_dimension_in_soft_mode() {
    // The search trains gates jointly with the weights: the segmentation loss alone must
    // give the attention, MLP and token gates non-zero gradients.
    let tmp = common::temp_dir("gate-grad");
    let (train_set, _) = common::tiny_data(&tmp, 4);
    let cfg = common::tiny_config(1);
    let mut net = Network::new(&cfg.model, Device::Cpu, 6).unwrap();
    net.attach_soft_gates().unwrap();
    let s = cfg.model.img_size as i64;
    let pipe = slimseg_data::pipeline::PipelineConfig {
        size: cfg.model.img_size,
        batch_size: 4,
        augment: false,
        ..Default::default()
    };
    let batch = train_set.make_batch(&[0, 1, 2, 3], &pipe, 0).unwrap();
    let x = tch::Tensor::from_slice(&batch.images).view([4, 1, s, s]);
    let y = tch::Tensor::from_slice(&batch.labels).view([4, s, s]);
    let out = net.model.forward_t(&x, true).unwrap();
    slimseg_search::loss::segmentation_loss(&out.logits, &y).backward();
    let gates = net.model.soft_gates().unwrap();
    for l in 0..cfg.model.layers {
        for (name, v) in [
            ("attn", gates.attn(l)),
            ("mlp", gates.mlp(l)),
            ("token", gates.token_scores(l)),
        ] {
            let g = v.grad().abs().sum(tch::Kind::Float).double_value(&[]);
            assert!(
                g > 0.0 && g.is_finite(),
                "layer {l} {name} gate gradient {g}"
            );
        }
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn bf16_autocast_trains_on_the_cpu_and_is_recorded() {
    let tmp = common::temp_dir("train-bf16");
    let (train_set, _) = common::tiny_data(&tmp, 8);
    let data = TrainData {
        train: &train_set,
        val: &[],
    };
    let mut losses = Vec::new();
    let mut cfg = common::tiny_config(1);
    cfg.train.val_every = 0;
    // Nothing drawn from libtorch's generator, which tests running in parallel share.
    cfg.model.dropout = 0.0;
    let init = Network::new(&cfg.model, Device::Cpu, 5).unwrap();
    for amp in [AmpChoice::Off, AmpChoice::Bf16] {
        cfg.train.amp = amp;
        // The same initial weights for both runs.
        let mut net = Network::new(&cfg.model, Device::Cpu, 5).unwrap();
        net.vs.copy(&init.vs).unwrap();
        let dir = tmp.join(format!("{amp:?}"));
        let m = train(
            &net.vs,
            &net.model,
            data,
            &cfg,
            &dir,
            &TrainOptions::default(),
        )
        .unwrap();
        assert!(m.completed && m.final_loss.is_finite());
        let bf16 = amp == AmpChoice::Bf16;
        assert_eq!(m.amp, bf16);
        assert_eq!(m.amp_precision.as_deref(), bf16.then_some("bf16"));
        losses.push(m.final_loss);
    }
    // Same weights, same batches: only the precision of the products differs.
    let (fp32, bf16) = (losses[0], losses[1]);
    assert_ne!(fp32, bf16, "bf16 autocast changed nothing");
    assert!(
        (fp32 - bf16).abs() < 0.05 * fp32.abs(),
        "fp32 {fp32} vs bf16 {bf16}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}
