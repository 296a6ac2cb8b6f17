//! Compiles `csrc/autocast.cpp` (autocast precision per device type, see `src/amp.rs`)
//! against the libtorch that torch-sys links, with torch-sys' flags. Where torch-sys does
//! not report its libtorch (a doc-only build, or a platform other than Linux and macOS),
//! the shim is left out and `amp::autocast` says so when called.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    for v in [
        "LIBTORCH_CXX11_ABI",
        "LIBTORCH_INCLUDE",
        "LIBTORCH_USE_PYTORCH",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    println!("cargo::rustc-check-cfg=cfg(slimseg_autocast_shim)");
    // torch-sys (`links = "tch"`) passes its lib dir to the crates that depend on it.
    let unix = matches!(
        std::env::var("CARGO_CFG_TARGET_OS").as_deref(),
        Ok("linux" | "macos")
    );
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB").filter(|_| unix) else {
        println!(
            "cargo:warning=torch-sys reported no libtorch: building without the autocast \
             shim (train.amp = \"bf16\" will be refused)"
        );
        return;
    };
    let lib = PathBuf::from(lib);
    // As torch-sys: LIBTORCH_INCLUDE names the root of the headers when they live apart.
    let root = std::env::var_os("LIBTORCH_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            lib.parent()
                .expect("libtorch/lib has a parent")
                .to_path_buf()
        });
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={}", cxx11_abi()))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/autocast.cpp")
        .compile("slimseg_autocast");
    println!("cargo:rustc-cfg=slimseg_autocast_shim");
}

/// The C++ ABI torch-sys compiles with: `LIBTORCH_CXX11_ABI`, else Python torch's own
/// with `LIBTORCH_USE_PYTORCH`, else 1.
fn cxx11_abi() -> String {
    if let Ok(abi) = std::env::var("LIBTORCH_CXX11_ABI") {
        return abi;
    }
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        // The interpreter torch-sys asks: the active virtual environment's, else python3.
        let python = if std::env::var_os("VIRTUAL_ENV").is_some() {
            "python"
        } else {
            "python3"
        };
        let out = Command::new(python)
            .args([
                "-c",
                "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))",
            ])
            .output();
        if let Some(o) = out.ok().filter(|o| o.status.success()) {
            return String::from_utf8_lossy(&o.stdout).trim().to_string();
        }
    }
    "1".into()
}
