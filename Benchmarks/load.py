"""Background load for the benchmark harnesses: the conditions users run Bottleneck under.

  quiet       nothing else runs
  niced-hogs  one `nice -n 15` busy loop per core (low-priority work that a scheduler should let us preempt)
  duty        one normal-priority process busy 10 ms of every 20 ms (another program sharing a core)

As a module: `with load("niced-hogs"): measure()` keeps the load running for the block, so every engine
measured inside it sees the same condition. As a command: `python3 Benchmarks/load.py MODE` runs the load
until it receives SIGTERM/SIGINT (the shell harnesses start it in the background and kill it).
"""
import contextlib, os, signal, subprocess, sys, time

MODES = ("quiet", "niced-hogs", "duty")

# Each loader is a fresh interpreter running one of these loops, so it holds no harness state.
_HOG = "while True: pass"
_DUTY = ("import time\n"
         "period, busy = 0.020, 0.010\n"
         "while True:\n"
         "    t0 = time.perf_counter()\n"
         "    while time.perf_counter() - t0 < busy: pass\n"
         "    time.sleep(max(0.0, period - (time.perf_counter() - t0)))\n")


def start(mode):
    """Starts the loader processes of `mode`; returns them (empty for quiet)."""
    if mode not in MODES:
        raise ValueError(f"unknown load mode {mode!r}; known: {', '.join(MODES)}")
    if mode == "quiet":
        return []
    if mode == "niced-hogs":
        return [subprocess.Popen(["nice", "-n", "15", sys.executable, "-c", _HOG]) for _ in range(os.cpu_count() or 1)]
    return [subprocess.Popen([sys.executable, "-c", _DUTY])]


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextlib.contextmanager
def load(mode):
    procs = start(mode)
    try:
        time.sleep(0.2 if procs else 0)  # let the loaders reach their loops before timing starts
        yield
    finally:
        stop(procs)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in MODES:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(MODES)}")
    procs = start(sys.argv[1])
    done = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.append(1))
    while not done:
        signal.pause()
    stop(procs)
