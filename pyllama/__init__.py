"""pyllama: llama.cpp and llama-server rebuilt in typed Python on NumPy.

The engine (this package) imports only numpy, gguf, jinja2 and the standard library, uses
no threads, and runs unchanged under CPython and Pyodide.
"""

__version__ = "0.1.0"
