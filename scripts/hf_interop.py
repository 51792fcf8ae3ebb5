#!/usr/bin/env python3
"""Checks `coco export` folders with Hugging Face `transformers` and makes BERT / ELECTRA folders for
`coco import` (tests/interop/test_hf_*.cpp drive it).

  hf_interop.py probe                      exit 0 when torch, transformers, safetensors and numpy are installed,
                                           else 3 (found without importing them: each test process probes, and
                                           importing torch + transformers takes seconds; the commands below
                                           import them and exit 3 when that fails)
  hf_interop.py forward DIR DUMP [DIR DUMP ...]
                                           DUMP (safetensors, written by the test from coco's own forward pass):
                                           input_ids, attention_mask (B, T), hidden (B, T, d) and optionally
                                           replaced_logits (B, T) or mlm_logits (B, T, V). Loads DIR with
                                           transformers and requires its hidden states (and logits) within 1e-5
  hf_interop.py tokenizer DIR EXPECTED [DIR EXPECTED ...]
                                           EXPECTED (JSON): {"documents": [text, ...], "ids": [[id, ...], ...],
                                           "lowercase": bool}; AutoTokenizer.from_pretrained(DIR) must give
                                           exactly these ids and that casing
  hf_interop.py finetune TEXT TEXT DIR...  for each DIR: AutoModelForSequenceClassification, labelled sentences from
                                           the two TEXT files (label = which file), 12 steps of AdamW without
                                           dropout: the loss must fall by at least 10%;
                                           AutoModelForTokenClassification must load and train one step
  hf_interop.py make-bert OUT VOCAB        a tiny random BertForMaskedLM over VOCAB's tokens, saved to OUT
  hf_interop.py make-electra OUT VOCAB     tiny random ElectraForPreTraining (OUT/discriminator) and
                                           ElectraForMaskedLM (OUT/generator) sharing their embeddings
Remote code (COCO-LM folders) is trusted: the folders are the test's own exports.
Exit status: 0 ok, 1 mismatch, 2 usage, 3 dependency missing.
"""
import json
import os
import shutil
import sys

MISSING_DEPENDENCY = 3
TOLERANCE = 1e-5


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def is_cocolm(folder):
    with open(os.path.join(folder, "config.json")) as f:
        return json.load(f).get("model_type") == "cocolm"


def load_dump(path):
    from safetensors.numpy import load_file

    return load_file(path)


def max_diff(torch, a, b):
    return float((a.double() - b.double()).abs().max())


def forward(folder, dump_path):
    import torch
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    torch.manual_seed(0)
    dump = load_dump(dump_path)
    ids = torch.from_numpy(dump["input_ids"].astype("int64"))
    mask = torch.from_numpy(dump["attention_mask"].astype("int64"))
    with open(os.path.join(folder, "config.json")) as f:
        architecture = json.load(f)["architectures"][0]
    auto = AutoModelForMaskedLM if architecture.endswith("ForMaskedLM") else AutoModelForPreTraining
    model, info = auto.from_pretrained(folder, trust_remote_code=True, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        fail(f"{folder}: loading reported {problems}")
    if next(model.parameters()).dtype != torch.float32:
        fail(f"{folder}: loaded as {next(model.parameters()).dtype}, expected float32")
    model.eval()
    with torch.no_grad():
        hidden = getattr(model, model.base_model_prefix)(input_ids=ids, attention_mask=mask).last_hidden_state
        out = model(input_ids=ids, attention_mask=mask)
    diff = max_diff(torch, hidden, torch.from_numpy(dump["hidden"]))
    print(f"{type(model).__name__}: hidden states {tuple(hidden.shape)}, max |coco - transformers| = {diff:.3g}")
    if not diff <= TOLERANCE:
        fail(f"hidden states differ by {diff} > {TOLERANCE}")
    for key in ("replaced_logits", "mlm_logits"):
        if key in dump:
            logits = out.logits
            if tuple(logits.shape) != tuple(dump[key].shape):
                fail(f"{key}: shape {tuple(logits.shape)}, coco's {tuple(dump[key].shape)}")
            diff = max_diff(torch, logits, torch.from_numpy(dump[key]))
            print(f"{type(model).__name__}: {key} {tuple(logits.shape)}, max |coco - transformers| = {diff:.3g}")
            if not diff <= TOLERANCE:
                fail(f"{key} differ by {diff} > {TOLERANCE}")
    print("OK")


def tokenizer(folder, expected_path):
    from transformers import AutoTokenizer

    with open(expected_path) as f:
        expected = json.load(f)
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    lower = getattr(tok, "do_lower_case", None)
    if lower is not None and lower != expected["lowercase"]:
        fail(f"do_lower_case is {lower}, coco prepare's casing is lowercase={expected['lowercase']}")
    mismatches = 0
    for text, ids in zip(expected["documents"], expected["ids"]):
        got = tok(text, add_special_tokens=False)["input_ids"]
        if got != ids:
            mismatches += 1
            first = next((i for i, (a, b) in enumerate(zip(got, ids)) if a != b), min(len(got), len(ids)))
            print(f"document {text[:60]!r}...: first difference at token {first}: "
                  f"transformers {got[first:first + 5]}, coco {ids[first:first + 5]}")
    with_specials = tok(expected["documents"][0])["input_ids"]
    if with_specials[0] != tok.cls_token_id or with_specials[-1] != tok.sep_token_id:
        fail("the default encoding is not [CLS] ... [SEP]")
    if mismatches:
        fail(f"{mismatches} of {len(expected['ids'])} documents tokenize differently")
    print(f"{type(tok).__name__}: {len(expected['ids'])} documents, "
          f"{sum(len(i) for i in expected['ids'])} tokens, all ids equal")
    print("OK")


def sentences(path):
    import re

    with open(path, encoding="utf-8") as f:
        text = f.read()
    parts = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]
    return parts


def finetune(folder, text_paths):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    texts, labels = [], []
    for label, path in enumerate(text_paths):
        for s in sentences(path)[:8]:
            texts.append(s)
            labels.append(label)
    batch = tok(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
    labels = torch.tensor(labels)
    # Without dropout the 12 full-batch steps are deterministic, so "falling" is a firm criterion.
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    if is_cocolm(folder):
        no_dropout["embedding_dropout_prob"] = 0.0
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, trust_remote_code=True,
                                                               **no_dropout)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"{type(model).__name__}: loss " + " ".join(f"{l:.4f}" for l in losses))
    if not losses[-1] < 0.9 * losses[0]:
        fail(f"the loss did not fall by 10% ({losses[0]:.4f} -> {losses[-1]:.4f})")
    tagger = AutoModelForTokenClassification.from_pretrained(folder, num_labels=3, trust_remote_code=True)
    tags = torch.randint(0, 3, batch["input_ids"].shape)
    loss = tagger(**batch, labels=tags).loss
    loss.backward()
    if not torch.isfinite(loss):
        fail("token classification loss is not finite")
    print(f"{type(tagger).__name__}: loss {float(loss):.4f}")
    print("OK")


def copy_vocabulary(vocab_dir, out):
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if os.path.exists(os.path.join(vocab_dir, name)):
            shutil.copy(os.path.join(vocab_dir, name), os.path.join(out, name))


def vocab_size(vocab_dir):
    with open(os.path.join(vocab_dir, "vocab.txt"), encoding="utf-8") as f:
        return sum(1 for _ in f)


def randomize_layer_norms(torch, model):
    # Fresh models have LayerNorm 1 / 0 and zero biases: perturb them so that a mapping mistake shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(0.05 * torch.randn_like(p))


def make_bert(out, vocab_dir):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(1)
    config = BertConfig(vocab_size=vocab_size(vocab_dir), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, type_vocab_size=2, pad_token_id=0)
    model = BertForMaskedLM(config)
    randomize_layer_norms(torch, model)
    model.save_pretrained(out, safe_serialization=True)
    copy_vocabulary(vocab_dir, out)
    print(f"BertForMaskedLM in {out}")


def make_electra(out, vocab_dir):
    import torch
    from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

    torch.manual_seed(2)
    common = dict(vocab_size=vocab_size(vocab_dir), embedding_size=32, max_position_embeddings=64, pad_token_id=0)
    discriminator = ElectraForPreTraining(ElectraConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                        intermediate_size=64, **common))
    generator = ElectraForMaskedLM(ElectraConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=64, **common))
    randomize_layer_norms(torch, discriminator)
    randomize_layer_norms(torch, generator)
    # ELECTRA's generator and discriminator share their embeddings.
    generator.electra.embeddings.load_state_dict(discriminator.electra.embeddings.state_dict())
    for part, model in (("discriminator", discriminator), ("generator", generator)):
        path = os.path.join(out, part)
        model.save_pretrained(path, safe_serialization=True)
        copy_vocabulary(vocab_dir, path)
    print(f"ElectraForPreTraining and ElectraForMaskedLM in {out}")


def probe():
    import importlib.metadata
    import importlib.util

    missing = [m for m in ("numpy", "safetensors", "torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"missing dependency: {', '.join(missing)}")
        return MISSING_DEPENDENCY
    print(", ".join(f"{m} {importlib.metadata.version(m)}" for m in ("torch", "transformers")))
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    if argv[1:] == ["probe"]:
        return probe()
    try:
        import numpy  # noqa: F401
        import safetensors  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"missing dependency: {e}")
        return MISSING_DEPENDENCY
    command, args = argv[1], argv[2:]
    import transformers

    transformers.logging.set_verbosity_error()
    if command == "forward" and len(args) >= 2 and len(args) % 2 == 0:
        for i in range(0, len(args), 2):
            forward(args[i], args[i + 1])
    elif command == "tokenizer" and len(args) >= 2 and len(args) % 2 == 0:
        for i in range(0, len(args), 2):
            tokenizer(args[i], args[i + 1])
    elif command == "finetune" and len(args) >= 3:
        for folder in args[2:]:
            finetune(folder, args[:2])
    elif command == "make-bert" and len(args) == 2:
        make_bert(*args)
    elif command == "make-electra" and len(args) == 2:
        make_electra(*args)
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
