// Sentences to vectors with a pretrained checkpoint, built against the installed package: loads a checkpoint
// (its vocabulary travels with it), encodes a few sentences in one batch, prints their tokens and the cosine
// similarities of their mean-pooled vectors, then encodes them again from four threads at once.
//
//   encode_sentences CHECKPOINT_OR_RUN_DIR [SENTENCE...]
//
// Exits non-zero unless every vector is finite and of the model's width, a repeated sentence has cosine
// similarity 1 with itself, a sentence encoded alone gets the vector it got in the batch, and the concurrent
// calls return what the single-threaded call did.
#include <cocolm/cocolm.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CHECKPOINT_OR_RUN_DIR [SENTENCE...]\n", argv[0]);
    return 2;
  }
  std::vector<std::string> sentences(argv + 2, argv + argc);
  if (sentences.empty())
    sentences = {"Alice was beginning to get very tired of sitting by her sister on the bank.",
                 "The White Rabbit took a watch out of its waistcoat-pocket and hurried on.",
                 "It is a truth universally acknowledged that a single man must be in want of a wife.",
                 "Alice was beginning to get very tired of sitting by her sister on the bank."};
  try {
    coco::EncoderOptions options;
    options.device = "cpu";
    options.batch_size = 8;
    const coco::TextEncoder encoder = coco::TextEncoder::load(argv[1], options);
    std::printf("cocolm %s: checkpoint %s, %lld-dim vectors, vocabulary %s (%lld tokens) on %s\n", cocolm::version(),
                encoder.checkpoint().c_str(), static_cast<long long>(encoder.dim()), encoder.vocab_hash().c_str(),
                static_cast<long long>(encoder.vocab_size()), encoder.device().c_str());

    const std::vector<coco::Encoding> encodings = encoder.encode(sentences);
    int failures = 0;
    for (size_t i = 0; i < encodings.size(); ++i) {
      const coco::Encoding& e = encodings[i];
      std::string tokens;
      for (const auto& t : e.tokens) tokens += (tokens.empty() ? "" : " ") + t;
      std::printf("[%zu] %zu tokens: %s\n", i, e.ids.size(), tokens.c_str());
      bool finite =
          e.mean.size() == static_cast<size_t>(encoder.dim()) && e.hidden.size() == e.ids.size() * e.mean.size();
      for (float v : e.mean) finite = finite && std::isfinite(v);
      if (!finite) {
        std::printf("FAILED: sentence %zu has a vector of the wrong size or non-finite values\n", i);
        ++failures;
      }
    }
    std::printf("cosine similarity (mean pooling):\n");
    for (size_t i = 0; i < encodings.size(); ++i) {
      std::printf("  [%zu]", i);
      for (size_t j = 0; j < encodings.size(); ++j)
        std::printf(" %7.4f", coco::cosine_similarity(encodings[i].mean, encodings[j].mean));
      std::printf("\n");
      for (size_t j = 0; j < encodings.size(); ++j)
        if (sentences[i] == sentences[j] &&
            std::fabs(coco::cosine_similarity(encodings[i].mean, encodings[j].mean) - 1.0) > 1e-5) {
          std::printf("FAILED: sentences %zu and %zu are the same text but not similarity 1\n", i, j);
          ++failures;
        }
    }

    // Alone or in a batch: the same vector up to float rounding.
    const coco::Encoding alone = encoder.encode(sentences.front());
    double worst = 0;
    for (size_t k = 0; k < alone.cls.size(); ++k)
      worst = std::fmax(worst, std::fabs(alone.cls[k] - encodings.front().cls[k]));
    std::printf("sentence 0 alone vs in the batch: max |difference| of the CLS vector %.3g\n", worst);
    if (worst > 1e-4) {
      std::printf("FAILED: expected at most 1e-4\n");
      ++failures;
    }

    // One encoder, four threads at once.
    std::vector<std::vector<coco::Encoding>> results(4);
    std::vector<std::thread> threads;
    for (auto& result : results)
      threads.emplace_back([&encoder, &sentences, &result] { result = encoder.encode(sentences, false); });
    for (auto& thread : threads) thread.join();
    for (const auto& result : results)
      for (size_t i = 0; i < result.size(); ++i)
        if (result[i].mean != encodings[i].mean) {
          std::printf("FAILED: a concurrent call returned another vector for sentence %zu\n", i);
          ++failures;
        }
    std::printf("4 concurrent callers: %s\n", failures ? "see above" : "identical vectors");
    std::printf("%s\n", failures ? "FAILED" : "OK");
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
