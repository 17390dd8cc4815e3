"""The ``deployctl`` command: a thin shell over :mod:`orchestrator.api`.

It parses arguments, renders values, asks for confirmation, and maps errors to exit codes:

    0  success            1  a target failed           2  invalid input (manifest, plan, arguments)
    3  changes pending (plan --detailed-exitcode)      130 interrupted (Ctrl-C)

Human output goes to stdout (tables) and stderr (progress); ``-o json`` prints one JSON document
on stdout.  No traceback is shown for an error deployctl understands.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

import click

from orchestrator.errors import DeployctlError, ManifestError, UserError
from orchestrator.secrets import redact

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_PENDING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class _LazyConsole:
    """A rich Console made on first use, so runs that print plain lines (pipes, CI logs) never
    import rich: a no-op apply's whole budget is a few hundred milliseconds."""

    _FORCING = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")  # env rich reads to force a terminal

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Any = None

    @classmethod
    def on_terminal(cls, stream: Any) -> bool:
        """Might rich treat ``stream`` as a terminal (a tty, or forced by the environment)?
        Answered without importing rich."""
        isatty = getattr(stream, "isatty", None)
        return bool(isatty and isatty()) or any(os.environ.get(v) for v in cls._FORCING)

    @property
    def is_terminal(self) -> bool:
        if not self.on_terminal(sys.stderr if self._stderr else sys.stdout):
            return False
        return bool(self._get().is_terminal)

    @property
    def console(self) -> Any:
        """The rich Console itself, for rich objects that use it as a context manager (Live)."""
        return self._get()

    def _get(self) -> Any:
        if self._console is None:
            from rich.console import Console

            # no emoji codes: a model's answer saying ":ok:" is printed as it was sent
            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True, emoji=False)
        return self._console

    def plain(self, text: str) -> None:
        """One line of plain text: through rich on a terminal, written as it is elsewhere (no
        rich import for a pipe or a CI log)."""
        if self.is_terminal:
            self._get().print(text, markup=False, highlight=False)
        else:
            stream = sys.stderr if self._stderr else sys.stdout
            stream.write(text + "\n")
            stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


out = _LazyConsole()
err = _LazyConsole(stderr=True)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


class CIMode(str, Enum):
    azure_devops = "azure-devops"
    none = "none"


# -- the command line (plain click: no typer, so no per-parameter pydantic coercion at start-up) ----
class _Group(click.Group):
    """A group that lists its commands in the order they were added (click sorts them)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


app = _Group(
    name="deployctl",
    help="Ship ML models to Azure (and your own machine) from one declarative manifest.",
    no_args_is_help=True,
)

_PATH = click.Path(path_type=Path)
_Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _enum_option(*decls: str, enum: type[Enum], **kwargs: Any) -> _Decorator:
    """An option taking one of an enum's values (spelled as the values are), passed on as the member."""
    return click.option(*decls, type=click.Choice([m.value for m in enum]),
                        callback=lambda _ctx, _param, value: None if value is None else enum(value), **kwargs)


def manifest_arg(help: str = "The manifest (YAML).") -> _Decorator:
    return click.argument("manifest", type=_PATH, help=help)


target_opt = click.option("--target", "-t", "target", multiple=True, help="Only this target (repeatable).")
var_opt = click.option("--var", "var", multiple=True, help="NAME=VALUE for ${NAME} in the manifest (repeatable).")
output_opt = _enum_option("--output", "-o", "output", enum=OutputFormat, default=OutputFormat.table.value,
                          show_default=True, help="table or json.")
state_opt = click.option("--state-dir", "state_dir", type=_PATH,
                         help="Where local state lives (default: .deployctl beside the manifest).")
ci_opt = _enum_option("--ci", "ci", enum=CIMode, help="Speak a CI system's language (default: detected, e.g. TF_BUILD).")
sim_opt = click.option("--simulate", "simulate", is_flag=True, envvar="DEPLOYCTL_SIMULATE", show_envvar=True,
                       help="Run Azure targets against the in-process Azure simulator.")
sim_state_opt = click.option("--simulate-state", "simulate_state", type=_PATH,
                             help="File holding the simulated cloud (default: <state-dir>/simulated-azure.json).")
sim_faults_opt = click.option("--simulate-faults", "simulate_faults", envvar="DEPLOYCTL_SIMULATE_FAULTS", show_envvar=True,
                              help="Inject faults into the simulated cloud, e.g. 'rate=0.2,seed=1'.")
sim_latency_opt = click.option(
    "--simulate-latency", "simulate_latency", envvar="DEPLOYCTL_SIMULATE_LATENCY", show_envvar=True,
    help="Simulated latency, e.g. 'call=0.1-0.3,lro=2,realtime=1' (seconds per request, per long-running "
         "operation; realtime: really wait).")
parallel_opt = click.option(
    "--parallel", "parallel", type=click.IntRange(1, 128),
    help="Targets worked on at once (default: each kind as many as it sustains: this machine's cores for "
         "local, what ARM's request limits allow for Azure kinds, 128 in all).")
yes_opt = click.option("--yes", "-y", "yes", is_flag=True, help="Go ahead without asking.")
skip_quota_opt = click.option("--skip-quota-check", "skip_quota_check", is_flag=True,
                              help="Do not block on a quota shortfall.")
one_target_opt = click.option("--target", "-t", "target", help="The target (needed when there are several).")
deployment_opt = click.option("--deployment", "deployment", help="Address one deployment directly.")


@dataclass
class Where:
    """The options every command that acts on a deployment shares."""

    var: list[str] | None = None
    state_dir: Path | None = None
    simulate: bool = False
    simulate_state: Path | None = None
    simulate_faults: str | None = None
    simulate_latency: str | None = None
    ci: CIMode | None = None


# In the order help lists them (after the command's own options).
_WHERE_OPTIONS: dict[str, _Decorator] = {
    "var": var_opt, "state_dir": state_opt, "simulate": sim_opt, "simulate_state": sim_state_opt,
    "simulate_faults": sim_faults_opt, "simulate_latency": sim_latency_opt, "ci": ci_opt}


def with_where(fn: Callable[..., None]) -> Callable[..., None]:
    """Give a command the shared deployment options, collected into one ``where: Where`` argument.
    Put it just above the function (below the command's own options), so help lists them last."""

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> None:
        shared = {name: kwargs.pop(name) for name in _WHERE_OPTIONS}
        shared["var"] = list(shared["var"]) or None  # click gives a tuple, () when unset
        fn(where=Where(**shared), **kwargs)

    decorated: Callable[..., None] = wrapper
    for option in reversed(_WHERE_OPTIONS.values()):  # click lists the last-applied decorator first
        decorated = option(decorated)
    return decorated


def _parse_vars(items: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    out_: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise UserError(f"--var {item!r} is not NAME=VALUE")
        out_[name] = value
    return out_


class _NoCI:
    """No CI integration (used until orchestrator.ci is importable)."""

    def reporter(self) -> Any:
        return None

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *a, **k: None


def _detect_ci(ci: str | None) -> Any:
    try:
        from orchestrator.ci import detect
    except ImportError:
        return _NoCI()
    return detect(ci)


def _identity(text: str) -> str:
    return text


# Applied to every line of plain output: under Azure Pipelines, text from models or services
# (logs, error messages) must not be able to smuggle in a ##vso[...] command.
_neutralize: Callable[[str], str] = _identity


def _safe(text: str) -> str:
    return _neutralize(redact(text))


def _markup_safe(text: str) -> str:
    """User text inside rich markup: escaped, so a pattern's ``[a-z]`` is printed, not eaten."""
    from orchestrator.events import escape

    return escape(_safe(text))


class _Run:
    """Everything one command needs: CI integration, reporter, deployment factory."""

    def __init__(self, ci: CIMode | None, output: OutputFormat = OutputFormat.table) -> None:
        global _neutralize
        self.ci = _detect_ci(ci.value if ci else None)
        self.output = output
        _neutralize = _identity
        if type(self.ci).__name__ == "AzureDevOpsIntegration":
            from orchestrator.ci.vso import neutralize

            _neutralize = neutralize
        from orchestrator.events import FanoutReporter, LineReporter, Reporter, RichReporter

        # A spinner and colours on a terminal; plain lines in CI logs and pipes.
        plain: Reporter = (RichReporter(err.console) if err.is_terminal and not os.environ.get("CI")
                           else LineReporter(sys.stderr, clean=_neutralize))
        extra = self.ci.reporter()
        self.reporter = FanoutReporter(plain, extra) if extra else plain

    @contextlib.contextmanager
    def deployment(self, manifest: Path, where: Where, *, skip_quota_check: bool = False,
                   plan: Any = None, read_only: bool = False) -> Iterator[Any]:
        from orchestrator import api
        from orchestrator.state import default_state_dir

        variables = _parse_vars(where.var)
        kw: dict[str, Any] = dict(state_dir=where.state_dir, reporter=self.reporter, skip_quota_check=skip_quota_check)
        with contextlib.ExitStack() as stack:
            if where.simulate:
                from orchestrator.azure.simulator import simulated_session

                path = Path(plan.manifest) if plan is not None else manifest
                sim_file = where.simulate_state or (where.state_dir or default_state_dir(path.absolute())) / "simulated-azure.json"
                kw["azure"] = stack.enter_context(simulated_session(sim_file, faults=where.simulate_faults,
                                                                    latency=where.simulate_latency,
                                                                    read_only=read_only))
            if plan is not None:
                yield api.load_for_plan(plan, vars=variables, **kw)
            else:
                yield api.load(manifest, vars=variables, **kw)


def _fail(code: int) -> NoReturn:
    raise click.exceptions.Exit(code)


def _guard(run: _Run | None, body: Callable[[], int]) -> NoReturn:
    """Run a command body; map errors to exit codes and tell the CI system the outcome."""
    code, message = EXIT_OK, ""
    try:
        code = body()
    except ManifestError as e:
        for issue in e.issues:
            err.print(f"[bold red]error[/]: {_markup_safe(str(issue))}", markup=True, highlight=False)
        n = len(e.issues)
        err.print(f"{n} problem{'s' if n != 1 else ''} in the manifest; nothing was changed.")
        if run:
            run.ci.manifest_error(e)
        code, message = EXIT_INVALID, "invalid manifest"
    except DeployctlError as e:
        err.print(f"[bold red]error[/]: {_markup_safe(str(e))}", markup=True)
        if run:
            run.ci.error(redact(str(e).splitlines()[0]))
        code, message = e.exit_code, redact(str(e).splitlines()[0])
    except ModuleNotFoundError as e:  # deployctl's own optional module (the simulator's azure-core...)
        from orchestrator.registry import missing_module_error

        why = missing_module_error(e, needed_by="deployctl")
        err.print(f"[bold red]error[/]: {_markup_safe(str(why))}", markup=True)  # 'pkg[extra]' stays
        if run:
            run.ci.error(str(why))
        code, message = why.exit_code, str(why)
    except KeyboardInterrupt:
        err.print("interrupted")
        code, message = EXIT_INTERRUPTED, "interrupted"
    if run:
        run.ci.complete(code, message)
    _fail(code)


def _emit_json(value: Any) -> None:
    text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
    sys.stdout.write(_safe(text) + "\n")


def _print_lines(lines: list[str]) -> None:
    if not out.is_terminal:  # verbatim: no rich (and no emoji-code or wrapping surprises) in pipes
        sys.stdout.write("".join(_safe(line) + "\n" for line in lines))
        return
    for line in lines:
        out.print(_safe(line), markup=False)


# -- commands -----------------------------------------------------------------------------------
@app.command()
@manifest_arg()
@var_opt
@output_opt
@ci_opt
def validate(manifest: Path, var: tuple[str, ...], output: OutputFormat, ci: CIMode | None) -> None:
    """Check a manifest: schema, paths, variables, installed target kinds. Changes nothing."""
    run = _Run(ci, output)

    def body() -> int:
        from orchestrator.manifest import load_manifest
        from orchestrator.manifest.validate import check_interpreter

        loaded = load_manifest(manifest, variables=_parse_vars(var))
        if problems := check_interpreter(loaded):
            raise ManifestError(issues=problems)
        m = loaded.manifest
        if output is OutputFormat.json:
            _emit_json({"valid": True, "manifest": str(manifest), "name": m.name,
                        "targets": [{"name": t.name, "kind": t.kind} for t in m.targets]})
        else:
            kinds = ", ".join(f"{t.name} ({t.kind})" for t in m.targets)
            out.print(f"{manifest}: valid — {m.name}, {m.scoring.type.value}, targets: {kinds}", markup=False)
        return EXIT_OK

    _guard(run, body)


@app.command()
@manifest_arg()
@target_opt
@output_opt
@click.option("--out", "out_file", type=_PATH, help="Also save the plan as JSON here.")
@click.option("--detailed-exitcode", "detailed_exitcode", is_flag=True, help="Exit 3 when changes are pending.")
@click.option("--destroy", "destroy_", is_flag=True, help="Plan the removal of everything deployctl owns.")
@parallel_opt
@skip_quota_opt
@with_where
def plan(manifest: Path, target: tuple[str, ...], output: OutputFormat, out_file: Path | None,
         detailed_exitcode: bool, destroy_: bool, parallel: int | None, skip_quota_check: bool, where: Where) -> None:
    """Show what apply would change. Reads, never writes."""
    run = _Run(where.ci, output)
    targets = list(target) or None

    def body() -> int:
        with run.deployment(manifest, where, skip_quota_check=skip_quota_check, read_only=True) as d:
            p = d.plan_destroy(targets, parallel=parallel) if destroy_ else d.plan(targets, parallel=parallel)
        if out_file:
            from orchestrator.state import write_atomic

            write_atomic(out_file, p.to_json())
        if output is OutputFormat.json:
            _emit_json(p.to_json())
        else:
            _render_plan(p)
        run.ci.plan(p)
        if any(t.error for t in p.targets):
            return EXIT_INVALID if all(t.error_kind == "input" for t in p.targets if t.error) else EXIT_FAILED
        if p.blocked:  # error findings (quota, ownership): apply would refuse, so the plan fails too
            return EXIT_FAILED
        return EXIT_PENDING if detailed_exitcode and p.has_changes else EXIT_OK

    _guard(run, body)


def _render_plan(p: Any) -> None:
    if out.is_terminal:
        from orchestrator.render import plan_table

        out.print(plan_table(p))
    else:
        _print_lines(__import__("orchestrator.render", fromlist=["plan_lines"]).plan_lines(p))


def _is_plan_file(path: Path) -> bool:
    if path.suffix == ".json":
        return True
    try:
        with path.open("rb") as f:
            return f.read(64).lstrip().startswith(b"{")
    except OSError:
        return False


def _apply_with_interrupt(d: Any, p: Any, parallel: int | None, fail_fast: bool) -> Any:
    """Apply in a worker thread so Ctrl-C can stop it cleanly: running operations finish, no new
    one starts, and the result says what is in which state.  A second Ctrl-C exits at once."""
    box: dict[str, Any] = {}
    done = threading.Event()  # not Thread.is_alive(): an interrupted join can misreport it

    def work() -> None:
        try:
            box["result"] = d.apply(p, parallel=parallel, fail_fast=fail_fast)
        except BaseException as e:  # re-raised in the main thread
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, name="apply", daemon=True).start()
    try:
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        d.engine.cancel.set()
        err.print("Interrupted: letting running operations finish, starting no new ones (Ctrl-C again to quit now)")
        try:
            while not done.wait(0.2):
                pass
        except KeyboardInterrupt:
            err.print("Quit while operations were running; run `deployctl status` to see where things stand.")
            os._exit(EXIT_INTERRUPTED)
    if "error" in box:
        raise box["error"]
    return box["result"]


@app.command()
@manifest_arg("A manifest (YAML), or a plan saved with `plan -o json`.")
@target_opt
@yes_opt
@parallel_opt
@click.option("--fail-fast", "fail_fast", is_flag=True, help="Stop every target when one fails.")
@skip_quota_opt
@output_opt
@with_where
def apply(manifest: Path, target: tuple[str, ...], yes: bool, parallel: int | None, fail_fast: bool,
          skip_quota_check: bool, output: OutputFormat, where: Where) -> None:
    """Make the deployments match the manifest (or carry out a saved plan)."""
    run = _Run(where.ci, output)
    targets = list(target) or None

    def body() -> int:
        from orchestrator import api

        saved = api.read_plan(manifest) if _is_plan_file(manifest) else None
        if saved is not None and targets:
            raise UserError("--target cannot narrow a saved plan; make the plan with --target instead")
        with run.deployment(manifest, where, skip_quota_check=skip_quota_check,
                            plan=saved) as d:
            p = saved or d.plan(targets, parallel=parallel)
            if saved is None:
                if output is OutputFormat.table:
                    _render_plan(p)
                if p.blocked:
                    err.print("The plan has errors; nothing was applied.")
                    result = d.engine.apply(p, parallel=parallel, check_fresh=False)  # records each target's reason
                    _report_apply(run, result, output)
                    return result.exit_code
                if not p.has_changes:
                    result = d.apply(p, parallel=parallel)  # zero writes; gathers outputs
                    _report_apply(run, result, output)
                    return result.exit_code
                if not _confirmed(yes, "apply", "review the plan, then pass --yes (or apply a saved plan)"):
                    return EXIT_OK
            result = _apply_with_interrupt(d, p, parallel, fail_fast)
        _report_apply(run, result, output)
        return result.exit_code

    _guard(run, body)


def _confirmed(yes: bool, verb: str, hint: str) -> bool:
    """--yes, or the person at the terminal said yes.  Off a terminal, no --yes is an error: a
    pipeline must never wait for an answer nobody will give."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UserError(f"refusing to {verb} without confirmation: not on a terminal", hint=hint)
    if click.confirm(f"{verb.capitalize()} these changes?", default=False):
        return True
    err.print(f"Nothing {'destroyed' if verb == 'destroy' else 'applied'}.")
    return False


def _report_apply(run: _Run, result: Any, output: OutputFormat) -> None:
    if output is OutputFormat.json:
        _emit_json(result.model_dump_json(indent=2))
    else:
        _print_lines(__import__("orchestrator.render", fromlist=["apply_lines"]).apply_lines(result))
    run.ci.applied(result)


@app.command()
@manifest_arg()
@target_opt
@yes_opt
@parallel_opt
@output_opt
@with_where
def destroy(manifest: Path, target: tuple[str, ...], yes: bool, parallel: int | None, output: OutputFormat,
            where: Where) -> None:
    """Remove everything deployctl created for the manifest (and nothing it does not own)."""
    run = _Run(where.ci, output)
    targets = list(target) or None

    def body() -> int:
        with run.deployment(manifest, where) as d:
            p = d.plan_destroy(targets, parallel=parallel)
            if output is OutputFormat.table:
                _render_plan(p)
            if p.has_changes and not _confirmed(yes, "destroy", "review the plan, then pass --yes"):
                return EXIT_OK
            result = _apply_with_interrupt(d, p, parallel, False)
        _report_apply(run, result, output)
        return result.exit_code

    _guard(run, body)


@app.command()
@manifest_arg()
@target_opt
@click.option("--show-keys", "show_keys", is_flag=True, help="Also print endpoint keys.")
@output_opt
@with_where
def status(manifest: Path, target: tuple[str, ...], show_keys: bool, output: OutputFormat, where: Where) -> None:
    """What is deployed, whether it drifted, and where to reach it."""
    run = _Run(where.ci, output)
    targets = list(target) or None

    def body() -> int:
        with run.deployment(manifest, where, read_only=True) as d:
            statuses = d.status(targets)
        if output is OutputFormat.json:
            docs = []
            for s in statuses:
                doc = s.model_dump()
                if show_keys:
                    doc["secrets"] = s.secrets
                docs.append(doc)
            sys.stdout.write(json.dumps(docs, indent=2, default=str) + "\n")  # keys only when asked
        else:
            for line in __import__("orchestrator.render", fromlist=["status_lines"]).status_lines(statuses, show_keys):
                out.print(_neutralize(line) if show_keys else _safe(line), markup=False)
        for s in statuses:
            if s.drifted:
                run.reporter.warning(s.target, "drift: resources were changed outside deployctl")
        return EXIT_FAILED if any(s.error for s in statuses) else EXIT_OK

    _guard(run, body)


@app.command()
@manifest_arg()
@one_target_opt
@click.option("--data", "-d", "data", help="The request body (JSON or text).")
@click.option("--file", "-f", "file", type=_PATH, help="Read the request body from a file.")
@click.option("--async", "run_async", is_flag=True,
              help="Near-real-time: queue it and print the request id (alone on stdout).")
@click.option("--request-id", "request_id", help="Fetch the result of an --async request.")
@click.option("--idempotency-key", "idempotency_key", help="Submissions with one key run once.")
@click.option("--input", "-i", "input_", type=_PATH, multiple=True, help="Batch: input file or folder (repeatable).")
@click.option("--output-path", "--out", "output_path", type=_PATH, help="Batch: where predictions go.")
@deployment_opt
@click.option("--timeout", "timeout", type=float, default=60.0, show_default=True, help="Seconds to wait.")
@output_opt
@with_where
def invoke(manifest: Path, target: str | None, data: str | None, file: Path | None, run_async: bool,
           request_id: str | None, idempotency_key: str | None, input_: tuple[Path, ...], output_path: Path | None,
           deployment: str | None, timeout: float, output: OutputFormat, where: Where) -> None:
    """Send a request to the deployed model and print its answer."""
    run = _Run(where.ci, output)

    def body() -> int:
        payload: Any = None
        if data is not None and file is not None:
            raise UserError("give --data or --file, not both")
        raw = data
        if file is not None:
            try:
                raw = file.read_text()
            except OSError as e:
                raise UserError(f"cannot read {file}: {e.strerror or e}") from None
        if raw is not None:
            try:
                payload = json.loads(raw)
            except json.JSONDecodeError:
                payload = raw
        with run.deployment(manifest, where) as d:
            result = d.invoke(target, payload, run_async=run_async, request_id=request_id,
                              idempotency_key=idempotency_key, inputs=list(input_ or []), output=output_path,
                              deployment=deployment, timeout_s=timeout)
        if output is OutputFormat.json:
            _emit_json(result.model_dump_json(indent=2))
        else:
            submitted = run_async and request_id is None and result.request_id
            if submitted:  # stdout is the id alone: ID=$(deployctl invoke M --async ...)
                _print_lines([result.request_id])
            elif result.body is not None:
                _print_lines([result.body if isinstance(result.body, str)
                              else json.dumps(result.body, indent=2, default=str)])
            for k in ("request_id", "state", "output"):
                if getattr(result, k) and not (submitted and k == "request_id"):
                    err.plain(_safe(f"{k}: {getattr(result, k)}"))
        return EXIT_OK if result.ok else EXIT_FAILED

    _guard(run, body)


@app.command()
@manifest_arg()
@one_target_opt
@click.option("--tail", "-n", "tail", type=click.IntRange(min=1), default=100, show_default=True,
              help="Lines from the end.")
@deployment_opt
@with_where
def logs(manifest: Path, target: str | None, tail: int, deployment: str | None, where: Where) -> None:
    """Show the deployed model's logs."""
    run = _Run(where.ci)

    def body() -> int:
        with run.deployment(manifest, where, read_only=True) as d:
            sys.stdout.write(_safe(d.logs(target, tail=tail, deployment=deployment).rstrip("\n")) + "\n")
        return EXIT_OK

    _guard(run, body)


@app.command()
@output_opt
def targets(output: OutputFormat) -> None:
    """The installed target kinds and the scoring types each supports."""

    def body() -> int:
        from orchestrator.registry import default_registry

        reg = default_registry()
        plugins = reg.plugins
        rows = [{"kind": k, "scoring_types": sorted(s.value for s in plugins[k].scoring_types),
                 "description": plugins[k].description, "module": plugins[k].__module__} for k in sorted(plugins)]
        if output is OutputFormat.json:
            _emit_json({"targets": rows, "broken": reg.broken, "shadowed": reg.shadowed})
        else:
            for r in rows:
                out.print(f"{r['kind']:<18} {', '.join(r['scoring_types']):<36} {r['description']}", markup=False)
            for kind, why in reg.broken.items():
                err.print(f"{kind}: failed to load: {why}", markup=False)
            for kind, dists in reg.shadowed.items():
                err.print(f"{kind}: also registered by {', '.join(dists)}: ignored, {reg.dists.get(kind, 'the first')}'s "
                          "is used", markup=False)
        return EXIT_OK

    _guard(None, body)


@app.command()
@click.option("--out", "out_file", type=_PATH, help="Write to this file instead of stdout.")
def schema(out_file: Path | None) -> None:
    """Print the manifest's JSON Schema (with every installed target's settings)."""

    def body() -> int:
        from orchestrator.manifest.schema import schema_text

        text = schema_text()
        if out_file:
            from orchestrator.state import write_atomic

            write_atomic(out_file, text)
        else:
            sys.stdout.write(text)
        return EXIT_OK

    _guard(None, body)

# -- images -------------------------------------------------------------------------------------
image_app = _Group(name="image", help="Container images without Docker: build, push by content digest.",
                   no_args_is_help=True)
app.add_command(image_app)


@image_app.command("build")
@manifest_arg()
@one_target_opt
@click.option("--registry", "registry", help="HOST[:PORT]/REPO to push to (instead of a target's registry).")
@click.option("--platform", "platform", default="x86_64-manylinux_2_28", show_default=True,
              help="uv's --python-platform for the environment.")
@var_opt
@output_opt
@ci_opt
def image_build(manifest: Path, target: str | None, registry: str | None, platform: str, var: tuple[str, ...],
                output: OutputFormat, ci: CIMode | None) -> None:
    """Build the scoring image (base + environment + runtime + model + code) and push what the
    registry lacks. Credentials: DEPLOYCTL_REGISTRY_USERNAME / DEPLOYCTL_REGISTRY_PASSWORD, else
    your Azure identity for *.azurecr.io."""
    run = _Run(ci, output)

    def body() -> int:
        from orchestrator.images.cli import build_for_manifest

        result = build_for_manifest(manifest, target=target, registry=registry, platform=platform,
                                    variables=_parse_vars(var), progress=lambda m: err.print(_safe(m), markup=False))
        if output is OutputFormat.json:
            _emit_json(result.to_json())
        else:
            _print_lines([f"{result.image}  (tag {result.tag})"] + [
                f"  {x.name:<12} {x.digest[:19]}  {x.size / 1e6:8.2f} MB  {'pushed' if x.pushed else 'already there'}"
                for x in result.layers])
        return EXIT_OK

    _guard(run, body)


def main() -> None:
    """Run the command line in this interpreter; it ends by raising SystemExit (click's
    standalone mode).  The ``deployctl`` command is :func:`console`."""
    import logging

    from orchestrator.secrets import RedactingFilter

    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    logging.basicConfig(level=os.environ.get("DEPLOYCTL_LOG_LEVEL", "WARNING").upper(), handlers=[handler],
                        format="%(levelname)s %(name)s: %(message)s")
    # Help and usage errors are click's plain text, on a terminal too: no rich, no pydantic.
    app()


def console() -> NoReturn:
    """The ``deployctl`` command: :func:`main`, then an exit without the interpreter's teardown."""
    import gc

    # Start-up builds objects that live as long as the process (modules, classes, pydantic's
    # schemas), and the cyclic collector, run every 700 allocations, traverses them again and again
    # to free nothing: ~70 collections, ~15 ms of a ~0.3 s no-op apply (18 ms at the median, side
    # by side). Every 50,000 it runs none while starting, and a long apply still collects its
    # cycles, a few MB later. The Python API leaves the collector alone: that process is the user's.
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    try:
        main()
        code: object = 0
    except SystemExit as e:
        code = e.code
    if code is None:
        code = 0
    if not isinstance(code, int):  # a message for SystemExit to print: the ordinary way
        raise SystemExit(code)
    exit_without_teardown(code)


def exit_without_teardown(code: int) -> NoReturn:
    """End the process with ``code`` once the finished command's work is flushed, skipping only
    the interpreter's teardown: clearing every module's globals and collecting the objects left,
    which for a no-op apply's ~300 modules (pydantic's schemas among them) is ~50 ms of ~300.

    Exit handlers still run (logging's flush, ``weakref.finalize`` clean-ups of temporary
    folders and simulated hosts), and stdout and stderr are flushed, as a normal exit does. A
    thread the interpreter would wait for (not a daemon) makes this a normal exit, so nothing is
    cut short. Files deployctl writes are closed by ``with`` blocks or are raw descriptors, so no
    buffered write is waiting for teardown to flush it."""
    import atexit

    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError) as e:  # as Python's own exit does: status 120
            code = code or 120
            if stream is sys.stdout and not isinstance(e, BrokenPipeError):  # a full disk, not `| head`
                with contextlib.suppress(Exception):
                    sys.stderr.write(f"deployctl: the output could not be written: {getattr(e, 'strerror', None) or e}\n")
                    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()
