"""Operating Ray clusters: starting or joining Ray (`ray_runtime`), what a run asks a cluster for and the most an
autoscaling cluster can hold (`ceiling`), jobs through the Jobs API (`jobs`), and a real multi-process cluster
on this machine (`local`)."""
