//! The libtorch runtime: where libtorch was loaded from, its version, and the CUDA backend.
//!
//! A binary linked against libtorch with the linker's default `--as-needed` does not keep
//! `libtorch_cuda.so` (nothing references its symbols directly), and then libtorch reports
//! no CUDA even on a GPU machine. Linking it with `--no-as-needed` instead would make every
//! binary unloadable where the CUDA libraries are absent (a CPU machine with the slim torch
//! install that `cargo xtask setup` makes). So slimseg loads the CUDA backend at run time:
//! [`init`] finds the directory `libtorch_cpu.so` was loaded from and `dlopen`s the
//! `libtorch_cuda.so` beside it with `RTLD_GLOBAL`, before anything asks libtorch about
//! CUDA (libtorch caches its CUDA hooks on first use). Where that fails, the reason is kept
//! and reported by [`RuntimeInfo`]; the program runs on CPU.
//!
//! Every binary and test that may use CUDA calls [`init`] first; it is cheap and idempotent.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What [`init`] found out about the libtorch this process runs on.
#[derive(Debug, Clone)]
pub struct RuntimeInfo {
    /// Directory holding the `libtorch_cpu.so` mapped into this process, if found.
    pub lib_dir: Option<PathBuf>,
    /// libtorch version read next to `lib_dir` (`2.11.0+cu130`), if found.
    pub version: Option<String>,
    /// State of the CUDA backend library.
    pub cuda_backend: CudaBackend,
}

/// Whether libtorch's CUDA backend (`libtorch_cuda.so`) is loaded into the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaBackend {
    /// The backend is loaded: CUDA devices are usable when a driver and GPU exist.
    Loaded,
    /// This libtorch is a CPU-only build (no `libtorch_cuda.so` beside `libtorch_cpu.so`).
    NotBuilt,
    /// The backend exists but could not be loaded; holds the loader's message (typically a
    /// CUDA library missing, as on a CPU machine with the slim install).
    LoadFailed(String),
}

static RUNTIME: OnceLock<RuntimeInfo> = OnceLock::new();

/// Locates libtorch and loads its CUDA backend when possible. Call it before any other use
/// of tch in a process that may run on CUDA; later calls return the first result.
pub fn init() -> &'static RuntimeInfo {
    RUNTIME.get_or_init(|| {
        // Touch libtorch so that its libraries are mapped even if nothing else ran yet;
        // this call does not query CUDA.
        let _ = tch::get_num_threads();
        let lib_dir = loaded_library_dir("libtorch_cpu.so");
        let version = lib_dir.as_deref().and_then(libtorch_version);
        let cuda_backend = match &lib_dir {
            Some(dir) => load_cuda_backend(dir),
            None => CudaBackend::LoadFailed(
                "libtorch_cpu.so is not among the mapped libraries of this process".into(),
            ),
        };
        RuntimeInfo {
            lib_dir,
            version,
            cuda_backend,
        }
    })
}

/// The directory of the first mapped file named `file_name`, read from `/proc/self/maps`.
fn loaded_library_dir(file_name: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(Path::new)
        .find(|path| path.file_name().is_some_and(|name| name == file_name))
        .and_then(|path| path.parent().map(Path::to_path_buf))
}

/// Reads the libtorch version beside `lib_dir`: the Python wheel's `../version.py`
/// (`__version__ = '2.11.0+cu130'`) or the C++ distribution's `../build-version`.
pub fn libtorch_version(lib_dir: &Path) -> Option<String> {
    let root = lib_dir.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        return text.lines().find_map(|line| {
            let value = line.strip_prefix("__version__")?.trim_start();
            let value = value.strip_prefix('=')?.trim();
            Some(value.trim_matches(|c| c == '\'' || c == '"').to_owned())
        });
    }
    std::fs::read_to_string(root.join("build-version"))
        .ok()
        .map(|text| text.trim().to_owned())
}

fn load_cuda_backend(lib_dir: &Path) -> CudaBackend {
    let path = lib_dir.join("libtorch_cuda.so");
    if !path.exists() {
        return CudaBackend::NotBuilt;
    }
    let Ok(c_path) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return CudaBackend::LoadFailed(format!("{} contains a NUL byte", path.display()));
    };
    // SAFETY: dlopen receives a valid NUL-terminated path; the handle is deliberately never
    // closed so the backend stays registered for the life of the process.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        CudaBackend::LoadFailed(last_dl_error())
    } else {
        CudaBackend::Loaded
    }
}

fn last_dl_error() -> String {
    // SAFETY: dlerror returns NULL or a valid C string owned by the loader, copied at once.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        "unknown dynamic loader error".to_owned()
    } else {
        // SAFETY: non-null pointer from dlerror, valid until the next dl* call.
        unsafe { CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned()
    }
}

/// One CUDA device as the driver describes it.
#[derive(Debug, Clone)]
pub struct CudaDevice {
    /// Device ordinal, as used by `tch::Device::Cuda(ordinal)`.
    pub ordinal: usize,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Total device memory in bytes.
    pub total_memory: u64,
}

/// Lists CUDA devices through the driver API (`libcuda.so.1`), which tch does not expose.
/// Returns an error message when the driver is absent or refuses.
pub fn cuda_devices() -> Result<Vec<CudaDevice>, String> {
    type CuInit = unsafe extern "C" fn(u32) -> i32;
    type CuDeviceGetCount = unsafe extern "C" fn(*mut i32) -> i32;
    type CuDeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type CuDeviceGetName = unsafe extern "C" fn(*mut libc::c_char, i32, i32) -> i32;
    type CuDeviceTotalMem = unsafe extern "C" fn(*mut usize, i32) -> i32;

    // SAFETY: dlopen/dlsym with valid C strings; each symbol is transmuted to the signature
    // the CUDA driver API documents for it, and called with valid out-pointers.
    unsafe {
        let handle = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        if handle.is_null() {
            return Err(format!("no CUDA driver: {}", last_dl_error()));
        }
        let sym = |name: &CStr| {
            let ptr = libc::dlsym(handle, name.as_ptr());
            if ptr.is_null() {
                Err(format!("CUDA driver lacks {}", name.to_string_lossy()))
            } else {
                Ok(ptr)
            }
        };
        let cu_init: CuInit = std::mem::transmute(sym(c"cuInit")?);
        let get_count: CuDeviceGetCount = std::mem::transmute(sym(c"cuDeviceGetCount")?);
        let get_device: CuDeviceGet = std::mem::transmute(sym(c"cuDeviceGet")?);
        let get_name: CuDeviceGetName = std::mem::transmute(sym(c"cuDeviceGetName")?);
        let total_mem: CuDeviceTotalMem = std::mem::transmute(sym(c"cuDeviceTotalMem_v2")?);
        let check = |what: &str, code: i32| {
            if code == 0 {
                Ok(())
            } else {
                Err(format!("CUDA driver call {what} failed with error {code}"))
            }
        };
        check("cuInit", cu_init(0))?;
        let mut count = 0;
        check("cuDeviceGetCount", get_count(&mut count))?;
        let mut devices = Vec::new();
        for ordinal in 0..count {
            let mut device = 0;
            check("cuDeviceGet", get_device(&mut device, ordinal))?;
            let mut name = [0 as libc::c_char; 256];
            check(
                "cuDeviceGetName",
                get_name(name.as_mut_ptr(), name.len() as i32, device),
            )?;
            let mut bytes = 0usize;
            check("cuDeviceTotalMem", total_mem(&mut bytes, device))?;
            devices.push(CudaDevice {
                ordinal: ordinal as usize,
                name: CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned(),
                total_memory: bytes as u64,
            });
        }
        Ok(devices)
    }
}

/// Waits for the work queued on `device` (CUDA; nothing to wait for on the CPU), so that
/// a timing covers the computation and not only its launch.
pub fn synchronize(device: tch::Device) {
    if let tch::Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_finds_the_loaded_libtorch_and_its_version() {
        let info = init();
        let dir = info.lib_dir.as_ref().expect("libtorch_cpu.so is mapped");
        assert!(dir.join("libtorch_cpu.so").exists(), "{}", dir.display());
        let version = info
            .version
            .as_deref()
            .expect("version file beside libtorch");
        assert!(
            version.starts_with("2.11."),
            "tch 0.24 needs libtorch 2.11, found {version}"
        );
        // A second call returns the very same record.
        assert!(std::ptr::eq(info, init()));
    }

    #[test]
    fn version_is_read_from_wheel_and_cpp_layouts() {
        let dir = std::env::temp_dir().join(format!("slimseg-version-{}", std::process::id()));
        let lib = dir.join("lib");
        std::fs::create_dir_all(&lib).unwrap();
        assert_eq!(libtorch_version(&lib), None);
        std::fs::write(dir.join("build-version"), "2.11.0+cpu\n").unwrap();
        assert_eq!(libtorch_version(&lib).as_deref(), Some("2.11.0+cpu"));
        std::fs::write(
            dir.join("version.py"),
            "from typing import Optional\n__version__ = '2.11.0+cu130'\ncuda = '13.0'\n",
        )
        .unwrap();
        assert_eq!(libtorch_version(&lib).as_deref(), Some("2.11.0+cu130"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
