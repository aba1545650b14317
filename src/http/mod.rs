//! The HTTP API (feature `http`).
