"""fedrank local mock fleet: all roles on one machine, simulation, experiments, reports."""
