"""A command using the embedded board, driven by files (for test_board_lifecycle.py).

    python board_worker.py CONTROL_DIR NAME [ARTIFACT]

With ``EXTRA_SERVER_KEY`` set, first registers an extra server (a plain host-python
``tvm.exec.rpc_server`` under that key: how a simulator is started with the board).
Takes the board (`ensure_running`: starts it if needed), writes ``NAME.ready`` with the
board's state, then polls: ``NAME.go`` -> runs ARTIFACT's model on the board and saves
its outputs to ``NAME.out.npz``; ``NAME.quit`` -> exits normally.  It never exits on its
own otherwise, so a test can also end it with a signal.
"""
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from targets import board  # noqa: E402

control, name = Path(sys.argv[1]), sys.argv[2]
artifact = sys.argv[3] if len(sys.argv) > 3 else None
if os.environ.get("EXTRA_SERVER_KEY"):
    key = os.environ["EXTRA_SERVER_KEY"]

    def spawn(tracker_port, log):
        return board._spawn([sys.executable, "-m", "tvm.exec.rpc_server", "--host",
                             "127.0.0.1", f"--tracker=127.0.0.1:{tracker_port}",
                             f"--key={key}"], log)

    board.register_server(board.ServerSpec("extra-sim", key, spawn))
board.ensure_running(timeout=240)
(control / f"{name}.ready").write_text(json.dumps(board._read_state()))
ran = False
while True:
    if artifact and not ran and (control / f"{name}.go").exists():
        import numpy as np

        import compiler

        cm = compiler.CompiledModel.load(artifact)
        x = np.load(control / "input.npy")
        outs = cm.run({cm.input_names[0]: x})
        np.savez(control / f"{name}.out.npz", *outs)
        ran = True
    if (control / f"{name}.quit").exists():
        sys.exit(0)
    time.sleep(0.2)
