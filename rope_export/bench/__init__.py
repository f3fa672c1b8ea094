"""Benchmarks: every path of one preset against the memory floor in one process (`run`), the
baselines they are timed against (`baselines`) and the timer (`timing`)."""

from ..presets import heads_of
from .baselines import HFStyleRotary, hf_baseline_graph, op_alone_graph, unguarded_table_graph
from .run import DEFAULT_SHAPES, BenchRow, bench, format_table, plot_scaling, rows_to_json
from .timing import make_timer

__all__ = ["HFStyleRotary", "BenchRow", "bench", "format_table", "rows_to_json", "plot_scaling", "heads_of",
           "make_timer", "hf_baseline_graph", "op_alone_graph", "unguarded_table_graph", "DEFAULT_SHAPES"]
