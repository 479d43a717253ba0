"""The process tree: master, workers, and the connections a worker serves."""
