"""Cutover and TTL-lowering DAGs, one pair per domain (see mailshift.airflow_adapters.cutover)."""

from mailshift.airflow_adapters.cutover import cutover_dags

globals().update(cutover_dags())
