// Shared by the oneDNN fast paths (engine-internal).
#pragma once

#include <dnnl.hpp>

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

}  // namespace lwc::engine::dnnl_util
