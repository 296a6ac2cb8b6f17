//! Latency benchmark: forward time of the full vs the compressed model, on any
//! `tch::Device`, at several batch sizes, with warm-up and the median of repeated runs.
//!
//! Timing is eval mode without gradients, wall clock around one forward pass; on CUDA the
//! device is synchronised before starting and before stopping the clock. The runs of the
//! models compared interleave (the order rotating every repeat), so slow drift of a
//! shared machine affects all alike. Weights do not matter for speed, so
//! [`bench_full_vs_compressed`] builds both models with their initial weights.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use slimseg_model::runtime::synchronize;
use slimseg_model::{InferenceOptions, ModelConfig, SubnetArch, TransUnet};
use tch::{Device, Kind, Tensor, nn};

use crate::error::{Error, Result};
use crate::store::Summary;

/// How many runs to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyOptions {
    /// Untimed runs per model and batch size before timing (allocator, kernels, caches).
    pub warmup: usize,
    /// Timed runs per model and batch size (at least 1).
    pub repeats: usize,
}

impl Default for LatencyOptions {
    fn default() -> Self {
        LatencyOptions {
            warmup: 3,
            repeats: 10,
        }
    }
}

/// Timings of one model at one batch size, in milliseconds per forward pass.
///
/// Besides wall-clock time, the process CPU time of each run is kept (all threads
/// together): on a shared machine other processes stretch wall-clock time but hardly the
/// CPU time the forward pass itself consumes, so the CPU-time median is the steadier
/// measure of work there. On CUDA it only counts the host side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    /// Median of the timed runs.
    pub median_ms: f64,
    /// Fastest run.
    pub min_ms: f64,
    /// Slowest run.
    pub max_ms: f64,
    /// Mean of the timed runs.
    pub mean_ms: f64,
    /// Every timed run, in order.
    pub samples_ms: Vec<f64>,
    /// Median process CPU time per run (all threads), in milliseconds.
    pub cpu_median_ms: f64,
    /// Process CPU time of every timed run, in order.
    pub cpu_samples_ms: Vec<f64>,
}

fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// Wall-clock and process CPU time of one run, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunTime {
    /// Wall-clock time.
    pub wall_ms: f64,
    /// Process CPU time (all threads).
    pub cpu_ms: f64,
}

/// Process CPU time so far (all threads), in milliseconds.
fn process_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes into it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

impl LatencyStats {
    /// Statistics of a non-empty list of runs.
    pub fn from_runs(runs: &[RunTime]) -> Result<Self> {
        if runs.is_empty() {
            return Err(Error::Invalid("no latency samples".into()));
        }
        let samples_ms: Vec<f64> = runs.iter().map(|r| r.wall_ms).collect();
        let cpu_samples_ms: Vec<f64> = runs.iter().map(|r| r.cpu_ms).collect();
        let n = samples_ms.len();
        Ok(LatencyStats {
            median_ms: median(&samples_ms),
            min_ms: samples_ms.iter().copied().fold(f64::INFINITY, f64::min),
            max_ms: samples_ms.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            mean_ms: samples_ms.iter().sum::<f64>() / n as f64,
            samples_ms,
            cpu_median_ms: median(&cpu_samples_ms),
            cpu_samples_ms,
        })
    }
}

/// Full vs compressed at one batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyRow {
    /// Images per forward pass.
    pub batch: usize,
    /// The full model.
    pub full: LatencyStats,
    /// The compressed model.
    pub compressed: LatencyStats,
}

impl LatencyRow {
    /// Fraction of the full model's median latency saved, `1 - compressed / full`.
    pub fn reduction(&self) -> f64 {
        1.0 - self.compressed.median_ms / self.full.median_ms
    }

    /// Full median over compressed median.
    pub fn speedup(&self) -> f64 {
        self.full.median_ms / self.compressed.median_ms
    }

    /// Fraction of the full model's median process CPU time saved.
    pub fn cpu_time_reduction(&self) -> f64 {
        1.0 - self.compressed.cpu_median_ms / self.full.cpu_median_ms
    }
}

/// A full benchmark: where it ran, the sizes compared and one row per batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// Device, in words (`cpu (2 threads)`, `cuda:0`).
    pub device: String,
    /// The run counts used.
    pub options: LatencyOptions,
    /// Parameters and MACs of both models, when known.
    pub summary: Option<Summary>,
    /// One row per batch size, in the order asked.
    pub rows: Vec<LatencyRow>,
}

impl LatencyReport {
    /// A Markdown table of the medians (and min/max) per batch size.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "Latency on {} (eval, no grad, warm-up {}, median of {} runs)\n\n",
            self.device, self.options.warmup, self.options.repeats
        );
        if let Some(m) = &self.summary {
            s += &format!(
                "Params {} -> {} (-{:.1}%), MACs/image {:.3} G -> {:.3} G (-{:.1}%)\n\n",
                m.full_params,
                m.params,
                100.0 * m.param_reduction(),
                m.full_macs as f64 / 1e9,
                m.macs as f64 / 1e9,
                100.0 * m.mac_reduction()
            );
        }
        s += "| batch | full median ms (min-max) | compressed median ms (min-max) | latency reduction | speed-up | CPU-time full / compressed ms | CPU-time reduction |\n";
        s += "|---:|---:|---:|---:|---:|---:|---:|\n";
        for r in &self.rows {
            s += &format!(
                "| {} | {:.1} ({:.1}-{:.1}) | {:.1} ({:.1}-{:.1}) | {:.1}% | {:.2}x | {:.0} / {:.0} | {:.1}% |\n",
                r.batch,
                r.full.median_ms,
                r.full.min_ms,
                r.full.max_ms,
                r.compressed.median_ms,
                r.compressed.min_ms,
                r.compressed.max_ms,
                100.0 * r.reduction(),
                r.speedup(),
                r.full.cpu_median_ms,
                r.compressed.cpu_median_ms,
                100.0 * r.cpu_time_reduction()
            );
        }
        s
    }
}

/// The device in words, with the CPU thread count.
pub fn describe_device(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

fn input(cfg: &ModelConfig, batch: usize, device: Device) -> Tensor {
    let s = cfg.img_size as i64;
    Tensor::randn([batch as i64, 1, s, s], (Kind::Float, device))
}

/// One timed forward pass.
fn time_once(model: &TransUnet, xs: &Tensor) -> Result<RunTime> {
    let device = model.device();
    synchronize(device);
    let cpu0 = process_cpu_ms();
    let start = Instant::now();
    let out = model.forward_t(xs, false)?;
    synchronize(device);
    let wall_ms = start.elapsed().as_secs_f64() * 1e3;
    let cpu_ms = process_cpu_ms() - cpu0;
    drop(out);
    Ok(RunTime { wall_ms, cpu_ms })
}

fn check_options(opts: &LatencyOptions, batches: &[usize]) -> Result<()> {
    if opts.repeats == 0 {
        return Err(Error::Invalid("latency repeats must be at least 1".into()));
    }
    if batches.is_empty() || batches.contains(&0) {
        return Err(Error::Invalid(format!(
            "batch sizes must be a non-empty list of positive numbers, found {batches:?}"
        )));
    }
    Ok(())
}

/// Times the forward pass of one model at `batch` images (eval, no grad).
pub fn time_forward(
    model: &TransUnet,
    batch: usize,
    opts: &LatencyOptions,
) -> Result<LatencyStats> {
    check_options(opts, &[batch])?;
    let _guard = tch::no_grad_guard();
    let xs = input(model.config(), batch, model.device());
    for _ in 0..opts.warmup {
        time_once(model, &xs)?;
    }
    let samples = (0..opts.repeats)
        .map(|_| time_once(model, &xs))
        .collect::<Result<Vec<_>>>()?;
    LatencyStats::from_runs(&samples)
}

/// Times each of `models` at each batch size, interleaving their runs (the order rotates
/// every repeat), so that drift of a shared machine affects all alike. All models must
/// have the same input size; each runs on its own device. Returns, per batch size, one
/// [`LatencyStats`] per model in the order given.
pub fn time_models(
    models: &[&TransUnet],
    batches: &[usize],
    opts: &LatencyOptions,
) -> Result<Vec<Vec<LatencyStats>>> {
    check_options(opts, batches)?;
    let Some(first) = models.first() else {
        return Err(Error::Invalid("no model to time".into()));
    };
    let size = first.config().img_size;
    if let Some(m) = models.iter().find(|m| m.config().img_size != size) {
        return Err(Error::Invalid(format!(
            "input sizes differ: {size} vs {}",
            m.config().img_size
        )));
    }
    let _guard = tch::no_grad_guard();
    let mut out = Vec::with_capacity(batches.len());
    for &batch in batches {
        let x = input(first.config(), batch, first.device());
        let xs: Vec<Tensor> = models.iter().map(|m| x.to_device(m.device())).collect();
        for _ in 0..opts.warmup {
            for (m, x) in models.iter().zip(&xs) {
                time_once(m, x)?;
            }
        }
        let mut runs: Vec<Vec<RunTime>> = vec![Vec::with_capacity(opts.repeats); models.len()];
        for r in 0..opts.repeats {
            for k in 0..models.len() {
                let i = (k + r) % models.len();
                runs[i].push(time_once(models[i], &xs[i])?);
            }
        }
        out.push(
            runs.iter()
                .map(|r| LatencyStats::from_runs(r))
                .collect::<Result<_>>()?,
        );
    }
    Ok(out)
}

/// Times `full` and `compressed` at each batch size, alternating their runs. Both models
/// must have the same input size; each runs on its own device.
pub fn compare_latency(
    full: &TransUnet,
    compressed: &TransUnet,
    batches: &[usize],
    opts: &LatencyOptions,
) -> Result<LatencyReport> {
    let rows = time_models(&[full, compressed], batches, opts)?
        .into_iter()
        .zip(batches)
        .map(|(mut stats, &batch)| {
            let compressed = stats.pop().expect("two models timed");
            let full = stats.pop().expect("two models timed");
            LatencyRow {
                batch,
                full,
                compressed,
            }
        })
        .collect();
    let summary = match compressed.arch() {
        Some(arch) => Some(Summary::new(compressed.config(), arch)?),
        None => None,
    };
    Ok(LatencyReport {
        device: describe_device(compressed.device()),
        options: *opts,
        summary,
        rows,
    })
}

/// Builds the full model of `cfg` and the compressed model of `arch` on `device` (initial
/// weights; speed does not depend on values), prepares both for inference with `infer`
/// and compares their latency at each batch size. This is the benchmark behind the
/// latency figures; it runs on CPU or CUDA.
pub fn bench_full_vs_compressed(
    cfg: &ModelConfig,
    arch: &SubnetArch,
    device: Device,
    batches: &[usize],
    opts: &LatencyOptions,
    infer: InferenceOptions,
) -> Result<LatencyReport> {
    tch::manual_seed(0);
    let mut full_vs = nn::VarStore::new(device);
    let mut full = TransUnet::new(&full_vs.root(), cfg)?;
    full.prepare_inference(&mut full_vs, infer)?;
    let mut small_vs = nn::VarStore::new(device);
    let mut compressed = TransUnet::new_reduced(&small_vs.root(), cfg, arch)?;
    compressed.prepare_inference(&mut small_vs, infer)?;
    compare_latency(&full, &compressed, batches, opts)
}
