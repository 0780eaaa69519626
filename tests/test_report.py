"""`fnaf report`: table numbers from hand-made records, files written, Figure 1 re-run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fnaf_jax import stats
from fnaf_jax.cli import main
from fnaf_jax.errors import DataError
from fnaf_jax.report import load_results, summarize_records


def _rec(model, method, loss, ip, accepted, n_ok=11, n=11, **extra):
    return {"file": f"file{abs(hash((model, method, loss))) % 10**7}.h5", "slice": 0, "method": method,
            "acceleration": 4, "worst_loss": loss, "ip": ip, "accepted": accepted,
            "hit": accepted and loss > 1e-3, "num_accepted": n_ok, "num_scored": n, "model": model, "role": model,
            "location": [150, 150], "feature": {"pixels": [[150, 150], [150, 151]], "values": [1.0, 1.0]},
            **extra}


RS = [_rec("unet", "rs", 2e-3, 5e-4, True), _rec("unet", "rs", 4e-3, 6e-4, True),
      _rec("unet", "rs", 5e-4, 3e-4, True, n_ok=10), _rec("unet", "rs", 9e-3, 1e-5, False, n_ok=0)]
FD = [_rec("unet", "fd", 3e-3, 5e-4, True), _rec("unet", "fd", 1e-4, 4e-4, True)]


def test_summary_by_hand():
    s = summarize_records(RS)
    assert (s["slices"], s["accepted"], s["hits"]) == (4, 3, 2)
    assert s["attack_rate"]["pct"] == pytest.approx(100 * 2 / 3)
    assert (s["attack_rate"]["k"], s["attack_rate"]["n"]) == (2, 3)
    lo, hi = stats.wilson(2, 3)
    assert (s["attack_rate"]["lo"], s["attack_rate"]["hi"]) == pytest.approx((100 * lo, 100 * hi))
    assert s["mean_worst_loss"]["mean"] == pytest.approx((2e-3 + 4e-3 + 5e-4) / 3)  # rejected slice excluded
    assert s["mean_worst_loss"]["n"] == 3
    assert s["acceptance"]["pct"] == pytest.approx(100 * 32 / 44)  # candidates: 11 + 11 + 10 + 0 of 44
    assert s["mean_ip"] == pytest.approx((5e-4 + 6e-4 + 3e-4) / 3)
    assert "eraser_rate" not in s  # records without per-candidate scores have no control rows


def _scored(file, loss, ip, nofeature, eraser, lost, slice_=0):
    """A record with per-candidate scores; worst accepted chosen as the attack does."""
    ok = [i >= 1e-4 for i in ip]
    best = max((j for j in range(len(loss)) if ok[j]), key=lambda j: loss[j], default=0)
    return {"file": file, "slice": slice_, "method": "rs", "acceleration": 4, "model": "m",
            "worst_loss": loss[best], "ip": ip[best], "accepted": any(ok),
            "hit": any(ok) and loss[best] > 1e-3, "num_accepted": sum(ok), "num_scored": len(loss),
            "lost_fraction": lost[best], "gamma": 1e-3, "ip_threshold": 1e-4,
            "scored": {"loss": loss, "ip": ip, "nofeature": nofeature, "eraser": eraser, "lost": lost}}


def test_controls_random_feature_and_paper_acceptance_by_hand():
    recs = [
        # candidate 0 rejected (IP): random feature = candidate 1 (loss 5e-4, miss); worst = 2e-3 (hit)
        _scored("a.h5", [9e-3, 5e-4, 2e-3], [1e-5, 3e-4, 4e-4], [1e-5, 2e-3, 0.0], [5e-3, 2e-3, 9e-4],
                [0.9, 0.2, 0.5]),
        # every candidate accepted, nothing lost, eraser below gamma everywhere
        _scored("b.h5", [1e-4, 2e-4, 3e-4], [5e-4, 5e-4, 5e-4], [0.0, 0.0, 0.0], [5e-4, 6e-4, 7e-4],
                [0.0, 0.1, 0.2]),
    ]
    s = summarize_records(recs)
    assert (s["eraser_rate"]["k"], s["eraser_rate"]["n"]) == (1, 2)  # a: accepted eraser max 2e-3
    assert (s["nofeature_rate"]["k"], s["nofeature_rate"]["n"]) == (1, 2)  # a: 2e-3 at candidate 1
    assert (s["random_rate"]["k"], s["random_rate"]["n"]) == (0, 2)
    assert s["random_lost_fraction"]["mean"] == pytest.approx((0.2 + 0.0) / 2)
    assert s["lost_fraction"]["mean"] == pytest.approx((0.5 + 0.2) / 2)
    assert s["lost_fraction_all"]["mean"] == pytest.approx(((0.2 + 0.5) / 2 + 0.1) / 2)
    # the paper's Table 3 definition: the worst of all candidates, unfiltered, passes IP?
    assert (s["chosen_acceptance"]["k"], s["chosen_acceptance"]["n"]) == (1, 2)  # a's 9e-3 has IP 1e-5
    assert s["mean_ip_random"] == pytest.approx((1e-5 + 5e-4) / 2)


def test_paired_comparison_and_transfer_by_hand():
    from fnaf_jax.tabulation import paired, transfer_summary

    def run(hits, losses):
        return [{"file": f"v{i // 2}.h5", "slice": i % 2, "accepted": True, "hit": h, "worst_loss": w,
                 "lost_fraction": w * 100, "ip": 5e-4, "method": "rs", "acceleration": 4}
                for i, (h, w) in enumerate(zip(hits, losses, strict=True))]

    a = run([True, True, True, False, True, True], [3e-3, 2e-3, 4e-3, 5e-4, 6e-3, 2e-3])
    b = run([False, True, False, False, False, True], [5e-4, 1.5e-3, 8e-4, 4e-4, 9e-4, 1e-3])
    p = paired(a, b)
    assert (p["pairs"], p["volumes"], p["only_first_hit"], p["only_second_hit"]) == (6, 3, 3, 0)
    assert p["mcnemar_p"] == pytest.approx(0.25)  # 2 * 0.5^3
    assert p["rate_difference"]["mean"] == pytest.approx(50.0)
    d = p["worst_loss_difference"]
    assert d["first_higher"] == 6 and d["wilcoxon_p"] == pytest.approx(2 / 64)
    assert d["lo"] <= d["mean"] <= d["hi"]
    # transfer: b re-scores a's features; P(b hit | a hit) = 2 / 5
    t = transfer_summary(b, source=a)
    assert (t["conditional_rate"]["k"], t["conditional_rate"]["n"]) == (2, 5)


def test_report_files_tables_and_figures(tmp_path):
    a, b = tmp_path / "rs.jsonl", tmp_path / "fd.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in RS))
    b.write_text("".join(json.dumps(r) + "\n" for r in FD))
    out = tmp_path / "report"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0

    rows = {r["method"]: r for r in csv.DictReader((out / "table2.csv").open())}
    assert float(rows["rs"]["attack_rate"]) == pytest.approx(100 * 2 / 3)
    assert float(rows["fd"]["attack_rate"]) == pytest.approx(50.0)
    assert float(rows["rs"]["paper_attack_rate"]) == 84.44 and float(rows["fd"]["paper_attack_rate"]) == 72.17
    md = (out / "report.md").read_text()
    assert "84.44" in md and "66.7% [" in md and "(2/3)" in md and "Figure 1 skipped" in md
    summary = json.loads((out / "summary.json").read_text())
    accepted = [r for r in RS + FD if r["accepted"]]
    r = np.corrcoef([x["ip"] for x in accepted], [x["worst_loss"] for x in accepted])[0, 1]
    assert summary["figure_stats"]["figure2"]["pearson_r"] == pytest.approx(r)
    for name in ("figure2_ip_vs_loss.png", "figure3_locations.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 300_000


def test_report_rejects_records_without_the_needed_fields(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"file": "x.h5", "slice": 0}) + "\n")
    with pytest.raises(DataError, match="lacks"):
        load_results([bad])


def test_figure1_rerun_reproduces_the_recorded_loss(synthetic_dir, tmp_path):
    from fnaf_jax.models.registry import build_model
    from fnaf_jax.models.store import save_model

    config = {"arch": "unet", "chans": 2, "num_pool_layers": 1}
    ckpt = tmp_path / "tiny"
    save_model(ckpt, build_model(config), config)
    results = tmp_path / "r.jsonl"
    assert main(["attack", "--checkpoint", str(ckpt), "--data", str(synthetic_dir), "--out", str(results),
                 "--k", "2", "--batch-size", "2", "--limit", "2", "--no-progress", "--gamma", "0"]) == 0
    out = tmp_path / "report"
    assert main(["report", str(results), "--out", str(out), "--checkpoint", str(ckpt),
                 "--data", str(synthetic_dir)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    example = summary["figure_stats"]["figure1"]["examples"]["successful"]
    assert example["rerun_loss"] == pytest.approx(example["recorded_loss"], rel=1e-4)
    assert len((out / "figure1_examples.png").read_bytes()) < 300_000
