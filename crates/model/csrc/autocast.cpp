// Autocast precision per device type, which libtorch's C API (torch-sys) does not reach:
// it only switches CUDA autocast on and off, in float16. Used by `src/amp.rs`. Device
// type: 0 CPU, 1 CUDA; dtypes are libtorch's ScalarType codes, as `slimseg_autocast_dtype`
// names them. `get` and `set` return 0, or 1 when libtorch threw (after which `set` has
// put the previous state back).
#include <ATen/autocast_mode.h>

namespace {
at::DeviceType device_type(int cuda) { return cuda ? at::kCUDA : at::kCPU; }
}  // namespace

extern "C" {

// The code of bfloat16 (`bf16` != 0) or float16.
int slimseg_autocast_dtype(int bf16) {
  return static_cast<int>(bf16 ? at::kBFloat16 : at::kHalf);
}

int slimseg_autocast_get(int cuda, int* dtype, int* enabled) {
  try {
    const auto t = device_type(cuda);
    *dtype = static_cast<int>(at::autocast::get_autocast_dtype(t));
    *enabled = at::autocast::is_autocast_enabled(t) ? 1 : 0;
    return 0;
  } catch (...) {
    return 1;
  }
}

int slimseg_autocast_set(int cuda, int dtype, int enabled) {
  const auto t = device_type(cuda);
  at::ScalarType old_dtype = at::kHalf;
  bool old_enabled = false;
  try {
    old_dtype = at::autocast::get_autocast_dtype(t);
    old_enabled = at::autocast::is_autocast_enabled(t);
    at::autocast::set_autocast_dtype(t, static_cast<at::ScalarType>(dtype));
    at::autocast::set_autocast_enabled(t, enabled != 0);
    return 0;
  } catch (...) {
    try {
      at::autocast::set_autocast_dtype(t, old_dtype);
      at::autocast::set_autocast_enabled(t, old_enabled);
    } catch (...) {
    }
    return 1;
  }
}

}  // extern "C"
