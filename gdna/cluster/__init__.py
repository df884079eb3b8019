"""gdna on a Ray cluster: `cluster.yaml` checks, the head's MLflow server, trial-driver placement,
cluster capacity for `max_concurrent_trials: 0`, node recording per trial, tracking-URI credentials.

- `check.py`: `gdna cluster check cluster.yaml` (Ray's own schema + gdna's rules; one line per problem).
- `head.py`: `gdna cluster mlflow-server` (the head's tracking server, bound to the head's private IP).
- `capacity.py`: how many trials fit, from live resources and the autoscaler's maximum.
- `nodes.py`: the Ray Train callback that reports which nodes a trial's driver and workers ran on.
- `uri.py`: credentials inside a tracking URI move to MLflow's env vars (never logged).
"""

# The custom resource the head advertises; each trial's driver (Tune trainable + Train controller)
# requests DRIVER_SLIVER of it, so drivers only run on the head (a node that does not go away).
DRIVER_RESOURCE = "gdna_driver"
DRIVER_SLIVER = 0.001
HEAD_DRIVER_AMOUNT = 1000  # what cluster.yaml's head advertises: 10^6 slivers, i.e. never the limit
