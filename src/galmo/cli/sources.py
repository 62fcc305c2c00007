"""``galmo info`` and ``galmo show``: a source's summary and a montage of it (:mod:`galmo.sources.summary`)."""

from __future__ import annotations


def register(sub) -> None:
    from galmo.cli import add_common, add_source

    p = sub.add_parser("info", help="summarise a source: count, shape, bands, classes, NaN fraction")
    add_source(p)
    add_common(p, on_error=True)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("show", help="write a labelled montage of a source")
    add_source(p)
    p.add_argument("--out", required=True, metavar="FILE",
                   help="output PNG (with --on-error skip, skipped items go to <stem>.rejected.csv beside it)")
    p.add_argument("--n", type=int, default=32, help="number of galaxies (default: 32)")
    p.add_argument("--ids", nargs="+", default=None, metavar="ID",
                   help="show these ids instead of --n random galaxies (default: none)")
    p.add_argument("--ncols", type=int, default=8, help="galaxies per row of the montage (default: 8)")
    add_common(p, on_error=True, seed=True)
    p.set_defaults(func=cmd_show, out_kind="file")


def cmd_info(args) -> int:
    from galmo.sources.summary import describe

    print(describe(args.path, on_error=args.on_error))
    return 0


def cmd_show(args) -> int:
    from galmo.sources.summary import show

    out, n = show(args.path, args.out, n=args.n, ids=args.ids, ncols=args.ncols, seed=args.seed,
                  on_error=args.on_error)
    print(f"wrote {out} ({n} galaxies)")
    return 0
