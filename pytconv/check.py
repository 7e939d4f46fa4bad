"""``python -m pytconv check``: do pytconv and the installed frameworks agree?

Runs a matrix of convolutions and transposed convolutions (1-3 spatial
dimensions, 4 when JAX is installed; strides, per-side padding, "same" and
"valid", dilation, groups, output_padding, padding modes; float32 and float64)
through every installed backend (`pytconv.testing`): pytconv's NumPy API, its
PyTorch and TensorFlow adapters and GPU path, and PyTorch's, TensorFlow's and
JAX's own operations, comparing outputs and gradients with the float64
reference. Prints a table, optionally writes JSON, and exits with status 1 when
anything disagrees (0 when everything agrees, 2 for bad options).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import time

import numpy as np

from . import testing
from .testing import Config

FRAMEWORKS = ("torch", "tensorflow", "jax", "gpu")
SIZES = ("quick", "default", "full")

# Per spatial dimension: input sizes (odd and even), channels and batch chosen
# so that every configuration below is valid and each run takes milliseconds.
_SPATIAL = (9, 8, 7, 6, 5, 6, 5, 4)
_SPATIAL_3D = (6, 5, 6)
_SPATIAL_4D = (4, 5, 4, 3)


def _per(values, n):
    """The first n of a per-dimension tuple (cycled)."""
    return tuple(values[d % len(values)] for d in range(n))


def _features(n: int) -> dict:
    """name -> Config factory for n spatial dimensions (channels 4 -> 6, groups divide both)."""
    if n == 3:
        size = _SPATIAL_3D
        batch = 1
    elif n >= 4:
        size = _per(_SPATIAL_4D, n)
        batch = 1
    else:
        size = _per(_SPATIAL[n - 1:], n)
        batch = 2
    cin, cout = 4, 6

    def conv(kernel, groups=1, **kw):
        return Config("conv", (batch, cin) + size, (cout, cin // groups) + _per(kernel, n), groups=groups, **kw)

    def tconv(kernel, groups=1, in_size=None, **kw):
        small = _per(in_size or (4, 3, 4, 3), n)
        return Config("conv_transpose", (batch, cin) + small, (cin, cout // groups) + _per(kernel, n),
                      groups=groups, **kw)

    return {
        "conv basic": lambda: conv((3,), padding=1),
        "conv stride + per-side padding": lambda: conv((3, 2), stride=_per((2, 1, 3), n),
                                                       padding=_per(((1, 0), (0, 2), (2, 1)), n)),
        "conv same stride 2": lambda: conv((3, 4), stride=2, padding="same"),
        "conv valid stride 3": lambda: conv((2,), stride=_per((3, 2), n), padding="valid", bias=False),
        "conv dilation": lambda: conv((3,), dilation=_per((2, 1), n), padding=_per((2, 1), n)),
        "conv same dilation": lambda: conv((3, 2), dilation=2, padding="same"),
        "conv groups": lambda: conv((3,), groups=2, stride=2, padding=1),
        "conv depthwise": lambda: Config("conv", (batch, cin) + size, (cin * 2, 1) + _per((3,), n), groups=cin,
                                         padding=_per((1, 0), n)),
        "conv reflect": lambda: conv((3,), padding=_per(((1, 2), 1), n), padding_mode="reflect"),
        "conv replicate": lambda: conv((3, 2), stride=2, padding=_per((2, 1), n), padding_mode="replicate"),
        "conv circular": lambda: conv((3,), padding=_per((1, 2), n), padding_mode="circular"),
        "transposed stride 2 output_padding": lambda: tconv((3,), stride=2, padding=1, output_padding=1),
        "transposed same stride 2": lambda: tconv((3, 4), stride=2, padding="same"),
        "transposed valid": lambda: tconv((2, 3), stride=_per((2, 3), n), padding="valid"),
        "transposed per-side padding": lambda: tconv((3,), stride=_per((2, 3, 1), n),
                                                     padding=_per(((1, 2), (0, 1), (2, 0)), n),
                                                     output_padding=_per((1, 0, 0, 1), n), bias=False),
        "transposed dilation": lambda: tconv((3,), dilation=2, padding=1, output_padding=_per((1, 0), n)),
        "transposed groups": lambda: tconv((3,), groups=2, stride=2, padding=_per((1, 0), n)),
        "transposed reflect": lambda: tconv((3,), stride=2, padding=1, output_padding=1, padding_mode="reflect"),
        "transposed replicate": lambda: tconv((2,), stride=_per((1, 2), n), padding=_per(((1, 0), 1), n),
                                              padding_mode="replicate"),
        "transposed circular": lambda: tconv((3,), stride=_per((1, 2), n), padding=1, padding_mode="circular"),
    }


# Which features each size runs for each number of dimensions (None: all).
_QUICK = {
    1: ["conv stride + per-side padding", "transposed same stride 2", "conv reflect"],
    2: ["conv same stride 2", "conv groups", "transposed stride 2 output_padding", "transposed per-side padding",
        "conv circular"],
    3: ["conv dilation", "transposed groups"],
    4: ["transposed stride 2 output_padding"],
}
_DEFAULT = {
    1: ["conv stride + per-side padding", "conv same stride 2", "conv dilation", "conv reflect",
        "transposed same stride 2", "transposed valid", "transposed dilation", "transposed circular"],
    2: None,
    3: ["conv basic", "conv same stride 2", "conv groups", "conv circular", "transposed stride 2 output_padding",
        "transposed per-side padding", "transposed groups", "transposed replicate"],
    4: ["conv stride + per-side padding", "transposed stride 2 output_padding"],
}


def configurations(size: str = "default", dims=(1, 2, 3), seeds=(0,)) -> list:
    """The checked configurations: a fixed set per size; "full" runs every
    feature in every number of dimensions, plus random configurations (10 per
    dimension and seed)."""
    if size not in SIZES:
        raise ValueError(f"configurations: size must be one of {', '.join(SIZES)}, got {size!r}")
    configs = []
    for n in dims:
        features = _features(n)
        if size == "full":
            names = list(features)
        else:
            table = _QUICK if size == "quick" else _DEFAULT
            names = table.get(n if n <= 4 else 4)
            names = list(features) if names is None else names
        configs.extend(features[name]() for name in names)
    if size == "full":
        for seed in seeds:
            rng = np.random.default_rng([seed, 2718])
            for n in dims:
                configs.extend(testing.random_config(rng, n, max_size=6 if n <= 2 else 4) for _ in range(10))
    return configs


# ---- command line ----------------------------------------------------------------------


def _csv(value: str) -> list:
    return [v.strip() for v in value.split(",") if v.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pytconv check",
        description="Check that pytconv's backends and the installed frameworks (PyTorch, TensorFlow, JAX) "
                    "agree with pytconv's float64 reference on convolutions, transposed convolutions and their "
                    "gradients. Exit status 1 when anything disagrees.",
    )
    p.add_argument("--frameworks", type=_csv, default=None,
                   help="comma-separated subset of torch,tensorflow,jax,gpu (default: all; 'none': "
                        "pytconv's NumPy API only)")
    p.add_argument("--backends", type=_csv, default=None,
                   help="comma-separated backend names (default: every registered backend); see --list-backends")
    p.add_argument("--dtypes", type=_csv, default=["float32", "float64"], help="default: float32,float64")
    p.add_argument("--seeds", type=_csv, default=["0"], help="comma-separated seeds of the random data (default: 0)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", choices=SIZES, default="default", help="how many configurations (default: default)")
    size.add_argument("--quick", dest="size", action="store_const", const="quick", help="same as --size quick")
    size.add_argument("--full", dest="size", action="store_const", const="full", help="same as --size full")
    p.add_argument("--dims", type=_csv, default=None,
                   help="spatial dimensions to run (default: 1,2,3, and 4 when JAX is installed)")
    p.add_argument("--ops", type=_csv, default=["conv", "conv_transpose"], help="default: conv,conv_transpose")
    p.add_argument("--json", metavar="PATH", default=None, help="write the full results as JSON to PATH")
    p.add_argument("--show", choices=("all", "failures", "summary"), default="all",
                   help="table rows to print (default: all)")
    p.add_argument("--require", action="store_true",
                   help="fail when a selected framework is not installed (as in CI)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--list", action="store_true", help="print the configurations and exit")
    p.add_argument("--list-backends", action="store_true", help="print the backends and their state and exit")
    return p


class _Progress:
    """A plain-text progress bar on stderr (redrawn in place on a terminal,
    a line every 10% otherwise)."""

    def __init__(self, stream, enabled: bool, width: int = 30):
        self.stream = stream
        self.enabled = enabled
        self.width = width
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.start = time.perf_counter()
        self.last_decile = -1

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.enabled or total == 0:
            return
        filled = self.width * done // total
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        line = f"[{bar}] {done}/{total} {elapsed:5.1f}s {label}"
        if self.tty:
            self.stream.write("\r" + line[:118].ljust(118))
            if done == total:
                self.stream.write("\n")
        else:
            decile = 10 * done // total
            if decile != self.last_decile:
                self.last_decile = decile
                self.stream.write(line + "\n")
        self.stream.flush()


def _environment() -> dict:
    import pytconv

    env = {"python": platform.python_version(), "platform": platform.platform(), "numpy": np.__version__,
           "pytconv": pytconv.__version__, "threads": pytconv.get_num_threads()}
    try:
        from . import _core

        env["simd"] = _core.simd_level()
    except Exception:  # informational only
        pass
    # Versions from the package metadata: importing a framework the run did
    # not use would cost seconds.
    distributions = {"torch": ("torch",), "tensorflow": ("tensorflow", "tensorflow-cpu"), "keras": ("keras",),
                     "jax": ("jax",), "jaxlib": ("jaxlib",), "cupy": ("cupy", "cupy-cuda12x", "cupy-cuda11x")}
    for name, candidates in distributions.items():
        for dist in candidates:
            try:
                env[name] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return env


def main(argv=None) -> int:
    """Entry point of ``python -m pytconv check``; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "jax" not in sys.modules and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        # Each configuration is a new small XLA program compiled once and run
        # once: LLVM's optimisation would take most of the check's time.
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    parser = _parser()
    args = parser.parse_args(argv)
    started = time.perf_counter()

    frameworks = args.frameworks
    if frameworks is not None:
        frameworks = [] if frameworks == ["none"] else frameworks
        unknown = sorted(set(frameworks) - set(FRAMEWORKS))
        if unknown:
            parser.error(f"--frameworks: unknown {', '.join(unknown)}; choose from {', '.join(FRAMEWORKS)}")
    for dtype in args.dtypes:
        if dtype not in ("float32", "float64"):
            parser.error(f"--dtypes: {dtype!r} is not float32 or float64")
    try:
        seeds = [int(s) for s in args.seeds]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers, got {','.join(args.seeds)}")
    for op in args.ops:
        if op not in ("conv", "conv_transpose"):
            parser.error(f"--ops: {op!r} is not conv or conv_transpose")
    try:
        backends = (None if args.backends is None
                    else [testing.get_backend(name) for name in args.backends])
    except ValueError as exc:
        parser.error(f"--backends: {exc}")
    chosen = testing.select_backends(backends, frameworks)
    states = {} if args.list else testing.backend_states(chosen)

    if args.list_backends:
        for b in chosen:
            state, reason = states[b.name]
            print(f"{b.name:20s} {state}" + (f": {reason}" if reason else ""))
        return 0

    if args.dims is None:
        jax_ok = any(b.framework == "jax" and states.get(b.name, ("ok",))[0] == "ok" for b in chosen)
        dims = [1, 2, 3] + ([4] if jax_ok else [])
    else:
        try:
            dims = [int(d) for d in args.dims]
        except ValueError:
            parser.error(f"--dims: expected comma-separated integers, got {','.join(args.dims)}")
        if any(d < 1 for d in dims):
            parser.error("--dims: spatial dimensions are >= 1")
    configs = [c for c in configurations(args.size, dims, seeds) if c.op in args.ops]

    if args.list:
        for c in configs:
            print(c.label())
        return 0

    progress = _Progress(sys.stderr, not args.no_progress)
    report = testing.check_configs(configs, chosen, dtypes=args.dtypes, seeds=seeds, progress=progress,
                                   states=states)
    elapsed = time.perf_counter() - started

    requested = set(FRAMEWORKS if frameworks is None else frameworks)
    # A framework named in --frameworks that cannot run is a failure, as is,
    # under --require, any backend whose framework is not installed.
    missing = []
    if args.require:
        missing += [f"{b.name} ({states[b.name][1]})" for b in chosen if states[b.name][0] == "not installed"]
    if frameworks is not None and args.backends is None:
        for name in frameworks:
            if not any(b.framework == name and states[b.name][0] == "ok" for b in chosen):
                missing.append(f"{name} (requested with --frameworks)")
    missing = list(dict.fromkeys(missing))

    if args.show == "all":
        print(report.table())
    elif args.show == "failures" and report.failures:
        print(report.table(report.failures))
    print()
    print(report.summary())
    if missing:
        print("FAILED: not available: " + "; ".join(missing))
    passed = report.passed and not missing
    n_cells = len(report.cells)
    print(f"{len(configs)} configurations x {len(args.dtypes)} dtypes x {len(seeds)} seeds, "
          f"{n_cells} cells in {elapsed:.1f}s: {'all agree' if passed else 'DISAGREEMENT'}")

    if args.json:
        payload = {
            "passed": passed,
            "elapsed_s": elapsed,
            "options": {"size": args.size, "dims": dims, "dtypes": args.dtypes, "seeds": seeds,
                        "frameworks": sorted(requested), "ops": args.ops},
            "environment": _environment(),
            "not_installed": missing,
            "tolerances": testing.TOLERANCES,
            **report.as_dict(),
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=1)
    return 0 if passed else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
