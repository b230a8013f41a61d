"""metrics.png: the recall@k curve and the distribution of per-query nDCG@10."""

from __future__ import annotations

from pathlib import Path

from nvrag.evaluation.runner import EvalResult


def save_plot(result: EvalResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    ks = sorted(result.recall_curve)
    left.plot(ks, [result.recall_curve[k] for k in ks], marker="o")
    left.set_xscale("log")
    left.set_xticks(ks, [str(k) for k in ks])
    left.set_ylim(0, 1)
    left.set_xlabel("k")
    left.set_ylabel("recall@k")
    left.set_title("Recall@k")
    left.grid(alpha=0.3)
    ndcg = [m["nDCG@10"] for m in result.per_query.values()]
    right.hist(ndcg, bins=20, range=(0, 1))
    right.axvline(
        result.metrics["nDCG@10"], color="black", linestyle="--", label=f"mean {result.metrics['nDCG@10']:.4f}"
    )
    right.set_xlabel("nDCG@10")
    right.set_ylabel("queries")
    right.set_title("Per-query nDCG@10")
    right.legend()
    chunking = "chunked" if result.chunked else "whole documents"
    fig.suptitle(
        f"{result.dataset} ({result.split}, {result.queries} queries): {result.model}, {result.mode}, {chunking}"
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)
