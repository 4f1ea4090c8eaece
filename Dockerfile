# Official Apache Airflow 3.3 image (cannot be built in this workplace; kept short and correct).
# For Astro, `FROM astrocrpublic.azurecr.io/runtime:<3.3-based tag>` and AIRFLOW_HOME=/usr/local/airflow.
FROM apache/airflow:3.3.2-python3.11
# Every dependency is pinned in requirements.txt (the Airflow constraints file is not used).
COPY --chown=airflow:0 requirements.txt /opt/airflow/requirements.txt
RUN pip install --no-cache-dir -r /opt/airflow/requirements.txt
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 include/ /opt/airflow/include/
# The core is imported as `mailshift` by the DAGs and the plugin.
ENV PYTHONPATH=/opt/airflow/include
