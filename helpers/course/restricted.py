"""Load a student's definitions so that calling them cannot change the tests that call them.

The grader's test runner (helpers.course.testrun) executes the lab's tests in its own interpreter. Only the
*definitions* of a student's cells reach it (imports, functions, classes, assignments; a loose statement such as
a ``print`` or a training loop is skipped), and they are compiled under three rules:

* **Checked before they run**: no dunder or private attributes (``x.__class__``, ``torch._C``), no ``global``,
  no ``eval``/``exec``/``open``/``globals``/..., no metaclasses or dunder methods other than ``__init__``,
  ``__post_init__`` and ``__repr__`` (an object cannot lie to ``==`` or ``<``), imports from an allow-list only
  (torch, numpy, math, the course's own modules, ...), and none of the names that load code, reach raw memory
  or install global hooks (``torch.load``, ``as_strided``, ``register_forward_hook``, ...).
* **Guarded while they run**: every attribute read goes through :func:`_read` (it refuses modules that are not on
  the allow-list, such as ``torch.sys``, and frames or code objects), every attribute write through
  :func:`_writable` (modules, classes and functions of the course or of torch cannot be patched), and an audit hook
  refuses files, processes, sockets, ``ctypes``, ``gc``, pickles and new code while student code is on the stack.
* **Kept apart**: the student's functions see their own globals, plus the names the lab's set-up cells defined
  and the graded names (read through from the tests' namespace, so a test can swap in the course's version of a
  part, as Lab 3 does); they never see the tests' own variables.

Python is not a sandbox: these rules close the known ways for a student's function to reach the tests, and the
operating-system sandbox (helpers.course.sandbox) keeps everything else out of reach whatever happens in here.
"""

from __future__ import annotations
import __future__

import ast
import builtins
import os
import re
import sys
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import BuiltinFunctionType, CodeType, FrameType, FunctionType, MethodType, ModuleType, TracebackType
from typing import Any

STUDENT_FILE = "<student "  # the filename prefix of every code object compiled from a student's cell
STUDENT_MODULE = "__student__"  # the __module__ of a student's classes
DEFERRED_ANNOTATIONS = __future__.annotations.compiler_flag

ALLOWED_MODULES = frozenset({
    "abc", "bisect", "cmath", "collections", "collections.abc", "copy", "dataclasses", "enum", "functools", "heapq",
    "itertools", "math", "numbers", "random", "statistics", "string", "time", "typing", "warnings",
    "numpy", "numpy.fft", "numpy.linalg", "numpy.random", "einops", "tqdm", "tqdm.auto",
    "torch", "torch.autograd", "torch.cuda", "torch.distributions", "torch.fft", "torch.linalg", "torch.nn",
    "torch.nn.functional", "torch.nn.init", "torch.nn.utils", "torch.optim", "torch.optim.lr_scheduler",
    "torch.random", "torch.special", "helpers",
})
# helpers.* is the course: every module of it, except the machinery that grades (helpers.course) and private ones.
COURSE_PACKAGE = "helpers"
MACHINERY = "course"

# Attribute names no graded code may use, on any object: they load code or pickles, reach raw memory, change
# global state the tests rely on, install hooks that would run later inside the tests, or look into frames.
DENIED_ATTRIBUTES = frozenset({
    # load code, pickles or modules by path; patch a class through a library function
    "load", "loads", "compile", "jit", "library", "ops", "overrides", "fx", "cpp_extension", "package", "hub",
    "make_dataclass", "get_type_hints", "ForwardRef", "data_script", "update_wrapper", "wraps",
    # raw memory, files and buffers
    "from_file", "fromfile", "tofile", "memmap", "frombuffer", "from_dlpack", "ctypeslib", "ctypes", "as_strided",
    "as_strided_", "set_", "data_ptr", "untyped_storage", "storage", "share_memory_",
    # global state the tests rely on, and hooks that would run later inside the tests
    "graph", "saved_tensors_hooks", "set_default_dtype", "set_default_tensor_type", "set_default_device",
    "use_deterministic_algorithms", "set_num_threads", "set_num_interop_threads", "set_printoptions",
    "set_flush_denormal", "set_warn_always",
    # frames and code
    "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "tb_frame", "tb_next", "gi_frame", "gi_code",
    "cr_frame", "cr_code", "ag_frame", "ag_code", "co_code", "cell_contents",
})
# register_forward_hook, register_hook, ...; save, save_hf, save_pretrained (some write through C, past the audit hook)
DENIED_PATTERN = re.compile(r"hook|^save", re.IGNORECASE)
ALLOWED_DUNDER_ATTRIBUTES = frozenset({"__init__", "__name__"})
# Functions that add methods to the class they are given: only as the decorator of a student's own class.
CLASS_DECORATORS = frozenset({"dataclass", "total_ordering"})
ALLOWED_DUNDER_METHODS = frozenset({"__init__", "__post_init__", "__repr__"})
DENIED_BUILTINS = frozenset({
    "eval", "exec", "compile", "open", "input", "breakpoint", "globals", "locals", "vars", "exit", "quit", "help",
    "copyright", "credits", "license", "memoryview", "id", "aiter", "anext",
})
# Events an audit hook refuses while a student's code is on the stack (prefixes end with a dot).
DENIED_EVENTS = (
    "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty", "os.kill", "os.killpg",
    "os.putenv", "os.unsetenv", "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link",
    "os.chmod", "os.chown", "os.chdir", "os.truncate", "os.utime", "os.setxattr", "os.removexattr",
    "subprocess.", "pty.", "socket.", "ctypes.", "gc.", "pickle.", "mmap.", "resource.", "signal.",
    "shutil.", "tempfile.", "urllib.", "http.", "ftplib.", "smtplib.", "webbrowser.", "sqlite3.", "cpython.",
    "sys.settrace", "sys.setprofile", "sys.addaudithook", "sys._current_frames", "sys.monitoring",
    "object.__setattr__", "object.__delattr__", "function.__new__", "code.__new__", "builtins.input",
)
# Where new code may come from while a student's code runs: imports (of allowed, read-only modules), @dataclass
# and namedtuple (they generate a class's methods).
CODE_EVENTS = ("exec", "compile", "marshal.loads")
IMPORTS = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")
CODE_GENERATORS = (*IMPORTS, "dataclasses.py", "collections/__init__.py")
# typing compiles (never runs) a string annotation the first time a library builds a forward reference to it, as
# torch's profiler does on the first Optimizer.zero_grad(): allowed for "compile" only, so a student's function that
# is first to reach such a library call is not refused, while evaluating the reference (an "exec") still is.
TYPING_FILE = typing.__file__
GENERATED_NAMES = frozenset({"__module__", "__qualname__", "__doc__"})
DENIED_ROOTS = ("/proc", "/sys", "/dev")  # prefixes that may not be opened at all (memory, devices)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class Refused(PermissionError):
    """A student's code tried something graded code may not do (an OSError, so that library code that expects a
    file system error, such as a lazy import that cannot write its cache, carries on)."""


def module_allowed(name: str) -> bool:
    """Whether graded code may import or hold the module ``name``."""
    if name in ALLOWED_MODULES or any(name.startswith(p + ".") for p in ("torch.distributions", "numpy.random")):
        return True
    parts = name.split(".")
    return parts[0] == COURSE_PACKAGE and len(parts) > 1 and parts[1] != MACHINERY and not parts[1].startswith("_")


def attribute_problem(name: str, on_self: bool = False) -> str | None:
    """Why graded code may not use the attribute ``name`` (None if it may)."""
    if name.startswith("__") and name.endswith("__"):
        return None if name in ALLOWED_DUNDER_ATTRIBUTES else f"the attribute {name}"
    if name.startswith("_") and not on_self:
        return f"the private attribute {name}"
    if name in DENIED_ATTRIBUTES or DENIED_PATTERN.search(name):
        return f"`.{name}`"
    return None


# ---------------------------------------------------------------------------------------------------- run time


def _is_student_class(obj: Any) -> bool:
    return isinstance(obj, type) and obj.__dict__.get("__module__") == STUDENT_MODULE


def _read(obj: Any, name: str) -> Any:
    """``obj.name`` for graded code: the value, unless it is a module off the allow-list, a frame or a metaclass."""
    if isinstance(obj, (FrameType, CodeType, TracebackType)):
        raise Refused(f"graded code may not look inside {type(obj).__name__} objects")
    return _checked(getattr(obj, name))


def _checked(value: Any) -> Any:
    if isinstance(value, ModuleType) and not module_allowed(value.__name__):
        raise Refused(f"graded code may not use the module {value.__name__}")
    if isinstance(value, (FrameType, CodeType, TracebackType)):
        raise Refused(f"graded code may not use {type(value).__name__} objects")
    if isinstance(value, type) and issubclass(value, type):
        raise Refused("graded code may not use metaclasses")
    if id(value) in _DENIED_VALUES:
        raise Refused(f"graded code may not use {getattr(value, '__name__', 'this function')}")
    return value


def _writable(obj: Any) -> Any:
    """``obj`` itself if graded code may set or delete its attributes (not a module, a course class, a function)."""
    if isinstance(obj, (ModuleType, FunctionType, BuiltinFunctionType, MethodType, property)) or (
            isinstance(obj, type) and not _is_student_class(obj)):
        raise Refused(f"graded code may not change {getattr(obj, '__name__', type(obj).__name__)}")
    return obj


def _name_check(obj: Any, name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"attribute name must be a string, not {type(name).__name__}")
    problem = attribute_problem(name, on_self=not isinstance(obj, type) and _is_student_class(type(obj)))
    problem = problem or (f"`{name}` other than as a class decorator" if name in CLASS_DECORATORS else None)
    if problem:
        raise Refused(f"graded code may not use {problem}")
    return name


def _getattr(obj: Any, name: str, *default: Any) -> Any:
    return _checked(getattr(obj, _name_check(obj, name), *default))


def _setattr(obj: Any, name: str, value: Any) -> None:
    setattr(_writable(obj), _name_check(obj, name), value)


def _delattr(obj: Any, name: str) -> None:
    delattr(_writable(obj), _name_check(obj, name))


def _type(*args: Any) -> type:
    if len(args) != 1:
        raise Refused("graded code may not create classes with type(name, bases, namespace)")
    return _checked(type(args[0]))


def _build_class(body: Callable, name: str, *bases: Any, **keywords: Any) -> type:
    """``class`` statements of graded code: no metaclass, and no subclass of a tensor, an array or a class."""
    if keywords:
        raise Refused("graded code may not use class keywords (metaclass=...)")
    for base in bases:
        if isinstance(base, type) and issubclass(base, (type, *_VALUE_TYPES)):
            raise Refused(f"graded code may not subclass {base.__name__} (such an object could lie to the checks)")
    return builtins.__build_class__(body, name, *bases)


def _import(name: str, globals: Any = None, locals: Any = None, fromlist: Iterable[str] | None = (),
            level: int = 0) -> ModuleType:
    if level:
        raise Refused("graded code may not use relative imports")
    if not module_allowed(name):
        raise Refused(f"graded code may not import {name}")
    top = builtins.__import__(name, None, None, (), 0)
    module = sys.modules[name]
    for item in fromlist or ():
        problem = "*" if item == "*" else attribute_problem(item)
        if problem:
            raise Refused(f"graded code may not import {problem} from {name}")
        if not hasattr(module, item) and not module_allowed(f"{name}.{item}"):
            raise Refused(f"graded code may not import {name}.{item}")
    if not fromlist:
        return top
    module = builtins.__import__(name, None, None, fromlist, 0)
    for item in fromlist:
        _checked(getattr(module, item, None))
    return module


def _denied_values() -> set[int]:
    values: list[Any] = [getattr(builtins, n) for n in DENIED_BUILTINS if hasattr(builtins, n)]
    values += [builtins.getattr, builtins.setattr, builtins.delattr, builtins.__import__, builtins.__build_class__]
    values += [getattr(sys.modules.get("operator"), n, None) for n in ("attrgetter", "methodcaller")]
    return {id(v) for v in values if v is not None}


_DENIED_VALUES = _denied_values()
_VALUE_TYPES = tuple(t for t in (getattr(sys.modules.get("torch"), "Tensor", None),
                                 getattr(sys.modules.get("numpy"), "ndarray", None)) if t is not None)
SAFE_BUILTINS: dict[str, Any] = {
    **{n: getattr(builtins, n) for n in dir(builtins) if not n.startswith("_") and n not in DENIED_BUILTINS},
    "__build_class__": _build_class, "__import__": _import, "getattr": _getattr, "setattr": _setattr,
    "delattr": _delattr, "type": _type,
}


def install_audit_hook() -> None:
    """Refuse files, processes, sockets, ctypes, gc, pickles and new code while a student's code is running.

    What an import does is allowed (it runs a module of the read-only environment), and so is the code that
    ``@dataclass`` and ``namedtuple()`` generate: the nearest of those frames or a student's decides."""
    def nearest(generators: tuple[str, ...]) -> str | None:
        frame = sys._getframe(2)
        while frame is not None:
            filename = frame.f_code.co_filename
            if filename.startswith(STUDENT_FILE):
                return "student"
            if filename.endswith(generators):
                return "trusted"
            frame = frame.f_back
        return None

    def hook(event: str, args: tuple) -> None:
        generators = IMPORTS
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            reading = set(mode) <= set("rbt") if isinstance(mode, str) else not (flags or 0) & WRITE_FLAGS
            if isinstance(path, str) and not path.startswith(DENIED_ROOTS) and reading:
                return
        elif event in CODE_EVENTS:
            generators = (*CODE_GENERATORS, TYPING_FILE) if event == "compile" else CODE_GENERATORS
        elif event in ("object.__setattr__", "object.__delattr__"):
            target, name = args[0], args[1]
            if _is_student_class(target) or (isinstance(target, FunctionType)
                                             and target.__code__.co_filename == "<string>"):
                return  # @dataclass sets the methods of the class it decorates, and the names of those methods
            if name in GENERATED_NAMES:
                generators = CODE_GENERATORS  # namedtuple() names the class it made after the caller's module
        elif not event.startswith(DENIED_EVENTS):
            return
        if nearest(generators) == "student":
            raise Refused(f"graded code may not do this ({event})")

    sys.addaudithook(hook)


# ------------------------------------------------------------------------------------------------- load time


class Checker(ast.NodeVisitor):
    """The first reason a top-level statement may not be loaded (``problem``), or None."""

    def __init__(self) -> None:
        self.problem: str | None = None
        self.decorators: set[int] = set()  # ids of the nodes that decorate a class

    def refuse(self, node: ast.AST, what: str) -> None:
        if self.problem is None:
            self.problem = f"line {getattr(node, 'lineno', '?')} uses {what}, which graded code may not use"

    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if name in DENIED_BUILTINS or (name.startswith("__") and name != "__name__"):
            self.refuse(node, f"`{name}`")
        if name in CLASS_DECORATORS and id(node) not in self.decorators and isinstance(node.ctx, ast.Load):
            self.refuse(node, f"`{name}` other than as a class decorator")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.generic_visit(node)  # x.__class__.__bases__: name the first one
        on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
        problem = attribute_problem(node.attr, on_self)
        if node.attr in CLASS_DECORATORS and id(node) not in self.decorators:
            problem = problem or f"`.{node.attr}` other than as a class decorator"
        if problem:
            self.refuse(node, problem)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not module_allowed(alias.name):
                self.refuse(node, f"the module {alias.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not module_allowed(node.module or ""):
            self.refuse(node, f"the module {'.' * node.level}{node.module or ''}")
        for alias in node.names:
            problem = "`import *`" if alias.name == "*" else attribute_problem(alias.name)
            if problem:
                self.refuse(node, problem)

    def visit_Global(self, node: ast.Global) -> None:
        self.refuse(node, "`global`")

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id == "type" and len(node.args) + len(node.keywords) != 1:
            self.refuse(node, "type(name, bases, namespace)")
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if node.name.startswith("__") and node.name not in ALLOWED_DUNDER_METHODS:
            self.refuse(node, f"the special method {node.name}")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if node.keywords:
            self.refuse(node, "class keywords (metaclass=...)")
        for decorator in node.decorator_list:  # @dataclass, @dataclasses.dataclass(frozen=True)
            self.decorators.add(id(decorator.func if isinstance(decorator, ast.Call) else decorator))
        self.generic_visit(node)


class Guard(ast.NodeTransformer):
    """Route attribute reads through ``__read__`` and the objects of attribute writes through ``__writable__``."""

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Load):
            call = ast.Call(ast.Name("__read__", ast.Load()), [node.value, ast.Constant(node.attr)], [])
            return ast.copy_location(call, node)
        node.value = ast.copy_location(ast.Call(ast.Name("__writable__", ast.Load()), [node.value], []), node)
        return node


DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
ASSIGNMENTS = (ast.Assign, ast.AnnAssign)


def bound_names(stmt: ast.stmt) -> set[str]:
    """The names a top-level statement binds."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
    return {n.id for t in targets if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)}


def strip_magics(source: str) -> str:
    """IPython magics and shell lines (``%time``, ``!pip``) become ``pass`` (the line numbers stay)."""
    return "\n".join(line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!"))
                     else line for line in source.splitlines())


@dataclass
class CellReport:
    """What loading one cell did: which names it defined, which it could not, and what it skipped."""

    defined: set[str] = field(default_factory=set)
    not_loaded: dict[str, str] = field(default_factory=dict)  # name -> why
    skipped: list[str] = field(default_factory=list)  # one line per statement that was not run


def _loaded(stmt: ast.stmt, definitions_only: bool) -> bool:
    """Whether a top-level statement is loaded: imports, definitions, assignments (in a cell the student added, only
    those that call nothing: constants, not the rerun of an experiment)."""
    if isinstance(stmt, DEFINITIONS):
        return True
    if not isinstance(stmt, ASSIGNMENTS):
        return False
    return not definitions_only or stmt.value is None or not any(isinstance(n, ast.Call) for n in ast.walk(stmt.value))


def plan(source: str, definitions_only: bool = False) -> tuple[list[ast.stmt], CellReport]:
    """The statements of a cell that will be loaded (checked and guarded), and what was left out."""
    report = CellReport()
    try:
        tree = ast.parse(strip_magics(source))
    except SyntaxError as exc:
        report.skipped.append(f"the cell has a syntax error on line {exc.lineno}: {exc.msg}")
        return [], report
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        report.skipped.append(f"the cell cannot be read as Python ({type(exc).__name__})")
        return [], report
    kept = []
    loads = "definitions and constants" if definitions_only else "definitions and assignments"
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring
        if not _loaded(stmt, definitions_only):
            text = ast.unparse(stmt).splitlines()[0]
            report.skipped.append(f"line {stmt.lineno} (`{text[:60]}`) was not run: the grader loads only imports, "
                                  f"{loads}")
            continue
        checker = Checker()
        try:
            checker.visit(stmt)
        except RecursionError:
            checker.problem = f"line {stmt.lineno} is nested too deeply to be checked"
        if checker.problem:
            for name in bound_names(stmt):
                report.not_loaded[name] = checker.problem
            continue
        kept.append(Guard().visit(stmt))
    return kept, report


class StudentGlobals(dict):
    """A student's globals: their own names, then (read through) the names the lab lets them see."""

    def __init__(self, lab: dict[str, Any], visible: Callable[[], set[str]]) -> None:
        super().__init__(__builtins__=SAFE_BUILTINS, __name__=STUDENT_MODULE, __read__=_read,
                         __writable__=_writable)
        self.lab, self.visible = lab, visible
        sys.modules.setdefault(STUDENT_MODULE, ModuleType(STUDENT_MODULE))  # @dataclass looks its module up

    def __missing__(self, name: str) -> Any:
        if name in self.visible() and name in self.lab:
            return self.lab[name]
        raise KeyError(name)


def load_cell(source: str, label: str, student: StudentGlobals, graded: Iterable[str],
              definitions_only: bool = False) -> CellReport:
    """Load one student cell into ``student``; export the graded names it defines into ``student.lab``."""
    statements, report = plan(source, definitions_only)
    own = {n for n in student if not n.startswith("__")}
    # Module-level code looks names up in the dict itself (not through __missing__): copy what it may see.
    student.update({n: student.lab[n] for n in student.visible()
                    if n in student.lab and n not in own and not n.startswith("__")})
    before = dict(student)
    for stmt in statements:
        module = ast.fix_missing_locations(ast.Module([stmt], []))
        try:
            # deferred annotations: a signature may name a class defined further down, as in the lab
            code = compile(module, f"{STUDENT_FILE}{label}>", "exec", flags=DEFERRED_ANNOTATIONS, dont_inherit=True)
            exec(code, student)
        except BaseException as exc:  # noqa: BLE001 - the definition itself failed (a decorator, a default value, a class body)
            for name in bound_names(stmt):
                report.not_loaded[name] = f"defining it raised {type(exc).__name__}: {str(exc)[:150]}"
    for name in [n for n in student if not n.startswith("__")]:
        changed = name not in before or student[name] is not before[name]
        if changed:
            report.defined.add(name)
        if name in graded and changed:
            student.lab[name] = student.pop(name)
        elif name not in own and not changed:
            del student[name]  # a copy made above: read it through again
    return report

