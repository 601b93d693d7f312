"""The yoton kernel: a Python process that runs user code, served over yoton channels.

Started by the broker (``python -m kernel``, run so that a kernel.py in the
current directory cannot shadow it); see ``protocol.md section 5`` for the
channels it uses and ``kernel/__main__.py`` for how it is launched.
"""

__version__ = "3.0.0.dev0"
