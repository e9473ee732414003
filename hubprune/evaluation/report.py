"""Readable views of a results.json document: rows for tables (CLI, model card, job summaries)."""
from __future__ import annotations

from dataclasses import dataclass

# healed: the pruned model after healing (then the output); it has the pruned shapes, so no speed of its own
ROLES = ("dense", "pruned", "healed")


@dataclass
class Row:
    kind: str  # perplexity | downstream | speed
    name: str  # corpus, task, or speed measurement
    metric: str
    dense: float | None
    pruned: float | None
    healed: float | None
    note: str  # protocol in a few words
    higher_is_better: bool


def _source_note(protocol: dict) -> str:
    if protocol["source"] == "local":
        return f"{protocol['split']} split, local files"
    if protocol["source"] == "file":
        return "task file"
    return f"{protocol['split']} split, Hub"


def result_rows(doc: dict) -> list[Row]:
    rows = []
    for name, entry in doc["perplexity"].items():
        p = entry["protocol"]
        rows.append(Row("perplexity", name, "perplexity", *(entry.get(r, {}).get("perplexity") for r in ROLES),
                        f"{p['windows']} x {p['seq_len']} tokens, {p['mode']}", False))
    for name, entry in doc["downstream"].items():
        p = entry["protocol"]
        limit = f", limit {p['limit']:g}" if p["limit"] is not None else ""
        for metric in p["metrics"]:
            rows.append(Row("downstream", name, metric, *(entry.get(r, {}).get(metric) for r in ROLES),
                            f"0-shot, {_source_note(p)}{limit}", True))
    speed = doc.get("speed")
    if speed:
        p = speed["protocol"]
        rows.append(Row("speed", f"prefill {p['prefill_tokens']} tokens", "ms",
                        *(speed.get(r, {}).get("prefill_ms") for r in ROLES), p["device"], False))
        for batch in p["decode_batches"]:
            rows.append(Row("speed", f"decode batch {batch}", "tokens/s",
                            *(speed.get(r, {}).get("decode_tokens_per_second", {}).get(str(batch)) for r in ROLES),
                            p["device"], True))
        if any(speed.get(r, {}).get("peak_memory_bytes") for r in ROLES):
            rows.append(Row("speed", "peak GPU memory", "GiB",
                            *(_gib(speed.get(r, {}).get("peak_memory_bytes")) for r in ROLES),
                            p["device"], False))
    return rows


def roles_in(doc: dict) -> list[str]:
    return [r for r in ROLES if r in doc["models"]]


def published_role(doc: dict) -> str:
    """The role whose numbers describe the output: healed when it was healed, else pruned."""
    return "healed" if "healed" in doc["models"] else "pruned"


def _gib(value: int | None) -> float | None:
    return None if value is None else value / 2**30


def format_value(value: float | None, metric: str) -> str:
    """Accuracies in %, perplexities with 3 decimals, the rest with 2."""
    if value is None:
        return "-"
    if metric in ("acc", "acc_norm"):
        return f"{100 * value:.2f}"
    return f"{value:.3f}" if metric == "perplexity" else f"{value:.2f}"


def format_results(doc: dict) -> str:
    """A plain-text table: one line per number, dense and pruned side by side."""
    roles = roles_in(doc)
    lines = []
    for row in result_rows(doc):
        values = "  ".join(f"{r} {format_value(getattr(row, r), row.metric):>9}" for r in roles)
        lines.append(f"{row.kind:<10} {row.name:<24} {row.metric:<10} {values}   ({row.note})")
    summary = speed_summary(doc)
    if summary:
        lines.append(summary)
    return "\n".join(lines)


def speed_summary(doc: dict) -> str | None:
    """The dense-vs-pruned speed ratios of one run with their spread, and a caution where the numbers
    cannot carry a claim (a ratio below 1, or a prefill gain within the run-to-run spread)."""
    speed = doc.get("speed") or {}
    ratio = speed.get("pruned_vs_dense")
    if not ratio:
        return None
    dense, pruned, protocol = speed["dense"], speed["pruned"], speed["protocol"]
    decode = ", ".join(f"decode batch {b} {v:.2f}x" for b, v in ratio["decode_speedup"].items())
    text = (f"speed-up measured in this run on {protocol['device']}: prefill {ratio['prefill_speedup']:.2f}x "
            f"(dense {dense['prefill_ms']:.1f} ± {dense['prefill_ms_stdev']:.1f} ms, pruned {pruned['prefill_ms']:.1f} "
            f"± {pruned['prefill_ms_stdev']:.1f} ms: mean ± s.d. of {protocol['repeats']} timed passes), {decode} "
            f"(one timed run each); parameters x{ratio['parameter_ratio']:.3f}")
    within_spread = dense["prefill_ms"] - pruned["prefill_ms"] < dense["prefill_ms_stdev"] + pruned["prefill_ms_stdev"]
    if within_spread or min([ratio["prefill_speedup"], *ratio["decode_speedup"].values()]) < 1:
        text += (". Caution: a ratio below 1, or a gain within the spread, says the machine was busy or the "
                 "difference is noise, not that the model is slower; re-measure on an idle machine before quoting it")
    return text


def markdown_table(doc: dict) -> str:
    """The same numbers as a Markdown table (GitHub job summaries)."""
    roles = roles_in(doc)
    lines = ["| | metric | " + " | ".join(roles) + " | protocol |", "| --- | --- | " + "---: | " * len(roles) + "--- |"]
    for row in result_rows(doc):
        values = " | ".join(format_value(getattr(row, r), row.metric) for r in roles)
        lines.append(f"| {row.kind}: {row.name} | {row.metric} | {values} | {row.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Print a results.json as a table.")
    parser.add_argument("results", help="path to results.json")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table instead of text")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        doc = json.load(f)
    print(markdown_table(doc) if args.markdown else format_results(doc))


if __name__ == "__main__":
    main()
