"""fedrank roadside unit: rounds, heterogeneous-rank aggregation, dual prices, fault tolerance."""
