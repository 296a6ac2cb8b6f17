//! Mixed precision for training: autocast in float16 or bfloat16, on CPU or CUDA.
//!
//! tch's `autocast` switches CUDA autocast on in float16 only. libtorch sets the precision
//! per device type in its C++ API, which `csrc/autocast.cpp` exposes (built by `build.rs`
//! against the libtorch torch-sys links); nesting and the cast cache go through torch-sys
//! as in tch. Autocast state is thread-local in libtorch: it applies to the calling
//! thread only.

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

/// The autocast state of one device type: libtorch's dtype code and whether it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    dtype: c_int,
    enabled: bool,
}

#[cfg(slimseg_autocast_shim)]
mod shim {
    use std::ffi::c_int;

    use super::State;
    use crate::error::{Error, Result};

    unsafe extern "C" {
        fn slimseg_autocast_dtype(bf16: c_int) -> c_int;
        fn slimseg_autocast_get(cuda: c_int, dtype: *mut c_int, enabled: *mut c_int) -> c_int;
        fn slimseg_autocast_set(cuda: c_int, dtype: c_int, enabled: c_int) -> c_int;
    }

    fn refused(cuda: bool) -> Error {
        Error::Input(format!(
            "libtorch refused to set autocast on {}",
            if cuda { "CUDA" } else { "the CPU" }
        ))
    }

    /// libtorch's code of bfloat16 or float16.
    pub fn dtype(bf16: bool) -> c_int {
        // SAFETY: a pure function of its integer argument.
        unsafe { slimseg_autocast_dtype(c_int::from(bf16)) }
    }

    pub fn get(cuda: bool) -> Result<State> {
        let (mut dtype, mut enabled) = (0, 0);
        // SAFETY: the shim writes the two pointers, which point to live locals, and
        // catches every C++ exception.
        let rc = unsafe { slimseg_autocast_get(c_int::from(cuda), &mut dtype, &mut enabled) };
        if rc != 0 {
            return Err(refused(cuda));
        }
        Ok(State {
            dtype,
            enabled: enabled != 0,
        })
    }

    pub fn set(cuda: bool, s: State) -> Result<()> {
        // SAFETY: the shim only reads its integer arguments and catches every C++
        // exception, restoring the previous state on one.
        let rc =
            unsafe { slimseg_autocast_set(c_int::from(cuda), s.dtype, c_int::from(s.enabled)) };
        if rc != 0 {
            return Err(refused(cuda));
        }
        Ok(())
    }
}

#[cfg(not(slimseg_autocast_shim))]
mod shim {
    use std::ffi::c_int;

    use super::State;
    use crate::error::{Error, Result};

    fn missing() -> Error {
        Error::Input(
            "this build of slimseg has no autocast shim (torch-sys reported no libtorch to \
             compile it against); train with train.amp = \"off\""
                .into(),
        )
    }

    pub fn dtype(bf16: bool) -> c_int {
        c_int::from(bf16)
    }

    pub fn get(_cuda: bool) -> Result<State> {
        Err(missing())
    }

    pub fn set(_cuda: bool, _s: State) -> Result<()> {
        Err(missing())
    }
}

/// Restores the autocast state of a device type when dropped (also on a panic in `f`).
struct Restore {
    cuda: bool,
    was: State,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: plain calls into libtorch's autocast bookkeeping, as tch makes them
        // (they do not throw).
        if unsafe { torch_sys::at_autocast_decrement_nesting() } == 0 {
            unsafe { torch_sys::at_autocast_clear_cache() };
        }
        // A state libtorch reported a moment ago is one it accepts back.
        let _ = shim::set(self.cuda, self.was);
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
    let was = shim::get(cuda)?;
    shim::set(
        cuda,
        State {
            dtype: shim::dtype(precision == AmpPrecision::Bf16),
            enabled: true,
        },
    )?;
    // SAFETY: as tch's `autocast`; the guard decrements it again.
    unsafe { torch_sys::at_autocast_increment_nesting() };
    let _restore = Restore { cuda, was };
    Ok(f())
}

/// Whether autocast is on for the type of `device` now, and in which of the two
/// precisions (`None` when off, or on in another dtype).
pub fn autocast_state(device: Device) -> Result<Option<AmpPrecision>> {
    let s = shim::get(device.is_cuda())?;
    Ok([AmpPrecision::Fp16, AmpPrecision::Bf16]
        .into_iter()
        .find(|&p| s.enabled && s.dtype == shim::dtype(p == AmpPrecision::Bf16)))
}
