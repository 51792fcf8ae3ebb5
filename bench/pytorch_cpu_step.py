#!/usr/bin/env python3
"""PyTorch baseline for `coco-bench --cpu-step` (issue #18): whole COCO-LM training steps on the CPU with
lucidrains' coco-lm-pytorch 0.0.2 + x-transformers 0.8.4, eager or torch.compile, printing tokens/s in the
same "median ..." line format as coco-bench so bench/cpu_step_compare.sh can put them side by side.

Shapes (as configs/demo.json with objective.preset=lucidrains, and the larger shape of the issue):
  demo:  d = 128, generator 2 layers, discriminator 4 layers, 4 heads, FF x4, 16 x 64 tokens, vocabulary 8192
  large: d = 256, generator 2 layers, discriminator 6 layers, 16 x 128 tokens
Both: relative-position bias (32 buckets, max distance 128), dropout 0.1, tied token embeddings, AdamW
(betas 0.9/0.98, eps 1e-6, weight decay 0.01), gradient clipping at norm 2, f32.

  pip install torch coco-lm-pytorch==0.0.2 x-transformers==0.8.4 einops entmax --no-deps (plus torch's deps)
  python3 bench/pytorch_cpu_step.py --shape demo --threads 1 [--compile] [--warmup 2] [--steps 5] [--runs 1]
"""
import argparse
import statistics
import sys
import time

import torch
from coco_lm_pytorch import COCO
from x_transformers import Encoder, TransformerWrapper

SHAPES = {
    "demo": dict(dim=128, gen_depth=2, disc_depth=4, seq=64),
    "large": dict(dim=256, gen_depth=2, disc_depth=6, seq=128),
}


def build(shape, vocab):
    s = SHAPES[shape]

    def encoder(depth):
        return Encoder(dim=s["dim"], depth=depth, heads=4, rel_pos_bias=True, attn_dropout=0.1, ff_dropout=0.1)

    generator = TransformerWrapper(num_tokens=vocab, max_seq_len=128, emb_dropout=0.1,
                                   attn_layers=encoder(s["gen_depth"]))
    discriminator = TransformerWrapper(num_tokens=vocab, max_seq_len=128, emb_dropout=0.1,
                                       attn_layers=encoder(s["disc_depth"]))
    discriminator.token_emb = generator.token_emb  # tied, as the coco-lm-pytorch README does
    # The discriminator returns its final-norm states (as cocolm's does): no vocabulary projection that
    # the objective would discard (the README's discr_layer='norm' hook still computes it).
    discriminator.to_logits = torch.nn.Identity()
    return COCO(generator=generator, discriminator=discriminator, discr_dim=s["dim"], num_tokens=vocab,
                discr_layer=-1, mask_prob=0.15, replace_prob=0.85, pad_token_id=0, cls_token_id=2,
                mask_token_id=4, mask_ignore_token_ids=[3])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="demo")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (default: eager)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--runs", type=int, default=1)
    a = p.parse_args()
    if a.threads < 1 or a.steps < 1 or a.runs < 1 or a.batch < 2:
        sys.exit("pytorch_cpu_step.py: --threads, --steps, --runs must be >= 1 and --batch >= 2")

    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    seq = SHAPES[a.shape]["seq"]
    model = build(a.shape, a.vocab)
    params = [q for q in model.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    step_model = torch.compile(model) if a.compile else model
    batches = [torch.randint(5, a.vocab, (a.batch, seq)) for _ in range(4)]
    print(f"PyTorch {torch.__version__} ({'torch.compile' if a.compile else 'eager'}), "
          f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}; "
          f"shape {a.shape}: {sum(q.numel() for q in params)} parameters, micro-batch {a.batch} x {seq} tokens")

    step = 0
    loss = None

    def train_step():
        nonlocal step, loss
        loss = step_model(batches[step % len(batches)])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 2.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

    start = time.perf_counter()
    for _ in range(a.warmup):
        train_step()
    print(f"warm-up: {a.warmup} steps in {time.perf_counter() - start:.1f} s (includes compilation)")
    rates = []
    for r in range(a.runs):
        start = time.perf_counter()
        for _ in range(a.steps):
            train_step()
        seconds = time.perf_counter() - start
        rates.append(a.batch * seq * a.steps / seconds)
        print(f"run {r + 1}: {a.steps} steps in {seconds:.3f} s: {rates[-1]:.0f} tokens/s "
              f"({1e3 * seconds / a.steps:.1f} ms/step)")
    print(f"median {statistics.median(rates):.0f} tokens/s at {a.threads} thread{'s' if a.threads != 1 else ''}; "
          f"loss after {step} steps {loss.item():.9g}")


if __name__ == "__main__":
    main()
