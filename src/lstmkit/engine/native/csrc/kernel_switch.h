// Whether an environment variable leaves one of lstmkit's own CPU kernels on: unset or anything but
// "0". LSTMKIT_BF16_KERNEL=0 and LSTMKIT_INT8_KERNEL=0 give the paths of a CPU without the hardware
// (for tests); each kernel reads its variable once.
#pragma once

#include <cstdlib>
#include <string>

namespace lstmkit {

inline bool kernel_switched_on(const char* variable) {
  const char* setting = std::getenv(variable);
  return setting == nullptr || std::string(setting) != "0";
}

}  // namespace lstmkit
