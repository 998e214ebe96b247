"""The local hub, driven by the real huggingface_hub and transformers clients over loopback HTTP."""

import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import huggingface_hub
import pytest
import transformers
from huggingface_hub import HfFileSystem, constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from harness.cli import build_parser
from harness.core.errors import HarnessError
from harness.core.paths import REPO_ROOT
from harness.data import hub as hub_module
from harness.data.hub import load_snapshot, parse_snapshot
from harness.data.hub_server import ACCESS_TOKEN, LocalHub, pointed_at
from harness.lab import quant, tinymodel

ABSENT_72B_DYNAMIC = "unsloth/Qwen2-VL-72B-Instruct-unsloth-bnb-4bit"
PREQUANTIZED = "unsloth/Qwen2-VL-2B-Instruct-bnb-4bit"
DYNAMIC = "unsloth/Qwen2-VL-2B-Instruct-unsloth-bnb-4bit"
FULL = "unsloth/Qwen2-VL-2B-Instruct"


def served(hub, repo) -> Path:
    """The folder the hub serves for ``repo``."""
    return hub.checkpoints(hub.snapshot.find(repo).kind)


@pytest.fixture
def hub(hub_for):
    """The December 2024 hub, with this process's clients pointed at it and an empty cache."""
    served = hub_for("2024-12")
    served.clear_requests()
    with pointed_at(served):
        yield served


@pytest.fixture(scope="module")
def access_hub(tmp_path_factory):
    """A hub with one gated and one private repo."""
    path = tmp_path_factory.mktemp("hub") / "access.toml"
    path.write_text(
        'description = "gated and private"\ndate = 2025-01-01\n'
        '[[repos]]\nid = "meta-llama/Gated-VL"\ngated = true\n'
        '[[repos]]\nid = "someone/Private-VL"\nprivate = true\n'
    )
    with LocalHub(path, tinymodel.standins()) as served:
        yield served


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def raw(hub, method, path, **headers):
    """One request straight to the server: (status, headers, body)."""
    host, port = hub.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


# --- huggingface_hub ---------------------------------------------------------------------------


def test_hf_hub_download_serves_the_checkpoint_bytes(hub):
    local = huggingface_hub.hf_hub_download(PREQUANTIZED, "model.safetensors")
    assert sha256(local) == sha256(served(hub, PREQUANTIZED) / "model.safetensors")
    assert [(r.method, r.status) for r in hub.requests if r.path.endswith("/model.safetensors")] == [
        ("HEAD", 200),
        ("GET", 200),
    ]


def test_snapshot_download_fetches_every_file_but_dotfiles(hub):
    folder = Path(huggingface_hub.snapshot_download(DYNAMIC))
    source = served(hub, DYNAMIC)
    expected = {p.name for p in source.iterdir() if not p.name.startswith(".")} | {".gitattributes"}
    assert {p.name for p in folder.iterdir()} == expected
    assert all(sha256(folder / name) == sha256(source / name) for name in expected - {".gitattributes"})
    assert "*.safetensors filter=lfs" in (folder / ".gitattributes").read_text()


def test_model_info_and_repo_exists(hub, hub_for):
    info = huggingface_hub.model_info(PREQUANTIZED.lower(), files_metadata=True)
    assert info.id == PREQUANTIZED and info.private is False and info.gated is False
    assert "llm_int8_skip_modules" not in info.config["quantization_config"]  # null in the real plain repos
    weights = next(s for s in info.siblings if s.rfilename == "model.safetensors")
    assert weights.lfs.sha256 == sha256(served(hub, PREQUANTIZED) / "model.safetensors")
    # The commit sha is a function of the repo and its files: another snapshot serving them agrees.
    assert json.loads(hub_for("2025-02").answer("GET", f"/api/models/{PREQUANTIZED}", {}).body)["sha"] == info.sha
    assert huggingface_hub.repo_exists(PREQUANTIZED)
    assert not huggingface_hub.repo_exists(ABSENT_72B_DYNAMIC)


def test_list_repo_tree_and_paths_info(hub):
    api = huggingface_hub.HfApi()
    files = {f.path for f in api.list_repo_tree(FULL, recursive=True)}
    assert {"config.json", "model.safetensors", ".gitattributes"} <= files and ".complete" not in files
    found = api.get_paths_info(FULL, ["config.json", "model.safetensors", "missing.bin"])
    assert [f.path for f in found] == ["config.json", "model.safetensors"]
    assert found[0].lfs is None and found[1].lfs.size == found[1].size
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(FULL, path_in_repo="no-such-folder"))


def test_hffilesystem_glob_lists_json_files_and_reports_an_absent_repo(hub):
    found = HfFileSystem().glob(f"{DYNAMIC.lower()}/*.json")
    assert "unsloth/qwen2-vl-2b-instruct-unsloth-bnb-4bit/config.json" in found
    assert all(p.endswith(".json") for p in found)
    # The error unsloth's users saw in unslothai/unsloth#1361.
    with pytest.raises(
        FileNotFoundError, match=r"qwen2-vl-72b-instruct-unsloth-bnb-4bit/\*\.json \(repository not found\)"
    ):
        HfFileSystem().glob(f"{ABSENT_72B_DYNAMIC.lower()}/*.json")


def test_absent_repo_raises_repository_not_found(hub):
    with pytest.raises(RepositoryNotFoundError):
        huggingface_hub.hf_hub_download(ABSENT_72B_DYNAMIC, "config.json")
    assert hub.requests[-1].status == 404


def test_missing_file_raises_entry_not_found(hub):
    with pytest.raises(EntryNotFoundError):
        huggingface_hub.hf_hub_download(FULL, "pytorch_model.bin")


def test_revisions_main_and_commit_sha_resolve_others_do_not(hub):
    sha = huggingface_hub.model_info(FULL).sha
    assert huggingface_hub.hf_hub_download(FULL, "config.json", revision=sha).endswith(f"{sha}/config.json")
    with pytest.raises(RevisionNotFoundError):
        huggingface_hub.hf_hub_download(FULL, "config.json", revision="v9.9")


def test_repo_ids_match_in_any_case(hub):
    local = huggingface_hub.hf_hub_download("UNSLOTH/qwen2-vl-2B-INSTRUCT", "config.json")
    assert sha256(local) == sha256(tinymodel.build() / "config.json")


def test_gated_repo_needs_access(access_hub):
    with pointed_at(access_hub):
        with pytest.raises(GatedRepoError):
            huggingface_hub.hf_hub_download("meta-llama/Gated-VL", "config.json")
        assert huggingface_hub.model_info("meta-llama/Gated-VL").gated == "manual"
        assert huggingface_hub.repo_exists("meta-llama/Gated-VL")
        assert huggingface_hub.hf_hub_download("meta-llama/Gated-VL", "config.json", token=ACCESS_TOKEN)
    assert raw(access_hub, "HEAD", "/meta-llama/Gated-VL/resolve/main/config.json")[0] == 401
    status, headers, _ = raw(
        access_hub, "HEAD", "/meta-llama/Gated-VL/resolve/main/config.json", Authorization="Bearer hf_wrong"
    )
    assert (status, headers["X-Error-Code"]) == (403, "GatedRepo")


def test_private_repo_is_hidden_without_the_token(access_hub):
    with pointed_at(access_hub):
        with pytest.raises(RepositoryNotFoundError):
            huggingface_hub.hf_hub_download("someone/Private-VL", "config.json")
        assert not huggingface_hub.repo_exists("someone/Private-VL")
        assert huggingface_hub.model_info("someone/Private-VL", token=ACCESS_TOKEN).private is True
    status, headers, _ = raw(access_hub, "GET", "/api/models/someone/Private-VL")
    assert (status, headers["X-Error-Code"]) == (401, "RepoNotFound")


def test_concurrent_downloads_from_many_threads(hub):
    jobs = [
        (repo, name)
        for repo in (FULL, PREQUANTIZED, DYNAMIC, "Qwen/Qwen2-VL-7B-Instruct")
        for name in ("config.json", "model.safetensors", "tokenizer.json")
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        paths = list(pool.map(lambda job: huggingface_hub.hf_hub_download(*job), jobs * 2))
    for (repo, name), path in zip(jobs * 2, paths, strict=True):
        assert sha256(path) == sha256(served(hub, repo) / name)
    assert all(r.status == 200 for r in hub.requests)


def test_resolve_headers_and_byte_ranges(hub):
    data = (tinymodel.build() / "model.safetensors").read_bytes()
    status, headers, body = raw(hub, "HEAD", f"/{FULL}/resolve/main/model.safetensors")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == headers["X-Linked-Size"] == str(len(data))
    assert headers["X-Linked-Etag"] == headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert len(headers["X-Repo-Commit"]) == 40
    status, headers, body = raw(hub, "GET", f"/{FULL}/resolve/main/model.safetensors", Range="bytes=10-19")
    assert (status, body, headers["Content-Range"]) == (206, data[10:20], f"bytes 10-19/{len(data)}")
    assert raw(hub, "GET", f"/{FULL}/resolve/main/model.safetensors", Range="bytes=-4")[2] == data[-4:]
    assert raw(hub, "GET", f"/{FULL}/resolve/main/model.safetensors", Range=f"bytes={len(data)}-")[0] == 416
    status, _, body = raw(hub, "GET", "/api/spaces/x/y")
    assert status == 404 and b"does not serve" in body


def test_pointed_at_restores_the_process_settings(hub_for):
    before = (
        constants.ENDPOINT,
        constants.HF_HUB_CACHE,
        os.environ["HF_ENDPOINT"],
        huggingface_hub.hf_api.api.endpoint,
    )
    with pointed_at(hub_for("2024-12")) as cache:
        assert constants.ENDPOINT == huggingface_hub.hf_api.api.endpoint == hub_for("2024-12").url
        assert constants.HF_HUB_CACHE == str(cache) and cache.is_dir()
    assert (
        constants.ENDPOINT,
        constants.HF_HUB_CACHE,
        os.environ["HF_ENDPOINT"],
        huggingface_hub.hf_api.api.endpoint,
    ) == before
    assert not cache.exists()


# --- transformers ------------------------------------------------------------------------------


def test_autoconfig_from_a_lowercase_repo_id(hub):
    config = transformers.AutoConfig.from_pretrained(PREQUANTIZED.lower())
    assert isinstance(config, transformers.Qwen2VLConfig)
    assert config.quantization_config["bnb_4bit_quant_type"] == "nf4"


@pytest.mark.slow
def test_from_pretrained_16bit_repo(hub):
    model = transformers.Qwen2VLForConditionalGeneration.from_pretrained(FULL)
    assert not quant.linears(model).linear4bit
    local = transformers.Qwen2VLForConditionalGeneration.from_pretrained(tinymodel.build())
    assert model.lm_head.weight.equal(local.lm_head.weight)


@pytest.mark.slow
def test_from_pretrained_prequantized_repo_loads_linear4bit(hub):
    report = quant.linears(transformers.Qwen2VLForConditionalGeneration.from_pretrained(PREQUANTIZED))
    assert report.linear4bit and not report.missing_quant_state
    assert len(report.quantized_under("visual")) == 10


def test_from_pretrained_of_the_absent_72b_dynamic_repo(hub):
    with pytest.raises(OSError, match="unsloth/Qwen2-VL-72B-Instruct-unsloth-bnb-4bit is not a local folder") as caught:
        transformers.Qwen2VLForConditionalGeneration.from_pretrained(ABSENT_72B_DYNAMIC)
    assert isinstance(caught.value.__cause__, RepositoryNotFoundError)
    assert [(r.method, r.status) for r in hub.requests if "72B" in r.path] == [("HEAD", 404)]


# --- snapshots ---------------------------------------------------------------------------------


def test_fixture_snapshots_lack_the_72b_dynamic_repo():
    for name in ("2024-12", "2025-02"):
        snapshot = load_snapshot(name)
        assert snapshot.find(ABSENT_72B_DYNAMIC) is None
        assert snapshot.find("unsloth/qwen2-vl-72b-instruct-bnb-4bit").quantization == "plain-bnb-4bit"
        for size in ("2B", "7B"):
            assert (
                snapshot.find(f"unsloth/Qwen2-VL-{size}-Instruct-unsloth-bnb-4bit").quantization
                == f"unsloth-dynamic-{size.lower()}"
            )
    november = load_snapshot("2024-11")
    assert not [r.id for r in november.repos if r.id.endswith("-unsloth-bnb-4bit")]  # before the dynamic repos


def test_snapshot_at_a_release_date_is_the_hub_it_met():
    import datetime

    assert hub_module.snapshot_at(datetime.date(2024, 11, 26)).name == "2024-11"
    assert hub_module.snapshot_at(datetime.date(2024, 12, 4)).name == "2024-12"
    assert hub_module.snapshot_at(datetime.date(2026, 10, 6)).name == "2025-02"
    with pytest.raises(HarnessError, match="no hub snapshot from on or before 2024-01-01"):
        hub_module.snapshot_at(datetime.date(2024, 1, 1))


GOOD_HEAD = 'description = "x"\ndate = 2024-12-31\n'


@pytest.mark.parametrize(
    "text, message",
    [
        ("description = ", "not valid TOML"),
        (GOOD_HEAD + '[[repos]]\nid = "a/b"\nquantization = "8bit"\n', "unknown quantization '8bit'"),
        (GOOD_HEAD + '[[repos]]\nid = "a/B"\n[[repos]]\nid = "A/b"\n', "A/b is listed twice"),
        (GOOD_HEAD + '[[repos]]\nid = "no-owner"\n', "not an OWNER/NAME repo id"),
        (GOOD_HEAD + '[[repos]]\nid = "a/b"\ngated = "yes"\n', "gated must be true or false"),
        (GOOD_HEAD + '[[repos]]\nid = "a/b"\nsize = 3\n', "unknown key(s) ['size']"),
        ('description = "x"\n[[repos]]\nid = "a/b"\n', "date must be a TOML date"),
        (GOOD_HEAD, "at least one [[repos]]"),
    ],
)
def test_bad_snapshots_are_one_line_errors(text, message):
    with pytest.raises(HarnessError) as caught:
        parse_snapshot(text, "bad")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_snapshot_name_lists_the_known_ones():
    with pytest.raises(HarnessError, match="unknown hub snapshot '1999-01'; known: 2024-11, 2024-12, 2025-02"):
        load_snapshot("1999-01")


# --- command line ------------------------------------------------------------------------------


def parse(argv):
    return build_parser().parse_args(argv)


def test_hub_list_prints_snapshots_and_repos(capsys):
    args = parse(["hub", "list"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "2024-12 (2024-12-04)" in out and "2025-02 (2025-02-28)" in out
    assert "unsloth/Qwen2-VL-72B-Instruct-bnb-4bit" in out and ABSENT_72B_DYNAMIC not in out


def test_hub_serve_with_an_unknown_snapshot_is_a_harness_error():
    args = parse(["hub", "serve", "--snapshot", "nope"])
    with pytest.raises(HarnessError, match="unknown hub snapshot 'nope'"):
        args.func(args)


@pytest.mark.slow
def test_hub_serve_answers_until_interrupted():
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "hub", "serve", "--snapshot", "2024-12"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    reader = ThreadPoolExecutor(max_workers=1)  # bounds the wait for the two lines it prints
    try:
        _serving, export = reader.submit(lambda: [process.stdout.readline().strip() for _ in range(2)]).result(
            timeout=120
        )
        assert export.startswith("export HF_ENDPOINT=http://127.0.0.1:")
        host, port = export.split("//")[1].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("GET", f"/api/models/{PREQUANTIZED.lower()}")
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["id"] == PREQUANTIZED
        connection.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.shutdown()
