# Astro Runtime image for Airflow 3.3 (cannot be built in this workplace; kept short and correct).
FROM astrocrpublic.azurecr.io/runtime:3.3-2
# Every dependency is pinned in requirements.txt: the image's own constraints are not used.
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt
# The core lives in include/ and is imported as `mailshift` by the DAGs and the plugin.
ENV PYTHONPATH=/usr/local/airflow/include
