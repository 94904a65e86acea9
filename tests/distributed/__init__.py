"""Several gloo processes on the CPU against one process."""
