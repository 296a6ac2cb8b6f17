//! Mixed precision for training: autocast in float16 or bfloat16, on CPU or CUDA.
//!
//! tch's `autocast` switches CUDA autocast on in float16 only. libtorch sets the precision
//! per device type in its C++ API, which `csrc/autocast.cpp` exposes (built by `build.rs`
//! against the libtorch torch-sys links); nesting and the cast cache go through torch-sys
//! as in tch.

use std::ffi::c_int;
use std::fmt;

use tch::Device;

use crate::error::{Error, Result};

/// The precision autocast runs eligible ops (convolutions, matrix products) in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmpPrecision {
    /// float16: CUDA only, and it needs loss scaling (gradients underflow).
    Fp16,
    /// bfloat16: float32's range, so no loss scaling; CPU and CUDA.
    Bf16,
}

impl fmt::Display for AmpPrecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AmpPrecision::Fp16 => "fp16",
            AmpPrecision::Bf16 => "bf16",
        })
    }
}

unsafe extern "C" {
    fn slimseg_autocast_get(cuda: c_int, bf16: *mut c_int, enabled: *mut c_int) -> c_int;
    fn slimseg_autocast_set(cuda: c_int, bf16: c_int, enabled: c_int) -> c_int;
}

fn refused(cuda: bool) -> Error {
    Error::Input(format!(
        "libtorch refused to set autocast on {}",
        if cuda { "CUDA" } else { "the CPU" }
    ))
}

/// The autocast state of a device type: `(bf16, enabled)`.
fn get(cuda: bool) -> Result<(bool, bool)> {
    let (mut bf16, mut enabled) = (0, 0);
    // SAFETY: the shim writes the two pointers, which point to live locals, and catches
    // every C++ exception.
    let rc = unsafe { slimseg_autocast_get(c_int::from(cuda), &mut bf16, &mut enabled) };
    if rc != 0 {
        return Err(refused(cuda));
    }
    Ok((bf16 != 0, enabled != 0))
}

/// Sets the autocast state of a device type.
fn set(cuda: bool, bf16: bool, enabled: bool) -> Result<()> {
    // SAFETY: the shim only reads its integer arguments and catches every C++ exception.
    let rc =
        unsafe { slimseg_autocast_set(c_int::from(cuda), c_int::from(bf16), c_int::from(enabled)) };
    if rc != 0 {
        return Err(refused(cuda));
    }
    Ok(())
}

/// Restores the autocast state of a device type when dropped (also on a panic in `f`).
struct Restore {
    cuda: bool,
    was: (bool, bool),
}

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: plain calls into libtorch's autocast bookkeeping, as tch makes them.
        if unsafe { torch_sys::at_autocast_decrement_nesting() } == 0 {
            unsafe { torch_sys::at_autocast_clear_cache() };
        }
        // A state libtorch reported a moment ago is one it accepts back.
        let _ = set(self.cuda, self.was.0, self.was.1);
    }
}

/// Runs `f` with autocast on for the type of `device` (CPU or CUDA) in `precision`, and
/// restores the previous autocast state afterwards. float16 is refused on the CPU.
pub fn autocast<T>(device: Device, precision: AmpPrecision, f: impl FnOnce() -> T) -> Result<T> {
    let cuda = device.is_cuda();
    if !cuda && precision == AmpPrecision::Fp16 {
        return Err(Error::Input(
            "fp16 autocast runs on CUDA only; use bf16 on the CPU".into(),
        ));
    }
    let was = get(cuda)?;
    set(cuda, precision == AmpPrecision::Bf16, true)?;
    // SAFETY: as tch's `autocast`; the guard decrements it again.
    unsafe { torch_sys::at_autocast_increment_nesting() };
    let _restore = Restore { cuda, was };
    Ok(f())
}

/// Whether autocast is on for the type of `device` now, and in which precision.
pub fn autocast_state(device: Device) -> Result<Option<AmpPrecision>> {
    let (bf16, enabled) = get(device.is_cuda())?;
    Ok(enabled.then_some(if bf16 {
        AmpPrecision::Bf16
    } else {
        AmpPrecision::Fp16
    }))
}
