//! The latency benchmark's statistics and report (no timing assertions: speed is measured
//! by the `latency` example and the criterion bench, not asserted in tests).

use slimseg_compress::{
    KeepFractions, LatencyOptions, LatencyStats, RunTime, bench_full_vs_compressed, structured_arch,
};
use slimseg_model::{InferenceOptions, ModelConfig};
use tch::Device;

fn runs(wall: &[f64]) -> Vec<RunTime> {
    wall.iter()
        .map(|&w| RunTime {
            wall_ms: w,
            cpu_ms: 2.0 * w,
        })
        .collect()
}

#[test]
fn stats_take_the_median_of_odd_and_even_counts() {
    let s = LatencyStats::from_runs(&runs(&[5.0, 1.0, 3.0])).unwrap();
    assert_eq!(
        (s.median_ms, s.min_ms, s.max_ms, s.mean_ms),
        (3.0, 1.0, 5.0, 3.0)
    );
    assert_eq!(s.cpu_median_ms, 6.0);
    assert_eq!(
        s.samples_ms,
        vec![5.0, 1.0, 3.0],
        "samples keep their order"
    );
    let s = LatencyStats::from_runs(&runs(&[4.0, 1.0, 10.0, 2.0])).unwrap();
    assert_eq!(s.median_ms, 3.0);
    assert!(LatencyStats::from_runs(&[]).is_err());
}

#[test]
fn benchmark_reports_every_batch_size_and_the_sizes_compared() {
    let cfg = ModelConfig::tiny();
    let arch = structured_arch(
        &cfg,
        KeepFractions {
            attn: 0.5,
            mlp: 0.5,
            tokens: 0.5,
        },
        2,
    )
    .unwrap();
    let opts = LatencyOptions {
        warmup: 1,
        repeats: 2,
    };
    let report = bench_full_vs_compressed(
        &cfg,
        &arch,
        Device::Cpu,
        &[1, 2],
        &opts,
        InferenceOptions::default(),
    )
    .unwrap();
    assert_eq!(
        report.rows.iter().map(|r| r.batch).collect::<Vec<_>>(),
        vec![1, 2]
    );
    for r in &report.rows {
        assert_eq!(r.full.samples_ms.len(), 2);
        assert_eq!(r.compressed.cpu_samples_ms.len(), 2);
        assert!(r.full.min_ms > 0.0 && r.compressed.min_ms > 0.0);
    }
    let summary = report.summary.unwrap();
    assert!(summary.macs < summary.full_macs && summary.params < summary.full_params);
    assert!(report.device.starts_with("cpu"));
    let md = report.to_markdown();
    assert!(md.contains("| 1 |") && md.contains("| 2 |"), "{md}");
    let bad = LatencyOptions {
        warmup: 0,
        repeats: 0,
    };
    assert!(
        bench_full_vs_compressed(
            &cfg,
            &arch,
            Device::Cpu,
            &[1],
            &bad,
            InferenceOptions::default()
        )
        .is_err()
    );
    assert!(
        bench_full_vs_compressed(
            &cfg,
            &arch,
            Device::Cpu,
            &[],
            &opts,
            InferenceOptions::default()
        )
        .is_err()
    );
}
