//! Writes a `tiny` TransUNet's weights, an input batch and the model's outputs to a
//! safetensors file, for `scripts/check_against_pytorch.py` to compare against an
//! independent PyTorch statement of the official TransUNet (and scipy's zoom).
//!
//! Run: `cargo run -p slimseg-model --example dump_reference -- reference.safetensors`

use slimseg_model::infer::resize_bicubic;
use slimseg_model::weights::resize_position_embeddings;
use slimseg_model::{ModelConfig, TransUnet};
use tch::{Device, Kind, Tensor, nn};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: dump_reference OUT.safetensors")?;
    tch::manual_seed(20240206);
    // No dropout, so that train-mode outputs (BatchNorm batch statistics) are comparable.
    let cfg = ModelConfig {
        dropout: 0.0,
        attention_dropout: 0.0,
        ..ModelConfig::tiny()
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let model = TransUnet::new(&vs.root(), &cfg)?;
    {
        // Non-trivial values for what starts at constants.
        let _g = tch::no_grad_guard();
        for (name, mut t) in vs.variables() {
            if name.ends_with("running_var") {
                t.copy_(&(t.rand_like() + 0.5));
            } else if name.ends_with("running_mean") || name.ends_with("position_embeddings") {
                t.copy_(&(t.randn_like() * 0.1));
            } else if name.contains("norm")
                || name.contains(".gn")
                || name.ends_with(".1.weight")
                || name.ends_with(".1.bias")
            {
                t.copy_(&(t.randn_like() * 0.1 + &t));
            }
        }
    }
    let s = cfg.img_size as i64;
    let x = Tensor::randn([2, 1, s, s], (Kind::Float, Device::Cpu));
    let eval = tch::no_grad(|| model.forward_t(&x, false))?.logits;
    // Snapshot the weights before the train-mode pass updates the running statistics.
    let mut entries: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect();
    let train = tch::no_grad(|| model.forward_t(&x, true))?.logits;
    let posemb = Tensor::randn([1, 26, 8], (Kind::Float, Device::Cpu));
    entries.push(("__posemb_old".into(), posemb.shallow_clone()));
    entries.push((
        "__posemb_new".into(),
        resize_position_embeddings(&posemb, 49)?,
    ));
    let img = Tensor::randn([1, 1, 37, 53], (Kind::Float, Device::Cpu));
    entries.push(("__img".into(), img.shallow_clone()));
    entries.push(("__img_resized".into(), resize_bicubic(&img, 96)));
    entries.push(("__input".into(), x));
    entries.push(("__logits_eval".into(), eval));
    entries.push(("__logits_train".into(), train));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Tensor::write_safetensors(&entries, &out)?;
    println!("{out}: {} tensors", entries.len());
    Ok(())
}
