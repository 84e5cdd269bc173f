// HDF5 C API helpers for the checkpoint reader and writer: RAII ownership
// of hid_t handles, HDF5's error stack turned into one reason string, and an
// error context (Hdf5Context) that names the file in every tfm::Error it throws.
// All calls happen on the calling thread with HDF5's own printing off.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <utility>

#include "core/error.h"

namespace tfm::train {

// Switches off HDF5's automatic error printing (per thread in thread-safe builds).
void quiet_hdf5();

// The innermost message of HDF5's error stack (then clears the stack).
std::string hdf5_reason();

// Owns one hid_t and closes it with the matching H5?close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, -1)), closer_(o.closer_) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, -1);
      closer_ = o.closer_;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }
  hid_t get() const { return id_; }
  // Closes now and returns the closer's status (for files, where closing flushes).
  herr_t close() {
    herr_t r = 0;
    if (id_ >= 0) r = closer_(id_);
    id_ = -1;
    return r;
  }
  void reset() {
    if (id_ >= 0) closer_(id_);
    id_ = -1;
  }

 private:
  hid_t id_ = -1;
  Closer closer_ = nullptr;
};

// Error context: the file being read or written and its size.
struct Hdf5Context {
  std::string path;
  uint64_t file_size = 0;
  mutable uint64_t data_bytes = 0;  // bytes of dataset contents accepted so far (loading)

  [[noreturn]] void fail(const std::string& what) const { throw Error(path + ": " + what); }
  [[noreturn]] void fail_h5(const std::string& what) const { fail(what + " (HDF5: " + hdf5_reason() + ")"); }
  Handle id(hid_t h, Handle::Closer closer, const std::string& what) const {
    if (h < 0) fail_h5(what);
    return Handle(h, closer);
  }
  void ok(herr_t r, const std::string& what) const {
    if (r < 0) fail_h5(what);
  }
  bool exists(hid_t loc, const std::string& name, const std::string& where) const {
    const htri_t r = H5Lexists(loc, name.c_str(), H5P_DEFAULT);
    if (r < 0) fail_h5(where + ": cannot look up link");
    return r > 0;
  }
};

// A file access property list: 1.8+ object formats, advisory locking where available.
Handle file_access_plist(const Hdf5Context& c);

// "float32", "uint8", "string", ... for messages.
std::string type_desc(hid_t type);

// group + "/" + name, without doubling the root's slash.
std::string path_join(const std::string& group, const std::string& name);

}  // namespace tfm::train
