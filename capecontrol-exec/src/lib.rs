//! Container executor of CapeControl. Not built yet: the container issue fills this crate in.
