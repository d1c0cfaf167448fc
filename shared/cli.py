"""The ``streamlab`` command.

    streamlab list
    streamlab new NAME [--from EXPERIMENT]
    streamlab reproduce <experiment|all> [--preset P] [--resume RUN_DIR] [key=value ...]
    streamlab runs [--experiment X]
    streamlab sync [--dry-run]

A mistake in the input (unknown experiment, preset or config key) prints one line naming what is
valid and exits with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from .errors import StreamlabError

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(USAGE_ERROR, f"streamlab: error: {message} (see 'streamlab --help')\n")


def _cmd_list(args) -> int:
    from .registry import discover

    for name, exp in discover().items():
        tables = ", ".join(f"{t} ({len(tab.rows)} rows)" for t, tab in exp.spec.tables.items())
        kind = "  [template]" if exp.is_template else ""
        print(f"{name:<20} {exp.spec.title}{kind}\n{'':<20} paper: {exp.spec.paper}\n{'':<20} tables: {tables}; presets: {', '.join(exp.spec.presets)}")
    return 0


def _cmd_reproduce(args) -> int:
    from .runner import reproduce, reproduce_many

    if args.resume:
        if args.experiment == "all":
            raise StreamlabError("--resume takes one experiment, not 'all'")
        reproduce(args.experiment, resume=args.resume, outputs=args.outputs)
        return 0
    names = "all" if args.experiment == "all" else [args.experiment]
    runs, failed, _ = reproduce_many(names, args.preset, args.overrides, outputs=args.outputs)
    if failed:
        print(f"streamlab: {len(failed)} experiment(s) failed: {', '.join(failed)} (tracebacks above)", file=sys.stderr)
        return 1
    return 0


def _cmd_runs(args) -> int:
    from .registry import discover
    from .results import format_value
    from .runs import over_seeds, runs_table

    specs = {name: exp.spec for name, exp in discover().items()}
    if args.experiment and args.experiment not in specs:
        raise StreamlabError(f"unknown experiment {args.experiment!r}; valid: {', '.join(specs)}")
    table = runs_table(args.experiment, args.outputs, specs)
    if table.empty:
        print("no local runs yet; start one with `make reproduce` or `streamlab reproduce <experiment>`")
        return 0
    seeds = over_seeds(table)
    for experiment, part in table.groupby("experiment", sort=False):
        part = part.dropna(axis=1, how="all").drop(columns="experiment")
        print(f"== {experiment}")
        print(part.to_string(index=False, float_format=format_value, na_rep="-"))
        mine = seeds[seeds.experiment == experiment] if not seeds.empty else seeds
        for values in mine.to_dict("records"):
            cells = [f"{k.removesuffix(' mean')} {format_value(v)} ± {format_value(values[k.removesuffix(' mean') + ' se'])}"
                     for k, v in values.items() if k.endswith(" mean") and v == v]
            print(f"  mean ± s.e. over {values['seeds']} seeds, {values['preset']}{' ' + values['overrides'] if values['overrides'] else ''}: "
                  + "; ".join(cells))
        print()
    return 0


def _cmd_sync(args) -> int:
    from .paths import outputs_root

    root = outputs_root(args.outputs)
    pending = sorted(
        d for d in root.glob("*/*/wandb/offline-run-*") if d.is_dir() and not any(d.glob("*.wandb.synced"))
    )
    if not pending:
        print(f"nothing to sync: no unsynced offline wandb runs under {root}")
        return 0
    if not args.dry_run:  # before announcing anything: without a key nothing will be synced
        from .logger import wandb_api_key_configured

        if not wandb_api_key_configured():
            raise StreamlabError(f"no wandb API key configured, {len(pending)} offline run(s) not synced; run `wandb login` (or set WANDB_API_KEY) and sync again")
    for d in pending:
        print(f"{'would sync' if args.dry_run else 'syncing'} {d}", flush=True)
    if args.dry_run:
        return 0
    return subprocess.call([sys.executable, "-m", "wandb", "sync", *map(str, pending)])


def _cmd_new(args) -> int:
    from .fork import fork

    done = fork(args.name, args.source)
    print(f"new experiment '{args.name}' from '{args.source}': {', '.join(done['written'])}")
    print(f"  try it: streamlab reproduce {args.name} --preset smoke; its tests: pytest experiments/{args.name}")
    if done["review"]:
        print(f"  '{args.source}' is still named (table or row names, prose) in: "
              + ", ".join(f"{path} ({count})" for path, count in done["review"].items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="streamlab", description="StreamLab: reproduce streaming-ML papers, compare runs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("list", help="registered experiments, their tables and presets").set_defaults(fn=_cmd_list)

    rep = sub.add_parser("reproduce", help="run an experiment's reproduction into a new run directory")
    rep.add_argument("experiment", help="experiment name, or 'all'")
    rep.add_argument("--preset", default="cpu", help="smoke | cpu | paper (default: cpu)")
    rep.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run in its own directory")
    rep.add_argument("--outputs", metavar="DIR", help="outputs root (default: $STREAMLAB_OUTPUTS or <repo>/outputs)")
    rep.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.seed=1 model=linear")
    rep.set_defaults(fn=_cmd_reproduce)

    new = sub.add_parser("new", help="start an experiment from a copy of another (renames its modules, paths and notebook)")
    new.add_argument("name", help="the new experiment's name (a Python package name)")
    new.add_argument("--from", dest="source", default="_template", help="the experiment to copy (default: _template)")
    new.set_defaults(fn=_cmd_new)

    runs = sub.add_parser("runs", help="local runs with their headline metrics side by side")
    runs.add_argument("--experiment", help="only this experiment")
    runs.add_argument("--outputs", metavar="DIR")
    runs.set_defaults(fn=_cmd_runs)

    sync = sub.add_parser("sync", help="upload offline wandb runs with `wandb sync`")
    sync.add_argument("--dry-run", action="store_true", help="only list what would be synced")
    sync.add_argument("--outputs", metavar="DIR")
    sync.set_defaults(fn=_cmd_sync)
    return parser


def _interrupt_on_sigterm(signum, frame):
    # SLURM and `kill` send SIGTERM: unwind like Ctrl-C so the run is marked "interrupted" and resumable
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    parser = build_parser()
    # Overrides may follow options (`reproduce x --preset smoke a=1`), which argparse alone rejects.
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or args.command != "reproduce"]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return args.fn(args)
    except StreamlabError as err:
        print(f"streamlab: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    except BrokenPipeError:  # `streamlab sync --dry-run | head`: the reader left; that is not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not raise again
        return 0
    except KeyboardInterrupt:
        print("streamlab: interrupted (a run that had started printed its resume command above)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())


def one_line_errors(prog: str):
    """Decorate an experiment tool's ``main(argv) -> int``: bad input or missing data (a
    ``StreamlabError``) ends in one line on stderr, ``<prog>: <why>``, and exit status 2, never a
    traceback; so a tool raises ``ConfigError`` where it finds the problem."""
    import functools

    def decorate(main):
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except StreamlabError as err:
                print(f"{prog}: {err}", file=sys.stderr)
                return USAGE_ERROR

        return run

    return decorate


def refuse_overwrite(path, flag: str) -> None:
    """A tool never writes over a result: an existing ``path`` (given as ``flag``) is refused."""
    from pathlib import Path

    from .errors import ConfigError

    if path is not None and Path(path).exists():
        raise ConfigError(f"{path} exists; choose another {flag}")


def tool_command(package: str, name: str, argv: list[str] | None) -> list[str]:
    """The command line that reproduces a tool's run, for its provenance."""
    return ["python", "-m", package, name, *(sys.argv[1:] if argv is None else argv)]


def experiment_main(package: str, tools: dict[str, tuple[str, str]], argv: list[str] | None = None) -> int:
    """``python -m experiments.<name> [TOOL ...]``: an experiment's own tools beside ``reproduce``.

    ``package`` is the experiment's ``__package__`` (a fork under another name keeps working);
    ``tools`` maps a tool's name to ``("module:function", one-line description)``, the function
    taking the tool's own arguments. With no argument, or ``--help``, it prints what there is; a
    first argument that is a flag or a ``key=value`` override still means ``reproduce``.
    """
    import importlib

    argv = list(sys.argv[1:] if argv is None else argv)
    name = package.rpartition(".")[2]
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(len(t) for t in ("reproduce", *tools))
        lines = [f"usage: python -m {package} <tool> [arguments]   (each tool's --help lists its own)", "", "tools:"]
        lines += [f"  {tool:<{width}}  {text}" for tool, (_, text) in tools.items()]
        lines.append(f"  {'reproduce':<{width}}  reproduce the experiment's tables: [--preset smoke|cpu|paper] [--resume RUN_DIR] "
                     f"[key=value ...] (= streamlab reproduce {name})")
        print("\n".join(lines))
        return 0
    first = argv[0]
    if first in tools:  # a tool's own bad-input errors are one line too, whether or not it catches them itself
        module, _, function = tools[first][0].partition(":")
        return one_line_errors(f"python -m {package} {first}")(getattr(importlib.import_module(module, package), function))(argv[1:])
    if first == "reproduce":
        argv = argv[1:]
    elif not (first.startswith("-") or "=" in first):
        print(f"python -m {package}: unknown tool {first!r}; choose from {', '.join([*tools, 'reproduce'])} (see --help)", file=sys.stderr)
        return USAGE_ERROR
    return main(["reproduce", name, *argv])
