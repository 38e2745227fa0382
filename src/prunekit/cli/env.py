"""prunekit env: versions, for bug reports."""
from prunekit.cli._args import check_outputs, write_json


def add(add_parser, common):
    p = add_parser("env", parents=[common], help="versions, for bug reports")
    p.add_argument("--json")
    p.set_defaults(func=run)


def run(args):
    from prunekit._utils.environment import environment
    check_outputs(files=[args.json])
    info = environment()
    for key, value in info.items():
        print(f"{key:>10}: {value}")
    if args.json:
        write_json(args.json, info)
