// Autocast precision per device type, which libtorch's C API (torch-sys) does not reach:
// it only switches CUDA autocast on and off, in float16. Used by `src/amp.rs`. Device
// type: 0 CPU, 1 CUDA; dtype: 0 float16, 1 bfloat16. Both return 0, or 1 when libtorch
// threw.
#include <ATen/autocast_mode.h>

namespace {
at::DeviceType device_type(int cuda) { return cuda ? at::kCUDA : at::kCPU; }
}  // namespace

extern "C" {

int slimseg_autocast_get(int cuda, int* bf16, int* enabled) {
  try {
    const auto t = device_type(cuda);
    *bf16 = at::autocast::get_autocast_dtype(t) == at::kBFloat16 ? 1 : 0;
    *enabled = at::autocast::is_autocast_enabled(t) ? 1 : 0;
    return 0;
  } catch (...) {
    return 1;
  }
}

int slimseg_autocast_set(int cuda, int bf16, int enabled) {
  try {
    const auto t = device_type(cuda);
    at::autocast::set_autocast_dtype(t, bf16 ? at::kBFloat16 : at::kHalf);
    at::autocast::set_autocast_enabled(t, enabled != 0);
    return 0;
  } catch (...) {
    return 1;
  }
}

}  // extern "C"
