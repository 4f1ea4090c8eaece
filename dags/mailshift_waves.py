"""Wave DAGs (one per planned wave; see mailshift.airflow.wave)."""

from mailshift.airflow.wave import wave_dags

globals().update(wave_dags())
