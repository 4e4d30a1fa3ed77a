"""The manifest language: load, validate and expand a manifest into jobs.

Loading is four stateless stages, each reporting into one ``Diagnostics`` collector::

    bytes --(parse: yamlload; UTF-8, size, YAML with positions; ``10:30`` and, by yaml11,
             a matrix's ``NO`` kept as written)--> values + positions
          --(shape: the manifest schema)--> shape errors, each at FILE:LINE:COL
          --(expand: defaults < job keys < prompts-file row < matrix combination)--> requests
             (schema $defs/request once per distinct request; values canonical by type)
          --(files: images, containment, magic bytes, 5 MB; ids; keys)--> Job(id, key, ...)

Every problem found along the way is collected and raised at once as ``ManifestErrors``; a
manifest either loads completely or not at all. ``schemas/manifest.schema.json`` is the single
source of truth for what each model and provider accepts, including the wording of the errors
(its ``x-messages`` keys).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from batchvid.errors import ManifestError, ManifestErrors
from batchvid.gcpause import paused_gc
from batchvid.images import find_root
from batchvid.jobs import Manifest
from batchvid.manifest.context import Context, Scope
from batchvid.manifest.expand import MAX_JOBS, WARN_JOBS, expand_jobs
from batchvid.manifest.files import build_jobs
from batchvid.manifest.messages import DEFAULT_MODEL
from batchvid.manifest.shape import check_shape, check_top_level
from batchvid.manifest.yaml11 import restore_matrix_text
from batchvid.yamlload import MAX_MANIFEST_BYTES, load_yaml, read_text

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PROVIDER",
    "MAX_JOBS",
    "WARN_JOBS",
    "load_manifest",
    "validate_files",
]

DEFAULT_PROVIDER = "geekai"


def load_manifest(
    path: str | os.PathLike[str],
    *,
    provider_override: str | None = None,
    root: str | os.PathLike[str] | None = None,
) -> Manifest:
    """Load, validate and expand the manifest at ``path``.

    ``provider_override`` (the ``--provider`` flag) replaces the manifest's ``provider:`` before
    validation. ``root`` (the ``--root`` flag) is the directory that images and prompts files
    must stay inside; without it, the manifest's ``root:``, else the git work tree holding the
    manifest, else the manifest's directory. Raises ``ManifestErrors`` with every problem
    found, each located at ``FILE:LINE:COLUMN`` where FILE is ``path`` as given.
    """
    with paused_gc():
        return _load(path, provider_override, root)


def _load(
    path: str | os.PathLike[str], provider_override: str | None, root: str | os.PathLike[str] | None
) -> Manifest:
    display = os.fspath(path)
    text = read_text(Path(path), display, max_bytes=MAX_MANIFEST_BYTES, what="manifest")
    document = load_yaml(text, display)
    data = document.data
    restore_matrix_text(data, document.positions)
    context = Context(display, Path(path), document.positions, Path(path).parent)
    if not check_top_level(context, data):
        context.diagnostics.raise_if_errors()
    assert isinstance(data, dict)
    if provider_override is not None:
        data["provider"] = provider_override
    shape = check_shape(context, data)
    if shape.blocked or not isinstance(data.get("jobs"), list):
        context.diagnostics.raise_if_errors()  # without valid defaults or provider, expansion would mislead
    context = _rooted(context, data, root)
    scope = Scope(data.get("provider", DEFAULT_PROVIDER), data.get("defaults", {}))
    jobs = build_jobs(context, scope, expand_jobs(context, scope, data["jobs"], shape))
    context.diagnostics.raise_if_errors()
    return Manifest(
        path=context.path,
        name=data.get("name") or context.path.stem,
        provider=scope.provider,
        jobs=jobs,
        limits=dict(data.get("limits", {})),
        pricing=dict(data.get("pricing", {})),
        qc=dict(data.get("qc") or {}),
        license=data.get("license"),
        warnings=tuple(context.diagnostics.warnings),
    )


def _rooted(context: Context, data: dict[str, object], root: str | os.PathLike[str] | None) -> Context:
    """``context`` with the directory its files must stay inside."""
    if root is not None:
        found = Path(root)
    elif isinstance(data.get("root"), str):
        found = context.base_dir / str(data["root"])
    else:
        found = find_root(context.base_dir)
    return Context(context.display, context.path, context.positions, found, context.diagnostics, context.checks)


def validate_files(
    paths: Iterable[str | os.PathLike[str]], *, provider_override: str | None = None
) -> list[ManifestError]:
    """Every problem in every manifest of ``paths`` (an empty list when all are valid)."""
    errors: list[ManifestError] = []
    for path in paths:
        try:
            load_manifest(path, provider_override=provider_override)
        except ManifestErrors as exc:
            errors.extend(exc.errors)
    return errors
