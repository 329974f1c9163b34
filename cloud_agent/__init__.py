"""fedrank cloud: tri-feedback energy budgets across tasks."""
