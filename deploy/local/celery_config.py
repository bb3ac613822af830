# The Celery settings of every worker that deploy/local/up starts, written (with the broker
# and result backend filled in) as `dagster_celery_config.py` into each worker's directory:
# dagster_celery.app reads that module, as `dagster-celery worker start -y config.yaml` arranges.
broker_url = "{broker}"
result_backend = "{backend}"
# One step at a time per worker, taken only when the worker is free.
worker_prefetch_multiplier = 1
worker_concurrency = 1
broker_connection_retry_on_startup = True
# A step's message is acknowledged when the step ends: a busy worker holds no second step, so
# ready steps spread over idle workers. A worker process killed in a step fails the step
# (Celery's WorkerLostError) and the run; the next run of its days converges.
task_acks_late = True
