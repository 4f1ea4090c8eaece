"""The only place where mailshift imports Airflow: connections, callbacks and DAG builders.

Everything here is thin: it turns Airflow objects (connections, task context) into the plain
values `mailshift` functions take, and wires those functions into DAGs.
"""
