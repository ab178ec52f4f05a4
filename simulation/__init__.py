"""Research side: TensorFlow Federated simulation of many watches."""
from __future__ import annotations

import atexit
import gc
import sys


@atexit.register
def _release_tff_import_context() -> None:
    """Drop the default context TFF sets at import while the interpreter is still whole.

    That context's ``ServiceManager.__del__`` reads module globals; collected during
    interpreter teardown (e.g. when pytest kept the modules that imported TFF) it found them
    gone and printed "Exception ignored ... 'NoneType' object has no attribute 'Popen'" at the
    end of test runs and CI logs. Registered before any simulation module imports TFF, so it
    runs after every ``LocalTffRuntime.stop`` (atexit runs last-registered first).
    """
    if "tensorflow_federated" in sys.modules:
        from tensorflow_federated.python.core.impl.context_stack.set_default_context import set_no_default_context

        set_no_default_context()
        gc.collect()
