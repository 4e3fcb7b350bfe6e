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

}  // namespace lwc::engine::dnnl_util
