//! Issue 14: each finding as the attack a hostile tenant would make.

mod limits;
mod rates;
