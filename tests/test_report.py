"""`fnaf report`: table numbers from hand-made records, files written, Figure 1 re-run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fnaf_jax.cli import main
from fnaf_jax.errors import DataError
from fnaf_jax.report import load_results, summarize_records


def _rec(model, method, loss, ip, accepted, n_ok=11, n=11, **extra):
    return {"file": f"file{abs(hash((model, method, loss))) % 10**7}.h5", "slice": 0, "method": method,
            "acceleration": 4, "worst_loss": loss, "ip": ip, "accepted": accepted,
            "hit": accepted and loss > 1e-3, "num_accepted": n_ok, "num_scored": n, "model": model,
            "location": [150, 150], "feature": {"pixels": [[150, 150], [150, 151]], "values": [1.0, 1.0]},
            **extra}


RS = [_rec("unet", "rs", 2e-3, 5e-4, True), _rec("unet", "rs", 4e-3, 6e-4, True),
      _rec("unet", "rs", 5e-4, 3e-4, True, n_ok=10), _rec("unet", "rs", 9e-3, 1e-5, False, n_ok=0)]
FD = [_rec("unet", "fd", 3e-3, 5e-4, True), _rec("unet", "fd", 1e-4, 4e-4, True)]


def test_summary_by_hand():
    s = summarize_records(RS)
    assert (s["slices"], s["accepted"], s["hits"]) == (4, 3, 2)
    assert s["attack_rate"] == pytest.approx(100 * 2 / 3)
    assert s["mean_worst_loss"] == pytest.approx((2e-3 + 4e-3 + 5e-4) / 3)  # rejected slice excluded
    assert s["acceptance"] == pytest.approx(100 * 32 / 44)  # candidates: 11 + 11 + 10 + 0 of 44
    assert s["mean_ip"] == pytest.approx((5e-4 + 6e-4 + 3e-4) / 3)


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
    assert "84.44" in md and "66.67" in md and "Figure 1 skipped" in md
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
