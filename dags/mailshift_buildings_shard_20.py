"""Building DAGs of snapshot shard 20 (one DAG per building; see mailshift.airflow.factory)."""

from mailshift.airflow.factory import building_dags

globals().update(building_dags(shard=20, dag_file=__file__))
