"""Every flag of llama-server's `--help` through pyllama-server's real settings parsing.

The help text is the binary's own output (tests/server/data/llama_server_help.txt); each of
its spellings and `LLAMA_ARG_*` variables goes through asgi.settings.parse_settings (what
the server runs at start) with a plausible value, followed by `--port`, so a flag whose value
we would not consume, or a flag that would swallow the next one, shows. A flag llama-server
gains and asgi/flags.py lacks fails here as "unknown" once the help text is recaptured.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from asgi.flags import FLAGS, display_name, ignored_note
from asgi.main import main
from asgi.settings import Settings, SettingsError, parse_settings

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import llama_server_flags as audit  # noqa: E402

sys.path.remove(str(REPO / "tools"))

ENTRIES = audit.load_help()
# flags that print an answer and exit as they are parsed: tests/server/test_info_flags.py runs them
PRINT_AND_EXIT = ("-h", "--help", "--usage", "--version", "--list-devices", "-cl", "--cache-list", "--completion-bash")
SPELLINGS = [(e, name) for e in ENTRIES for name in e.names if name not in PRINT_AND_EXIT]

# values the flag's own checks accept (the rest take "1"); "{file}" / "{dir}" / "{model}" are filled in
VALUES = {
    "--rope-scaling": "linear", "--pooling": "mean", "--reasoning": "off", "--reasoning-format": "none",
    "--chat-template": "chatml", "--chat-template-file": "{template}", "--chat-template-kwargs": "{}",
    "--grammar": 'root ::= "a"', "--grammar-file": "{grammar}", "--json-schema": "{}", "--json-schema-file": "{schema}",
    "--host": "127.0.0.1", "--port": "9201", "--path": "{dir}", "--api-key": "k", "--api-key-file": "{keys}",
    "--ssl-key-file": "{file}", "--ssl-cert-file": "{file}", "--slot-save-path": "{dir}", "--media-path": "{dir}",
    "--models-dir": "{dir}", "--models-preset": "{preset}", "--model": "{model}", "--spec-draft-model": "{model}",
    "--spec-type": "ngram-simple", "--spec-synth-rates": ",".join(["0.5"] * 48), "--samplers": "top_k;temperature",
    "--sampler-seq": "kt", "--logit-bias": "15+1", "--dry-sequence-breaker": "none", "--cache-type-k": "f16",
    "--cache-type-v": "f16", "--sleep-idle-seconds": "5", "--cors-origins": "*", "--timeout": "600",
    "--parallel": "2", "--ctx-size": "512", "--batch-size": "64", "--ubatch-size": "64", "--hf-repo": "user/model",
    "--hf-file": "model.gguf", "--lora": "{model}", "--lora-scaled": "{model}:0.5", "--alias": "name",
    "--slot-prompt-similarity": "0.5", "--reasoning-budget-message": "stop thinking", "--xtc-threshold": "0.1",
    "--adaptive-decay": "0.5", "--models-max": "2", "--verbosity": "3", "--spec-synth-len": "2",
    "--control-vector": "{model}", "--control-vector-scaled": "{model}:0.5",
    "--override-kv": "tokenizer.ggml.add_bos_token=bool:false",
}
# flags that need another one given with them
WITH = {"--hf-file": ["--hf-repo", "user/model"], "--spec-synth-len": ["--spec-type", "ngram-simple"],
        "--spec-synth-rates": ["--spec-type", "ngram-simple"], "--ssl-key-file": ["--ssl-cert-file", "{file}"],
        "--ssl-cert-file": ["--ssl-key-file", "{file}"]}
# a flag whose value is a file we do not build here: parsing reaches the file's own check
FILE_CHECKED = {"--lora", "--lora-scaled", "--control-vector", "--control-vector-scaled"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> dict[str, str]:
    root = tmp_path_factory.mktemp("flags")
    made = {"dir": str(root), "model": str(smollm2_path)}
    for name, text in {"file": "x", "template": "{{ messages[0].content }}", "grammar": 'root ::= "a"',
                       "schema": "{}", "keys": "k\n", "preset": "[m]\nmodel = x.gguf\n"}.items():
        (root / name).write_text(text)
        made[name] = str(root / name)
    return made


def canonical(entry: audit.HelpFlag) -> str:
    """The first long name of the entry (the key of VALUES)."""
    return next((n for n in entry.names if n.startswith("--") and not n.startswith("--no-")), entry.names[-1])


def value_for(entry: audit.HelpFlag, files: dict[str, str]) -> list[str]:
    if entry.arity == "none":
        return []
    if entry.arity == "two":
        return ["1", "2"]
    return [fill(VALUES.get(canonical(entry), "1"), files)]


def fill(value: str, files: dict[str, str]) -> str:
    for key, path in files.items():
        value = value.replace("{" + key + "}", path)
    return value


def settle(entry: audit.HelpFlag, argv: list[str], env: dict[str, str], files: dict[str, str],
           caplog: pytest.LogCaptureFixture) -> Settings | SettingsError:
    extra = [fill(v, files) for v in WITH.get(canonical(entry), [])]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        try:
            settings = parse_settings(["-m", files["model"], *extra, *argv, "--port", "9201"], env)
        except SettingsError as exc:
            return exc
    assert "ignoring unknown arguments" not in caplog.text, f"{argv or env}: {caplog.text}"
    return settings


def check(entry: audit.HelpFlag, outcome: Settings | SettingsError, what: str) -> None:
    state, note = audit.status(entry)
    assert state != "unknown", f"{what}: llama-server flag missing from asgi/flags.py"
    if state == "refused":
        assert isinstance(outcome, SettingsError), f"{what}: should be refused"
        assert note.removeprefix("exit 1: ") in str(outcome)
        return
    if canonical(entry) in FILE_CHECKED:
        assert isinstance(outcome, SettingsError) and files_note(str(outcome)), f"{what}: {outcome}"
        return
    assert isinstance(outcome, Settings), f"{what}: {outcome}"
    assert outcome.port == 9201, f"{what}: the flag took the next argument"
    named = [display_name(f) for f in audit.our_flags(entry) if f.ignored]
    if state == "ignored":
        assert set(named) & set(outcome.ignored_flags), f"{what}: no warning for an ignored flag"
        assert all(ignored_note(n).count("\n") == 0 and len(ignored_note(n)) > 60 for n in named)
    else:
        assert not set(named) & set(outcome.ignored_flags), f"{what}: supported, yet warned about"


def files_note(message: str) -> bool:
    return "adapter" in message or "LoRA" in message or "lora" in message or "control vector" in message


@pytest.mark.parametrize(("entry", "name"), SPELLINGS, ids=[name for _, name in SPELLINGS])
def test_every_spelling_parses_as_classified(entry: audit.HelpFlag, name: str, files: dict[str, str],
                                            caplog: pytest.LogCaptureFixture) -> None:
    check(entry, settle(entry, [name, *value_for(entry, files)], {}, files, caplog), name)


ENV_ENTRIES = [e for e in ENTRIES if e.env]


@pytest.mark.parametrize("entry", ENV_ENTRIES, ids=[e.env or "" for e in ENV_ENTRIES])
def test_every_variable_parses_as_classified(entry: audit.HelpFlag, files: dict[str, str],
                                            caplog: pytest.LogCaptureFixture) -> None:
    assert entry.env is not None
    assert entry.env in {f.env for f in audit.our_flags(entry)}, f"asgi/flags.py lacks {entry.env}"
    value = value_for(entry, files) or ["1"]
    check(entry, settle(entry, [], {entry.env: value[0]}, files, caplog), entry.env)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if audit.status(e)[0] == "refused"],
                         ids=lambda e: e.names[-1])
def test_refused_flags_exit_1_with_one_line(entry: audit.HelpFlag, files: dict[str, str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """What the user sees: pyllama-server's main returns 1 and prints one line (no server starts)."""
    assert main(["-m", files["model"], entry.names[-1], *value_for(entry, files)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pyllama-server: error: ")


def test_log_jsonl_is_log_format_json(smollm2_path: Path) -> None:
    assert parse_settings(["-m", str(smollm2_path), "--log-jsonl"], {}).log_format == "json"
    assert parse_settings(["-m", str(smollm2_path)], {"LLAMA_ARG_LOG_JSONL": "1"}).log_format == "json"
    assert parse_settings(["-m", str(smollm2_path), "--no-log-jsonl"], {}).log_format == "text"


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in PRINT_AND_EXIT:
        with pytest.raises(SystemExit) as exc:
            parse_settings([flag], {})
        assert exc.value.code == 0, flag
        assert capsys.readouterr().out.strip(), f"{flag} printed nothing"
    assert {n for e in ENTRIES for n in e.names} >= set(PRINT_AND_EXIT)


def test_the_help_text_is_parsed_whole() -> None:
    """The parser of the help text finds what the binary lists (a regression in it would make
    every other test here vacuous)."""
    names = {n for e in ENTRIES for n in e.names}
    assert len(ENTRIES) > 250 and {"-ngl", "--no-kv-offload", "-no-kvu", "--spec-draft-ngl", "--usage"} <= names
    assert {e.names[-1]: e.arity for e in ENTRIES}["--control-vector-layer-range"] == "two"
    assert next(e for e in ENTRIES if "--port" in e.names).env == "LLAMA_ARG_PORT"
    assert all(f.names for f in FLAGS)


def test_docs_table_is_up_to_date() -> None:
    text = (REPO / "docs" / "server.md").read_text()
    assert audit.updated_docs(text) == text, "run python tools/llama_server_flags.py"
