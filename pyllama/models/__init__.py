"""Architecture registry: GGUF `general.architecture` -> the class of its network.

Every class is LlamaModel (llama.py) or a direct subclass stating its differences.
"""

from __future__ import annotations

from collections.abc import Callable

from pyllama.batch import Batch, SeqChunk
from pyllama.config import ModelConfig
from pyllama.gguf_file import GGUFFile
from pyllama.kv_cache import KVCache
from pyllama.models.base import Weights
from pyllama.models.bert import BertModel
from pyllama.models.gemma import GemmaModel
from pyllama.models.gemma2 import Gemma2Model
from pyllama.models.gemma3 import Gemma3Model
from pyllama.models.gpt2 import GPT2Model
from pyllama.models.granite import GraniteModel
from pyllama.models.llama import LlamaModel
from pyllama.models.olmo2 import Olmo2Model
from pyllama.models.phi3 import Phi3Model
from pyllama.models.qwen2 import Qwen2Model
from pyllama.models.qwen3 import Qwen3Model
from pyllama.models.starcoder2 import StarCoder2Model

ModelFactory = Callable[[GGUFFile, ModelConfig, Weights, KVCache], LlamaModel]

ARCHITECTURES: dict[str, ModelFactory] = {
    "llama": LlamaModel,  # dense, or Mixtral-style experts where a layer has a router
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
    "nomic-bert": BertModel,
}

__all__ = ["ARCHITECTURES", "Batch", "LlamaModel", "ModelFactory", "SeqChunk", "Weights"]
