"""The promotion gate: a candidate's metrics and per-question records from its evaluation and efficiency
files, the paired comparison of two evaluations on the same questions, and the decision against the
champion. Pure Python; hicom.registry does the MLflow side (versions, aliases, tags, artifacts).

Accuracy is judged as non-inferiority on evidence: per benchmark, the paired cluster-bootstrap interval of
(challenger - champion) on the same questions must lie above -accuracy_margin. When it lies entirely below,
the challenger is worse (rejected); when it straddles -margin, the set cannot tell (inconclusive: the
champion is kept).

decision.py holds all of that; settings.py holds params.yaml's `registry:` section, so that reading the params
imports no decision code.
"""
