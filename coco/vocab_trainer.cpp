#include "coco/vocab_trainer.h"

#include <algorithm>
#include <map>
#include <queue>
#include <stdexcept>
#include <thread>

#include "coco/utf8.h"

namespace coco::text {

void WordCounter::add_text(std::string_view text) {
  pre_tokenizer_.for_each_word(text, scratch_, [&](std::string_view word, size_t code_points) {
    if (code_points > max_word_chars_) return;
    ++total_words_;
    auto it = counts_.find(std::string(word));
    if (it == counts_.end()) {
      counts_.emplace(std::string(word), 1);
    } else {
      ++it->second;
    }
  });
}

void WordCounter::merge(const WordCounter& other) {
  for (const auto& [word, count] : other.counts_) counts_[word] += count;
  total_words_ += other.total_words_;
}

WordCounter count_words(const std::vector<std::string>& texts, const VocabTrainerOptions& options) {
  size_t threads = options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  threads = std::max<size_t>(1, std::min(threads, texts.size()));
  std::vector<WordCounter> counters(threads, WordCounter(options.normalizer, options.max_word_chars));
  std::vector<std::exception_ptr> errors(threads);
  std::vector<std::thread> workers;
  for (size_t t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      try {
        for (size_t i = t; i < texts.size(); i += threads) counters[t].add_text(texts[i]);
      } catch (...) {
        errors[t] = std::current_exception();
      }
    });
  }
  for (auto& worker : workers) worker.join();
  for (auto& error : errors) {
    if (error) std::rethrow_exception(error);
  }
  WordCounter total(options.normalizer, options.max_word_chars);
  for (const auto& counter : counters) total.merge(counter);
  return total;
}

namespace {

std::vector<std::string> special_tokens(const VocabTrainerOptions& options) {
  if (options.layout == SpecialLayout::first) return {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  std::vector<std::string> tokens{"[PAD]"};
  for (int i = 0; i < 99; ++i) tokens.push_back("[unused" + std::to_string(i) + "]");
  for (const char* special : {"[UNK]", "[CLS]", "[SEP]", "[MASK]"}) tokens.push_back(special);
  return tokens;
}

// BPE over the distinct words. Symbols are interned strings; a word is a sequence of symbol ids.
class PairMerger {
 public:
  PairMerger(const VocabTrainerOptions& options) : options_(options) {}

  uint32_t intern(const std::string& symbol) {
    auto [it, inserted] = ids_.emplace(symbol, static_cast<uint32_t>(symbols_.size()));
    if (inserted) symbols_.push_back(symbol);
    return it->second;
  }
  const std::string& symbol(uint32_t id) const { return symbols_[id]; }

  void add_word(std::vector<uint32_t> symbols, uint64_t count) {
    words_.push_back(std::move(symbols));
    counts_.push_back(count);
  }

  // Merges until on_merge(merged_symbol_id, is_new) returns false or no pair is frequent enough; is_new is
  // false when an earlier merge already produced the same string ("a"+"##bc" and "ab"+"##c").
  template <class OnMerge>
  void run(OnMerge&& on_merge) {
    for (uint32_t w = 0; w < words_.size(); ++w) {
      const auto& word = words_[w];
      for (size_t i = 0; i + 1 < word.size(); ++i) {
        const uint64_t key = pair_key(word[i], word[i + 1]);
        pair_counts_[key] += counts_[w];
        where_[key].push_back(w);
      }
    }
    for (const auto& [key, count] : pair_counts_) push(key, count);
    while (!heap_.empty()) {
      const Candidate top = heap_.top();
      heap_.pop();
      const auto it = pair_counts_.find(top.key);
      const uint64_t current = it == pair_counts_.end() ? 0 : it->second;
      if (current != top.count) {
        push(top.key, current);  // stale entry: re-queue with the current count
        continue;
      }
      const uint32_t a = static_cast<uint32_t>(top.key >> 32), b = static_cast<uint32_t>(top.key);
      const std::string merged = symbol(a) + symbol(b).substr(options_.continuing_prefix.size());
      const bool is_new = !ids_.contains(merged);
      const uint32_t c = intern(merged);
      apply_merge(a, b, c);
      if (!on_merge(c, is_new)) return;
    }
  }

 private:
  struct Candidate {
    uint64_t count;
    uint64_t key;
  };
  static uint64_t pair_key(uint32_t a, uint32_t b) { return (static_cast<uint64_t>(a) << 32) | b; }

  // Heap order: higher count first, then the pair whose (left, right) strings sort first.
  struct Order {
    const PairMerger* self;
    bool operator()(const Candidate& x, const Candidate& y) const {
      if (x.count != y.count) return x.count < y.count;
      const auto& xa = self->symbol(static_cast<uint32_t>(x.key >> 32));
      const auto& ya = self->symbol(static_cast<uint32_t>(y.key >> 32));
      if (xa != ya) return xa > ya;
      return self->symbol(static_cast<uint32_t>(x.key)) > self->symbol(static_cast<uint32_t>(y.key));
    }
  };

  void push(uint64_t key, uint64_t count) {
    if (count >= std::max<uint64_t>(1, options_.min_pair_frequency)) heap_.push({count, key});
  }

  void apply_merge(uint32_t a, uint32_t b, uint32_t c) {
    const uint64_t merged_key = pair_key(a, b);
    std::vector<uint32_t> affected = std::move(where_[merged_key]);
    where_.erase(merged_key);
    std::sort(affected.begin(), affected.end());
    affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
    std::map<uint64_t, uint64_t> increased;  // pairs with the new symbol: queued once after all words
    for (uint32_t w : affected) {
      auto& word = words_[w];
      const uint64_t count = counts_[w];
      bool present = false;
      for (size_t i = 0; i + 1 < word.size(); ++i) present |= word[i] == a && word[i + 1] == b;
      if (!present) continue;  // `where_` lists may hold words that an earlier merge changed
      for (size_t i = 0; i + 1 < word.size(); ++i) {
        const auto it = pair_counts_.find(pair_key(word[i], word[i + 1]));
        if ((it->second -= count) == 0) pair_counts_.erase(it);
      }
      std::vector<uint32_t> next;
      next.reserve(word.size());
      for (size_t i = 0; i < word.size(); ++i) {
        if (i + 1 < word.size() && word[i] == a && word[i + 1] == b) {
          next.push_back(c);
          ++i;
        } else {
          next.push_back(word[i]);
        }
      }
      word = std::move(next);
      for (size_t i = 0; i + 1 < word.size(); ++i) {
        const uint64_t key = pair_key(word[i], word[i + 1]);
        pair_counts_[key] += count;
        if (word[i] == c || word[i + 1] == c) {
          where_[key].push_back(w);
          increased[key] = 0;
        }
      }
    }
    for (auto& [key, unused] : increased) push(key, pair_counts_[key]);
  }

  const VocabTrainerOptions& options_;
  std::vector<std::string> symbols_;
  std::unordered_map<std::string, uint32_t> ids_;
  std::vector<std::vector<uint32_t>> words_;
  std::vector<uint64_t> counts_;
  std::unordered_map<uint64_t, uint64_t> pair_counts_;
  std::unordered_map<uint64_t, std::vector<uint32_t>> where_;
  std::priority_queue<Candidate, std::vector<Candidate>, Order> heap_{Order{this}};
};

}  // namespace

std::vector<std::string> train_wordpiece_vocab(const std::unordered_map<std::string, uint64_t>& word_counts,
                                               const VocabTrainerOptions& options) {
  const std::vector<std::string> specials = special_tokens(options);
  if (options.vocab_size <= specials.size()) {
    throw std::invalid_argument("vocab_size " + std::to_string(options.vocab_size) + " leaves no room after the " +
                                std::to_string(specials.size()) + " special tokens; expected more");
  }
  // Distinct words in byte order: every later step then sees the same sequence whatever the map's layout.
  std::vector<std::pair<std::string_view, uint64_t>> words;
  words.reserve(word_counts.size());
  for (const auto& [word, count] : word_counts) {
    if (count > 0 && !word.empty()) words.emplace_back(word, count);
  }
  std::sort(words.begin(), words.end());

  std::map<char32_t, uint64_t> char_counts;
  for (const auto& [word, count] : words) {
    size_t pos = 0;
    char32_t cp;
    while (pos < word.size()) {
      if (!decode_utf8(word, pos, cp)) throw std::invalid_argument("word counts hold invalid UTF-8");
      char_counts[cp] += count;
    }
  }

  // The alphabet: characters seen min_char_frequency times, at most max_alphabet of them (most frequent first,
  // ties by code point).
  std::vector<std::pair<uint64_t, char32_t>> by_frequency;
  for (const auto& [cp, count] : char_counts) {
    if (count >= options.min_char_frequency) by_frequency.emplace_back(count, cp);
  }
  std::sort(by_frequency.begin(), by_frequency.end(),
            [](const auto& x, const auto& y) { return x.first != y.first ? x.first > y.first : x.second < y.second; });
  if (options.max_alphabet > 0 && by_frequency.size() > options.max_alphabet) by_frequency.resize(options.max_alphabet);
  std::unordered_map<char32_t, bool> allowed;
  for (const auto& [count, cp] : by_frequency) allowed.emplace(cp, true);

  PairMerger merger(options);
  std::vector<std::vector<uint32_t>> split_words;
  std::vector<std::string> alphabet;
  std::unordered_map<std::string, bool> in_alphabet;
  for (const auto& [word, count] : words) {
    std::vector<uint32_t> symbols;
    bool known = true;
    size_t pos = 0;
    while (pos < word.size() && known) {
      const size_t start = pos;
      char32_t cp;
      decode_utf8(word, pos, cp);
      known = allowed.contains(cp);
      std::string piece = (start == 0 ? "" : options.continuing_prefix) + std::string(word.substr(start, pos - start));
      if (known && in_alphabet.emplace(piece, true).second) alphabet.push_back(piece);
      symbols.push_back(merger.intern(piece));
    }
    if (known) merger.add_word(std::move(symbols), count);
  }
  std::sort(alphabet.begin(), alphabet.end());

  std::vector<std::string> vocab = specials;
  std::unordered_map<std::string, bool> present;
  for (const auto& token : specials) present.emplace(token, true);
  for (const auto& piece : alphabet) {
    if (present.emplace(piece, true).second) vocab.push_back(piece);
  }
  if (vocab.size() > options.vocab_size) {
    throw std::invalid_argument("vocab_size " + std::to_string(options.vocab_size) + " is smaller than the " +
                                std::to_string(specials.size()) + " special tokens plus the " +
                                std::to_string(vocab.size() - specials.size()) +
                                " character pieces of the corpus; expected at least " + std::to_string(vocab.size()) +
                                " (or raise min_char_frequency / lower max_alphabet)");
  }
  if (vocab.size() < options.vocab_size) {
    merger.run([&](uint32_t id, bool) {
      if (present.emplace(merger.symbol(id), true).second) vocab.push_back(merger.symbol(id));
      return vocab.size() < options.vocab_size;
    });
  }
  if (vocab.size() != options.vocab_size) {
    throw std::invalid_argument("the corpus supports a vocabulary of only " + std::to_string(vocab.size()) +
                                " tokens (no pair of pieces is seen " + std::to_string(options.min_pair_frequency) +
                                " or more times any more); expected vocab_size <= " + std::to_string(vocab.size()) +
                                ", got " + std::to_string(options.vocab_size));
  }
  return vocab;
}

std::vector<std::string> train_wordpiece_vocab(const std::vector<std::string>& texts,
                                               const VocabTrainerOptions& options) {
  return train_wordpiece_vocab(count_words(texts, options).counts(), options);
}

}  // namespace coco::text
