"""Architecture registry: GGUF `general.architecture` -> a constructor of its network.

Most entries are classes; `llama` is a function because llama.cpp's `llama` architecture
covers both dense models (LlamaModel) and mixtures of experts such as Mixtral.
"""

from __future__ import annotations

from collections.abc import Callable

from pyllama.config import ModelConfig
from pyllama.gguf_file import GGUFFile
from pyllama.kv_cache import KVCache
from pyllama.models.base import Batch, DecoderModel, SeqChunk, Weights
from pyllama.models.bert import BertModel, NomicBertModel
from pyllama.models.gemma import GemmaModel
from pyllama.models.gemma2 import Gemma2Model
from pyllama.models.gemma3 import Gemma3Model
from pyllama.models.gpt2 import GPT2Model
from pyllama.models.granite import GraniteModel
from pyllama.models.llama import LlamaModel
from pyllama.models.mixtral import MixtralModel
from pyllama.models.olmo2 import Olmo2Model
from pyllama.models.phi3 import Phi3Model
from pyllama.models.qwen2 import Qwen2Model
from pyllama.models.qwen3 import Qwen3Model
from pyllama.models.starcoder2 import StarCoder2Model

ModelFactory = Callable[[GGUFFile, ModelConfig, Weights, KVCache], DecoderModel]


def llama_family(gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> DecoderModel:
    if config.n_expert > 0:
        return MixtralModel(gguf, config, weights, kv)
    return LlamaModel(gguf, config, weights, kv)


ARCHITECTURES: dict[str, ModelFactory] = {
    "llama": llama_family,
    "qwen2": Qwen2Model,
    "qwen3": Qwen3Model,
    "granite": GraniteModel,
    "gemma": GemmaModel,
    "gemma2": Gemma2Model,
    "gemma3": Gemma3Model,
    "phi3": Phi3Model,
    "gpt2": GPT2Model,
    "starcoder2": StarCoder2Model,
    "olmo2": Olmo2Model,
    "bert": BertModel,
    "nomic-bert": NomicBertModel,
}

__all__ = ["ARCHITECTURES", "Batch", "DecoderModel", "LlamaModel", "ModelFactory", "SeqChunk"]
