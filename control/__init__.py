"""Fixed-rate control loop (see DESIGN.md); built in a later issue."""
