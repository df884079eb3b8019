"""`gdna data summary` on the shared data, and its one-line error for a wrong root."""
from __future__ import annotations

import pytest

from gdna.cli import main as run_data_cli
from gdna.data.tasks import task_fingerprint


def test_summary_lists_tasks_counts_genome_and_apes(data_root, capsys):
    assert run_data_cli(["data", "summary", "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "genomic_benchmarks: 4 task(s)" in out
    for task in ("human_enhancers_cohn", "human_enhancers_ensembl", "human_ensembl_regulatory", "human_ocr_ensembl"):
        assert f"  {task} (fingerprint {task_fingerprint(str(data_root.resolve()), task)}): classes" in out
    assert "train    5499  (enhancer=1901, ocr=1625, promoter=1973)  length 86-802" in out
    assert "test      141  (negative=51, positive=90)  length 500-500" in out
    assert "chr20.fa (fingerprint " in out and "): chr20 (63,025,520 bp)" in out
    assert "): 155 intervals of 1,048,576 bp (test=11, train=133, valid=11)" in out
    assert "): 1175 intervals of 196,608 bp (test=1, train=651, valid=523)" in out
    assert "greatapes (fingerprint " in out and "human: 9627 records" in out and "orangutan: 9627 records" in out


def test_summary_default_root_comes_from_the_environment(data_root, capsys, monkeypatch):
    monkeypatch.setenv("GDNA_DATA_ROOT", str(data_root))
    assert run_data_cli(["data", "summary"]) == 0
    assert f"data root: {data_root}" in capsys.readouterr().out


def test_summary_on_a_missing_root_is_a_one_line_error(tmp_path, capsys):
    assert run_data_cli(["data", "summary", "--data-root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere: data root not found" in err[0]
