# HistoSynth — see README.md.
