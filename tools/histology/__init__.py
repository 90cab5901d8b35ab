# HistoSynth — see README.md.
"""Whole-slide images to patch datasets: wsi (slides), tissue (masks, marker ink), patches (candidates, fractions,
reads), annotations (ASAP XML, GeoJSON), preview (Fig 2 panels), writer (dataset zips, merge), slide_dataset (the
pipeline behind `dataset_tool.py`)."""
