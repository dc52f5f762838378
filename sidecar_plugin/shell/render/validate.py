"""Check each new ``litellm.yaml`` with LiteLLM's own ``--validate_config`` before apply writes it.

A broken change must never reach the live sidecar: apply renders in memory,
and this runs the installed LiteLLM on a private copy of every changed config
(offline: the model cost map is local; no port is bound). A refusal stops
apply before anything is written; its output is redacted, since LiteLLM may
print the keys the config holds.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Callable, Dict, Mapping, Sequence, Set, Tuple

from sidecar_plugin.core.render.terms import RenderOptions
from sidecar_plugin.errors import SidecarError
from sidecar_plugin.names import LITELLM_YAML
from sidecar_plugin.shell.render.build import Rendered
from sidecar_plugin.shell.listener.redact import Redactor, secrets_from_config

VALIDATE_TIMEOUT = 180.0  # LiteLLM imports itself to validate: about 10 s here, more on a loaded host


class ValidationError(SidecarError):
    """LiteLLM refused a new config; ``output`` holds the last lines it printed (redacted)."""

    def __init__(self, message: str, output: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.output = tuple(output)


def validate_configs(rendered: Rendered, paths: Set[str], say: Callable[[str], None],
                     new_installs: Mapping[str, str] = {}) -> None:
    """Check each new ``litellm.yaml`` with LiteLLM's ``--validate_config``, from a private temp copy.

    Offline (the model cost map is local) and without binding a port; a
    refusal stops apply before anything is written. ``new_installs`` (program
    -> which LiteLLM was installed since it started) are checked too, config
    changed or not: ``--validate_config`` imports LiteLLM's proxy, so a broken
    upgrade is refused while the old process still serves, not after a restart.
    """
    data: Dict[str, bytes] = {f.path: f.data for f in rendered.files}
    for s in rendered.sidecars:
        if s.config_path not in paths and s.program not in new_installs:
            continue
        res, redact = _run_on_copy(s, data[s.config_path], rendered.out_dir)
        what = f"the new {LITELLM_YAML}" if s.config_path in paths else LITELLM_YAML
        if s.program in new_installs:
            what += f" under the {new_installs[s.program]}"
        if res.returncode == 0:
            say(f"{s.program}: {what} passes litellm --validate_config")
            continue
        lines = [redact(line).strip() for line in (res.stderr + res.stdout).splitlines() if line.strip()]
        if any("No such option" in line and "validate_config" in line for line in lines):
            say(f"{s.program}: this LiteLLM has no --validate_config; the change is checked when it starts")
            continue
        why = next((line for line in lines if "validation failed" in line), lines[-1] if lines else "no output")
        keeps = ("; it keeps running the LiteLLM it started with: put the previous one back, or fix this one"
                 if s.program in new_installs else "")
        raise ValidationError(f"{s.program}: litellm --validate_config refused {what} "
                              f"({why[:300]}); nothing was written{keeps}", lines[-10:])


def _run_on_copy(s: RenderOptions, data: bytes, out_dir: str) -> Tuple["subprocess.CompletedProcess[str]", Redactor]:
    """Run ``litellm --validate_config`` on a temp copy of ``data``; return its result and a redactor of its secrets.

    The copy lies beside the live file when its folder exists (a new
    sidecar's does not yet): the same filesystem and permissions; else in the
    out-dir, else the system's temp folder. It is removed before this returns.
    """
    folder = next((d for d in (os.path.dirname(s.config_path), out_dir) if os.path.isdir(d)), None)
    fd, tmp = tempfile.mkstemp(prefix=".validate-", suffix=".yaml", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:  # mkstemp: 0600, like the file it stands for
            fh.write(data)
        redact = Redactor(secrets_from_config(tmp))
        env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
        try:
            res = subprocess.run([s.binary, "--config", tmp, "--validate_config"], capture_output=True,
                                 text=True, timeout=VALIDATE_TIMEOUT, env=env, cwd=os.path.dirname(tmp),
                                 stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SidecarError(f"{s.program}: could not validate the new {LITELLM_YAML} "
                               f"({type(exc).__name__}); nothing was written") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return res, redact
