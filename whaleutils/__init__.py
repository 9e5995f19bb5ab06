"""whaleutils: the shared library of the whale and dolphin photo-identification notebooks.

The shared file contracts (``contracts``), then one subpackage per stage
(``docs/architecture.md`` maps them): ``datasets``, ``images``, ``training``, ``retrieval``,
``analysis``, ``catalogue`` and ``suite``; ``cli`` is the
command line (``python -m whaleutils --help``). Import modules from their stage, e.g.
``from whaleutils.retrieval import knn``.
"""

__version__ = "0.1.0"
