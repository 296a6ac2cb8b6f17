//! NIfTI IO: round trips, geometry, interoperability with the `nifti` crate, and typed
//! errors (never panics) on malformed files.

use std::io::Write;
use std::path::Path;

use ndarray::Array3;
use proptest::prelude::*;
use slimseg_data::DataError;
use slimseg_data::nii::{
    self, GzLevel, NiftiHeader, NiftiType, read_header, read_labels, read_volume, volume_info,
    write_labels_like, write_volume,
};

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("slimseg-nifti-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn oblique_header(shape: [usize; 3]) -> NiftiHeader {
    let mut h = NiftiHeader::new_3d(shape, [1.4, 1.6, 10.0], NiftiType::I16);
    h.quatern = [0.1, -0.2, 0.3];
    h.qoffset = [-100.0, 50.5, 12.25];
    h.pixdim[0] = -1.0;
    // A deliberately wrong sform, as in ACDC: the reader must ignore it for geometry.
    h.sform_code = 1;
    h.srow = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ];
    h
}

#[test]
fn round_trip_keeps_data_spacing_and_affine() {
    let shape = [7, 5, 3];
    let h = oblique_header(shape);
    let data = Array3::from_shape_fn((3, 5, 7), |(z, y, x)| {
        (x as i16 - 3) * 100 + y as i16 * 10 + z as i16
    });
    for name in ["rt.nii.gz", "rt.nii"] {
        let p = tmp(name);
        write_volume(&p, data.view(), &h, GzLevel::Default).unwrap();
        let v = read_volume(&p).unwrap();
        assert_eq!(v.data.dim(), (3, 5, 7));
        assert_eq!(v.data, data.mapv(|x| x as f32));
        assert_eq!(v.spacing(), h.spacing());
        let (a, b) = (v.affine(), h.affine());
        for i in 0..4 {
            for j in 0..4 {
                assert!(
                    (a[i][j] - b[i][j]).abs() < 1e-6,
                    "{name}: affine differs at {i},{j}"
                );
            }
        }
        // Spacing and affine come from pixdim/qform, not the wrong sform.
        assert!((v.spacing()[0] - 1.4).abs() < 1e-6 && (v.spacing()[2] - 10.0).abs() < 1e-6);
        let col_norm = |j: usize| (0..3).map(|i| a[i][j] * a[i][j]).sum::<f64>().sqrt();
        assert!(
            (col_norm(2) - 10.0).abs() < 1e-4,
            "qform z column carries the 10 mm spacing"
        );
        assert_eq!(v.header.qform_code, 1);
    }
}

#[test]
fn labels_written_like_source_overlay_it() {
    let h = oblique_header([6, 4, 2]);
    let img = Array3::from_shape_fn((2, 4, 6), |(z, y, x)| (x + y + z) as i16);
    let lab = Array3::from_shape_fn((2, 4, 6), |(z, y, x)| ((x + 2 * y + z) % 4) as u8);
    let ip = tmp("src.nii.gz");
    let lp = tmp("src_gt.nii.gz");
    write_volume(&ip, img.view(), &h, GzLevel::Fast).unwrap();
    let src = read_volume(&ip).unwrap();
    write_labels_like(&lp, lab.view(), &src.header).unwrap();
    let l = read_labels(&lp).unwrap();
    assert_eq!(l.data, lab);
    assert_eq!(l.header.data_type(), Some(NiftiType::U8));
    assert_eq!(l.affine(), src.affine());
    assert_eq!(l.header.sform_affine(), src.header.sform_affine());
    assert_eq!(l.header.pixdim[..4], src.header.pixdim[..4]);
    assert_eq!(l.header.xyzt_units, src.header.xyzt_units);
    // A label grid that does not match the source is refused.
    let wrong = Array3::<u8>::zeros((2, 4, 5));
    assert!(matches!(
        write_labels_like(&lp, wrong.view(), &src.header),
        Err(DataError::InvalidArgument(_))
    ));
}

#[test]
fn independent_reader_agrees() {
    // The `nifti` crate (dev-dependency) reads our files to the same values and header.
    use nifti::{IntoNdArray, NiftiObject, ReaderOptions};
    let h = oblique_header([5, 4, 3]);
    let data = Array3::from_shape_fn((3, 4, 5), |(z, y, x)| (x * 100 + y * 10 + z) as i16);
    let p = tmp("interop.nii.gz");
    write_volume(&p, data.view(), &h, GzLevel::Default).unwrap();
    let obj = ReaderOptions::new().read_file(&p).unwrap();
    let hdr = obj.header();
    assert_eq!(&hdr.dim[..4], &[3, 5, 4, 3]);
    assert_eq!(hdr.pixdim[1..4], [1.4, 1.6, 10.0]);
    assert_eq!(hdr.quatern_b, 0.1);
    assert_eq!(hdr.quatern_z, 12.25);
    let arr = obj.into_volume().into_ndarray::<f32>().unwrap();
    assert_eq!(arr.shape(), &[5, 4, 3]);
    for ((z, y, x), &v) in data.indexed_iter() {
        assert_eq!(arr[[x, y, z]], v as f32);
    }
}

#[test]
fn big_endian_and_scaled_files_read() {
    // Hand-built big-endian float32 file with scl_slope 2, offset 1.
    let h = NiftiHeader::new_3d([2, 2, 1], [1.0, 1.0, 1.0], NiftiType::F32);
    let le = h.to_bytes();
    let mut be = le;
    let swap = |b: &mut [u8; 348], off: usize, n: usize| b[off..off + n].reverse();
    swap(&mut be, 0, 4);
    for i in 0..8 {
        swap(&mut be, 40 + 2 * i, 2);
        swap(&mut be, 76 + 4 * i, 4);
    }
    for off in [70, 72, 252, 254] {
        swap(&mut be, off, 2);
    }
    be[108..112].copy_from_slice(&352f32.to_be_bytes());
    be[112..116].copy_from_slice(&2f32.to_be_bytes());
    be[116..120].copy_from_slice(&1f32.to_be_bytes());
    let mut bytes = be.to_vec();
    bytes.extend_from_slice(&[0; 4]);
    for v in [1.0f32, 2.0, 3.0, 4.5] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    let p = tmp("be.nii");
    std::fs::write(&p, &bytes).unwrap();
    let v = read_volume(&p).unwrap();
    assert_eq!(
        v.data.iter().copied().collect::<Vec<_>>(),
        vec![3.0, 5.0, 7.0, 10.0]
    );
}

fn write_gz(path: &Path, raw: &[u8]) {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(raw).unwrap();
    std::fs::write(path, enc.finish().unwrap()).unwrap();
}

#[test]
fn truncated_and_corrupt_files_give_typed_errors_naming_the_file() {
    let h = NiftiHeader::new_3d([8, 8, 4], [1.0, 1.0, 1.0], NiftiType::I16);
    let data = Array3::<i16>::from_elem((4, 8, 8), 7);
    let good = tmp("good.nii.gz");
    write_volume(&good, data.view(), &h, GzLevel::Default).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    // Truncated gzip stream (cut in the middle).
    let cut = tmp("cut.nii.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = read_volume(&cut).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::TruncatedNifti { .. } | DataError::CorruptGzip { .. }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("cut.nii.gz"), "{e}");

    // Complete gzip stream of a truncated NIfTI payload.
    let mut raw = h.to_bytes().to_vec();
    raw.extend_from_slice(&[0; 4 + 100]);
    let short = tmp("short.nii.gz");
    write_gz(&short, &raw);
    let e = read_volume(&short).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::TruncatedNifti {
                expected: 864,
                found: 452,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("short.nii.gz"));

    // Flipped bits in the compressed data: the CRC or the inflater catches it.
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    bad[mid + 1] ^= 0x55;
    let corrupt = tmp("corrupt.nii.gz");
    std::fs::write(&corrupt, &bad).unwrap();
    let e = read_volume(&corrupt).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::CorruptGzip { .. } | DataError::TruncatedNifti { .. }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("corrupt.nii.gz"));

    // Wrong magic.
    let mut raw = h.to_bytes().to_vec();
    raw[344..348].copy_from_slice(b"xxxx");
    raw.extend_from_slice(&[0; 4 + 512]);
    let magic = tmp("magic.nii");
    std::fs::write(&magic, &raw).unwrap();
    let e = read_volume(&magic).unwrap_err();
    assert!(matches!(e, DataError::InvalidNifti { .. }), "{e:?}");
    assert!(e.to_string().contains("magic.nii") && e.to_string().contains("magic"));

    // bitpix inconsistent with datatype.
    let mut raw = h.to_bytes().to_vec();
    raw[72..74].copy_from_slice(&8i16.to_le_bytes());
    raw.extend_from_slice(&[0; 4 + 512]);
    let bp = tmp("bitpix.nii");
    std::fs::write(&bp, &raw).unwrap();
    let e = read_volume(&bp).unwrap_err();
    assert!(e.to_string().contains("bitpix"), "{e}");

    // Missing file.
    let e = read_volume(&tmp("nope.nii.gz")).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }) && e.to_string().contains("nope.nii.gz"));
}

#[test]
fn labels_out_of_range_are_rejected_with_position() {
    let h = NiftiHeader::new_3d([3, 2, 2], [1.0, 1.0, 1.0], NiftiType::I16);
    let mut data = Array3::<i16>::zeros((2, 2, 3));
    data[[1, 0, 2]] = 5;
    let p = tmp("badlab_gt.nii.gz");
    write_volume(&p, data.view(), &h, GzLevel::Fast).unwrap();
    let e = read_labels(&p).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::InvalidLabel {
                x: 2,
                y: 0,
                z: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("badlab_gt.nii.gz"));
    let hf = NiftiHeader::new_3d([1, 1, 1], [1.0; 3], NiftiType::F32);
    let pf = tmp("frac_gt.nii");
    write_volume(
        &pf,
        Array3::from_elem((1, 1, 1), 1.5f32).view(),
        &hf,
        GzLevel::Fast,
    )
    .unwrap();
    assert!(matches!(
        read_labels(&pf),
        Err(DataError::InvalidLabel { .. })
    ));
}

#[test]
fn header_info_reports_geometry() {
    let h = oblique_header([6, 5, 4]);
    let p = tmp("info.nii.gz");
    write_volume(
        &p,
        Array3::<i16>::zeros((4, 5, 6)).view(),
        &h,
        GzLevel::Fast,
    )
    .unwrap();
    let info = volume_info(&p).unwrap();
    assert_eq!(info.shape, vec![6, 5, 4]);
    assert_eq!(info.datatype, "int16");
    assert_eq!((info.qform_code, info.sform_code), (1, 1));
    assert_eq!(info.orientation.len(), 3);
    assert_eq!(read_header(&p).unwrap().shape(), vec![6, 5, 4]);
    let text = info.to_string();
    assert!(text.contains("info.nii.gz") && text.contains("int16"));
    // Axis-aligned RAS-positive header reads as RAS.
    let ras = NiftiHeader::new_3d([2, 2, 2], [1.0; 3], NiftiType::U8);
    assert_eq!(ras.orientation(), "RAS");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    /// Random bytes, raw or gzip-wrapped, and random corruptions of a valid header never
    /// panic: the reader returns a value or a typed error naming the file.
    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..1200),
        gz in any::<bool>(),
        patch in proptest::collection::vec((0usize..352, any::<u8>()), 0..12),
        start_valid in any::<bool>(),
    ) {
        let mut raw = if start_valid {
            let mut h = NiftiHeader::new_3d([4, 4, 2], [1.0; 3], NiftiType::I16).to_bytes().to_vec();
            h.extend_from_slice(&bytes);
            h
        } else {
            bytes.clone()
        };
        for (off, v) in patch {
            if off < raw.len() {
                raw[off] = v;
            }
        }
        let p = tmp(if gz { "fuzz.nii.gz" } else { "fuzz.nii" });
        if gz { write_gz(&p, &raw) } else { std::fs::write(&p, &raw).unwrap() }
        let errors = [read_volume(&p).err(), read_labels(&p).err(), nii::read_volume_4d(&p).err(), read_header(&p).err()];
        for e in errors.into_iter().flatten() {
            prop_assert!(e.to_string().contains("fuzz.nii"), "{}", e);
        }
    }
}

#[test]
fn non_finite_voxels_are_refused_or_replaced_by_the_minimum() {
    let h = NiftiHeader::new_3d([4, 3, 2], [1.0, 1.0, 1.0], NiftiType::F32);
    let mut data = Array3::from_shape_fn((2, 3, 4), |(z, y, x)| (z * 12 + y * 4 + x) as f32 + 5.0);
    data[[1, 2, 3]] = f32::INFINITY;
    data[[0, 1, 2]] = f32::NAN;
    let p = tmp("nonfinite.nii.gz");
    write_volume(&p, data.view(), &h, GzLevel::Fast).unwrap();
    let e = read_volume(&p).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::NonFiniteVoxels {
                count: 2,
                total: 24,
                x: 2,
                y: 1,
                z: 0,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("nonfinite.nii.gz"), "{e}");
    let (v, replaced) = nii::read_volume_with(&p, nii::NonFinite::ReplaceWithMin).unwrap();
    assert_eq!(replaced, 2);
    assert_eq!(v.data[[1, 2, 3]], 5.0);
    assert_eq!(v.data[[0, 1, 2]], 5.0);
    assert_eq!(v.data[[0, 0, 1]], 6.0, "finite voxels are kept");
    // Scaling that overflows float32 is caught too.
    let mut hs = NiftiHeader::new_3d([4, 3, 2], [1.0, 1.0, 1.0], NiftiType::F64);
    hs.scl_slope = 1.0;
    let big = Array3::<f64>::from_elem((2, 3, 4), 1e300);
    let ps = tmp("overflow.nii");
    write_volume(&ps, big.view(), &hs, GzLevel::Fast).unwrap();
    assert!(matches!(
        read_volume(&ps).unwrap_err(),
        DataError::NonFiniteVoxels { count: 24, .. }
    ));
    assert!(volume_info(&p).unwrap().non_finite == 2);
}

#[test]
fn quaternions_must_be_unit_up_to_float32_rounding() {
    let data = Array3::<i16>::zeros((2, 2, 2));
    let write = |q: [f32; 3], name: &str| {
        let mut h = NiftiHeader::new_3d([2, 2, 2], [1.0, 1.0, 1.0], NiftiType::I16);
        h.quatern = q;
        let p = tmp(name);
        write_volume(&p, data.view(), &h, GzLevel::Fast).unwrap();
        p
    };
    // b^2 + c^2 + d^2 = 1.09: not a rotation.
    let bad = write([0.8, 0.6, 0.3], "quat-bad.nii.gz");
    let e = read_header(&bad).unwrap_err();
    assert!(
        e.to_string().contains("quaternion") && e.to_string().contains("quat-bad"),
        "{e}"
    );
    // A 180-degree rotation whose float32 b exceeds 1 by one ulp: rounding, accepted.
    let b = 1.0f32 + f32::EPSILON;
    let ok = write([b, 0.0, 0.0], "quat-ok.nii.gz");
    let v = read_volume(&ok).unwrap();
    assert_eq!(v.header.quatern, [b, 0.0, 0.0]);
}

#[test]
fn geometry_difference_names_what_differs() {
    let a = oblique_header([8, 8, 4]);
    assert_eq!(nii::geometry_difference(&a, &a.clone()), None);
    let mut shifted = a.clone();
    shifted.qoffset[1] += 5.0;
    assert!(
        nii::geometry_difference(&a, &shifted)
            .unwrap()
            .contains("origin")
    );
    let mut small = a.clone();
    small.qoffset[1] += 0.01;
    assert_eq!(
        nii::geometry_difference(&a, &small),
        None,
        "float noise is no mismatch"
    );
    let mut turned = a.clone();
    turned.quatern = [0.3, -0.2, 0.1];
    assert!(
        nii::geometry_difference(&a, &turned)
            .unwrap()
            .contains("direction")
    );
    let mut spaced = a.clone();
    spaced.pixdim[3] = 9.0;
    assert!(
        nii::geometry_difference(&a, &spaced)
            .unwrap()
            .contains("spacing")
    );
    // A label map saved without any placement (qform and sform codes 0): extents and
    // spacing only.
    let mut unplaced = a.clone();
    unplaced.qform_code = 0;
    unplaced.sform_code = 0;
    assert_eq!(nii::geometry_difference(&unplaced, &a), None);
    unplaced.pixdim[1] = 2.0;
    let why = nii::geometry_difference(&unplaced, &a).unwrap();
    assert!(why.contains("spacing"), "{why}");
}

#[test]
fn header_only_pairs_and_4d_non_finite_voxels_are_named() {
    let h = NiftiHeader::new_3d([2, 2, 2], [1.0, 1.0, 1.0], NiftiType::I16);
    let mut raw = h.to_bytes().to_vec();
    raw[344..348].copy_from_slice(b"ni1\0");
    let pair = tmp("pair.hdr");
    std::fs::write(&pair, &raw).unwrap();
    let e = read_header(&pair).unwrap_err();
    assert!(
        e.to_string().contains(".hdr/.img") && e.to_string().contains("pair.hdr"),
        "{e}"
    );

    // A NaN in frame 1 of a 3 x 2 x 2 x 2 cine volume is reported at its (x, y, z, t).
    let h = NiftiHeader::new_3d([3, 2, 2], [1.0, 1.0, 1.0], NiftiType::F32);
    let mut data = ndarray::Array4::<f32>::zeros((2, 2, 2, 3));
    data[[1, 1, 0, 2]] = f32::NAN;
    let p = tmp("cine.nii.gz");
    nii::write_volume_4d(&p, data.view(), &h, 1.0, GzLevel::Fast).unwrap();
    let e = nii::read_volume_4d(&p).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::NonFiniteVoxels {
                x: 2,
                y: 0,
                z: 1,
                t: 1,
                count: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("t=1"), "{e}");
}
