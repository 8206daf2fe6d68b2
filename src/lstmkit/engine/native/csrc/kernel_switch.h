// Whether an environment variable leaves one of lstmkit's own CPU kernels on: unset or anything but
// "0". LSTMKIT_BF16_KERNEL=0 gives the paths of a CPU without the hardware (for tests); the kernel
// reads its variable once. (LSTMKIT_INT8_KERNEL, which also chooses, is int8_gemm.h's kernel().)
#pragma once

#include <cstdlib>
#include <string>

namespace lstmkit {

inline bool kernel_switched_on(const char* variable) {
  const char* setting = std::getenv(variable);
  return setting == nullptr || std::string(setting) != "0";
}

}  // namespace lstmkit
