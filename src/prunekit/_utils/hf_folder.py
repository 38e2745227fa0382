"""Reading a Hugging Face model folder the user named (hf:DIR, `llm prune --model DIR`).

transformers, json and safetensors refuse a cut-off or invalid config.json, a folder without
weights, a damaged weights file or a missing tokenizer with their own exceptions (OSError,
ValueError and its JSONDecodeError, KeyError, SafetensorError, huggingface_hub's
StrictDataclassError for a config field of the wrong type) and a traceback; `reading` turns
each into one PruneError naming the folder and the cause. Nothing is written while reading, so
the folder is left as it was."""
import contextlib

from prunekit.errors import PruneError


@contextlib.contextmanager
def reading(folder, what: str = "a Hugging Face model folder"):
    """Run the block that reads `folder`; a refusal of its files is one PruneError line."""
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError
    try:
        yield
    except PruneError:
        raise
    except (OSError, ValueError, KeyError, SafetensorError, StrictDataclassError) as err:
        raise PruneError(f"{folder}: cannot read it as {what} ({first_line(err)})") from None


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (transformers' run to paragraphs), or its type."""
    text = str(err).strip()
    if isinstance(err, KeyError) and err.args:  # str(KeyError('x')) is "'x'": say what it is
        text = f"missing {err.args[0]!r}"
    if not text:
        return type(err).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # "Validation error for field 'x':" says where, the line after it what
    return f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
