"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", EDM2,
section 3 and appendix C): train once, choose the EMA length afterwards.

During training two power-function EMAs of the trainable parameters are tracked (their profiles p(t) ∝ t^γ
over the steps so far, γ set by the relative width ``sigma_rel`` of each, default 0.05 and 0.10), and
``optim.ema_snapshots`` snapshots of both are saved evenly over ``run.max_steps`` in
``ema_snapshots/step-N.safetensors`` (a JSON sidecar ``step-N.json`` says its step and the profiles). Any
other ``sigma_rel`` is then the snapshots' least-squares combination whose profile is closest (in L2) to the
wanted one (:func:`solve_weights`, EDM2's Algorithm 3), and :func:`reconstruct` builds its weights.

Time is counted in optimizer steps (EDM2 counts images: the same with a constant batch). The EMA after step t
is the average of θ_1..θ_t with weights (i^(γ+1) - (i-1)^(γ+1)) / t^(γ+1), the discrete power profile.

Example:
    >>> round(sigma_rel_to_gamma(0.05), 2), round(sigma_rel_to_gamma(0.10), 2)
    (16.97, 6.94)
    >>> x = solve_weights([500, 1000, 500, 1000], [16.97, 16.97, 6.94, 6.94], sigma_rel_to_gamma(0.08), 1000)
    >>> round(float(x.sum()), 6)
    1.0
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from greendiff.errors import UserInputError
from greendiff.files import atomic_write_bytes, atomic_write_text, read_json_object
from greendiff.names import display_path
from greendiff.train._callbacks import StepOutcome, TrainerCallback

logger = logging.getLogger(__name__)

SNAPSHOT_DIR = "ema_snapshots"
STATE_DIR = "state"  # inside SNAPSHOT_DIR: the EMAs' tensors at each checkpoint (for a resume)
SIGMA_REL_MAX = 0.3  # EDM2's widest profile of interest (its Fig. 5 spans 0.02..0.25)
FORMAT = 1
_STEP_FILE = re.compile(r"step-(\d{1,12})\.json")


# -- the math (EDM2 appendix C.2) ---------------------------------------------------------------------------------

def gamma_to_sigma_rel(gamma: float) -> float:
    """The relative standard deviation of the power profile p(t) ∝ t^γ on [0, T], as a fraction of T
    (EDM2 eq. 123): sqrt((γ+1) / ((γ+2)^2 (γ+3)))."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent γ whose profile has relative width ``sigma_rel`` (in (0, 0.3]; 0.3 is γ = -1/3, a profile
    leaning to early steps): the largest real root of (γ+2)^2 (γ+3) - (γ+1) / sigma_rel^2 = 0 (eq. 123 solved
    for γ; its other roots are below -1, no profile)."""
    if not 0 < sigma_rel <= SIGMA_REL_MAX:
        raise ValueError(f"sigma_rel {sigma_rel!r} is outside (0, {SIGMA_REL_MAX}]")
    inv = sigma_rel ** -2
    roots = np.roots([1.0, 7.0, 16.0 - inv, 12.0 - inv])  # γ^3 + 7γ^2 + (16 - inv)γ + (12 - inv)
    return float(roots[np.abs(roots.imag) < 1e-9].real.max())


def power_ema_weight(step: int, gamma: float) -> float:
    """The weight of the new parameters in the update after step ``step`` (1-based): 1 - (1 - 1/t)^(γ+1)
    (EDM2 eq. 127 with one step as the unit of time). Step 1 takes the parameters whole; the weights of
    θ_1..θ_t then telescope to the discrete power profile (module docstring)."""
    return 1.0 - (1.0 - 1.0 / step) ** (gamma + 1.0)


def _profile_dot(a_step: np.ndarray, a_gamma: np.ndarray, b_step: np.ndarray, b_gamma: np.ndarray) -> np.ndarray:
    """∫ p_a p_b dt of two normalised power profiles p(t) = (γ+1) t^γ / T^(γ+1) on [0, T] (EDM2 eq. 151),
    broadcast: (γa+1)(γb+1) / (γa+γb+1) · min(Ta,Tb)^(γa+γb+1) / (Ta^(γa+1) Tb^(γb+1)), which is that
    factor times (shorter / longer)^γ_longer / longer: no power of a step count, so nothing overflows."""
    ratio = np.minimum(a_step, b_step) / np.maximum(a_step, b_step)  # in (0, 1]
    longer_gamma = np.where(a_step <= b_step, b_gamma, a_gamma)
    scale = (a_gamma + 1) * (b_gamma + 1) / (a_gamma + b_gamma + 1)
    return scale * ratio ** longer_gamma / np.maximum(a_step, b_step)


def solve_weights(snapshot_steps: Sequence[int], snapshot_gammas: Sequence[float], target_gamma: float,
                  last_step: int) -> np.ndarray:
    """The coefficients x (one per snapshot, summing to 1) whose combination of the snapshots' profiles is
    closest in L2 to the power profile of ``target_gamma`` ending at ``last_step`` (EDM2 Algorithm 3:
    the normal equations A x = b of the profiles' inner products, then x normalised).

    Args:
        snapshot_steps: The step each snapshot was taken after (its profile's end T).
        snapshot_gammas: Each snapshot's exponent γ.
        target_gamma: The wanted profile's exponent (:func:`sigma_rel_to_gamma`).
        last_step: Where the wanted profile ends (usually the last snapshot's step).

    Returns:
        ``float64 (len(snapshot_steps),)``.
    """
    steps = np.asarray(snapshot_steps, dtype=np.float64).reshape(-1, 1)
    gammas = np.asarray(snapshot_gammas, dtype=np.float64).reshape(-1, 1)
    gram = _profile_dot(steps, gammas, steps.T, gammas.T)  # (N, N)
    target = _profile_dot(steps, gammas, np.float64(last_step), np.float64(target_gamma))[:, 0]  # (N,)
    # least squares: a repeated snapshot makes the Gram matrix singular, where solve() would fail
    x = np.linalg.lstsq(gram, target, rcond=1e-12)[0]
    return x / x.sum()


# -- tracking during training ------------------------------------------------------------------------------------

class PowerEMA:
    """Power-function EMAs of one list of tensors, one per ``sigma_rel``.

    Args:
        params: The tensors tracked (the trainable parameters); their values now are the EMAs' start.
        sigma_rels: Relative widths, each in (0, 0.3].

    Example:
        >>> p = [torch.zeros(2)]
        >>> ema = PowerEMA(p, (0.05, 0.10))
        >>> p[0] += 1.0; ema.update(p, 1)  # step 1 takes the parameters whole
        >>> ema.shadows[0][0].tolist()
        [1.0, 1.0]
    """

    def __init__(self, params: Sequence[torch.Tensor], sigma_rels: Sequence[float]) -> None:
        self.sigma_rels = tuple(float(s) for s in sigma_rels)
        self.gammas = tuple(sigma_rel_to_gamma(s) for s in self.sigma_rels)
        self.shadows = [[p.detach().float().clone() for p in params] for _ in self.gammas]

    @torch.no_grad()
    def update(self, params: Sequence[torch.Tensor], step: int) -> None:
        """Fold in ``params`` after step ``step`` (1-based: steps done so far)."""
        current = [p.detach().float() for p in params]
        for gamma, shadow in zip(self.gammas, self.shadows):
            torch._foreach_lerp_(shadow, current, power_ema_weight(step, gamma))  # one kernel per op over all


class SnapshotCallback(TrainerCallback):
    """Tracks the :class:`PowerEMA` of the trainable parameters and writes ``snapshots`` snapshots evenly over
    ``max_steps`` (and one at a run's early end), on the main process, into ``run_dir/ema_snapshots``.

    Its state (key ``posthoc_ema``) travels in checkpoints: the EMAs' tensors in
    ``ema_snapshots/state/step-N.safetensors`` (checkpoints hold only files greendiff lists), named with their
    SHA-256 in ``train_state.json``, so a resumed run continues the EMAs bit-identically.

    Args:
        run_dir: The run directory.
        snapshots: How many snapshots (``optim.ema_snapshots``, >= 1).
        sigma_rels: The tracked profiles (``optim.ema_snapshot_stds``).
        max_steps: The run's length (``run.max_steps``).

    Example::

        Trainer(config, run_dir, data, tracker, callbacks=[SnapshotCallback(run_dir, 8, (0.05, 0.10), 4000)])
    """

    state_key = "posthoc_ema"

    def __init__(self, run_dir: Path, snapshots: int, sigma_rels: Sequence[float], max_steps: int) -> None:
        self.run_dir, self.max_steps = Path(run_dir), max_steps
        self.sigma_rels = tuple(float(s) for s in sigma_rels)
        self.snapshot_steps = snapshot_steps(snapshots, max_steps)
        self.ema: PowerEMA | None = None
        self.names: list[str] = []
        self.params: list[torch.Tensor] = []
        self.step = 0
        self.is_main = True
        self._loaded: list[list[torch.Tensor]] | None = None  # a checkpoint's EMAs, until the model is known

    # -- hooks -------------------------------------------------------------------------------------------------

    def on_train_start(self, trainer, event) -> None:
        self.is_main = trainer.is_main
        named = [(n, p) for n, p in trainer.state.objects.model.named_parameters() if p.requires_grad]
        self.names, self.params = [n for n, _ in named], [p for _, p in named]
        self.ema = PowerEMA(self.params, self.sigma_rels)
        if self._loaded is not None:
            keys = _keys(self.names, len(self.sigma_rels))
            if sorted(self._loaded) != sorted(keys) or any(
                    self._loaded[k].shape != p.shape for k, p in zip(keys, self.params * len(self.sigma_rels))):
                raise UserInputError(f"{display_path(self.run_dir)}: the checkpoint's post-hoc EMA does not match the "
                                     "network's parameters; resume with the config it was trained with")
            device = self.params[0].device if self.params else torch.device("cpu")
            flat = [self._loaded[k].to(device) for k in keys]
            size = len(self.params)
            self.ema.shadows = [flat[i * size:(i + 1) * size] for i in range(len(self.sigma_rels))]
            self._loaded = None
        else:
            self.step = trainer.step  # a fresh start (or snapshots turned on at a resume): the EMAs begin here

    def on_step_end(self, trainer, outcome: StepOutcome) -> None:
        # every step, skipped ones too (their weights did not change): the profile's clock is the step count
        self.step = outcome.step
        self.ema.update(self.params, outcome.step)
        if outcome.step in self.snapshot_steps and self.is_main:
            self._write_snapshot(outcome.step)
        return None

    def on_final(self, trainer, status: str) -> None:
        """A run that stopped early: a last snapshot at its end (the reconstruction's end point)."""
        if self.is_main and self.step > 0 and not (self.run_dir / SNAPSHOT_DIR / f"step-{self.step}.json").is_file():
            self._write_snapshot(self.step)

    def on_checkpoint(self, trainer, step: int, path: Path) -> None:
        if self.is_main:
            _prune_states(self.run_dir)

    # -- state ----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """``{"step", "sigma_rels", "file", "sha256"}``; writes the EMAs' tensors to ``file`` (main process)."""
        data = self._tensor_bytes()
        name = f"{STATE_DIR}/step-{self.step}.safetensors"
        if self.is_main:
            _write(self.run_dir / SNAPSHOT_DIR / name, data)
        return {"step": self.step, "sigma_rels": list(self.sigma_rels), "file": name,
                "sha256": hashlib.sha256(data).hexdigest()}

    def load_state_dict(self, state: dict) -> None:
        """``ValueError`` unless ``state`` is one :meth:`state_dict` wrote, for these profiles, with its file."""
        step, file, digest = state.get("step"), state.get("file"), state.get("sha256")
        if type(step) is not int or step < 0 or not isinstance(file, str) or not isinstance(digest, str):
            raise ValueError("step, file and sha256 are missing or of the wrong type")
        if state.get("sigma_rels") != list(self.sigma_rels):
            raise ValueError(f"tracked sigma_rel {state.get('sigma_rels')!r:.60}, the config says "
                             f"{list(self.sigma_rels)}")
        if not re.fullmatch(rf"{STATE_DIR}/step-\d{{1,12}}\.safetensors", file):
            raise ValueError(f"{file!r:.80} is not a state file greendiff writes")
        path = self.run_dir / SNAPSHOT_DIR / file
        data = _read_regular(path)
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"SHA-256 differs from the checkpoint's: {display_path(path)}")
        self._loaded = _load_tensors(data, display_path(path), ValueError)
        self.step = step

    def _tensor_bytes(self) -> bytes:
        """The EMAs as safetensors bytes, named ``<profile index>/<parameter name>``."""
        from safetensors.torch import save

        keys = _keys(self.names, len(self.sigma_rels))
        flat = [t for shadow in self.ema.shadows for t in shadow]
        return save({k: t.detach().cpu().contiguous() for k, t in zip(keys, flat)})

    def _write_snapshot(self, step: int) -> None:
        """``step-N.safetensors``, then its sidecar ``step-N.json`` (a snapshot counts once its sidecar exists)."""
        data = self._tensor_bytes()
        folder = self.run_dir / SNAPSHOT_DIR
        _write(folder / f"step-{step}.safetensors", data)
        sidecar = {"format": FORMAT, "step": step, "sigma_rels": list(self.sigma_rels),
                   "gammas": list(self.ema.gammas), "max_steps": self.max_steps, "file": f"step-{step}.safetensors",
                   "sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_text(folder / f"step-{step}.json", json.dumps(sidecar, indent=1))


def snapshot_steps(snapshots: int, max_steps: int) -> frozenset[int]:
    """The steps snapshots are taken after: ``ceil(k · max_steps / snapshots)`` for k = 1..``snapshots``
    (fewer when there are more snapshots than steps; the last is always ``max_steps``).

    Example:
        >>> sorted(snapshot_steps(4, 10))
        [3, 5, 8, 10]
    """
    return frozenset(math.ceil(k * max_steps / snapshots) for k in range(1, snapshots + 1))


# -- files ---------------------------------------------------------------------------------------------------------

def _keys(names: Sequence[str], profiles: int) -> list[str]:
    return [f"{i}/{n}" for i in range(profiles) for n in names]


def _write(path: Path, data: bytes) -> None:
    """``data`` to ``path`` atomically, its folder made (never through a planted link); a one-line error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent.is_symlink() or path.is_symlink():
            raise UserInputError(f"{display_path(path)}: a symbolic link is in the way; greendiff writes real files")
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise UserInputError(f"cannot write {display_path(path)}: {exc.strerror or exc}") from None


def _read_regular(path: Path, fail: type[Exception] = ValueError) -> bytes:
    """The bytes of the regular file ``path`` (never through a symbolic link); ``fail`` (one line) otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise fail(f"{display_path(path)} cannot be read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _load_tensors(data: bytes, name: str, fail: type[Exception]) -> dict[str, torch.Tensor]:
    """The tensors of safetensors ``data`` (no pickle); ``fail`` naming the file when they cannot be parsed."""
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as exc:  # noqa: BLE001 - any failure of safetensors on these bytes: the file is damaged
        raise fail(f"{name} is not a readable safetensors file ({str(exc)[:120]})") from None


def _prune_states(run_dir: Path) -> None:
    """Delete the EMA state files no checkpoint names (rotated-out checkpoints' ones)."""
    named = set()
    for state in (run_dir / "checkpoints").glob("*/train_state.json"):
        try:
            named.add(json.loads(state.read_text())["posthoc_ema"]["file"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    for path in (run_dir / SNAPSHOT_DIR / STATE_DIR).glob("step-*.safetensors"):
        if f"{STATE_DIR}/{path.name}" not in named:
            path.unlink(missing_ok=True)


# -- reading the snapshots back ------------------------------------------------------------------------------------

def check_sigma_rel(sigma_rel: float, flag: str = "--ema-length") -> float:
    """``sigma_rel`` as a float in (0, 0.3]; a one-line :class:`UserInputError` naming ``flag`` otherwise."""
    if isinstance(sigma_rel, bool) or not isinstance(sigma_rel, (int, float)) or not 0 < sigma_rel <= SIGMA_REL_MAX:
        raise UserInputError(f"{flag} {sigma_rel!r:.40} is not an EMA length: a sigma_rel in (0, {SIGMA_REL_MAX}] "
                             "(EDM2's relative width of the averaging window, e.g. 0.05 to 0.15), or auto")
    return float(sigma_rel)


def snapshot_records(run_dir: Path) -> list[dict]:
    """The run's snapshots' sidecars (checked), by step; a one-line :class:`UserInputError` when it has none
    (trained without ``--ema-snapshots``) or one is damaged."""
    folder = Path(run_dir) / SNAPSHOT_DIR
    found = sorted((int(m.group(1)), p) for p in (folder.iterdir() if folder.is_dir() else ())
                   if (m := _STEP_FILE.fullmatch(p.name)))
    if not found:
        raise UserInputError(f"--run {display_path(run_dir)} has no post-hoc EMA snapshots ({SNAPSHOT_DIR}/); train it "
                             "with --ema-snapshots N to choose the EMA length afterwards")
    return [_checked_sidecar(path, step) for step, path in found]


def _checked_sidecar(path: Path, step: int) -> dict:
    fail = UserInputError
    record = read_json_object(path, display_path(path), fail)
    sigma_rels, gammas = record.get("sigma_rels"), record.get("gammas")
    good = (record.get("format") == FORMAT and record.get("step") == step
            and record.get("file") == f"step-{step}.safetensors" and isinstance(record.get("sha256"), str)
            and isinstance(sigma_rels, list) and isinstance(gammas, list) and len(sigma_rels) == len(gammas) >= 1
            and all(type(s) is float and 0 < s <= SIGMA_REL_MAX for s in sigma_rels)
            and all(type(g) is float and math.isfinite(g) and g > -1 for g in gammas))
    if not good:
        raise fail(f"{display_path(path)} is not a post-hoc EMA snapshot greendiff wrote (step {step})")
    return record


def reconstruct(run_dir: Path, sigma_rel: float) -> dict[str, torch.Tensor]:
    """The EMA of relative width ``sigma_rel`` at the run's last snapshot, rebuilt from all its snapshots
    (:func:`solve_weights`): ``{parameter name: float32 tensor}`` of the trainable parameters, on the CPU.

    Args:
        run_dir: A run trained with ``optim.ema_snapshots`` > 0.
        sigma_rel: The wanted EMA length, in (0, 0.3].

    Raises:
        UserInputError: One line: ``sigma_rel`` out of range, no snapshots, a damaged snapshot.
    """
    sigma_rel = check_sigma_rel(sigma_rel)
    records = snapshot_records(run_dir)
    steps = [r["step"] for r in records for _ in r["gammas"]]
    gammas = [g for r in records for g in r["gammas"]]
    coefficients = iter(solve_weights(steps, gammas, sigma_rel_to_gamma(sigma_rel), max(steps)))
    total: dict[str, torch.Tensor] = {}
    for record in records:
        path = Path(run_dir) / SNAPSHOT_DIR / record["file"]
        data = _read_regular(path, UserInputError)
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise UserInputError(f"{display_path(path)} is not the file its sidecar names (SHA-256 differs)")
        tensors = _load_tensors(data, display_path(path), UserInputError)
        for profile in range(len(record["gammas"])):
            _accumulate(total, tensors, f"{profile}/", next(coefficients), path)
    return {name: t.float() for name, t in total.items()}


def _accumulate(total: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], prefix: str, weight: float,
                path: Path) -> None:
    """``total += weight · tensors[prefix*]`` in float64; the parameters must be those of earlier snapshots."""
    part = {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}
    if total and (part.keys() != total.keys() or any(part[k].shape != total[k].shape for k in part)):
        raise UserInputError(f"{display_path(path)} holds other parameters than the run's other snapshots")
    for name, tensor in part.items():
        term = tensor.double() * weight
        total[name] = total[name] + term if name in total else term
