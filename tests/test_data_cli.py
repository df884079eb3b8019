"""`gdna data summary` on the shared data, and its one-line error for a wrong root."""
from __future__ import annotations

import argparse

import pytest

from gdna.data.cli import register


def run_data_cli(argv: list[str]) -> int:
    """Through the real `gdna` entry point when every area's CLI imports, else through ours alone."""
    try:
        from gdna.cli import main
    except ImportError:  # another area's cli.py is mid-edit: still test the data commands
        parser = argparse.ArgumentParser(prog="gdna")
        register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(argv)
        return args.func(args)
    return main(argv)


def test_summary_lists_tasks_counts_genome_and_apes(data_root, capsys):
    assert run_data_cli(["data", "summary", "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "genomic_benchmarks: 4 task(s)" in out
    for task in ("human_enhancers_cohn", "human_enhancers_ensembl", "human_ensembl_regulatory", "human_ocr_ensembl"):
        assert f"  {task}: classes" in out
    assert "train    5499  (enhancer=1901, ocr=1625, promoter=1973)  length 86-802" in out
    assert "test      141  (negative=51, positive=90)  length 500-500" in out
    assert "chr20.fa: chr20 (63,025,520 bp)" in out
    assert "intervals_1mb.bed: 155 intervals of 1,048,576 bp (test=11, train=133, valid=11)" in out
    assert "intervals_196kb.bed: 1175 intervals of 196,608 bp (test=1, train=651, valid=523)" in out
    assert "human: 9627 records" in out and "orangutan: 9627 records" in out


def test_summary_default_root_comes_from_the_environment(data_root, capsys, monkeypatch):
    monkeypatch.setenv("GDNA_DATA_ROOT", str(data_root))
    assert run_data_cli(["data", "summary"]) == 0
    assert f"data root: {data_root}" in capsys.readouterr().out


def test_summary_on_a_missing_root_is_a_one_line_error(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="gdna")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "summary", "--data-root", str(tmp_path / "nowhere")])
    from gdna.errors import DataError

    with pytest.raises(DataError, match="nowhere: data root not found"):
        args.func(args)
