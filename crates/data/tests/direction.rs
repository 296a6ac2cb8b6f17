//! Direction fields against a brute-force nearest-outside-pixel reference.

use ndarray::Array2;
use proptest::prelude::*;
use slimseg_data::direction::direction_field;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn direction_field_equals_brute_force(
        lab in (1usize..14, 1usize..14).prop_flat_map(|(h, w)| proptest::collection::vec(
            prop_oneof![3 => Just(0u8), 1 => Just(1u8), 2 => Just(2u8), 2 => Just(3u8)], h * w)
            .prop_map(move |v| Array2::from_shape_vec((h, w), v).unwrap())),
    ) {
        let df = direction_field(lab.view());
        let (h, w) = lab.dim();
        prop_assert_eq!(df.dim(), (2, h, w));
        for ((y, x), &c) in lab.indexed_iter() {
            let (vy, vx) = (df[[0, y, x]], df[[1, y, x]]);
            // Brute force: minimum squared distance to a pixel of another label.
            let best = lab.indexed_iter().filter(|(_, v)| **v != c)
                .map(|((qy, qx), _)| (y as i64 - qy as i64).pow(2) + (x as i64 - qx as i64).pow(2))
                .min();
            match (c, best) {
                (0, _) | (_, None) => prop_assert_eq!((vy, vx), (0.0, 0.0)),
                (_, Some(d2)) => {
                    // The vector is a unit vector from some nearest outside pixel to p.
                    let d = (d2 as f32).sqrt();
                    let (qy, qx) = (y as f32 - vy * d, x as f32 - vx * d);
                    let (ry, rx) = (qy.round(), qx.round());
                    prop_assert!((qy - ry).abs() < 1e-3 && (qx - rx).abs() < 1e-3, "({}, {}) not a pixel", qy, qx);
                    prop_assert!(ry >= 0.0 && rx >= 0.0 && (ry as usize) < h && (rx as usize) < w);
                    prop_assert!(lab[[ry as usize, rx as usize]] != c, "nearest pixel is inside the region");
                    prop_assert!((vy * vy + vx * vx - 1.0).abs() < 1e-5);
                }
            }
        }
    }
}

#[test]
fn direction_field_of_a_square_points_inward_from_its_edges() {
    let lab = Array2::from_shape_fn((21, 21), |(y, x)| {
        if (5..=15).contains(&y) && (5..=15).contains(&x) {
            3u8
        } else {
            0
        }
    });
    let df = direction_field(lab.view());
    // Just inside the top edge, the nearest outside pixel is above: the vector points down (+y).
    assert_eq!((df[[0, 5, 10]], df[[1, 5, 10]]), (1.0, 0.0));
    assert_eq!((df[[0, 10, 15]], df[[1, 10, 15]]), (0.0, -1.0));
    assert_eq!((df[[0, 0, 0]], df[[1, 0, 0]]), (0.0, 0.0));
}
