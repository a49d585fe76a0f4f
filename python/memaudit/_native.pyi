"""Type stubs of the compiled module memaudit._native (python/src/*.rs).

Use the documented wrappers in ``memaudit`` (same names, docstrings with units); this module is
their implementation. Arrays: float64 C-contiguous input is borrowed, anything else converted
once. Scores: higher = member. Log-perplexities: bits. Epsilon: nats.
"""

import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

__version__: str

ArrayLike = npt.ArrayLike
Result = Dict[str, Any]

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
    ledger: Optional[Union[str, Mapping[str, Any]]] = None,
    accountant: str = "all",
    conversion: str = "improved",
    orders: Optional[Sequence[float]] = None,
) -> Result: ...
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
) -> Result: ...
def statement(
    dataset_size: int,
    batch_size: int,
    epochs: float,
    noise_multiplier: float,
    delta: float,
    *,
    used_microbatching: bool = False,
    max_examples_per_user: Optional[int] = None,
    accountant: str = "rdp",
) -> Result: ...
def exact_exposure(candidate_log_perplexities: ArrayLike, secret_indices: ArrayLike) -> Result: ...
def interpolation_exposure(
    secret_log_perplexities: ArrayLike, reference_log_perplexities: ArrayLike
) -> npt.NDArray[np.float64]: ...
def extrapolation_exposure(
    secret_log_perplexities: ArrayLike, reference_log_perplexities: ArrayLike
) -> Result: ...
def skew_normal_fit(values: ArrayLike) -> Result: ...
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
    attacks: Optional[Union[str, Sequence[str]]] = None,
    config: Optional[Mapping[str, Any]] = None,
) -> Result: ...
def roc_curve(scores: ArrayLike, member: ArrayLike) -> Result: ...
def membership_metrics(
    scores: ArrayLike,
    member: ArrayLike,
    *,
    fpr_targets: Optional[Sequence[float]] = None,
    min_expected_false_positives: Optional[float] = None,
    confidence: Optional[float] = None,
) -> Result: ...
def default_mia_config() -> Result: ...
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
) -> Result: ...
def run_experiment(
    config: Union[Mapping[str, Any], str, os.PathLike[str]],
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> Result: ...
def experiment_names() -> List[str]: ...
def _running_experiment_threads() -> int:
    """Test hook: experiment worker threads still running (0 once run_experiment returns)."""
def array_data_pointer(values: ArrayLike) -> int:
    """Address of the float64 buffer handed to Rust for ``values`` (test hook: equals
    ``values.ctypes.data`` exactly when the array is borrowed)."""
def _raise_rust_panic() -> None:
    """Test hook: panics inside Rust; raises RuntimeError."""
