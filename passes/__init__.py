"""Built-in graph rewrites; importing this package registers them by name.

One pass per module.  See CONTRIBUTING.md for how to add one.
"""
from . import cleanup, fold_bn, fold_pad  # noqa: F401  (register on import)
from . import pruning  # noqa: F401  (prune, magnitude-prune, t-sensitive, prune-search)
from . import quantization  # noqa: F401,E402  (quantize, mixed-precision, qdq-to-integer)
from . import weight_sharing  # noqa: F401,E402  (share-weights)
from . import gradual_prune  # noqa: F401,E402  (gradual-prune, deep-compression)
from . import finetune  # noqa: F401,E402  (finetune: retraining as a pipeline step)
from . import tiling  # noqa: F401,E402  (tile)
