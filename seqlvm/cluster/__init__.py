"""Operating Ray clusters: starting or joining Ray (`ray_runtime`), jobs through the Jobs API (`jobs`), and a real
multi-process cluster on this machine (`local`)."""
