"""Wave DAGs (one per planned wave; see mailshift.airflow_adapters.wave)."""

from mailshift.airflow_adapters.wave import wave_dags

globals().update(wave_dags())
