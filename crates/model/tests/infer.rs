//! Volume inference (TransUNet test protocol).
use ndarray::Array3;
use slimseg_model::infer::{predict_volume, predict_volume_with, resize_nearest_labels};
use slimseg_model::{ModelConfig, TransUnet};
use tch::{Device, Kind, Tensor, nn};

fn volume(d: usize, h: usize, w: usize) -> Array3<f32> {
    Array3::from_shape_fn((d, h, w), |(z, y, x)| {
        ((z * 7 + y * 3 + x) % 11) as f32 / 11.0 - 0.5
            + ((y as f32 - 40.0).abs() < 9.0) as u8 as f32
    })
}

#[test]
fn predicts_labels_of_the_volume_shape_independent_of_batching() {
    tch::manual_seed(3);
    let cfg = ModelConfig::tiny();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = TransUnet::new(&vs.root(), &cfg).unwrap();
    let vol = volume(3, 100, 90);
    let a = predict_volume(&model, vol.view(), 1).unwrap();
    let b = predict_volume(&model, vol.view(), 2).unwrap();
    assert_eq!(a.dim(), (3, 100, 90));
    assert!(a.iter().all(|&v| (v as usize) < cfg.num_classes));
    assert_eq!(a, b);
}

#[test]
fn at_model_size_prediction_is_the_argmax_of_the_logits() {
    tch::manual_seed(4);
    let cfg = ModelConfig::tiny();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = TransUnet::new(&vs.root(), &cfg).unwrap();
    let vol = volume(2, 96, 96);
    let pred = predict_volume(&model, vol.view(), 4).unwrap();
    let xs = Tensor::from_slice(vol.as_slice().unwrap()).view([2, 1, 96, 96]);
    let want = tch::no_grad(|| model.forward_t(&xs, false))
        .unwrap()
        .logits
        .argmax(1, false)
        .to_kind(Kind::Uint8);
    let want = Vec::<u8>::try_from(&want.view(-1)).unwrap();
    assert_eq!(pred.as_slice().unwrap(), want.as_slice());
}

#[test]
fn nearest_resize_is_corner_aligned() {
    // 2x3 labels to 3x5: rows 0, round(0.5)=1, 1; cols 0, round(0.5)=1, 1, round(1.5)=2, 2.
    let labels = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5]).view([1, 2, 3]);
    let out = resize_nearest_labels(&labels, 3, 5);
    let got = Vec::<i64>::try_from(&out.view(-1)).unwrap();
    assert_eq!(got, vec![0, 1, 1, 2, 2, 3, 4, 4, 5, 5, 3, 4, 4, 5, 5]);
    // Downsampling 5 -> 3 picks the first, middle and last samples.
    let line = Tensor::arange(5, (Kind::Int64, Device::Cpu)).view([1, 1, 5]);
    let got = Vec::<i64>::try_from(&resize_nearest_labels(&line, 1, 3).view(-1)).unwrap();
    assert_eq!(got, vec![0, 2, 4]);
}

#[test]
fn rejects_bad_inputs() {
    let cfg = ModelConfig::tiny();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = TransUnet::new(&vs.root(), &cfg).unwrap();
    assert!(predict_volume(&model, volume(1, 10, 10).view(), 0).is_err());
    assert!(predict_volume(&model, Array3::<f32>::zeros((1, 0, 4)).view(), 1).is_err());
    assert_eq!(
        predict_volume(&model, Array3::<f32>::zeros((0, 4, 4)).view(), 1)
            .unwrap()
            .dim(),
        (0, 4, 4)
    );
}

#[test]
fn caller_supplied_resize_is_used() {
    tch::manual_seed(5);
    let cfg = ModelConfig::tiny();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = TransUnet::new(&vs.root(), &cfg).unwrap();
    let vol = volume(3, 48, 40);
    // Nearest-neighbour upsampling by hand; predictions come back at 48x40.
    let nearest = |s: ndarray::ArrayView2<'_, f32>, size: usize| {
        let (h, w) = s.dim();
        ndarray::Array2::from_shape_fn((size, size), |(y, x)| s[[y * h / size, x * w / size]])
    };
    let a = predict_volume_with(&model, vol.view(), 2, nearest).unwrap();
    assert_eq!(a.dim(), (3, 48, 40));
    // Same as running the model on the hand-resized slices.
    let mut data = Vec::new();
    for s in vol.outer_iter() {
        data.extend(nearest(s, 96).iter().copied());
    }
    let xs = Tensor::from_slice(&data).view([3, 1, 96, 96]);
    let pred = tch::no_grad(|| model.forward_t(&xs, false))
        .unwrap()
        .logits
        .argmax(1, false);
    let back = resize_nearest_labels(&pred, 48, 40).to_kind(Kind::Uint8);
    assert_eq!(
        a.as_slice().unwrap(),
        Vec::<u8>::try_from(&back.view(-1)).unwrap().as_slice()
    );
    // A resize of the wrong size is an error.
    let bad = |_: ndarray::ArrayView2<'_, f32>, _: usize| ndarray::Array2::<f32>::zeros((3, 3));
    assert!(predict_volume_with(&model, vol.view(), 2, bad).is_err());
}
