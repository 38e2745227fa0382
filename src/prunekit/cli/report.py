"""prunekit report RUN_DIR: one self-contained HTML page of a compare or recipe run."""


def add(add_parser, common):
    p = add_parser("report", parents=[common], help="one self-contained HTML page of a run's results")
    p.add_argument("run_dir", help="a folder `prunekit compare` or `prunekit run` wrote")
    p.add_argument("--no-sensitivity", action="store_true",
                   help="skip the dense model's per-layer sensitivity (computed once, kept in sensitivity.json)")
    p.set_defaults(func=run)


def run(args):
    from prunekit.report import write_report
    path = write_report(args.run_dir, compute_sensitivity=not args.no_sensitivity)
    print(f"wrote {path}")
