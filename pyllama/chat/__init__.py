"""Chat templates and tool calls: messages in, one prompt string out; model text in, tool calls out.

Engine-side (runs under Pyodide too): jinja2's sandbox renders the model's own template,
`builtin` holds llama.cpp's named formats, `tool_calls` reads function calls back.
"""

from pyllama.chat.builtin import BUILTIN_TEMPLATES, builtin_name, detect_builtin
from pyllama.chat.jinja_env import TemplateError
from pyllama.chat.messages import ChatMessage, ToolCall, parse_messages, parse_tools
from pyllama.chat.template import CHATML_SOURCE, ChatInputs, ChatPrompt, ChatTemplate, TemplateCaps
from pyllama.chat.tool_calls import ParsedOutput, parse_output, streamable_prefix

__all__ = [
    "BUILTIN_TEMPLATES",
    "CHATML_SOURCE",
    "ChatInputs",
    "ChatMessage",
    "ChatPrompt",
    "ChatTemplate",
    "ParsedOutput",
    "TemplateCaps",
    "TemplateError",
    "ToolCall",
    "builtin_name",
    "detect_builtin",
    "parse_messages",
    "parse_output",
    "parse_tools",
    "streamable_prefix",
]
