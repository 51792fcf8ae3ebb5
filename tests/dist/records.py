"""metrics.jsonl records of `coco train` runs compared, for the tests/dist/train_*.sh scripts (which put this
directory on PYTHONPATH through train_common.sh)."""
import json

# Not results of the run: the throughput, the launch shape, and the step profile (measured once per process,
# so it differs with the rank count and appears again after a resume).
def _is_result(key):
    return key not in ("tokens_per_s", "world_size", "profile_step") and not key.endswith("_per_step")


def load(path):
    """The records of a metrics.jsonl, without the step-profile keys."""
    return [{k: v for k, v in json.loads(line).items() if not (k.endswith("_per_step") or k == "profile_step")}
            for line in open(path)]


def compare(reference, other, what, tolerance=1e-5, skip=lambda key: False):
    """Asserts that two runs' records agree pairwise: the same keys (world_size aside), integers, strings and
    nulls equal, floats to a relative `tolerance` (a number, or a function of the reference record). `skip(key)`
    leaves keys out. Returns the worst relative difference of a float."""
    assert len(reference) == len(other), f"{what}: {len(reference)} records vs {len(other)}"
    worst = 0.0
    for a, b in zip(reference, other):
        assert a.keys() - {"world_size"} == b.keys() - {"world_size"}, (what, sorted(a.keys()), sorted(b.keys()))
        limit = tolerance(a) if callable(tolerance) else tolerance
        for key in a:
            if not _is_result(key) or skip(key):
                continue
            x, y = a[key], b[key]
            where = f"{what} step {a['step']} {a.get('split', 'train')} {key}: {x} vs {y}"
            if isinstance(x, float) or isinstance(y, float):
                rel = abs(x - y) / max(abs(x), 1e-12)
                worst = max(worst, rel)
                assert rel < limit, f"{where} (relative {rel:.3g}, limit {limit:g})"
            else:
                assert x == y, where
    return worst
