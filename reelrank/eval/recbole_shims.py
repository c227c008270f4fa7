"""RecBole 1.2.1 under NumPy 2 and on our terms: runtime shims for ``eval/peers_recbole.py``,
each scoped to our own calls (no file in site-packages is touched): NumPy 1.x aliases while
RecBole code runs, its thread count and devices, the global random state it would reseed, and a
configuration built without the method that breaks on NumPy 2.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np


# NumPy 1.x aliases that RecBole 1.2.1 reads at run time: ``np.float`` in
# ``recbole.data.interaction._convert_to_tensor`` (every Interaction built from lists/arrays) and
# in ``recbole.evaluator.metrics``. RecBole installs them itself in
# ``Config.compatibility_settings``, but that method also reads ``np.float_``, ``np.complex_`` and
# ``np.unicode_``, which NumPy 2.0 removed, so it raises AttributeError. We skip that method and
# set the same aliases (to their NumPy 2 equivalents) only while RecBole code runs, then remove
# them again. ``np.bool`` and ``np.long`` are left alone: they exist in NumPy 2 already.
_NUMPY_ALIASES: dict[str, Any] = {
    "float": np.float64,
    "int": np.int_,
    "complex": np.complex128,
    "object": np.object_,
    "str": np.str_,
    "unicode": np.str_,
}


@contextlib.contextmanager
def _recbole_runtime(num_threads: int | None = None) -> Iterator[None]:
    """Run RecBole code: NumPy 1.x aliases present, optional torch thread count; all restored.

    Also silences the deprecation warnings RecBole 1.2.1 triggers with current pandas, torch and
    NumPy (chained ``fillna(inplace=True)``, ``torch.cuda.amp.GradScaler``, a read-only array
    handed to ``torch.LongTensor``, ``np.argsort`` of a tensor); none of them changes what it
    computes on our data (atomic files without missing values, CPU, no mixed precision).
    """
    import torch

    added = [name for name in _NUMPY_ALIASES if name not in np.__dict__]
    for name in added:
        setattr(np, name, _NUMPY_ALIASES[name])
    threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")
            warnings.filterwarnings(
                "ignore", message="The given NumPy array is not writable", category=UserWarning
            )
            # Interaction.sort calls np.argsort on a torch tensor; NumPy sorts a converted copy
            # (stable, as asked) and wraps the result back through a deprecated path.
            warnings.filterwarnings(
                "ignore", message="__array_wrap__ must accept context", category=DeprecationWarning
            )
            yield
    finally:
        torch.set_num_threads(threads)
        for name in added:
            np.__dict__.pop(name, None)


@contextlib.contextmanager
def _global_rng_preserved() -> Iterator[None]:
    """RecBole's ``init_seed`` reseeds ``random``, ``numpy.random`` and torch: put them back."""
    import random

    import torch

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _recbole_config(model_class: Any, dataset: str, config_dict: dict[str, Any]) -> Any:
    """``recbole.config.Config`` built from ``config_dict`` alone, without process side effects.

    * RecBole merges ``--key=value`` words of ``sys.argv`` over ``config_dict`` (a harness run as
      ``... --dataset=x`` would silently reconfigure it): ``sys.argv`` is emptied meanwhile.
    * ``Config._init_device`` writes ``CUDA_VISIBLE_DEVICES`` into ``os.environ``: restored after.
    * ``Config.compatibility_settings`` fails on NumPy 2 (see ``_NUMPY_ALIASES``): skipped.
    """
    from recbole.config import Config

    class _Config(Config):  # type: ignore[misc, valid-type]
        def compatibility_settings(self) -> None:
            """Replaced by ``_recbole_runtime`` (NumPy 2 has no ``np.float_``)."""

    argv = sys.argv
    cuda_env = os.environ.get("CUDA_VISIBLE_DEVICES")
    sys.argv = argv[:1]
    try:
        return _Config(model=model_class, dataset=dataset, config_dict=config_dict)
    finally:
        sys.argv = argv
        if cuda_env is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = cuda_env
