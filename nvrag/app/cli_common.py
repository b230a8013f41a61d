"""What every `nvrag` command shares: the Typer app, consoles, common options, exit codes, and the one place
domain errors become a red line and exit code 2."""

from __future__ import annotations

import contextlib
import inspect
import json
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer._click import Context, Parameter
from typer.core import TyperCommand, TyperGroup
from typer.models import CommandFunctionType

from nvrag import __version__
from nvrag.app.settings import ENV_DB, ENV_DTYPE, ENV_MODEL, ENV_MODEL_MEMORY
from nvrag.errors import ConfigError, IndexBusyError, InputError, NvRagError, StorageError
from nvrag.indexer import StopFlag, reading
from nvrag.limits import MAX_RERANK_DEPTH

EXIT_OK = 0
EXIT_INPUT_FAILURES = 1
EXIT_USER_ERROR = 2
EXIT_REPORT_FAILED = 3  # the index was written, but its run report could not be
EXIT_PORT_IN_USE = 4  # serve/ui: the port is taken by another process (pass --port N)
EXIT_STORAGE = 5  # the data directory cannot be written (full disk, read-only, permissions): fix it, run again
EXIT_BUSY = 75  # another process is writing the index (sysexits' EX_TEMPFAIL: try again later)
EXIT_INTERRUPTED = 130  # the shell's convention for Ctrl-C


def _flags_take_no_value(params: list[Parameter]) -> list[Parameter]:
    """Typer's help prints `<bool>` beside a flag (--help included) as if it took a value; a flag takes none."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def reflow(text: str | None) -> str | None:
    """A docstring's paragraphs as single lines: Typer keeps the source's line breaks after the first paragraph,
    and Rich then wraps the lines again, leaving a word or two on every other line of --help."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


class _Command(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflow(self.help)

    def get_params(self, ctx: Context) -> list[Parameter]:
        return _flags_take_no_value(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx: Context) -> list[Parameter]:
        return _flags_take_no_value(super().get_params(ctx))


class _Typer(typer.Typer):
    """The app whose commands show flags as flags in --help."""

    def command(
        self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        return super().command(*args, cls=cls or _Command, **kwargs)


app = _Typer(
    cls=_Group,
    name="nvrag",
    help=(
        "Index documents with NV-Embed-v2 (or the bundled all-MiniLM-L6-v2) into LanceDB and search them.\n\n"
        "Exit codes: 0 success; 1 indexing finished but some inputs failed (listed in the report); "
        "2 a usage error or a user mistake (missing path, unknown index or model, model mismatch); "
        "3 the index was written but its run report could not be; 4 the port to serve on is in use; "
        "5 the data directory cannot be written (full, read-only): fix that and run the same command again; "
        "75 another process is writing the index (try again when it finishes); "
        "130 indexing stopped by Ctrl-C (run it again to continue)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db", envvar=ENV_DB, help="LanceDB data directory (default: the user data dir).", show_default=False
    ),
]
IndexOption = Annotated[str, typer.Option("--index", "-i", help="Name of the index.")]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        envvar=ENV_MODEL,
        help="Model name or 'auto' (NV-Embed-v2 on a CUDA GPU with its weights, else the bundled MiniLM). "
        "An existing index always uses its own model.",
        show_default=False,
    ),
]
ModelPathOption = Annotated[
    Path | None,
    typer.Option(
        "--model-path",
        help="Load the model from this checkpoint folder: NV-Embed, or a Qwen3/Qwen2/Mistral/Llama embedder with "
        "its sentence-transformers files (recognised by its own files; see docs/models.md). An index remembers it.",
        show_default=False,
    ),
]
DimensionsOption = Annotated[
    int | None,
    typer.Option(
        "--dimensions",
        min=1,
        help="Matryoshka models (Qwen3-Embedding, NVIDIA's Llama embedders): cut vectors to N dimensions, then "
        "normalise. An index records it; other models refuse it.",
        show_default=False,
    ),
]
DtypeOption = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        help="What the model computes in: float32 (exact), bfloat16, float16 (GPUs), or int8 (CPUs with VNNI or "
        "AMX: int8 weights, half of bfloat16's memory). Default: bfloat16 on CUDA and on CPUs with native bf16 "
        f"(AVX-512 BF16, AMX), else float32 (or set {ENV_DTYPE}).",
        show_default=False,
    ),
]
ModelMemoryOption = Annotated[
    float | None,
    typer.Option(
        "--model-memory",
        metavar="GIB",
        min=0.01,
        help="GiB the loaded models may take together; loading one more first unloads the least recently used. "
        f"Default: 80% of this machine's (or container's) memory (or set {ENV_MODEL_MEMORY}).",
        show_default=False,
    ),
]
QueryDtypeOption = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        help="What queries are computed in: float32 (exact), bfloat16, float16 (GPUs) or int8. Default: float32 with "
        "the bundled model on a CPU (a query is a few tokens; it then needs no torch), else as for documents: "
        f"bfloat16 on CUDA and on CPUs with native bf16, else float32 (or set {ENV_DTYPE}).",
        show_default=False,
    ),
]
RerankOption = Annotated[
    str | None,
    typer.Option(
        "--rerank",
        help="Rerank the first --rerank-depth candidates with this reranker: a checkpoint folder (BERT "
        "cross-encoder or Qwen3-Reranker style) or a known hub id in the Hugging Face cache.",
        show_default=False,
    ),
]
RerankModelOption = Annotated[
    str | None,
    typer.Option(
        "--rerank-model",
        help="Also serve this reranker (a checkpoint folder or a known hub id in the Hugging Face cache): "
        "searches may rerank with it.",
        show_default=False,
    ),
]
RerankDepthOption = Annotated[
    int,
    typer.Option(
        "--rerank-depth", min=1, max=MAX_RERANK_DEPTH, help="How many first-stage candidates the reranker scores."
    ),
]
RerankInstructionOption = Annotated[
    str | None,
    typer.Option(
        "--rerank-instruction",
        help="What relevance means to an LLM reranker (default: its own); cross-encoders take none.",
        show_default=False,
    ),
]
AllowedHosts = Annotated[
    list[str] | None,
    typer.Option(
        "--allowed-host",
        help="Also answer requests whose Host header names this (repeat the option; '*' answers any). "
        "By default a loopback server answers only localhost names and other binds only the bound address.",
        show_default=False,
    ),
]
AllowedOrigins = Annotated[
    list[str] | None,
    typer.Option(
        "--allowed-origin",
        help="A web origin (https://app.example) whose pages may call this server from a browser (CORS; repeat the "
        "option). By default no page of another origin may.",
        show_default=False,
    ),
]


def check_origins(origins: Sequence[str] | None) -> None:
    """``--allowed-origin`` values are origins (scheme://host[:port]), nothing more."""
    for origin in origins or ():
        if not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ConfigError(f"--allowed-origin {origin}: give an origin as scheme://host[:port], no path")


JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
TaskOption = Annotated[
    str | None, typer.Option("--task", "-t", help="Query instruction preset by task name, e.g. SciFact.")
]
InstructionOption = Annotated[
    str | None, typer.Option("--instruction", help="Free-text query instruction (instead of --task).")
]


# C0 and C1 controls but tab and newline (ESC starts terminal sequences), and the invisible bidi overrides
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def model_lines(reason: str, license: str, notes: Sequence[str] = (), computes: str = "") -> str:
    """``model: REASON (license L), computing in DTYPE (why)`` and the loaded model's notes, a line each."""
    dtype = f", computing in {safe(computes)}" if computes else ""
    return "\n".join([f"model: {safe(reason)} (license {safe(license)}){dtype}", *map(safe, notes)])


def safe(value: object) -> str:
    """Text from data or the user, ready for a Rich console: markup escaped, control characters shown as
    escapes (a document cannot restyle the terminal, write escape sequences or crash the markup parser)."""
    return escape(printable(value))


def printable(value: object) -> str:
    """``safe`` for a Rich ``Text`` (which reads no markup): control characters shown as escapes only."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 256 else f"\\u{ord(m[0]):04x}", str(value))


def require_extra(command: str, extra: str, modules: tuple[str, ...]) -> None:
    """One line naming the extra to install when a module ``command`` needs is missing, never a traceback."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise fail(
            f"nvrag {command} needs the {extra} extra ({', '.join(missing)} missing): pip install 'nvrag[{extra}]'"
        )


def fail(message: str, code: int = EXIT_USER_ERROR) -> typer.Exit:
    """Print one red error line (``message`` is data: escaped) and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {safe(message)}")
    return typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn nvrag's domain errors into one clear line and exit code 2 (75 when the index is busy); a file
    system error nobody anticipated becomes one line naming the path, never a traceback."""
    try:
        yield
    except IndexBusyError as exc:
        raise fail(str(exc), EXIT_BUSY) from None
    except StorageError as exc:
        raise fail(str(exc), EXIT_STORAGE) from None
    except NvRagError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise fail(f"{where}{exc.strerror or exc}") from None


INTERRUPT_NOTICE = "stopping after the batch in flight (Ctrl-C again to abort at once)"


@contextmanager
def interruptible() -> Iterator[StopFlag]:
    """A stop flag that the first Ctrl-C sets (the run stops after the batch in flight); a second one aborts."""
    stop = StopFlag()
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum: int, frame: object) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.set()
        # The handler runs between any two bytecodes of the main thread, possibly inside Rich's own first
        # import of its emoji table: plain text only (no markup or emoji parsing, so no lazy import), and a
        # failed notice never turns a clean stop into a traceback.
        with contextlib.suppress(Exception):  # the stop is already requested; the notice is a courtesy
            err.print(INTERRUPT_NOTICE, markup=False, emoji=False, highlight=False)

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def version_callback(value: bool) -> None:
    if value:
        out.print(f"nvrag {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """nvrag: retrieval with NV-Embed-v2 over LanceDB."""


def read_json_texts(path: Path) -> list[str]:
    """``--input FILE``: JSON lines, each a JSON string or an object with a 'text' string ('-': stdin); the file
    read through the indexer's bounded reader. InputError names the line that is neither."""
    if str(path) == "-":
        lines = sys.stdin.read().splitlines()
        where = "stdin"
    else:
        try:
            lines = reading.read_bytes(path).decode("utf-8").splitlines()
        except (OSError, ValueError) as exc:  # missing, not a regular file, too large, not UTF-8
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InputError(f"--input {path}: cannot read it ({reason})") from None
        where = str(path)
    texts: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(
                f"{where} line {number}: not JSON; each line must be a JSON string or an object with 'text'"
            ) from None
        if isinstance(value, dict) and isinstance(value.get("text"), str):
            texts.append(value["text"])
        elif isinstance(value, str):
            texts.append(value)
        else:
            raise InputError(f"{where} line {number}: expected a JSON string or an object with a 'text' string")
    return texts
