//! Helpers shared by the integration tests.
#![allow(dead_code)]

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use slimseg_model::{LayerArch, ModelConfig, SubnetArch};
use tch::{Kind, Tensor, nn};

/// A random ascending subset of `0..n` of size in `lo..=n` (`lo` clamped to `n`).
pub fn subset(rng: &mut StdRng, n: usize, lo: usize) -> Vec<usize> {
    let k = rng.gen_range(lo.min(n)..=n);
    let mut v = sample(rng, n, k).into_vec();
    v.sort_unstable();
    v
}

/// A random reduced architecture: heads may vanish, MLPs and token sets may be empty.
pub fn random_arch(cfg: &ModelConfig, rng: &mut StdRng) -> SubnetArch {
    let full = SubnetArch::full_dims(cfg);
    SubnetArch {
        full,
        layers: (0..cfg.layers)
            .map(|_| LayerArch {
                head_dims: (0..full.heads)
                    .map(|_| subset(rng, full.head_dim, 0))
                    .collect(),
                mlp_units: subset(rng, full.mlp_dim, 0),
                tokens: subset(rng, full.num_tokens, 0),
            })
            .collect(),
    }
}

/// Sum of element counts of the trainable variables.
pub fn trainable_params(vs: &nn::VarStore) -> u64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as u64)
        .sum()
}

fn idx(v: &[usize]) -> Tensor {
    Tensor::from_slice(&v.iter().map(|&i| i as i64).collect::<Vec<_>>())
}

/// Copies the weights of a full model into a reduced one, slicing q/k/v rows, out
/// columns, fc1 rows and fc2 columns by the kept indices of `arch`.
pub fn slice_into(full: &nn::VarStore, reduced: &nn::VarStore, arch: &SubnetArch) {
    let src = full.variables();
    let _g = tch::no_grad_guard();
    for (name, mut dst) in reduced.variables() {
        let s = &src[&name];
        let value = if let Some(rest) = name.strip_prefix("transformer.encoder.layer.") {
            let (l, rest) = rest.split_once('.').unwrap();
            let la = &arch.layers[l.parse::<usize>().unwrap()];
            let attn = idx(&la.attn_flat_indices(arch.full.head_dim)).to_device(s.device());
            let units = idx(&la.mlp_units).to_device(s.device());
            match rest {
                "attn.query.weight" | "attn.key.weight" | "attn.value.weight"
                | "attn.query.bias" | "attn.key.bias" | "attn.value.bias" => {
                    s.index_select(0, &attn)
                }
                "attn.out.weight" => s.index_select(1, &attn),
                "ffn.fc1.weight" | "ffn.fc1.bias" => s.index_select(0, &units),
                "ffn.fc2.weight" => s.index_select(1, &units),
                _ => s.shallow_clone(),
            }
        } else {
            s.shallow_clone()
        };
        dst.copy_(&value);
    }
}

/// Largest absolute difference of two tensors.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().to_kind(Kind::Double).double_value(&[])
}

/// Random input batch for a config.
pub fn input(cfg: &ModelConfig, batch: i64, seed: i64) -> Tensor {
    let s = cfg.img_size as i64;
    seeded(seed, || {
        Tensor::randn([batch, 1, s, s], (Kind::Float, tch::Device::Cpu))
    })
}

/// Runs `f` right after seeding libtorch's generator, with no other test drawing from
/// that process-wide generator in between (tests run in parallel threads), so the same
/// seed gives the same draws.
pub fn seeded<T>(seed: i64, f: impl FnOnce() -> T) -> T {
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    f()
}

/// Gives the decoder's BatchNorms non-trivial running statistics and the position
/// embeddings non-zero values, so that eval-mode comparisons exercise every path.
pub fn perturb(vs: &nn::VarStore) {
    let _g = tch::no_grad_guard();
    // In name order: the variables come in a HashMap, whose order changes from one call
    // to the next, and the draws must not (the same seed gives the same model).
    let mut vars: Vec<_> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut t) in vars {
        if name.ends_with("running_var") {
            t.copy_(&(t.rand_like() + 0.5));
        } else if name.ends_with("running_mean")
            || name.ends_with("position_embeddings")
            // The decoder's and pixel module's BatchNorm shifts (zero at initialisation).
            || name.ends_with(".1.bias")
        {
            t.copy_(&(t.randn_like() * 0.1));
        }
    }
}
