"""Workers: claim jobs, run each in its own training process, keep the lease, honour cancel."""
