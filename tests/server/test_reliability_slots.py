"""Slot files: refused when they belong to another model, another format version, or are
damaged; written atomically, so killing the server mid-save (SIGKILL) never leaves a
partial file under the name the client asked for."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import threading
import time
from pathlib import Path

import httpx
import pytest

from pyllama.engine import Model
from pyllama.slot_store import MAGIC, SlotFileError, load_slot, save_slot
from tests.models.synth import write_model
from tests.server.conftest import ServerProcess


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Model, Model]:
    folder = tmp_path_factory.mktemp("slot-models")
    llama = Model.load(write_model("llama", folder / "llama.gguf"), n_ctx=64)
    qwen = Model.load(write_model("qwen2", folder / "qwen2.gguf"), n_ctx=64)
    return llama, qwen


def _saved(model: Model, path: Path) -> bytes:
    model.kv.truncate(0, 0)
    model.eval_prompt([5, 6, 7, 8, 9], seq=0)
    save_slot(model, 0, [5, 6, 7, 8, 9], path)
    return path.read_bytes()


def test_round_trip_and_no_temp_files_left(models: tuple[Model, Model], tmp_path: Path) -> None:
    llama, _ = models
    raw = _saved(llama, tmp_path / "a.slot")
    assert raw.startswith(MAGIC)
    llama.kv.truncate(0, 0)
    tokens, n_read = load_slot(llama, 0, tmp_path / "a.slot")
    assert tokens == [5, 6, 7, 8, 9] and n_read == len(raw) and llama.kv.length(0) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.slot"]


def _damaged(raw: bytes) -> dict[str, tuple[bytes, str]]:
    version = struct.unpack_from("<I", raw, 8)[0]
    hlen = struct.unpack_from("<I", raw, 12)[0]
    header = json.loads(raw[16 : 16 + hlen])
    header["arrays"][1][1] = [-1, *header["arrays"][1][1][1:]]
    bad_header = json.dumps(header).encode()
    return {
        "wrong version": (raw[:8] + struct.pack("<I", version + 1) + raw[12:], "version"),
        "truncated": (raw[: len(raw) - 100], "truncated"),
        "truncated header": (raw[:20], "truncated"),
        "not a slot file": (b"GGUF" + raw[4:], "not a pyllama slot file"),
        "empty": (b"", "not a pyllama slot file"),
        "garbage header": (raw[:16] + b"\xff" * hlen + raw[16 + hlen :], "damaged"),
        "negative shape": (raw[:12] + struct.pack("<I", len(bad_header)) + bad_header + raw[16 + hlen :], "damaged"),
        "trailing bytes": (raw + b"\0" * 8, "unexpected bytes"),
    }


def test_damaged_and_foreign_files_are_refused(models: tuple[Model, Model], tmp_path: Path) -> None:
    llama, qwen = models
    raw = _saved(llama, tmp_path / "good.slot")
    with pytest.raises(SlotFileError, match="different model"):
        load_slot(qwen, 0, tmp_path / "good.slot")
    for kind, (data, words) in _damaged(raw).items():
        path = tmp_path / f"{kind.replace(' ', '-')}.slot"
        path.write_bytes(data)
        with pytest.raises(SlotFileError, match=words) as info:
            load_slot(llama, 0, path)
        assert "\n" not in str(info.value), kind


def test_server_refuses_a_foreign_slot_file(smollm2_path: Path, tmp_path: Path, models: tuple[Model, Model]) -> None:
    """Through HTTP: restoring another model's file is a 400 naming the problem, slot untouched."""
    llama, _ = models
    _saved(llama, tmp_path / "foreign.slot")
    (tmp_path / "cut.slot").write_bytes((tmp_path / "foreign.slot").read_bytes()[:40])
    server = ServerProcess(["-m", str(smollm2_path), "-c", "512", "--slot-save-path", str(tmp_path)], log_name="slots")
    try:
        server.wait_ready()
        for name, words in (("foreign.slot", "different model"), ("cut.slot", "truncated"),
                            ("missing.slot", "does not exist")):
            res = httpx.post(server.base_url + "/slots/0?action=restore", json={"filename": name}, timeout=30)
            assert res.status_code == 400 and words in res.json()["error"]["message"], res.text
    finally:
        server.stop()


@pytest.mark.slow
def test_sigkill_during_save_leaves_no_partial_file(smollm2_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "slots"
    folder.mkdir()
    server = ServerProcess(["-m", str(smollm2_path), "-c", "4096", "-b", "512", "--slot-save-path", str(folder)],
                           log_name="slot-kill")
    try:
        server.wait_ready()
        prompt = " ".join(f"line {i}: the quick brown fox jumps over the lazy dog." for i in range(110))
        res = httpx.post(server.base_url + "/completion", timeout=300,
                         json={"prompt": prompt, "n_predict": 1, "id_slot": 0, "cache_prompt": True})
        assert res.status_code == 200 and res.json()["tokens_evaluated"] > 1200
        # one full save first: its size is what a complete file looks like
        done = httpx.post(server.base_url + "/slots/0?action=save", json={"filename": "full.slot"}, timeout=120).json()
        full_size = done["n_written"]
        assert full_size > 40 << 20 and (folder / "full.slot").stat().st_size == full_size

        def save() -> None:
            with contextlib.suppress(httpx.HTTPError):  # the server dies under it
                httpx.post(server.base_url + "/slots/0?action=save", json={"filename": "target.slot"}, timeout=120)

        thread = threading.Thread(target=save)
        thread.start()
        deadline = time.monotonic() + 60
        caught = False
        while time.monotonic() < deadline and not caught:
            names = os.listdir(folder)
            if any(n.startswith(".tmp-") for n in names) and "target.slot" not in names:
                os.kill(server.proc.pid, signal.SIGKILL)
                caught = True
        server.proc.wait(10)
        thread.join(30)
        assert caught, "never saw the save in progress"
        target = folder / "target.slot"
        if target.exists():  # the rename won the race: then the file must be whole
            assert target.stat().st_size == full_size
        partial = [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
        assert partial and all(p.stat().st_size < full_size for p in partial)  # the half file has its temp name
    finally:
        server.stop()
