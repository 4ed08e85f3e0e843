"""The ``fpga-sim`` target: a simulated FINN-style dataflow accelerator (see target.py).

Importing the package costs nothing (no TVM): `targets.base` imports `target` to register
it; the models (`design`, `mapping`, `folding`, `stages`), the threshold requantizer
(`thresholds`) and the RPC simulator server (`server`) are imported where they are used.
A regular package (not a namespace one) so ``setuptools.packages.find`` installs it.
"""
