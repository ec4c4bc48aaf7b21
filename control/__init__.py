"""The fixed-rate control loop, the safety filter, robots, and the policy server and client
(docs/architecture.md)."""
