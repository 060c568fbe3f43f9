"""Router mode's model list: a `--models-dir` folder and a `--models-preset` INI file, read
as llama-server reads them (llama.cpp common/preset.cpp), into one `ModelSpec` per model.

- A folder: each `NAME.gguf` is model NAME; each sub-folder NAME holds one model (its
  first shard, or its only GGUF), `mmproj*` and draft (`mtp-`, `dspark-`, `dflash-`)
  files are companions, never models of their own.
- A preset file: `[NAME]` sections of `key = value` lines whose keys are llama-server's
  flags without dashes (`ctx-size`, `c`, `no-context-shift`) or their LLAMA_ARG_*
  variables; `[*]` holds defaults for every model; a section named like a folder model
  adds options to it. `load-on-startup`, `stop-timeout` and `dedup-cache-models` are
  preset-only options.
- The command line's own model flags (`-c 4096`) win over both, as in llama-server.

Before both comes llama-server's download cache (asgi/hf_cache.py): each cached GGUF is a
model `org/repo:TAG`; a folder model of the same name replaces it, a preset section adds
options to it. A preset's `hf-repo` (with `hf-file`) loads the cached file it names, as
llama-server's child would offline; `dedup-cache-models` hides the cache entries a preset
already serves (they stay usable by name). A preset that names no loadable file (a
repository that is not cached, a missing path) is still listed, as llama-server lists it;
asking for it marks it failed with the reason.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asgi import hf_cache
from asgi.flags import FLAGS, Flag, scalar_value
from asgi.model_specs import ROPE_FLAGS, ModelSpec, model_spec
from asgi.startup_checks import SettingsError, read_text

log = logging.getLogger("asgi.settings")

# The flags a preset may set per model; every other flag is server-wide here.
MODEL_DESTS = frozenset({
    "model", "alias", "tags", "ctx_size", "batch_size", "ubatch_size", "parallel", "cache_type_k", "cache_type_v",
    "pooling", "weights", "numerics", "embeddings", "reranking", "context_shift", "kv_unified", "chat_template",
    "chat_template_file", "override_kv", *ROPE_FLAGS,
})
PRESET_ONLY = frozenset({"load-on-startup", "stop-timeout", "dedup-cache-models", "version"})
# Hub options by their variable: every name a preset may give them (common/arg.cpp).
HUB_NAMES = {
    "LLAMA_ARG_HF_REPO": ("hf-repo", "hf", "hfr", "LLAMA_ARG_HF_REPO"),
    "LLAMA_ARG_HF_FILE": ("hf-file", "hff", "LLAMA_ARG_HF_FILE"),
    "LLAMA_ARG_SPEC_DRAFT_HF_REPO": ("spec-draft-hf", "hfd", "hfrd", "hf-repo-draft", "LLAMA_ARG_SPEC_DRAFT_HF_REPO"),
    "LLAMA_ARG_MODEL_URL": ("model-url", "mu", "LLAMA_ARG_MODEL_URL"),
}
HUB_KEYS = frozenset(name for names in HUB_NAMES.values() for name in names)
DRAFT_MODEL_KEYS = ("spec-draft-model", "md", "model-draft", "LLAMA_ARG_SPEC_DRAFT_MODEL")
DRAFT_PREFIXES = ("mtp-", "dspark-", "dflash-")
TRUE_WORDS = {"1", "true", "on", "yes", "enabled"}

_HEADER = re.compile(r"^[ \t]*\[[ \t]*([^\]]*?)[ \t]*\][ \t]*(?:[;#].*)?$")
_KV = re.compile(r"^[ \t]*([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=[ \t]*([^;#]*?)[ \t]*(?:[;#].*)?$")
_SKIP = re.compile(r"^[ \t]*(?:[;#].*)?$")
_TAG = re.compile(r"[-.]([A-Z0-9_]+)$", re.IGNORECASE)


def parse_ini(path: str) -> dict[str, dict[str, str]]:
    """llama.cpp's INI grammar: sections, `key = value`, `;`/`#` comments (a value ends at the
    first of them, as in llama.cpp); keys before the first section belong to "default"."""
    text = read_text(path, "--models-preset")
    sections: dict[str, dict[str, str]] = {}
    current = "default"
    for number, line in enumerate(text.splitlines(), 1):
        if _SKIP.match(line):
            continue
        header = _HEADER.match(line)
        if header:
            current = _canonical_name(header.group(1))
            sections.setdefault(current, {})
            continue
        pair = _KV.match(line)
        if pair is None:
            raise SettingsError(f"--models-preset {path}: line {number} is neither [section] nor key = value")
        sections.setdefault(current, {})
        if pair.group(1) != "version":  # the file format's version, not an option
            sections[current][pair.group(1)] = pair.group(2)
    if not sections.get("default"):
        sections.pop("default", None)
    return sections


def _canonical_name(name: str) -> str:
    """`org/repo:q8_0` -> `org/repo:Q8_0` (llama.cpp upper-cases a section's quantization tag)."""
    if name in ("*", "default") or ":" not in name:
        return name
    head, _, tag = name.rpartition(":")
    match = _TAG.search(tag)
    return f"{head}:{(match.group(1) if match else tag).upper()}"


def scan_models_dir(folder: str) -> dict[str, Path]:
    root = Path(folder)
    if not root.is_dir():
        raise SettingsError(f"--models-dir {folder}: does not exist or is not a folder")

    def companion(name: str) -> bool:
        return "mmproj" in name or name.startswith(DRAFT_PREFIXES)

    found: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            ggufs = sorted(p for p in entry.iterdir() if p.name.endswith(".gguf") and not companion(p.name))
            first = [p for p in ggufs if "-00001-of-" in p.name]
            if first or ggufs:
                found[entry.name] = (first or ggufs)[-1 if not first else 0]
        elif entry.name.endswith(".gguf") and not companion(entry.name):
            found[entry.name.replace(".gguf", "")] = entry
    return found


def _key_table() -> dict[str, tuple[Flag, bool]]:
    """Preset key -> (flag, negated): every name without its dashes, `no-` forms, variables."""
    table: dict[str, tuple[Flag, bool]] = {}
    for flag in FLAGS:
        for name in flag.names:
            table[name.lstrip("-")] = (flag, False)
            if flag.kind == "toggle" and name.startswith("--"):
                table["no-" + name[2:]] = (flag, True)
        if flag.env:
            table[flag.env] = (flag, False)
    return table


def convert(section: str, options: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """A section's options as flag values (by dest), and its preset-only options."""
    table = _key_table()
    values: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for key, raw in options.items():
        if key in PRESET_ONLY or key in HUB_KEYS:
            extra[key] = raw
            continue
        if key not in table:
            log.warning("preset [%s]: ignoring option %r (not a flag pyllama-server knows)", section, key)
            continue
        flag, negated = table[key]
        if flag.ignored or flag.refused:
            continue
        if flag.dest not in MODEL_DESTS:
            log.warning("preset [%s]: %r is server-wide in pyllama-server: set it on the command line", section, key)
            continue
        try:
            if flag.kind in ("flag", "toggle", "noflag"):
                on = raw.strip().lower() in TRUE_WORDS
                values[flag.dest] = (not on) if (negated or flag.kind == "noflag") else on
            else:
                values[flag.dest] = scalar_value(flag.kind, raw)
        except ValueError:
            raise SettingsError(f"--models-preset: [{section}] {key} = {raw!r}: expected a {flag.kind}") from None
    return values, extra


def render_args(values: Mapping[str, Any]) -> list[str]:
    """The flags a model is served with, as llama-server lists its child's command line."""
    by_dest = {f.dest: f for f in FLAGS if not f.ignored}
    args = ["pyllama-server"]
    for dest in sorted(values, key=lambda d: (d != "model", d)):
        flag = by_dest.get(dest)
        if flag is None or dest not in MODEL_DESTS:
            continue
        name = next((n for n in reversed(flag.names) if n.startswith("--")), flag.names[-1])
        value = values[dest]
        if isinstance(value, bool):
            if flag.kind == "toggle":
                args.append(name if value else name.replace("--", "--no-", 1))
            elif value:
                args.append(name)
        else:
            args += [name, str(value)]
    return args


def _to_ini(name: str, values: Mapping[str, Any], extra: Mapping[str, str]) -> str:
    by_dest = {f.dest: f for f in FLAGS}
    lines = [f"[{name}]"]
    for dest in sorted(values):
        if dest in ("alias", "tags"):
            continue
        long_names = [n for n in by_dest[dest].names if n.startswith("--")]
        lines.append(f"{(long_names or list(by_dest[dest].names))[-1].lstrip('-')} = {values[dest]}")
    lines += [f"{k} = {v}" for k, v in sorted(extra.items()) if k != "version"]
    return "\n".join(lines) + "\n\n"


def hub_option(options: Mapping[str, str], var: str) -> str:
    """A hub option's value under any of its names (the last one given wins)."""
    found = [options[k] for k in options if k in HUB_NAMES.get(var, (var,))]
    return found[-1].strip() if found else ""


def router_specs(values: Mapping[str, Any], chat_template: str | None) -> list[ModelSpec]:
    """Every model of llama-server's download cache, --models-dir and --models-preset, sorted
    by name as llama-server lists them."""
    declared: dict[str, tuple[str, dict[str, str]]] = {
        name: ("cache", {"hf-repo": name}) for name in hf_cache.list_cached_models()}
    if values.get("models_dir"):
        for name, path in scan_models_dir(values["models_dir"]).items():
            declared[name] = ("models_dir", {"model": str(path)})
    defaults: dict[str, str] = {}
    if values.get("models_preset"):
        for name, options in parse_ini(values["models_preset"]).items():
            if name == "*":
                defaults = options
                continue
            base = declared.get(name, ("", {}))[1]
            declared[name] = ("preset", {**base, **options})
    cli = {k: v for k, v in values.items() if k in MODEL_DESTS and k not in ("model", "alias", "tags") and v is not None}
    if isinstance(cli.get("override_kv"), list):  # repeated --override-kv: one CSV list, as a preset line gives it
        cli["override_kv"] = ",".join(cli["override_kv"])
    specs = [_spec(name, source, {**defaults, **options}, cli, chat_template)
             for name, (source, options) in sorted(declared.items())]
    _hide_deduplicated(specs, {name: {**defaults, **options} for name, (source, options) in declared.items()
                               if source == "preset"})
    names: dict[str, str] = {}
    for spec in specs:
        for alias in spec.aliases:
            if alias in names:
                raise SettingsError(f"model name or alias '{alias}' of '{spec.name}' is already used by '{names[alias]}'")
            names[alias] = spec.name
    return specs


def _spec(name: str, source: str, options: dict[str, str], cli: Mapping[str, Any],
          chat_template: str | None) -> ModelSpec:
    own, extra = convert(name, options)
    merged = {**own, **cli}
    template = merged.get("chat_template", chat_template)
    extra_names = {a.strip() for a in str(merged.pop("alias", "")).split(",")} - {"", name}
    aliases = [name, *sorted(extra_names)]
    tags = [t.strip() for t in str(own.get("tags", "")).split(",") if t.strip()]
    path = Path(str(merged.pop("model", "")))
    model_values = {k: v for k, v in merged.items() if k not in ("chat_template", "chat_template_file", "tags")}
    reason = ""
    hub = hub_option(extra, "LLAMA_ARG_HF_REPO")
    if (not str(path) or str(path) == ".") and hub:
        path = hf_cache.resolve(hub, hub_option(extra, "LLAMA_ARG_HF_FILE")) or path
    if not str(path) or str(path) == ".":
        hub = hub or hub_option(extra, "LLAMA_ARG_MODEL_URL")
        reason = (f"'{name}' names the Hugging Face model '{hub}', which is not in llama-server's download "
                  f"cache ({hf_cache.cache_directory()}) and pyllama does not download: "
                  "set model = /path/to/file.gguf in its preset" if hub else
                  f"'{name}' names no model file: set model = /path/to/file.gguf in its preset")
    try:
        if not reason:
            if "chat_template_file" in merged:
                template = read_text(str(merged["chat_template_file"]), "chat-template-file")
            spec = model_spec(path, model_values, template)
    except SettingsError as exc:
        reason = str(exc)
    if reason:
        spec = ModelSpec(path=path, aliases=[name])
        spec.unavailable = reason
    spec.aliases, spec.tags, spec.source = aliases, tags, source
    spec.args = render_args({**model_values, **({"model": str(path)} if str(path) != "." else {})})
    spec.preset_ini = _to_ini(name, {**own, **cli}, extra)  # every source has one in llama-server
    spec.load_on_startup = extra.get("load-on-startup", "").strip().lower() in TRUE_WORDS
    try:
        spec.stop_timeout = int(extra.get("stop-timeout", "10"))
    except ValueError:
        log.warning("preset [%s]: stop-timeout %r is not a number of seconds: using 10", name, extra["stop-timeout"])
    return spec


def _hide_deduplicated(specs: list[ModelSpec], presets: Mapping[str, Mapping[str, str]]) -> None:
    """dedup-cache-models: a preset that serves a cached file (its hf-repo, or its draft's
    spec-draft-hf) hides the cache entry of that file from /models (server_models::load_models)."""
    paths: set[Path] = set()
    for options in presets.values():
        if options.get("dedup-cache-models", "").strip().lower() not in TRUE_WORDS:
            continue
        draft_file = next((options[k] for k in DRAFT_MODEL_KEYS if k in options), "")
        for repo_var, file_name in (("LLAMA_ARG_HF_REPO", hub_option(options, "LLAMA_ARG_HF_FILE")),
                                    ("LLAMA_ARG_SPEC_DRAFT_HF_REPO", draft_file)):
            repo = hub_option(options, repo_var)
            path = hf_cache.resolve(repo, file_name) if repo else None
            if path is not None:
                paths.add(path)
    for spec in specs:
        if paths and spec.source == "cache" and hf_cache.resolve(spec.name) in paths:
            log.info("hiding cache model %s (deduplicated by a preset)", spec.name)
            spec.hidden = True
