#!/usr/bin/env python3
"""Writes the WordPiece golden files the C++ tokenizer tests compare against.

Usage: python3 scripts/make_wordpiece_golden.py [out_dir]   (default tests/data/wordpiece; needs
`pip install tokenizers`). Reads the reference vocab.txt / tokenizer.json from ../shared/reference/golden
(override with COCO_SHARED_DIR) and copies them into out_dir.

expected.jsonl: one line per text, {"text", "ids", "cased_ids", "words"}: `ids` is what Hugging Face
`tokenizers` gives for the reference (uncased) tokenizer.json, with [CLS]/[SEP]; `cased_ids` the same model
behind BertNormalizer(lowercase=False) (no lowercasing, no accent stripping); `words` the uncased normalizer +
BertPreTokenizer output for the whole text (no special-token split), which pins normalization even where the
vocabulary maps different words to the same [UNK]. The texts are hand-written edge cases
plus seeded random mixes; JSON escapes keep control characters readable.

codepoints.jsonl: one line per block of 4096 code points (surrogates skipped), {"first", "last", "count",
"fnv"}: the ids of the text made of, for every code point c of the block, c + "a" + c + c + " ", as their
count and 64-bit FNV-1a over the little-endian uint32 ids (uncased, no [CLS]/[SEP]), and the words of the
normalized + pre-tokenized text, as their count and FNV-1a over each word's UTF-8 followed by '\n'. It pins
the Unicode tables (drop, whitespace, punctuation, CJK, accents, lowercase) for every code point in little space.
"""
import json
import os
import random
import shutil
import sys

from tokenizers import Tokenizer, normalizers
from tokenizers.implementations import BertWordPieceTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("COCO_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
GOLDEN = os.path.join(SHARED, "reference", "golden")
BLOCK = 4096

HANDWRITTEN = [
    "", " ", "   \t\n  ", "\n", "\u3000\u00a0\u2028\u2029", "Hello, World!", "hello world", "HELLO WORLD",
    "The quick brown fox jumps over the lazy dog.", "i like strawberries", "unaffable", "un-affable",
    "Don't stop—it's 3.14159 $100 @home #tag", "e-mail: someone@example.com, web: https://example.org/a?b=c&d=e",
    "C++ is `fun` ~ (really) [maybe] {sure} <tag> a|b a\\b a^b a=b a+b a*b 100% #1 ~~~", "...!!!???", "'quoted' \"double\"",
    "snake_case_identifier and camelCaseIdentifier and kebab-case-identifier",
    "1,234,567.89 1.5e-10 0x1F 3/4 12:30pm 2024-01-31", "¡Hola! ¿Qué tal? Ça va très bien, merci.",
    "Crème Brûlée naïve café résumé façade coöperate", "Straße Größe Übermaß ÄÖÜ äöü ß ẞ",
    "Tiếng Việt có dấu: Hà Nội, Đà Nẵng, Huế", "Zażółć gęślą jaźń ŁÓDŹ", "İstanbul ıiİI ğüşöç",
    "Ελληνικά: ΟΔΥΣΣΕΥΣ Οδυσσεύς σοφός ΣΊΣΥΦΟΣ άέήίόύώ ΐΰ", "Русский текст: Ёлка, ёж, Й й", "Українська: Ї ї Є є Ґ ґ",
    "العربية: مَرْحَبًا بِكُمْ", "עברית: שָׁלוֹם עוֹלָם", "हिन्दी: नमस्ते दुनिया क़ ख़ ग़", "বাংলা ভাষা", "தமிழ் மொழி",
    "ภาษาไทย สวัสดีครับ", "日本語のテキスト：ひらがな、カタカナ、漢字。", "ｶﾀｶﾅ ﾊﾝｶｸ", "한국어 텍스트: 안녕하세요 세계", "각",
    "北京欢迎你", "中文，标点。“引号”《书名》", "混合English和中文mixed", "𠀀𠀁 𪜀 𫝀 𫠠 𬺰 丽 豈 更 ︿", "兀 ⼀ ㊀ ㈠",
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ １２３", "nbsp\u00a0here\ttab\rcr\nlf", "ﬁ ﬂ ﬃ Æ æ Œ œ Ĳ", "x² H₂O ½ ¼ ℃ ℉ Å Ω K ™ ©",
    "Ⅻ ⅻ ① ⑴ ⒜", "a\u0301 e\u0300 o\u0308 n\u0303 a\u0316\u0301 a\u0301\u0316", "\u0301\u0301start with marks",
    "zero\u200bwidth\u200cnon\u200djoiner", "soft\u00adhyphen", "bom\ufeffinside", "\ufeffleading bom",
    "control\x00null\x01soh\x07bel\x1besc\x7fdel\x85nel", "replacement\ufffdchar", "private\ue000use\U000f0000",
    "tabs\tand\vvertical\fform feed", "\x1c\x1d\x1e\x1f separators", "emoji 😀 😃 👍🏽 👨‍👩‍👧‍👦 🇺🇸 ❤️ ✨",
    "🥰 🫠 🦄 🧑‍💻 ☕ ⚡ 🏳️‍🌈", "math: ∀x∈ℝ, ∃y: x≤y ∧ y≠∞; ∑∏∫√ ±×÷", "arrows ← → ↑ ↓ ⇒ ⇔", "box ─│┌┐└┘ ░▒▓█",
    "currency $ € £ ¥ ₹ ₽ ₿ ¢", "quotes „deutsch“ «français» ‹single› 「日本」 『二重』", "dashes ‐ ‑ ‒ – — ― ⸺",
    "ellipsis… bullet• middle·dot", "¶ § † ‡ ※ ‰", "[MASK] is here", "a[MASK]b", "[mask] lowercase is not special",
    "[CLS] [SEP] [PAD] [UNK] [MASK]", "[MASK][MASK][MASK]", "[MAS K] [UNK", "trailing [SEP]", "x" * 100,
    "y" * 101, "z" * 150 + " short", "é" * 100, "é" * 101, "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis", "antidisestablishmentarianism floccinaucinihilipilification",
    "the" * 40, "ab" * 55, "Mixed.Case.Dotted.Words", "don't can't won't shouldn't y'all", "U.S.A. e.g. i.e. etc.",
    "\U0001d16d\U0001d165 \U0001d15f \U0001d160", "\u0f73\u0f75 \u0f71\u0f72", "\u0344 \u0340 \u0341 \u0343",
    "a\U0001d16d\u0301\U0001d165 a\U0001d16d\u034f\U0001d165", "\u1734 \u1715 \u302e\u302f", "ǅ ǈ ǋ ǲ Ǆ", "Ǳ ǲ ǳ ϴ ẞ ß", "\u0130\u0307 I\u0307",
    "ΣΑΣ σας Σ", "ａｂｃ ＡＢＣ", "˙ ˚ ¨ ´ ` ^ ~ ¸", "ノート　ＰＣ", "ㄱㄴㄷ ㅏㅑ", "ꙮ ꝏ Ꞵ ꞵ", "\U00010400\U00010428",
    "\U0001e900\U0001e922", "\U00016e40\U00016e60", "ᏣᎳᎩ ꭰ", "Ⴀ ⴀ Ა ა", "a\u034f\u0301", "\u2e43\u2e44 \u061d \u166d",
    "\u0890\u0891 \u08e2 \U000110cd \U00013430", "\u08d3\u08d4 \u09fe \U00011938",
    "line one\nline two\n\nparagraph two", "words   with     many      spaces", "\t\tindented\ttext",
    "ends with space ", " starts with space", "ΑΒΓ αβγ", "ⓐⓑⓒ Ⓐ", "🄰🄱", "𝐀𝐁𝐂 𝒶𝒷𝒸 𝔸𝔹ℂ", "'' \"\" `` ''",
]


def random_texts(vocab_tokens):
    rng = random.Random(20240611)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        " \t\n.,;:!?'\"()[]{}<>-_/\\@#$%^&*+=|~`",
        "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝßĀāĂăĄąĆćŒœŠšŸŽž",
        "\u0300\u0301\u0302\u0303\u0308\u030a\u0316\u0323\u0327\u0345\u034f\u05b0\u064b\u0902\u093c\u0e31",
        "一二三中国人日本語漢字学生北京欢迎你豈更兀𠀀",
        "αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔΣΩάέήίόύώ",
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙ",
        "가나다라마바사아자차카타파하힣ㄱㅏ",
        "😀👍🏽❤️✨🇺🇸\u200d\ufe0f",
        "\x00\x01\x07\x1b\x7f\x85\u200b\u200c\u200d\u00ad\ufeff\ufffd\ue000\u2028\u3000\u00a0",
        "–—…•·«»„“”‘’¡¿§¶†‡",
    ]
    texts = []
    for _ in range(160):
        length = rng.randint(1, 60)
        weights = [rng.random() for _ in pools]
        chars = []
        for _ in range(length):
            pool = rng.choices(pools, weights)[0]
            chars.append(rng.choice(pool))
        texts.append("".join(chars))
    # Words glued from vocabulary pieces exercise the greedy longest match.
    pieces = [t for t in vocab_tokens if not t.startswith("[") and t.isascii() and t.isalpha()]
    for _ in range(60):
        words = []
        for _ in range(rng.randint(1, 6)):
            word = rng.choice(pieces)
            for _ in range(rng.randint(0, 3)):
                word += rng.choice(pieces).removeprefix("##")
            words.append(word)
        texts.append(" ".join(words))
    return texts


def codepoint_text(first, last):
    return "".join(chr(cp) + "a" + chr(cp) + chr(cp) + " " for cp in range(first, last + 1)
                   if not 0xD800 <= cp <= 0xDFFF)


def fnv1a_ids(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        for byte in i.to_bytes(4, "little"):
            h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def fnv1a_words(words):
    h = 0xCBF29CE484222325
    for word in words:
        for byte in word.encode("utf-8") + b"\n":
            h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data", "wordpiece")
    os.makedirs(out_dir, exist_ok=True)
    for name in ("vocab.txt", "tokenizer.json"):
        shutil.copyfile(os.path.join(GOLDEN, name), os.path.join(out_dir, name))
    uncased = Tokenizer.from_file(os.path.join(GOLDEN, "tokenizer.json"))
    cased = Tokenizer.from_file(os.path.join(GOLDEN, "tokenizer.json"))
    cased.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                                                  lowercase=False)
    from_vocab_txt = BertWordPieceTokenizer(os.path.join(GOLDEN, "vocab.txt"), lowercase=True)
    vocab_tokens = [line.rstrip("\n") for line in open(os.path.join(GOLDEN, "vocab.txt"), encoding="utf-8")]

    texts = HANDWRITTEN + random_texts(vocab_tokens)
    with open(os.path.join(out_dir, "expected.jsonl"), "w", encoding="ascii") as out:
        for text in texts:
            ids = uncased.encode(text).ids
            if from_vocab_txt.encode(text).ids != ids:
                sys.exit(f"tokenizer.json and vocab.txt tokenizers disagree on {text!r}")
            words = [w for w, _ in uncased.pre_tokenizer.pre_tokenize_str(uncased.normalizer.normalize_str(text))]
            record = {"text": text, "ids": ids, "cased_ids": cased.encode(text).ids, "words": words}
            out.write(json.dumps(record, ensure_ascii=True) + "\n")

    no_specials = Tokenizer.from_file(os.path.join(GOLDEN, "tokenizer.json"))
    normalizer, pre_tokenizer = no_specials.normalizer, no_specials.pre_tokenizer
    with open(os.path.join(out_dir, "codepoints.jsonl"), "w", encoding="ascii") as out:
        for first in range(0, 0x110000, BLOCK):
            last = first + BLOCK - 1
            text = codepoint_text(first, last)
            ids = no_specials.encode(text, add_special_tokens=False).ids
            words = [w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))]
            out.write(json.dumps({"first": first, "last": last, "count": len(ids), "fnv": f"{fnv1a_ids(ids):016x}",
                                  "words": len(words), "words_fnv": f"{fnv1a_words(words):016x}"}) + "\n")
    print(f"wrote {len(texts)} texts to {out_dir}/expected.jsonl and {0x110000 // BLOCK} code point blocks to "
          f"{out_dir}/codepoints.jsonl")


if __name__ == "__main__":
    main()
