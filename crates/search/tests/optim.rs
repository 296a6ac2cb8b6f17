//! The optimisers against hand-computed updates, parameter groups, and state round trips.

use slimseg_search::config::OptimizerKind;
use slimseg_search::optim::{GroupSettings, Optimizer, OptimizerSettings};
use tch::{Kind, Tensor};

fn var(values: &[f32]) -> Tensor {
    Tensor::from_slice(values).set_requires_grad(true)
}

/// Sets the gradient of `p` to `c` by back-propagating `sum(p * c)`.
fn backprop_linear(p: &Tensor, c: &[f32]) {
    (p * Tensor::from_slice(c)).sum(Kind::Float).backward();
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.detach().to_kind(Kind::Double)).unwrap()
}

fn settings(kind: OptimizerKind) -> OptimizerSettings {
    OptimizerSettings {
        kind,
        momentum: 0.9,
        betas: [0.9, 0.999],
        eps: 1e-8,
    }
}

fn close(a: &[f64], b: &[f64]) {
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

#[test]
fn sgd_with_momentum_and_weight_decay_matches_hand_computation() {
    let p = var(&[1.0, -2.0]);
    let mut opt = Optimizer::new(
        settings(OptimizerKind::Sgd),
        vec![GroupSettings {
            lr: 0.1,
            weight_decay: 0.01,
        }],
        vec![("p".into(), p.shallow_clone(), 0)],
    )
    .unwrap();
    let c = [0.5f32, 1.0];
    opt.zero_grad();
    backprop_linear(&p, &c);
    opt.step(1.0);
    // g = c + 0.01 p = (0.51, 0.98); buf = g; p = p - 0.1 buf
    close(&values(&p), &[0.949, -2.098]);
    opt.zero_grad();
    backprop_linear(&p, &c);
    opt.step(0.5);
    // g = c + 0.01 p = (0.50949, 0.97902); buf = 0.9 (0.51, 0.98) + g = (0.96849, 1.86102)
    // p = p - 0.05 buf
    close(
        &values(&p),
        &[0.949 - 0.05 * 0.96849, -2.098 - 0.05 * 1.86102],
    );
}

#[test]
fn adamw_first_step_matches_hand_computation() {
    let p = var(&[1.0]);
    let mut opt = Optimizer::new(
        settings(OptimizerKind::Adamw),
        vec![GroupSettings {
            lr: 0.1,
            weight_decay: 0.01,
        }],
        vec![("p".into(), p.shallow_clone(), 0)],
    )
    .unwrap();
    opt.zero_grad();
    backprop_linear(&p, &[0.5]);
    opt.step(1.0);
    // decay: 1 * (1 - 0.1 * 0.01) = 0.999; m = 0.05, v = 0.00025; bias-corrected
    // m/(sqrt(v)+eps) = 0.5 / 0.5 = 1 -> p = 0.999 - 0.1
    close(&values(&p), &[0.899]);
}

#[test]
fn groups_have_their_own_learning_rate_and_weight_decay() {
    let w = var(&[1.0]);
    let g = var(&[1.0]);
    let mut opt = Optimizer::new(
        settings(OptimizerKind::Sgd),
        vec![
            GroupSettings {
                lr: 0.1,
                weight_decay: 0.5,
            },
            GroupSettings {
                lr: 0.01,
                weight_decay: 0.0,
            },
        ],
        vec![
            ("w".into(), w.shallow_clone(), 0),
            ("gate".into(), g.shallow_clone(), 1),
        ],
    )
    .unwrap();
    opt.zero_grad();
    backprop_linear(&w, &[1.0]);
    backprop_linear(&g, &[1.0]);
    opt.step(1.0);
    close(&values(&w), &[1.0 - 0.1 * (1.0 + 0.5)]);
    close(&values(&g), &[1.0 - 0.01]);
}

#[test]
fn restored_state_continues_the_same_trajectory() {
    for kind in [OptimizerKind::Sgd, OptimizerKind::Adamw] {
        let make = |init: f32| {
            let p = var(&[init, 2.0]);
            let opt = Optimizer::new(
                settings(kind),
                vec![GroupSettings {
                    lr: 0.05,
                    weight_decay: 0.1,
                }],
                vec![("p".into(), p.shallow_clone(), 0)],
            )
            .unwrap();
            (p, opt)
        };
        let (p, mut opt) = make(1.0);
        for _ in 0..2 {
            opt.zero_grad();
            backprop_linear(&p, &[0.3, -0.7]);
            opt.step(1.0);
        }
        let state = opt.state_tensors().into_iter().collect();
        let (q, mut opt2) = make(0.0);
        tch::no_grad(|| q.shallow_clone().copy_(&p));
        opt2.load_state(state, opt.steps()).unwrap();
        for (pp, oo) in [(&p, &mut opt), (&q, &mut opt2)] {
            oo.zero_grad();
            backprop_linear(pp, &[0.3, -0.7]);
            oo.step(0.7);
        }
        assert_eq!(values(&p), values(&q), "{kind:?}");
    }
}

#[test]
fn state_of_another_model_is_rejected() {
    let p = var(&[1.0]);
    let mut opt = Optimizer::new(
        settings(OptimizerKind::Sgd),
        vec![GroupSettings {
            lr: 0.1,
            weight_decay: 0.0,
        }],
        vec![("p".into(), p, 0)],
    )
    .unwrap();
    let mut state = std::collections::HashMap::new();
    state.insert(
        "momentum.q".to_string(),
        Tensor::zeros([1], (Kind::Float, tch::Device::Cpu)),
    );
    let err = opt.load_state(state, 1).unwrap_err().to_string();
    assert!(err.contains("momentum.p"), "{err}");
}
