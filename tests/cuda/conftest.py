"""The CUDA simulator tests run only in their own process, with the simulator switched on.

``NUMBA_ENABLE_CUDASIM=1`` must be set before ``numba.cuda`` is first imported, so these tests
cannot share a process with the rest of the suite. Run them with::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda -q -p no:cacheprovider

Without it, the files here are not collected (nor imported) at all.
"""

import os

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    collect_ignore_glob = ["test_*.py"]
