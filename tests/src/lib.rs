//! End-to-end suites (the failure matrix of DESIGN.md) live in `tests/tests/`. They need the
//! gatherer, the deduplicator and kalshi-stack, which later issues build; until then this crate
//! only holds the place in the workspace layout.
