//! PostgreSQL store of CapeControl. Not built yet: the PostgreSQL issue fills this crate in.
