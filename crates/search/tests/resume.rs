//! A run stopped after a checkpoint (with a torn checkpoint write left behind, as a kill
//! during the next save would leave) and resumed gives the same final weights, log and
//! optimiser trajectory as an uninterrupted run. CPU, fixed seed, tiny preset.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;

use slimseg_search::config::OptimizerKind;
use slimseg_search::engine::read_gate_values;
use slimseg_search::stages::Network;
use slimseg_search::{StageDir, TrainData, TrainOptions, train};
use tch::{Device, Tensor};

// The two tests share libtorch's global generator; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn weights(net: &Network) -> BTreeMap<String, Tensor> {
    net.vs.variables().into_iter().collect()
}

fn max_diff(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) -> f64 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .map(|(k, t)| (t - &b[k]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

/// Log rows without the timing columns.
fn log_without_timing(dir: &StageDir) -> Vec<String> {
    std::fs::read_to_string(dir.log())
        .unwrap()
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            [&c[..8], &c[10..]].concat().join(",")
        })
        .collect()
}

fn resume_equals_uninterrupted(search: bool, optimizer: OptimizerKind, name: &str) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = common::temp_dir(name);
    let (train_set, val) = common::tiny_data(&tmp, 8);
    let data = TrainData {
        train: &train_set,
        val: &val,
    };
    let mut cfg = common::tiny_config(2);
    cfg.train.optimizer = optimizer;
    if optimizer == OptimizerKind::Sgd {
        cfg.train.lr = 0.01;
    }
    let build = |seed: u64| {
        let mut net = Network::new(&cfg.model, Device::Cpu, seed).unwrap();
        if search {
            net.attach_soft_gates().unwrap();
        }
        net
    };

    // Uninterrupted.
    let a_dir = StageDir::new(tmp.join("a"));
    let a = build(7);
    let ma = train(
        &a.vs,
        &a.model,
        data,
        &cfg,
        &a_dir.root,
        &TrainOptions::default(),
    )
    .unwrap();
    assert!(ma.completed && ma.epochs == 2 && ma.resumed_from_epoch.is_none());

    // Stopped after one epoch...
    let b_dir = StageDir::new(tmp.join("b"));
    let b = build(7);
    let stop = TrainOptions {
        stop_after_epochs: Some(1),
        ..TrainOptions::default()
    };
    let mb = train(&b.vs, &b.model, data, &cfg, &b_dir.root, &stop).unwrap();
    assert!(!mb.completed && mb.epochs == 1);
    assert!(
        !b_dir.weights().exists(),
        "no final weights before completion"
    );
    drop(b);
    // ... while writing the next checkpoint: a torn temporary directory remains.
    let torn = b_dir.checkpoints().join(".epoch-0002.tmp");
    std::fs::create_dir_all(&torn).unwrap();
    std::fs::write(torn.join("model.safetensors"), b"truncated").unwrap();

    // Resumed in a fresh process state: different initial weights, which the checkpoint
    // must overwrite.
    let c = build(99);
    let mc = train(
        &c.vs,
        &c.model,
        data,
        &cfg,
        &b_dir.root,
        &TrainOptions::default(),
    )
    .unwrap();
    assert_eq!(mc.resumed_from_epoch, Some(1));
    assert!(mc.completed && mc.epochs == 2 && mc.iterations == ma.iterations);

    let diff = max_diff(&weights(&a), &weights(&c));
    assert_eq!(
        diff, 0.0,
        "resumed weights differ from uninterrupted ones by {diff}"
    );
    assert_eq!(log_without_timing(&a_dir), log_without_timing(&b_dir));
    assert_eq!(log_without_timing(&a_dir).len(), 3, "header + 2 epochs");
    // The best Dice went through JSON in the checkpoint (exact to the last bit or two).
    let (da, dc) = (ma.best_val_dice.unwrap(), mc.best_val_dice.unwrap());
    assert!((da - dc).abs() <= 1e-12, "best val Dice {da} vs {dc}");

    // The saved final weights load back to the same values.
    let d = build(5);
    slimseg_model::weights::load_safetensors(&d.vs, b_dir.weights()).unwrap();
    assert_eq!(max_diff(&weights(&a), &weights(&d)), 0.0);
    if search {
        let start = read_gate_values(b_dir.gates_start()).unwrap();
        let end = read_gate_values(b_dir.gates_end()).unwrap();
        assert_ne!(start, end, "the search moved the gates");
        assert_eq!(end, c.model.soft_gates().unwrap().values());
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn resumed_search_with_adamw_equals_uninterrupted_run() {
    resume_equals_uninterrupted(true, OptimizerKind::Adamw, "resume-adamw");
}

#[test]
fn resumed_baseline_with_sgd_momentum_equals_uninterrupted_run() {
    resume_equals_uninterrupted(false, OptimizerKind::Sgd, "resume-sgd");
}
