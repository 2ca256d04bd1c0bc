"""How ``evaluate`` reads in a terminal: every figure with its 95 % interval, an
unreliable stance rate said to be unreliable, and optionally one line per probe
category."""

from __future__ import annotations

from stance_studio.core.stance_classifier import RELIABLE_ACCURACY


def _ci(ci, fmt: str) -> str:
    return f" [{format(ci[0], fmt)}, {format(ci[1], fmt)}]" if ci else ""


def _stance_lines(doc: dict) -> list[str]:
    if not doc.get("stance"):
        return ["  stance rate / stance fit: no stance to score against (base, or a checkpoint whose training dataset "
                "cannot be found): pass --stance NAME"]
    acc = doc.get("classifier_accuracy")
    acc_text = "not measurable (too few examples)" if acc is None else f"{acc:.2f}"
    if doc.get("stance_rate_reliable"):
        rate = f"{doc['stance_rate']:.2f}{_ci(doc.get('stance_rate_ci95'), '.2f')}"
    else:
        rate = (f"unreliable: the classifier tells this stance from base with accuracy {acc_text}, below "
                f"{RELIABLE_ACCURACY:.2f} (measured {doc['stance_rate']:.2f}, not a finding)"
                if doc.get("stance_rate") is not None else "unavailable")
    fit = doc.get("stance_fit_nats")
    lines = [f"  against stance {doc['stance']} ({doc.get('stance_source', '')})",
             f"  stance rate  {rate}   (classifier cross-validated accuracy {acc_text})",
             f"  stance fit   {'–' if fit is None else format(fit, '+.3f')}{_ci(doc.get('stance_fit_ci95'), '+.3f')} "
             f"nats/token on {doc.get('stance_fit_examples', 0)} {doc.get('stance_fit_split', '')} examples"]
    if doc.get("stance_fit_train_nats") is not None:
        lines[-1] += f"; {doc['stance_fit_train_nats']:+.3f} on the training examples"
    if doc.get("stance_rate_strict") is not None:
        lines.insert(2, f"  strict rate  {doc['stance_rate_strict']:.2f}{_ci(doc.get('stance_rate_strict_ci95'), '.2f')}"
                        "   (answers in the stance that do not loop)"
                        + ("" if doc.get("stance_rate_reliable") else "; unreliable, as the stance rate"))
    return lines


def evaluate_text(spec: str, model: str, doc: dict, by_category: bool = False) -> str:
    lines = [f"{spec} on {doc['probes']} probe prompts ({model}); [low, high] = 95 % interval"]
    lines += _stance_lines(doc)
    cap = doc.get("capability")
    if cap:
        lines.append(f"  capability   perplexity {cap['perplexity']:.2f} vs base {cap['perplexity_base']:.2f}: "
                     f"{cap['change']:+.1f} %{_ci(cap.get('change_ci95'), '+.1f')} on {cap['tokens']} tokens")
    lines += [
        f"  KL to base   {doc['kl_to_base']:.4f}{_ci(doc.get('kl_to_base_ci95'), '.4f')}   identical to base "
        f"{doc['identical_fraction']:.0%}{_ci(doc.get('identical_fraction_ci95'), '.0%')}",
        f"  markers      hedges {doc['hedges_per_100w']:.2f}, boosters {doc['boosters_per_100w']:.2f} per 100 words; "
        f"score {doc['stance_score']:+.2f}{_ci(doc.get('stance_score_ci95'), '+.2f')}",
    ]
    if doc.get("looping_fraction") is not None:
        lines.append(f"  looping      {doc['looping_fraction']:.0%}{_ci(doc.get('looping_fraction_ci95'), '.0%')} of the "
                     "answers repeat themselves")
    if by_category and doc.get("by_category"):
        lines.append("  by category:")
        width = max(len(c) for c in doc["by_category"])
        for cat, v in doc["by_category"].items():
            rate = "" if v.get("stance_rate") is None else \
                f"stance rate {v['stance_rate']:.2f}{_ci(v.get('stance_rate_ci95'), '.2f')}  "
            lines.append(f"    {cat.ljust(width)}  {v['probes']:3d} probes  {rate}KL {v['kl_to_base']:.4f}  "
                         f"identical {v['identical_fraction']:.0%}  marker score {v['stance_score']:+.2f}")
    if doc.get("samples"):
        s = doc["samples"][0]
        lines.append(f"  e.g. {s['prompt']!r} → {s['text'].strip()[:200]!r}")
    return "\n".join(lines)
