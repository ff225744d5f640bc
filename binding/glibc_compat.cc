// Keeps the prebuilt addon loadable on glibc 2.34 (RHEL 9; Ubuntu 22.04 has 2.35). The C++ runtime is linked in
// statically (CMakeLists.txt), and GCC 12's libstdc++, built on glibc 2.36, calls arc4random (new in glibc 2.36)
// from std::random_device, which nothing here uses. Defined here, the symbol resolves inside the addon instead of
// against glibc: the same 32 random bits, from getrandom (glibc 2.25).
#include <sys/random.h>

#include <cerrno>
#include <cstdint>

extern "C" uint32_t arc4random(void) {
  uint32_t value = 0;
  while (getrandom(&value, sizeof value, 0) != static_cast<ssize_t>(sizeof value) && errno == EINTR) {
  }
  return value;
}
