"""The web UIs the data team opens on this machine (Airflow, MLflow): each listens on
127.0.0.1 only and requires a login whose password is generated once and kept 0600."""
