"""llama-server flags with no counterpart in pyllama, as rows of asgi.flags' table.

Each row is (names, dest, kind, reason[, env]) as `asgi.flags._f` takes them; `reason` is
the help text and the note of docs/server.md's flag table. IGNORED rows are accepted and
each given one is named in one warning line at start (GPU and C-build knobs, features this
server does not have), so scripts written for llama-server keep working; REFUSED rows exit
with status 1 and one line, because ignoring them would serve something other than what was
asked (a model download, changed weights). Spellings, value arity and
variables follow llama-server's `--help` (tests/server/data/llama_server_help.txt);
tests/server/test_flag_audit.py parses every one of them.
"""

from __future__ import annotations

GPU = "no effect: pyllama runs on the CPU with NumPy (no GPU, device or offload)"
PLACEMENT = "no effect: thread placement and priority are left to the OS and the BLAS (-t/-tb set the thread counts)"
LOADER = "no effect: pyllama's GGUF loader has one mode (NumPy memory map)"
MEDIA = "no effect: no multimodal models here (image/audio parts are a 400)"
LOGS = "no effect: pyllama's log lines have one layout (--log-format text|json)"
AGENT = "no effect: no built-in agent tools or MCP client here"
DRAFT = "no effect: the draft model (-md) runs on the CPU with the same threads as the model"
HUB = "pyllama never downloads models; download the GGUF yourself and pass -m FILE (or -md FILE)"
REMOVED = "removed from llama.cpp; use the --spec-draft-n-* / --spec-ngram-* flags"

IGNORED_FLAGS: list[tuple[str, ...]] = [
    ("-C --cpu-mask", "cpu_mask", "str", PLACEMENT),
    ("-Cr --cpu-range", "cpu_range", "str", PLACEMENT),
    ("--cpu-strict", "cpu_strict", "str", PLACEMENT),
    ("--prio", "prio", "str", PLACEMENT),
    ("--poll", "poll", "str", PLACEMENT),
    ("-Cb --cpu-mask-batch", "cpu_mask_batch", "str", PLACEMENT),
    ("-Crb --cpu-range-batch", "cpu_range_batch", "str", PLACEMENT),
    ("--cpu-strict-batch", "cpu_strict_batch", "str", PLACEMENT),
    ("--prio-batch", "prio_batch", "str", PLACEMENT),
    ("--poll-batch", "poll_batch", "str", PLACEMENT),
    ("--perf --no-perf", "perf", "flag", "no effect: responses always carry `timings`", "LLAMA_ARG_PERF"),
    ("-e --escape --no-escape", "escape", "flag", "no effect: the server takes no prompt on its command line"),
    ("-kvo --kv-offload -nkvo --no-kv-offload", "kv_offload", "flag", GPU, "LLAMA_ARG_KV_OFFLOAD"),
    ("--repack -nr --no-repack", "repack", "flag",
     "no effect: ggml's CPU weight repacking; --weights chooses pyllama's layout", "LLAMA_ARG_REPACK"),
    ("--no-host", "no_host", "flag", GPU, "LLAMA_ARG_NO_HOST"),
    ("--rpc", "rpc", "str", "no effect: no RPC backends (one process, the CPU)", "LLAMA_ARG_RPC"),
    ("-lm --load-mode", "load_mode", "str", LOADER, "LLAMA_ARG_LOAD_MODE"),
    ("-lzm --lazy-mode", "lazy_mode", "str", LOADER, "LLAMA_ARG_LAZY_MODE"),
    ("-dev --device", "device", "str", GPU, "LLAMA_ARG_DEVICE"),
    ("-ot --override-tensor", "override_tensor", "str", GPU, "LLAMA_ARG_OVERRIDE_TENSOR"),
    ("-cmoe --cpu-moe", "cpu_moe", "flag", GPU + "; every weight is in the CPU already", "LLAMA_ARG_CPU_MOE"),
    ("-ncmoe --n-cpu-moe", "n_cpu_moe", "str", GPU, "LLAMA_ARG_N_CPU_MOE"),
    ("-ncffn --n-cpu-ffn", "n_cpu_ffn", "str", GPU, "LLAMA_ARG_N_CPU_FFN"),
    ("-sm --split-mode", "split_mode", "str", GPU, "LLAMA_ARG_SPLIT_MODE"),
    ("-ts --tensor-split", "tensor_split", "str", GPU, "LLAMA_ARG_TENSOR_SPLIT"),
    ("-mg --main-gpu", "main_gpu", "str", GPU, "LLAMA_ARG_MAIN_GPU"),
    ("-fit --fit", "fit", "str", GPU, "LLAMA_ARG_FIT"),
    ("-fitt --fit-target", "fit_target", "str", GPU, "LLAMA_ARG_FIT_TARGET"),
    ("-fitc --fit-ctx", "fit_ctx", "str", GPU, "LLAMA_ARG_FIT_CTX"),
    ("--check-tensors", "check_tensors", "flag", "no effect: tensor data is not scanned for NaN/Inf at load"),
    ("--op-offload --no-op-offload", "op_offload", "flag", GPU),
    ("--log-file", "log_file", "str", "no effect: logs go to stderr (redirect it)", "LLAMA_ARG_LOG_FILE"),
    ("--log-colors", "log_colors", "str", LOGS, "LLAMA_ARG_LOG_COLORS"),
    ("--log-prefix --no-log-prefix", "log_prefix", "flag", LOGS, "LLAMA_ARG_LOG_PREFIX"),
    ("--log-timestamps --no-log-timestamps", "log_timestamps", "flag", LOGS, "LLAMA_ARG_LOG_TIMESTAMPS"),
    ("--spec-draft-type-k -ctkd --cache-type-k-draft", "cache_type_k_draft", "str",
     "no effect: the draft model's K/V are kept like the model's", "LLAMA_ARG_SPEC_DRAFT_CACHE_TYPE_K"),
    ("--spec-draft-type-v -ctvd --cache-type-v-draft", "cache_type_v_draft", "str",
     "no effect: the draft model's K/V are kept like the model's", "LLAMA_ARG_SPEC_DRAFT_CACHE_TYPE_V"),
    ("--spec-draft-threads -td --threads-draft", "threads_draft", "str", DRAFT),
    ("--spec-draft-threads-batch -tbd --threads-batch-draft", "threads_batch_draft", "str", DRAFT),
    ("--spec-draft-cpu-mask -Cd --cpu-mask-draft", "cpu_mask_draft", "str", PLACEMENT),
    ("--spec-draft-cpu-range -Crd --cpu-range-draft", "cpu_range_draft", "str", PLACEMENT),
    ("--spec-draft-cpu-strict --cpu-strict-draft", "cpu_strict_draft", "str", PLACEMENT),
    ("--spec-draft-prio --prio-draft", "prio_draft", "str", PLACEMENT),
    ("--spec-draft-poll --poll-draft", "poll_draft", "str", PLACEMENT),
    ("--spec-draft-cpu-mask-batch -Cbd --cpu-mask-batch-draft", "cpu_mask_batch_draft", "str", PLACEMENT),
    ("--spec-draft-cpu-strict-batch --cpu-strict-batch-draft", "cpu_strict_batch_draft", "str", PLACEMENT),
    ("--spec-draft-prio-batch --prio-batch-draft", "prio_batch_draft", "str", PLACEMENT),
    ("--spec-draft-poll-batch --poll-batch-draft", "poll_batch_draft", "str", PLACEMENT),
    ("--spec-draft-override-tensor -otd --override-tensor-draft", "override_tensor_draft", "str", GPU),
    ("--spec-draft-cpu-moe -cmoed --cpu-moe-draft", "cpu_moe_draft", "flag", GPU, "LLAMA_ARG_SPEC_DRAFT_CPU_MOE"),
    ("--spec-draft-n-cpu-moe --spec-draft-ncmoe -ncmoed --n-cpu-moe-draft", "n_cpu_moe_draft", "str", GPU,
     "LLAMA_ARG_SPEC_DRAFT_N_CPU_MOE"),
    ("--spec-draft-p-split --draft-p-split", "spec_draft_p_split", "str",
     "no effect: drafts are one sequence here (no split into a tree)", "LLAMA_ARG_SPEC_DRAFT_P_SPLIT"),
    ("--spec-draft-backend-sampling --no-spec-draft-backend-sampling", "spec_draft_backend_sampling", "flag", GPU,
     "LLAMA_ARG_SPEC_DRAFT_BACKEND_SAMPLING"),
    ("--spec-draft-device -devd --device-draft", "device_draft", "str", GPU),
    ("--spec-draft-ngl -ngld --gpu-layers-draft --n-gpu-layers-draft", "n_gpu_layers_draft", "str", GPU,
     "LLAMA_ARG_N_GPU_LAYERS_DRAFT"),
    ("-lcs --lookup-cache-static", "lookup_cache_static", "str", "no effect: llama-lookup's caches; llama-server does not read them either"),
    ("-lcd --lookup-cache-dynamic", "lookup_cache_dynamic", "str", "no effect: llama-lookup's caches; llama-server does not read them either"),
    ("--kv-unified-per-slot", "kv_unified_per_slot", "str", "no effect: -c and -np size the slots' contexts",
     "LLAMA_ARG_KV_UNIFIED_PER_SLOT"),
    ("-ctxcp --ctx-checkpoints --swa-checkpoints", "ctx_checkpoints", "str",
     "no effect: the KV cache is always full size, so no SWA/recurrent checkpoints are needed", "LLAMA_ARG_CTX_CHECKPOINTS"),
    ("-cms --checkpoint-min-step", "checkpoint_min_step", "str",
     "no effect: the KV cache is always full size, so no SWA/recurrent checkpoints are needed",
     "LLAMA_ARG_CHECKPOINT_MIN_SPACING_NT"),
    ("-r --reverse-prompt", "reverse_prompt", "str", "no effect: interactive mode only; requests give `stop`"),
    ("-sp --special", "special", "flag", "no effect: special tokens in the output follow pyllama's defaults"),
    ("--spm-infill", "spm_infill", "flag", "no effect: /infill prompts are built Prefix/Suffix/Middle"),
    ("-mm --mmproj", "mmproj", "str", MEDIA, "LLAMA_ARG_MMPROJ"),
    ("--mmproj-auto --no-mmproj --no-mmproj-auto", "mmproj_auto", "flag", MEDIA, "LLAMA_ARG_MMPROJ_AUTO"),
    ("--mmproj-offload --no-mmproj-offload", "mmproj_offload", "flag", MEDIA, "LLAMA_ARG_MMPROJ_OFFLOAD"),
    ("-mmdev --mmproj-device", "mmproj_device", "str", MEDIA, "MTMD_BACKEND_DEVICE"),
    ("--image-min-tokens", "image_min_tokens", "str", MEDIA, "LLAMA_ARG_IMAGE_MIN_TOKENS"),
    ("--image-max-tokens", "image_max_tokens", "str", MEDIA, "LLAMA_ARG_IMAGE_MAX_TOKENS"),
    ("--mtmd-batch-max-tokens", "mtmd_batch_max_tokens", "str", MEDIA, "LLAMA_ARG_MTMD_BATCH_MAX_TOKENS"),
    ("--video-fps", "video_fps", "str", MEDIA, "LLAMA_ARG_VIDEO_FPS"),
    ("--video-timestamp-interval", "video_timestamp_interval", "str", MEDIA, "LLAMA_ARG_VIDEO_TIMESTAMP_INTERVAL"),
    ("--video-ffmpeg-dir", "video_ffmpeg_dir", "str", MEDIA, "LLAMA_ARG_VIDEO_FFMPEG_DIR"),
    ("--embd-normalize", "embd_normalize", "str", "no effect: requests choose with `embd_normalize` (default 2)"),
    ("--reuse-port", "reuse_port", "flag", "no effect: the port is bound once, without SO_REUSEPORT", "LLAMA_ARG_REUSE_PORT"),
    ("--cors-methods", "cors_methods", "str", "no effect: not configurable here (--cors-origins is)", "LLAMA_ARG_CORS_METHODS"),
    ("--cors-headers", "cors_headers", "str", "no effect: not configurable here (--cors-origins is)", "LLAMA_ARG_CORS_HEADERS"),
    ("--cors-credentials --no-cors-credentials", "cors_credentials", "flag",
     "no effect: not configurable here (--cors-origins is)", "LLAMA_ARG_CORS_CREDENTIALS"),
    ("--ui-config --webui-config", "ui_config", "str", "no effect: the web UI here keeps its own settings", "LLAMA_ARG_UI_CONFIG"),
    ("--ui-config-file --webui-config-file", "ui_config_file", "str", "no effect: the web UI here keeps its own settings",
     "LLAMA_ARG_UI_CONFIG_FILE"),
    ("--tools-runtime", "tools_runtime", "str", AGENT, "LLAMA_ARG_TOOLS_RUNTIME"),
    ("--mcp-servers-config", "mcp_servers_config", "str", AGENT, "LLAMA_ARG_MCP_SERVERS_CONFIG"),
    ("--mcp-servers-json", "mcp_servers_json", "str", AGENT, "LLAMA_ARG_MCP_SERVERS_JSON"),
    ("-ag --agent -no-ag --no-agent", "agent", "flag", AGENT + " (--ui-mcp-proxy serves /cors-proxy)", "LLAMA_ARG_AGENT"),
    ("--sse-ping-interval", "sse_ping_interval", "str", "no effect: streams send no SSE pings", "LLAMA_ARG_SSE_PING_INTERVAL"),
    ("--cache-reuse", "cache_reuse", "str",
     "no effect: no KV-shift chunk reuse; the slots and the prompt cache reuse common prefixes", "LLAMA_ARG_CACHE_REUSE"),
    ("--reasoning-effort", "reasoning_effort", "str",
     "no effect: not passed to templates; use --chat-template-kwargs '{\"reasoning_effort\": ...}'", "LLAMA_ARG_REASONING_EFFORT"),
    ("--reasoning-preserve --no-reasoning-preserve", "reasoning_preserve", "flag",
     "no effect: templates receive the history as the request gives it", "LLAMA_ARG_REASONING_PRESERVE"),
    ("--skip-chat-parsing --no-skip-chat-parsing", "skip_chat_parsing", "flag",
     "no effect: chat answers are always parsed for reasoning and tool calls", "LLAMA_ARG_SKIP_CHAT_PARSING"),
    ("--prefill-assistant --no-prefill-assistant", "prefill_assistant", "flag",
     "no effect: a final assistant message is always prefilled", "LLAMA_ARG_PREFILL_ASSISTANT"),
    ("--log-prompts-dir", "log_prompts_dir", "str", "no effect: prompts are logged with -v, not to files"),
]

# (names, dest, kind, reason[, env]): the reason is the one line printed before exit status 1.
REFUSED_FLAGS: list[tuple[str, ...]] = [
    ("-dr --docker-repo", "docker_repo", "str", HUB, "LLAMA_ARG_DOCKER_REPO"),
    ("--spec-draft-hf -hfd -hfrd --hf-repo-draft", "hf_repo_draft", "str", HUB, "LLAMA_ARG_SPEC_DRAFT_HF_REPO"),
    ("-mmu --mmproj-url", "mmproj_url", "str", HUB, "LLAMA_ARG_MMPROJ_URL"),
    ("--draft --draft-n --draft-max", "draft_max", "str", REMOVED, "LLAMA_ARG_DRAFT_MAX"),
    ("--draft-min --draft-n-min", "draft_min", "str", REMOVED, "LLAMA_ARG_DRAFT_MIN"),
    ("--spec-ngram-size-n", "spec_ngram_size_n", "str", REMOVED),
    ("--spec-ngram-size-m", "spec_ngram_size_m", "str", REMOVED),
    ("--spec-ngram-min-hits", "spec_ngram_min_hits", "str", REMOVED),
    *[(f"--{name}", name.replace("-", "_").replace(".", "_"), "flag", HUB) for name in (
        "embd-gemma-default", "fim-qwen-1.5b-default", "fim-qwen-3b-default", "fim-qwen-7b-default",
        "fim-qwen-7b-spec", "fim-qwen-14b-spec", "fim-qwen-30b-default", "gpt-oss-20b-default",
        "gpt-oss-120b-default", "vision-gemma-4b-default", "vision-gemma-12b-default")],
]
