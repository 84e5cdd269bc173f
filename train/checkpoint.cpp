// HDF5 checkpoints (layout in checkpoint.h, details in docs/checkpoint-format.md).
//
// Every HDF5 call goes through the C API on the calling thread, with the
// library's own error printing switched off; failures become tfm::Error
// naming the file, the object and the reason. hid_t handles are owned by
// Handle so nothing leaks when an exception unwinds.
//
// Integrity: a file written here starts with a 512-byte HDF5 user block that
// HDF5 itself ignores. save_checkpoint fills it with a small header (magic,
// length, XXH64 of the rest of the file); load_checkpoint verifies it before
// HDF5 parses a single byte, so truncation and flipped bits are reported as
// errors instead of reaching HDF5's parser or silently changing weights.
// Files without the header (written by other HDF5 tools) are still loaded,
// relying on the per-dataset validation alone.
#include "train/checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>

#include "core/error.h"

namespace tfm::train {
namespace {

using core::Shape;
using core::Tensor;

// ---------------------------------------------------------------- integrity header

constexpr std::size_t kUserBlock = 512;  // HDF5 data starts here in files we write
constexpr unsigned char kMagic[8] = {'T', 'F', 'M', 'C', 'K', 'P', 'T', '\0'};
constexpr unsigned char kHdf5Signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
constexpr uint64_t kHeaderVersion = 1;
// Header layout (little-endian): [0,8) magic, [8,16) XXH64 (seed 0) of bytes
// [16, EOF), [16,24) header version, [24,32) file length, then a text note,
// zero padded to 512 bytes.
constexpr std::size_t kHashOffset = 8;
constexpr std::size_t kHashedFrom = 16;
constexpr char kHeaderNote[] =
    "\ntfm checkpoint: HDF5 file with a 512-byte user block; see docs/checkpoint-format.md\n";
constexpr int kMaxGroupDepth = 8;

uint64_t load_le64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
  return v;
}
uint32_t load_le32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap32(v);
  return v;
}
void store_le64(unsigned char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

// XXH64 (Yann Collet's xxHash, 64-bit variant), streaming.
class Xxh64 {
 public:
  explicit Xxh64(uint64_t seed = 0) : seed_(seed) {
    v_[0] = seed + kP1 + kP2;
    v_[1] = seed + kP2;
    v_[2] = seed;
    v_[3] = seed - kP1;
  }
  void update(const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    total_ += n;
    if (buffered_ > 0) {
      const std::size_t take = std::min<std::size_t>(32 - buffered_, n);
      std::memcpy(buf_ + buffered_, p, take);
      buffered_ += take;
      p += take;
      n -= take;
      if (buffered_ < 32) return;
      stripe(buf_);
      buffered_ = 0;
    }
    for (; n >= 32; p += 32, n -= 32) stripe(p);
    if (n > 0) {
      std::memcpy(buf_, p, n);
      buffered_ = n;
    }
  }
  uint64_t digest() const {
    uint64_t h;
    if (total_ >= 32) {
      h = rotl(v_[0], 1) + rotl(v_[1], 7) + rotl(v_[2], 12) + rotl(v_[3], 18);
      for (uint64_t v : v_) h = (h ^ round(0, v)) * kP1 + kP4;
    } else {
      h = seed_ + kP5;
    }
    h += total_;
    const unsigned char* p = buf_;
    std::size_t n = buffered_;
    for (; n >= 8; p += 8, n -= 8) h = rotl(h ^ round(0, load_le64(p)), 27) * kP1 + kP4;
    if (n >= 4) {
      h = rotl(h ^ (static_cast<uint64_t>(load_le32(p)) * kP1), 23) * kP2 + kP3;
      p += 4;
      n -= 4;
    }
    for (; n > 0; ++p, --n) h = rotl(h ^ (*p * kP5), 11) * kP1;
    h ^= h >> 33;
    h *= kP2;
    h ^= h >> 29;
    h *= kP3;
    h ^= h >> 32;
    return h;
  }

 private:
  static constexpr uint64_t kP1 = 0x9E3779B185EBCA87ULL, kP2 = 0xC2B2AE3D27D4EB4FULL, kP3 = 0x165667B19E3779F9ULL,
                            kP4 = 0x85EBCA77C2B2AE63ULL, kP5 = 0x27D4EB2F165667C5ULL;
  static uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
  static uint64_t round(uint64_t acc, uint64_t in) { return rotl(acc + in * kP2, 31) * kP1; }
  void stripe(const unsigned char* p) {
    for (int i = 0; i < 4; ++i) v_[i] = round(v_[i], load_le64(p + 8 * i));
  }
  uint64_t seed_;
  uint64_t v_[4];
  uint64_t total_ = 0;
  unsigned char buf_[32] = {};
  std::size_t buffered_ = 0;
};

// ---------------------------------------------------------------- POSIX helpers

std::string errno_text(int err) { return std::strerror(err); }

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now and reports close(2)'s errno (0 on success).
  int close() {
    int err = 0;
    if (fd_ >= 0 && ::close(fd_) != 0) err = errno;
    fd_ = -1;
    return err;
  }

 private:
  int fd_;
};

// pread that retries on EINTR and short reads; returns bytes read or -1 (errno set).
ssize_t pread_full(int fd, void* buf, std::size_t n, off_t off) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, static_cast<char*>(buf) + done, n - done, off + static_cast<off_t>(done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    done += static_cast<std::size_t>(r);
  }
  return static_cast<ssize_t>(done);
}

bool pwrite_full(int fd, const void* buf, std::size_t n, off_t off) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pwrite(fd, static_cast<const char*>(buf) + done, n - done, off + static_cast<off_t>(done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<std::size_t>(r);
  }
  return true;
}

// ---------------------------------------------------------------- HDF5 helpers

// Switches off HDF5's automatic error printing (per thread in thread-safe builds).
void quiet_hdf5() {
  thread_local const bool quiet = (H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr), true);
  (void)quiet;
}

// The innermost message of HDF5's error stack (then clears the stack).
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
struct Ctx {
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

Handle file_access_plist(const Ctx& c) {
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

// ---------------------------------------------------------------- writing

void check_no_nul(const Ctx& c, const std::string& where, const std::string& s) {
  if (s.find('\0') != std::string::npos)
    c.fail(where + ": string contains a NUL byte, which a checkpoint string cannot hold");
}

// One component of an HDF5 path: non-empty, no '/', not ".".
void check_link_name(const Ctx& c, const std::string& kind, const std::string& full, const std::string& component) {
  if (component.empty()) c.fail("invalid " + kind + " name '" + full + "': empty name or empty path component");
  if (component == ".") c.fail("invalid " + kind + " name '" + full + "': '.' is not a valid HDF5 link name");
  if (component.find('/') != std::string::npos) c.fail("invalid " + kind + " name '" + full + "': contains '/'");
  if (component.find('\0') != std::string::npos)
    c.fail("invalid " + kind + " name '" + full + "': contains a NUL byte");
}

// Fixed-length UTF-8 string type of `len` bytes (at least 1; NUL padded).
Handle string_type(const Ctx& c, const std::string& where, std::size_t len) {
  if (len >= (std::size_t{1} << 32) - 1)
    c.fail(where + ": string of " + std::to_string(len) + " bytes is too long (limit 4 GiB)");
  Handle t = c.id(H5Tcopy(H5T_C_S1), H5Tclose, where + ": cannot create string type");
  c.ok(H5Tset_size(t.get(), std::max<std::size_t>(1, len)), where + ": cannot size string type");
  c.ok(H5Tset_strpad(t.get(), H5T_STR_NULLPAD), where + ": cannot set string padding");
  c.ok(H5Tset_cset(t.get(), H5T_CSET_UTF8), where + ": cannot set string character set");
  return t;
}

void write_string_attr(const Ctx& c, hid_t obj, const std::string& obj_path, const std::string& name,
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

void write_int_attr(const Ctx& c, hid_t obj, const std::string& obj_path, const std::string& name, int64_t value) {
  const std::string where = obj_path + " attribute '" + name + "'";
  if (name.empty()) c.fail(obj_path + ": empty attribute name");
  check_no_nul(c, where, name);
  Handle space = c.id(H5Screate(H5S_SCALAR), H5Sclose, where + ": cannot create dataspace");
  Handle attr = c.id(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                     where + ": cannot create attribute");
  c.ok(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), where + ": cannot write attribute");
}

void write_string_dataset(const Ctx& c, hid_t loc, const std::string& name, const std::string& where,
                          const std::string& value) {
  check_no_nul(c, where, value);
  Handle type = string_type(c, where, value.size());
  Handle space = c.id(H5Screate(H5S_SCALAR), H5Sclose, where + ": cannot create dataspace");
  Handle dset = c.id(H5Dcreate2(loc, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                     H5Dclose, where + ": cannot create dataset");
  c.ok(H5Dwrite(dset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, value.c_str()),
       where + ": cannot write dataset");
}

Handle simple_space(const Ctx& c, const std::string& where, const Shape& shape) {
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
void write_tensor(const Ctx& c, hid_t loc, const std::string& name, const std::string& where, const Tensor& t,
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
Handle create_ordered_group(const Ctx& c, hid_t loc, const std::string& name, const std::string& where) {
  Handle gcpl = c.id(H5Pcreate(H5P_GROUP_CREATE), H5Pclose, where + ": cannot create a group property list");
  c.ok(H5Pset_link_creation_order(gcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED),
       where + ": cannot track creation order");
  return c.id(H5Gcreate2(loc, name.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), H5Gclose,
              where + ": cannot create group");
}

void write_contents(const Ctx& c, hid_t file, const CheckpointData& data) {
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

// Fills the user block of the closed temporary file with the integrity
// header and makes the file durable.
void finish_file(const Ctx& c, const std::string& tmp) {
  Fd fd(::open(tmp.c_str(), O_RDWR | O_CLOEXEC));
  if (fd.get() < 0) c.fail("cannot reopen temporary file '" + tmp + "': " + errno_text(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) c.fail("cannot stat temporary file '" + tmp + "': " + errno_text(errno));
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < kUserBlock + 8) c.fail("temporary file '" + tmp + "' is unexpectedly short");

  unsigned char header[kUserBlock] = {};
  std::memcpy(header, kMagic, 8);
  store_le64(header + 16, kHeaderVersion);
  store_le64(header + 24, size);
  std::memcpy(header + 32, kHeaderNote, sizeof(kHeaderNote) - 1);

  Xxh64 h;
  h.update(header + kHashedFrom, kUserBlock - kHashedFrom);
  std::vector<unsigned char> buf(std::size_t{1} << 20);
  for (uint64_t off = kUserBlock; off < size;) {
    const std::size_t want = static_cast<std::size_t>(std::min<uint64_t>(buf.size(), size - off));
    const ssize_t got = pread_full(fd.get(), buf.data(), want, static_cast<off_t>(off));
    if (got != static_cast<ssize_t>(want))
      c.fail("cannot read back temporary file '" + tmp + "': " + (got < 0 ? errno_text(errno) : "short read"));
    h.update(buf.data(), want);
    off += want;
  }
  store_le64(header + kHashOffset, h.digest());

  if (!pwrite_full(fd.get(), header, kUserBlock, 0))
    c.fail("cannot write header of temporary file '" + tmp + "': " + errno_text(errno));
  if (::fsync(fd.get()) != 0) c.fail("cannot fsync temporary file '" + tmp + "': " + errno_text(errno));
  if (const int err = fd.close()) c.fail("cannot close temporary file '" + tmp + "': " + errno_text(err));
}

// ---------------------------------------------------------------- reading

// Verifies the integrity header of a file we wrote (head = its first bytes).
void verify_header(const Ctx& c, int fd, const unsigned char* head) {
  const uint64_t version = load_le64(head + 16);
  if (version == 0) c.fail("damaged checkpoint header (header version 0)");
  if (version > kHeaderVersion)
    c.fail("checkpoint header version " + std::to_string(version) + " is newer than this tfm supports (" +
           std::to_string(kHeaderVersion) + ")");
  const uint64_t length = load_le64(head + 24);
  if (length != c.file_size)
    c.fail("file is " + std::to_string(c.file_size) + " bytes but its header records " + std::to_string(length) +
           " (truncated or damaged)");
  Xxh64 h;
  std::vector<unsigned char> buf(std::size_t{1} << 20);
  for (uint64_t off = kHashedFrom; off < c.file_size;) {
    const std::size_t want = static_cast<std::size_t>(std::min<uint64_t>(buf.size(), c.file_size - off));
    const ssize_t got = pread_full(fd, buf.data(), want, static_cast<off_t>(off));
    if (got != static_cast<ssize_t>(want))
      c.fail("read error: " + (got < 0 ? errno_text(errno) : "file shrank while reading"));
    h.update(buf.data(), want);
    off += want;
  }
  if (h.digest() != load_le64(head + kHashOffset)) c.fail("checksum mismatch: the file is damaged");
}

struct Link {
  std::string name;
  bool is_group = false;
};

// The hard links of a group (creation order when the group tracks it, else
// name order), each classified as group or dataset.
std::vector<Link> list_links(const Ctx& c, hid_t group, const std::string& where) {
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

Handle open_group(const Ctx& c, hid_t loc, const std::string& name, const std::string& where) {
  Handle obj = c.id(H5Oopen(loc, name.c_str(), H5P_DEFAULT), H5Oclose, where + ": cannot open object");
  if (H5Iget_type(obj.get()) != H5I_GROUP) c.fail(where + ": expected a group");
  return c.id(H5Gopen2(loc, name.c_str(), H5P_DEFAULT), H5Gclose, where + ": cannot open group");
}

Handle open_dataset(const Ctx& c, hid_t loc, const std::string& name, const std::string& where) {
  Handle obj = c.id(H5Oopen(loc, name.c_str(), H5P_DEFAULT), H5Oclose, where + ": cannot open object");
  if (H5Iget_type(obj.get()) != H5I_DATASET) c.fail(where + ": expected a dataset");
  return c.id(H5Dopen2(loc, name.c_str(), H5P_DEFAULT), H5Dclose, where + ": cannot open dataset");
}

// Shape of a dataspace, validated: scalar or simple, rank <= 32, every
// extent representable as int64 and the element count bounded.
Shape read_shape(const Ctx& c, hid_t space, const std::string& where) {
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
void check_fits_file(const Ctx& c, const std::string& where, const Shape& shape, uint64_t elem_bytes) {
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
std::string read_string(const Ctx& c, hid_t obj, bool is_attr, const std::string& where) {
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

int64_t read_int_attr(const Ctx& c, hid_t attr, const std::string& where) {
  Handle type = c.id(H5Aget_type(attr), H5Tclose, where + ": cannot read type");
  if (H5Tget_class(type.get()) != H5T_INTEGER) c.fail(where + ": expected an integer, found " + type_desc(type.get()));
  Handle space = c.id(H5Aget_space(attr), H5Sclose, where + ": cannot read dataspace");
  if (H5Sget_simple_extent_npoints(space.get()) != 1) c.fail(where + ": expected a single integer");
  int64_t v = 0;
  c.ok(H5Aread(attr, H5T_NATIVE_INT64, &v), where + ": cannot read attribute");
  return v;
}

std::string read_string_attr_of(const Ctx& c, hid_t obj, const std::string& name, const std::string& where) {
  Handle attr = c.id(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose, where + ": cannot open attribute");
  return read_string(c, attr.get(), true, where);
}

std::optional<int64_t> read_index_attr(const Ctx& c, hid_t dset, const std::string& where) {
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

LoadedTensor read_tensor(const Ctx& c, hid_t loc, const std::string& link, const std::string& name,
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
std::vector<std::pair<std::string, Tensor>> in_saved_order(const Ctx& c, std::vector<LoadedTensor> items,
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

void read_optimizer_group(const Ctx& c, hid_t group, const std::string& where, const std::string& prefix, int depth,
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
void check_format(const Ctx& c, hid_t root) {
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

// What the first bytes of a file say about it.
enum class FileKind { tfm_header, plain_hdf5, damaged_header, not_hdf5 };

FileKind sniff(const unsigned char* head, std::size_t n) {
  if (n >= kUserBlock + 8 && std::memcmp(head, kMagic, 8) == 0) return FileKind::tfm_header;
  if (n >= 8 && std::memcmp(head, kHdf5Signature, 8) == 0) return FileKind::plain_hdf5;
  if (n >= kUserBlock + 8 && std::memcmp(head + kUserBlock, kHdf5Signature, 8) == 0) return FileKind::damaged_header;
  return FileKind::not_hdf5;
}

// Opens `path` for reading, fills c.file_size and the first bytes of the file.
Fd open_for_read(Ctx& c, unsigned char* head, std::size_t head_cap, std::size_t& head_len) {
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

Handle open_hdf5(const Ctx& c) {
  Handle fapl = file_access_plist(c);
  const hid_t f = H5Fopen(c.path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (f < 0) c.fail_h5("cannot open as HDF5 file");
  return Handle(f, H5Fclose);
}

}  // namespace

// ---------------------------------------------------------------- public API

void save_checkpoint(const std::string& path, const CheckpointData& data) {
  quiet_hdf5();
  const Ctx c{path, 0};
  const std::filesystem::path target(path);
  const std::string base = target.filename().string();
  if (base.empty() || base == "." || base == "..") c.fail("not a file path");
  std::string dir = target.parent_path().string();
  if (dir.empty()) dir = ".";
  const std::string tmp = (std::filesystem::path(dir) / ("." + base + ".tmp-" + std::to_string(::getpid()))).string();

  Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() < 0) c.fail("cannot open directory '" + dir + "': " + errno_text(errno));

  // Removes the temporary file on every failure path.
  struct TempFile {
    std::string path;
    bool armed = false;
    ~TempFile() {
      if (armed) ::unlink(path.c_str());
    }
  } guard{tmp};
  {
    Fd created(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666));
    if (created.get() < 0) c.fail("cannot create temporary file '" + tmp + "': " + errno_text(errno));
    guard.armed = true;
    if (const int err = created.close()) c.fail("cannot create temporary file '" + tmp + "': " + errno_text(err));
  }

  {
    Handle fcpl = c.id(H5Pcreate(H5P_FILE_CREATE), H5Pclose, "cannot create a file creation property list");
    c.ok(H5Pset_userblock(fcpl.get(), kUserBlock), "cannot set the user block size");
    Handle fapl = file_access_plist(c);
    Handle file = c.id(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get()), H5Fclose,
                       "cannot create HDF5 file '" + tmp + "'");
    write_contents(c, file.get(), data);
    c.ok(H5Fflush(file.get(), H5F_SCOPE_LOCAL), "cannot flush '" + tmp + "'");
    if (file.close() < 0) c.fail_h5("cannot close '" + tmp + "'");
  }
  finish_file(c, tmp);

  if (::rename(tmp.c_str(), path.c_str()) != 0)
    c.fail("cannot rename '" + tmp + "' to the target: " + errno_text(errno));
  guard.armed = false;
  if (::fsync(dir_fd.get()) != 0) c.fail("saved, but cannot fsync directory '" + dir + "': " + errno_text(errno));
}

CheckpointData load_checkpoint(const std::string& path) {
  quiet_hdf5();
  Ctx c{path, 0};
  unsigned char head[kUserBlock + 8] = {};
  std::size_t head_len = 0;
  Fd fd = open_for_read(c, head, sizeof(head), head_len);
  switch (sniff(head, head_len)) {
    case FileKind::tfm_header:
      verify_header(c, fd.get(), head);
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

bool is_checkpoint(const std::string& path) {
  try {
    quiet_hdf5();
    Ctx c{path, 0};
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
      const uint64_t version = load_le64(head + 16);
      return version >= 1 && version <= kHeaderVersion && load_le64(head + 24) == c.file_size &&
             std::memcmp(head + kUserBlock, kHdf5Signature, 8) == 0;
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
