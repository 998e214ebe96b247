"""Goldens as the suites use them: the grade cascade, the obtained/accept update flow, which golden a device gets,
what makes one stale, and the committed golden against its X-ray fixtures."""

import json
import shutil

import pytest

from harness.core.errors import HarnessError
from harness.core.paths import REPO_ROOT, cache_dir
from harness.data import goldens, xrays
from harness.failures import garbage_output, loading
from harness.lab import captioner

CONFIG = {"configuration": "16bit", "dtype": "bfloat16", "recipe": "abc"}
CHEST = "frontal chest radiograph showing the lungs heart and ribs"
LEG, HAND = "radiograph of the lower leg showing the tibia", "radiograph of the hand and wrist"
MUST, MUST_NOT = ("chest", "lungs|lung", "radiograph|x-ray"), ("shirt", "fabric", "pattern")
H100 = "gpu-h100-80gb-hbm3"
WARM_CACHE = cache_dir()  # read before pytester moves HOME
pytest_plugins = ["pytester"]


def recorded(root, captions=None, device_class="cpu", arch="cpu", config=CONFIG):
    """The path of an accepted golden of model "m" under ``root``, each fixture's digest "d1"."""
    captions = captions or {"chest-pa": CHEST}
    digests = {fid: "d1" for fid in captions}
    path = goldens.write_obtained("m", device_class, config, {"arch": arch}, captions, digests, root=root)
    return goldens.accept(path)


def xray(fixture_id):
    return xrays.XrayFixture(fixture_id, "x.png", "CR", "-", MUST, MUST_NOT)


@pytest.mark.parametrize(
    "obtained, level",
    [
        (CHEST, "exact"),
        ("Frontal chest  radiograph showing the LUNGS heart and ribs.", "exact"),
        ("frontal chest radiograph showing the lungs heart", "token"),
        ("an x-ray of the chest with both lungs", "terms"),
        ("a shirt with geometric patterns", "mismatch"),
        ("frontal chest radiograph showing the lungs heart and ribs pattern", "mismatch"),
        ("radiograph of the lower leg", "mismatch"),
    ],
)
def test_grade_cascade(obtained, level):
    assert goldens.grade(obtained, CHEST, MUST, MUST_NOT).level == level


def test_forbidden_terms_are_named_and_whole_words():
    grade = goldens.grade("a shirt with geometric patterns", CHEST, MUST, MUST_NOT)
    assert grade.forbidden_terms == ("shirt",)
    assert "chest" in grade.missing_terms
    assert not goldens.mentions("patterned", "pattern")
    assert goldens.mentions("an X-ray", "radiograph|x-ray")


def test_semantic_grade_uses_the_embedder_only_when_needed():
    calls = []

    def embed(texts):
        calls.append(texts)
        return [[1.0, 0.0], [0.8, 0.6]]

    assert goldens.grade(CHEST, CHEST, MUST, MUST_NOT, embed).level == "exact"
    assert not calls
    grade = goldens.grade("thoracic image", CHEST, MUST, MUST_NOT, embed)
    assert grade.level == "semantic"
    assert grade.semantic_similarity == pytest.approx(0.8)
    assert calls


def test_a_missing_caption_is_graded_missing_and_shifts_no_later_grade(tmp_path):
    """Grades were once a dict of the captioned fixtures only, which the suite zipped with the fixtures:
    after a fixture without a caption, every later fixture was read with the grade of the next one."""
    golden = goldens.read(recorded(tmp_path, {"chest-pa": CHEST, "tibia-ap": LEG, "hand-pa": HAND}))
    fixtures = [xray("chest-pa"), xray("tibia-ap"), xray("hand-pa")]
    graded = goldens.grades({"chest-pa": CHEST, "hand-pa": HAND}, golden, fixtures, "the load ended in RuntimeError")
    assert [(fid, g.level) for fid, g in graded.items()] == [
        ("chest-pa", "exact"),
        ("tibia-ap", "missing"),
        ("hand-pa", "exact"),
    ]
    assert not graded["tibia-ap"].at_least("mismatch")
    assert graded["tibia-ap"].describe() == "missing, no caption: the load ended in RuntimeError"


def test_the_suites_grades_keep_every_fixture_of_a_load_that_stopped(tmp_path):
    """A load whose captioning failed after the first X-ray: its later X-rays are missing, under their own ids."""
    golden = goldens.read(recorded(tmp_path, {"chest-pa": CHEST, "tibia-ap": LEG, "hand-pa": HAND}))
    seen = loading.Observation(
        plan=None, snapshot="-", captions={"chest-pa": CHEST}, error=RuntimeError("no quant state")
    )
    graded = garbage_output.grades(seen, golden, [xray("chest-pa"), xray("tibia-ap"), xray("hand-pa")])
    assert {fid: g.describe().split(",")[0] for fid, g in graded.items()} == {
        "chest-pa": "exact",
        "tibia-ap": "missing",
        "hand-pa": "missing",
    }
    assert graded["hand-pa"].notes == ("no caption: the load ended in RuntimeError",)


@pytest.mark.slow
def test_offline_sentence_embedder_separates_captions():
    embed, why = goldens.embedder()
    if embed is None:
        pytest.skip(why)
    close = goldens.semantic_similarity(embed, "a chest x-ray showing both lungs", CHEST)
    garbage = goldens.semantic_similarity(embed, "a shirt with geometric patterns", CHEST)
    assert close > goldens.SEMANTIC_MIN > garbage


def test_update_flow_writes_obtained_and_never_the_golden(tmp_path):
    golden_path = recorded(tmp_path)
    before = golden_path.read_text()
    obtained = goldens.write_obtained(
        "m", "cpu", CONFIG, {}, {"chest-pa": "something else"}, {"chest-pa": "d1"}, root=tmp_path
    )
    assert obtained.name == "cpu.obtained.json"
    assert golden_path.read_text() == before
    assert goldens.load("m", "cpu", CONFIG, root=tmp_path).caption("chest-pa") == CHEST
    goldens.accept(obtained)
    assert goldens.load("m", "cpu", CONFIG, root=tmp_path).caption("chest-pa") == "something else"
    with pytest.raises(HarnessError, match="not an obtained golden"):
        goldens.accept(golden_path)


def test_golden_from_another_configuration_is_refused(tmp_path):
    recorded(tmp_path)
    with pytest.raises(HarnessError, match=r"different configuration \(dtype: golden 'bfloat16', this run 'float32'\)"):
        goldens.load("m", "cpu", {**CONFIG, "dtype": "float32"}, root=tmp_path)
    with pytest.raises(HarnessError, match="no golden for m on device class gpu-h100 .*record one"):
        goldens.load("m", "gpu-h100", CONFIG, root=tmp_path)


def test_golden_that_claims_another_device_is_refused(tmp_path):
    path = recorded(tmp_path)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "device_class": "gpu-h100"}))
    with pytest.raises(HarnessError, match="says it is for m on gpu-h100"):
        goldens.load("m", "cpu", CONFIG, root=tmp_path)


def test_stale_goldens_are_reported(tmp_path):
    golden = goldens.read(recorded(tmp_path, {"chest-pa": CHEST, "old": "x"}))
    assert goldens.stale(golden, {"chest-pa": "d1", "old": "d1"}) == []
    problems = goldens.stale(golden, {"chest-pa": "d2", "tibia-ap": "d3"})
    assert [p.split(":")[0] for p in problems] == ["chest-pa", "old", "tibia-ap"]
    assert "fixture changed" in problems[0]
    assert "no longer in the manifest" in problems[1]


def test_committed_golden_is_current_and_passes_its_fixtures(xray_fixtures):
    golden = goldens.load(captioner.MODEL_NAME, "cpu", captioner.golden_configuration())
    assert not goldens.stale(golden, {f.id: captioner.fixture_digest(f) for f in xray_fixtures})
    for item in xray_fixtures:
        grade = goldens.grade(golden.caption(item.id), item.description, item.must_mention, item.must_not_mention)
        assert grade.level == "exact", item.id


def test_a_device_without_its_own_golden_falls_back_like_expectations(tmp_path):
    """Goldens were once looked up by exact device class: any GPU but an H100 80GB got an error."""
    recorded(tmp_path)
    recorded(tmp_path, device_class=H100, arch="sm_90")
    own = goldens.select("m", H100, "sm_90", CONFIG, root=tmp_path)
    assert (own.device_class, own.required, own.matched) == (H100, "token", "this device")
    hopper = goldens.select("m", "gpu-h200", "sm_90", CONFIG, root=tmp_path)
    assert hopper.device_class == H100
    assert hopper.required == "token"
    assert "sm_90" in hopper.matched
    ampere = goldens.select("m", "gpu-a100-sxm4-80gb", "sm_80", CONFIG, root=tmp_path)
    assert ampere.device_class == "cpu"
    assert ampere.required == "terms"
    # a golden recorded in another configuration is passed over, and named when nothing else fits
    with pytest.raises(
        HarnessError, match=r"passed over cpu.json \(recipe: golden 'abc', this run 'new'\).*record one"
    ):
        goldens.select("m", "gpu-a100-sxm4-80gb", "sm_80", {**CONFIG, "recipe": "new"}, root=tmp_path)


def test_status_names_what_made_a_golden_stale_and_how_to_refresh_it(tmp_path):
    cpu_path = recorded(tmp_path)
    gpu_path = recorded(tmp_path, device_class=H100, arch="sm_90", config={**CONFIG, "recipe": "old"})
    found = dict(goldens.status({"m": CONFIG}, {"chest-pa": "d1", "tibia-ap": "d2"}, root=tmp_path))
    assert found[cpu_path] == ["tibia-ap: fixture has no golden caption"]
    assert found[gpu_path][0] == "recorded in another configuration: recipe: golden 'old', this run 'abc'"
    assert f"on a {H100} runner: tox -e gpu" in goldens.refresh_hint(goldens.read(gpu_path))


@pytest.mark.slow(seconds=135)  # on the H200 in a full GPU run: trains a captioner, runs the suite twice
def test_adding_a_fixture_then_the_update_flow(pytester, tmp_path, monkeypatch, harness_stack):
    """As the README says: add a fixture, run with --update-golden (it passes, and its summary gives the exact
    accept command), accept, run again: green. Before the update the stale golden fails with its refresh line."""
    root = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT / "fixtures", root / "fixtures")
    shutil.copy(REPO_ROOT / "matrix.toml", root)
    with open(root / "fixtures" / "xrays.toml", "a") as manifest:
        manifest.write(
            '\n[[fixture]]\nid = "chest-pa-j2k"\nsource = "pydicom-data:RG1_J2KI.dcm"\nmodality = "CR"\n'
            'body_part = "CHEST"\ndescription = "frontal chest radiograph showing the lungs heart and ribs"\n'
            'must_mention = ["chest", "lungs|lung"]\nmust_not_mention = ["shirt", "tibia"]\n'
        )
    # the suite's tests of the captioner's goldens; its FastVisionModel loads (a GPU runner's, each in a child
    # that imports unsloth) grade against the same golden and run as themselves in the same `tox -e gpu`
    suite = [str(REPO_ROOT / "suites" / "test_garbage_output.py"), "-k", "not fast_vision_model"]
    monkeypatch.setenv("QVL_ROOT", str(root))
    monkeypatch.setenv("QVL_CACHE", str(WARM_CACHE))  # pytester gives the run another HOME: keep the warm cache
    stale = pytester.runpytest_subprocess(suite[0], "-k", "goldens_are_current", "-p", "harness.pytest.plugin")
    stale.assert_outcomes(failed=1)
    # the refresh line names this device's way to re-record (a GPU runner's golden comes from tox -e gpu)
    refresh = "tox -e cell-canary" if harness_stack.device_class == "cpu" else "on a gpu-* runner: tox -e gpu"
    stale.stdout.fnmatch_lines([f"*chest-pa-j2k: fixture has no golden caption*refresh: {refresh}*"])
    update = pytester.runpytest_subprocess(*suite, "--update-golden", "-p", "harness.pytest.plugin")
    # the run records the golden of its own device (cpu here, gpu-h200 on an H200 runner)
    obtained = goldens.obtained_path("tiny-captioner", harness_stack.device_class, root / "fixtures" / "goldens")
    update.stdout.fnmatch_lines([f"review {obtained}, then: qvl-harness goldens accept {obtained}"])
    assert update.ret == 0, update.stdout.str()[-2000:]
    goldens.accept(obtained)
    assert pytester.runpytest_subprocess(*suite, "-p", "harness.pytest.plugin").ret == 0
