"""batchvid: a declarative batch runner for CogVideoX video generation.

The command line is the main interface; these names are for programs that drive it::

    manifest = load_manifest("manifests/quickstart.yaml")
    result = anyio.run(Runner(manifest, Settings(out_dir=Path("runs/q"), api_key=...)).run)
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchvid.errors import BatchvidError, ManifestError, ManifestErrors
    from batchvid.jobs import Job, Manifest
    from batchvid.manifest import load_manifest
    from batchvid.plan import Plan, make_plan
    from batchvid.runner import Runner, RunResult, Settings

_HOMES = {
    "BatchvidError": "batchvid.errors",
    "ManifestError": "batchvid.errors",
    "ManifestErrors": "batchvid.errors",
    "Job": "batchvid.jobs",
    "Manifest": "batchvid.jobs",
    "load_manifest": "batchvid.manifest",
    "Plan": "batchvid.plan",
    "make_plan": "batchvid.plan",
    "Runner": "batchvid.runner",
    "RunResult": "batchvid.runner",
    "Settings": "batchvid.runner",
}
"""Where each public name lives. They load on first use, so ``batchvid validate`` does not
import the HTTP stack, the runner or PyAV."""


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'batchvid' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "BatchvidError",
    "Job",
    "Manifest",
    "ManifestError",
    "ManifestErrors",
    "Plan",
    "RunResult",
    "Runner",
    "Settings",
    "__version__",
    "load_manifest",
    "make_plan",
]
