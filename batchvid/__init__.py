"""batchvid: a declarative batch runner for CogVideoX video generation.

The command line is the main interface; these names are for programs that drive it::

    manifest = load_manifest("manifests/quickstart.yaml")
    result = anyio.run(Runner(manifest, Settings(out_dir=Path("runs/q"), api_key=...)).run)
"""

__version__ = "0.1.0"

from batchvid.errors import BatchvidError, ManifestError, ManifestErrors
from batchvid.jobs import Job, Manifest
from batchvid.manifest import load_manifest
from batchvid.plan import Plan, make_plan
from batchvid.runner import Runner, RunResult, Settings

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
