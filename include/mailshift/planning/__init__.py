"""Planning: waves from the inventory under capacity constraints, the projection of the
migration, and the DAG snapshot the building DAGs are generated from."""
