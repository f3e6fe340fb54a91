//! Herald tried as a hostile tenant (or a forger) would, one file per finding of issue 14.

mod receipts;
mod sockets;
