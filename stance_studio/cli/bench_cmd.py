"""``bench``: the performance figures of DESIGN.md, each a ratio to its baseline."""

from __future__ import annotations

import os

from stance_studio.cli.common import add_common, emit, human_bytes, progress_bar, sigint_cancel


def register(sub) -> None:
    from stance_studio.core.bench import BENCHMARKS

    p = sub.add_parser("bench", help="measure the performance figures (ratios against their baselines)")
    add_common(p, suppress=True)
    p.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only these figures")
    p.add_argument("--repeats", type=int, default=5, help="repeats per timing (the median is reported)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from stance_studio.core.bench import BENCHMARKS, MAX_REPEATS
    from stance_studio.core.errors import SettingsError

    if args.repeats < 1:
        raise SettingsError(f"--repeats must be at least 1 (got {args.repeats}).")
    if args.repeats > MAX_REPEATS:
        raise SettingsError(f"--repeats must be at most {MAX_REPEATS} (got {args.repeats}).")
    cancel = sigint_cancel()
    # every model the benchmarks load (in this process and in child processes) runs there
    for option, variable in (("device", "STANCE_STUDIO_DEVICE"), ("dtype", "STANCE_STUDIO_DTYPE")):
        if getattr(args, option, None):
            os.environ[variable] = getattr(args, option)
    names = args.only or list(BENCHMARKS)
    doc = {}
    for name in names:
        doc[name] = BENCHMARKS[name](getattr(args, "model", None), repeats=args.repeats,
                                     progress=progress_bar(name), cancel=cancel)
    lines = []
    for name, fig in doc.items():
        if "skipped" in fig:
            lines.append(f"{name:<16} skipped: {fig['skipped']}")
            continue
        mark = "meets" if fig.get("meets_target") else "MISSES"
        lines.append(f"{name:<16} {_amount(fig['value'], fig['unit'])}  vs {fig['baseline']}: "
                     f"{_amount(fig['baseline_value'], fig['unit'])}  ratio {_ratio(fig['ratio'])}  "
                     f"({mark} target: {fig['target']})")
    emit(args, doc, "\n".join(lines))
    return 0


def _amount(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:9.1f} ms"
    if unit == "bytes":
        return f"{human_bytes(int(value)):>9}"
    return f"{value:9.4g} {unit}"


def _ratio(ratio) -> str:
    return "     -" if ratio is None else f"{ratio:6.2f}x"
