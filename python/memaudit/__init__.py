"""memaudit from Python: audit a model trained anywhere with your own numbers.

Everything here calls memaudit's Rust library crates (the same code as the ``memaudit`` CLI);
no algorithm is re-implemented in Python.

Conventions
-----------
* Membership scores: **higher = member** (pass ``lower_is_member=True`` to ``lower_bounds`` for
  losses).
* Log-perplexities: bits, the sum over the secret's tokens of ``-log2 p(token | prefix)``; lower
  means more likely. Exposure is in bits.
* Epsilon is in nats, as in every (epsilon, delta)-DP statement; delta is a probability.
* Arrays: float64 C-contiguous arrays are read in place (no copy); any other real dtype,
  non-contiguous arrays and Python lists are converted once (one copy). See docs/python.md.
* Bad input raises ValueError / TypeError / FileNotFoundError whose message starts with the
  name of the argument at fault. A bug inside memaudit raises RuntimeError, never a Rust panic.
* Long calls release the GIL.

Results are dicts with the keys of the matching CLI command's ``--json`` output (Python floats,
so infinities are ``float("inf")``, not the string ``"inf"``), and NumPy arrays where the CLI
writes files.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from . import _native

__version__: str = _native.__version__

__all__ = [
    "epsilon",
    "calibrate_noise_multiplier",
    "privacy_statement",
    "exact_exposure",
    "interpolation_exposure",
    "extrapolation_exposure",
    "skew_normal_fit",
    "compute_exposure_interpolation",
    "compute_exposure_extrapolation",
    "membership_inference",
    "roc_curve",
    "membership_metrics",
    "default_mia_config",
    "lower_bounds",
    "run_experiment",
    "experiment_names",
]

ArrayLike = Any
PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------------------------
# Accounting


def epsilon(
    delta: float,
    *,
    noise_multiplier: Optional[float] = None,
    sampling_rate: Optional[float] = None,
    steps: Optional[int] = None,
    dataset_size: Optional[int] = None,
    batch_size: Optional[int] = None,
    epochs: Optional[float] = None,
    segments: Optional[Sequence[Any]] = None,
    ledger: Optional[Union[PathLike, Mapping[str, Any]]] = None,
    accountant: str = "all",
    conversion: str = "improved",
    orders: Optional[Sequence[float]] = None,
) -> Dict[str, Any]:
    """Epsilon (nats) of DP-SGD at ``delta``: ``memaudit epsilon --json``.

    Give one of:

    * ``noise_multiplier`` (noise std / clipping norm) with ``sampling_rate`` (Poisson rate q in
      (0, 1]) and ``steps``, or with ``dataset_size`` N, ``batch_size`` B and ``epochs`` E (TF
      Privacy's bookkeeping: q = B/N, steps = ceil(E N / B); the result also gives the
      E ceil(N/B) steps a ``memaudit train`` run takes, under ``train_steps``);
    * ``segments``: a heterogeneous run, a list of ``(q, noise_multiplier, steps)`` tuples or
      dicts with keys ``sampling_rate``, ``noise_multiplier``, ``steps``; they are composed;
    * ``ledger``: a run's privacy ledger, as a dict or a path to a JSON file holding one (a
      checkpoint's state.json, a run.json, or the ledger alone).

    ``accountant``: "rdp", "pld" or "all"; ``conversion`` (RDP to (eps, delta)): "improved"
    (Canonne-Kamath-Steinke, dp_accounting's default) or "classic"; ``orders``: custom RDP
    orders (each in [1, 10000]).

    Returns the CLI's JSON object: ``results`` is a list of ``{"accountant", "epsilon",
    "order" (RDP), "delta"}``; ``warnings`` lists what the CLI would warn about.
    """
    return _native.epsilon(
        delta,
        noise_multiplier=noise_multiplier,
        sampling_rate=sampling_rate,
        steps=steps,
        dataset_size=dataset_size,
        batch_size=batch_size,
        epochs=epochs,
        segments=segments,
        ledger=os.fspath(ledger) if isinstance(ledger, os.PathLike) else ledger,
        accountant=accountant,
        conversion=conversion,
        orders=None if orders is None else list(orders),
    )


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    *,
    sampling_rate: Optional[float] = None,
    steps: Optional[int] = None,
    dataset_size: Optional[int] = None,
    batch_size: Optional[int] = None,
    epochs: Optional[float] = None,
    accountant: str = "all",
    conversion: str = "improved",
    orders: Optional[Sequence[float]] = None,
) -> Dict[str, Any]:
    """The smallest noise multiplier whose epsilon is at most ``target_epsilon`` (nats) at
    ``delta``: ``memaudit noise --json``. The multiplier (to 1e-4 relative) never overshoots.

    Sampling as in :func:`epsilon`. ``results``: ``{"accountant", "noise_multiplier",
    "epsilon", "delta"}`` per accountant.
    """
    return _native.calibrate_noise_multiplier(
        target_epsilon,
        delta,
        sampling_rate=sampling_rate,
        steps=steps,
        dataset_size=dataset_size,
        batch_size=batch_size,
        epochs=epochs,
        accountant=accountant,
        conversion=conversion,
        orders=None if orders is None else list(orders),
    )


def privacy_statement(
    dataset_size: int,
    batch_size: int,
    epochs: float,
    noise_multiplier: float,
    delta: float,
    *,
    used_microbatching: bool = False,
    max_examples_per_user: Optional[int] = None,
    accountant: str = "rdp",
) -> Dict[str, Any]:
    """TF Privacy's DP-SGD privacy statement: ``memaudit statement --json``.

    Epsilon (nats) under Poisson sampling (``epsilon_poisson``) and when each example is used
    once per epoch in any order (``epsilon_once_per_epoch``); user-level figures with
    ``max_examples_per_user``; ``text`` is the statement as the CLI prints it.
    ``used_microbatching=True`` halves the accounted noise multiplier (TF Privacy's default).
    """
    return _native.statement(
        dataset_size,
        batch_size,
        epochs,
        noise_multiplier,
        delta,
        used_microbatching=used_microbatching,
        max_examples_per_user=max_examples_per_user,
        accountant=accountant,
    )


# --------------------------------------------------------------------------------------------
# Exposure (The Secret Sharer, Carlini et al. 2019)


def exact_exposure(candidate_log_perplexities: ArrayLike, secret_indices: ArrayLike) -> Dict[str, Any]:
    """Exact exposure when every candidate of the randomness space R is scored.

    ``candidate_log_perplexities``: float array [|R|], the log-perplexity (bits) of every
    candidate; ``secret_indices``: int array [s], the index in R of each inserted secret.
    exposure = log2 |R| - log2 rank, rank = #{r in R : logppl(r) <= logppl(secret)} (ties count,
    rank 1 = most likely). Returns ``{"exposures": float64 [s] (bits), "ranks": uint64 [s],
    "log2_space": log2 |R|}``.
    """
    return _native.exact_exposure(candidate_log_perplexities, secret_indices)


def interpolation_exposure(
    secret_log_perplexities: ArrayLike, reference_log_perplexities: ArrayLike
) -> np.ndarray:
    """TF Privacy's interpolated exposure (bits) of each secret, in input order.

    rank = 1 + #{reference : logppl(reference) <= logppl(secret)}, exposure = log2 m - log2 rank
    with m references (so within [log2 m - log2 (m + 1), log2 m]).
    """
    return _native.interpolation_exposure(secret_log_perplexities, reference_log_perplexities)


def extrapolation_exposure(
    secret_log_perplexities: ArrayLike, reference_log_perplexities: ArrayLike
) -> Dict[str, Any]:
    """TF Privacy's extrapolated exposure: a skew-normal fitted to the references by maximum
    likelihood (scipy's ``skewnorm.fit`` procedure), exposure = -log2 cdf(logppl(secret)) bits.

    Returns ``{"exposures": float64 [s], "shape", "loc", "scale", "converged"}``.
    """
    return _native.extrapolation_exposure(secret_log_perplexities, reference_log_perplexities)


def skew_normal_fit(values: ArrayLike) -> Dict[str, Any]:
    """Maximum-likelihood skew-normal fit (as ``scipy.stats.skewnorm.fit``): ``{"shape", "loc",
    "scale", "converged", "neg_log_likelihood", "iterations"}``."""
    return _native.skew_normal_fit(values)


def _as_reference(perplexities_reference: ArrayLike) -> np.ndarray:
    return np.ascontiguousarray(perplexities_reference, dtype=np.float64)


def compute_exposure_interpolation(
    perplexities: Mapping[int, Sequence[float]], perplexities_reference: Sequence[float]
) -> Dict[int, np.ndarray]:
    """Drop-in for ``tensorflow_privacy``'s secret-sharer ``compute_exposure_interpolation``.

    ``perplexities``: {repetitions: log-perplexities of the secrets inserted that many times};
    ``perplexities_reference``: log-perplexities of never-inserted candidates. Returns
    {repetitions: exposures}. Differences from TF (docs/python.md): each array comes back in
    the input order (TF's is sorted by perplexity, which its docstring allows); a reference that
    ties with a secret always counts toward its rank; a key 0 is an ordinary key (TF labels the
    references 0 internally, so a key 0 there mixes with them).
    """
    ref = _as_reference(perplexities_reference)
    return {
        r: _native.interpolation_exposure(np.ascontiguousarray(p, dtype=np.float64), ref)
        for r, p in perplexities.items()
    }


def compute_exposure_extrapolation(
    perplexities: Mapping[int, Sequence[float]], perplexities_reference: Sequence[float]
) -> Dict[int, np.ndarray]:
    """Drop-in for ``tensorflow_privacy``'s secret-sharer ``compute_exposure_extrapolation``:
    one skew-normal fit to the references, then -log2 cdf per secret, {repetitions: exposures}
    in input order."""
    ref = _as_reference(perplexities_reference)
    if not perplexities:
        return {}
    keys = list(perplexities)
    flat = [np.ascontiguousarray(perplexities[r], dtype=np.float64).ravel() for r in keys]
    # One fit for all keys, as TF: the secrets are concatenated, then split back.
    out = _native.extrapolation_exposure(np.concatenate(flat), ref)["exposures"]
    result: Dict[int, np.ndarray] = {}
    start = 0
    for r, p in zip(keys, flat):
        result[r] = out[start : start + len(p)]
        start += len(p)
    return result


# --------------------------------------------------------------------------------------------
# Membership inference


def _with_queries(name: str, a: Any, rank: int) -> Any:
    """A signal array without the query axis gets one (a view, no copy)."""
    if a is None:
        return None
    arr = a if isinstance(a, np.ndarray) else np.asarray(a)
    if arr.ndim == rank - 1:
        return arr[..., np.newaxis]
    return arr


def membership_inference(
    target: ArrayLike,
    shadow: ArrayLike,
    shadow_in: ArrayLike,
    *,
    target_in: Optional[ArrayLike] = None,
    population_target: Optional[ArrayLike] = None,
    population_shadow: Optional[ArrayLike] = None,
    classes: Optional[ArrayLike] = None,
    token_logprob: Optional[Sequence[ArrayLike]] = None,
    text: Optional[Sequence[Union[bytes, str]]] = None,
    signal_kind: str = "logit_confidence",
    attacks: Union[str, Sequence[str]] = "all",
    config: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """LOSS, LiRA and RMIA (and the LM baselines) on signals of models trained anywhere: the
    arrays of a ``memaudit mia --scores FILE.npz`` score file, passed directly.

    * ``target``: float [n, q] (or [n]), the target model's signal per example and query;
    * ``shadow``: float [k, n, q] (or [k, n]), each shadow (reference) model's signal;
    * ``shadow_in``: bool [k, n], which shadow models trained on each example;
    * ``target_in``: bool [n], the target's true membership (enables AUC / TPR at FPR);
    * ``population_target`` [n_z, q] and ``population_shadow`` [k, n_z, q]: RMIA's population;
    * ``classes``: int [n] for per-class results; ``token_logprob`` (one 1-D array of per-token
      log-probabilities per example) and ``text`` (bytes per example) for Min-K% and zlib;
    * ``signal_kind``: "logit_confidence" (LiRA's phi = log p_y - log(1 - p_y), the default),
      "probability" (p_y) or "log_likelihood";
    * ``attacks``: "all" (skips attacks whose inputs are missing) or names among loss,
      lira-online, lira-offline, lira-offline-two-sided, rmia-online, rmia-offline, min-k, zlib;
    * ``config``: the CLI's ``--config`` JSON as a dict (keys lira, rmia, lm, metrics; see
      :func:`default_mia_config`); unknown keys are refused.

    Returns ``memaudit mia --json``'s object; each entry of ``attacks`` also holds ``scores``
    (float64 [n], higher = member). The signals are copied once into the library's score set.
    """
    return _native.membership_inference(
        _with_queries("target", target, 2),
        _with_queries("shadow", shadow, 3),
        shadow_in,
        target_in=target_in,
        population_target=_with_queries("population_target", population_target, 2),
        population_shadow=_with_queries("population_shadow", population_shadow, 3),
        classes=classes,
        token_logprob=token_logprob,
        text=text,
        signal_kind=signal_kind,
        attacks=attacks,
        config=None if config is None else dict(config),
    )


def roc_curve(scores: ArrayLike, member: ArrayLike) -> Dict[str, Any]:
    """The ROC of ``scores`` (float [n], higher = member) against ``member`` (bool [n]): one
    point per distinct score from (0, 0) to (1, 1). Returns ``{"fpr", "tpr", "thresholds"
    (float64 arrays; "member" when score >= threshold), "auc", "members", "non_members"}``."""
    return _native.roc_curve(scores, member)


def membership_metrics(
    scores: ArrayLike,
    member: ArrayLike,
    *,
    fpr_targets: Sequence[float] = (0.01, 0.001, 0.0001),
    min_expected_false_positives: float = 10.0,
    confidence: float = 0.95,
) -> Dict[str, Any]:
    """AUC, balanced accuracy and TPR at each FPR in ``fpr_targets`` (LiRA's convention: the
    largest TPR with FPR <= target, no interpolation) with a Clopper-Pearson interval at
    ``confidence``. A TPR is reported only where at least ``min_expected_false_positives``
    false positives are expected; the others are in ``tpr_at_fpr_skipped`` with the reason."""
    return _native.membership_metrics(
        scores,
        member,
        fpr_targets=list(fpr_targets),
        min_expected_false_positives=min_expected_false_positives,
        confidence=confidence,
    )


def default_mia_config() -> Dict[str, Any]:
    """Every attack setting and its default (what ``config=`` may change)."""
    return _native.default_mia_config()


# --------------------------------------------------------------------------------------------
# Lower bounds


def lower_bounds(
    in_scores: ArrayLike,
    out_scores: ArrayLike,
    *,
    method: str = "all",
    significance: float = 0.05,
    delta: float = 0.0,
    threshold: Optional[float] = None,
    two_sided: bool = False,
    lower_is_member: bool = False,
) -> Dict[str, Any]:
    """Empirical epsilon lower bounds from the scores of IN (trained-on) and OUT canaries:
    ``memaudit lower-bound --json``.

    ``method``: "clopper-pearson", "gdp", "one-run", "one-run-fdp" or "all"; each bound holds
    with probability >= 1 - ``significance`` (in (0, 0.5]); ``delta`` in [0, 1) is the delta of
    the claim audited (gdp and one-run-fdp need delta > 0); ``threshold``: one threshold fixed
    in advance instead of Bonferroni over the Pareto frontier; ``two_sided``: Jagielski et al.'s
    convention for Clopper-Pearson; ``lower_is_member``: for losses. Each result's key is
    ``epsilon_lower_bound`` (nats), never ``epsilon``.
    """
    return _native.lower_bounds(
        in_scores,
        out_scores,
        method=method,
        significance=significance,
        delta=delta,
        threshold=threshold,
        two_sided=two_sided,
        lower_is_member=lower_is_member,
    )


# --------------------------------------------------------------------------------------------
# Experiments

ProgressCallback = Callable[[str, int, int], None]


class _TqdmProgress:
    """Progress callback drawing one tqdm bar per stage."""

    def __init__(self, tqdm: Any) -> None:
        self._tqdm = tqdm
        self._bars: Dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = self._tqdm(total=total, desc=stage, leave=False)
        elif bar.total != total:
            # The same stage name again with other units (the pipeline's "train" per variant).
            bar.reset(total=total)
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


def experiment_names() -> list:
    """The names :func:`run_experiment` takes under ``"experiment"``."""
    return list(_native.experiment_names())


def run_experiment(
    config: Union[Mapping[str, Any], PathLike],
    progress: Union[None, bool, ProgressCallback] = None,
) -> Dict[str, Any]:
    """Run any experiment, or the audit pipeline, from a dict or a TOML/JSON file; return its
    typed result as a dict.

    ``config["experiment"]`` names it (:func:`experiment_names` lists them): ``"train"``,
    ``"secret-sharer"``, ``"exposure"``, ``"extract"``, ``"dp-sweep"``, ``"mia"``,
    ``"lower-bound"``, ``"dynamics curves"``, ``"dynamics capacity"``,
    ``"dynamics regularizers"``, ``"dynamics easy-hard"``, ``"dynamics sensitivity"`` and
    ``"audit"`` (the pipeline of ``memaudit audit``). The other keys are the experiment's config,
    as the CLI's ``--config`` file and ``--print-config`` spell them (``memaudit train
    --print-config`` shows every key with its default); missing keys take the defaults. For
    ``"audit"``, the keys of ``memaudit audit --example`` plus ``out``, the output folder
    (default ``runs/audit``); rerunning into the same folder skips every finished stage. For
    ``"mia"`` on a score file, this package's earlier keys still work: ``attacks`` (a list or a
    comma-separated string) and ``config`` (the attack settings, as
    :func:`membership_inference`).

    The result is the matching CLI command's ``--json`` object plus ``"experiment"``, with
    ``"inf"``/``"nan"`` strings as Python floats. Paths in a file are relative to the file.

    Errors: unknown keys, wrong types and settings out of range raise ValueError naming the key
    (``config.run.epochs: ...``); a missing input file FileNotFoundError; a config that is
    neither a dict nor a path, TypeError.

    ``progress``: a callable ``progress(stage, done, total)``, called between the experiment's
    units (training steps, shadow models, pipeline stages' work) with the GIL held; None draws
    a tqdm bar per stage when tqdm is installed; False is silent.

    Ctrl-C: the experiment runs on a worker thread while this call waits without the GIL. On
    KeyboardInterrupt (or an exception from ``progress``) the worker is asked to stop at its next
    safe point (between training steps, shadow models, pipeline stages, the dynamics studies'
    epochs), joined, and the
    exception is raised: no thread keeps running, and every atomic unit (checkpoint, cached
    shadow model, pipeline stage) is complete or absent. Rerun to resume: the pipeline skips
    its finished stages, ``mia`` reuses its cached shadow models, ``train`` and
    ``secret-sharer`` continue from the last checkpoint with ``run = {resume = true}``. A
    computation without a safe point inside (the bounds of ``lower-bound``, ``exposure``,
    ``extract``) stops when it finishes.
    """
    if isinstance(config, os.PathLike):
        config = os.fspath(config)
    elif isinstance(config, Mapping):
        config = dict(config)
    bar: Optional[_TqdmProgress] = None
    callback: Optional[ProgressCallback]
    if progress is None:
        try:
            from tqdm.auto import tqdm  # optional dependency
        except ImportError:
            callback = None
        else:
            callback = bar = _TqdmProgress(tqdm)
    elif progress is False:
        callback = None
    elif progress is True:
        from tqdm.auto import tqdm

        callback = bar = _TqdmProgress(tqdm)
    else:
        callback = progress
    try:
        return _native.run_experiment(config, callback)
    finally:
        if bar is not None:
            bar.close()
