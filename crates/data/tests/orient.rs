//! Slice orientation: the through-plane axis comes from the spacing; under the `world`
//! policy the in-plane order comes from the world directions, so every permuted or
//! reversed copy of a volume (with its affine changed to match) has the same canonical
//! voxels; under `stored` files with their slices last are used as stored.

use std::path::Path;

use ndarray::Array3;
use slimseg_data::nii::{self, GzLevel, NiftiHeader, NiftiType, Volume};
use slimseg_data::orient::{OrientationPolicy, SliceOrientation};
use slimseg_data::synth::{SynthConfig, generate};
use slimseg_data::{AcdcDataset, DataError, Phase};

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("slimseg-orient-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// All 48 signed permutations of three axes.
fn all_transforms() -> Vec<SliceOrientation> {
    let perms = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let mut out = Vec::new();
    for perm in perms {
        for bits in 0..8u8 {
            let flip = [bits & 1 != 0, bits & 2 != 0, bits & 4 != 0];
            out.push(SliceOrientation { perm, flip });
        }
    }
    out
}

/// Writes `original` with its axes rearranged by `t` (and the header to match) to
/// `path` as int16; returns the voxels written.
fn write_copy(original: &Volume<f32>, t: &SliceOrientation, path: &Path) -> Array3<f32> {
    let copy = original.clone().reoriented(t);
    let voxels = copy.data.mapv(|v| v as i16);
    nii::write_volume(path, voxels.view(), &copy.header, GzLevel::Fast).unwrap();
    copy.data
}

fn max_affine_diff(a: &nii::Affine, b: &nii::Affine) -> f64 {
    let mut d = 0.0f64;
    for i in 0..3 {
        for j in 0..4 {
            d = d.max((a[i][j] - b[i][j]).abs());
        }
    }
    d
}

#[test]
fn under_world_every_permuted_or_reversed_copy_has_the_same_canonical_voxels() {
    let world = OrientationPolicy::World;
    let root = tmpdir("copies");
    generate(&root, &SynthConfig::small(8, 0, 1234)).unwrap();
    let ds = AcdcDataset::open(&root).unwrap().with_orientation(world);
    let mut non_identity = 0;
    for p in &ds.patients {
        let frame = p.load_frame(Phase::ED).unwrap();
        let path = p.frame_path(frame.frame, false);
        let original = nii::read_volume(&path).unwrap();
        let (canon, o) = original.clone().into_slice_order(world).unwrap();
        assert_eq!(
            canon.data, frame.image.data,
            "load_frame gives the canonical order"
        );
        assert_eq!(o.slice_axis(), 2, "synthetic stacks have their slices on z");
        non_identity += usize::from(!o.is_identity());
        // The canonical header keeps every voxel's world position.
        let a = canon.header.affine();
        let direct = o.canonical_affine(&original.header.affine(), original.shape_xyz());
        assert!(max_affine_diff(&a, &direct) < 1e-3, "{a:?} vs {direct:?}");
        for (i, t) in all_transforms().into_iter().enumerate() {
            let copy = root.join(format!("copy{i}.nii.gz"));
            let data = write_copy(&original, &t, &copy);
            let read = nii::read_volume(&copy).unwrap();
            let (c, oc) = read.into_slice_order(world).unwrap();
            assert_eq!(
                c.data, canon.data,
                "patient {} transform {t:?}: canonical voxels differ (found {oc:?})",
                p.id
            );
            // The same grid in the world, to float32 header precision.
            assert_eq!(
                nii::geometry_difference(&c.header, &canon.header),
                None,
                "transform {t:?}"
            );
            // Mapping results back lands on the copy's own grid.
            assert_eq!(oc.from_canonical(c.data.view()), data);
        }
    }
    // Of these oblique synthetic patients, some are not stored in canonical order.
    assert!(non_identity > 0, "no patient exercises the reordering");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn set_qform_inverts_qform_affine() {
    for (quatern, qfac) in [
        ([0.1f32, -0.2, 0.3], 1.0f32),
        ([0.1, -0.2, 0.3], -1.0),
        ([0.7, 0.7, 0.0], 1.0),
        ([0.0, 0.0, 0.999], -1.0),
        ([0.0, 0.0, 0.0], 1.0),
    ] {
        let mut h = NiftiHeader::new_3d([9, 8, 7], [1.3, 1.7, 8.0], NiftiType::I16);
        h.quatern = quatern;
        h.pixdim[0] = qfac;
        h.qoffset = [-12.5, 40.0, 3.25];
        let a = h.qform_affine().unwrap();
        let mut g = NiftiHeader::new_3d([9, 8, 7], [1.0; 3], NiftiType::I16);
        g.set_qform(&a);
        let b = g.qform_affine().unwrap();
        assert!(
            max_affine_diff(&a, &b) < 1e-5,
            "{quatern:?} qfac {qfac}: {a:?} vs {b:?}"
        );
        assert_eq!(
            g.spacing().map(|s| (s * 1e4).round()),
            [13000.0, 17000.0, 80000.0]
        );
    }
    // Spacing in metres: stored in metres, reported in mm.
    let mut h = NiftiHeader::new_3d([4, 4, 4], [0.0015, 0.0015, 0.008], NiftiType::I16);
    h.xyzt_units = 1;
    h.quatern = [0.2, 0.1, -0.3];
    let a = h.qform_affine().unwrap();
    let mut g = h.clone();
    g.set_qform(&a);
    assert!(max_affine_diff(&a, &g.qform_affine().unwrap()) < 1e-6);
    assert!((g.pixdim[3] - 0.008).abs() < 1e-9 && (g.spacing()[2] - 8.0).abs() < 1e-4);
}

#[test]
fn the_slice_axis_is_the_one_with_the_largest_spacing() {
    let of = |spacing: [f64; 3]| {
        let h = NiftiHeader::new_3d([8, 8, 8], spacing, NiftiType::I16);
        let stored = SliceOrientation::of(&h, Path::new("v.nii"), OrientationPolicy::Stored);
        let world = SliceOrientation::of(&h, Path::new("v.nii"), OrientationPolicy::World);
        if let (Ok(a), Ok(b)) = (&stored, &world) {
            assert_eq!(a.slice_axis(), b.slice_axis(), "{spacing:?}");
        }
        stored
    };
    assert_eq!(of([1.5, 1.5, 10.0]).unwrap(), SliceOrientation::IDENTITY);
    // The other two axes keep their file order.
    assert_eq!(of([10.0, 1.5, 1.5]).unwrap().perm, [1, 2, 0]);
    assert_eq!(of([10.0, 1.5, 1.5]).unwrap().slice_axis(), 0);
    assert_eq!(of([1.5, 8.0, 1.5]).unwrap().slice_axis(), 1);
    // Without an axis 1.2 times wider than both others, the third axis: isotropic and
    // thin-slice volumes are left as they are.
    assert_eq!(of([1.0, 1.0, 1.0]).unwrap(), SliceOrientation::IDENTITY);
    assert_eq!(of([1.5, 1.5, 1.0]).unwrap(), SliceOrientation::IDENTITY);
    assert_eq!(of([0.7, 0.8, 0.75]).unwrap(), SliceOrientation::IDENTITY);
    assert_eq!(of([5.0, 1.0, 5.0]).unwrap().slice_axis(), 2);
    assert_eq!(of([5.0, 4.5, 1.0]).unwrap().slice_axis(), 2);
    // A single slice is cut along its axis of extent 1, whatever the spacings say.
    let single = |shape: [usize; 3], spacing: [f64; 3]| {
        let h = NiftiHeader::new_3d(shape, spacing, NiftiType::I16);
        SliceOrientation::of(&h, Path::new("v.nii"), OrientationPolicy::Stored).unwrap()
    };
    assert!(single([64, 64, 1], [1.5, 1.5, 1.0]).is_identity());
    assert_eq!(single([1, 64, 64], [1.0, 1.5, 1.5]).perm, [1, 2, 0]);
    // A degenerate affine names the file.
    let mut h = NiftiHeader::new_3d([8, 8, 8], [1.0; 3], NiftiType::I16);
    h.qform_code = 0;
    h.sform_code = 1;
    let e = SliceOrientation::of(&h, Path::new("v.nii"), OrientationPolicy::Stored).unwrap_err();
    assert!(matches!(e, DataError::InvalidNifti { .. }), "{e:?}");
    assert!(e.to_string().contains("v.nii"), "{e}");
}

#[test]
fn under_world_axis_aligned_ras_volumes_keep_their_order() {
    // x along +R, y along +A, slices along +S: nothing to do.
    let world = OrientationPolicy::World;
    let h = NiftiHeader::new_3d([8, 6, 4], [1.4, 1.4, 9.0], NiftiType::I16);
    let o = SliceOrientation::of(&h, Path::new("v.nii"), world).unwrap();
    assert!(o.is_identity());
    // x along -R: reversed, and said so.
    let mut h2 = h.clone();
    let mut a = h.affine();
    for row in a.iter_mut().take(3) {
        row[0] = -row[0];
    }
    h2.set_qform(&a);
    let o = SliceOrientation::of(&h2, Path::new("v.nii"), world).unwrap();
    assert_eq!(o.perm, [0, 1, 2]);
    assert_eq!(o.flip, [true, false, false]);
    assert!(o.describe().contains("x reversed"), "{}", o.describe());
}

#[test]
fn under_stored_files_with_slices_last_are_used_as_stored() {
    let stored = OrientationPolicy::Stored;
    let root = tmpdir("stored");
    generate(&root, &SynthConfig::small(4, 0, 1234)).unwrap();
    let ds = AcdcDataset::open(&root).unwrap();
    for p in &ds.patients {
        let frame = p.load_frame(Phase::ES).unwrap();
        assert!(frame.orientation.is_identity());
        let original = nii::read_volume(&p.frame_path(frame.frame, false)).unwrap();
        assert_eq!(frame.image.data, original.data);
        // Copies with the slice axis moved (in-plane order kept) give the same voxels,
        // a copy with its slices reversed the same slices (the model sees one at a
        // time); an in-plane transpose stays a transposed image.
        for (perm, flip, same) in [
            ([2, 0, 1], [false; 3], true),
            ([0, 2, 1], [false; 3], true),
            ([0, 1, 2], [false, false, true], true),
            ([1, 0, 2], [false; 3], false),
        ] {
            let t = SliceOrientation { perm, flip };
            let copy = root.join("copy.nii.gz");
            write_copy(&original, &t, &copy);
            let (mut c, _) = nii::read_volume(&copy)
                .unwrap()
                .into_slice_order(stored)
                .unwrap();
            if flip[2] {
                c.data.invert_axis(ndarray::Axis(0));
            }
            assert_eq!(c.data == original.data, same, "{perm:?} {flip:?}");
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}
