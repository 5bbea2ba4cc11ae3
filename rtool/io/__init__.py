"""Rows, tensors and checkpoints in and out: JSONL/parquet records (records; Row in rows), memory-mapped safetensors
(tensors), HF/GGUF/PEFT model loading and atomic saving (models) with the GGUF copy cache (gguf_cache), sorting
more rows than memory holds (spill).
Imports only the base (rtool.errors, log, atomic). Entry points: read_records, RecordWriter, load_model, save_model.
"""

from rtool.io.records import read_records

__all__ = ["read_records"]
