//! `slimseg doctor`: what libtorch this binary runs on and which devices it can use.

use slimseg_model::runtime::{self, CudaBackend};

/// Prints the report. Always succeeds: a missing GPU is a fact to report, not an error.
pub fn run() -> anyhow::Result<()> {
    let info = runtime::init();
    let unknown = || "unknown".to_owned();
    println!("slimseg        {}", env!("CARGO_PKG_VERSION"));
    println!(
        "libtorch       {}",
        info.version.clone().unwrap_or_else(unknown)
    );
    println!(
        "loaded from    {}",
        info.lib_dir
            .as_ref()
            .map_or_else(unknown, |dir| dir.display().to_string())
    );
    println!(
        "cpu threads    {} intra-op, {} inter-op",
        tch::get_num_threads(),
        tch::get_num_interop_threads()
    );
    let backend = match &info.cuda_backend {
        CudaBackend::Loaded => "loaded".to_owned(),
        CudaBackend::NotBuilt => "absent (CPU-only libtorch)".to_owned(),
        CudaBackend::LoadFailed(why) => format!("not loaded ({why})"),
    };
    println!("cuda backend   {backend}");
    let available = tch::Cuda::is_available();
    println!("cuda available {}", yes_no(available));
    println!("cuda devices   {}", tch::Cuda::device_count());
    if available {
        match runtime::cuda_devices() {
            Ok(devices) => {
                for device in devices {
                    println!(
                        "  cuda:{}       {} ({:.1} GiB)",
                        device.ordinal,
                        device.name,
                        device.total_memory as f64 / (1u64 << 30) as f64
                    );
                }
            }
            Err(why) => println!("  device names unavailable: {why}"),
        }
    }
    println!("cudnn          {}", yes_no(tch::Cuda::cudnn_is_available()));
    if available {
        match cuda_smoke_test() {
            Ok(diff) => println!("cuda matmul    ok on cuda:0 (max |gpu - cpu| = {diff:.2e})"),
            Err(err) => println!("cuda matmul    FAILED on cuda:0: {err}"),
        }
    }
    Ok(())
}

/// Multiplies two random matrices on cuda:0 and on the CPU; returns the largest difference.
/// Proves the backend runs kernels, not just that it reports a device.
fn cuda_smoke_test() -> Result<f64, tch::TchError> {
    let a = tch::Tensor::f_randn([256, 256], (tch::Kind::Float, tch::Device::Cpu))?;
    let b = tch::Tensor::f_randn([256, 256], (tch::Kind::Float, tch::Device::Cpu))?;
    let cpu = a.f_matmul(&b)?;
    let device = tch::Device::Cuda(0);
    let gpu = a
        .f_to(device)?
        .f_matmul(&b.f_to(device)?)?
        .f_to(tch::Device::Cpu)?;
    (gpu - cpu).f_abs()?.f_max()?.f_double_value(&[])
}

fn yes_no(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}
