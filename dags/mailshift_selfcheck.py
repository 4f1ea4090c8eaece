"""Self-check: a worker runs one task and reaches the database (see mailshift.airflow.factory)."""

from mailshift.airflow.factory import SELFCHECK_DAG_ID, selfcheck_dag

globals()[SELFCHECK_DAG_ID] = selfcheck_dag()
