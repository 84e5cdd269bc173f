// Writing checkpoints (layout in checkpoint.h, details in
// docs/checkpoint-format.md): HDF5 into a temporary file next to the target,
// the integrity header into its user block, fsync, rename over the target.
#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "core/error.h"
#include "train/checkpoint.h"
#include "train/checkpoint_integrity.h"
#include "train/hdf5_raii.h"
#include "train/posix_file.h"
#include "train/xxhash64.h"

namespace tfm::train {
namespace {

using core::Shape;
using core::Tensor;

constexpr int kMaxGroupDepth = 8;  // optimizer state names nest at most this deep

void check_no_nul(const Hdf5Context& c, const std::string& where, const std::string& s) {
  if (s.find('\0') != std::string::npos)
    c.fail(where + ": string contains a NUL byte, which a checkpoint string cannot hold");
}

// One component of an HDF5 path: non-empty, no '/', not ".".
void check_link_name(const Hdf5Context& c, const std::string& kind, const std::string& full, const std::string& component) {
  if (component.empty()) c.fail("invalid " + kind + " name '" + full + "': empty name or empty path component");
  if (component == ".") c.fail("invalid " + kind + " name '" + full + "': '.' is not a valid HDF5 link name");
  if (component.find('/') != std::string::npos) c.fail("invalid " + kind + " name '" + full + "': contains '/'");
  if (component.find('\0') != std::string::npos)
    c.fail("invalid " + kind + " name '" + full + "': contains a NUL byte");
}

// Fixed-length UTF-8 string type of `len` bytes (at least 1; NUL padded).
Handle string_type(const Hdf5Context& c, const std::string& where, std::size_t len) {
  if (len >= (std::size_t{1} << 32) - 1)
    c.fail(where + ": string of " + std::to_string(len) + " bytes is too long (limit 4 GiB)");
  Handle t = c.id(H5Tcopy(H5T_C_S1), H5Tclose, where + ": cannot create string type");
  c.ok(H5Tset_size(t.get(), std::max<std::size_t>(1, len)), where + ": cannot size string type");
  c.ok(H5Tset_strpad(t.get(), H5T_STR_NULLPAD), where + ": cannot set string padding");
  c.ok(H5Tset_cset(t.get(), H5T_CSET_UTF8), where + ": cannot set string character set");
  return t;
}

void write_string_attr(const Hdf5Context& c, hid_t obj, const std::string& obj_path, const std::string& name,
                       const std::string& value) {
  const std::string where = obj_path + " attribute '" + name + "'";
  if (name.empty()) c.fail(obj_path + ": empty attribute name");
  check_no_nul(c, where, name);
  check_no_nul(c, where, value);
  Handle type = string_type(c, where, value.size());
  Handle space = c.id(H5Screate(H5S_SCALAR), H5Sclose, where + ": cannot create dataspace");
  Handle attr = c.id(H5Acreate2(obj, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                     where + ": cannot create attribute");
  c.ok(H5Awrite(attr.get(), type.get(), value.c_str()), where + ": cannot write attribute");
}

void write_int_attr(const Hdf5Context& c, hid_t obj, const std::string& obj_path, const std::string& name, int64_t value) {
  const std::string where = obj_path + " attribute '" + name + "'";
  if (name.empty()) c.fail(obj_path + ": empty attribute name");
  check_no_nul(c, where, name);
  Handle space = c.id(H5Screate(H5S_SCALAR), H5Sclose, where + ": cannot create dataspace");
  Handle attr = c.id(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                     where + ": cannot create attribute");
  c.ok(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), where + ": cannot write attribute");
}

void write_string_dataset(const Hdf5Context& c, hid_t loc, const std::string& name, const std::string& where,
                          const std::string& value) {
  check_no_nul(c, where, value);
  Handle type = string_type(c, where, value.size());
  Handle space = c.id(H5Screate(H5S_SCALAR), H5Sclose, where + ": cannot create dataspace");
  Handle dset = c.id(H5Dcreate2(loc, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                     H5Dclose, where + ": cannot create dataset");
  c.ok(H5Dwrite(dset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, value.c_str()),
       where + ": cannot write dataset");
}

Handle simple_space(const Hdf5Context& c, const std::string& where, const Shape& shape) {
  if (shape.empty()) return c.id(H5Screate(H5S_SCALAR), H5Sclose, where + ": cannot create dataspace");
  if (shape.size() > H5S_MAX_RANK)
    c.fail(where + ": rank " + std::to_string(shape.size()) + " exceeds HDF5's limit of " +
           std::to_string(H5S_MAX_RANK));
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  return c.id(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose,
              where + ": cannot create dataspace for shape " + core::shape_str(shape));
}

// Dataset `name` in `loc` holding `t` as float32, with an int64 attribute
// `index` recording its position in the saved list.
void write_tensor(const Hdf5Context& c, hid_t loc, const std::string& name, const std::string& where, const Tensor& t,
                  int64_t index) {
  if (!t.defined()) c.fail(where + ": undefined tensor");
  if (t.dtype() != core::DType::f32)
    c.fail(where + ": only f32 tensors can be saved, got " + core::dtype_name(t.dtype()));
  const Tensor ct = t.detach().contiguous();
  Handle space = simple_space(c, where, ct.shape());
  Handle dset = c.id(H5Dcreate2(loc, name.c_str(), H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                     H5Dclose, where + ": cannot create dataset");
  if (ct.numel() > 0)
    c.ok(H5Dwrite(dset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, ct.data<float>()),
         where + ": cannot write dataset");
  write_int_attr(c, dset.get(), where, "index", index);
}

// A group whose links keep their creation order (h5py lists them in that order).
Handle create_ordered_group(const Hdf5Context& c, hid_t loc, const std::string& name, const std::string& where) {
  Handle gcpl = c.id(H5Pcreate(H5P_GROUP_CREATE), H5Pclose, where + ": cannot create a group property list");
  c.ok(H5Pset_link_creation_order(gcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED),
       where + ": cannot track creation order");
  return c.id(H5Gcreate2(loc, name.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), H5Gclose,
              where + ": cannot create group");
}

void write_contents(const Hdf5Context& c, hid_t file, const CheckpointData& data) {
  Handle root = c.id(H5Gopen2(file, "/", H5P_DEFAULT), H5Gclose, "cannot open the root group");

  // Root attributes.
  for (const auto& [key, value] : data.meta) {
    if (key == "format" || key == "format_version") c.fail("meta key '" + key + "' is reserved");
    if (data.ints.count(key)) c.fail("key '" + key + "' is in both meta and ints");
  }
  for (const auto& [key, value] : data.ints)
    if (key == "format" || key == "format_version") c.fail("ints key '" + key + "' is reserved");
  write_string_attr(c, root.get(), "/", "format", kCheckpointFormat);
  write_int_attr(c, root.get(), "/", "format_version", kCheckpointVersion);
  for (const auto& [key, value] : data.meta) write_string_attr(c, root.get(), "/", key, value);
  for (const auto& [key, value] : data.ints) write_int_attr(c, root.get(), "/", key, value);

  write_string_dataset(c, file, "config", "/config", data.config_yaml);

  // Parameters: /params/<dotted name>.
  {
    Handle params = create_ordered_group(c, file, "params", "/params");
    std::set<std::string> seen;
    for (std::size_t i = 0; i < data.params.size(); ++i) {
      const auto& [name, tensor] = data.params[i];
      check_link_name(c, "parameter", name, name);
      if (!seen.insert(name).second) c.fail("duplicate parameter name '" + name + "'");
      write_tensor(c, params.get(), name, "/params/" + name, tensor, static_cast<int64_t>(i));
    }
  }

  // Optimizer state: "slot/name" -> /optimizer/slot/name (any depth).
  {
    Handle opt = create_ordered_group(c, file, "optimizer", "/optimizer");
    std::map<std::string, Handle> groups;  // relative group path -> handle
    std::set<std::string> seen;
    for (std::size_t i = 0; i < data.optimizer_state.size(); ++i) {
      const auto& [name, tensor] = data.optimizer_state[i];
      if (!seen.insert(name).second) c.fail("duplicate optimizer state name '" + name + "'");
      std::vector<std::string> parts;
      for (std::size_t start = 0;;) {
        const std::size_t slash = name.find('/', start);
        parts.push_back(name.substr(start, slash == std::string::npos ? std::string::npos : slash - start));
        if (slash == std::string::npos) break;
        start = slash + 1;
      }
      for (const std::string& part : parts) check_link_name(c, "optimizer state", name, part);
      if (parts.size() > kMaxGroupDepth) c.fail("optimizer state name '" + name + "' is nested too deeply");
      hid_t loc = opt.get();
      std::string rel;
      for (std::size_t k = 0; k + 1 < parts.size(); ++k) {
        rel += (k ? "/" : "") + parts[k];
        auto it = groups.find(rel);
        if (it == groups.end())
          it = groups.emplace(rel, create_ordered_group(c, loc, parts[k], "/optimizer/" + rel)).first;
        loc = it->second.get();
      }
      write_tensor(c, loc, parts.back(), "/optimizer/" + name, tensor, static_cast<int64_t>(i));
    }
  }

  // Generators: /rng/<name> = uint64 [seed, offset].
  {
    Handle rng = create_ordered_group(c, file, "rng", "/rng");
    for (const auto& [name, state] : data.rng) {
      check_link_name(c, "rng", name, name);
      const std::string where = "/rng/" + name;
      Handle space = simple_space(c, where, {2});
      Handle dset =
          c.id(H5Dcreate2(rng.get(), name.c_str(), H5T_STD_U64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
               H5Dclose, where + ": cannot create dataset");
      const uint64_t v[2] = {state.first, state.second};
      c.ok(H5Dwrite(dset.get(), H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), where + ": cannot write dataset");
    }
  }

  // Tokenizer: uint8 [n] with attribute kind.
  {
    const std::string where = "/tokenizer";
    Handle space = simple_space(c, where, {static_cast<int64_t>(data.tokenizer_blob.size())});
    Handle dset = c.id(H5Dcreate2(file, "tokenizer", H5T_STD_U8LE, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                       H5Dclose, where + ": cannot create dataset");
    if (!data.tokenizer_blob.empty())
      c.ok(H5Dwrite(dset.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.tokenizer_blob.data()),
           where + ": cannot write dataset");
    write_string_attr(c, dset.get(), where, "kind", data.tokenizer_kind);
  }

  write_string_dataset(c, file, "metrics", "/metrics", data.metrics_jsonl);
}

}  // namespace

void save_checkpoint(const std::string& path, const CheckpointData& data) {
  quiet_hdf5();
  const Hdf5Context c{path, 0};
  AtomicReplace file(path);  // the temporary next to the target, removed unless committed
  const std::string& tmp = file.temp_path();

  // HDF5 builds the file in memory (the core driver, no backing store) and
  // this code writes it out with checked POSIX calls. HDF5 never touches
  // the disk, so a full disk or any I/O error is an errno here, every HDF5
  // handle closes cleanly on every path, and no half-closed HDF5 file is
  // left for the library's exit-time cleanup (which crashed when HDF5 hit
  // ENOSPC writing the file itself).
  {
    Handle fcpl = c.id(H5Pcreate(H5P_FILE_CREATE), H5Pclose, "cannot create a file creation property list");
    c.ok(H5Pset_userblock(fcpl.get(), kUserBlock), "cannot set the user block size");
    Handle fapl = file_access_plist(c);
    c.ok(H5Pset_fapl_core(fapl.get(), std::size_t{4} << 20, /*backing_store=*/0), "cannot select the in-memory driver");
    Handle h5 = c.id(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get()), H5Fclose,
                     "cannot create HDF5 file '" + tmp + "'");
    write_contents(c, h5.get(), data);
    c.ok(H5Fflush(h5.get(), H5F_SCOPE_LOCAL), "cannot flush '" + tmp + "'");
    // The core driver's buffer is the whole file from byte 0 (user block
    // included); its length is the superblock's end-of-file address (version
    // 2/3 superblock at the user block's end, EOF field at offset 28), which
    // must equal the image HDF5 reports (user block excluded) plus the user block.
    // (H5Fget_file_image itself is not used: with a user block it corrupts
    // the superblock of its copy in HDF5 1.10.)
    void* vfd = nullptr;
    hsize_t buffer_len = 0;
    if (H5Fget_vfd_handle(h5.get(), H5P_DEFAULT, &vfd) < 0 || !vfd || H5Fget_filesize(h5.get(), &buffer_len) < 0)
      c.fail_h5("cannot reach the in-memory file");
    const unsigned char* mem = *static_cast<unsigned char**>(vfd);
    const ssize_t image = H5Fget_file_image(h5.get(), nullptr, 0);
    if (!mem || buffer_len < kUserBlock + 48 || std::memcmp(mem + kUserBlock, kHdf5Signature, 8) != 0 ||
        (mem[kUserBlock + 8] != 2 && mem[kUserBlock + 8] != 3))
      c.fail("unexpected in-memory HDF5 layout (superblock not found after the user block)");
    const uint64_t size = load_le64(mem + kUserBlock + 28);
    if (image < 0 || size != static_cast<uint64_t>(image) + kUserBlock || size > buffer_len)
      c.fail("unexpected in-memory HDF5 layout (end of file " + std::to_string(size) + ", image " +
             std::to_string(image) + ")");
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
    if (fd.get() < 0) c.fail("cannot open temporary file '" + tmp + "': " + errno_text(errno));
    if (!write_full(fd.get(), mem, static_cast<std::size_t>(size)))
      c.fail("cannot write temporary file '" + tmp + "': " + errno_text(errno));
    if (const int err = fd.close()) c.fail("cannot write temporary file '" + tmp + "': " + errno_text(err));
    if (h5.close() < 0) c.fail_h5("cannot close '" + tmp + "'");
  }
  write_integrity_header(c, tmp);
  file.commit();
}

}  // namespace tfm::train
