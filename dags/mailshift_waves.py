"""Wave DAGs (one per planned wave; see mailshift.airflow.wave)."""

from mailshift.airflow.factory import with_ui_links
from mailshift.airflow.wave import wave_dags

globals().update(with_ui_links(wave_dags()))
