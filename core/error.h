// Errors raised by tfm. User-reachable conditions (bad shapes, bad arguments,
// bad files) throw tfm::Error with a message naming the operation and the
// values involved; nothing on those paths asserts or aborts.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace tfm {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
[[noreturn]] void throw_error(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw Error(os.str());
}
}  // namespace detail

}  // namespace tfm

// TFM_CHECK(cond, parts...) throws tfm::Error("parts...") when cond is false.
// The parts are streamed, so shapes and numbers can be passed directly.
#define TFM_CHECK(cond, ...)                                   \
  do {                                                         \
    if (!(cond)) ::tfm::detail::throw_error(__VA_ARGS__);      \
  } while (0)
