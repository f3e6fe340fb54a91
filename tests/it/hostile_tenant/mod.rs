//! Herald tried as a hostile tenant (or whoever holds one of its
//! credentials) would, one file per finding of issue 14.

mod egress;
mod fuzz;
mod limits;
mod neighbours;
mod privilege;
mod rates;
mod receipts;
mod sockets;
