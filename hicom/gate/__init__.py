"""The promotion gate: `decision.py` (a candidate's metrics, paired comparisons, the decision against the
champion; pure Python) and `settings.py` (params.yaml's `registry:` section, kept apart so that reading the
params imports no decision code). hicom.registry does the MLflow side.
"""
