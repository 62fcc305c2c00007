"""``galmo demo``: every capability on the embedded default sample → :func:`galmo.methods.demo.run_demo`."""

from __future__ import annotations


def register(sub) -> None:
    from galmo.core.config import HELP
    from galmo.methods.demo import SECTIONS

    p = sub.add_parser("demo", help="run every capability on the embedded default sample and write a report")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="run folder (default: runs/demo)")
    p.add_argument("--data", default=None, metavar="SOURCE",
                   help=f"{HELP['data']} (default: the embedded simulated sample)")
    p.add_argument("--only", nargs="+", default=None, choices=SECTIONS, metavar="SECTION",
                   help=f"only these sections, of {', '.join(SECTIONS)} (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds, for smoke tests)")
    p.set_defaults(func=cmd_demo, out_kind="dir")


def cmd_demo(args) -> int:
    from galmo.methods.demo import run_demo

    res = run_demo(args.out, data=args.data, only=args.only, quick=args.quick)
    print(f"report: {res['report']}")
    return 1 if res["failed"] else 0
