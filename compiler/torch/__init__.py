"""Everything in the compiler that needs torch: the IR <-> torch.nn bridge and fine-tuning.

torch is optional; the numpy reference (``compiler.ops``, ``compiler.interpreter``) never
imports this package, so the reference semantics cannot silently depend on torch.
"""
from .bridge import TORCH_OPS, finetune, from_torch, import_torch, to_torch, training_loss

__all__ = ["to_torch", "from_torch", "finetune", "training_loss", "TORCH_OPS", "import_torch"]
