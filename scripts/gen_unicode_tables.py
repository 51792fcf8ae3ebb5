#!/usr/bin/env python3
"""Generates coco/unicode_tables.cpp: the Unicode properties the BERT WordPiece tokenizer needs.

Usage: python3 scripts/gen_unicode_tables.py [output.cpp]   (needs `pip install tokenizers`)

Base data is Python's `unicodedata` (categories, canonical decompositions, combining classes, lowercase).
Hugging Face `tokenizers` does not use one Unicode version, though: its Rust BertNormalizer takes
Cc/Cf/Co/Cs, Mn and P* from the `unicode_categories` crate (an old Unicode), NFD from
`unicode-normalization-alignments` (Unicode <= 12), and White_Space / to_lowercase from Rust's std (a new
Unicode). Since the C++ tokenizer must reproduce `tokenizers` exactly, every table computed from
`unicodedata` is then reconciled code point by code point against the installed `tokenizers` (its
normalizer and pre-tokenizer run on each single code point), and the script prints how many code points
each table had to take from `tokenizers`. The output is deterministic for a given pair of versions.
"""
import sys
import unicodedata

try:
    import tokenizers
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
except ImportError:
    sys.exit("gen_unicode_tables.py needs the PyPI package `tokenizers` (pip install tokenizers)")

MAX_CP = 0x110000
BLOCK = 128

DROPPED, WHITESPACE, PUNCTUATION, CHINESE, STRIP_DROPS, STRIP_MAPS, LOWER_MAPS, CCC_NONZERO = (1 << i for i in range(8))
CJK_RANGES = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]


HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3  # decomposed arithmetically in C++ (Unicode 3.12), not tabled


def hangul_decomposition(cp):
    index = cp - HANGUL_FIRST
    lead, vowel, trail = 0x1100 + index // 588, 0x1161 + (index % 588) // 28, 0x11A7 + index % 28
    return chr(lead) + chr(vowel) + (chr(trail) if trail != 0x11A7 else "")


def is_surrogate(cp):
    return 0xD800 <= cp <= 0xDFFF


def from_unicodedata(cp):
    """The properties as BERT's Python BasicTokenizer defines them, from this Python's Unicode tables."""
    c = chr(cp)
    cat = unicodedata.category(c)
    dropped = cp in (0, 0xFFFD) or (cat.startswith("C") and c not in "\t\n\r")
    whitespace = c in " \t\n\r" or cat == "Zs"
    punct = (33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126) or cat.startswith("P")
    chinese = any(a <= cp <= b for a, b in CJK_RANGES)
    stripped = "".join(x for x in unicodedata.normalize("NFD", c) if unicodedata.category(x) != "Mn")
    return dropped, whitespace, punct, chinese, stripped, c.lower(), unicodedata.combining(c)


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "coco/unicode_tables.cpp"
    clean = BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    cjk = BertNormalizer(clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    strip = BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False)
    lower = BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=True)
    split = BertPreTokenizer()

    flags = bytearray(MAX_CP)
    strip_map, lower_map, ccc = {}, {}, {}
    taken = {"dropped": 0, "whitespace": 0, "punctuation": 0, "chinese": 0, "strip": 0, "lowercase": 0, "ccc": 0}
    for cp in range(MAX_CP):
        if is_surrogate(cp):
            flags[cp] = DROPPED  # never reaches the tokenizer (invalid UTF-8), marked for safety
            continue
        c = chr(cp)
        py_dropped, py_space, py_punct, py_chinese, py_stripped, py_lower, py_ccc = from_unicodedata(cp)

        cleaned = clean.normalize_str("a" + c + "a")
        dropped = cleaned == "aa"
        pieces = [p for p, _ in split.pre_tokenize_str("a" + c + "a")]
        whitespace = pieces == ["a", "a"]
        if not dropped and (cleaned == "a a") != whitespace:
            sys.exit(f"U+{cp:04X}: clean_text and BertPreTokenizer disagree on whitespace")
        punct = pieces == ["a", c, "a"]
        chinese = cjk.normalize_str("a" + c + "a") == "a " + c + " a"
        stripped = strip.normalize_str(c)
        lowered = lower.normalize_str(c)
        # HF's NFD knows this combining class iff it reorders the pair U+1D16D (ccc 226), U+1D165 (ccc 216)
        # around the code point, i.e. the code point does not end the run of non-starters.
        probe = strip.normalize_str("\U0001D16D" + c + "\U0001D165")
        # A code point whose decomposition starts with a non-starter (U+0F73 -> U+0F71 U+0F72) counts as one.
        nfd_ccc = unicodedata.combining(unicodedata.normalize("NFD", c)[0])
        hf_ccc = nfd_ccc if probe.index("\U0001D165") < probe.index("\U0001D16D") else 0
        if hf_ccc == 0 and probe.index("\U0001D165") < probe.index("\U0001D16D"):
            sys.exit(f"U+{cp:04X}: tokenizers gives a combining class that unicodedata does not")
        if hf_ccc and py_ccc == 0 and stripped != "":
            sys.exit(f"U+{cp:04X}: decomposes to non-starters that survive accent stripping (unsupported)")

        for name, mine, theirs in (("dropped", py_dropped, dropped), ("whitespace", py_space, whitespace),
                                   ("punctuation", py_punct, punct), ("chinese", py_chinese, chinese),
                                   ("strip", py_stripped, stripped), ("lowercase", py_lower, lowered),
                                   ("ccc", py_ccc, hf_ccc)):
            taken[name] += mine != theirs

        f = 0
        f |= DROPPED if dropped else 0
        f |= WHITESPACE if whitespace else 0
        f |= PUNCTUATION if punct else 0
        f |= CHINESE if chinese else 0
        if stripped == "":
            f |= STRIP_DROPS
        elif stripped != c:
            f |= STRIP_MAPS
            if HANGUL_FIRST <= cp <= HANGUL_LAST:
                if stripped != hangul_decomposition(cp):
                    sys.exit(f"U+{cp:04X}: tokenizers decomposes this Hangul syllable differently")
            else:
                strip_map[cp] = stripped
        if lowered != c:
            f |= LOWER_MAPS
            lower_map[cp] = lowered
        if hf_ccc:
            f |= CCC_NONZERO
            ccc[cp] = hf_ccc
        flags[cp] = f

    # The C++ normalizer lowercases each accent-stripped code point as it goes instead of in a second pass. That
    # equals tokenizers' strip-then-lowercase order only if lowercasing never changes a combining class.
    for cp, lowered in lower_map.items():
        if cp in ccc:
            sys.exit(f"U+{cp:04X}: a non-starter with a lowercase mapping")
        if cp != 0x130 and any(ord(x) in ccc for x in lowered):
            sys.exit(f"U+{cp:04X}: lowercases to a non-starter")
    if any(0x130 in map(ord, target) for target in strip_map.values()):
        sys.exit("an accent-stripped code point maps to U+0130")

    # Two-stage table: the flag byte of code point cp is kBlocks[kBlockIndex[cp / BLOCK] * BLOCK + cp % BLOCK].
    blocks, block_ids, block_index = [], {}, []
    for start in range(0, MAX_CP, BLOCK):
        block = bytes(flags[start:start + BLOCK])
        if block not in block_ids:
            block_ids[block] = len(blocks)
            blocks.append(block)
        block_index.append(block_ids[block])

    pool = []

    def mapping_rows(table):
        rows = []
        for cp in sorted(table):
            target = [ord(x) for x in table[cp]]
            rows.append(f"{{0x{cp:X}, {len(pool)}, {len(target)}}}")
            pool.extend(target)
        return rows

    strip_rows = mapping_rows(strip_map)
    lower_rows = mapping_rows(lower_map)
    if len(pool) >= 1 << 16:
        sys.exit("mapping pool exceeds the uint16 offsets of CodepointMapping")
    ccc_rows = [f"{{0x{cp:X}, {v}}}" for cp, v in sorted(ccc.items())]

    def wrap(items, per_line):
        return "\n".join("    " + ", ".join(items[i:i + per_line]) + "," for i in range(0, len(items), per_line))

    lines = [
        "// Generated by scripts/gen_unicode_tables.py from Python's unicodedata "
        f"{unicodedata.unidata_version}, reconciled",
        f"// with Hugging Face tokenizers {tokenizers.__version__}. Do not edit; re-run the script.",
        f"// Code points whose value was taken from tokenizers because unicodedata differs: "
        + ", ".join(f"{k} {v}" for k, v in taken.items()) + ".",
        '#include "coco/unicode_tables.h"',
        "",
        "namespace coco::text::unicode {",
        "",
        f"static_assert(kBlockSize == {BLOCK});",
        f"const uint16_t kBlockIndex[{len(block_index)}] = {{",
        wrap([str(i) for i in block_index], 24),
        "};",
        f"const uint8_t kBlocks[{len(blocks) * BLOCK}] = {{",
        wrap([str(b) for block in blocks for b in block], 32),
        "};",
        f"const CodepointMapping kStripMappings[{len(strip_rows)}] = {{",
        wrap(strip_rows, 6),
        "};",
        f"const size_t kStripMappingCount = {len(strip_rows)};",
        f"const CodepointMapping kLowerMappings[{len(lower_rows)}] = {{",
        wrap(lower_rows, 6),
        "};",
        f"const size_t kLowerMappingCount = {len(lower_rows)};",
        f"const char32_t kMappingPool[{len(pool)}] = {{",
        wrap([f"0x{x:X}" for x in pool], 12),
        "};",
        f"const CombiningClass kCombiningClasses[{len(ccc_rows)}] = {{",
        wrap(ccc_rows, 8),
        "};",
        f"const size_t kCombiningClassCount = {len(ccc_rows)};",
        "",
        "}  // namespace coco::text::unicode",
        "",
    ]
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print(f"wrote {out_path}: {len(blocks)} blocks, {len(strip_rows)} strip mappings, {len(lower_rows)} lowercase "
          f"mappings, {len(ccc_rows)} combining classes; taken from tokenizers: {taken}")


if __name__ == "__main__":
    main()
