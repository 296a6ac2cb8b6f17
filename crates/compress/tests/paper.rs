//! Sliced == hard-masked once for the paper preset (R50-ViT-B/16, 224x224), batch 1,
//! with folded gates, heads of different widths and every edge case; and the sliced
//! model's parameter count equals the analytic count.
mod common;

use common::{input, perturb, randomise_gates};
use slimseg_compress::{Folding, check_equivalence, compress};
use slimseg_model::{LayerArch, ModelConfig, SubnetArch, TransUnet, count};
use tch::{Device, nn};

/// A small deterministic generator (xorshift64*), so the arch needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn keep(&mut self, n: usize, percent: u64) -> Vec<usize> {
        (0..n).filter(|_| self.next() % 100 < percent).collect()
    }
}

fn irregular_arch(cfg: &ModelConfig) -> SubnetArch {
    let full = SubnetArch::full_dims(cfg);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut tokens: Vec<usize> = (0..full.num_tokens).collect();
    let layers = (0..cfg.layers)
        .map(|l| {
            let mut head_dims: Vec<Vec<usize>> = (0..full.heads)
                .map(|h| rng.keep(full.head_dim, 30 + 5 * h as u64))
                .collect();
            let mut mlp_units = rng.keep(full.mlp_dim, 40);
            match l {
                0 => head_dims[3].clear(),                      // a head with no dims
                5 => head_dims.iter_mut().for_each(Vec::clear), // no attention
                7 => mlp_units.clear(),                         // no MLP
                _ => {}
            }
            if l >= cfg.layers / 2 {
                // Tokens dropped from the middle blocks on, nested with depth.
                tokens.retain(|_| rng.next() % 100 < 80);
            }
            LayerArch {
                head_dims,
                mlp_units,
                tokens: tokens.clone(),
            }
        })
        .collect();
    SubnetArch { full, layers }
}

/// He (ReLU-gain) rescaling of the decoder and head convolutions. With PyTorch's default
/// conv init the variance shrinks about six-fold per conv-ReLU, so in eval mode the
/// transformer's share of the logits (ten convs downstream) would be ~1e-4 of their scale
/// and any comparison vacuous; He scaling keeps it at the scale of the skip paths.
fn he_rescale_decoder(vs: &nn::VarStore) {
    let _g = tch::no_grad_guard();
    for (name, mut t) in vs.variables() {
        let conv = (name.starts_with("decoder.") || name.starts_with("segmentation_head."))
            && name.ends_with("weight")
            && t.dim() == 4;
        if conv {
            t.copy_(&(&t * 6f64.sqrt()));
        }
    }
}

#[test]
fn paper_preset_sliced_equals_hard_masked() {
    let cfg = ModelConfig {
        dropout: 0.0,
        attention_dropout: 0.0,
        ..ModelConfig::paper()
    };
    tch::manual_seed(61);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut full = TransUnet::new(&vs.root(), &cfg).unwrap();
    perturb(&vs);
    he_rescale_decoder(&vs);
    full.attach_soft_gates(&(vs.root() / "gates")).unwrap();
    randomise_gates(&full, 62, false);

    let arch = irregular_arch(&cfg);
    arch.check(&cfg).unwrap();
    let widths = arch.layers[1].head_widths();
    assert!(
        widths.iter().any(|&w| w != widths[0]),
        "heads should differ in width"
    );

    let compressed = compress(&full, &vs, &arch, Folding::SoftGates, Device::Cpu).unwrap();
    assert_eq!(
        compressed.num_params(),
        count::count(&cfg, Some(&arch)).unwrap().params()
    );
    let x = input(&cfg, 1, 63);
    let r = check_equivalence(&mut full, &compressed.model, &x, Folding::SoftGates).unwrap();
    eprintln!("paper: {r:?}");
    assert!(r.within(1e-4), "{r:?}");
    assert!(
        r.pruning_effect > 100.0 * r.max_abs_diff.max(1e-7),
        "the pruning must change the output far beyond the difference: {r:?}"
    );
}
