"""Building DAGs of snapshot shard 25 (one DAG per building; see mailshift.airflow.factory)."""

from mailshift.airflow.factory import building_dags

globals().update(building_dags(shard=25, dag_file=__file__))
