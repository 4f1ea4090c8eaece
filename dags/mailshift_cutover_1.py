"""Cutover and TTL-lowering DAGs, one pair per domain: part 1 of the domains (see
mailshift.airflow.cutover, CUTOVER_FILES)."""

from mailshift.airflow.cutover import CUTOVER_FILES, cutover_dags
from mailshift.airflow.factory import with_ui_links

globals().update(with_ui_links(cutover_dags(part=1, parts=CUTOVER_FILES)))
