//! Synthetic ACDC-format cohort: a complete `training/` + `testing/` tree of short-axis
//! cine stacks with ground truth, readable by [`crate::acdc`] exactly like real ACDC.
//!
//! Anatomy (all sizes in mm, drawn per patient from group-dependent distributions):
//! - LV cavity: a disk with low-order angular harmonics, radius shrinking from base (slice
//!   0) to apex along an ellipsoidal profile and from ED to ES by the ejection fraction;
//!   two papillary muscles inside it (myocardium-dark, labelled LV as in ACDC).
//! - Myocardium: the ring around it; its area per slice is conserved over the cycle, so
//!   the wall is thicker at ES. Hypertrophy (HCM) thickens it, infarction (MINF) thins a
//!   sector, dilation (DCM) enlarges the cavity and lowers the ejection fraction.
//! - RV cavity: an ellipse beside the septum minus the LV epicardium (a crescent), with a
//!   thin unlabelled free wall; it fades toward the apex faster than the LV and is larger
//!   in the ARV group.
//! - Surroundings (label 0): body with subcutaneous fat, lungs, liver toward the apex,
//!   descending aorta and spine, a bright great vessel at the base, pericardial fat next to
//!   the myocardium; blood-bright and myocardium-dark structures outside the heart make
//!   intensity alone insufficient.
//! - Acquisition: per-patient gain, a smooth multiplicative bias field, Rician noise,
//!   int16 images with oblique qform orientation.
//!
//! Each patient has NbFrame frames; the cardiac phase follows a cosine from ED (frame
//! `ED`) to ES and back. Output is a pure function of the seed and the configuration
//! (patients use independent random streams, so thread scheduling does not matter).

use std::f32::consts::PI;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::{Array3, Array4, s};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::acdc::{Group, PatientInfo, Subset, patient_name};
use crate::error::{DataError, Result};
use crate::fsutil::write_atomic;
use crate::nii::{self, GzLevel, NiftiHeader, NiftiType};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Training patients (ids 1..=training; default 100).
    pub training: usize,
    /// Testing patients (ids from 101, or after the training ids; default 50).
    pub testing: usize,
    /// Seed of the whole cohort (default 1234).
    pub seed: u64,
    /// Write `patientNNN_4d.nii.gz` with every frame (default true).
    pub write_4d: bool,
    /// Range of NbFrame, inclusive (default 12..=35 as in ACDC).
    pub frames: (u32, u32),
    /// Range of the in-plane matrix size per side, inclusive (default 200..=260).
    pub matrix: (usize, usize),
    /// Range of the number of short-axis slices, inclusive (default 6..=12).
    pub slices: (usize, usize),
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            training: 100,
            testing: 50,
            seed: 1234,
            write_4d: true,
            frames: (12, 35),
            matrix: (200, 260),
            slices: (6, 12),
        }
    }
}

impl SynthConfig {
    /// A small cohort for tests: `training` + `testing` patients with small matrices,
    /// few frames and no 4D files unless asked.
    pub fn small(training: usize, testing: usize, seed: u64) -> Self {
        SynthConfig {
            training,
            testing,
            seed,
            write_4d: false,
            frames: (12, 14),
            matrix: (96, 112),
            slices: (6, 8),
        }
    }

    /// Checks the ranges.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(DataError::InvalidArgument(m));
        if self.training + self.testing == 0 {
            return bad("synthetic cohort needs at least one patient".into());
        }
        if self.training > 999 || self.testing > 899 {
            return bad(
                "patient ids must fit patientNNN (at most 999 training, 899 testing)".into(),
            );
        }
        if self.frames.0 < 2 || self.frames.0 > self.frames.1 || self.frames.1 > 200 {
            return bad(format!(
                "frames range {:?} must satisfy 2 <= min <= max <= 200",
                self.frames
            ));
        }
        if self.matrix.0 < 32 || self.matrix.0 > self.matrix.1 || self.matrix.1 > 1024 {
            return bad(format!(
                "matrix range {:?} must satisfy 32 <= min <= max <= 1024",
                self.matrix
            ));
        }
        if self.slices.0 < 2 || self.slices.0 > self.slices.1 || self.slices.1 > 64 {
            return bad(format!(
                "slices range {:?} must satisfy 2 <= min <= max <= 64",
                self.slices
            ));
        }
        Ok(())
    }

    /// Patient ids and subsets this configuration produces.
    pub fn patient_ids(&self) -> Vec<(u32, Subset)> {
        let first_test = (self.training as u32 + 1).max(101);
        (1..=self.training as u32)
            .map(|i| (i, Subset::Training))
            .chain((0..self.testing as u32).map(|k| (first_test + k, Subset::Testing)))
            .collect()
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SynthSummary {
    /// Root of the tree.
    pub root: PathBuf,
    /// Patients written.
    pub patients: usize,
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Per-patient anatomy and acquisition parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SynthPatient {
    /// Patient number.
    pub id: u32,
    /// Subset it is written to.
    pub subset: Subset,
    /// Its Info.cfg.
    pub info: PatientInfo,
    /// Matrix `[x, y, z]`.
    pub shape: [usize; 3],
    /// Spacing `[x, y, z]` in mm.
    pub spacing: [f64; 3],
    /// LV cavity radius at the base at ED, mm.
    pub lv_radius_ed: f32,
    /// LV ejection fraction (fraction of ED volume ejected).
    pub lv_ef: f32,
    /// Myocardial wall thickness at the base at ED, mm.
    pub wall_ed: f32,
    /// RV ejection fraction.
    pub rv_ef: f32,
    seedling: u64,
}

fn mix(a: u64, b: u64) -> u64 {
    let mut x = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn group_of(index: usize, count: usize) -> Group {
    Group::ACDC_ORDER[(index * 5 / count.max(1)).min(4)]
}

impl SynthPatient {
    /// Draws the parameters of patient `id` (`index` of `count` in its subset, which fixes
    /// the group in ACDC's order: 20% each of DCM, HCM, MINF, NOR, RV).
    pub fn sample(cfg: &SynthConfig, id: u32, subset: Subset, index: usize, count: usize) -> Self {
        let seedling = mix(cfg.seed, id as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(seedling);
        let group = group_of(index, count);
        let nb_frame = rng.gen_range(cfg.frames.0..=cfg.frames.1);
        let ed = if rng.gen_bool(0.8) {
            1
        } else {
            rng.gen_range(1..=nb_frame.min(3))
        };
        let es_off = ((nb_frame as f32) * rng.gen_range(0.3..0.45))
            .round()
            .max(1.0) as u32;
        let es = ((ed - 1 + es_off) % nb_frame) + 1;
        let (r, ef, wall, rv_ef) = match group {
            Group::Nor => (
                n(&mut rng, 25.0, 2.0),
                u(&mut rng, 0.55, 0.7),
                u(&mut rng, 7.0, 9.5),
                u(&mut rng, 0.45, 0.6),
            ),
            Group::Dcm => (
                n(&mut rng, 32.0, 2.5),
                u(&mut rng, 0.1, 0.3),
                u(&mut rng, 5.5, 7.5),
                u(&mut rng, 0.3, 0.5),
            ),
            Group::Hcm => (
                n(&mut rng, 22.0, 2.0),
                u(&mut rng, 0.6, 0.8),
                u(&mut rng, 12.0, 17.0),
                u(&mut rng, 0.5, 0.65),
            ),
            Group::Minf => (
                n(&mut rng, 28.0, 2.5),
                u(&mut rng, 0.25, 0.45),
                u(&mut rng, 6.5, 9.0),
                u(&mut rng, 0.4, 0.55),
            ),
            Group::Arv => (
                n(&mut rng, 24.0, 2.0),
                u(&mut rng, 0.5, 0.65),
                u(&mut rng, 7.0, 9.0),
                u(&mut rng, 0.2, 0.4),
            ),
        };
        let nx = rng.gen_range(cfg.matrix.0..=cfg.matrix.1);
        let ny = rng.gen_range(cfg.matrix.0..=cfg.matrix.1);
        // Scale anatomy to the field of view for small test matrices.
        let fov_scale = ((cfg.matrix.0 + cfg.matrix.1) as f64 / 2.0 / 230.0).min(1.0);
        let sxy = rng.gen_range(1.3..1.7) * fov_scale;
        let sz = if rng.gen_bool(0.7) {
            10.0
        } else {
            rng.gen_range(8.0..10.0)
        };
        let length = rng.gen_range(65.0..105.0) * (r as f64 / 25.0).sqrt();
        let nz = ((length / sz).round() as usize + rng.gen_range(0..=1))
            .clamp(cfg.slices.0, cfg.slices.1);
        SynthPatient {
            id,
            subset,
            info: PatientInfo {
                ed,
                es,
                group: Some(group),
                height: (rng.gen_range(150.0f64..195.0) * 10.0).round() / 10.0,
                weight: (rng.gen_range(50.0f64..110.0) * 10.0).round() / 10.0,
                nb_frame,
            },
            shape: [nx, ny, nz],
            spacing: [sxy, sxy, sz],
            lv_radius_ed: r * fov_scale as f32,
            lv_ef: ef,
            wall_ed: wall * fov_scale as f32,
            rv_ef,
            seedling,
        }
    }

    /// Cardiac phase of frame `f` (1-based): 0 at ED, 1 at ES, cosine in between.
    pub fn phase_of_frame(&self, f: u32) -> f32 {
        let n = self.info.nb_frame as f32;
        let ed = self.info.ed as f32;
        let es = self.info.es as f32;
        let rel = |x: f32| (x - ed).rem_euclid(n);
        let (pos, sys) = (rel(f as f32), rel(es).max(1.0));
        if pos <= sys {
            (1.0 - (PI * pos / sys).cos()) / 2.0
        } else {
            (1.0 + (PI * (pos - sys) / (n - sys).max(1.0)).cos()) / 2.0
        }
    }

    /// The header shared by all of this patient's files (int16 image, oblique qform).
    pub fn header(&self) -> NiftiHeader {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seedling, 7));
        let mut h = NiftiHeader::new_3d(self.shape, self.spacing, NiftiType::I16);
        // Oblique short-axis orientation: a random rotation of moderate angle.
        let axis: [f64; 3] = [
            rng.gen_range(-1.0..1.0),
            rng.gen_range(-1.0..1.0),
            rng.gen_range(-1.0..1.0),
        ];
        let norm = (axis.iter().map(|a| a * a).sum::<f64>()).sqrt().max(1e-6);
        let angle: f64 = rng.gen_range(0.3..1.2);
        let sh = (angle / 2.0).sin();
        h.quatern = [0, 1, 2].map(|i| (axis[i] / norm * sh) as f32);
        let aff = h.qform_affine().expect("qform set");
        // Place the volume centre near the scanner isocentre.
        for i in 0..3 {
            let c: f64 = (0..3)
                .map(|j| aff[i][j] * (self.shape[j] as f64 - 1.0) / 2.0)
                .sum();
            h.qoffset[i] = (-c + rng.gen_range(-30.0..30.0)) as f32;
        }
        h.xyzt_units = 2 | 16; // mm, ms
        h.descrip = "slimseg synthetic ACDC".into();
        h
    }

    /// Renders every frame: images `[t, z, y, x]` (int16) and labels `[t, z, y, x]`.
    pub fn render(&self) -> (Array4<i16>, Array4<u8>) {
        let frames: Vec<u32> = (1..=self.info.nb_frame).collect();
        self.render_frames(&frames)
    }

    /// Renders the given frames (1-based) in order.
    pub fn render_frames(&self, frames: &[u32]) -> (Array4<i16>, Array4<u8>) {
        let scene = Scene::new(self);
        let [nx, ny, nz] = self.shape;
        let mut img = Array4::<i16>::zeros((frames.len(), nz, ny, nx));
        let mut lab = Array4::<u8>::zeros((frames.len(), nz, ny, nx));
        let mut work = Vec::new();
        for (k, &f) in frames.iter().enumerate() {
            let t = self.phase_of_frame(f);
            for z in 0..nz {
                let mut iv = img.slice_mut(s![k, z, .., ..]);
                let mut lv = lab.slice_mut(s![k, z, .., ..]);
                scene.render_slice(
                    z,
                    t,
                    f,
                    iv.as_slice_mut().expect("contiguous"),
                    lv.as_slice_mut().expect("contiguous"),
                    &mut work,
                );
            }
        }
        (img, lab)
    }
}

fn u(rng: &mut impl Rng, a: f32, b: f32) -> f32 {
    rng.gen_range(a..b)
}

fn n(rng: &mut impl Rng, mean: f32, sd: f32) -> f32 {
    let v: f32 = Normal::new(mean, sd).expect("sd > 0").sample(rng);
    v.clamp(mean - 2.5 * sd, mean + 2.5 * sd)
}

/// Linear ramp from 0 to 1 over `width` mm centred at signed distance 0 (partial volume).
#[inline]
fn ramp(d: f32) -> f32 {
    (d * (1.0 / 1.5) + 0.5).clamp(0.0, 1.0)
}

#[inline]
fn mix_to(a: f32, b: f32, w: f32) -> f32 {
    a + (b - a) * w
}

/// Intensities (fractions of the patient's gain).
struct Tissue {
    lv_blood: f32,
    rv_blood: f32,
    myo: f32,
    papillary: f32,
    wall: f32,
    fat: f32,
}

/// Phase-independent per-slice data.
struct SliceScene {
    /// Static background intensity (no heart), `[y, x]`.
    background: Vec<f32>,
    /// gain x bias field, `[y, x]`.
    gain: Vec<f32>,
    /// Heart region of interest `[y0, y1) x [x0, x1)`.
    roi: (usize, usize, usize, usize),
    /// Per ROI pixel: radius from the LV centre (mm), endo harmonic factor, wall factor,
    /// pericardial fat width (mm), coordinates along / across the RV direction (mm),
    /// offsets from the LV centre (mm).
    r: Vec<f32>,
    harm: Vec<f32>,
    wall: Vec<f32>,
    fat: Vec<f32>,
    along: Vec<f32>,
    across: Vec<f32>,
    dx: Vec<f32>,
    dy: Vec<f32>,
    /// Base-to-apex position in [0, ~1].
    u: f32,
}

struct Scene<'a> {
    p: &'a SynthPatient,
    slices: Vec<SliceScene>,
    tissue: Tissue,
    /// Nominal radii profile parameters.
    apex_endo: f32,
    apex_epi: f32,
    apex_rv: f32,
    rv_a: f32,
    rv_b: f32,
    pap_angles: [f32; 2],
    pap_radius: f32,
    noise: Vec<f32>,
    noise_sd: f32,
}

impl<'a> Scene<'a> {
    fn new(p: &'a SynthPatient) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(p.seedling, 11));
        let [nx, ny, nz] = p.shape;
        let [sx, sy, sz] = p.spacing.map(|v| v as f32);
        let group = p.info.group.unwrap_or(Group::Nor);
        let arv = group == Group::Arv;
        let tissue = Tissue {
            lv_blood: rng.gen_range(0.82..0.95),
            rv_blood: rng.gen_range(0.75..0.9),
            myo: rng.gen_range(0.26..0.36),
            papillary: rng.gen_range(0.3..0.4),
            wall: rng.gen_range(0.3..0.42),
            fat: rng.gen_range(0.7..0.85),
        };
        // Skeletal muscle and liver close to the myocardium's intensity, as in cine SSFP.
        let muscle = tissue.myo * rng.gen_range(0.92..1.12);
        let liver = tissue.myo * rng.gen_range(1.05..1.3);
        let lung = rng.gen_range(0.03..0.08);
        let subq_fat = rng.gen_range(0.75..0.9);
        let aorta_blood = rng.gen_range(0.8..0.95);
        let gain_level = rng.gen_range(250.0f32..1200.0);
        let bias = [0, 1, 2, 3].map(|_| rng.gen_range(-0.25f32..0.25));
        let r_epi_ed = p.lv_radius_ed + p.wall_ed;
        let rv_scale = if arv { rng.gen_range(1.3..1.5) } else { 1.0 };
        let rv_a = rng.gen_range(1.0..1.3) * r_epi_ed * rv_scale;
        let rv_b = rng.gen_range(0.5..0.7) * r_epi_ed * rv_scale;
        let rv_dir = PI + rng.gen_range(-0.6..0.25);
        let harmonics = [0, 1, 2, 3].map(|_| rng.gen_range(0.0f32..0.07));
        let phases = [0, 1, 2, 3].map(|_| rng.gen_range(0.0f32..2.0 * PI));
        let infarct = (group == Group::Minf)
            .then(|| (rng.gen_range(0.0..2.0 * PI), rng.gen_range(0.4f32..0.6)));
        let pap0 = rv_dir + PI + rng.gen_range(-0.9..-0.4);
        let pap_angles = [pap0, pap0 + rng.gen_range(1.1..1.6)];
        let fat_phase = rng.gen_range(0.0..2.0 * PI);
        let fat_width = rng.gen_range(2.0..5.0);
        let length = (nz as f32 - 1.0) * sz * rng.gen_range(0.95..1.12);
        let apex_endo = rng.gen_range(0.9..1.02);
        let apex_epi = apex_endo + p.wall_ed / length.max(1.0) * 1.3;
        let apex_rv = rng.gen_range(0.65..0.9);
        // Heart position: LV centre offset from the image centre, drifting along the stack.
        let c0 = [rng.gen_range(-15.0..15.0f32), rng.gen_range(-15.0..15.0f32)];
        let tilt = [rng.gen_range(-8.0..8.0f32), rng.gen_range(-8.0..8.0f32)];
        let body_ax = nx as f32 * sx * rng.gen_range(0.4..0.49);
        let body_ay = ny as f32 * sy * rng.gen_range(0.34..0.44);
        let body_c = [rng.gen_range(-8.0..8.0f32), rng.gen_range(-5.0..10.0f32)];
        let subq = rng.gen_range(6.0..16.0f32);
        let lung_dx = r_epi_ed * 2.0 + rng.gen_range(10.0..20.0);
        let aorta = [
            c0[0] + rng.gen_range(15.0..30.0),
            c0[1] + rng.gen_range(40.0..55.0),
        ];
        let vessel_angle = rv_dir + PI / 2.0 + rng.gen_range(-0.3..0.3);
        let extent = r_epi_ed + 2.0 * rv_b + rv_a * 0.5 + fat_width + 12.0;

        let slices = (0..nz)
            .map(|z| {
                let uz = z as f32 * sz / length.max(1.0);
                let c = [c0[0] + tilt[0] * uz, c0[1] + tilt[1] * uz];
                // Pixel (x, y) centre in mm relative to the image centre.
                let xmm = |x: usize| (x as f32 - (nx as f32 - 1.0) / 2.0) * sx;
                let ymm = |y: usize| (y as f32 - (ny as f32 - 1.0) / 2.0) * sy;
                let mut background = vec![0.0f32; nx * ny];
                let mut gain = vec![0.0f32; nx * ny];
                let disk = |px: f32, py: f32, cx: f32, cy: f32, ax: f32, ay: f32| -> f32 {
                    // Approximate signed distance (mm) inside an ellipse, positive inside.
                    let q = (((px - cx) / ax).powi(2) + ((py - cy) / ay).powi(2)).sqrt();
                    (1.0 - q) * ax.min(ay)
                };
                for y in 0..ny {
                    for x in 0..nx {
                        let (px, py) = (xmm(x), ymm(y));
                        let mut v = 0.01;
                        let body = disk(px, py, body_c[0], body_c[1], body_ax, body_ay);
                        v = mix_to(v, subq_fat, ramp(body));
                        let tex = 1.0 + 0.06 * ((px * 0.11).sin() * (py * 0.07 + z as f32).cos());
                        v = mix_to(v, muscle * tex, ramp(body - subq));
                        for side in [-1.0f32, 1.0] {
                            let l = disk(px, py, c[0] + side * lung_dx, c[1] + 10.0, 38.0, 70.0);
                            v = mix_to(v, lung, ramp(l));
                        }
                        if uz > 0.45 {
                            let l = disk(
                                px,
                                py,
                                c[0] - 10.0,
                                c[1] + 30.0 + 40.0 * (1.0 - uz),
                                80.0,
                                45.0,
                            );
                            v = mix_to(v, liver, ramp(l));
                        }
                        let sp = disk(px, py, aorta[0] - 12.0, aorta[1] + 30.0, 16.0, 16.0);
                        v = mix_to(v, 0.12, ramp(sp));
                        v = mix_to(v, 0.5, ramp(sp - 4.0));
                        let ao = disk(px, py, aorta[0], aorta[1], 11.0, 11.0);
                        v = mix_to(v, aorta_blood, ramp(ao));
                        if uz < 0.2 {
                            let d = r_epi_ed + 14.0;
                            let vx = c[0] + d * vessel_angle.cos();
                            let vy = c[1] + d * vessel_angle.sin();
                            let ve = disk(px, py, vx, vy, 13.0, 13.0);
                            v = mix_to(v, aorta_blood * 0.97, ramp(ve));
                        }
                        background[y * nx + x] = v;
                        let (bx, by) = (px / 150.0, py / 150.0);
                        let zb = (z as f32 / nz as f32) - 0.5;
                        let field = (bias[0] * bx
                            + bias[1] * by
                            + bias[2] * (bx * bx + by * by)
                            + bias[3] * zb)
                            .exp();
                        gain[y * nx + x] = gain_level * field;
                    }
                }
                // ROI around the heart in pixels.
                let cxp = c[0] / sx + (nx as f32 - 1.0) / 2.0;
                let cyp = c[1] / sy + (ny as f32 - 1.0) / 2.0;
                let clampi = |v: f32, n: usize| v.round().clamp(0.0, n as f32) as usize;
                let x0 = clampi(cxp - extent / sx, nx);
                let x1 = clampi(cxp + extent / sx + 1.0, nx);
                let y0 = clampi(cyp - extent / sy, ny);
                let y1 = clampi(cyp + extent / sy + 1.0, ny);
                let m = (x1 - x0) * (y1 - y0);
                let mut sc = SliceScene {
                    background,
                    gain,
                    roi: (y0, y1, x0, x1),
                    r: Vec::with_capacity(m),
                    harm: Vec::with_capacity(m),
                    wall: Vec::with_capacity(m),
                    fat: Vec::with_capacity(m),
                    along: Vec::with_capacity(m),
                    across: Vec::with_capacity(m),
                    dx: Vec::with_capacity(m),
                    dy: Vec::with_capacity(m),
                    u: uz,
                };
                let (rc, rs) = (rv_dir.cos(), rv_dir.sin());
                for y in y0..y1 {
                    for x in x0..x1 {
                        let dx = xmm(x) - c[0];
                        let dy = ymm(y) - c[1];
                        let th = dy.atan2(dx);
                        sc.r.push((dx * dx + dy * dy).sqrt());
                        sc.harm.push(
                            1.0 + harmonics[0] * (th - phases[0]).cos()
                                + harmonics[1] * (2.0 * th - phases[1]).cos()
                                + 0.5 * harmonics[2] * (3.0 * th - phases[2]).cos(),
                        );
                        let mut w = 1.0 + harmonics[3] * (2.0 * th - phases[3]).cos();
                        if let Some((ang, depth)) = infarct {
                            let c = (th - ang).cos().max(0.0);
                            w *= 1.0 - depth * c * c * c * c;
                        }
                        sc.wall.push(w);
                        sc.fat.push(
                            (fat_width * (2.0 * (th - fat_phase)).cos() - 0.5 * fat_width).max(0.0),
                        );
                        sc.along.push(dx * rc + dy * rs);
                        sc.across.push(-dx * rs + dy * rc);
                        sc.dx.push(dx);
                        sc.dy.push(dy);
                    }
                }
                sc
            })
            .collect();
        // A shared Gaussian noise pool; each (frame, slice) reads it at its own offset.
        let pool = nx * ny * 2 + 4096;
        let noise: Vec<f32> = (0..pool).map(|_| StandardNormal.sample(&mut rng)).collect();
        Scene {
            p,
            slices,
            tissue,
            apex_endo,
            apex_epi,
            apex_rv,
            rv_a,
            rv_b,
            pap_angles,
            pap_radius: rng.gen_range(2.5..4.0),
            noise,
            noise_sd: rng.gen_range(0.015..0.04),
        }
    }

    /// Renders slice `z` at phase `t` into `img` / `lab`; `val` is a reusable work buffer.
    fn render_slice(
        &self,
        z: usize,
        t: f32,
        frame: u32,
        img: &mut [i16],
        lab: &mut [u8],
        val: &mut Vec<f32>,
    ) {
        let p = self.p;
        let sc = &self.slices[z];
        let tt = &self.tissue;
        let [nx, _, _] = p.shape;
        let prof = |apex: f32| (1.0 - (sc.u / apex).powi(2)).max(0.0).sqrt();
        // Nominal radii at this slice and phase; myocardial area is conserved.
        let r_endo_ed = p.lv_radius_ed * prof(self.apex_endo);
        let r_epi_ed = (p.lv_radius_ed + p.wall_ed) * prof(self.apex_epi);
        let area = (r_epi_ed * r_epi_ed - r_endo_ed * r_endo_ed).max(0.0);
        let shrink = 1.0 - t * (1.0 - (1.0 - p.lv_ef).sqrt());
        let r_endo = r_endo_ed * shrink;
        let r_epi = (r_endo * r_endo + area).sqrt();
        let wall = r_epi - r_endo;
        let rv_f = prof(self.apex_rv) * (1.0 - t * (1.0 - (1.0 - p.rv_ef).sqrt()));
        let (rv_a, rv_b) = (self.rv_a * rv_f, self.rv_b * rv_f);
        let rv_off = r_epi + 0.35 * rv_b;
        let rv_wall = 3.0;
        let pap_on = sc.u > 0.2 && sc.u < 0.8 && r_endo > 3.0 * self.pap_radius;
        let pap: Vec<(f32, f32)> = self
            .pap_angles
            .iter()
            .map(|&a| (0.62 * r_endo * a.cos(), 0.62 * r_endo * a.sin()))
            .collect();

        // Background everywhere, heart inside the ROI.
        val.clear();
        val.extend_from_slice(&sc.background);
        lab.fill(0);
        let (y0, y1, x0, x1) = sc.roi;
        let mut k = 0;
        for y in y0..y1 {
            for x in x0..x1 {
                let i = y * nx + x;
                let r = sc.r[k];
                let rin = r_endo * sc.harm[k];
                let rout = rin + wall * sc.wall[k];
                let mut v = val[i];
                let mut l = 0u8;
                if rout > 0.0 {
                    let fw = sc.fat[k];
                    if fw > 0.0 {
                        let d = r - rout;
                        v = mix_to(v, tt.fat, ramp(d) * ramp(fw - d));
                    }
                }
                if rv_b > 0.5 {
                    let pa = (sc.along[k] - rv_off) / rv_b;
                    let pp = sc.across[k] / rv_a;
                    let rho = (pa * pa + pp * pp).sqrt();
                    let sd = (1.0 - rho) * rv_b;
                    v = mix_to(v, tt.wall, ramp(sd + rv_wall));
                    v = mix_to(v, tt.rv_blood, ramp(sd));
                    if sd > 0.0 {
                        l = 1;
                    }
                }
                if rout > 0.0 {
                    v = mix_to(v, tt.myo, ramp(rout - r));
                    if r < rout {
                        l = 2;
                    }
                }
                if rin > 0.0 {
                    v = mix_to(v, tt.lv_blood, ramp(rin - r));
                    if r < rin {
                        l = 3;
                        if pap_on {
                            for &(px, py) in &pap {
                                let d = ((sc.dx[k] - px).powi(2) + (sc.dy[k] - py).powi(2)).sqrt();
                                v = mix_to(v, tt.papillary, ramp(self.pap_radius - d));
                            }
                        }
                    }
                }
                val[i] = v;
                lab[i] = l;
                k += 1;
            }
        }
        // Acquisition: gain x bias, Rician noise, int16.
        // Two windows of the noise pool at offsets keyed by (patient, frame, slice).
        let n_px = val.len();
        let span = self.noise.len() - n_px;
        let key = mix(p.seedling, ((frame as u64) << 16) | z as u64);
        let off = (key % span as u64) as usize;
        let off2 = ((key >> 32) % span as u64) as usize;
        let (n1, n2) = (&self.noise[off..off + n_px], &self.noise[off2..off2 + n_px]);
        for i in 0..n_px {
            let g = sc.gain[i];
            let sd = self.noise_sd * g;
            let re = val[i] * g + sd * n1[i];
            let im = sd * n2[i];
            img[i] = (re * re + im * im).sqrt().min(i16::MAX as f32) as i16;
        }
    }
}

/// Writes one patient's directory; returns (files, bytes).
fn write_patient(root: &Path, p: &SynthPatient, write_4d: bool) -> Result<(usize, u64)> {
    let dir = root.join(p.subset.dir_name()).join(patient_name(p.id));
    let header = p.header();
    let name = patient_name(p.id);
    let mut files = 0;
    let mut bytes = 0u64;
    let cfg = p.info.to_cfg_string();
    write_atomic(&dir.join("Info.cfg"), cfg.as_bytes())?;
    files += 1;
    bytes += cfg.len() as u64;
    let (imgs, labs) = if write_4d {
        p.render()
    } else {
        p.render_frames(&[p.info.ed, p.info.es])
    };
    let index_of = |f: u32| {
        if write_4d {
            (f - 1) as usize
        } else if f == p.info.ed {
            0
        } else {
            1
        }
    };
    let mut frames = vec![p.info.ed, p.info.es];
    frames.dedup();
    for f in frames {
        let k = index_of(f);
        let img_path = dir.join(format!("{name}_frame{f:02}.nii.gz"));
        let gt_path = dir.join(format!("{name}_frame{f:02}_gt.nii.gz"));
        let img: Array3<i16> = imgs.index_axis(ndarray::Axis(0), k).to_owned();
        let lab: Array3<u8> = labs.index_axis(ndarray::Axis(0), k).to_owned();
        nii::write_volume(&img_path, img.view(), &header, GzLevel::Fast)?;
        nii::write_labels_like(&gt_path, lab.view(), &header)?;
        for path in [&img_path, &gt_path] {
            files += 1;
            bytes += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        }
    }
    if write_4d {
        let path = dir.join(format!("{name}_4d.nii.gz"));
        let step = 1000.0 / p.info.nb_frame as f32 * (60.0 / 70.0);
        nii::write_volume_4d(&path, imgs.view(), &header, step, GzLevel::Fast)?;
        files += 1;
        bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    }
    Ok((files, bytes))
}

/// Parameters of every patient of the cohort, in id order.
pub fn cohort(cfg: &SynthConfig) -> Vec<SynthPatient> {
    let ids = cfg.patient_ids();
    let mut out = Vec::with_capacity(ids.len());
    let (mut i_train, mut i_test) = (0, 0);
    for (id, subset) in ids {
        let (index, count) = match subset {
            Subset::Training => {
                i_train += 1;
                (i_train - 1, cfg.training)
            }
            Subset::Testing => {
                i_test += 1;
                (i_test - 1, cfg.testing)
            }
        };
        out.push(SynthPatient::sample(cfg, id, subset, index, count));
    }
    out
}

/// Writes a synthetic ACDC tree under `root` (`root/training`, `root/testing`, plus
/// `root/synth.json` recording the configuration). `root` must not exist or be empty:
/// existing files are never overwritten. Patients are generated in parallel;
/// the files are a pure function of `cfg`.
pub fn generate(root: &Path, cfg: &SynthConfig) -> Result<SynthSummary> {
    cfg.check()?;
    // Never write into existing data: pointed at a real ACDC tree, this would replace
    // patient files.
    if root.exists() {
        let mut entries = std::fs::read_dir(root).map_err(|e| DataError::io(root, e))?;
        if let Some(entry) = entries.next() {
            let entry = entry.map_err(|e| DataError::io(root, e))?;
            return Err(DataError::Layout {
                path: root.to_path_buf(),
                reason: format!(
                    "refusing to write a synthetic cohort into a folder that is not empty \
                     (it holds {:?}); choose a new or empty folder",
                    entry.file_name()
                ),
            });
        }
    }
    // The cohort is written into a new sibling staging folder of this process and
    // renamed into place when complete (over `root` when it is an empty folder), so an
    // interrupted generation leaves no half cohort at `root`; a failed one removes its
    // staging folder. A killed one leaves `.NAME.partial-PID-N` behind, never at `root`.
    if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    }
    let staging = crate::fsutil::staging_sibling(root);
    std::fs::create_dir(&staging).map_err(|e| DataError::io(&staging, e))?;
    let summary = write_cohort(&staging, cfg).and_then(|s| {
        std::fs::rename(&staging, root)
            .map(|_| s)
            .map_err(|e| DataError::io(root, e))
    });
    if summary.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(SynthSummary {
        root: root.to_path_buf(),
        ..summary?
    })
}

/// Writes the cohort's files under `root`.
fn write_cohort(root: &Path, cfg: &SynthConfig) -> Result<SynthSummary> {
    let start = Instant::now();
    let patients = cohort(cfg);
    let results: Vec<(usize, u64)> = patients
        .par_iter()
        .map(|p| write_patient(root, p, cfg.write_4d))
        .collect::<Result<_>>()?;
    let manifest = serde_json::to_string_pretty(&serde_json::json!({
        "generator": "slimseg-data synth",
        "version": env!("CARGO_PKG_VERSION"),
        "config": cfg,
    }))
    .map_err(|e| DataError::InvalidArgument(format!("cannot serialise synth.json: {e}")))?;
    write_atomic(&root.join("synth.json"), manifest.as_bytes())?;
    let (files, bytes) = results
        .iter()
        .fold((1, manifest.len() as u64), |(f, b), &(f2, b2)| {
            (f + f2, b + b2)
        });
    Ok(SynthSummary {
        root: root.to_path_buf(),
        patients: patients.len(),
        files,
        bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// An analytic heart-like label phantom `[z, y, x]` for metric benchmarks: concentric LV
/// (3) and MYO (2) rings and an RV (1) crescent, centre `c` (pixels), LV radius `r`,
/// shrinking toward the apex slices.
pub fn heart_phantom(shape: (usize, usize, usize), c: (f32, f32), r: f32) -> Array3<u8> {
    let apex = shape.0 as f32 + 0.5;
    Array3::from_shape_fn(shape, |(z, y, x)| {
        let f = (1.0 - (z as f32 / apex).powi(2)).sqrt();
        let (dy, dx) = (y as f32 - c.0, x as f32 - c.1);
        let d = (dy * dy + dx * dx).sqrt();
        let rv = ((dx + 1.3 * r * f) / (0.8 * r * f)).powi(2) + (dy / (1.4 * r * f)).powi(2);
        if d < r * f {
            3
        } else if d < (r + 6.0) * f {
            2
        } else if rv < 1.0 {
            1
        } else {
            0
        }
    })
}
