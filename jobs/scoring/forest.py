"""The champion compiled to machine code (lleaves), shipped to executors and checked there.

In: a LightGBM booster. Out: a :class:`CompiledForest` (model text, object code, the CPU it was
compiled for), the executable forest in a worker (:func:`load_forest`: the driver's code when
the CPU matches, compiled again otherwise) and :func:`check_agreement`, which stops a task whose
compiled scores differ from LightGBM's. Called by :mod:`jobs.scoring.score` and the tests.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np

AGREEMENT_ROWS = 256  # rows per task scored both ways before the compiled scores are trusted


AGREEMENT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class CompiledForest:
    """A booster compiled to machine code by lleaves, ready to ship to the executors.

    ``cpu`` names the host CPU and features the code was compiled for: an executor on another
    CPU compiles the model again from ``model_text`` rather than run code that may use
    instructions it lacks.
    """

    model_text: str
    object_code: bytes
    cpu: str

    @property
    def key(self) -> str:
        """Identifies the model and target (what a worker's cache is keyed by)."""
        return hashlib.sha256(f"{self.cpu}\n{self.model_text}".encode()).hexdigest()


def _cpu_signature() -> str:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM could not read them; never reuse code compiled elsewhere
        features = f"unknown:{os.getpid()}"
    return f"{llvm.get_host_cpu_name()};{features}"


def _compile(model_text: str, object_code: bytes | None) -> tuple[object, bytes]:
    """An lleaves model for ``model_text``, from ``object_code`` when given, and its code."""
    import lleaves

    with tempfile.TemporaryDirectory(prefix="farmwatch-forest-") as folder:
        model_file, cache = Path(folder, "model.txt"), Path(folder, "forest.o")
        model_file.write_text(model_text)
        if object_code is not None:
            cache.write_bytes(object_code)
        model = lleaves.Model(model_file=str(model_file))
        model.compile(cache=str(cache))  # compiles and writes the cache, or loads it
        return model, cache.read_bytes()


_CACHE_MODELS = 4  # compiled forests kept per process: a model pair and the one before


_COMPILED: dict[str, CompiledForest] = {}  # on the driver: the last models compiled


def _remember(cache: dict, key: str, value: object) -> None:
    cache.pop(key, None)
    cache[key] = value
    while len(cache) > _CACHE_MODELS:
        cache.pop(next(iter(cache)))


def compile_forest(booster: lgb.Booster) -> CompiledForest:
    """Compile ``booster`` on the driver (about a second for 400 trees of 31 leaves).

    The last models compiled are kept, so a process that scores with one model pair again
    (the benchmark's repeats, a long-lived worker) compiles each once.
    """
    text = booster.model_to_string()
    key = hashlib.sha256(text.encode()).hexdigest()
    if key not in _COMPILED:
        _remember(_COMPILED, key, CompiledForest(text, _compile(text, None)[1], _cpu_signature()))
    return _COMPILED[key]


_LOADED: dict[str, object] = {}  # per Python worker: the last compiled forests it loaded


def load_forest(forest: CompiledForest) -> object:
    """The executable forest in this worker: the driver's code if the CPU matches, else rebuilt."""
    model = _LOADED.get(forest.key)
    if model is None:
        same_cpu = _cpu_signature() == forest.cpu
        model = _compile(forest.model_text, forest.object_code if same_cpu else None)[0]
        _remember(_LOADED, forest.key, model)
    return model


def check_agreement(booster: lgb.Booster, x: np.ndarray, compiled_scores: np.ndarray) -> None:
    """Stop if the compiled forest's scores for ``x`` differ from LightGBM's.

    Raises:
        RuntimeError: a difference above :data:`AGREEMENT_TOLERANCE`.
    """
    expected = booster.predict(x, num_threads=1)
    gap = float(np.max(np.abs(expected - compiled_scores), initial=0.0))
    if not gap <= AGREEMENT_TOLERANCE:
        raise RuntimeError(
            f"the compiled model's scores differ from LightGBM's by {gap:.3g} on this executor; "
            "score with FARMWATCH_MODEL__EVALUATOR=lightgbm and report it"
        )
