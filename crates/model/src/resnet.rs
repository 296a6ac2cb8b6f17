//! ResNetV2 (BiT) backbone of the R50-ViT-B/16 hybrid: weight-standardised convolutions
//! with GroupNorm, a 7x7/2 root, a 3x3/2 max-pool and three stages of bottleneck units.
//!
//! As in the official TransUNet code (`vit_seg_modeling_resnet_skip.py`) the units apply
//! norm after each conv (conv-GN-ReLU), the projection shortcut uses a GroupNorm with one
//! group per channel (eps 1e-5), the other norms use `gn_groups` groups with eps 1e-6,
//! and skip features whose side falls one or two pixels short of `img_size / 4 / (i + 1)`
//! are zero-padded at the bottom/right.

use tch::{Kind, Tensor, nn};

use crate::config::ModelConfig;
use crate::layers::{GroupNorm, StdConv2d};

/// One bottleneck unit (`PreActBottleneck` in the official code).
#[derive(Debug)]
pub(crate) struct Bottleneck {
    conv1: StdConv2d,
    gn1: GroupNorm,
    conv2: StdConv2d,
    gn2: GroupNorm,
    conv3: StdConv2d,
    gn3: GroupNorm,
    downsample: Option<(StdConv2d, GroupNorm)>,
}

impl Bottleneck {
    fn new(
        p: &nn::Path,
        cin: usize,
        cout: usize,
        cmid: usize,
        stride: usize,
        groups: usize,
    ) -> Self {
        let downsample = (stride != 1 || cin != cout).then(|| {
            (
                StdConv2d::new(&(p / "downsample"), cin, cout, 1, stride, 0),
                GroupNorm::new(&(p / "gn_proj"), cout, cout, 1e-5),
            )
        });
        Bottleneck {
            gn1: GroupNorm::new(&(p / "gn1"), groups, cmid, 1e-6),
            conv1: StdConv2d::new(&(p / "conv1"), cin, cmid, 1, 1, 0),
            gn2: GroupNorm::new(&(p / "gn2"), groups, cmid, 1e-6),
            conv2: StdConv2d::new(&(p / "conv2"), cmid, cmid, 3, stride, 1),
            gn3: GroupNorm::new(&(p / "gn3"), groups, cout, 1e-6),
            conv3: StdConv2d::new(&(p / "conv3"), cmid, cout, 1, 1, 0),
            downsample,
        }
    }

    /// Standardises every kernel once for inference in `kind`, with `fast` the
    /// convolutions' fast paths too.
    fn prepare(&mut self, kind: Kind, fast: bool) {
        for conv in [&mut self.conv1, &mut self.conv2, &mut self.conv3] {
            conv.prepare(kind, fast);
        }
        if let Some((conv, _)) = &mut self.downsample {
            conv.prepare(kind, fast);
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let residual = match &self.downsample {
            Some((conv, gn)) => gn.forward(&conv.forward(xs)),
            None => xs.shallow_clone(),
        };
        let y = self.gn1.forward(&self.conv1.forward(xs)).relu();
        let y = self.gn2.forward(&self.conv2.forward(&y)).relu();
        let y = self.gn3.forward(&self.conv3.forward(&y));
        (residual + y).relu()
    }
}

/// The ResNetV2 body without its last stage, returning the final feature and the skips.
#[derive(Debug)]
pub(crate) struct ResNetV2 {
    root_conv: StdConv2d,
    root_gn: GroupNorm,
    stages: Vec<Vec<Bottleneck>>,
}

impl ResNetV2 {
    /// Variables under `p` (`root.conv`, `root.gn`, `body.block{1,2,3}.unit{i}.*`).
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let w = cfg.resnet_width;
        let g = cfg.gn_groups;
        let root = p / "root";
        let body = p / "body";
        // (cin of the first unit, cout, cmid, stride of the first unit)
        let plan = [
            (w, w * 4, w, 1),
            (w * 4, w * 8, w * 2, 2),
            (w * 8, w * 16, w * 4, 2),
        ];
        let stages = plan
            .iter()
            .zip(cfg.resnet_layers)
            .enumerate()
            .map(|(s, (&(cin, cout, cmid, stride), units))| {
                let bp = &body / format!("block{}", s + 1);
                (1..=units)
                    .map(|u| {
                        let (ci, st) = if u == 1 { (cin, stride) } else { (cout, 1) };
                        Bottleneck::new(&(&bp / format!("unit{u}")), ci, cout, cmid, st, g)
                    })
                    .collect()
            })
            .collect();
        ResNetV2 {
            root_conv: StdConv2d::new(&(&root / "conv"), 3, w, 7, 2, 3),
            root_gn: GroupNorm::new(&(&root / "gn"), g, w, 1e-6),
            stages,
        }
    }

    /// Standardises every kernel once for inference in `kind`, with `fast` the
    /// convolutions' fast paths too.
    pub fn prepare(&mut self, kind: Kind, fast: bool) {
        self.root_conv.prepare(kind, fast);
        for unit in self.stages.iter_mut().flatten() {
            unit.prepare(kind, fast);
        }
    }

    /// # Shapes
    /// `[B, 3, S, S] -> ([B, 16w, S/16, S/16], skips)` with skips, deepest first:
    /// `[B, 8w, S/8, S/8]`, `[B, 4w, S/4, S/4]`, `[B, w, S/2, S/2]` (`w = resnet_width`).
    pub fn forward(&self, xs: &Tensor) -> (Tensor, Vec<Tensor>) {
        let in_size = xs.size()[2];
        let mut features = Vec::with_capacity(3);
        let mut x = self.root_gn.forward(&self.root_conv.forward(xs)).relu();
        features.push(x.shallow_clone());
        x = x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false);
        let last = self.stages.len() - 1;
        for (i, stage) in self.stages.iter().enumerate() {
            for unit in stage {
                x = unit.forward(&x);
            }
            if i == last {
                break;
            }
            let right = in_size / 4 / (i as i64 + 1);
            let side = x.size()[2];
            let feat = if side != right {
                // Official behaviour: zero-pad bottom/right by one or two pixels.
                x.constant_pad_nd([0, right - side, 0, right - side])
            } else {
                x.shallow_clone()
            };
            features.push(feat);
        }
        features.reverse();
        (x, features)
    }
}
