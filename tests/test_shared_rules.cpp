// The helpers that replaced copies spread over train/ and tools/: the data
// rules training and tfm eval share, edit_distance, the head-split check and
// the atomic file write.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "layers/heads.h"
#include "temp_dir.h"
#include "train/config.h"
#include "train/posix_file.h"
#include "train/task_data.h"

namespace fs = std::filesystem;
using namespace tfm;
using Catch::Matchers::Contains;

TEST_CASE("pair_fits: both sides non-empty, source <= block_size, target + 1 <= block_size", "[trainer]") {
  auto ex = [](std::size_t s, std::size_t t) {
    return data::TranslationExample{std::vector<int32_t>(s, 5), std::vector<int32_t>(t, 6)};
  };
  CHECK(train::pair_fits(ex(8, 7), 8));
  CHECK_FALSE(train::pair_fits(ex(9, 7), 8));
  CHECK_FALSE(train::pair_fits(ex(8, 8), 8));  // no room for BOS / EOS
  CHECK_FALSE(train::pair_fits(ex(0, 3), 8));
  CHECK_FALSE(train::pair_fits(ex(3, 0), 8));
}

TEST_CASE("validation splits: the end of a text by characters, the last pairs of a TSV", "[trainer]") {
  CHECK(train::text_validation_start(1000, 0.1) == 900);
  CHECK(train::text_validation_start(1001, 0.1) == 900);  // floor(1001 * 0.9) = 900: 101 characters validate
  CHECK(train::text_validation_start(50, 0.0) == 50);
  CHECK(train::held_out_pairs(105, 0.1) == 10);
  CHECK(train::held_out_pairs(9, 0.1) == 0);
  CHECK(train::held_out_pairs(200, 0.5) == 100);
}

TEST_CASE("edit_distance equals the recursive Levenshtein definition", "[config]") {
  // Independent reference: the textbook recursion, memoised.
  auto reference = [](const std::string& a, const std::string& b) {
    std::vector<std::vector<int>> memo(a.size() + 1, std::vector<int>(b.size() + 1, -1));
    std::function<int(std::size_t, std::size_t)> d = [&](std::size_t i, std::size_t j) -> int {
      if (i == 0) return static_cast<int>(j);
      if (j == 0) return static_cast<int>(i);
      int& m = memo[i][j];
      if (m >= 0) return m;
      return m = std::min({d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1])});
    };
    return static_cast<std::size_t>(d(a.size(), b.size()));
  };
  CHECK(train::edit_distance("kitten", "sitting") == 3);
  CHECK(train::edit_distance("", "abc") == 3);
  core::Generator g(17);
  for (int k = 0; k < 200; ++k) {
    std::string a, b;
    for (uint64_t i = 0, n = g.next_u64() % 9; i < n; ++i) a.push_back(static_cast<char>('a' + g.next_u64() % 3));
    for (uint64_t i = 0, n = g.next_u64() % 9; i < n; ++i) b.push_back(static_cast<char>('a' + g.next_u64() % 3));
    INFO(a << " / " << b);
    CHECK(train::edit_distance(a, b) == reference(a, b));
  }
}

TEST_CASE("head_dim splits d_model or names both values", "[layers]") {
  CHECK(layers::head_dim(128, 4, "model.d_model", "model.n_heads") == 32);
  REQUIRE_THROWS_WITH(layers::head_dim(100, 3, "model.d_model", "model.n_heads"),
                      Contains("model.d_model (100)") && Contains("multiple of model.n_heads (3)"));
  REQUIRE_THROWS_WITH(layers::head_dim(64, 0, "gpt: d_model", "n_heads"), Contains("n_heads (0)"));
  train::Config cfg;
  cfg.set("model.n_heads", "3");
  cfg.set("data.path", std::string(TFM_TEST_DATA_DIR) + "/fixtures/genesis1.txt");
  REQUIRE_THROWS_WITH(cfg.validate(), Contains("model.d_model (128) must be a positive multiple of model.n_heads (3)"));
}

TEST_CASE("write_file_atomic replaces a file whole and leaves no temporary behind", "[checkpoint]") {
  test::TempDir dir("atomic_write");
  const std::string path = dir.file("out.txt");
  train::write_file_atomic(path, "first version, longer");
  train::write_file_atomic(path, "second");
  CHECK(test::read_file(path) == "second");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path)) names.push_back(e.path().filename().string());
  CHECK(names == std::vector<std::string>{"out.txt"});
  REQUIRE_THROWS_WITH(train::write_file_atomic(dir.file("missing/out.txt"), "x"),
                      Contains("missing/out.txt") && Contains("No such file or directory"));
  train::link_file_atomic(path, dir.file("link.txt"));
  CHECK(test::read_file(dir.file("link.txt")) == "second");
}
