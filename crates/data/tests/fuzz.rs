//! Fuzzing of the readers of untrusted files: mutated NIfTI headers (random bytes, and
//! extents, datatypes, offsets and quaternions drawn to be hostile) and mutated Info.cfg
//! texts. Every input gives a value or a typed error naming the file, never a panic, and
//! memory stays bounded: a counting allocator records the largest allocation and the
//! peak of live bytes of the reading thread, which must stay within what the voxel limit
//! allows, however many voxels the header claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use proptest::prelude::*;
use slimseg_data::nii::{self, NiftiHeader, NiftiType};
use slimseg_data::{DataError, PatientInfo};
use std::io::Write;

/// Counts, per thread, the bytes allocated and not yet freed, their peak and the largest
/// single allocation.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn grew(size: usize) {
    let _ = LIVE.try_with(|l| {
        let live = l.get() + size;
        l.set(live);
        let _ = PEAK.try_with(|p| p.set(p.get().max(live)));
    });
    let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
}

fn shrank(size: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(size)));
}

// SAFETY: forwards every call to the system allocator unchanged; the bookkeeping only
// touches const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        shrank(layout.size());
        grew(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The voxel limit of this test: 2^16 voxels, so a volume of at most 256 KiB as f32.
const LIMIT: u64 = 1 << 16;
/// What a read may hold at once: the volume under the limit as f32, the 1 MiB decode
/// buffer, the reader's and the inflater's buffers, and small change.
const BOUND: usize = 4 * LIMIT as usize + (1 << 20) + (1 << 19);

/// Runs `f` and returns its result with the peak of live bytes and the largest single
/// allocation it made on this thread.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    LARGEST.with(|m| m.set(0));
    let out = f();
    (out, PEAK.with(Cell::get) - base, LARGEST.with(Cell::get))
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("slimseg-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn gz(raw: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(raw).unwrap();
    enc.finish().unwrap()
}

/// Every reader on `path`: each gives a value or a typed error naming the file, within
/// the memory bound.
fn read_all_ways(path: &Path) -> Result<(), TestCaseError> {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let readers: [&dyn Fn() -> Result<(), DataError>; 5] = [
        &|| nii::read_volume(path).map(|_| ()),
        &|| nii::read_labels(path).map(|_| ()),
        &|| nii::read_volume_4d(path).map(|_| ()),
        &|| nii::read_header(path).map(|_| ()),
        &|| nii::volume_info(path).map(|_| ()),
    ];
    for read in readers {
        let (result, peak, largest) = measured(read);
        prop_assert!(
            peak <= BOUND && largest <= BOUND,
            "{name}: peak {peak} B, largest allocation {largest} B, bound {BOUND} B"
        );
        if let Err(e) = result {
            prop_assert!(e.to_string().contains(&name), "{}", e);
        }
    }
    Ok(())
}

/// A header with hostile extents, datatype, offset, scaling and quaternion.
fn hostile_header() -> impl Strategy<Value = NiftiHeader> {
    (
        proptest::collection::vec(-2i16..=i16::MAX, 3..=5),
        prop::sample::select(vec![2i16, 4, 8, 16, 64, 256, 512, 768, 1024, 1280, 3, 0]),
        prop::sample::select(vec![348.0f32, 352.0, 0.0, 1e9, f32::NAN, 351.5, 4096.0]),
        prop::sample::select(vec![0.0f32, 1.0, f32::INFINITY, 1e30, -2.0]),
        prop::array::uniform3(-1.5f32..1.5),
        -1i16..3,
    )
        .prop_map(|(dims, datatype, vox_offset, slope, quatern, qform_code)| {
            let mut h = NiftiHeader::new_3d([2, 2, 2], [1.0, 1.0, 8.0], NiftiType::I16);
            h.dim = [1; 8];
            h.dim[0] = dims.len() as i16;
            for (i, d) in dims.iter().enumerate() {
                h.dim[i + 1] = *d;
            }
            h.datatype = datatype;
            h.bitpix = NiftiType::from_code(datatype).map_or(8, |t| 8 * t.size() as i16);
            h.vox_offset = vox_offset;
            h.scl_slope = slope;
            h.quatern = quatern;
            h.qform_code = qform_code;
            h
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Hostile headers followed by a short payload, plain or gzip, with random patches.
    #[test]
    fn mutated_nifti_headers_give_typed_errors_in_bounded_memory(
        header in hostile_header(),
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
        patch in proptest::collection::vec((0usize..352, any::<u8>()), 0..8),
        compressed in any::<bool>(),
    ) {
        nii::set_max_voxels(LIMIT);
        let mut raw = header.to_bytes().to_vec();
        raw.extend_from_slice(&[0; 4]);
        raw.extend_from_slice(&payload);
        for (off, v) in patch {
            raw[off] = v;
        }
        let path = tmp(if compressed { "hostile.nii.gz" } else { "hostile.nii" });
        std::fs::write(&path, if compressed { gz(&raw) } else { raw }).unwrap();
        read_all_ways(&path)?;
    }

    /// A valid volume whose header bytes and gzip stream are damaged at random.
    #[test]
    fn damaged_valid_files_give_typed_errors_in_bounded_memory(
        header_patch in proptest::collection::vec((0usize..348, any::<u8>()), 1..6),
        stream_patch in proptest::collection::vec((0usize..4096, any::<u8>()), 0..4),
        cut in proptest::option::of(0usize..4096),
    ) {
        nii::set_max_voxels(LIMIT);
        let h = NiftiHeader::new_3d([16, 12, 5], [1.4, 1.4, 9.0], NiftiType::I16);
        let mut raw = h.to_bytes().to_vec();
        raw.extend_from_slice(&[0; 4]);
        raw.extend((0..16 * 12 * 5).flat_map(|i: i32| ((i % 700) as i16).to_le_bytes()));
        for (off, v) in header_patch {
            raw[off] = v;
        }
        let mut bytes = gz(&raw);
        for (off, v) in stream_patch {
            let n = bytes.len();
            bytes[off % n] ^= v;
        }
        if let Some(c) = cut {
            bytes.truncate(c % (bytes.len() + 1));
        }
        let path = tmp("damaged.nii.gz");
        std::fs::write(&path, &bytes).unwrap();
        read_all_ways(&path)?;
    }

    /// Info.cfg texts with random edits: parsed values obey the rules, or the error
    /// names the file.
    #[test]
    fn mutated_info_cfg_parses_or_names_the_file(
        edits in proptest::collection::vec((0usize..80, any::<char>(), 0u8..3), 0..10),
    ) {
        let mut text: Vec<char> =
            "ED: 1\nES: 12\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n".chars().collect();
        for (at, c, kind) in edits {
            let at = at % (text.len() + 1);
            match kind {
                0 => text.insert(at, c),
                1 if at < text.len() => { text.remove(at); }
                _ if at < text.len() => text[at] = c,
                _ => text.push(c),
            }
        }
        let text: String = text.into_iter().collect();
        match PatientInfo::parse(&text, Path::new("patient042/Info.cfg")) {
            Ok(info) => {
                prop_assert!(info.ed != info.es);
                prop_assert!((1..=info.nb_frame).contains(&info.ed));
                prop_assert!((1..=info.nb_frame).contains(&info.es));
                prop_assert!(info.height.is_finite() && info.weight.is_finite());
            }
            Err(e) => {
                prop_assert!(matches!(e, DataError::InvalidInfo { .. }), "{:?}", e);
                prop_assert!(e.to_string().contains("patient042/Info.cfg"), "{}", e);
            }
        }
    }
}

#[test]
fn a_header_claiming_a_gigavoxel_allocates_nothing_large() {
    nii::set_max_voxels(LIMIT);
    let h = NiftiHeader::new_3d([1024, 1024, 1024], [1.0; 3], NiftiType::U8);
    let mut raw = h.to_bytes().to_vec();
    raw.extend_from_slice(&[0; 4 + 1024]);
    let path = tmp("giga.nii.gz");
    std::fs::write(&path, gz(&raw)).unwrap();
    let (result, peak, largest) = measured(|| nii::read_volume(&path));
    let e = result.unwrap_err();
    assert!(
        matches!(
            e,
            DataError::TooManyVoxels {
                voxels: 1_073_741_824,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        peak < BOUND && largest < BOUND,
        "peak {peak}, largest {largest}"
    );
}
