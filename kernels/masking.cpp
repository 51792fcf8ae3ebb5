// CPU reference of mask selection and crop views. The selection sorts (key, position) pairs; the
// CUDA kernels rank them in shared memory instead: two algorithms, one answer.
#include "kernels/masking.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>

namespace coco::kernels {

TokenIdSet make_token_id_set(const std::vector<int32_t>& ids, const char* what) {
  std::vector<int32_t> sorted(ids);
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  if (sorted.size() > static_cast<size_t>(kMaxTokenIdSet))
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(sorted.size()) +
                                " distinct token ids, at most " + std::to_string(kMaxTokenIdSet) + " supported");
  if (!sorted.empty() && sorted.front() < 0)
    throw std::invalid_argument(std::string(what) + ": negative token id " + std::to_string(sorted.front()));
  TokenIdSet set;
  set.count = static_cast<int32_t>(sorted.size());
  std::copy(sorted.begin(), sorted.end(), set.ids);
  return set;
}

uint64_t to_fixed_fraction(double p, const char* what) {
  if (!(p >= 0.0 && p <= 1.0))
    throw std::invalid_argument(std::string(what) + ": must be in [0, 1], got " + std::to_string(p));
  return static_cast<uint64_t>(std::llround(p * 4294967296.0));
}

MaskKernelParams make_mask_params(const MaskingConfig& c, uint64_t seed, rng::StepKey step, uint64_t index_base) {
  const auto require_id = [](int32_t id, const char* what) {
    if (id < 0)
      throw std::invalid_argument(std::string("masking: ") + what + " must be >= 0, got " + std::to_string(id));
  };
  require_id(c.pad_id, "pad_id");
  require_id(c.cls_id, "cls_id");
  require_id(c.mask_id, "mask_id");
  MaskKernelParams p{};
  p.preset = c.preset;
  p.pad_id = c.pad_id;
  p.cls_id = c.cls_id;
  p.mask_id = c.mask_id;
  p.ignore_ids = make_token_id_set(c.ignore_ids, "masking: mask_ignore_token_ids");
  p.mask_fraction = to_fixed_fraction(c.mask_prob, "masking: mask_prob");
  p.crop_fraction = to_fixed_fraction(c.crop_fraction, "masking: crop_fraction");
  if (c.preset == MaskPreset::lucidrains) {
    p.replace_threshold = to_fixed_fraction(c.replace_prob, "masking: replace_prob");
    p.random_token_threshold = to_fixed_fraction(c.random_token_prob, "masking: random_token_prob");
  } else {
    p.replace_threshold = uint64_t(1) << 32;  // every selected position becomes [MASK]
    p.random_token_threshold = 0;
  }
  std::vector<int32_t> excluded(c.special_ids);
  excluded.insert(excluded.end(), c.ignore_ids.begin(), c.ignore_ids.end());
  excluded.push_back(c.pad_id);
  excluded.push_back(c.cls_id);
  excluded.push_back(c.mask_id);
  p.random_token_excluded = make_token_id_set(excluded, "masking: special_ids + mask_ignore_token_ids");
  p.vocab_size = c.vocab_size;
  p.allowed_token_count = 0;
  if (p.random_token_threshold > 0) {
    if (c.vocab_size <= 0)
      throw std::invalid_argument("masking: random_token_prob " + std::to_string(c.random_token_prob) +
                                  " > 0 needs vocab_size > 0, got " + std::to_string(c.vocab_size));
    int32_t below_vocab = 0;
    for (int32_t i = 0; i < p.random_token_excluded.count; ++i)
      below_vocab += p.random_token_excluded.ids[i] < c.vocab_size ? 1 : 0;
    p.allowed_token_count = c.vocab_size - below_vocab;
    if (p.allowed_token_count <= 0)
      throw std::invalid_argument("masking: every id of vocab_size " + std::to_string(c.vocab_size) +
                                  " is special, no random token can be drawn");
  }
  using rng::Purpose;
  p.select_stream = rng::Stream(seed, step, Purpose::generator_mask_select).with_index_base(index_base);
  p.replace_stream = rng::Stream(seed, step, Purpose::mask_replace).with_index_base(index_base);
  p.token_stream = rng::Stream(seed, step, Purpose::random_token).with_index_base(index_base);
  p.crop_stream = rng::Stream(seed, step, Purpose::crop).with_index_base(index_base);
  return p;
}

}  // namespace coco::kernels

namespace coco::kernels::cpu {

namespace {

void check_dims(int64_t B, int64_t T, const char* op) {
  if (B < 0 || T < 1 || T > kMaxMaskRowLength || B * T > INT32_MAX)
    throw std::invalid_argument(std::string(op) + ": shape (" + std::to_string(B) + ", " + std::to_string(T) +
                                "), expected B >= 0, 1 <= T <= " + std::to_string(kMaxMaskRowLength) +
                                " and B * T < 2^31");
}

bool lucidrains_eligible(int32_t token, const MaskKernelParams& p) {
  return token != p.pad_id && token != p.cls_id && !p.ignore_ids.contains(token);
}

// The `count` eligible positions with the smallest (u32(row*T + pos), pos) keys.
std::vector<int64_t> smallest_keys(const std::vector<int64_t>& eligible, const rng::Stream& stream, int64_t row,
                                   int64_t T, int64_t count) {
  std::vector<std::pair<uint32_t, int64_t>> keyed;
  keyed.reserve(eligible.size());
  for (int64_t pos : eligible) keyed.emplace_back(stream.u32(static_cast<uint64_t>(row * T + pos)), pos);
  std::sort(keyed.begin(), keyed.end());
  std::vector<int64_t> chosen;
  for (int64_t k = 0; k < count && k < static_cast<int64_t>(keyed.size()); ++k) chosen.push_back(keyed[k].second);
  return chosen;
}

// The k-th (0-based) id of [0, vocab) that is not in the sorted `excluded` set.
int32_t allowed_token(uint32_t k, const TokenIdSet& excluded) {
  int64_t id = k;
  for (int32_t i = 0; i < excluded.count; ++i)
    if (excluded.ids[i] <= id) ++id;
  return static_cast<int32_t>(id);
}

}  // namespace

void select_mask(const int32_t* tokens, int64_t B, int64_t T, const MaskKernelParams& p, uint8_t* selected,
                 int32_t* generator_input, int32_t* row_count) {
  check_dims(B, T, "kernels::cpu::select_mask");
  for (int64_t row = 0; row < B; ++row) {
    const int32_t* tok = tokens + row * T;
    std::vector<int64_t> eligible;
    for (int64_t pos = 0; pos < T; ++pos) {
      const bool ok = p.preset == MaskPreset::lucidrains ? lucidrains_eligible(tok[pos], p) : tok[pos] != p.pad_id;
      if (ok) eligible.push_back(pos);
    }
    const int32_t n = static_cast<int32_t>(eligible.size());
    int32_t k;
    if (p.preset == MaskPreset::lucidrains) {
      k = fraction_ceil(p.mask_fraction, n);
    } else {
      k = fraction_floor_plus_uniform(p.mask_fraction, n, p.select_stream.u32(static_cast<uint64_t>(row * T), 1));
    }
    k = std::min(k, n);
    std::vector<uint8_t> chosen(static_cast<size_t>(T), 0);
    for (int64_t pos : smallest_keys(eligible, p.select_stream, row, T, k)) chosen[pos] = 1;
    int32_t count = 0;
    for (int64_t pos = 0; pos < T; ++pos) {
      const int64_t i = row * T + pos;
      // paper: a drawn [CLS] is dropped, not redrawn.
      const bool sel = chosen[pos] && !(p.preset == MaskPreset::paper && tok[pos] == p.cls_id);
      selected[i] = sel ? 1 : 0;
      int32_t shown = tok[pos];
      if (sel) {
        ++count;
        const uint64_t index = static_cast<uint64_t>(i);
        if (p.replace_stream.u32(index, 0) < p.replace_threshold) {
          shown = p.mask_id;
        } else if (p.replace_stream.u32(index, 1) < p.random_token_threshold) {
          shown = allowed_token(p.token_stream.below(static_cast<uint32_t>(p.allowed_token_count), index, 0),
                                p.random_token_excluded);
        }
      }
      generator_input[i] = shown;
    }
    row_count[row] = count;
  }
}

void crop_view(const int32_t* tokens, int64_t B, int64_t T, const MaskKernelParams& p, int32_t* crop_tokens,
               int32_t* crop_length) {
  check_dims(B, T, "kernels::cpu::crop_view");
  for (int64_t row = 0; row < B; ++row) {
    const int32_t* tok = tokens + row * T;
    int32_t* out = crop_tokens + row * T;
    int32_t n_row = 0;
    std::vector<int64_t> eligible;
    for (int64_t pos = 0; pos < T; ++pos) {
      n_row += tok[pos] != p.pad_id ? 1 : 0;
      if (lucidrains_eligible(tok[pos], p)) eligible.push_back(pos);
    }
    std::vector<int32_t> kept;
    if (p.preset == MaskPreset::lucidrains) {
      int32_t m = std::min<int32_t>(fraction_floor(p.crop_fraction, n_row), static_cast<int32_t>(eligible.size()));
      m = std::min<int32_t>(m, static_cast<int32_t>(T - 1));
      std::vector<int64_t> chosen = smallest_keys(eligible, p.crop_stream, row, T, m);
      std::sort(chosen.begin(), chosen.end());
      for (int64_t pos : chosen) kept.push_back(tok[pos]);
    } else {
      const int32_t span =
          std::min<int32_t>(std::min(fraction_floor(p.crop_fraction, n_row), n_row), static_cast<int32_t>(T - 1));
      const uint32_t start =
          p.crop_stream.below(static_cast<uint32_t>(n_row - span + 1), static_cast<uint64_t>(row * T), 1);
      for (int32_t j = 0; j < span; ++j) kept.push_back(tok[start + j]);
    }
    out[0] = p.cls_id;
    for (int64_t j = 1; j < T; ++j)
      out[j] = j - 1 < static_cast<int64_t>(kept.size()) ? kept[static_cast<size_t>(j - 1)] : p.pad_id;
    crop_length[row] = 1 + static_cast<int32_t>(kept.size());
  }
}

void masked_positions(const uint8_t* selected, const int32_t* row_count, int64_t B, int64_t T, int32_t* positions,
                      int64_t capacity) {
  check_dims(B, T, "kernels::cpu::masked_positions");
  int64_t offset = 0;
  for (int64_t row = 0; row < B; ++row) {
    const int64_t count = std::max<int32_t>(row_count[row], 0);
    int64_t rank = 0;
    for (int64_t pos = 0; pos < T && rank < count; ++pos) {
      if (!selected[row * T + pos]) continue;
      if (offset + rank < capacity) positions[offset + rank] = static_cast<int32_t>(row * T + pos);
      ++rank;
    }
    offset += count;
  }
}

}  // namespace coco::kernels::cpu
