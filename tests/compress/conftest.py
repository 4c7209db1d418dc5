"""Fixtures of the compression tests; without torch (the ``torch`` extra) they are not collected."""

import importlib.util

if importlib.util.find_spec("torch") is None:
    collect_ignore_glob = ["test_*.py"]
else:
    from ._digits import _one_thread, cnn, digits, mlp  # noqa: F401 (fixtures)
