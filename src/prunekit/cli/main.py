"""prunekit's command line: each command module holds its parser and its run function; this
builds the parser from them, sets up logging, and decides how an error is shown.

Errors that are the user's to fix (PruneError, a bad argument, a path that cannot be read or
written) are one line and exit 2. Anything else is a bug: its traceback, and exit 1."""
import argparse
import logging
import sys
import traceback

from prunekit.cli import (
    bench,
    compare,
    data,
    env,
    evaluate,
    export,
    finetune,
    llm,
    prune,
    report,
    run,
    search,
    sensitivity,
)
from prunekit.errors import PruneError

COMMANDS = (compare, run, report, prune, finetune, evaluate, bench, export, sensitivity, search, llm, data, env)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming where the full usage is (exit 2), not
    the whole usage block; --help still prints it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


class _CommandParser(Parser):
    """A command's parser (subparsers of subparsers too): arguments it does not know are its
    own error, so the message points at its --help rather than the top level's."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser():
    parser = Parser(prog="prunekit", description="Prune PyTorch models and measure what it bought.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)
    for command in COMMANDS:
        command.add(sub.add_parser, common)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.quiet:
        from rich.logging import RichHandler
        logging.basicConfig(level=logging.INFO, format="%(message)s",
                            handlers=[RichHandler(show_path=False, console=None)])
    try:
        args.func(args)
    except PruneError as err:
        return _user_error(str(err))
    except OSError as err:
        if err.filename is None:  # not about a path the user named: a bug until shown otherwise
            return _bug()
        return _user_error(f"{type(err).__name__}: {err}")
    except KeyboardInterrupt:
        print("prunekit: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug: never dressed up as the user's mistake
        return _bug()
    return 0


def _user_error(message) -> int:
    print(f"prunekit: error: {message}", file=sys.stderr)
    return 2


def _bug() -> int:
    traceback.print_exc()
    print("prunekit: this is a bug in prunekit, not in your input; please report it with the "
          "traceback above and the output of `prunekit env`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
