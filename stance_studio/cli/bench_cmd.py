"""``bench``: the performance figures of DESIGN.md, each a ratio to its baseline."""

from __future__ import annotations

from stance_studio.cli.common import add_common, emit, progress_bar, sigint_cancel


def register(sub) -> None:
    from stance_studio.core.bench import BENCHMARKS

    p = sub.add_parser("bench", help="measure the performance figures (ratios against their baselines)")
    add_common(p, suppress=True)
    p.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only these figures")
    p.add_argument("--repeats", type=int, default=5, help="repeats per timing (the median is reported)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from stance_studio.core.bench import BENCHMARKS

    cancel = sigint_cancel()
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
        lines.append(f"{name:<16} {fig['seconds'] * 1000:9.1f} ms  vs {fig['baseline']}: "
                     f"{fig['baseline_seconds'] * 1000:9.1f} ms  ratio {fig['ratio']:6.1f}x  "
                     f"({mark} target: {fig['target']})")
    emit(args, doc, "\n".join(lines))
    return 0
