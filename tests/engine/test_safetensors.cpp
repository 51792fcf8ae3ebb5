// safetensors: byte-for-byte agreement with the reference writer (golden file), round trips of every
// dtype (0-d and empty tensors included), and rejection of malformed or truncated files with a
// specific message.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/io/safetensors.h"

namespace {

namespace st = coco::safetensors;
using coco::DType;
namespace fs = std::filesystem;

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

template <class T>
std::vector<uint8_t> as_bytes(const std::vector<T>& values) {
  std::vector<uint8_t> b(values.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), values.data(), b.size());
  return b;
}

uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>(u >> 16);  // exact for the small values used here
}

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("coco_safetensors_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  fs::path operator/(const std::string& name) const { return path_ / name; }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

const fs::path kGolden = fs::path(COCO_SOURCE_DIR) / "tests/data/safetensors/golden.safetensors";

TEST(SafetensorsGolden, ReadsTheGoldenFile) {
  const st::Reader r = st::Reader::open(kGolden.string());
  ASSERT_EQ(r.tensors().size(), 2u);
  EXPECT_EQ(r.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));

  const st::TensorInfo* w = r.find("a.weight");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, DType::f32);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(w->begin, 0u);
  EXPECT_EQ(w->end, 16u);
  std::vector<float> wv(4);
  std::memcpy(wv.data(), r.data(*w).data(), 16);
  EXPECT_EQ(wv, (std::vector<float>{1, 2, 3, 4}));

  const st::TensorInfo* b = r.find("b.bias");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, DType::bf16);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{3}));
  const auto bb = r.data(*b);
  ASSERT_EQ(bb.size(), 6u);
  const std::vector<uint8_t> expected_bf16 = {0x80, 0x3f, 0x00, 0x40, 0x40, 0x40};  // 1, 2, 3
  EXPECT_TRUE(std::equal(bb.begin(), bb.end(), expected_bf16.begin()));
  EXPECT_EQ(r.find("missing"), nullptr);
}

TEST(SafetensorsGolden, ReserializingTheGoldenFileGivesTheSameBytes) {
  const std::vector<uint8_t> golden = read_bytes(kGolden);
  const st::Reader r = st::Reader::from_bytes(golden, "golden");
  std::vector<st::TensorData> tensors;
  // Reverse the order so the writer's own sort is what reproduces the layout.
  for (auto it = r.tensors().rbegin(); it != r.tensors().rend(); ++it)
    tensors.push_back({it->name, it->dtype, it->shape, r.data(*it)});
  EXPECT_EQ(st::serialize(tensors, r.metadata()), golden);
}

TEST(SafetensorsGolden, WritingTheGoldenTensorsFromScratchGivesTheGoldenBytes) {
  const std::vector<uint8_t> w = as_bytes(std::vector<float>{1, 2, 3, 4});
  const std::vector<uint8_t> b = as_bytes(std::vector<uint16_t>{bf16_bits(1), bf16_bits(2), bf16_bits(3)});
  const std::vector<st::TensorData> tensors = {{"b.bias", DType::bf16, {3}, b}, {"a.weight", DType::f32, {2, 2}, w}};
  // No metadata given: the writer adds "format":"pt" like the reference files carry.
  EXPECT_EQ(st::serialize(tensors, {}), read_bytes(kGolden));
}

// One tensor of every dtype, plus a scalar and empty tensors; values distinct per element.
struct Fixture {
  std::vector<std::vector<uint8_t>> storage;
  std::vector<st::TensorData> tensors;

  void add(std::string name, DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
    storage.push_back(std::move(bytes));
    tensors.push_back({std::move(name), dtype, std::move(shape), {}});
  }
  void bind() {
    for (size_t i = 0; i < tensors.size(); ++i) tensors[i].bytes = storage[i];
  }
};

Fixture every_dtype() {
  Fixture f;
  f.add("u8.bytes", DType::u8, {5}, {0, 1, 127, 128, 255});
  f.add("f16.half", DType::f16, {2, 2}, as_bytes(std::vector<uint16_t>{0x3c00, 0xc000, 0x7bff, 0x0001}));
  f.add("bf16.brain", DType::bf16, {3}, as_bytes(std::vector<uint16_t>{bf16_bits(1.5f), bf16_bits(-2), 0x7f80}));
  f.add("i32.ints", DType::i32, {3, 1}, as_bytes(std::vector<int32_t>{-7, 0, 2147483647}));
  f.add("f32.weight", DType::f32, {2, 3}, as_bytes(std::vector<float>{0.5f, -1, 3.25f, 1e-30f, 1e30f, -0.0f}));
  f.add("f64.doubles", DType::f64, {2}, as_bytes(std::vector<double>{3.141592653589793, -1e300}));
  f.add("i64.step", DType::i64, {}, as_bytes(std::vector<int64_t>{-(int64_t{1} << 62)}));  // 0-d scalar
  f.add("a.empty", DType::f32, {0}, {});
  f.add("z.empty", DType::i64, {3, 0, 2}, {});
  f.add("scalar.f32", DType::f32, {}, as_bytes(std::vector<float>{42}));
  f.bind();
  return f;
}

void expect_same_tensors(const st::Reader& r, const std::vector<st::TensorData>& tensors) {
  ASSERT_EQ(r.tensors().size(), tensors.size());
  for (const st::TensorData& t : tensors) {
    const st::TensorInfo* info = r.find(t.name);
    ASSERT_NE(info, nullptr) << t.name;
    EXPECT_EQ(info->dtype, t.dtype) << t.name;
    EXPECT_EQ(info->shape, t.shape) << t.name;
    const auto data = r.data(*info);
    ASSERT_EQ(data.size(), t.bytes.size()) << t.name;
    EXPECT_TRUE(std::equal(data.begin(), data.end(), t.bytes.begin())) << t.name;
  }
}

TEST(SafetensorsRoundTrip, EveryDtypeScalarAndEmptyThroughAFile) {
  TempDir dir;
  const Fixture f = every_dtype();
  const std::map<std::string, std::string> metadata = {{"step", "1200"}, {"note", "héllo \"quoted\"\n"}};
  const std::string path = (dir / "model.safetensors").string();
  st::write_file(path, f.tensors, metadata);
  EXPECT_FALSE(fs::exists(path + ".partial"));

  const st::Reader r = st::Reader::open(path);
  expect_same_tensors(r, f.tensors);
  auto with_format = metadata;
  with_format["format"] = "pt";
  EXPECT_EQ(r.metadata(), with_format);
  // write_file and serialize produce the same bytes.
  EXPECT_EQ(read_bytes(path), st::serialize(f.tensors, metadata));
}

TEST(SafetensorsRoundTrip, LayoutFollowsTheReferenceWriter) {
  const Fixture f = every_dtype();
  const std::vector<uint8_t> bytes = st::serialize(f.tensors, {});
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, bytes.data(), 8);
  EXPECT_EQ(header_bytes % 8, 0u);
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<int64_t>(header_bytes));
  EXPECT_EQ(header.rfind("{\"__metadata__\":{\"format\":\"pt\"},", 0), 0u) << header;
  EXPECT_EQ(header.find(' '), header.find_last_not_of(' ') + 1) << "padding is trailing spaces only";

  const st::Reader r = st::Reader::from_bytes(bytes, "layout");
  std::vector<std::string> order;
  for (const auto& t : r.tensors()) {
    order.push_back(t.name);
    EXPECT_EQ(t.begin % coco::dtype_size(t.dtype), 0u) << t.name << " is misaligned";
  }
  // Descending reference dtype order (I64, F64, F32, I32, BF16, F16, U8), then by name.
  EXPECT_EQ(order, (std::vector<std::string>{"i64.step", "z.empty", "f64.doubles", "a.empty", "f32.weight",
                                             "scalar.f32", "i32.ints", "bf16.brain", "f16.half", "u8.bytes"}));
  // Reported in offset order.
  for (size_t i = 1; i < r.tensors().size(); ++i) EXPECT_LE(r.tensors()[i - 1].end, r.tensors()[i].begin);
}

TEST(SafetensorsRoundTrip, ExplicitFormatIsKeptAndEmptyFileWorks) {
  const std::vector<uint8_t> bytes = st::serialize({}, {{"format", "mlx"}});
  const st::Reader r = st::Reader::from_bytes(bytes, "empty");
  EXPECT_TRUE(r.tensors().empty());
  EXPECT_EQ(r.metadata(), (std::map<std::string, std::string>{{"format", "mlx"}}));
  EXPECT_EQ(bytes.size(), 8u + 40u);  // {"__metadata__":{"format":"mlx"}}: 33 bytes + 7 spaces of padding
}

// Builds a file from a header text and a data buffer; N is the header length unless overridden.
std::vector<uint8_t> make_file(const std::string& header, size_t data_bytes, std::optional<uint64_t> n = std::nullopt) {
  std::vector<uint8_t> f;
  f.reserve(8 + header.size() + data_bytes);
  const uint64_t length = n.value_or(header.size());
  for (int i = 0; i < 8; ++i) f.push_back(static_cast<uint8_t>(length >> (8 * i)));
  for (char c : header) f.push_back(static_cast<uint8_t>(c));
  for (size_t i = 0; i < data_bytes; ++i) f.push_back(static_cast<uint8_t>(i));
  return f;
}

TEST(SafetensorsReader, AcceptsOtherValidLayouts) {
  // Name order instead of dtype order, keys in another order, whitespace, no __metadata__, data listed
  // out of offset order in the header: all legal.
  const std::string header =
      R"({"b": {"shape": [2], "data_offsets": [8, 10], "dtype": "U8"},
          "a": {"data_offsets": [0, 8], "dtype": "I32", "shape": [1, 2]}} )";
  const auto bytes = make_file(header, 10);
  const st::Reader r = st::Reader::from_bytes(bytes, "other");
  ASSERT_EQ(r.tensors().size(), 2u);
  EXPECT_EQ(r.tensors()[0].name, "a");
  EXPECT_EQ(r.tensors()[1].name, "b");
  EXPECT_TRUE(r.metadata().empty());
  EXPECT_EQ(r.data(*r.find("b"))[1], 9);
}

struct MalformedCase {
  const char* what;
  std::vector<uint8_t> bytes;
  std::string expected;  // substring of the error message
};

std::vector<MalformedCase> malformed_cases() {
  const std::string ok_entry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string utf8_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"x":"y"}})";
  const size_t x_at = utf8_header.find("\"x\"") + 1;
  std::vector<uint8_t> bad_utf8 = make_file(utf8_header, 8);
  bad_utf8[8 + x_at] = 0xC3;  // a 2-byte lead byte followed by '"', not a continuation byte
  return {
      {"empty file", {}, "0 bytes, too short for the 8-byte header length"},
      {"7 bytes", {1, 2, 3, 4, 5, 6, 7}, "7 bytes, too short"},
      {"header length over the limit", make_file("{}", 0, 100'000'001), "exceeds the limit of 100000000 bytes"},
      {"header length u64 max", make_file("{}", 0, ~uint64_t{0}), "exceeds the limit"},
      {"header longer than file", make_file("{}", 0, 64), "header length 64 runs past the end of the file (10 bytes)"},
      {"empty header", make_file("", 0), "header is empty"},
      {"leading space", make_file(" {}     ", 0), "starts with byte 0x20, expected '{'"},
      {"header starts with [", make_file("[1,2]   ", 0), "starts with byte 0x5b"},
      {"invalid UTF-8", bad_utf8, "not valid UTF-8 (at header byte " + std::to_string(x_at) + ")"},
      {"truncated JSON", make_file(R"({"a":{"dtype":"F32")", 0), "not valid JSON"},
      {"garbage after JSON", make_file("{}x", 0), "not valid JSON"},
      {"entry not an object", make_file(R"({"a":[1,2]})", 0), "tensor 'a': entry is [1,2], expected an object"},
      {"missing data_offsets", make_file(R"({"a":{"dtype":"F32","shape":[2]}})", 8),
       "tensor 'a': missing key 'data_offsets'"},
      {"missing dtype", make_file(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8), "missing key 'dtype'"},
      {"extra key", make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"strides":[1]}})", 8),
       "unexpected key 'strides'"},
      {"unknown dtype", make_file(R"({"a":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}})", 8),
       "unknown dtype 'F31'"},
      {"lower-case dtype", make_file(R"({"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", 8),
       "unknown dtype 'f32'"},
      {"unsupported dtype", make_file(R"({"a":{"dtype":"I8","shape":[8],"data_offsets":[0,8]}})", 8),
       "unsupported dtype 'I8'"},
      {"dtype not a string", make_file(R"({"a":{"dtype":7,"shape":[2],"data_offsets":[0,8]}})", 8), "dtype is 7"},
      {"shape not a list", make_file(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8),
       "shape is 2, expected a list"},
      {"negative dimension", make_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
       "shape[0] is -2"},
      {"fractional dimension", make_file(R"({"a":{"dtype":"F32","shape":[1,2.0],"data_offsets":[0,8]}})", 8),
       "shape[1] is 2.0"},
      {"dimension beyond int64",
       make_file(R"({"a":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,8]}})", 8),
       "shape[0] is 9223372036854775808"},
      {"three offsets", make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}})", 8),
       "data_offsets is [0,4,8], expected a list of two non-negative integers"},
      {"offsets not ints", make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":["0","8"]}})", 8),
       "data_offsets is [\"0\",\"8\"]"},
      {"negative offset", make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 8),
       "data_offsets is [-8,0]"},
      {"begin after end", make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8),
       "data_offsets [8, 0] has begin > end"},
      {"byte count mismatch", make_file(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", 12),
       "data_offsets [0, 12] hold 12 bytes but F32 [2, 2] needs 16"},
      {"element count overflow",
       make_file(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
       "U8 [4294967296, 4294967296]: the byte size overflows 64 bits"},
      {"byte count overflow",
       make_file(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8),
       "overflows 64 bits"},
      {"first tensor not at 0", make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       "tensor 'a': data [4, 12) leaves a gap: the first tensor must start at byte 0"},
      {"gap between tensors",
       make_file(
           R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
           12),
       "tensor 'b': data [8, 12) leaves a gap: the previous tensor 'a' ends at byte 4"},
      {"overlapping tensors",
       make_file(
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
           8),
       "tensor 'b': data [4, 8) overlaps tensor 'a' which ends at byte 8"},
      {"same range twice",
       make_file(
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
           8),
       "tensor 'b': data [0, 8) overlaps tensor 'a'"},
      {"trailing bytes", make_file("{" + ok_entry + "}", 9),
       "tensors cover 8 bytes but the data buffer has 9 (1 trailing bytes"},
      {"truncated data", make_file("{" + ok_entry + "}", 5),
       "tensors need 8 data bytes but only 5 follow the header (file truncated?)"},
      {"metadata not an object", make_file(R"({"__metadata__":["pt"]})", 0),
       "__metadata__ is [\"pt\"], expected an object"},
      {"metadata value not a string", make_file(R"({"__metadata__":{"format":"pt","epoch":3}})", 0),
       "__metadata__ value of 'epoch' is 3, expected a string"},
      {"duplicate tensor name", make_file("{" + ok_entry + "," + ok_entry + "}", 8), "duplicate tensor name 'a'"},
      {"duplicate key in entry",
       make_file(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8),
       "duplicate key 'dtype'"},
      {"duplicate metadata", make_file(R"({"__metadata__":{},"__metadata__":{}})", 0),
       "duplicate tensor name '__metadata__'"},
  };
}

TEST(SafetensorsReader, RejectsMalformedFilesWithSpecificMessages) {
  const auto cases = malformed_cases();
  EXPECT_GE(cases.size(), 15u);
  for (const MalformedCase& c : cases) {
    const std::string label = std::string("case-") + c.what;
    try {
      (void)st::Reader::from_bytes(c.bytes, label);
      ADD_FAILURE() << c.what << ": accepted";
    } catch (const st::FormatError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(c.expected), std::string::npos) << c.what << ": got \"" << message << "\"";
      EXPECT_NE(message.find("'" + label + "'"), std::string::npos) << c.what << ": the message does not name the file";
    }
  }
}

TEST(SafetensorsReader, OpenNamesThePathOnIoErrors) {
  TempDir dir;
  const std::string missing = (dir / "nope.safetensors").string();
  try {
    (void)st::Reader::open(missing);
    ADD_FAILURE() << "opened a missing file";
  } catch (const st::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(missing + "': cannot open"), std::string::npos) << e.what();
  }
  try {
    (void)st::Reader::open(dir.path().string());
    ADD_FAILURE() << "opened a directory";
  } catch (const st::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
  // A file with a bad header reports the path as its label.
  const std::string bad = (dir / "bad.safetensors").string();
  std::ofstream(bad, std::ios::binary) << "short";
  try {
    (void)st::Reader::open(bad);
    ADD_FAILURE() << "opened a 5-byte file";
  } catch (const st::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("'" + bad + "': file is 5 bytes"), std::string::npos) << e.what();
  }
}

TEST(SafetensorsReader, EveryTruncationIsRejected) {
  const Fixture f = every_dtype();
  const std::vector<uint8_t> full = st::serialize(f.tensors, {{"k", "v"}});
  ASSERT_NO_THROW((void)st::Reader::from_bytes(full, "full"));
  for (size_t len = 0; len < full.size(); ++len) {
    std::vector<uint8_t> prefix(full.begin(), full.begin() + static_cast<int64_t>(len));
    EXPECT_THROW((void)st::Reader::from_bytes(std::move(prefix), "prefix"), st::FormatError) << "length " << len;
  }
}

TEST(SafetensorsReader, RandomHeaderCorruptionNeverEscapesFormatError) {
  // Random byte edits in the header either still parse to a consistent file or raise FormatError;
  // anything else (a crash, another exception type, an out-of-range view) is a bug.
  const Fixture f = every_dtype();
  const std::vector<uint8_t> full = st::serialize(f.tensors, {});
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, full.data(), 8);
  std::mt19937 rng(1234);
  const char alphabet[] = "{}[],:\"0123456789-. eE\\FIU";
  int rejected = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> bytes = full;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const size_t at = 8 + rng() % header_bytes;
      bytes[at] =
          rng() % 4 == 0 ? static_cast<uint8_t>(rng()) : static_cast<uint8_t>(alphabet[rng() % (sizeof(alphabet) - 1)]);
    }
    try {
      const st::Reader r = st::Reader::from_bytes(std::move(bytes), "fuzz");
      for (const auto& t : r.tensors()) ASSERT_EQ(r.data(t).size(), t.end - t.begin);
    } catch (const st::FormatError&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 2000);
}

TEST(SafetensorsWriter, RejectsInconsistentInput) {
  const std::vector<uint8_t> eight(8);
  const auto expect_invalid = [](std::vector<st::TensorData> tensors, const std::string& expected) {
    try {
      (void)st::serialize(tensors, {});
      ADD_FAILURE() << "accepted: " << expected;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  };
  expect_invalid({{"w", DType::f32, {3}, eight}}, "tensor 'w': 8 bytes given but F32 [3] needs 12");
  expect_invalid({{"w", DType::f32, {-1, 2}, eight}}, "negative dimension");
  expect_invalid({{"w", DType::u8, {8}, eight}, {"w", DType::u8, {8}, eight}}, "duplicate tensor name 'w'");
  expect_invalid({{"__metadata__", DType::u8, {8}, eight}}, "'__metadata__' is reserved");
  expect_invalid({{"bad\xff", DType::u8, {8}, eight}}, "is not valid UTF-8");
  expect_invalid({{"huge", DType::f64, {int64_t{1} << 62, 8}, eight}}, "needs more than 2^64");
}

TEST(SafetensorsWriter, WriteFileReportsUnwritablePaths) {
  TempDir dir;
  const std::vector<uint8_t> four(4);
  const std::vector<st::TensorData> tensors = {{"x", DType::f32, {1}, four}};
  const std::string path = (dir / "missing_dir" / "x.safetensors").string();
  try {
    st::write_file(path, tensors, {});
    ADD_FAILURE() << "wrote into a missing directory";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ".partial"), std::string::npos) << e.what();
  }
}

TEST(SafetensorsWriter, WriteFileReplacesAnExistingFile) {
  TempDir dir;
  const std::string path = (dir / "ckpt.safetensors").string();
  const std::vector<uint8_t> one = as_bytes(std::vector<float>{1}), two = as_bytes(std::vector<float>{2, 3});
  st::write_file(path, std::vector<st::TensorData>{{"x", DType::f32, {1}, one}}, {});
  st::write_file(path, std::vector<st::TensorData>{{"y", DType::f32, {2}, two}}, {});
  const st::Reader r = st::Reader::open(path);
  ASSERT_EQ(r.tensors().size(), 1u);
  EXPECT_EQ(r.tensors()[0].name, "y");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

}  // namespace
