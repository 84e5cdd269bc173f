// The message of the exception `f` throws, or "(no error)" when it returns:
// lets a test check an error's wording with Contains(...).
#pragma once

#include <exception>
#include <functional>
#include <string>

namespace tfm::test {

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace tfm::test
