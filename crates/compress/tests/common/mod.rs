//! Helpers shared by the integration tests.
#![allow(dead_code)]

use slimseg_model::{ModelConfig, PixelHead, TransUnet};
use tch::{Device, Kind, Tensor, nn};

/// `tiny` without dropout, so that every forward is deterministic.
pub fn tiny_cfg(pixel: PixelHead) -> ModelConfig {
    ModelConfig {
        dropout: 0.0,
        attention_dropout: 0.0,
        ..ModelConfig::tiny()
    }
    .with_pixel_head(pixel)
}

/// A full model with random weights, random position embeddings and transformer biases,
/// and calibrated BatchNorm statistics, so that every path of the network carries signal
/// in eval mode.
pub fn full_model(cfg: &ModelConfig, seed: i64) -> (nn::VarStore, TransUnet) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = TransUnet::new(&vs.root(), cfg).unwrap();
    perturb(&vs);
    calibrate_batchnorm(&model, seed * 100);
    (vs, model)
}

/// Runs train-mode forwards (no grad) until the decoder's BatchNorm running statistics
/// match the activations. With the initial statistics (mean 0, var 1) the transformer's
/// share of eval-mode logits is around 1e-7 of their scale, which would make any eval-mode
/// comparison vacuous; calibrated statistics let its signal through, as in a trained model.
pub fn calibrate_batchnorm(model: &TransUnet, seed: i64) {
    let _g = tch::no_grad_guard();
    let cfg = model.config();
    for i in 0..30 {
        let _ = model.forward_t(&input(cfg, 2, seed + i), true).unwrap();
    }
}

/// Gives position embeddings, transformer biases and LayerNorm scales (zero or one at
/// init) random values.
pub fn perturb(vs: &nn::VarStore) {
    let _g = tch::no_grad_guard();
    // In name order, so that the same seed gives the same model (a HashMap's order
    // changes from one call to the next).
    let mut vars: Vec<_> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut t) in vars {
        if name.ends_with("position_embeddings")
            || (name.starts_with("transformer.encoder") && name.ends_with("bias"))
        {
            t.copy_(&(t.randn_like() * 0.1));
        } else if name.starts_with("transformer.encoder") && name.ends_with("norm.weight") {
            t.copy_(&(t.rand_like() + 0.5));
        }
    }
}

/// Sets the attached soft gates to random values: attention and MLP gates in
/// `[0.1, 2.1)`, token scores in `[0.5, 3)` (or exactly 3, gate 1, with `tokens_at_init`).
pub fn randomise_gates(model: &TransUnet, seed: i64, tokens_at_init: bool) {
    tch::manual_seed(seed);
    let g = model.soft_gates().expect("soft gates attached");
    let _guard = tch::no_grad_guard();
    for l in 0..g.layers() {
        let a = g.attn(l);
        a.shallow_clone().copy_(&(a.rand_like() * 2.0 + 0.1));
        let m = g.mlp(l);
        m.shallow_clone().copy_(&(m.rand_like() * 2.0 + 0.1));
        let s = g.token_scores(l);
        let v = if tokens_at_init {
            s.ones_like() * 3.0
        } else {
            s.rand_like() * 2.5 + 0.5
        };
        s.shallow_clone().copy_(&v);
    }
}

/// Random input batch.
pub fn input(cfg: &ModelConfig, batch: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let s = cfg.img_size as i64;
    Tensor::randn([batch, 1, s, s], (Kind::Float, Device::Cpu))
}

/// Largest absolute difference of two tensors.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().to_kind(Kind::Double).double_value(&[])
}

/// A fresh temporary directory under the target dir's tmp (removed by the caller).
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "slimseg-compress-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
