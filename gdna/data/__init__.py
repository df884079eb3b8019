"""Data layer: tokenizer, Genomic Benchmarks tasks, genome windows, CLM corpora, great apes, downloads.

Public entry points (import the submodule you need; this package imports nothing heavy):
- tokenizer.encode_batch / encode_bytes / decode, VOCAB_SIZE, PAD_ID ...
- genomic_benchmarks.load_task, split_train_val, classification_datasets, collate_cls
- genome.GenomeWindows(fasta, bed, split, context_len, seed).epoch_windows / fixed_windows
- corpora.clm_datasets(data_cfg, seed), collate_clm
- greatapes.greatapes_datasets(root, seq_len, seed); the task name `greatapes` works wherever a
  Genomic Benchmarks task does (classification_datasets, the task/domain corpora)
- download.download_genomic_benchmarks / download_hg38; summary.summarize
"""
