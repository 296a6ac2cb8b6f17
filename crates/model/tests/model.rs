//! The model against the official TransUNet: parameter count, variable names and shapes,
//! forward shapes, and the analytic counter against the VarStore.
mod common;

use common::{input, random_arch, trainable_params};
use proptest::prelude::*;
use rand::SeedableRng;
use slimseg_model::count::{block_count, count};
use slimseg_model::{ModelConfig, PixelHead, SubnetArch, TransUnet};
use tch::{Device, nn};

#[test]
fn paper_preset_matches_official_implementation() {
    let cfg = ModelConfig::paper();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = TransUnet::new(&vs.root(), &cfg).unwrap();

    // Official parameter count (4 classes, no pixel module) and the counter agree.
    assert_eq!(trainable_params(&vs), 105_276_356);
    let c = count(&cfg, None).unwrap();
    assert_eq!(c.params(), 105_276_356);
    // 12 blocks + encoder norm: 85,056,000 (DESIGN.md reference facts).
    let (blocks, _) = c.sum_prefix("transformer.encoder.");
    assert_eq!(blocks, 85_056_000);

    // Official state_dict names and shapes.
    let vars = vs.variables();
    let expect: &[(&str, &[i64])] = &[
        (
            "transformer.embeddings.hybrid_model.root.conv.weight",
            &[64, 3, 7, 7],
        ),
        ("transformer.embeddings.hybrid_model.root.gn.weight", &[64]),
        (
            "transformer.embeddings.hybrid_model.body.block1.unit1.conv1.weight",
            &[64, 64, 1, 1],
        ),
        (
            "transformer.embeddings.hybrid_model.body.block1.unit1.downsample.weight",
            &[256, 64, 1, 1],
        ),
        (
            "transformer.embeddings.hybrid_model.body.block1.unit1.gn_proj.bias",
            &[256],
        ),
        (
            "transformer.embeddings.hybrid_model.body.block2.unit1.conv2.weight",
            &[128, 128, 3, 3],
        ),
        (
            "transformer.embeddings.hybrid_model.body.block3.unit9.conv3.weight",
            &[1024, 256, 1, 1],
        ),
        (
            "transformer.embeddings.hybrid_model.body.block3.unit9.gn3.weight",
            &[1024],
        ),
        (
            "transformer.embeddings.patch_embeddings.weight",
            &[768, 1024, 1, 1],
        ),
        ("transformer.embeddings.patch_embeddings.bias", &[768]),
        ("transformer.embeddings.position_embeddings", &[1, 196, 768]),
        ("transformer.encoder.layer.0.attention_norm.weight", &[768]),
        ("transformer.encoder.layer.0.attn.query.weight", &[768, 768]),
        ("transformer.encoder.layer.0.attn.key.bias", &[768]),
        ("transformer.encoder.layer.0.attn.value.weight", &[768, 768]),
        ("transformer.encoder.layer.0.attn.out.weight", &[768, 768]),
        ("transformer.encoder.layer.11.ffn_norm.bias", &[768]),
        ("transformer.encoder.layer.11.ffn.fc1.weight", &[3072, 768]),
        ("transformer.encoder.layer.11.ffn.fc2.weight", &[768, 3072]),
        ("transformer.encoder.encoder_norm.weight", &[768]),
        ("decoder.conv_more.0.weight", &[512, 768, 3, 3]),
        ("decoder.conv_more.1.running_var", &[512]),
        ("decoder.blocks.0.conv1.0.weight", &[256, 1024, 3, 3]),
        ("decoder.blocks.1.conv1.0.weight", &[128, 512, 3, 3]),
        ("decoder.blocks.2.conv1.0.weight", &[64, 192, 3, 3]),
        ("decoder.blocks.3.conv1.0.weight", &[16, 64, 3, 3]),
        ("decoder.blocks.3.conv2.1.weight", &[16]),
        ("segmentation_head.0.weight", &[4, 16, 3, 3]),
        ("segmentation_head.0.bias", &[4]),
    ];
    for (name, shape) in expect {
        let t = vars
            .get(*name)
            .unwrap_or_else(|| panic!("missing variable {name}"));
        assert_eq!(t.size(), shape.to_vec(), "{name}");
    }
    // Nothing beyond the official modules; blocks 12 and unit 10 do not exist.
    for name in vars.keys() {
        assert!(
            [
                "transformer.embeddings.",
                "transformer.encoder.",
                "decoder.",
                "segmentation_head."
            ]
            .iter()
            .any(|p| name.starts_with(p)),
            "unexpected variable {name}"
        );
        assert!(
            !name.contains("layer.12.") && !name.contains("unit10"),
            "{name}"
        );
    }
    // Official block biases have no conv bias in the ResNet and decoder convs.
    assert!(!vars.contains_key("transformer.embeddings.hybrid_model.root.conv.bias"));
    assert!(!vars.contains_key("decoder.conv_more.0.bias"));

    // One batch-1 forward.
    let out = tch::no_grad(|| model.forward_t(&input(&cfg, 1, 0), false)).unwrap();
    assert_eq!(out.logits.size(), vec![1, 4, 224, 224]);
    assert!(out.direction_field.is_none());
}

/// Share of the MACs per image spent in the transformer blocks.
fn block_mac_share(cfg: &ModelConfig) -> f64 {
    let c = count(cfg, None).unwrap();
    let (_, blocks) = c.sum_prefix("transformer.encoder.layer.");
    blocks as f64 / c.macs() as f64
}

#[test]
fn tiny_preset_keeps_the_paper_models_mac_balance() {
    // The paper's 30% whole-model MAC cut comes from the transformer, so the CPU preset
    // must spend about the same share of its MACs there for the cut to be reachable.
    let paper = block_mac_share(&ModelConfig::paper());
    let tiny = block_mac_share(&ModelConfig::tiny());
    assert!((paper - 0.595).abs() < 0.001, "paper share {paper}");
    assert!(
        (tiny - paper).abs() < 0.01,
        "tiny share {tiny} vs paper {paper}"
    );
    assert_eq!(
        count(&ModelConfig::tiny(), None).unwrap().params(),
        2_058_060
    );
}

#[test]
fn tiny_forward_shapes_with_and_without_pixel_head() {
    for head in [PixelHead::None, PixelHead::DirectionField] {
        let cfg = ModelConfig::tiny().with_pixel_head(head);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = TransUnet::new(&vs.root(), &cfg).unwrap();
        for train in [true, false] {
            let out = model.forward_t(&input(&cfg, 2, 1), train).unwrap();
            assert_eq!(out.logits.size(), vec![2, 4, 96, 96]);
            match head {
                PixelHead::None => assert!(out.direction_field.is_none()),
                PixelHead::DirectionField => {
                    assert_eq!(out.direction_field.unwrap().size(), vec![2, 2, 96, 96])
                }
            }
        }
        // Three-channel input is accepted as well; a wrong size is a named error.
        let x3 = input(&cfg, 1, 2).repeat([1, 3, 1, 1]);
        assert_eq!(
            model.forward_t(&x3, false).unwrap().logits.size(),
            vec![1, 4, 96, 96]
        );
        let err = model
            .forward_t(
                &input(
                    &ModelConfig {
                        img_size: 128,
                        ..cfg.clone()
                    },
                    1,
                    0,
                ),
                false,
            )
            .unwrap_err();
        assert!(err.to_string().contains("input"), "{err}");
    }
}

#[test]
fn one_channel_input_equals_repeated_three_channels() {
    let cfg = ModelConfig::tiny();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = TransUnet::new(&vs.root(), &cfg).unwrap();
    let x = input(&cfg, 1, 3);
    let a = model.forward_t(&x, false).unwrap().logits;
    let b = model
        .forward_t(&x.repeat([1, 3, 1, 1]), false)
        .unwrap()
        .logits;
    assert_eq!(common::max_diff(&a, &b), 0.0);
}

#[test]
fn counter_equals_varstore_for_presets_and_pixel_head() {
    for cfg in [
        ModelConfig::tiny(),
        ModelConfig::tiny().with_pixel_head(PixelHead::DirectionField),
        ModelConfig {
            n_skip: 1,
            num_classes: 9,
            ..ModelConfig::tiny()
        },
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = TransUnet::new(&vs.root(), &cfg).unwrap();
        assert_eq!(
            count(&cfg, None).unwrap().params(),
            trainable_params(&vs),
            "{cfg:?}"
        );
        let full = SubnetArch::full(&cfg);
        assert_eq!(
            count(&cfg, Some(&full)).unwrap(),
            count(&cfg, None).unwrap()
        );
    }
}

#[test]
fn vit_b_block_macs_by_hand() {
    // ViT-B/16 block on 196 tokens: 196 * (4 * 768^2 + 2 * 768 * 3072) linear MACs and
    // 2 * 196^2 * 768 attention matmul MACs.
    let b = block_count(768, &[64; 12], 3072, 196);
    assert_eq!(b.linear_macs, 196 * (4 * 768 * 768 + 2 * 768 * 3072));
    assert_eq!(b.attention_matmul_macs, 2 * 196 * 196 * 768);
    assert_eq!(b.params, 7_087_872);
    let c = count(&ModelConfig::paper(), None).unwrap();
    let layer0 = c
        .layers
        .iter()
        .find(|l| l.name == "transformer.encoder.layer.0")
        .unwrap();
    assert_eq!(layer0.macs, b.macs());
    assert_eq!(c.flops(), 2 * c.macs());
    // Root conv 7x7/2 on 224: 112^2 * 3 * 64 * 49 MACs; segmentation head 224^2 * 16 * 4 * 9.
    let root = c
        .layers
        .iter()
        .find(|l| l.name.ends_with("hybrid_model.root"))
        .unwrap();
    assert_eq!(root.macs, 112 * 112 * 3 * 64 * 49);
    let seg = c
        .layers
        .iter()
        .find(|l| l.name == "segmentation_head")
        .unwrap();
    assert_eq!(seg.macs, 224 * 224 * 16 * 4 * 9);
    // A removed token costs nothing in that block; halving the MLP halves its linear MACs.
    let half = block_count(768, &[64; 12], 1536, 196);
    assert_eq!(b.linear_macs - half.linear_macs, 196 * 2 * 768 * 1536);
    assert_eq!(block_count(768, &[64; 12], 3072, 0).macs(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    #[test]
    fn counter_equals_varstore_for_random_reduced_archs(seed in any::<u64>()) {
        let cfg = ModelConfig::tiny();
        let arch = random_arch(&cfg, &mut rand::rngs::StdRng::seed_from_u64(seed));
        let vs = nn::VarStore::new(Device::Cpu);
        let model = TransUnet::new_reduced(&vs.root(), &cfg, &arch).unwrap();
        let c = count(&cfg, Some(&arch)).unwrap();
        prop_assert_eq!(c.params(), trainable_params(&vs));
        prop_assert!(c.macs() <= count(&cfg, None).unwrap().macs());
        // The reduced model runs and keeps the output shape.
        let out = model.forward_t(&input(&cfg, 1, 4), false).unwrap();
        prop_assert_eq!(out.logits.size(), vec![1, 4, 96, 96]);
    }
}
