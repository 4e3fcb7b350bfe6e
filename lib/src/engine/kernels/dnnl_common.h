// Shared by the oneDNN fast paths (engine-internal).
#pragma once

#include <dnnl.hpp>

#include "lwc/tensor.h"

namespace lwc::engine::dnnl_util {

using memory = dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

/// The process-wide CPU engine.
inline dnnl::engine& cpuEngine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

/// A stream on the CPU engine, one per thread, reused across calls (creating one per primitive
/// call costs microseconds that matter for small convolutions at batch 1).
inline dnnl::stream& cpuStream() {
  static thread_local dnnl::stream s(cpuEngine());
  return s;
}

/// A oneDNN memory object for a per-call temporary (a blocked copy of an activation), backed by a
/// buffer from the session's BufferPool instead of oneDNN's own allocator: the buffer is reused by
/// the next call rather than malloc'd and freed each time (which fragmented the heap: calibration's
/// peak RSS grew by ~18 MB between the first and second batch). `keep` must outlive the call.
inline memory scratchMemory(const memory::desc& d, lwc::Tensor& keep) {
  keep = lwc::Tensor::uninitialized(lwc::DType::UInt8, {static_cast<int64_t>(d.get_size())});
  return memory(d, cpuEngine(), keep.raw());
}

}  // namespace lwc::engine::dnnl_util
