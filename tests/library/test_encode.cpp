// coco::TextEncoder (coco/encode.h) and `coco encode` on a tiny checkpoint trained by the `coco` binary on the
// English prose of tests/data/english: the vectors against an independent forward pass of the discriminator,
// batching and padding, pooling, truncation, concurrent callers, the cuda backend, and every misuse reported.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <thread>

#include "coco/encode.h"
#include "coco/interop/hf_export.h"
#include "coco/interop/tokenizer_files.h"
#include "coco/objective.h"
#include "coco/prepare.h"
#include "engine/tape.h"
#include "tests/train/train_test_util.h"
#include "tools/lib/checkpoint.h"

namespace coco {
namespace {

namespace fs = std::filesystem;
using testutil::TempDir;

const fs::path kEnglish = fs::path(COCO_SOURCE_DIR) / "tests" / "data" / "english";

fs::path prepare(const TempDir& work, const std::string& name, size_t vocab_size) {
  text::PrepareOptions options;
  options.inputs = {kEnglish / "alice.txt", kEnglish / "pride.txt"};
  options.output_dir = work / name;
  options.vocab_size = vocab_size;
  options.valid_fraction = 0.3;
  options.document_boundary = text::DocumentBoundary::line;
  options.threads = 1;
  text::prepare(options);
  return options.output_dir;
}

// One run for the whole suite: examples/tiny.json (paper preset, d 32, 2 discriminator layers) for 6 steps.
class EncodeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new TempDir("encode");
    data_ = prepare(*work_, "data", 300);
    const testutil::RunResult r =
        testutil::run_coco({"train", "--config", (fs::path(COCO_SOURCE_DIR) / "examples" / "tiny.json").string(),
                            "--out", (*work_ / "run").string(), "--set", "data.dir=" + data_.string()},
                           work_->path());
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    run_ = *work_ / "run";
    checkpoint_ = tools::resolve_checkpoint_dir(run_);
  }
  static void TearDownTestSuite() { delete work_; }

  // The discriminator's hidden states for one text, computed here without TextEncoder: (T, d) row-major.
  static std::vector<float> reference_hidden(const std::string& text) {
    const interop::CheckpointModel config = interop::read_checkpoint_model(checkpoint_);
    objective::CocoModel model(config.model, config.objective, 3, Device::cpu);
    tools::load_weights(checkpoint_, model.named_parameters());
    const text::WordPieceTokenizer tokenizer = interop::load_tokenizer(checkpoint_);
    std::vector<int32_t> ids{config.objective.cls_id};
    for (uint32_t id : tokenizer.encode(text)) ids.push_back(static_cast<int32_t>(id));
    ids.push_back(config.objective.sep_id);
    const Shape shape{1, static_cast<int64_t>(ids.size())};
    NoGrad no_grad;
    const Tensor hidden = model.discriminator().forward(Tensor::from_vector(ids, shape, Device::cpu),
                                                        Tensor::full(shape, 1, DType::u8, Device::cpu),
                                                        model::ForwardOptions{false, 0, 0, 0, 0});
    return hidden.to_vector<float>();
  }

  static inline TempDir* work_ = nullptr;
  static inline fs::path data_, run_, checkpoint_;
};

const std::vector<std::string> kTexts = {"Alice was beginning to get very tired of sitting by her sister.",
                                         "The rabbit ran.", "",
                                         "It is a truth universally acknowledged that a single man must be in want."};

double max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
  return worst;
}

TEST_F(EncodeTest, HiddenStatesAreTheDiscriminatorsInInferenceMode) {
  const TextEncoder encoder = TextEncoder::load(run_);  // the run directory resolves to its latest checkpoint
  EXPECT_EQ(encoder.checkpoint(), checkpoint_);
  EXPECT_EQ(encoder.dim(), 32);
  EXPECT_EQ(encoder.vocab_size(), 300);
  EXPECT_EQ(encoder.max_length(), 64);
  EXPECT_EQ(encoder.device(), "cpu");
  const Encoding e = encoder.encode(kTexts[0]);
  EXPECT_EQ(e.tokens.front(), "[CLS]");
  EXPECT_EQ(e.tokens.back(), "[SEP]");
  EXPECT_FALSE(e.truncated);
  EXPECT_EQ(e.ids, encoder.tokenize(kTexts[0]));
  const std::vector<float> reference = reference_hidden(kTexts[0]);
  EXPECT_EQ(e.hidden, reference);  // alone in its batch: the very same computation
  // Not the same as a fresh model: the weights came from the checkpoint.
  EXPECT_EQ(e.hidden.size(), e.ids.size() * 32);
}

TEST_F(EncodeTest, PoolingIsTheClsRowAndTheMeanOfTheTextsRows) {
  const TextEncoder encoder = TextEncoder::load(checkpoint_);
  for (const Encoding& e : encoder.encode(kTexts)) {
    const size_t d = static_cast<size_t>(e.dim), n = e.ids.size();
    ASSERT_EQ(e.hidden.size(), n * d);
    EXPECT_EQ(e.cls, std::vector<float>(e.hidden.begin(), e.hidden.begin() + static_cast<ptrdiff_t>(d)));
    for (size_t k = 0; k < d; ++k) {
      double sum = 0;
      for (size_t t = 0; t < n; ++t) sum += e.hidden[t * d + k];
      EXPECT_NEAR(e.mean[k], sum / static_cast<double>(n), 1e-6);
    }
    EXPECT_EQ(&e.pooled(Pooling::cls), &e.cls);
    EXPECT_EQ(&e.pooled(Pooling::mean), &e.mean);
    EXPECT_EQ(e.token_state(n - 1).size(), d);
    EXPECT_THROW(e.token_state(n), EncodeError);
  }
  EXPECT_NEAR(cosine_similarity(encoder.encode(kTexts[1]).mean, encoder.encode(kTexts[1]).mean), 1.0, 1e-12);
}

TEST_F(EncodeTest, ATextsVectorsDoNotDependOnItsBatch) {
  // Batches of 3 padded to the longest, texts sorted by length: against each text alone.
  EncoderOptions options;
  options.batch_size = 3;
  const TextEncoder encoder = TextEncoder::load(checkpoint_, options);
  const std::vector<Encoding> batched = encoder.encode(kTexts);
  ASSERT_EQ(batched.size(), kTexts.size());
  for (size_t i = 0; i < kTexts.size(); ++i) {
    const Encoding alone = encoder.encode(kTexts[i]);
    EXPECT_EQ(batched[i].ids, alone.ids) << i;
    EXPECT_LT(max_difference(batched[i].hidden, alone.hidden), 1e-5) << i;
    EXPECT_LT(max_difference(batched[i].mean, alone.mean), 1e-5) << i;
  }
  EXPECT_EQ(batched[2].tokens, (std::vector<std::string>{"[CLS]", "[SEP]"}));  // the empty text
  // Without hidden states: the same pooled vectors.
  const std::vector<Encoding> pooled_only = encoder.encode(kTexts, /*hidden_states=*/false);
  for (size_t i = 0; i < kTexts.size(); ++i) {
    EXPECT_TRUE(pooled_only[i].hidden.empty());
    EXPECT_EQ(pooled_only[i].mean, batched[i].mean);
    EXPECT_THROW(pooled_only[i].token_state(0), EncodeError);
  }
  // encode_ids takes ids as they are.
  const std::vector<Encoding> by_ids = encoder.encode_ids({batched[0].ids, batched[1].ids});
  EXPECT_EQ(by_ids[1].ids, batched[1].ids);
  EXPECT_LT(max_difference(by_ids[1].mean, encoder.encode(kTexts[1]).mean), 1e-5);
}

TEST_F(EncodeTest, LongTextsAreCutToMaxLengthEndingInSep) {
  EncoderOptions options;
  options.max_length = 8;
  const TextEncoder encoder = TextEncoder::load(checkpoint_, options);
  const Encoding e = encoder.encode(kTexts[0]);
  EXPECT_TRUE(e.truncated);
  ASSERT_EQ(e.ids.size(), 8u);
  EXPECT_EQ(e.tokens.front(), "[CLS]");
  EXPECT_EQ(e.tokens.back(), "[SEP]");
  EXPECT_FALSE(encoder.encode(kTexts[1]).truncated);
}

TEST_F(EncodeTest, ConcurrentCallersGetTheSingleThreadedResults) {
  const TextEncoder encoder = TextEncoder::load(checkpoint_);
  const std::vector<Encoding> expected = encoder.encode(kTexts);
  std::vector<std::vector<Encoding>> results(4);
  std::vector<std::thread> threads;
  const TextEncoder copy = encoder;  // copies share the weights
  for (size_t t = 0; t < results.size(); ++t)
    threads.emplace_back([&, t] { results[t] = (t % 2 ? copy : encoder).encode(kTexts); });
  for (auto& thread : threads) thread.join();
  for (const auto& result : results)
    for (size_t i = 0; i < kTexts.size(); ++i) EXPECT_EQ(result[i].hidden, expected[i].hidden) << i;
}

TEST_F(EncodeTest, CudaBackendAgreesWithCpu) {
  EncoderOptions options;
  options.device = "cuda";
  const TextEncoder on_cuda = TextEncoder::load(checkpoint_, options);
  EXPECT_EQ(on_cuda.device(), "cuda");
  const TextEncoder on_cpu = TextEncoder::load(checkpoint_);
  const std::vector<std::string> texts = {kTexts[1], kTexts[2]};
  const std::vector<Encoding> a = on_cuda.encode(texts), b = on_cpu.encode(texts);
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_LT(max_difference(a[i].hidden, b[i].hidden), 1e-4) << i;
}

TEST_F(EncodeTest, MisuseIsReportedNamingTheArgument) {
  const TextEncoder empty;
  EXPECT_FALSE(empty.loaded());
  try {
    empty.encode(kTexts);
    ADD_FAILURE() << "encoding without a checkpoint";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("holds no checkpoint"), std::string::npos) << e.what();
  }
  EXPECT_THROW(empty.dim(), std::logic_error);

  auto message_of = [](auto&& call) -> std::string {
    try {
      call();
    } catch (const EncodeError& e) {
      return e.what();
    }
    return "(no EncodeError)";
  };
  EXPECT_NE(message_of([&] { TextEncoder::load(*work_ / "missing"); }).find("no such directory"), std::string::npos);
  EXPECT_NE(message_of([&] { TextEncoder::load(data_); }).find("not a checkpoint directory"), std::string::npos);
  // A damaged checkpoint is refused naming the file (the manifest's checksums), never encoded with.
  const fs::path damaged = *work_ / "damaged";
  fs::copy(checkpoint_, damaged, fs::copy_options::recursive);
  {
    std::fstream file(damaged / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(-3, std::ios::end);
    file.put('\x7f');
  }
  EXPECT_NE(message_of([&] { TextEncoder::load(damaged); }).find("model.safetensors"), std::string::npos);
  EncoderOptions bad;
  bad.batch_size = 0;
  EXPECT_NE(message_of([&] { TextEncoder::load(checkpoint_, bad); }).find("batch_size"), std::string::npos);
  bad = {};
  bad.max_length = 65;
  EXPECT_NE(message_of([&] { TextEncoder::load(checkpoint_, bad); }).find("max_length must be in [2, 64]"),
            std::string::npos);
  bad = {};
  bad.device = "tpu";
  EXPECT_NE(message_of([&] { TextEncoder::load(checkpoint_, bad); }).find("'tpu'"), std::string::npos);
  EXPECT_NE(message_of([] { parse_pooling("max", "--pool"); }).find("--pool expects 'cls' or 'mean', got 'max'"),
            std::string::npos);

  // A tokenizer of another vocabulary: another size, or the same size with other tokens.
  EncoderOptions other;
  other.tokenizer_dir = prepare(*work_, "other-size", 280);
  EXPECT_NE(message_of([&] { TextEncoder::load(checkpoint_, other); }).find("the vocabulary has 280 tokens"),
            std::string::npos);
  const fs::path shuffled = *work_ / "shuffled";
  fs::create_directories(shuffled);
  {
    std::vector<std::string> tokens = interop::load_tokenizer(checkpoint_).vocab().tokens();
    std::swap(tokens[100], tokens[101]);
    std::ofstream out(shuffled / "vocab.txt");
    for (const auto& t : tokens) out << t << "\n";
  }
  other.tokenizer_dir = shuffled;
  EXPECT_NE(
      message_of([&] { TextEncoder::load(checkpoint_, other); }).find("is not the one the checkpoint was trained with"),
      std::string::npos);

  const TextEncoder encoder = TextEncoder::load(checkpoint_);
  EXPECT_NE(message_of([&] {
              encoder.encode_ids({{2, 300, 3}});
            }).find("id 300 is outside the vocabulary [0, 300)"),
            std::string::npos);
  EXPECT_NE(message_of([&] { encoder.encode_ids({{}}); }).find("is empty"), std::string::npos);
  EXPECT_NE(message_of([&] { encoder.encode_ids({std::vector<uint32_t>(65, 5)}); }).find("more than max_length 64"),
            std::string::npos);
  EXPECT_NE(message_of([] { cosine_similarity(std::vector<float>(3), std::vector<float>(4)); }).find("equal lengths"),
            std::string::npos);
}

TEST_F(EncodeTest, CocoEncodeWritesOneJsonLinePerInputLine) {
  const fs::path input = *work_ / "lines.txt";
  testutil::write_text(input, kTexts[0] + "\n" + kTexts[1] + "\r\n\n" + kTexts[0] + "\n");
  const fs::path output = *work_ / "vectors.jsonl";
  const testutil::RunResult r = testutil::run_coco(
      {"encode", "--checkpoint", run_.string(), "--pool", "mean", "--hidden", "--out", output.string(), input.string()},
      work_->path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::ifstream in(output);
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 4u);
  const TextEncoder encoder = TextEncoder::load(run_);
  const std::vector<Encoding> expected = encoder.encode({kTexts[0], kTexts[1], "", kTexts[0]});
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i]["line"], i + 1);
    EXPECT_EQ(rows[i]["pool"], "mean");
    EXPECT_EQ(rows[i]["tokens"], expected[i].ids.size());
    EXPECT_EQ(rows[i]["token_strings"].get<std::vector<std::string>>(), expected[i].tokens);
    EXPECT_EQ(rows[i]["vector"].get<std::vector<float>>(), expected[i].mean);  // %.9g round-trips a float
    ASSERT_EQ(rows[i]["hidden"].size(), expected[i].ids.size());
  }
  // CLS pooling by default, standard input as '-', stdout.
  const testutil::RunResult cls =
      testutil::run_coco({"encode", "--checkpoint", run_.string(), input.string()}, work_->path());
  ASSERT_EQ(cls.exit_code, 0) << cls.err;
  EXPECT_EQ(nlohmann::json::parse(cls.out.substr(0, cls.out.find('\n')))["vector"].get<std::vector<float>>(),
            expected[0].cls);
}

TEST_F(EncodeTest, CocoEncodeErrorsExitWithTwo) {
  const fs::path input = *work_ / "one.txt";
  testutil::write_text(input, "hello\n");
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--checkpoint", run_.string(), "--pool", "max", input.string()}, "--pool expects 'cls' or 'mean', got 'max'"},
      {{"--checkpoint", (*work_ / "nope").string(), input.string()}, "no such directory"},
      {{"--checkpoint", run_.string(), (*work_ / "absent.txt").string()}, "cannot read input file"},
      {{"--checkpoint", run_.string(), "--device", "tpu", input.string()}, "--device expects cpu, cuda or auto"},
      {{"--checkpoint", run_.string(), "--max-length", "1", input.string()}, "max_length must be in [2, 64]"},
      {{"--checkpoint", run_.string()}, "INPUT"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = {"encode"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    const testutil::RunResult r = testutil::run_coco(args, work_->path());
    EXPECT_EQ(r.exit_code, 2) << c.message << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace coco
