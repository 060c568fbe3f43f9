"""Flags, LLAMA_ARG_* variables and config files -> Settings; bad ones fail in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from asgi.settings import SettingsError, parse_settings

REPO = Path(__file__).resolve().parents[2]


def test_flags_map_to_settings(smollm2_path: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("k2\n\nk3\n")
    s = parse_settings(
        ["-m", str(smollm2_path), "-a", "smol,tiny", "-c", "2048", "-np", "3", "-b", "256", "-ub", "128",
         "--host", "0.0.0.0", "--port", "9000", "--api-key", "k1", "--api-key-file", str(keys),
         "--temp", "0.5", "--top-k", "7", "-n", "32", "--keep", "4", "-s", "42", "--metrics", "--no-slots",
         "-to", "30", "--samplers", "top_k;temperature", "-ctk", "q8_0", "--rope-freq-base", "20000",
         "--chat-template", "llama3", "-l", "15+1.5", "-t", "4"],
        {},
    )
    m = s.default_model
    assert m.aliases == ["smol", "tiny"] and m.n_ctx == 2048 and m.n_parallel == 3
    assert (m.n_batch, m.n_ubatch, m.cache_type_k) == (256, 128, "q8_0")
    assert m.rope == {"rope_freq_base": 20000.0} and m.chat_template == "llama3"
    assert (s.host, s.port, s.timeout, s.metrics, s.slots) == ("0.0.0.0", 9000, 30, True, False)
    assert s.api_keys == ["k1", "k2", "k3"]
    assert s.sampling == {"temperature": 0.5, "top_k": 7, "n_predict": 32, "n_keep": 4, "seed": 42,
                          "samplers": ["top_k", "temperature"], "logit_bias": [[15, 1.5]]}
    assert s.ignored_flags == [] and (s.n_threads, s.n_threads_batch) == (4, None)  # -t is honoured now


def test_environment_then_command_line(smollm2_path: Path) -> None:
    env = {"LLAMA_ARG_MODEL": str(smollm2_path), "LLAMA_ARG_PORT": "8181", "LLAMA_ARG_CTX_SIZE": "512",
           "LLAMA_ARG_ENDPOINT_METRICS": "true", "LLAMA_API_KEY": "secret", "LLAMA_ARG_N_PARALLEL": "2"}
    s = parse_settings([], env)
    assert (s.port, s.default_model.n_ctx, s.metrics, s.api_keys, s.default_model.n_parallel) == (
        8181, 512, True, ["secret"], 2)
    s = parse_settings(["--port", "9191", "-np", "1"], env)
    assert s.port == 9191 and s.default_model.n_parallel == 1  # the command line wins


def test_pyllama_server_args_variable(smollm2_path: Path) -> None:
    s = parse_settings([], {"PYLLAMA_SERVER_ARGS": f"-m {smollm2_path} --port 7000 --embeddings"})
    assert s.port == 7000 and s.default_model.embeddings


def test_default_model_is_the_packaged_smollm2() -> None:
    s = parse_settings([], {})
    assert s.default_model.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert s.default_model.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-hf", "org/repo"], "never downloads"),
        (["-mu", "https://example.com/m.gguf"], "never downloads"),
        (["--hf-file", "x.gguf"], "never downloads"),
        (["-m", "/no/such/model.gguf"], "model file not found"),
        (["--port", "70000"], "between 0 and 65535"),
        (["-np", "0"], "at least 1"),
        (["--ssl-key-file", "/no/key.pem"], "file not found"),
        (["--log-format", "xml"], "text or json"),
        (["--json-schema", "{not json"], "not valid JSON"),
    ],
)
def test_bad_settings_raise_one_line(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as info:
        parse_settings(argv, {})
    assert "\n" not in str(info.value)


def test_bad_environment_value() -> None:
    with pytest.raises(SettingsError, match="LLAMA_ARG_PORT"):
        parse_settings([], {"LLAMA_ARG_PORT": "eighty"})


def test_unknown_flags_warn_and_never_exit(smollm2_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = parse_settings(["-m", str(smollm2_path), "--no-such-flag", "--grp-attn-n", "4", "--port", "9001"], {})
    assert s.port == 9001
    assert "ignoring unknown arguments: --no-such-flag --grp-attn-n 4" in caplog.text


def test_bad_flag_value_exits_2_with_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "asgi.main", "--port", "eighty"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--port" in lines[0]


def test_llama_server_flags_the_suite_passes(smollm2_path: Path) -> None:
    s = parse_settings(["-m", str(smollm2_path), "--host", "127.0.0.1,::1", "--reasoning", "off", "--sleep-idle-seconds",
                        "5", "--cache-ram", "0", "--no-cache-idle-slots", "--ui-mcp-proxy", "--offline",
                        "--backend_sampling", "--swa-full", "--media-path", "/tmp", "--no-jinja"], {})
    assert s.hosts == ["127.0.0.1", "::1"] and s.host == "127.0.0.1"
    assert (s.reasoning.mode, s.sleep_idle_seconds, s.ui_mcp_proxy) == ("off", 5, True)
    assert {"--offline", "--backend-sampling", "--swa-full"} <= set(s.ignored_flags)
    assert (s.cache_ram, s.cache_idle_slots) == (0, False) and "--cache-ram" not in s.ignored_flags
    assert parse_settings(["-m", str(smollm2_path), "--tools", "all"], {}).cors_origins == "localhost"
    with pytest.raises(SettingsError, match="sleep-idle-seconds"):
        parse_settings(["-m", str(smollm2_path), "--sleep-idle-seconds", "0"], {})


def test_model_id_as_llama_server(smollm2_path: Path) -> None:
    assert parse_settings(["-m", str(smollm2_path)], {}).default_model.name == str(smollm2_path)
    s = parse_settings(["-m", str(smollm2_path), "-a", "tinyllama-2,fim,code"], {})
    assert s.default_model.aliases == ["code", "fim", "tinyllama-2"] and s.default_model.name == "code"


def test_refused_hub_flag_exits_1() -> None:
    result = subprocess.run([sys.executable, "-m", "asgi.main", "-hf", "ggml-org/x"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "never downloads models from a hub" in result.stderr


def test_help_lists_llama_server_flags() -> None:
    result = subprocess.run([sys.executable, "-m", "asgi.main", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--ctx-size", "--parallel", "--api-key-file", "--ssl-cert-file", "LLAMA_ARG_CTX_SIZE",
                 "--slot-save-path", "--rope-freq-base", "-ctk", "--config-file", "--max-body-size", "--max-queue",
                 "--max-prompts", "--max-n-probs", "--max-stop", "--max-stop-length", "--max-grammar-size",
                 "--max-logit-bias", "--shutdown-timeout", "PYLLAMA_MAX_QUEUE"):
        assert flag in result.stdout


def test_limit_flags(smollm2_path: Path) -> None:
    from asgi.params import RequestLimits

    s = parse_settings(["-m", str(smollm2_path), "-np", "3"], {})
    assert s.limits == RequestLimits() and s.max_body_size == 64 << 20 and s.shutdown_timeout == 10.0
    assert s.queue_limit(s.default_model) == 64
    s = parse_settings(["-m", str(smollm2_path), "-np", "32", "--max-body-size", "4096", "--max-prompts", "2",
                        "--max-n-probs", "0", "--max-stop", "3", "--max-stop-length", "9", "--max-grammar-size",
                        "99", "--max-logit-bias", "5", "--shutdown-timeout", "1.5"],
                       {"PYLLAMA_MAX_QUEUE": "7"})
    assert s.limits == RequestLimits(n_probs=0, stop_count=3, stop_length=9, grammar_bytes=99, logit_bias=5, prompts=2)
    assert (s.max_body_size, s.max_queue, s.shutdown_timeout) == (4096, 7, 1.5)
    assert parse_settings(["-m", str(smollm2_path), "-np", "32"], {}).queue_limit(s.default_model) == 128
    assert parse_settings(["-m", str(smollm2_path), "--max-queue", "-1"], {}).queue_limit(s.default_model) == -1


@pytest.mark.parametrize("argv, message", [
    (["--max-body-size", "10"], "at least 1024"),
    (["--max-queue", "-2"], "--max-queue"),
    (["--max-prompts", "0"], "--max-prompts must be at least 1"),
    (["--max-n-probs", "-1"], "--max-n-probs must be at least 0"),
    (["--shutdown-timeout", "-1"], "--shutdown-timeout"),
    (["--timeout", "0"], "--timeout must be at least 1"),
])
def test_bad_limit_flags(smollm2_path: Path, argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as info:
        parse_settings(["-m", str(smollm2_path), *argv], {})
    assert "\n" not in str(info.value)


def test_config_file_json_and_yaml(smollm2_path: Path, tmp_path: Path) -> None:
    models = [
        {"model": str(smollm2_path), "model_alias": "a", "chat_format": "vicuna", "n_ctx": 1024, "n_gpu_layers": -1},
        {"model": smollm2_path.name, "model_alias": "b", "n_ctx": 512},
    ]
    (tmp_path / smollm2_path.name).symlink_to(smollm2_path)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"host": "0.0.0.0", "port": 20080, "models": models}))
    s = parse_settings(["--config-file", str(cfg)], {})
    assert s.multi_model and (s.host, s.port) == ("0.0.0.0", 20080)
    assert [m.name for m in s.models] == ["a", "b"]
    assert s.models[0].chat_template == "vicuna" and s.models[0].n_ctx == 1024
    assert s.models[1].path == (tmp_path / smollm2_path.name).resolve()
    yml = tmp_path / "c.yaml"
    yml.write_text(f"port: 1234\nmodels:\n  - model: {smollm2_path}\n    model_alias: y\n")
    s = parse_settings(["--config-file", str(yml), "--port", "4321"], {})
    assert s.port == 4321 and s.models[0].name == "y"


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "not valid JSON"),
        ('{"models": []}', "non-empty 'models' list"),
        ('{"models": [{"model_alias": "x"}]}', "needs a 'model' path"),
    ],
)
def test_bad_config_files(tmp_path: Path, content: str, message: str) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(content)
    with pytest.raises(SettingsError, match=message):
        parse_settings(["--config-file", str(cfg)], {})


def test_duplicate_aliases_refused(smollm2_path: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"models": [{"model": str(smollm2_path), "model_alias": "x"}] * 2}))
    with pytest.raises(SettingsError, match="unique"):
        parse_settings(["--config-file", str(cfg)], {})


def test_system_prompt_file(smollm2_path: Path, tmp_path: Path) -> None:
    spf = tmp_path / "sp.json"
    spf.write_text(json.dumps({"system_prompt": {"prompt": "Transcript:", "anti_prompt": "User:"}}))
    s = parse_settings(["-m", str(smollm2_path), "-spf", str(spf)], {})
    assert s.system_prompt == "Transcript:"


def test_prep_process_bytes(smollm2_path: Path) -> None:
    """--prep-process-bytes: 1 MiB by default, from the flag or PYLLAMA_PREP_PROCESS_BYTES,
    0 turns the preparation process off, a negative value is a start-up error."""
    m = ["-m", str(smollm2_path)]
    assert parse_settings(m, {}).prep_process_bytes == 1 << 20
    assert parse_settings([*m, "--prep-process-bytes", "0"], {}).prep_process_bytes == 0
    assert parse_settings(m, {"PYLLAMA_PREP_PROCESS_BYTES": "4096"}).prep_process_bytes == 4096
    with pytest.raises(SettingsError, match="--prep-process-bytes"):
        parse_settings([*m, "--prep-process-bytes", "-1"], {})


def test_cache_ram_flags_and_variables(smollm2_path: Path) -> None:
    model = ["-m", str(smollm2_path)]
    s = parse_settings(model, {})
    assert (s.cache_ram, s.cache_idle_slots) == (8192, True)  # llama-server's defaults
    s = parse_settings(model, {"LLAMA_ARG_CACHE_RAM": "-1", "LLAMA_ARG_CACHE_IDLE_SLOTS": "false"})
    assert (s.cache_ram, s.cache_idle_slots) == (-1, False)
    s = parse_settings([*model, "-cram", "64", "--cache-idle-slots"], {"LLAMA_ARG_CACHE_IDLE_SLOTS": "0"})
    assert (s.cache_ram, s.cache_idle_slots) == (64, True)  # the command line wins
