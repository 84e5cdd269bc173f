#include "train/hdf5_raii.h"

namespace tfm::train {

void quiet_hdf5() {
  thread_local const bool quiet = (H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr), true);
  (void)quiet;
}

std::string hdf5_reason() {
  struct Walk {
    std::string inner;
  } w;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* e, void* data) noexcept -> herr_t {
        try {
          if (n == 0 && e && e->desc) static_cast<Walk*>(data)->inner = e->desc;
        } catch (...) {
          return -1;
        }
        return 0;
      },
      &w);
  H5Eclear2(H5E_DEFAULT);
  return w.inner.empty() ? std::string("unknown HDF5 error") : w.inner;
}

Handle file_access_plist(const Hdf5Context& c) {
  Handle fapl = c.id(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, "cannot create a file access property list");
  // 1.8+ object formats: checksummed superblock and object headers, dense
  // attribute storage, creation-order-indexed groups. h5py and any HDF5 >= 1.8 read them.
  c.ok(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_LATEST), "cannot set library version bounds");
  // Use advisory locks where the file system supports them; don't fail where it doesn't.
  c.ok(H5Pset_file_locking(fapl.get(), 1, 1), "cannot set file locking");
  return fapl;
}

std::string type_desc(hid_t type) {
  const std::size_t size = H5Tget_size(type);
  const std::string bits = std::to_string(size * 8);
  switch (H5Tget_class(type)) {
    case H5T_INTEGER:
      return (H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") + bits;
    case H5T_FLOAT:
      return "float" + bits;
    case H5T_STRING:
      return "string";
    case H5T_COMPOUND:
      return "compound";
    case H5T_ARRAY:
      return "array";
    case H5T_VLEN:
      return "variable-length sequence";
    case H5T_ENUM:
      return "enum";
    case H5T_OPAQUE:
      return "opaque";
    case H5T_REFERENCE:
      return "reference";
    case H5T_BITFIELD:
      return "bitfield";
    case H5T_TIME:
      return "time";
    default:
      return "unknown type";
  }
}

std::string path_join(const std::string& group, const std::string& name) {
  return group == "/" ? "/" + name : group + "/" + name;
}

}  // namespace tfm::train
