"""Cutover and TTL-lowering DAGs, one pair per domain: part 3 of the domains (see
mailshift.airflow.cutover, CUTOVER_FILES)."""

from mailshift.airflow.cutover import CUTOVER_FILES, cutover_dags

globals().update(cutover_dags(part=3, parts=CUTOVER_FILES))
