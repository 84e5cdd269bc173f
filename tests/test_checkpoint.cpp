// Checkpoints: bit-exact round trip of every field, saved order, atomic
// overwrite, failed saves that must leave the previous file alone, and bad
// files (not HDF5, HDF5 but not ours, newer versions, damaged headers,
// truncation, flipped bytes), all of which must raise tfm::Error naming the
// file rather than crash or allocate absurd amounts of memory.
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "train/checkpoint.h"

using namespace tfm;
using core::Shape;
using core::Tensor;
using train::CheckpointData;
namespace fs = std::filesystem;

namespace {

// A fresh directory under the system temp dir, removed with its contents.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ =
        fs::temp_directory_path() / ("tfm-ckpt-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  fs::path path_;
};

Tensor from_bits(const std::vector<uint32_t>& bits, const Shape& shape) {
  Tensor t = core::empty(shape);
  REQUIRE(static_cast<std::size_t>(t.numel()) == bits.size());
  if (!bits.empty()) std::memcpy(t.data<float>(), bits.data(), bits.size() * 4);
  return t;
}

std::vector<uint32_t> bits_of(const Tensor& t) {
  std::vector<uint32_t> out;
  for (float v : t.to_vector()) out.push_back(std::bit_cast<uint32_t>(v));
  return out;
}

Tensor seq(const Shape& shape, float start) {
  Tensor t = core::empty(shape);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = start + 0.25f * static_cast<float>(i);
  return t;
}

void check_tensors_equal(const std::vector<std::pair<std::string, Tensor>>& got,
                         const std::vector<std::pair<std::string, Tensor>>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("tensor " << i << " '" << want[i].first << "'");
    CHECK(got[i].first == want[i].first);
    CHECK(got[i].second.shape() == want[i].second.shape());
    CHECK(got[i].second.dtype() == core::DType::f32);
    CHECK(bits_of(got[i].second) == bits_of(want[i].second));
  }
}

void check_equal(const CheckpointData& got, const CheckpointData& want) {
  CHECK(got.meta == want.meta);
  CHECK(got.ints == want.ints);
  CHECK(got.config_yaml == want.config_yaml);
  check_tensors_equal(got.params, want.params);
  check_tensors_equal(got.optimizer_state, want.optimizer_state);
  CHECK(got.rng == want.rng);
  CHECK(got.tokenizer_kind == want.tokenizer_kind);
  CHECK(got.tokenizer_blob == want.tokenizer_blob);
  CHECK(got.metrics_jsonl == want.metrics_jsonl);
}

// A checkpoint exercising every field, odd float bit patterns and shapes.
CheckpointData sample_data() {
  CheckpointData d;
  d.meta = {{"tfm_version", "0.1.0"},
            {"created", "2024-05-01T12:00:00Z"},
            {"model_family", "gpt"},
            {"optimizer", "adamw"},
            {"empty", ""},
            {"unicode", "h\xc3\xa9llo \xe2\x9c\x93"}};
  d.ints = {{"step", 1234},
            {"tokens_seen", int64_t{1} << 40},
            {"negative", -7},
            {"min", std::numeric_limits<int64_t>::min()},
            {"max", std::numeric_limits<int64_t>::max()}};
  d.config_yaml = "model:\n  family: gpt\n  d_model: 64\n  name: \"caf\xc3\xa9\"\ntrain:\n  lr: 3.0e-4\n";
  const Tensor base = seq({2, 3}, 1.0f);
  d.params = {
      {"decoder.layers.0.attn_norm.weight", seq({4}, 0.5f)},
      {"decoder.layers.0.attn.qkv.weight", seq({3, 4}, -1.0f)},
      {"special", from_bits({0x7fc12345u, 0x7f800001u, 0x80000000u, 0x00000000u, 0x7f800000u, 0xff800000u, 0x00000001u,
                             0x807fffffu, 0x7f7fffffu, 0x3f800000u},
                            {2, 5})},
      {"scalar", core::scalar_tensor(-2.5f)},
      {"empty_rows", core::empty({0, 3})},
      {"deep", seq({1, 2, 1, 3, 1}, 7.0f)},
      {"transposed_view", base.transpose(0, 1)},  // saved in logical order
      {"embed.weight", seq({17, 8}, -3.0f)},
  };
  d.optimizer_state = {
      {"exp_avg/decoder.layers.0.attn_norm.weight", seq({4}, 0.1f)},
      {"exp_avg_sq/decoder.layers.0.attn_norm.weight", seq({4}, 0.2f)},
      {"exp_avg/decoder.layers.0.attn.qkv.weight", seq({3, 4}, 0.3f)},
      {"exp_avg_sq/decoder.layers.0.attn.qkv.weight", seq({3, 4}, 0.4f)},
      {"step", core::scalar_tensor(12.0f)},
      {"a/b/c", seq({2}, 9.0f)},
  };
  d.rng = {{"data", {1, 2}}, {"dropout", {std::numeric_limits<uint64_t>::max(), 0}}, {"init", {42, 1000000007}}};
  d.tokenizer_kind = "char";
  for (int i = 0; i < 256; ++i) d.tokenizer_blob.push_back(static_cast<uint8_t>(i));
  d.tokenizer_blob.push_back(0);
  d.metrics_jsonl = "{\"step\": 1, \"loss\": 4.5}\n{\"step\": 2, \"loss\": 4.25}\n";
  return d;
}

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

// The message of the tfm::Error that load_checkpoint(path) throws; fails the
// test if it does not throw (other exception types propagate and fail too).
std::string load_error(const std::string& path) {
  try {
    train::load_checkpoint(path);
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("load_checkpoint(" << path << ") did not throw");
  return {};
}

std::string save_error(const std::string& path, const CheckpointData& d) {
  try {
    train::save_checkpoint(path, d);
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("save_checkpoint(" << path << ") did not throw");
  return {};
}

// ---- raw HDF5 files, written with the C API (no tfm header, no checksum)

struct H5 {
  hid_t id;
  herr_t (*closer)(hid_t);
  H5(hid_t i, herr_t (*c)(hid_t)) : id(i), closer(c) { REQUIRE(id >= 0); }
  ~H5() { closer(id); }
  H5(const H5&) = delete;
  H5& operator=(const H5&) = delete;
  operator hid_t() const { return id; }
};

void raw_string_attr(hid_t obj, const char* name, const std::string& value, bool vlen = false) {
  H5 type(H5Tcopy(H5T_C_S1), H5Tclose);
  REQUIRE(H5Tset_cset(type, H5T_CSET_UTF8) >= 0);
  H5 space(H5Screate(H5S_SCALAR), H5Sclose);
  if (vlen) {
    REQUIRE(H5Tset_size(type, H5T_VARIABLE) >= 0);
    H5 attr(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    const char* p = value.c_str();
    REQUIRE(H5Awrite(attr, type, &p) >= 0);
  } else {
    REQUIRE(H5Tset_size(type, std::max<std::size_t>(1, value.size())) >= 0);
    H5 attr(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    REQUIRE(H5Awrite(attr, type, value.c_str()) >= 0);
  }
}

void raw_int_attr(hid_t obj, const char* name, int64_t value) {
  H5 space(H5Screate(H5S_SCALAR), H5Sclose);
  H5 attr(H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  REQUIRE(H5Awrite(attr, H5T_NATIVE_INT64, &value) >= 0);
}

// Creates dataset `name` in loc with the given file type and dims; writes
// `data` when given.
void raw_dataset(hid_t loc, const char* name, hid_t file_type, const std::vector<hsize_t>& dims, hid_t mem_type = -1,
                 const void* data = nullptr) {
  H5 space(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
           H5Sclose);
  H5 dset(H5Dcreate2(loc, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (data) REQUIRE(H5Dwrite(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
}

void write_raw_hdf5(const std::string& path, const std::function<void(hid_t file)>& fill) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5 file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  fill(file);
}

// A minimal valid checkpoint header on the root of `file`.
void raw_tfm_root(hid_t file, int64_t version = train::kCheckpointVersion) {
  raw_string_attr(file, "format", train::kCheckpointFormat);
  raw_int_attr(file, "format_version", version);
}

}  // namespace

TEST_CASE("checkpoint round trip preserves every field bit for bit", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("ck.h5");
  const CheckpointData d = sample_data();
  train::save_checkpoint(path, d);
  CHECK(train::is_checkpoint(path));
  const CheckpointData got = train::load_checkpoint(path);
  check_equal(got, d);
  for (const auto& [name, t] : got.params) CHECK(t.is_contiguous());
  CHECK(dir.entries() == std::vector<std::string>{"ck.h5"});  // no temporary file left behind

  SECTION("an empty checkpoint") {
    const std::string p2 = dir.file("empty.h5");
    train::save_checkpoint(p2, CheckpointData{});
    check_equal(train::load_checkpoint(p2), CheckpointData{});
  }
  SECTION("long strings (attributes beyond the 64 KiB object header limit)") {
    CheckpointData big;
    big.meta["long"] = std::string(200000, 'x');
    big.config_yaml = std::string(1 << 20, 'y');
    for (int i = 0; i < 20000; ++i) big.metrics_jsonl += "{\"step\": " + std::to_string(i) + "}\n";
    const std::string p2 = dir.file("big.h5");
    train::save_checkpoint(p2, big);
    check_equal(train::load_checkpoint(p2), big);
  }
  SECTION("a path without a directory part is saved in the working directory") {
    const fs::path old = fs::current_path();
    fs::current_path(dir.path());
    try {
      train::save_checkpoint("rel.h5", d);
      check_equal(train::load_checkpoint("rel.h5"), d);
    } catch (...) {
      fs::current_path(old);
      throw;
    }
    fs::current_path(old);
  }
}

TEST_CASE("checkpoint keeps the saved order of params and optimizer state", "[checkpoint]") {
  TempDir dir;
  CheckpointData d;
  std::vector<std::string> names;
  for (int i = 0; i < 60; ++i) names.push_back("layers." + std::to_string(i) + ".w");
  names.push_back("zeta");
  names.push_back("alpha");
  std::mt19937 rng(7);
  std::shuffle(names.begin(), names.end(), rng);
  float v = 0;
  for (const std::string& n : names) {
    d.params.emplace_back(n, core::full({2}, v++));
    // interleaved slots: exp_avg/x, exp_avg_sq/x, exp_avg/y, ...
    d.optimizer_state.emplace_back("exp_avg/" + n, core::full({2}, v++));
    d.optimizer_state.emplace_back("exp_avg_sq/" + n, core::full({2}, v++));
  }
  const std::string path = dir.file("order.h5");
  train::save_checkpoint(path, d);
  const CheckpointData got = train::load_checkpoint(path);
  check_tensors_equal(got.params, d.params);
  check_tensors_equal(got.optimizer_state, d.optimizer_state);
}

TEST_CASE("saving over an existing checkpoint replaces it", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("ck.h5");
  CheckpointData a = sample_data();
  train::save_checkpoint(path, a);
  CheckpointData b;
  b.ints["step"] = 99;
  b.params = {{"only", seq({3, 3}, 5.0f)}};
  b.config_yaml = "second";
  train::save_checkpoint(path, b);
  check_equal(train::load_checkpoint(path), b);
  train::save_checkpoint(path, a);
  check_equal(train::load_checkpoint(path), a);
  CHECK(dir.entries() == std::vector<std::string>{"ck.h5"});
}

TEST_CASE("saving into a missing directory throws and leaves nothing behind", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("no/such/dir/ck.h5");
  const std::string msg = save_error(path, sample_data());
  CHECK_THAT(msg, Catch::Contains(path));
  CHECK_THAT(msg, Catch::Contains("No such file or directory"));
  CHECK_FALSE(fs::exists(dir.path() / "no"));
  CHECK(dir.entries().empty());
}

TEST_CASE("a save that fails midway keeps the previous checkpoint", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("ck.h5");
  const CheckpointData good = sample_data();
  train::save_checkpoint(path, good);
  const std::vector<char> before = read_bytes(path);

  // Every case fails after the temporary file has been created and partly
  // written (the bad entry comes after valid ones).
  CheckpointData bad = sample_data();
  std::string expect;
  SECTION("parameter name containing '/'") {
    bad.params.emplace_back("a/b", seq({2}, 0));
    expect = "a/b";
  }
  SECTION("empty parameter name") {
    bad.params.emplace_back("", seq({2}, 0));
    expect = "invalid parameter name";
  }
  SECTION("parameter named '.'") {
    bad.params.emplace_back(".", seq({2}, 0));
    expect = "'.'";
  }
  SECTION("duplicate parameter name") {
    bad.params.emplace_back("scalar", seq({2}, 0));
    expect = "duplicate parameter name 'scalar'";
  }
  SECTION("undefined tensor") {
    bad.params.emplace_back("undefined", Tensor());
    expect = "/params/undefined: undefined tensor";
  }
  SECTION("int32 tensor") {
    bad.params.emplace_back("ints", core::from_vector(std::vector<int32_t>{1, 2}, {2}));
    expect = "/params/ints: only f32";
  }
  SECTION("optimizer name with an empty path component") {
    bad.optimizer_state.emplace_back("exp_avg//x", seq({2}, 0));
    expect = "exp_avg//x";
  }
  SECTION("optimizer slot clashing with a dataset") {
    bad.optimizer_state.emplace_back("step/x", seq({2}, 0));  // "step" is already a dataset
    expect = "/optimizer/step";
  }
  SECTION("string with a NUL byte") {
    bad.metrics_jsonl = std::string("abc\0def", 7);
    expect = "/metrics: string contains a NUL byte";
  }
  SECTION("reserved meta key") {
    bad.meta["format"] = "mine";
    expect = "reserved";
  }
  SECTION("key in both meta and ints") {
    bad.meta["step"] = "x";
    expect = "both meta and ints";
  }
  const std::string msg = save_error(path, bad);
  CHECK_THAT(msg, Catch::Contains(path));
  CHECK_THAT(msg, Catch::Contains(expect));
  CHECK(read_bytes(path) == before);
  check_equal(train::load_checkpoint(path), good);
  CHECK(dir.entries() == std::vector<std::string>{"ck.h5"});
}

TEST_CASE("saving over a directory fails cleanly", "[checkpoint]") {
  TempDir dir;
  fs::create_directory(dir.path() / "sub");
  const std::string path = dir.file("sub");
  const std::string msg = save_error(path, sample_data());
  CHECK_THAT(msg, Catch::Contains(path));
  CHECK(dir.entries() == std::vector<std::string>{"sub"});
  CHECK_THAT(save_error(dir.file("x") + "/", sample_data()), Catch::Contains("not a file path"));
}

TEST_CASE("loading files that are not HDF5 throws naming the file", "[checkpoint]") {
  TempDir dir;
  std::mt19937 rng(123);
  std::vector<char> random(4096);
  for (char& ch : random) ch = static_cast<char>(rng());
  const std::vector<std::pair<std::string, std::vector<char>>> files = {
      {"random.h5", random},
      {"empty.h5", {}},
      {"text.h5",
       [] {
         const std::string s = "step: 10\nloss: 1.5\nthis is a text file, not a checkpoint\n";
         return std::vector<char>(s.begin(), s.end());
       }()},
      {"short.h5", {'\x89', 'H', 'D'}},
      {"zeros.h5", std::vector<char>(2000, 0)},
      {"hdf5_signature_only.h5", {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'}},
  };
  for (const auto& [name, bytes] : files) {
    INFO(name);
    const std::string path = dir.file(name);
    write_bytes(path, bytes);
    const std::string msg = load_error(path);
    CHECK_THAT(msg, Catch::Contains(path));
    if (name != "hdf5_signature_only.h5") CHECK_THAT(msg, Catch::Contains("not an HDF5 file"));
    CHECK_FALSE(train::is_checkpoint(path));
  }

  const std::string missing = dir.file("missing.h5");
  CHECK(load_error(missing) == missing + ": no such file");
  CHECK_FALSE(train::is_checkpoint(missing));
  CHECK_THAT(load_error(dir.path().string()), Catch::Contains("is a directory"));
  CHECK_FALSE(train::is_checkpoint(dir.path().string()));
}

TEST_CASE("HDF5 files that are not tfm checkpoints are rejected", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("other.h5");
  SECTION("no format attribute") {
    write_raw_hdf5(path, [](hid_t f) {
      const float x[3] = {1, 2, 3};
      raw_dataset(f, "data", H5T_IEEE_F32LE, {3}, H5T_NATIVE_FLOAT, x);
    });
    CHECK(load_error(path) == path + ": not a tfm checkpoint (no format attribute)");
  }
  SECTION("another format name") {
    write_raw_hdf5(path, [](hid_t f) { raw_string_attr(f, "format", "keras"); });
    CHECK_THAT(load_error(path), Catch::Contains("not a tfm checkpoint (format attribute is 'keras')"));
  }
  SECTION("format attribute of the wrong type") {
    write_raw_hdf5(path, [](hid_t f) { raw_int_attr(f, "format", 1); });
    CHECK_THAT(load_error(path), Catch::Contains("not a tfm checkpoint"));
  }
  CHECK_THAT(load_error(path), Catch::StartsWith(path + ": "));
  CHECK_FALSE(train::is_checkpoint(path));
}

TEST_CASE("a newer checkpoint format version is rejected", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("newer.h5");
  write_raw_hdf5(path, [](hid_t f) {
    raw_tfm_root(f, 2);
    H5 g(H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  });
  CHECK(load_error(path) == path + ": checkpoint format version 2 is newer than this tfm supports (1)");
  // is_checkpoint only checks the format name (see checkpoint.h).
  CHECK(train::is_checkpoint(path));

  write_raw_hdf5(path, [](hid_t f) { raw_string_attr(f, "format", train::kCheckpointFormat); });
  CHECK_THAT(load_error(path), Catch::Contains("no format_version attribute"));
  write_raw_hdf5(path, [](hid_t f) { raw_tfm_root(f, 0); });
  CHECK_THAT(load_error(path), Catch::Contains("invalid checkpoint format version 0"));
}

TEST_CASE("checkpoints written by other HDF5 tools load without the tfm header", "[checkpoint]") {
  // What an h5py script would write: variable-length strings, no user block,
  // groups without creation order, no index attributes (-> name order).
  TempDir dir;
  const std::string path = dir.file("h5py.h5");
  write_raw_hdf5(path, [](hid_t f) {
    raw_tfm_root(f);
    raw_string_attr(f, "model_family", "gpt", /*vlen=*/true);
    raw_int_attr(f, "step", 5);
    H5 params(H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    const float w[6] = {1, 2, 3, 4, 5, 6};
    const float b[2] = {-1, -2};
    raw_dataset(params, "w", H5T_IEEE_F32LE, {2, 3}, H5T_NATIVE_FLOAT, w);
    raw_dataset(params, "b", H5T_IEEE_F32BE, {2}, H5T_NATIVE_FLOAT, b);  // big-endian is converted
    H5 rng(H5Gcreate2(f, "rng", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    const uint64_t s[2] = {3, 4};
    raw_dataset(rng, "data", H5T_STD_U64LE, {2}, H5T_NATIVE_UINT64, s);
  });
  CHECK(train::is_checkpoint(path));
  const CheckpointData got = train::load_checkpoint(path);
  CHECK(got.meta == std::map<std::string, std::string>{{"model_family", "gpt"}});
  CHECK(got.ints == std::map<std::string, int64_t>{{"step", 5}});
  REQUIRE(got.params.size() == 2);
  CHECK(got.params[0].first == "b");
  CHECK(got.params[0].second.to_vector() == std::vector<float>{-1, -2});
  CHECK(got.params[1].first == "w");
  CHECK(got.params[1].second.shape() == Shape{2, 3});
  CHECK(got.params[1].second.to_vector() == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK(got.rng == std::map<std::string, std::pair<uint64_t, uint64_t>>{{"data", {3, 4}}});
  CHECK(got.config_yaml.empty());
  CHECK(got.optimizer_state.empty());
}

TEST_CASE("malformed datasets are rejected before allocating", "[checkpoint]") {
  // Raw files carry no checksum, so these reach the per-dataset validation.
  TempDir dir;
  const std::string path = dir.file("bad.h5");
  std::string expect;
  SECTION("a huge dataspace with no data (would be terabytes)") {
    write_raw_hdf5(path, [](hid_t f) {
      raw_tfm_root(f);
      H5 params(H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      raw_dataset(params, "huge", H5T_IEEE_F32LE, {hsize_t{1} << 20, hsize_t{1} << 20});
    });
    expect = "/params/huge: shape [1048576, 1048576] needs more bytes than the whole file holds";
  }
  SECTION("an absurd shape") {
    write_raw_hdf5(path, [](hid_t f) {
      raw_tfm_root(f);
      H5 params(H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      raw_dataset(params, "huge", H5T_IEEE_F32LE, {0, hsize_t{1} << 40, hsize_t{1} << 40});
    });
    expect = "/params/huge: shape is absurdly large";
  }
  SECTION("many datasets without data that together exceed the file") {
    write_raw_hdf5(path, [](hid_t f) {
      raw_tfm_root(f);
      H5 params(H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      for (int i = 0; i < 40; ++i) raw_dataset(params, ("p" + std::to_string(i)).c_str(), H5T_IEEE_F32LE, {256});
    });
    REQUIRE(fs::file_size(path) < 40 * 1024);
    expect = "the datasets read so far need more bytes than the whole file holds";
  }
  SECTION("int32 parameter") {
    write_raw_hdf5(path, [](hid_t f) {
      raw_tfm_root(f);
      H5 params(H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      const int32_t x[2] = {1, 2};
      raw_dataset(params, "w", H5T_STD_I32LE, {2}, H5T_NATIVE_INT32, x);
    });
    expect = "/params/w: expected float32 data, found int32";
  }
  SECTION("float64 optimizer state") {
    write_raw_hdf5(path, [](hid_t f) {
      raw_tfm_root(f);
      H5 params(H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      H5 opt(H5Gcreate2(f, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      H5 slot(H5Gcreate2(opt, "exp_avg", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      const double x[2] = {1, 2};
      raw_dataset(slot, "w", H5T_IEEE_F64LE, {2}, H5T_NATIVE_DOUBLE, x);
    });
    expect = "/optimizer/exp_avg/w: expected float32 data, found float64";
  }
  SECTION("rng with the wrong shape") {
    write_raw_hdf5(path, [](hid_t f) {
      raw_tfm_root(f);
      H5 params(H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      H5 rng(H5Gcreate2(f, "rng", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      const uint64_t x[3] = {1, 2, 3};
      raw_dataset(rng, "data", H5T_STD_U64LE, {3}, H5T_NATIVE_UINT64, x);
    });
    expect = "/rng/data: expected shape [2]";
  }
  SECTION("rng of signed integers") {
    write_raw_hdf5(path, [](hid_t f) {
      raw_tfm_root(f);
      H5 params(H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      H5 rng(H5Gcreate2(f, "rng", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      const int64_t x[2] = {1, 2};
      raw_dataset(rng, "data", H5T_STD_I64LE, {2}, H5T_NATIVE_INT64, x);
    });
    expect = "/rng/data: expected uint64 data, found int64";
  }
  SECTION("a group inside /params") {
    write_raw_hdf5(path, [](hid_t f) {
      raw_tfm_root(f);
      H5 params(H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      H5 sub(H5Gcreate2(params, "sub", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    });
    expect = "/params/sub: expected a dataset, found a group";
  }
  SECTION("a soft link inside /params") {
    write_raw_hdf5(path, [](hid_t f) {
      raw_tfm_root(f);
      H5 params(H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      REQUIRE(H5Lcreate_soft("/elsewhere", params, "link", H5P_DEFAULT, H5P_DEFAULT) >= 0);
    });
    expect = "/params/link: soft and external links are not supported";
  }
  SECTION("/params is a dataset") {
    write_raw_hdf5(path, [](hid_t f) {
      raw_tfm_root(f);
      const float x = 1;
      raw_dataset(f, "params", H5T_IEEE_F32LE, {}, H5T_NATIVE_FLOAT, &x);
    });
    expect = "/params: expected a group";
  }
  SECTION("missing /params") {
    write_raw_hdf5(path, [](hid_t f) { raw_tfm_root(f); });
    expect = "missing /params group";
  }
  SECTION("inconsistent index attributes") {
    write_raw_hdf5(path, [](hid_t f) {
      raw_tfm_root(f);
      H5 params(H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      const float x[1] = {1};
      for (const char* name : {"a", "b"}) {
        raw_dataset(params, name, H5T_IEEE_F32LE, {1}, H5T_NATIVE_FLOAT, x);
        H5 d(H5Dopen2(params, name, H5P_DEFAULT), H5Dclose);
        raw_int_attr(d, "index", 1);
      }
    });
    expect = "/params: 'index' attributes are not a permutation";
  }
  SECTION("2-d tokenizer") {
    write_raw_hdf5(path, [](hid_t f) {
      raw_tfm_root(f);
      H5 params(H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      const uint8_t x[4] = {1, 2, 3, 4};
      raw_dataset(f, "tokenizer", H5T_STD_U8LE, {2, 2}, H5T_NATIVE_UINT8, x);
    });
    expect = "/tokenizer: expected a 1-d byte array";
  }
  SECTION("config that is not a string") {
    write_raw_hdf5(path, [](hid_t f) {
      raw_tfm_root(f);
      H5 params(H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      const float x = 1;
      raw_dataset(f, "config", H5T_IEEE_F32LE, {}, H5T_NATIVE_FLOAT, &x);
    });
    expect = "/config: expected a string, found float32";
  }
  SECTION("root attribute of an unsupported type") {
    write_raw_hdf5(path, [](hid_t f) {
      raw_tfm_root(f);
      H5 params(H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      H5 space(H5Screate(H5S_SCALAR), H5Sclose);
      H5 attr(H5Acreate2(f, "lr", H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
      const double lr = 0.1;
      REQUIRE(H5Awrite(attr, H5T_NATIVE_DOUBLE, &lr) >= 0);
    });
    expect = "root attribute 'lr': expected a string or integer, found float64";
  }
  const std::string msg = load_error(path);
  CHECK_THAT(msg, Catch::StartsWith(path + ": "));
  CHECK_THAT(msg, Catch::Contains(expect));
}

TEST_CASE("truncated checkpoints are rejected", "[checkpoint]") {
  TempDir dir;
  const std::string good = dir.file("good.h5");
  train::save_checkpoint(good, sample_data());
  const std::vector<char> bytes = read_bytes(good);
  REQUIRE(bytes.size() > 2000);
  const std::size_t n = bytes.size();
  for (std::size_t len : {std::size_t{0}, std::size_t{8}, std::size_t{511}, std::size_t{512}, std::size_t{600}, n / 10,
                          n / 2, n * 9 / 10, n - 1}) {
    INFO("truncated to " << len << " of " << n << " bytes");
    const std::string path = dir.file("truncated.h5");
    write_bytes(path, std::vector<char>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(len)));
    CHECK_THAT(load_error(path), Catch::StartsWith(path + ": "));
    CHECK_FALSE(train::is_checkpoint(path));
  }
}

TEST_CASE("checkpoints with flipped bytes are rejected", "[checkpoint]") {
  TempDir dir;
  const std::string good = dir.file("good.h5");
  train::save_checkpoint(good, sample_data());
  const std::vector<char> bytes = read_bytes(good);
  const std::size_t n = bytes.size();
  std::mt19937_64 rng(2024);
  std::vector<std::size_t> positions = {0, 7, 8, 15, 16, 24, 31, 100, 511, 512, 513, 520, 560, 600, n / 2, n - 1};
  for (int i = 0; i < 150; ++i) positions.push_back(static_cast<std::size_t>(rng() % n));
  const std::string path = dir.file("flipped.h5");
  for (std::size_t pos : positions) {
    INFO("byte " << pos << " of " << n);
    std::vector<char> damaged = bytes;
    damaged[pos] = static_cast<char>(damaged[pos] ^ static_cast<char>(1 + rng() % 255));
    write_bytes(path, damaged);
    CHECK_THAT(load_error(path), Catch::StartsWith(path + ": "));
    CHECK_NOTHROW(train::is_checkpoint(path));  // cheap check: may or may not notice
  }
  // Several flips at once.
  for (int i = 0; i < 20; ++i) {
    std::vector<char> damaged = bytes;
    for (int k = 0; k < 8; ++k) damaged[rng() % n] ^= static_cast<char>(1 + rng() % 255);
    write_bytes(path, damaged);
    CHECK_THAT(load_error(path), Catch::StartsWith(path + ": "));
    CHECK_NOTHROW(train::is_checkpoint(path));
  }
  // The undamaged original still loads.
  check_equal(train::load_checkpoint(good), sample_data());
}
