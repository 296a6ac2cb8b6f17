//! The compressed model on disk: round trip without the original, strict loading with
//! errors that name the tensor and both shapes, checkpoint compression, fine-tuning.
mod common;

use common::{full_model, input, max_diff, randomise_gates, temp_dir, tiny_cfg};
use slimseg_compress::{
    CompressedModel, Error, FORMAT, Folding, MANIFEST_FILE, Manifest, WEIGHTS_FILE, compress,
    compress_checkpoint,
};
use slimseg_model::{LayerArch, ModelConfig, PixelHead, SubnetArch, count};
use tch::{Device, Kind, Tensor, nn, nn::OptimizerConfig};

fn pruned_arch(cfg: &ModelConfig) -> SubnetArch {
    let mut arch = SubnetArch::full(cfg);
    let n = cfg.num_tokens();
    for (l, la) in arch.layers.iter_mut().enumerate() {
        *la = LayerArch {
            head_dims: (0..cfg.heads)
                .map(|h| {
                    (0..cfg.head_dim())
                        .filter(|d| (d + h + l) % 3 != 0 && h != l)
                        .collect()
                })
                .collect(),
            mlp_units: (0..cfg.mlp_dim).filter(|j| (j + l) % 4 != 1).collect(),
            tokens: (0..n).filter(|t| l < 2 || t % (l + 1) != 0).collect(),
        };
    }
    arch
}

/// A compressed tiny model (folded soft gates) and the inputs/outputs to compare against.
fn compressed_tiny(pixel: PixelHead) -> (CompressedModel, Tensor, Tensor) {
    let cfg = tiny_cfg(pixel);
    let (vs, mut full) = full_model(&cfg, 31);
    full.attach_soft_gates(&(vs.root() / "gates")).unwrap();
    randomise_gates(&full, 32, false);
    let c = compress(
        &full,
        &vs,
        &pruned_arch(&cfg),
        Folding::SoftGates,
        Device::Cpu,
    )
    .unwrap();
    let x = input(&cfg, 2, 33);
    let y = tch::no_grad(|| c.model.forward_t(&x, false).unwrap().logits);
    (c, x, y)
}

#[test]
fn saved_model_loads_and_runs_without_the_original() {
    let (c, x, y) = compressed_tiny(PixelHead::DirectionField);
    let dir = temp_dir("roundtrip");
    let manifest = c.save(&dir).unwrap();
    let (cfg, arch) = (c.config().clone(), c.arch().clone());
    drop(c);
    assert!(dir.join(MANIFEST_FILE).is_file() && dir.join(WEIGHTS_FILE).is_file());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let loaded = CompressedModel::load(&dir, Device::Cpu).unwrap();
    assert_eq!(loaded.config(), &cfg);
    assert_eq!(loaded.arch(), &arch);
    let y2 = tch::no_grad(|| loaded.model.forward_t(&x, false).unwrap().logits);
    assert_eq!(
        max_diff(&y, &y2),
        0.0,
        "reloaded model must give identical outputs"
    );

    // The manifest is readable on its own and its counts are the analytic ones.
    let m = Manifest::load(&dir).unwrap();
    assert_eq!(m, manifest);
    assert_eq!(m.format, FORMAT);
    let counted = count::count(&cfg, Some(&arch)).unwrap();
    assert_eq!(m.summary.params, counted.params());
    assert_eq!(m.summary.macs, counted.macs());
    assert_eq!(m.summary.params, loaded.num_params());
    assert!(m.summary.params < m.summary.full_params && m.summary.macs < m.summary.full_macs);
    let text = std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap();
    assert!(
        text.contains("[model]") && text.contains("[[arch.layers]]"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn wrong_shape_in_weights_names_the_tensor_and_both_shapes() {
    let (c, _, _) = compressed_tiny(PixelHead::None);
    let dir = temp_dir("wrongshape");
    c.save(&dir).unwrap();
    let name = "transformer.encoder.layer.1.ffn.fc1.weight";
    let mut entries = Tensor::read_safetensors(dir.join(WEIGHTS_FILE)).unwrap();
    let want = entries.iter().find(|(k, _)| k == name).unwrap().1.size();
    for (k, t) in entries.iter_mut() {
        if k == name {
            *t = Tensor::zeros([want[0] + 3, want[1]], (Kind::Float, Device::Cpu));
        }
    }
    Tensor::write_safetensors(&entries, dir.join(WEIGHTS_FILE)).unwrap();
    let err = CompressedModel::load(&dir, Device::Cpu).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(name), "{msg}");
    assert!(msg.contains(&format!("{want:?}")), "{msg}");
    assert!(
        msg.contains(&format!("{:?}", [want[0] + 3, want[1]])),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_manifests_are_rejected_with_the_file_named() {
    let (c, _, _) = compressed_tiny(PixelHead::None);
    let dir = temp_dir("badmanifest");
    c.save(&dir).unwrap();
    let path = dir.join(MANIFEST_FILE);
    let good = std::fs::read_to_string(&path).unwrap();

    std::fs::write(&path, good.replace(FORMAT, "slimseg-compressed/99")).unwrap();
    let msg = CompressedModel::load(&dir, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(MANIFEST_FILE) && msg.contains("slimseg-compressed/99"),
        "{msg}"
    );

    // An architecture that no longer fits the config (an index out of range).
    let mut m = Manifest::from_toml_str(&good, &path).unwrap();
    m.arch.layers[0].mlp_units.push(m.model.mlp_dim + 5);
    std::fs::write(&path, m.to_toml_string().unwrap()).unwrap();
    let msg = CompressedModel::load(&dir, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(MANIFEST_FILE) && msg.contains("out of range"),
        "{msg}"
    );

    std::fs::remove_file(&path).unwrap();
    let err = CompressedModel::load(&dir, Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains(MANIFEST_FILE));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loaded_model_is_trainable() {
    let (c, _, _) = compressed_tiny(PixelHead::None);
    let dir = temp_dir("finetune");
    c.save(&dir).unwrap();
    let loaded = CompressedModel::load(&dir, Device::Cpu).unwrap();
    let (vs, model) = loaded.into_parts();
    let q = vs.variables()["transformer.encoder.layer.0.attn.query.weight"].shallow_clone();
    assert!(q.requires_grad());
    let before = q.copy();
    let mut opt = nn::Sgd::default().build(&vs, 0.1).unwrap();
    let cfg = model.config().clone();
    let x = input(&cfg, 2, 41);
    let s = cfg.img_size as i64;
    let target = Tensor::randint(
        cfg.num_classes as i64,
        [2, s, s],
        (Kind::Int64, Device::Cpu),
    );
    let logits = model.forward_t(&x, true).unwrap().logits;
    let loss = logits.cross_entropy_loss::<Tensor>(&target, None, tch::Reduction::Mean, -100, 0.0);
    assert!(loss.double_value(&[]).is_finite());
    opt.backward_step(&loss);
    assert!(
        max_diff(&before, &q) > 0.0,
        "a training step must change the sliced weights"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compressing_a_checkpoint_equals_compressing_in_memory() {
    let cfg = tiny_cfg(PixelHead::None);
    let (vs, mut full) = full_model(&cfg, 51);
    full.attach_soft_gates(&(vs.root() / "gates")).unwrap();
    randomise_gates(&full, 52, false);
    let dir = temp_dir("checkpoint");
    let ckpt = dir.join("searched.safetensors");
    slimseg_model::weights::save_safetensors(&vs, &ckpt).unwrap();
    let arch = pruned_arch(&cfg);
    let x = input(&cfg, 2, 53);
    for folding in [Folding::SoftGates, Folding::None] {
        let a = compress(&full, &vs, &arch, folding, Device::Cpu).unwrap();
        let b = compress_checkpoint(&cfg, &ckpt, &arch, folding, Device::Cpu).unwrap();
        let (ya, yb) = tch::no_grad(|| {
            (
                a.model.forward_t(&x, false).unwrap().logits,
                b.model.forward_t(&x, false).unwrap().logits,
            )
        });
        assert_eq!(max_diff(&ya, &yb), 0.0);
    }
    // A checkpoint without gates can be sliced, but not folded.
    let (plain_vs, _) = full_model(&cfg, 54);
    let plain = dir.join("baseline.safetensors");
    slimseg_model::weights::save_safetensors(&plain_vs, &plain).unwrap();
    assert!(compress_checkpoint(&cfg, &plain, &arch, Folding::None, Device::Cpu).is_ok());
    let err =
        compress_checkpoint(&cfg, &plain, &arch, Folding::SoftGates, Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Gates(_)), "{err}");
    let err = compress_checkpoint(
        &cfg,
        dir.join("missing.safetensors"),
        &arch,
        Folding::None,
        Device::Cpu,
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
