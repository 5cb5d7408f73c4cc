#!/usr/bin/env python
"""A small, dependency-free AST mutation tester: how many deliberate bugs do the tests notice?

For one module it makes mutants (one small change each), runs a chosen pytest selection against
each, and counts the mutants no test notices::

    python scripts/mutate.py --module gradwatch/noise.py \\
        --tests "tests/test_noise.py tests/test_check.py -k 'not property'" --max 150 --seed 0

Mutations: comparison operators (``<``↔``<=``, ``>``↔``>=``, ``==``↔``!=``, ``is``↔``is not``,
``in``↔``not in``); ``and``↔``or``; ``+``↔``-``, ``*``↔``/`` (also augmented assignments);
numeric constants ``c → 2c`` and ``c → c/2`` (``c//2`` for ints; 0 is skipped, and so are
0/1 used as subscripts or slice bounds); ``True``↔``False``; a ``not`` dropped; ``return X`` of a
comparison, ``and``/``or`` or ``bool(...)`` negated.

Each mutant is the module re-parsed, changed at one node and unparsed. With ``--jobs 1`` (the
default) it is written over the module itself and the original is put back afterwards *always*
(``try``/``finally``, with a backup copy next to the module, also on Ctrl-C); a leftover backup from
an interrupted run is restored before anything else. With ``--jobs N > 1`` each worker mutates a
private copy of the package in a temporary directory that is put first on ``PYTHONPATH`` (the
working tree is then never written). Byte-code caching is off in the test runs, so a stale
``.pyc`` can never stand in for a mutant or for the original.

A mutant is *killed* when the selection fails (or times out: counted as killed) and *survives* when
it passes. The report lists survivors as ``file:line  mutation`` and the kill rate.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent

_CMP_SWAP: Dict[type, type] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
}
_CMP_TEXT = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
             ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}
_BIN_SWAP: Dict[type, type] = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
_STOP = threading.Event()  # set on Ctrl-C: workers kill their test process and stop
_BIN_TEXT = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


@dataclass(frozen=True)
class Mutant:
    """One change: the ``index``-th node of ``ast.walk`` order, the kind of change and its variant."""

    index: int
    kind: str
    variant: int
    line: int
    text: str


# --------------------------------------------------------------------------------------------
# Finding and applying mutations


def _annotation_nodes(tree: ast.AST) -> set:
    """Nodes inside annotations and decorators: never mutated."""
    skip: set = set()

    def add(node: Optional[ast.AST]) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            add(node.returns)
            for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs:
                add(a.annotation)
            for a in (node.args.vararg, node.args.kwarg):
                if a is not None:
                    add(a.annotation)
        elif isinstance(node, ast.AnnAssign):
            add(node.annotation)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for d in node.decorator_list:  # @dataclass(frozen=True): flipping it changes no behaviour under test
                add(d)
    return skip


def _index_like(tree: ast.AST) -> set:
    """Constants 0 and 1 used as subscripts or slice bounds (``x[0]``, ``a[1:]``): not worth mutating."""
    out: set = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            parts = [node.slice]
            if isinstance(node.slice, ast.Slice):
                parts = [node.slice.lower, node.slice.upper, node.slice.step]
            for p in parts:
                if isinstance(p, ast.UnaryOp) and isinstance(p.op, ast.USub):
                    p = p.operand
                if isinstance(p, ast.Constant) and p.value in (0, 1) and not isinstance(p.value, bool):
                    out.add(id(p))
    return out


def _is_boolish(node: ast.AST) -> bool:
    return (isinstance(node, (ast.Compare, ast.BoolOp))
            or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not))
            or (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "bool"))


def find_mutants(source: str) -> List[Mutant]:
    tree = ast.parse(source)
    skip = _annotation_nodes(tree) | _index_like(tree)
    out: List[Mutant] = []
    for i, node in enumerate(ast.walk(tree)):
        if id(node) in skip:
            continue
        line = getattr(node, "lineno", 0)
        where = " ".join((ast.get_source_segment(source, node) or "").split())
        where = f"   in `{where[:70]}{'…' if len(where) > 70 else ''}`" if where else ""
        start = len(out)
        if isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                if type(op) in _CMP_SWAP:
                    out.append(Mutant(i, "cmp", k, line,
                                      f"{_CMP_TEXT[type(op)]} -> {_CMP_TEXT[_CMP_SWAP[type(op)]]}"))
        elif isinstance(node, ast.BoolOp):
            out.append(Mutant(i, "boolop", 0, line, "and -> or" if isinstance(node.op, ast.And) else "or -> and"))
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _BIN_SWAP:
            aug = "=" if isinstance(node, ast.AugAssign) else ""
            out.append(Mutant(i, "binop", 0, line,
                              f"{_BIN_TEXT[type(node.op)]}{aug} -> {_BIN_TEXT[_BIN_SWAP[type(node.op)]]}{aug}"))
        elif isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool):
                out.append(Mutant(i, "bool", 0, line, f"{v} -> {not v}"))
            elif isinstance(v, (int, float)) and v != 0:
                out.append(Mutant(i, "const", 0, line, f"{v!r} -> {v * 2!r}"))
                half = v // 2 if isinstance(v, int) else v / 2
                if half != v:
                    out.append(Mutant(i, "const", 1, line, f"{v!r} -> {half!r}"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            out.append(Mutant(i, "not", 0, line, "drop `not`"))
        elif isinstance(node, ast.Return) and node.value is not None and _is_boolish(node.value):
            out.append(Mutant(i, "return", 0, line, "return X -> return not X"))
        if isinstance(node, (ast.Compare, ast.BoolOp, ast.BinOp, ast.AugAssign, ast.UnaryOp)):
            out[start:] = [Mutant(m.index, m.kind, m.variant, m.line, m.text + where) for m in out[start:]]
    return out


class _Apply(ast.NodeTransformer):
    def __init__(self, mutant: Mutant, target: ast.AST):
        self.mutant = mutant
        self.target = target

    def visit(self, node: ast.AST) -> ast.AST:
        if node is not self.target:
            return self.generic_visit(node)
        m = self.mutant
        if m.kind == "cmp":
            assert isinstance(node, ast.Compare)
            node.ops[m.variant] = _CMP_SWAP[type(node.ops[m.variant])]()
        elif m.kind == "boolop":
            assert isinstance(node, ast.BoolOp)
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        elif m.kind == "binop":
            assert isinstance(node, (ast.BinOp, ast.AugAssign))
            node.op = _BIN_SWAP[type(node.op)]()
        elif m.kind == "bool":
            assert isinstance(node, ast.Constant)
            node.value = not node.value
        elif m.kind == "const":
            assert isinstance(node, ast.Constant)
            v = node.value
            node.value = v * 2 if m.variant == 0 else (v // 2 if isinstance(v, int) else v / 2)
        elif m.kind == "not":
            assert isinstance(node, ast.UnaryOp)
            return node.operand
        elif m.kind == "return":
            assert isinstance(node, ast.Return) and node.value is not None
            node.value = ast.UnaryOp(op=ast.Not(), operand=node.value)
        return node


def apply_mutant(source: str, mutant: Mutant) -> str:
    tree = ast.parse(source)
    target = list(ast.walk(tree))[mutant.index]
    tree = _Apply(mutant, target).visit(tree)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree) + "\n"


# --------------------------------------------------------------------------------------------
# Running the tests


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # "killed", "survived", "timeout", "error"
    seconds: float


def _run(cmd: Sequence[str], cwd: Path, env: Dict[str, str], timeout: float) -> Tuple[str, float]:
    t0 = time.monotonic()
    if _STOP.is_set():
        return "error", 0.0
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while True:
            try:
                rc = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if _STOP.is_set():
                    raise KeyboardInterrupt from None
                if time.monotonic() - t0 > timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return "timeout", time.monotonic() - t0
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)  # the test process (in its own session) dies with us
        proc.wait()
        raise
    if rc in (0, 5):  # 5: no tests collected counts as passing; the baseline catches a bad selection
        return ("survived" if rc == 0 else "error"), time.monotonic() - t0
    return "killed", time.monotonic() - t0


def _pytest_cmd(tests: str) -> List[str]:
    # -P: the working directory does not go first on sys.path (the shadow package on PYTHONPATH wins)
    return [sys.executable, "-P", "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
            *shlex.split(tests)]


def _env(shadow: Optional[Path]) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONHASHSEED"] = "0"
    if shadow is not None:
        env["PYTHONPATH"] = str(shadow) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class InPlace:
    """Writes each mutant over the module and always puts the original back."""

    def __init__(self, module: Path):
        self.module = module
        self.backup = module.with_name(module.name + ".mutate-backup")
        if self.backup.exists():  # an earlier run was killed hard: its backup is the original
            print(f"restoring {module} from a leftover {self.backup.name}", file=sys.stderr)
            shutil.copy2(self.backup, module)
            self.backup.unlink()
        self.original = module.read_text()

    def run(self, mutated: str, cmd: Sequence[str], timeout: float) -> Tuple[str, float]:
        shutil.copy2(self.module, self.backup)
        try:
            self.module.write_text(mutated)
            return _run(cmd, ROOT, _env(None), timeout)
        finally:
            shutil.copy2(self.backup, self.module)  # copy2 keeps the original mtime: its .pyc stays valid
            self.backup.unlink()
            assert self.module.read_text() == self.original


class Shadow:
    """A private copy of the package per worker; the mutant is written into the copy only."""

    def __init__(self, module: Path):
        self.rel = module.resolve().relative_to(ROOT)
        self.package = self.rel.parts[0]
        self.original = module.read_text()
        self.dir = Path(tempfile.mkdtemp(prefix="mutate-"))
        shutil.copytree(ROOT / self.package, self.dir / self.package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.mutate-backup"))
        probe = subprocess.run([sys.executable, "-P", "-c", f"import {self.package}; print({self.package}.__file__)"],
                               cwd=ROOT, env=_env(self.dir), capture_output=True, text=True)
        if not probe.stdout.strip().startswith(str(self.dir)):
            raise SystemExit(f"the shadow copy is not what the tests import ({probe.stdout.strip()}): use --jobs 1")

    def run(self, mutated: str, cmd: Sequence[str], timeout: float) -> Tuple[str, float]:
        target = self.dir / self.rel
        try:
            target.write_text(mutated)
            return _run(cmd, ROOT, _env(self.dir), timeout)
        finally:
            target.write_text(self.original)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The command line


def _survivors_in(log: Path) -> set:
    """``(line, mutation)`` of each survivor listed in an earlier run's summary."""
    out: set = set()
    in_list = False
    for raw in log.read_text().splitlines():
        if raw.startswith("survived "):
            in_list = True
            continue
        if in_list and raw.startswith("  "):
            where, _, text = raw.strip().partition("  ")
            out.add((int(where.rsplit(":", 1)[1]), text))
        elif in_list:
            in_list = False
    return out


def _select(mutants: List[Mutant], lines: str, limit: int, seed: int) -> List[Mutant]:
    if lines:
        wanted: set = set()
        for part in lines.split(","):
            lo, _, hi = part.partition("-")
            wanted.update(range(int(lo), int(hi or lo) + 1))
        mutants = [m for m in mutants if m.line in wanted]
    if limit and len(mutants) > limit:
        mutants = random.Random(seed).sample(mutants, limit)
    return sorted(mutants, key=lambda m: (m.line, m.index, m.variant))


def _execute(module: Path, source: str, mutants: List[Mutant], cmd: List[str], timeout: float, jobs: int,
             record: Callable[[Outcome], None]) -> None:
    """Run every mutant (sequentially in place, or in shadow copies), recording each outcome."""

    def one(runner: Callable[[str, Sequence[str], float], Tuple[str, float]], m: Mutant) -> Outcome:
        try:
            mutated = apply_mutant(source, m)
            compile(mutated, str(module), "exec")
        except Exception:  # an unbuildable mutant is no test's achievement: reported, not counted
            return Outcome(m, "error", 0.0)
        st, secs = runner(mutated, cmd, timeout)
        return Outcome(m, st, secs)

    if jobs <= 1:
        inplace = InPlace(module)
        for m in mutants:
            record(one(inplace.run, m))
        return
    shadows = [Shadow(module) for _ in range(jobs)]
    free = list(shadows)
    lock = threading.Lock()

    def task(m: Mutant) -> Outcome:
        with lock:
            sh = free.pop()
        try:
            return one(sh.run, m)
        finally:
            with lock:
                free.append(sh)

    pool = concurrent.futures.ThreadPoolExecutor(jobs)
    try:
        for o in pool.map(task, mutants):
            record(o)
    finally:
        _STOP.set()  # running test processes are killed, queued mutants cancelled
        pool.shutdown(wait=True, cancel_futures=True)
        for sh in shadows:
            sh.close()


def _summary(rel: Path, tests: str, outcomes: List[Outcome], found: int, sampled: str, interrupted: bool) -> None:
    killed = [o for o in outcomes if o.status == "killed"]
    timeouts = [o for o in outcomes if o.status == "timeout"]
    survived = sorted((o for o in outcomes if o.status == "survived"), key=lambda o: (o.mutant.line, o.mutant.index))
    errors = [o for o in outcomes if o.status == "error"]
    counted = len(killed) + len(timeouts) + len(survived)
    print()
    print(f"module   {rel}")
    print(f"tests    {tests}")
    print(f"mutants  {counted} run ({found} found{sampled})"
          f"{', ' + str(len(errors)) + ' unbuildable, not counted' if errors else ''}")
    print(f"killed   {len(killed)}")
    print(f"timeouts {len(timeouts)} (counted as killed)")
    print(f"survived {len(survived)}")
    for o in survived:
        print(f"  {rel}:{o.mutant.line}  {o.mutant.text}")
    rate = (len(killed) + len(timeouts)) / counted if counted else 0.0
    print(f"kill rate {100 * rate:.1f}%{' (interrupted)' if interrupted else ''}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[Sequence[str]] = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # kill PID restores the module too
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--module", required=True, help="the module to mutate, e.g. gradwatch/noise.py")
    ap.add_argument("--tests", required=True,
                    help='the pytest selection, e.g. "tests/test_noise.py tests/test_check.py -k \'not property\'"')
    ap.add_argument("--max", type=int, default=0, help="sample at most N mutants (0: all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sample")
    ap.add_argument("--jobs", type=int, default=1, help="parallel workers (>1 uses shadow copies)")
    ap.add_argument("--timeout", type=float, default=0.0, help="seconds per mutant (default: 3x the baseline + 5)")
    ap.add_argument("--lines", default="", help="only mutants on these lines, e.g. 40-80,120")
    ap.add_argument("--list", action="store_true", help="list the mutants and stop")
    ap.add_argument("--survivors-of", default="", metavar="LOG",
                    help="run only the survivors listed in an earlier run's output (give the same --max and --seed; "
                         "after adding tests, the mutants "
                         "it killed stay killed as long as the library and the earlier tests are unchanged)")
    args = ap.parse_args(argv)

    module = (ROOT / args.module).resolve()
    if module.with_name(module.name + ".mutate-backup").exists():
        InPlace(module)  # an interrupted run's backup is the original: put it back first
    source = module.read_text()
    found = find_mutants(source)
    mutants = _select(found, args.lines, args.max, args.seed)
    if args.survivors_of:
        listed = _survivors_in(Path(args.survivors_of))
        mutants = [m for m in mutants if (m.line, m.text) in listed]  # within the same sample (--max/--seed)
    rel = module.relative_to(ROOT)
    if args.list:
        for m in mutants:
            print(f"{rel}:{m.line}  {m.text}")
        print(f"{len(mutants)} of {len(found)} mutants")
        return 0

    cmd = _pytest_cmd(args.tests)
    print(f"baseline: {' '.join(shlex.quote(c) for c in cmd[1:])}", flush=True)
    status, base_time = _run(cmd, ROOT, _env(None), 3600)
    if status != "survived":
        print(f"the unmutated tests do not pass ({status}): fix them first", file=sys.stderr)
        return 2
    timeout = args.timeout or 3 * base_time + 5
    print(f"baseline passed in {base_time:.1f}s; {len(mutants)} of {len(found)} mutants of {rel}, "
          f"timeout {timeout:.0f}s each", flush=True)

    outcomes: List[Outcome] = []

    def record(o: Outcome) -> None:
        outcomes.append(o)
        mark = {"killed": ".", "timeout": "T", "survived": "S", "error": "E"}[o.status]
        print(f"[{len(outcomes)}/{len(mutants)}] {mark} {rel}:{o.mutant.line}  {o.mutant.text}  ({o.seconds:.1f}s)",
              flush=True)

    interrupted = False
    try:
        _execute(module, source, mutants, cmd, timeout, args.jobs, record)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: the module is restored; the summary covers the mutants run", file=sys.stderr)
    finally:
        if module.read_text() != source:
            raise SystemExit(f"{rel} was not restored: restore it from git or its .mutate-backup")
    sampled = f", sampled {args.max} with seed {args.seed}" if args.max and len(found) > args.max else ""
    if args.lines:
        sampled += f", lines {args.lines}"
    _summary(rel, args.tests, outcomes, len(found), sampled, interrupted)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
