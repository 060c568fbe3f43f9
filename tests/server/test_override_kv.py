"""--override-kv on a real server: SmolLM2's file says add_bos_token=false, so /tokenize with
add_special and /completion's prompt start with BOS only on a server told
tokenizer.ggml.add_bos_token=bool:true; an int override shows in /v1/models' n_ctx_train, a
wrong-typed one is ignored (as llama-model-loader), and bad syntax exits 1 with one line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from asgi.main import main
from tests.server.conftest import ServerProcess, start

PROMPT = "Hello world"


@pytest.fixture(scope="module")
def bos_server(smollm2_path: Path) -> Iterator[ServerProcess]:
    yield from start(["-m", str(smollm2_path), "-c", "512", "-np", "1",
                      "--override-kv", "tokenizer.ggml.add_bos_token=bool:true,llama.block_count=str:x",
                      "--override-kv", "llama.context_length=int:1024"], "okv-bos")


@pytest.fixture(scope="module")
def plain_server(smollm2_path: Path) -> Iterator[ServerProcess]:
    yield from start(["-m", str(smollm2_path), "-c", "512", "-np", "1"], "okv-plain")


def first_tokens(server: ServerProcess) -> tuple[list[int], int, int]:
    with server.client() as c:
        tok = c.post("/tokenize", json={"content": PROMPT, "add_special": True})
        assert tok.status_code == 200, tok.text
        done = c.post("/completion", json={"prompt": PROMPT, "n_predict": 1, "temperature": 0, "cache_prompt": False})
        assert done.status_code == 200, done.text
        models = c.get("/v1/models")
        assert models.status_code == 200, models.text
    return tok.json()["tokens"], done.json()["tokens_evaluated"], models.json()["data"][0]["meta"]["n_ctx_train"]


def test_add_bos_override_puts_bos_first(bos_server: ServerProcess, plain_server: ServerProcess) -> None:
    with_bos, evaluated_bos, ctx_train_bos = first_tokens(bos_server)
    plain, evaluated, ctx_train = first_tokens(plain_server)
    assert with_bos == [1, *plain], (with_bos, plain)  # SmolLM2's BOS <|im_start|> is id 1
    assert evaluated_bos == evaluated + 1
    assert (ctx_train_bos, ctx_train) == (1024, 8192)
    log = bos_server.log_path.read_text()  # written during the load, before /health said ready
    assert "Bad metadata override type for key 'llama.block_count', expected int but got str" in log


@pytest.mark.parametrize(("value", "message"), [
    ("tokenizer.ggml.add_bos_token=bool:yes", "invalid boolean value for KV override 'tokenizer.ggml.add_bos_token=bool:yes'"),
    ("a=int:1,b=double:2", "invalid type for KV override 'b=double:2'"),
    ("novalue", "malformed KV override 'novalue'"),
    ("k=str:" + "x" * 128, "value cannot exceed 127 chars"),
])
def test_bad_syntax_exits_1_with_one_line(smollm2_path: Path, value: str, message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-m", str(smollm2_path), "--override-kv", value]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pyllama-server: error: --override-kv: ") and message in err[0], err


def test_router_mode_passes_overrides_to_every_model(smollm2_path: Path, tmp_path: Path) -> None:
    """Router mode: repeated command-line overrides reach every model as one list; a preset may
    set its own (`override-kv = ...`); bad syntax on the command line still exits 1, a bad
    preset line fails only its model (as a llama-server child would)."""
    from asgi.settings import SettingsError, parse_settings
    from pyllama.kv_override import KVOverride

    models = tmp_path / "models"
    models.mkdir()
    (models / "smol.gguf").symlink_to(smollm2_path)
    s = parse_settings(["--models-dir", str(models), "--override-kv", "general.name=str:x",
                        "--override-kv", "a=int:2"], {})
    assert s.router and [m.kv_overrides for m in s.models] == [[KVOverride("general.name", "str", "x"),
                                                                   KVOverride("a", "int", 2)]]
    preset = tmp_path / "p.ini"
    preset.write_text(f"[good]\nmodel = {smollm2_path}\noverride-kv = tokenizer.ggml.add_bos_token=bool:true\n"
                      f"[bad]\nmodel = {smollm2_path}\noverride-kv = k=bool:maybe\n")
    by_name = {m.name: m for m in parse_settings(["--models-preset", str(preset)], {}).models}
    assert by_name["good"].kv_overrides == [KVOverride("tokenizer.ggml.add_bos_token", "bool", True)]
    assert "invalid boolean value for KV override 'k=bool:maybe'" in by_name["bad"].unavailable
    with pytest.raises(SettingsError, match="invalid type for KV override 'k=x:1'"):
        parse_settings(["--models-dir", str(models), "--override-kv", "k=x:1"], {})


def test_start_up_memory_check_sees_an_overridden_context_length(smollm2_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """-c 0 takes the training context; an overridden one too big for the machine is refused at start."""
    assert main(["-m", str(smollm2_path), "-c", "0", "--override-kv", "llama.context_length=int:1000000000"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ctx-size 0: the KV cache would need" in err[0], err
