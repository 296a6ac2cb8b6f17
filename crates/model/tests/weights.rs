//! Weights: strict safetensors save/load, official state_dict import, ViT npz import.
mod common;

use common::{input, max_diff, perturb};
use slimseg_model::weights::{
    import_vit_npz, load_official_state_dict, load_safetensors, read_npz,
    resize_position_embeddings, save_safetensors,
};
use slimseg_model::{Error, ModelConfig, SubnetArch, TransUnet};
use tch::{Device, Kind, Tensor, nn};

struct TempDir(std::path::PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("slimseg-model-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tiny_model(seed: i64) -> (ModelConfig, nn::VarStore, TransUnet) {
    tch::manual_seed(seed);
    let cfg = ModelConfig::tiny();
    let vs = nn::VarStore::new(Device::Cpu);
    let m = TransUnet::new(&vs.root(), &cfg).unwrap();
    perturb(&vs);
    (cfg, vs, m)
}

#[test]
fn safetensors_roundtrip_restores_outputs() {
    let dir = TempDir::new("st");
    let path = dir.0.join("w.safetensors");
    let (cfg, vs, m) = tiny_model(1);
    save_safetensors(&vs, &path).unwrap();
    let (_, vs2, m2) = tiny_model(2);
    let x = input(&cfg, 1, 3);
    let before = max_diff(
        &m.forward_t(&x, false).unwrap().logits,
        &m2.forward_t(&x, false).unwrap().logits,
    );
    assert!(before > 0.0);
    load_safetensors(&vs2, &path).unwrap();
    assert_eq!(
        max_diff(
            &m.forward_t(&x, false).unwrap().logits,
            &m2.forward_t(&x, false).unwrap().logits
        ),
        0.0
    );
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1);
}

#[test]
fn strict_load_names_missing_unexpected_and_misshaped_tensors() {
    let dir = TempDir::new("strict");
    let (cfg, vs, mut m) = tiny_model(1);
    // Gates are variables too: a file with gates does not load into a model without.
    m.attach_soft_gates(&(vs.root() / "gates")).unwrap();
    let with_gates = dir.0.join("gates.safetensors");
    save_safetensors(&vs, &with_gates).unwrap();
    let (_, plain, _) = tiny_model(2);
    match load_safetensors(&plain, &with_gates).unwrap_err() {
        Error::UnexpectedTensors { names, .. } => {
            assert!(names.iter().any(|n| n == "gates.attn.0"))
        }
        e => panic!("{e}"),
    }
    let plain_file = dir.0.join("plain.safetensors");
    save_safetensors(&plain, &plain_file).unwrap();
    match load_safetensors(&vs, &plain_file).unwrap_err() {
        Error::MissingTensors { names, .. } => {
            assert!(names.iter().any(|n| n.starts_with("gates.")))
        }
        e => panic!("{e}"),
    }
    // A reduced model's file into the full model: shape error naming the tensor.
    let mut arch = SubnetArch::full(&cfg);
    arch.layers[2].mlp_units.truncate(10);
    let rvs = nn::VarStore::new(Device::Cpu);
    let _r = TransUnet::new_reduced(&rvs.root(), &cfg, &arch).unwrap();
    let reduced_file = dir.0.join("reduced.safetensors");
    save_safetensors(&rvs, &reduced_file).unwrap();
    let err = load_safetensors(&plain, &reduced_file)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("transformer.encoder.layer.2.ffn.fc") && err.contains("10]"),
        "{err}"
    );
    // The reduced model loads its own file.
    load_safetensors(&rvs, &reduced_file).unwrap();
    // A missing file is an IO error naming the path.
    let err = load_safetensors(&plain, dir.0.join("nope.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.safetensors"), "{err}");
}

#[test]
fn official_state_dict_with_module_prefix_and_step_counters_loads() {
    let dir = TempDir::new("official");
    let (cfg, vs, m) = tiny_model(1);
    // What scripts/convert_transunet_pth.py writes for a DataParallel checkpoint.
    let mut entries: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (format!("module.{k}"), v))
        .collect();
    entries.push((
        "module.decoder.conv_more.1.num_batches_tracked".into(),
        Tensor::from(7i64),
    ));
    let path = dir.0.join("official.safetensors");
    Tensor::write_safetensors(&entries, &path).unwrap();
    let (_, vs2, m2) = tiny_model(2);
    let report = load_official_state_dict(&vs2, &path).unwrap();
    assert_eq!(report.loaded.len(), vs.variables().len());
    assert_eq!(report.ignored.len(), 1);
    let x = input(&cfg, 1, 4);
    assert_eq!(
        max_diff(
            &m.forward_t(&x, false).unwrap().logits,
            &m2.forward_t(&x, false).unwrap().logits
        ),
        0.0
    );
    // A missing weight is an error naming it.
    entries.retain(|(k, _)| k != "module.segmentation_head.0.bias");
    Tensor::write_safetensors(&entries, &path).unwrap();
    let err = load_official_state_dict(&vs2, &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("segmentation_head.0.bias"), "{err}");
}

/// Writes an npz with the key scheme and layouts of `R50+ViT-B_16.npz` for `cfg`, with a
/// class token and a `grid_old x grid_old` position grid. Returns the entries.
fn write_vit_npz(
    cfg: &ModelConfig,
    grid_old: i64,
    path: &std::path::Path,
) -> Vec<(String, Tensor)> {
    tch::manual_seed(42);
    let opts = (Kind::Float, Device::Cpu);
    let r = |shape: &[i64]| Tensor::randn(shape, opts);
    let w = cfg.resnet_width as i64;
    let c = cfg.hidden as i64;
    let (h, dh, m) = (cfg.heads as i64, cfg.head_dim() as i64, cfg.mlp_dim as i64);
    let mut e: Vec<(String, Tensor)> = vec![
        ("conv_root/kernel".into(), r(&[7, 7, 3, w])),
        ("gn_root/scale".into(), r(&[w])),
        ("gn_root/bias".into(), r(&[w])),
        ("embedding/kernel".into(), r(&[1, 1, 16 * w, c])),
        ("embedding/bias".into(), r(&[c])),
        ("cls".into(), r(&[1, 1, c])),
        ("head/kernel".into(), r(&[c, 21843])),
        ("head/bias".into(), r(&[21843])),
        ("Transformer/encoder_norm/scale".into(), r(&[c])),
        ("Transformer/encoder_norm/bias".into(), r(&[c])),
    ];
    // Position embeddings linear in the grid coordinates: a * row + b * col + channel.
    let n_old = grid_old * grid_old;
    let rows = Tensor::arange(grid_old, opts)
        .view([grid_old, 1, 1])
        .expand([grid_old, grid_old, c], false);
    let cols = Tensor::arange(grid_old, opts)
        .view([1, grid_old, 1])
        .expand([grid_old, grid_old, c], false);
    let chan = Tensor::arange(c, opts).view([1, 1, c]);
    let grid = (rows * 0.5 - cols * 0.25 + chan).reshape([1, n_old, c]);
    e.push((
        "Transformer/posembed_input/pos_embedding".into(),
        Tensor::cat(&[r(&[1, 1, c]), grid], 1),
    ));
    let plan = [(w, w * 4, w), (w * 4, w * 8, w * 2), (w * 8, w * 16, w * 4)];
    for (s, (&(cin0, cout, cmid), &units)) in plan.iter().zip(cfg.resnet_layers.iter()).enumerate()
    {
        for u in 1..=units as i64 {
            let p = format!("block{}/unit{u}", s + 1);
            let cin = if u == 1 { cin0 } else { cout };
            e.push((format!("{p}/conv1/kernel"), r(&[1, 1, cin, cmid])));
            e.push((format!("{p}/conv2/kernel"), r(&[3, 3, cmid, cmid])));
            e.push((format!("{p}/conv3/kernel"), r(&[1, 1, cmid, cout])));
            for (gn, ch) in [("gn1", cmid), ("gn2", cmid), ("gn3", cout)] {
                e.push((format!("{p}/{gn}/scale"), r(&[ch])));
                e.push((format!("{p}/{gn}/bias"), r(&[ch])));
            }
            if u == 1 {
                e.push((format!("{p}/conv_proj/kernel"), r(&[1, 1, cin, cout])));
                e.push((format!("{p}/gn_proj/scale"), r(&[cout])));
                e.push((format!("{p}/gn_proj/bias"), r(&[cout])));
            }
        }
    }
    for l in 0..cfg.layers {
        let p = format!("Transformer/encoderblock_{l}");
        for ln in ["LayerNorm_0", "LayerNorm_2"] {
            e.push((format!("{p}/{ln}/scale"), r(&[c])));
            e.push((format!("{p}/{ln}/bias"), r(&[c])));
        }
        let a = format!("{p}/MultiHeadDotProductAttention_1");
        for q in ["query", "key", "value"] {
            e.push((format!("{a}/{q}/kernel"), r(&[c, h, dh])));
            e.push((format!("{a}/{q}/bias"), r(&[h, dh])));
        }
        e.push((format!("{a}/out/kernel"), r(&[h, dh, c])));
        e.push((format!("{a}/out/bias"), r(&[c])));
        e.push((format!("{p}/MlpBlock_3/Dense_0/kernel"), r(&[c, m])));
        e.push((format!("{p}/MlpBlock_3/Dense_0/bias"), r(&[m])));
        e.push((format!("{p}/MlpBlock_3/Dense_1/kernel"), r(&[m, c])));
        e.push((format!("{p}/MlpBlock_3/Dense_1/bias"), r(&[c])));
    }
    Tensor::write_npz(&e, path).unwrap();
    e
}

#[test]
fn npz_import_maps_official_keys() {
    let dir = TempDir::new("npz");
    let path = dir.0.join("R50+ViT-B_16-tiny.npz");
    let (cfg, vs, m) = tiny_model(1);
    // Old grid 5x5 (+ class token) resized to the tiny 6x6 grid.
    let entries: std::collections::HashMap<String, Tensor> =
        write_vit_npz(&cfg, 5, &path).into_iter().collect();
    let report = import_vit_npz(&vs, &cfg, &path).unwrap();
    let vars = vs.variables();
    let v = |n: &str| vars[n].shallow_clone();
    let e = |n: &str| entries[n].shallow_clone();
    let c = cfg.hidden as i64;

    // Conv kernels HWIO -> OIHW.
    assert_eq!(
        max_diff(
            &v("transformer.embeddings.hybrid_model.root.conv.weight"),
            &e("conv_root/kernel").permute([3, 2, 0, 1])
        ),
        0.0
    );
    assert_eq!(
        max_diff(
            &v("transformer.embeddings.hybrid_model.body.block2.unit1.downsample.weight"),
            &e("block2/unit1/conv_proj/kernel").permute([3, 2, 0, 1])
        ),
        0.0
    );
    assert_eq!(
        max_diff(
            &v("transformer.embeddings.hybrid_model.body.block3.unit3.gn2.bias"),
            &e("block3/unit3/gn2/bias")
        ),
        0.0
    );
    assert_eq!(
        max_diff(
            &v("transformer.embeddings.patch_embeddings.weight"),
            &e("embedding/kernel").permute([3, 2, 0, 1])
        ),
        0.0
    );
    // Attention kernels [C, H, dh] -> [C, C]^T, out [H, dh, C] -> [C, C]^T, MLP transposed.
    let q = e("Transformer/encoderblock_3/MultiHeadDotProductAttention_1/query/kernel")
        .reshape([c, c])
        .tr();
    assert_eq!(
        max_diff(&v("transformer.encoder.layer.3.attn.query.weight"), &q),
        0.0
    );
    let o = e("Transformer/encoderblock_1/MultiHeadDotProductAttention_1/out/kernel")
        .reshape([c, c])
        .tr();
    assert_eq!(
        max_diff(&v("transformer.encoder.layer.1.attn.out.weight"), &o),
        0.0
    );
    let vb =
        e("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/value/bias").reshape([-1]);
    assert_eq!(
        max_diff(&v("transformer.encoder.layer.0.attn.value.bias"), &vb),
        0.0
    );
    let fc2 = e("Transformer/encoderblock_2/MlpBlock_3/Dense_1/kernel").tr();
    assert_eq!(
        max_diff(&v("transformer.encoder.layer.2.ffn.fc2.weight"), &fc2),
        0.0
    );
    assert_eq!(
        max_diff(
            &v("transformer.encoder.layer.2.ffn_norm.weight"),
            &e("Transformer/encoderblock_2/LayerNorm_2/scale")
        ),
        0.0
    );

    // Position embeddings: class token dropped, 5x5 linear field zoomed to 6x6 with
    // corner alignment stays linear: value(r, c) = 0.5 * r * 4/5 - 0.25 * c * 4/5 + ch.
    let pos = v("transformer.embeddings.position_embeddings").view([6, 6, c]);
    let s = 4.0 / 5.0;
    for (r, col) in [(0i64, 0i64), (5, 5), (3, 4), (4, 1)] {
        for ch in [0i64, c - 1] {
            let want = 0.5 * r as f64 * s - 0.25 * col as f64 * s + ch as f64;
            let got = pos.double_value(&[r, col, ch]);
            assert!(
                (got - want).abs() < 1e-4,
                "pos[{r},{col},{ch}] = {got}, want {want}"
            );
        }
    }

    // Everything of the encoder came from the file; decoder and head did not.
    assert!(report.ignored.iter().any(|s| s.starts_with("head/kernel")));
    assert!(report.ignored.iter().any(|s| s.starts_with("cls")));
    assert!(
        report
            .not_in_file
            .iter()
            .all(|n| n.starts_with("decoder.") || n.starts_with("segmentation_head."))
    );
    assert!(!report.not_in_file.is_empty());
    assert_eq!(report.loaded.len() + report.not_in_file.len(), vars.len());
    let out = m.forward_t(&input(&cfg, 1, 5), false).unwrap();
    assert_eq!(out.logits.size(), vec![1, 4, 96, 96]);
}

#[test]
fn npz_import_errors_name_the_key() {
    let dir = TempDir::new("npzerr");
    let path = dir.0.join("bad.npz");
    let (cfg, vs, _m) = tiny_model(1);
    let mut entries = write_vit_npz(&cfg, 6, &path);
    entries.retain(|(k, _)| k != "block2/unit2/gn2/scale");
    Tensor::write_npz(&entries, &path).unwrap();
    let err = import_vit_npz(&vs, &cfg, &path).unwrap_err().to_string();
    assert!(err.contains("block2/unit2/gn2/scale"), "{err}");
    // The import error of a file whose entry `key` is replaced by `value`.
    let import_with = |key: &str, value: Tensor| {
        let mut entries = write_vit_npz(&cfg, 6, &path);
        let (_, t) = entries
            .iter_mut()
            .find(|(k, _)| k == key)
            .expect("key exists");
        *t = value;
        Tensor::write_npz(&entries, &path).unwrap();
        import_vit_npz(&vs, &cfg, &path).unwrap_err().to_string()
    };
    let root = || vs.variables()["transformer.embeddings.hybrid_model.root.conv.weight"].copy();
    let before = root();
    // A kernel of the wrong width names the variable and both shapes.
    let err = import_with(
        "Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel",
        Tensor::zeros([cfg.hidden as i64, 7], (Kind::Float, Device::Cpu)),
    );
    assert!(
        err.contains("transformer.encoder.layer.1.ffn.fc1.weight") && err.contains("[7, 192]"),
        "{err}"
    );
    // Shapes are checked before anything is copied: the model keeps its values.
    assert!(root().equal(&before));
    // An integer entry is refused before anything is copied too.
    let err = import_with(
        "Transformer/encoder_norm/bias",
        Tensor::zeros([cfg.hidden as i64], (Kind::Int64, Device::Cpu)),
    );
    assert!(
        err.contains("encoder_norm.bias") && err.contains("dtype"),
        "{err}"
    );
    assert!(root().equal(&before));
    // A kernel of the wrong rank is an error naming the entry, not a panic.
    let err = import_with(
        "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel",
        Tensor::zeros([5, 3], (Kind::Float, Device::Cpu)),
    );
    assert!(
        err.contains("encoderblock_0/MultiHeadDotProductAttention_1/query/kernel")
            && err.contains("[5, 3]"),
        "{err}"
    );
}

#[test]
fn position_embedding_resize_cases() {
    let c = 3;
    let same = Tensor::randn([1, 16, c], (Kind::Float, Device::Cpu));
    assert_eq!(
        max_diff(&resize_position_embeddings(&same, 16).unwrap(), &same),
        0.0
    );
    let with_cls = Tensor::randn([1, 17, c], (Kind::Float, Device::Cpu));
    assert_eq!(
        max_diff(
            &resize_position_embeddings(&with_cls, 16).unwrap(),
            &with_cls.narrow(1, 1, 16)
        ),
        0.0
    );
    let up = resize_position_embeddings(&with_cls, 49).unwrap();
    assert_eq!(up.size(), vec![1, 49, c]);
    // Corners are preserved by a corner-aligned zoom.
    assert_eq!(
        max_diff(&up.narrow(1, 0, 1), &with_cls.narrow(1, 1, 1)),
        0.0
    );
    assert!(resize_position_embeddings(&with_cls, 50).is_err());
}

#[test]
fn reads_numpy_savez_zip64_layout() {
    // tests/data/numpy_savez.npz is written by tests/data/make_numpy_npz.py exactly as
    // numpy.savez writes (stored entries forced to zip64), with the slash key scheme.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/numpy_savez.npz");
    let entries: std::collections::HashMap<String, Tensor> =
        read_npz(&path).unwrap().into_iter().collect();
    assert_eq!(entries.len(), 3);
    let k = &entries["embedding/kernel"];
    assert_eq!(k.size(), vec![1, 1, 2, 3]);
    assert_eq!(
        Vec::<f32>::try_from(&k.reshape([-1])).unwrap(),
        vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    );
    let b = &entries["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/bias"];
    assert_eq!(b.size(), vec![2, 2]);
    assert_eq!(
        Vec::<f32>::try_from(&b.reshape([-1])).unwrap(),
        vec![0.5, -1.0, 2.0, 3.5]
    );
    let s = &entries["gn_root/scale"];
    assert_eq!(s.kind(), Kind::Double);
    assert_eq!(Vec::<f64>::try_from(s).unwrap(), vec![1.0, 2.0, 3.0]);
    // Not an npz: an error naming the file.
    let dir = TempDir::new("notnpz");
    let bogus = dir.0.join("bogus.npz");
    std::fs::write(&bogus, b"not a zip").unwrap();
    let err = read_npz(&bogus).unwrap_err().to_string();
    assert!(err.contains("bogus.npz"), "{err}");
}
