"""What a simulated ACR Tasks run makes of a Dockerfile: a real image in the simulated registry.

The build reads the uploaded context and follows the Dockerfile as far as an image's content and
config go, with no daemon and no command ever run:

- ``FROM`` a Docker Hub ``python:<3.X>`` image (the simulator's synthetic ones) or an image of a
  simulated registry; anything else fails as an unpullable base would.  A later ``FROM`` starts a
  new stage (the last one is the image); ``COPY --from`` is refused (not simulated);
- ``COPY`` / ``ADD`` of context files add one reproducible layer each (a missing source fails the
  run with Docker's message);
- ``ENV``, ``LABEL``, ``WORKDIR``, ``USER``, ``EXPOSE``, ``CMD``, ``ENTRYPOINT`` set the config;
  ``ARG`` is accepted without substitution;
- ``RUN`` is recorded in the history and not executed (the log says so), except ``RUN false`` and
  ``RUN exit N`` (N ≠ 0), which fail the run: how a test makes a build step fail.

The image's blobs are written at once (untagged blobs are garbage to a registry); its manifest is
tagged only when the run ends ``Succeeded``, so a failed build leaves nothing tagged.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shlex
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class BuildError(Exception):
    """A step failed: the message is what the run's log ends with."""


@dataclass
class Built:
    """The result of a successful simulated build: blobs to store and the manifest to tag."""

    steps: list[str]
    notes: list[str]
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifest: bytes = b""


def instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, line continuations joined, comments dropped.  Pure."""
    out: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            out.append(current.strip())
        current = ""
    if current.strip():
        out.append(current.strip())
    return out


def _kv_pairs(args: str) -> list[tuple[str, str]]:
    """``ENV``/``LABEL`` arguments: ``k=v k2="v 2"`` or the legacy ``k v`` form.  Pure."""
    parts = shlex.split(args)
    if parts and "=" not in parts[0]:
        return [(parts[0], " ".join(parts[1:]))]
    return [(p.partition("=")[0], p.partition("=")[2]) for p in parts]


def _exec_form(args: str) -> list[str]:
    args = args.strip()
    if args.startswith("["):
        try:
            return [str(x) for x in json.loads(args)]
        except ValueError:
            pass
    return ["/bin/sh", "-c", args]


def _digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def build(context_targz: bytes, dockerfile: str, *, resolve_base: Any) -> Built:
    """Build ``dockerfile`` of the context.  ``resolve_base(ref)`` returns (manifest dict, config
    dict, {digest: bytes} of its blobs) or raises BuildError.  Raises BuildError on a failed step."""
    from orchestrator.images.layers import tar_chunks

    with tempfile.TemporaryDirectory(prefix="deployctl-sim-build-") as tmp:
        ctx = Path(tmp) / "ctx"
        ctx.mkdir()
        try:
            with tarfile.open(fileobj=io.BytesIO(gzip.decompress(context_targz))) as tar:
                tar.extractall(ctx, filter="data")
        except (OSError, tarfile.TarError, EOFError) as e:
            raise BuildError(f"the build context is not a tar.gz ({e})") from None
        path = ctx / dockerfile.lstrip("./")
        if not path.is_file():
            raise BuildError(f"unable to find {dockerfile} in the build context")
        steps = instructions(path.read_text(errors="replace"))
        if not steps or steps[0].split(None, 1)[0].upper() not in ("FROM", "ARG"):
            raise BuildError(f"{dockerfile}: the first instruction must be FROM")
        out = Built(steps=steps, notes=[])
        manifest: dict[str, Any] | None = None
        config: dict[str, Any] = {}
        layers: list[dict[str, Any]] = []
        for i, step in enumerate(steps, 1):
            word, _, args = step.partition(" ")
            word, args = word.upper(), args.strip()
            if word == "ARG":
                continue
            if word == "FROM":
                base = args.split()[0] if args.split() else ""
                manifest, base_config, blobs = resolve_base(base)
                out.blobs.update(blobs)
                config = json.loads(json.dumps(base_config))
                layers = list(manifest.get("layers", []))
                continue
            if manifest is None:
                raise BuildError(f"step {i}: {word} before FROM")
            cfg = config.setdefault("config", {})
            history = config.setdefault("history", [])
            if word in ("COPY", "ADD"):
                tokens = shlex.split(args) if not args.startswith("[") else [str(x) for x in json.loads(args)]
                flags = [t for t in tokens if t.startswith("--")]
                if any(f.startswith("--from") for f in flags):
                    raise BuildError(f"step {i}: COPY --from is not simulated")
                paths = [t for t in tokens if not t.startswith("--")]
                if len(paths) < 2:
                    raise BuildError(f"step {i}: {word} needs a source and a destination")
                *sources, dest = paths
                stage = Path(tmp) / f"layer{i}"
                workdir = str(cfg.get("WorkingDir") or "/")
                dest_abs = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
                for src in sources:
                    found = (ctx / src).resolve()
                    if not found.is_relative_to(ctx.resolve()) or not found.exists():
                        raise BuildError(f"COPY failed: file not found in build context or excluded by .dockerignore: "
                                         f"stat {src}: file does not exist")
                    into_dir = found.is_dir() or dest.endswith("/") or len(sources) > 1
                    target = stage / dest_abs.strip("/")
                    if found.is_dir():
                        _copy_tree(found, target)
                    else:
                        final = target / found.name if into_dir else target
                        final.parent.mkdir(parents=True, exist_ok=True)
                        final.write_bytes(found.read_bytes())
                        final.chmod(found.stat().st_mode & 0o755)
                raw = b"".join(tar_chunks([("", stage)]))
                blob = gzip.compress(raw, mtime=0)
                out.blobs[_digest(blob)] = blob
                layers.append({"mediaType": GZIP_LAYER, "digest": _digest(blob), "size": len(blob)})
                config.setdefault("rootfs", {"type": "layers", "diff_ids": []}).setdefault("diff_ids", []).append(_digest(raw))
                history.append({"created_by": step})
                continue
            history.append({"created_by": step, "empty_layer": True})
            if word == "RUN":
                m = re.fullmatch(r"(?:false|exit\s+(\d+))", args)
                if m and (m.group(1) is None or int(m.group(1)) != 0):
                    raise BuildError(f"The command '/bin/sh -c {args}' returned a non-zero code: {int(m.group(1) or 1)}")
                out.notes.append(f"step {i}: RUN is not executed by the simulator")
            elif word == "ENV":
                env = dict(str(e).partition("=")[::2] for e in cfg.get("Env") or [])
                env.update(_kv_pairs(args))
                cfg["Env"] = [f"{k}={v}" for k, v in env.items()]
            elif word == "LABEL":
                cfg["Labels"] = {**(cfg.get("Labels") or {}), **dict(_kv_pairs(args))}
            elif word == "WORKDIR":
                cfg["WorkingDir"] = args if args.startswith("/") else f"{str(cfg.get('WorkingDir') or '/').rstrip('/')}/{args}"
            elif word == "USER":
                cfg["User"] = args
            elif word == "EXPOSE":
                cfg["ExposedPorts"] = {**(cfg.get("ExposedPorts") or {}),
                                       **{(p if "/" in p else f"{p}/tcp"): {} for p in args.split()}}
            elif word == "CMD":
                cfg["Cmd"] = _exec_form(args)
            elif word == "ENTRYPOINT":
                cfg["Entrypoint"] = _exec_form(args)
                cfg.pop("Cmd", None)
            else:
                out.notes.append(f"step {i}: {word} is not simulated (ignored)")
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        out.blobs[_digest(config_bytes)] = config_bytes
        out.manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                   "config": {"mediaType": OCI_CONFIG, "digest": _digest(config_bytes),
                                              "size": len(config_bytes)},
                                   "layers": layers}, sort_keys=True, separators=(",", ":")).encode()
        return out


def _copy_tree(src: Path, dest: Path) -> None:
    from orchestrator.packaging import iter_files

    for rel, path in iter_files(src):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
        target.chmod(path.stat().st_mode & 0o755)
