//! Procedural macros of CapeControl. Not built yet: the agent SDK issue fills this crate in.
