// Reading checkpoints (layout in checkpoint.h, details in
// docs/checkpoint-format.md).
//
// Every HDF5 call goes through the C API on the calling thread, with the
// library's own error printing switched off; failures become tfm::Error
// naming the file, the object and the reason. Files with the integrity
// header (checkpoint_integrity.h) are verified before HDF5 parses them;
// files without it (written by other HDF5 tools) are still loaded, relying
// on the per-dataset validation alone: every shape is checked against the
// file size before anything is allocated.
#include "train/checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>

#include "core/error.h"
#include "train/checkpoint_integrity.h"
#include "train/hdf5_raii.h"
#include "train/posix_file.h"

namespace tfm::train {
namespace {

using core::Shape;
using core::Tensor;

constexpr int kMaxGroupDepth = 8;

struct Link {
  std::string name;
  bool is_group = false;
};

// The hard links of a group (creation order when the group tracks it, else
// name order), each classified as group or dataset.
std::vector<Link> list_links(const Hdf5Context& c, hid_t group, const std::string& where) {
  Handle gcpl = c.id(H5Gget_create_plist(group), H5Pclose, where + ": cannot read group properties");
  unsigned order_flags = 0;
  c.ok(H5Pget_link_creation_order(gcpl.get(), &order_flags), where + ": cannot read group properties");
  const bool by_creation = (order_flags & H5P_CRT_ORDER_TRACKED) && (order_flags & H5P_CRT_ORDER_INDEXED);

  struct Collected {
    std::vector<std::string> names;
    bool non_hard = false;
    std::string bad;
  } col;
  c.ok(H5Literate(
           group, by_creation ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME, H5_ITER_INC, nullptr,
           [](hid_t, const char* name, const H5L_info_t* info, void* data) noexcept -> herr_t {
             auto* col = static_cast<Collected*>(data);
             try {
               if (info->type != H5L_TYPE_HARD) {
                 col->non_hard = true;
                 col->bad = name;
                 return 1;  // stop
               }
               col->names.emplace_back(name);
             } catch (...) {
               return -1;
             }
             return 0;
           },
           &col),
       where + ": cannot list group members");
  if (col.non_hard) c.fail(path_join(where, col.bad) + ": soft and external links are not supported");

  std::vector<Link> links;
  links.reserve(col.names.size());
  for (std::string& name : col.names) {
    Handle obj =
        c.id(H5Oopen(group, name.c_str(), H5P_DEFAULT), H5Oclose, path_join(where, name) + ": cannot open object");
    const H5I_type_t kind = H5Iget_type(obj.get());
    if (kind != H5I_GROUP && kind != H5I_DATASET)
      c.fail(path_join(where, name) + ": expected a dataset or group (found a named datatype or unknown object)");
    links.push_back({std::move(name), kind == H5I_GROUP});
  }
  return links;
}

Handle open_group(const Hdf5Context& c, hid_t loc, const std::string& name, const std::string& where) {
  Handle obj = c.id(H5Oopen(loc, name.c_str(), H5P_DEFAULT), H5Oclose, where + ": cannot open object");
  if (H5Iget_type(obj.get()) != H5I_GROUP) c.fail(where + ": expected a group");
  return c.id(H5Gopen2(loc, name.c_str(), H5P_DEFAULT), H5Gclose, where + ": cannot open group");
}

Handle open_dataset(const Hdf5Context& c, hid_t loc, const std::string& name, const std::string& where) {
  Handle obj = c.id(H5Oopen(loc, name.c_str(), H5P_DEFAULT), H5Oclose, where + ": cannot open object");
  if (H5Iget_type(obj.get()) != H5I_DATASET) c.fail(where + ": expected a dataset");
  return c.id(H5Dopen2(loc, name.c_str(), H5P_DEFAULT), H5Dclose, where + ": cannot open dataset");
}

// Shape of a dataspace, validated: scalar or simple, rank <= 32, every
// extent representable as int64 and the element count bounded.
Shape read_shape(const Hdf5Context& c, hid_t space, const std::string& where) {
  const H5S_class_t cls = H5Sget_simple_extent_type(space);
  if (cls == H5S_SCALAR) return {};
  if (cls != H5S_SIMPLE) c.fail(where + ": unsupported dataspace (null or invalid)");
  const int nd = H5Sget_simple_extent_ndims(space);
  if (nd < 0 || nd > H5S_MAX_RANK) c.fail(where + ": invalid rank " + std::to_string(nd));
  hsize_t dims[H5S_MAX_RANK] = {};
  if (H5Sget_simple_extent_dims(space, dims, nullptr) < 0) c.fail_h5(where + ": cannot read dataspace extents");
  Shape shape;
  uint64_t span = 1;  // product of the non-zero extents
  constexpr uint64_t kSpanLimit = uint64_t{1} << 62;
  for (int d = 0; d < nd; ++d) {
    if (dims[d] > static_cast<hsize_t>(std::numeric_limits<int64_t>::max()))
      c.fail(where + ": dimension " + std::to_string(d) + " has an invalid extent " + std::to_string(dims[d]));
    if (dims[d] > 0) {
      if (span > kSpanLimit / dims[d]) c.fail(where + ": shape is absurdly large (damaged file?)");
      span *= dims[d];
    }
    shape.push_back(static_cast<int64_t>(dims[d]));
  }
  return shape;
}

uint64_t element_count(const Shape& s) {
  uint64_t n = 1;
  for (int64_t d : s) n *= static_cast<uint64_t>(d);  // bounded by read_shape
  return n;
}

// Rejects a dataset whose contents could not possibly be stored in the file,
// before anything is allocated for it. Every dataset we write is stored in
// full, so the datasets of one file must also fit together.
void check_fits_file(const Hdf5Context& c, const std::string& where, const Shape& shape, uint64_t elem_bytes) {
  const uint64_t n = element_count(shape);
  if (n > c.file_size / elem_bytes)  // n * elem_bytes > file size, without overflow
    c.fail(where + ": shape " + core::shape_str(shape) + " needs more bytes than the whole file holds (" +
           std::to_string(c.file_size) + " bytes; damaged file?)");
  if (n * elem_bytes > c.file_size - c.data_bytes)
    c.fail(where + ": the datasets read so far need more bytes than the whole file holds (" +
           std::to_string(c.file_size) + " bytes; damaged file?)");
  c.data_bytes += n * elem_bytes;
}

// A scalar string attribute or dataset (fixed-length or variable-length).
std::string read_string(const Hdf5Context& c, hid_t obj, bool is_attr, const std::string& where) {
  Handle type = c.id(is_attr ? H5Aget_type(obj) : H5Dget_type(obj), H5Tclose, where + ": cannot read type");
  if (H5Tget_class(type.get()) != H5T_STRING) c.fail(where + ": expected a string, found " + type_desc(type.get()));
  Handle space = c.id(is_attr ? H5Aget_space(obj) : H5Dget_space(obj), H5Sclose, where + ": cannot read dataspace");
  if (H5Sget_simple_extent_npoints(space.get()) != 1) c.fail(where + ": expected a single string");
  const htri_t vlen = H5Tis_variable_str(type.get());
  if (vlen < 0) c.fail_h5(where + ": cannot inspect string type");
  auto read = [&](hid_t mem, void* buf) {
    return is_attr ? H5Aread(obj, mem, buf) : H5Dread(obj, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
  };
  if (vlen > 0) {
    Handle mem = c.id(H5Tcopy(H5T_C_S1), H5Tclose, where + ": cannot create string type");
    c.ok(H5Tset_size(mem.get(), H5T_VARIABLE), where + ": cannot create string type");
    const H5T_cset_t cset = H5Tget_cset(type.get());
    if (cset < 0) c.fail_h5(where + ": cannot read character set");
    c.ok(H5Tset_cset(mem.get(), cset), where + ": cannot create string type");
    char* p = nullptr;
    c.ok(read(mem.get(), &p), where + ": cannot read string");
    struct Reclaim {
      hid_t mem, space;
      char** p;
      ~Reclaim() { H5Dvlen_reclaim(mem, space, H5P_DEFAULT, p); }
    } reclaim{mem.get(), space.get(), &p};
    return p ? std::string(p) : std::string();
  }
  const std::size_t n = H5Tget_size(type.get());
  if (n == 0) c.fail(where + ": invalid string type of size 0");
  check_fits_file(c, where, {static_cast<int64_t>(n)}, 1);  // n is at most 2^32 (4-byte size field)
  std::string buf(n, '\0');
  c.ok(read(type.get(), buf.data()), where + ": cannot read string");
  buf.resize(std::strlen(buf.c_str()));  // NUL padded / terminated
  return buf;
}

int64_t read_int_attr(const Hdf5Context& c, hid_t attr, const std::string& where) {
  Handle type = c.id(H5Aget_type(attr), H5Tclose, where + ": cannot read type");
  if (H5Tget_class(type.get()) != H5T_INTEGER) c.fail(where + ": expected an integer, found " + type_desc(type.get()));
  Handle space = c.id(H5Aget_space(attr), H5Sclose, where + ": cannot read dataspace");
  if (H5Sget_simple_extent_npoints(space.get()) != 1) c.fail(where + ": expected a single integer");
  int64_t v = 0;
  c.ok(H5Aread(attr, H5T_NATIVE_INT64, &v), where + ": cannot read attribute");
  return v;
}

std::string read_string_attr_of(const Hdf5Context& c, hid_t obj, const std::string& name, const std::string& where) {
  Handle attr = c.id(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose, where + ": cannot open attribute");
  return read_string(c, attr.get(), true, where);
}

std::optional<int64_t> read_index_attr(const Hdf5Context& c, hid_t dset, const std::string& where) {
  const htri_t has = H5Aexists(dset, "index");
  if (has < 0) c.fail_h5(where + ": cannot look up attribute 'index'");
  if (has == 0) return std::nullopt;
  Handle attr = c.id(H5Aopen(dset, "index", H5P_DEFAULT), H5Aclose, where + ": cannot open attribute 'index'");
  return read_int_attr(c, attr.get(), where + " attribute 'index'");
}

struct LoadedTensor {
  std::string name;
  Tensor tensor;
  std::optional<int64_t> index;
};

LoadedTensor read_tensor(const Hdf5Context& c, hid_t loc, const std::string& link, const std::string& name,
                         const std::string& where) {
  Handle dset = open_dataset(c, loc, link, where);
  Handle type = c.id(H5Dget_type(dset.get()), H5Tclose, where + ": cannot read type");
  if (H5Tget_class(type.get()) != H5T_FLOAT || H5Tget_size(type.get()) != 4)
    c.fail(where + ": expected float32 data, found " + type_desc(type.get()));
  Handle space = c.id(H5Dget_space(dset.get()), H5Sclose, where + ": cannot read dataspace");
  const Shape shape = read_shape(c, space.get(), where);
  check_fits_file(c, where, shape, 4);
  Tensor t = core::empty(shape);
  if (t.numel() > 0)
    c.ok(H5Dread(dset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data<float>()),
         where + ": cannot read data");
  return {name, std::move(t), read_index_attr(c, dset.get(), where)};
}

// Puts tensors in saved order using their `index` attributes; keeps the
// iteration order when no tensor has one (files written by other tools).
std::vector<std::pair<std::string, Tensor>> in_saved_order(const Hdf5Context& c, std::vector<LoadedTensor> items,
                                                           const std::string& where) {
  const std::size_t with_index = static_cast<std::size_t>(
      std::count_if(items.begin(), items.end(), [](const LoadedTensor& t) { return t.index.has_value(); }));
  if (with_index > 0) {
    if (with_index != items.size()) c.fail(where + ": some datasets lack the 'index' attribute (damaged file?)");
    std::vector<LoadedTensor*> slots(items.size(), nullptr);
    for (LoadedTensor& t : items) {
      const int64_t i = *t.index;
      if (i < 0 || static_cast<uint64_t>(i) >= items.size() || slots[static_cast<std::size_t>(i)])
        c.fail(where + ": 'index' attributes are not a permutation of 0.." + std::to_string(items.size() - 1) +
               " (damaged file?)");
      slots[static_cast<std::size_t>(i)] = &t;
    }
    std::vector<std::pair<std::string, Tensor>> out;
    out.reserve(items.size());
    for (LoadedTensor* t : slots) out.emplace_back(std::move(t->name), std::move(t->tensor));
    return out;
  }
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(items.size());
  for (LoadedTensor& t : items) out.emplace_back(std::move(t.name), std::move(t.tensor));
  return out;
}

void read_optimizer_group(const Hdf5Context& c, hid_t group, const std::string& where, const std::string& prefix, int depth,
                          std::vector<LoadedTensor>& out) {
  if (depth > kMaxGroupDepth) c.fail(where + ": groups nested too deeply");
  for (const Link& link : list_links(c, group, where)) {
    const std::string child = path_join(where, link.name);
    if (link.is_group) {
      Handle sub = open_group(c, group, link.name, child);
      read_optimizer_group(c, sub.get(), child, prefix + link.name + "/", depth + 1, out);
    } else {
      out.push_back(read_tensor(c, group, link.name, prefix + link.name, child));
    }
  }
}

// Checks the root attributes format / format_version.
void check_format(const Hdf5Context& c, hid_t root) {
  const htri_t has_format = H5Aexists(root, "format");
  if (has_format < 0) c.fail_h5("cannot read the root attributes");
  if (has_format == 0) c.fail("not a tfm checkpoint (no format attribute)");
  Handle fattr = c.id(H5Aopen(root, "format", H5P_DEFAULT), H5Aclose, "cannot open the format attribute");
  Handle ftype = c.id(H5Aget_type(fattr.get()), H5Tclose, "cannot read the format attribute");
  if (H5Tget_class(ftype.get()) != H5T_STRING) c.fail("not a tfm checkpoint (format attribute is not a string)");
  const std::string format = read_string(c, fattr.get(), true, "format attribute");
  if (format != kCheckpointFormat) c.fail("not a tfm checkpoint (format attribute is '" + format + "')");

  const htri_t has_version = H5Aexists(root, "format_version");
  if (has_version < 0) c.fail_h5("cannot read the root attributes");
  if (has_version == 0) c.fail("damaged tfm checkpoint (no format_version attribute)");
  Handle vattr =
      c.id(H5Aopen(root, "format_version", H5P_DEFAULT), H5Aclose, "cannot open the format_version attribute");
  const int64_t version = read_int_attr(c, vattr.get(), "format_version attribute");
  if (version < 1) c.fail("invalid checkpoint format version " + std::to_string(version));
  if (version > kCheckpointVersion)
    c.fail("checkpoint format version " + std::to_string(version) + " is newer than this tfm supports (" +
           std::to_string(kCheckpointVersion) + ")");
}

// Opens `path` for reading, fills c.file_size and the first bytes of the file.
Fd open_for_read(Hdf5Context& c, unsigned char* head, std::size_t head_cap, std::size_t& head_len) {
  Fd fd(::open(c.path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) c.fail("no such file");
    c.fail("cannot open: " + errno_text(errno));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) c.fail("cannot stat: " + errno_text(errno));
  if (S_ISDIR(st.st_mode)) c.fail("is a directory, not a checkpoint file");
  if (!S_ISREG(st.st_mode)) c.fail("not a regular file");
  c.file_size = static_cast<uint64_t>(st.st_size);
  const ssize_t got = pread_full(fd.get(), head, head_cap, 0);
  if (got < 0) c.fail("read error: " + errno_text(errno));
  head_len = static_cast<std::size_t>(got);
  return fd;
}

Handle open_hdf5(const Hdf5Context& c) {
  Handle fapl = file_access_plist(c);
  const hid_t f = H5Fopen(c.path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (f < 0) c.fail_h5("cannot open as HDF5 file");
  return Handle(f, H5Fclose);
}

}  // namespace

namespace {

// What identifies the file now at `path` (device, inode, size, mtime); all
// zero when it cannot be stat'ed.
std::array<int64_t, 5> file_identity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return {static_cast<int64_t>(st.st_dev), static_cast<int64_t>(st.st_ino), static_cast<int64_t>(st.st_size),
          static_cast<int64_t>(st.st_mtim.tv_sec), static_cast<int64_t>(st.st_mtim.tv_nsec)};
}

CheckpointData load_checkpoint_once(const std::string& path) {
  quiet_hdf5();
  Hdf5Context c{path, 0};
  unsigned char head[kUserBlock + 8] = {};
  std::size_t head_len = 0;
  Fd fd = open_for_read(c, head, sizeof(head), head_len);
  switch (sniff(head, head_len)) {
    case FileKind::tfm_header:
      verify_integrity_header(c, fd.get(), head);
      break;
    case FileKind::plain_hdf5:
      break;  // written by another tool: no checksum, rely on validation
    case FileKind::damaged_header:
      c.fail("damaged checkpoint header (bad magic)");
    case FileKind::not_hdf5:
      c.fail("not an HDF5 file");
  }

  Handle file = open_hdf5(c);
  {
    // The file HDF5 opened must be the one just verified (not a replacement
    // renamed into place in between).
    void* vfd = nullptr;
    struct stat a {
    }, b{};
    if (H5Fget_vfd_handle(file.get(), H5P_DEFAULT, &vfd) < 0 || !vfd) c.fail_h5("cannot inspect the open file");
    if (::fstat(fd.get(), &a) != 0 || ::fstat(*static_cast<int*>(vfd), &b) != 0 || a.st_ino != b.st_ino ||
        a.st_dev != b.st_dev || a.st_size != b.st_size)
      c.fail("file changed while loading (replaced by a concurrent save?)");
  }
  fd.close();

  Handle root = c.id(H5Gopen2(file.get(), "/", H5P_DEFAULT), H5Gclose, "cannot open the root group");
  check_format(c, root.get());

  CheckpointData data;
  {
    std::vector<std::string> names;
    c.ok(H5Aiterate2(
             root.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr,
             [](hid_t, const char* name, const H5A_info_t*, void* d) noexcept -> herr_t {
               try {
                 static_cast<std::vector<std::string>*>(d)->emplace_back(name);
               } catch (...) {
                 return -1;
               }
               return 0;
             },
             &names),
         "cannot list the root attributes");
    for (const std::string& name : names) {
      if (name == "format" || name == "format_version") continue;
      const std::string where = "root attribute '" + name + "'";
      Handle attr = c.id(H5Aopen(root.get(), name.c_str(), H5P_DEFAULT), H5Aclose, where + ": cannot open");
      Handle type = c.id(H5Aget_type(attr.get()), H5Tclose, where + ": cannot read type");
      switch (H5Tget_class(type.get())) {
        case H5T_STRING:
          data.meta[name] = read_string(c, attr.get(), true, where);
          break;
        case H5T_INTEGER:
          data.ints[name] = read_int_attr(c, attr.get(), where);
          break;
        default:
          c.fail(where + ": expected a string or integer, found " + type_desc(type.get()));
      }
    }
  }

  if (c.exists(root.get(), "config", "/config")) {
    Handle dset = open_dataset(c, root.get(), "config", "/config");
    data.config_yaml = read_string(c, dset.get(), false, "/config");
  }

  if (!c.exists(root.get(), "params", "/params")) c.fail("missing /params group");
  {
    Handle params = open_group(c, root.get(), "params", "/params");
    std::vector<LoadedTensor> items;
    for (const Link& link : list_links(c, params.get(), "/params")) {
      const std::string where = "/params/" + link.name;
      if (link.is_group) c.fail(where + ": expected a dataset, found a group");
      items.push_back(read_tensor(c, params.get(), link.name, link.name, where));
    }
    data.params = in_saved_order(c, std::move(items), "/params");
  }

  if (c.exists(root.get(), "optimizer", "/optimizer")) {
    Handle opt = open_group(c, root.get(), "optimizer", "/optimizer");
    std::vector<LoadedTensor> items;
    read_optimizer_group(c, opt.get(), "/optimizer", "", 1, items);
    data.optimizer_state = in_saved_order(c, std::move(items), "/optimizer");
  }

  if (c.exists(root.get(), "rng", "/rng")) {
    Handle rng = open_group(c, root.get(), "rng", "/rng");
    for (const Link& link : list_links(c, rng.get(), "/rng")) {
      const std::string where = "/rng/" + link.name;
      if (link.is_group) c.fail(where + ": expected a dataset, found a group");
      Handle dset = open_dataset(c, rng.get(), link.name, where);
      Handle type = c.id(H5Dget_type(dset.get()), H5Tclose, where + ": cannot read type");
      if (H5Tget_class(type.get()) != H5T_INTEGER || H5Tget_size(type.get()) != 8 ||
          H5Tget_sign(type.get()) != H5T_SGN_NONE)
        c.fail(where + ": expected uint64 data, found " + type_desc(type.get()));
      Handle space = c.id(H5Dget_space(dset.get()), H5Sclose, where + ": cannot read dataspace");
      const Shape shape = read_shape(c, space.get(), where);
      if (shape != Shape{2}) c.fail(where + ": expected shape [2] (seed, offset), found " + core::shape_str(shape));
      uint64_t v[2] = {0, 0};
      c.ok(H5Dread(dset.get(), H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), where + ": cannot read data");
      data.rng[link.name] = {v[0], v[1]};
    }
  }

  if (c.exists(root.get(), "tokenizer", "/tokenizer")) {
    const std::string where = "/tokenizer";
    Handle dset = open_dataset(c, root.get(), "tokenizer", where);
    Handle type = c.id(H5Dget_type(dset.get()), H5Tclose, where + ": cannot read type");
    if (H5Tget_class(type.get()) != H5T_INTEGER || H5Tget_size(type.get()) != 1)
      c.fail(where + ": expected uint8 data, found " + type_desc(type.get()));
    Handle space = c.id(H5Dget_space(dset.get()), H5Sclose, where + ": cannot read dataspace");
    const Shape shape = read_shape(c, space.get(), where);
    if (shape.size() != 1) c.fail(where + ": expected a 1-d byte array, found shape " + core::shape_str(shape));
    check_fits_file(c, where, shape, 1);
    data.tokenizer_blob.resize(static_cast<std::size_t>(shape[0]));
    if (!data.tokenizer_blob.empty())
      c.ok(H5Dread(dset.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.tokenizer_blob.data()),
           where + ": cannot read data");
    const htri_t has_kind = H5Aexists(dset.get(), "kind");
    if (has_kind < 0) c.fail_h5(where + ": cannot look up attribute 'kind'");
    if (has_kind > 0) data.tokenizer_kind = read_string_attr_of(c, dset.get(), "kind", where + " attribute 'kind'");
  }

  if (c.exists(root.get(), "metrics", "/metrics")) {
    Handle dset = open_dataset(c, root.get(), "metrics", "/metrics");
    data.metrics_jsonl = read_string(c, dset.get(), false, "/metrics");
  }

  root.reset();
  if (file.close() < 0) c.fail_h5("cannot close the file");
  return data;
}

}  // namespace

CheckpointData load_checkpoint(const std::string& path) {
  const auto before = file_identity(path);
  try {
    return load_checkpoint_once(path);
  } catch (const Error&) {
    // A training run saving into the same directory renames a new file over
    // the path (and retires old numbered ones) while we read: when the file
    // at the path is no longer the one we started with, read it once more.
    if (file_identity(path) == before) throw;
  }
  return load_checkpoint_once(path);
}

bool is_checkpoint(const std::string& path) {
  try {
    quiet_hdf5();
    Hdf5Context c{path, 0};
    unsigned char head[kUserBlock + 8] = {};
    std::size_t head_len = 0;
    Fd fd = open_for_read(c, head, sizeof(head), head_len);
    const FileKind kind = sniff(head, head_len);
    if (kind == FileKind::tfm_header) {
      // Written by save_checkpoint, which always sets format = "tfm-checkpoint":
      // the header (known version, recorded length = file size, HDF5
      // signature after the user block) is the cheap proof. HDF5 is not asked
      // to parse the file: the checksum is not verified here, and HDF5 1.10
      // leaks memory when it meets damaged metadata.
      return header_is_plausible(head, c.file_size);
    }
    if (kind != FileKind::plain_hdf5) return false;
    fd.close();
    Handle file = open_hdf5(c);
    Handle root = c.id(H5Gopen2(file.get(), "/", H5P_DEFAULT), H5Gclose, "cannot open the root group");
    if (H5Aexists(root.get(), "format") <= 0) return false;
    return read_string_attr_of(c, root.get(), "format", "format attribute") == kCheckpointFormat;
  } catch (...) {
    H5Eclear2(H5E_DEFAULT);
    return false;
  }
}

}  // namespace tfm::train
