"""An emulator of GeekAI's and Zhipu BigModel's CogVideoX video APIs, for tests and dry runs.

Mount it in-process with ``httpx.ASGITransport(app=Simulator(config).app)``, or serve it over
TCP with ``serve()`` (blocking) or ``running_simulator()`` (a background thread, for tests).

Prompt markers (``SimulatorConfig.unsafe_marker``, ``fail_marker``, …):

- ``[unsafe]``: the create is refused, HTTP 400, code ``"1301"`` (content safety).
- ``[fail]``: the create is accepted and the task ends in ``FAIL`` (BigModel) or ``failed``
  (GeekAI, with ``error: {code, message}``).
- ``[black]`` / ``[frozen]`` (``black_marker`` / ``frozen_marker``): the video is all black /
  every frame is the same. Otherwise a bar moves: consecutive frames differ. Each task's video
  bytes are its own (derived from the seed, the request and its count), the same in every run.

Chat completions (``POST {prefix}/chat/completions`` for both providers) answer a deterministic
rewrite of the last user message; markers ``[long]``, ``[empty]``, ``[chat-error]`` and
``[preamble]`` (``CHAT_*_MARKER`` in ``batchvid.simulator.config``) shape the answer.

``Simulator(config, state_dir=DIR)`` keeps its tasks in ``DIR`` so that a new simulator on the
same directory knows them (``run --simulate`` uses ``OUT/.batchvid/simulator``).

Special API keys: ``sim-invalid`` and ``sim-expired`` (401), ``sim-arrears`` (BigModel 429
``1113``, GeekAI 402) and ``sim-quota-exhausted`` (BigModel 429 ``1304``, GeekAI 429). Any other
non-empty Bearer key is accepted.

Faults (``fault_rate``, drawn per response among ``SimulatorConfig.faults``): ``status_500``,
``status_503``, ``status_504`` (HTML body) and ``reset`` on creates (always *before* the task
exists), polls and downloads; ``truncated`` (Content-Length larger than the body) and
``expired_url`` (403/404/410 on a task's first URL; polling again gives a fresh URL) on
downloads; ``task_fail`` (decided at create: the task ends failed); opt-in ``overloaded``
(BigModel 429 ``1305`` / GeekAI 503 on create). Separately, ``lost_create_rate`` creates the
task and then drops the response.
"""

from batchvid.simulator.app import SimulatedConnectionReset, Simulator, body_hash
from batchvid.simulator.config import (
    ALL_FAULTS,
    BIGMODEL_PREFIX,
    DEFAULT_FAULTS,
    GEEKAI_PREFIX,
    KEY_ARREARS,
    KEY_DAILY_QUOTA,
    KEY_EXPIRED,
    KEY_INVALID,
    SimulatorConfig,
    config_from_args,
)
from batchvid.simulator.serve import RunningSimulator, running_simulator, serve

__all__ = [
    "ALL_FAULTS",
    "BIGMODEL_PREFIX",
    "DEFAULT_FAULTS",
    "GEEKAI_PREFIX",
    "KEY_ARREARS",
    "KEY_DAILY_QUOTA",
    "KEY_EXPIRED",
    "KEY_INVALID",
    "RunningSimulator",
    "SimulatedConnectionReset",
    "Simulator",
    "SimulatorConfig",
    "body_hash",
    "config_from_args",
    "running_simulator",
    "serve",
]
